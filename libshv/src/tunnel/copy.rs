//! **[ext]** File copy over a tunnel (`shvcp`): the files travel as a tar stream on the
//! data channels (`copyOut`: the device sends on channel 1; `copyIn`: the operator
//! sends on channel 0, then `eof`), and the far side closes the tunnel with exit code 0
//! or an error. The same two functions run on both sides: [`archive`] writes the
//! stream, [`extract`] reads it.
//!
//! Extraction trusts nothing in the stream (it may come from a device that lies):
//! entry names must be relative with no `..`, nothing is written through a symlink,
//! only files, directories and (with -r) symlinks are created, and every file is
//! written under a temporary name and renamed into place only when complete, so that
//! an error (a full disk, a broken tunnel) never leaves half a file under the final
//! name.

mod channel;
mod dest;
mod extract;

pub use channel::{ChannelReader, ChannelWriter};
pub use dest::check_destination;
pub use extract::extract;

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a copy failed: one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: is a directory (copy directories with -r)")]
    IsDirectory(String),
    #[error("{0}: not a directory (several sources need an existing directory)")]
    NotADirectory(String),
    #[error("unsafe entry in the archive: {0}")]
    Unsafe(String),
    #[error("broken archive: {0}")]
    Archive(String),
    #[error("{0}: no such directory")]
    NoSuchDirectory(String),
    #[error("not copied ({} entr{}): {}", .0.len(), if .0.len() == 1 { "y" } else { "ies" }, .0.join(", "))]
    Skipped(Vec<String>),
}

pub(super) fn io(path: &Path, e: std::io::Error) -> CopyError {
    CopyError::Io(path.display().to_string(), e)
}

/// What [`archive`] or [`extract`] moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub bytes: u64,
}

/// A path as the device's side of a copy reads it, as scp does: relative to the home
/// directory of the user the device runs as (not to the agent's working directory),
/// `~` and `~/x` in that home, `~user/x` in `user`'s. A trailing `/` is kept.
pub fn device_path(p: &str) -> Result<PathBuf, CopyError> {
    let home_of_me = || {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map(|u| u.dir)
            })
            .ok_or_else(|| CopyError::NoSuchDirectory("~ (no home directory)".into()))
    };
    if let Some(rest) = p.strip_prefix('~') {
        let (user, tail) = match rest.split_once('/') {
            Some((u, t)) => (u, t),
            None => (rest, ""),
        };
        let home = if user.is_empty() {
            home_of_me()?
        } else {
            nix::unistd::User::from_name(user)
                .ok()
                .flatten()
                .map(|u| u.dir)
                .ok_or_else(|| CopyError::NoSuchDirectory(format!("~{user} (no such user)")))?
        };
        let mut s = home.join(tail).into_os_string();
        if p.ends_with('/') && !s.as_encoded_bytes().ends_with(b"/") {
            s.push("/");
        }
        return Ok(PathBuf::from(s));
    }
    if p.starts_with('/') {
        return Ok(PathBuf::from(p));
    }
    let mut s = home_of_me()?.join(p).into_os_string();
    if p.ends_with('/') && !s.as_encoded_bytes().ends_with(b"/") {
        s.push("/");
    }
    Ok(PathBuf::from(s))
}

/// Checks every source before anything is sent: a missing file is an error of the
/// whole copy, not an archive cut short.
pub fn check_sources(paths: &[PathBuf], recursive: bool) -> Result<u64, CopyError> {
    let mut total = 0u64;
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| io(p, e))?;
        if meta.is_dir() {
            if !recursive {
                return Err(CopyError::IsDirectory(p.display().to_string()));
            }
            total = total.saturating_add(tree_size(p));
        } else {
            total = total.saturating_add(meta.len());
        }
    }
    Ok(total)
}

fn tree_size(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => {
                    total = total.saturating_add(e.metadata().map_or(0, |m| m.len()))
                }
                _ => {}
            }
        }
    }
    total
}

/// Writes a tar stream of `paths` to `out` (blocking): each source under its own
/// name, directories (with `recursive`) with everything in them, modes and mtimes
/// kept (the extracting side applies them only with -p). Symlinks stay symlinks.
pub fn archive<W: Write>(
    paths: &[PathBuf],
    recursive: bool,
    out: W,
) -> Result<CopyStats, CopyError> {
    check_sources(paths, recursive)?;
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let mut stats = CopyStats::default();
    for p in paths {
        let name = p
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let meta = std::fs::metadata(p).map_err(|e| io(p, e))?;
        if meta.is_dir() {
            b.append_dir_all(&name, p).map_err(|e| io(p, e))?;
            stats.bytes = stats.bytes.saturating_add(tree_size(p));
        } else {
            b.append_path_with_name(p, &name).map_err(|e| io(p, e))?;
            stats.bytes = stats.bytes.saturating_add(meta.len());
        }
        stats.files += 1;
    }
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| CopyError::Io("archive".into(), e))?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shvcp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn device_paths_start_at_home() {
        let home = PathBuf::from(std::env::var("HOME").unwrap());
        assert_eq!(
            device_path("/etc/hosts").unwrap(),
            PathBuf::from("/etc/hosts")
        );
        assert_eq!(device_path("x/y").unwrap(), home.join("x/y"));
        assert_eq!(device_path("~").unwrap(), home);
        assert_eq!(device_path("~/a").unwrap(), home.join("a"));
        assert!(device_path("dir/")
            .unwrap()
            .to_string_lossy()
            .ends_with("dir/"));
        assert_eq!(device_path("~root/a").unwrap(), PathBuf::from("/root/a"));
        assert!(device_path("~no-such-user-xyz/a").is_err());
    }

    #[test]
    fn missing_sources_and_directories_without_r_are_errors() {
        let e = archive(&[PathBuf::from("/nonexistent/shvcp")], false, Vec::new()).unwrap_err();
        assert!(e.to_string().contains("No such file"), "{e}");
        let e = archive(&[std::env::temp_dir()], false, Vec::new()).unwrap_err();
        assert!(matches!(e, CopyError::IsDirectory(_)));
    }
}
