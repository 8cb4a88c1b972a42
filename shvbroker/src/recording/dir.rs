//! The recording directory: who may write it, the recordings it holds, its byte cap,
//! and new files in it (created new, never through a symlink, owner-only).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use super::MARK_ROOM;
use crate::config::{RecordLimits, WhenFull};
/// Why `record_dir` cannot be used.
pub(super) fn refuse_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir)?;
    if !m.is_dir() {
        return Err(std::io::Error::other("is not a directory"));
    }
    let me = nix::unistd::Uid::effective().as_raw();
    if m.uid() != me {
        return Err(std::io::Error::other(format!(
            "is owned by uid {}, not by the broker's uid {me}: another user could plant \
             or read recordings there",
            m.uid()
        )));
    }
    if m.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "may be written by other users (mode {:o}): `chmod go-w` it",
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

/// The recordings already in `dir` (regular `.cast` files, not followed through
/// symlinks), oldest first, with their sizes.
pub(super) fn existing(dir: &Path) -> std::io::Result<VecDeque<(PathBuf, u64)>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        if path.extension().is_none_or(|x| x != "cast") {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if m.is_file() {
            found.push((
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                path,
                m.len(),
            ));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p, n)| (p, n)).collect())
}

/// A file name part from a user name: letters, digits, `._-` only.
pub(super) fn safe_name(s: &str) -> String {
    let n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if n.is_empty() {
        "unknown".into()
    } else {
        n
    }
}

/// The writer's account of the directory: what it may hold, the finished recordings
/// it may delete (oldest first) and how many bytes are there.
pub(super) struct Store {
    pub(super) limits: RecordLimits,
    pub(super) finished: VecDeque<(PathBuf, u64)>,
    pub(super) total: u64,
    /// Files being written: each keeps MARK_ROOM of the directory for its last marker.
    pub(super) open_files: u64,
    pub(super) shared: Arc<AtomicU64>,
}

impl Store {
    /// Makes room for `n` more bytes: true if they fit (deleting the oldest finished
    /// recordings first if that is the policy).
    pub(super) fn make_room(&mut self, n: u64) -> bool {
        let cap = self.limits.dir_max_bytes;
        if cap == 0 {
            return true;
        }
        let need = |s: &Store| {
            s.total
                .saturating_add(s.open_files.saturating_mul(MARK_ROOM))
                .saturating_add(n)
        };
        while need(self) > cap {
            if self.limits.when_full != WhenFull::DeleteOldest {
                return false;
            }
            let Some((path, size)) = self.finished.pop_front() else {
                return false;
            };
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(
                    "deleted recording {} ({size} bytes): tunnel.record_dir is at its cap",
                    path.display()
                ),
                // Gone already (an operator cleaned up): it no longer counts either.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!("cannot delete recording {}: {e}", path.display());
                    continue;
                }
            }
            self.total = self.total.saturating_sub(size);
        }
        true
    }

    pub(super) fn wrote(&mut self, n: u64) {
        self.total = self.total.saturating_add(n);
        self.shared.store(self.total, Ordering::Relaxed);
    }
}

/// A new file at `path`: never an existing one, never through a symlink, owner-only.
pub(super) fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::tests::{limits, temp_dir};
    use crate::recording::Recorder;

    /// A recording is created new and never through a symlink: a planted link (to a
    /// file the broker can write) is refused and its target is left as it was.
    #[test]
    fn recordings_never_follow_a_planted_symlink() {
        let dir = temp_dir("symlink");
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = dir.join("planted.cast");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_new(&link).is_err());
        let existing_file = dir.join("existing.cast");
        std::fs::write(&existing_file, b"old").unwrap();
        assert!(create_new(&existing_file).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&existing_file).unwrap(), b"old");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_dir_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("mode");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Recorder::open(&dir, false, limits())
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains("may be written by other users"),
            "{e}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Recorder::open(&dir, false, limits()).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(safe_name("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(safe_name(""), "unknown");
    }
}
