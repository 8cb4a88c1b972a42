//! SHV paths: `a/b/c`, no leading or trailing `/`. Access rules and mounts are matched
//! segment by segment, so every path that enters a broker must be canonical first:
//! `a/x/` or `a//x` or `a/./x` would otherwise match other rules than `a/x` does.

/// Why a path is not canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path segment (a leading, trailing or double '/')")]
    EmptySegment,
    #[error("'.' or '..' path segment")]
    DotSegment,
}

/// Checks that `path` is canonical: empty (the root) or non-empty segments, none of
/// them `.` or `..`.
pub fn check(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Ok(());
    }
    for seg in path.split('/') {
        match seg {
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment),
            _ => {}
        }
    }
    Ok(())
}

/// Is `path` strictly below `prefix` (`a/b` is under `a`, `ab` is not)?
pub fn is_under(path: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        return !path.is_empty();
    }
    path.len() > prefix.len() && path.starts_with(prefix) && path.as_bytes()[prefix.len()] == b'/'
}

/// `a` + `b` with one `/` between them; either may be the root.
pub fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        for ok in ["", "a", "a/b", ".app", ".broker/currentClient", "a/.x/b"] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in ["/", "a/", "/a", "a//b", "."] {
            assert!(check(bad).is_err(), "{bad}");
        }
        assert_eq!(check("a/./b"), Err(PathError::DotSegment));
        assert_eq!(check("test/.."), Err(PathError::DotSegment));
    }

    #[test]
    fn under_and_join() {
        assert!(is_under("a/b", "a"));
        assert!(!is_under("ab", "a"));
        assert!(!is_under("a", "a"));
        assert!(is_under("a", ""));
        assert_eq!(join("", "x"), "x");
        assert_eq!(join("a", ""), "a");
        assert_eq!(join("a", "b"), "a/b");
    }
}
