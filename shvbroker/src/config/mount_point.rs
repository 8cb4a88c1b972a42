//! What a mount point may be: checked for the config's autosetup templates and for every
//! device that asks to be mounted.

/// A mount point must be a canonical, non-empty path that does not shadow the broker's
/// own nodes (`.app`, `.broker`) or a device's `.device`.
pub fn check_mount_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty mount point".into());
    }
    libshv::path::check(path).map_err(|e| format!("invalid mount point '{path}': {e}"))?;
    let first = path.split('/').next().unwrap_or("");
    if matches!(first, ".app" | ".broker" | ".device") {
        return Err(format!(
            "mount point '{path}' would shadow the broker's '{first}'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_non_canonical_paths_are_refused() {
        assert!(check_mount_path(".broker/x").is_err());
        assert!(check_mount_path("a//b").is_err());
        assert!(check_mount_path(".history").is_ok());
        for bad in [
            "test/..",
            "test/.",
            "test/../x",
            "./x",
            "test/",
            "/test",
            "",
        ] {
            assert!(check_mount_path(bad).is_err(), "{bad}");
        }
    }
}
