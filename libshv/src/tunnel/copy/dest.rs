//! Where an extraction may write: the destination checked before anything is written,
//! entry names kept relative, and never a write through a symlink.

use std::path::{Component, Path, PathBuf};

use super::CopyError;
/// Where a copy into `dest` writes, checked before anything is (scp's rules): `dest`
/// itself when it is a directory (it must be when `wants_dir`: a `DST/` or several
/// sources), else the existing directory that the new name goes into.
pub fn check_destination(dest: &Path, wants_dir: bool) -> Result<PathBuf, CopyError> {
    if dest.is_dir() {
        return Ok(dest.to_path_buf());
    }
    let shown = || dest.display().to_string();
    if wants_dir {
        return Err(if dest.exists() {
            CopyError::NotADirectory(shown())
        } else {
            CopyError::NoSuchDirectory(shown())
        });
    }
    let base = match dest.parent() {
        Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
        Some(p) => p.to_path_buf(),
        None => return Err(CopyError::NotADirectory(shown())),
    };
    if !base.is_dir() {
        return Err(CopyError::NoSuchDirectory(base.display().to_string()));
    }
    Ok(base)
}

/// A relative path of plain names: no root, no `..` (a lying sender's `../../etc`).
pub(super) fn safe_relative(p: &Path) -> Result<PathBuf, CopyError> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(CopyError::Unsafe(p.display().to_string())),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(CopyError::Unsafe(p.display().to_string()));
    }
    Ok(out)
}

/// Refuses to write through a symlink below `base` (an earlier entry of the stream
/// could have made `x` a link to `/etc`, then sent `x/passwd`).
pub(super) fn no_symlink_between(base: &Path, target: &Path) -> Result<(), CopyError> {
    let Ok(rel) = target.strip_prefix(base) else {
        return Err(CopyError::Unsafe(target.display().to_string()));
    };
    let mut p = base.to_path_buf();
    let n = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        p.push(c);
        if i + 1 == n {
            break;
        }
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(CopyError::Unsafe(format!(
                "{} goes through the symlink {}",
                target.display(),
                p.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::copy::tests::tmp;
    use crate::tunnel::copy::{archive, extract};

    #[test]
    fn destinations_are_checked_before_anything_is_written() {
        let src = tmp("dest-src");
        std::fs::write(src.join("f"), b"x").unwrap();
        let mut stream = Vec::new();
        archive(&[src.join("f")], false, &mut stream).unwrap();
        let dst = tmp("dest-dst");
        let missing = dst.join("nosuchdir");
        // `DST/` that does not exist: an error, not a file named DST.
        let e = extract(
            &stream[..],
            Path::new(&format!("{}/", missing.display())),
            false,
        );
        assert!(matches!(e, Err(CopyError::NoSuchDirectory(_))), "{e:?}");
        assert!(!missing.exists());
        // A new name in a directory that does not exist: an error, nothing created.
        let e = extract(&stream[..], &missing.join("x"), false);
        assert!(matches!(e, Err(CopyError::NoSuchDirectory(_))), "{e:?}");
        assert!(!missing.exists());
    }
}
