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

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

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
}

fn io(path: &Path, e: std::io::Error) -> CopyError {
    CopyError::Io(path.display().to_string(), e)
}

/// What [`archive`] or [`extract`] moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub bytes: u64,
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

/// Reads a tar stream into `dest` (blocking). An existing directory receives the
/// entries under their names; otherwise the stream must hold one source, which is
/// created as `dest` (a file copied to a new name, or a directory copied with -r).
/// `preserve` applies the archive's modes and mtimes (directories' last).
pub fn extract<R: Read>(input: R, dest: &Path, preserve: bool) -> Result<CopyStats, CopyError> {
    let into_dir = dest.is_dir();
    let base = if into_dir {
        dest.to_path_buf()
    } else {
        match dest.parent() {
            Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
            Some(p) => p.to_path_buf(),
            None => return Err(CopyError::NotADirectory(dest.display().to_string())),
        }
    };
    let rename_to = (!into_dir)
        .then(|| dest.file_name().map(PathBuf::from))
        .flatten();
    let mut root: Option<PathBuf> = None;
    let mut stats = CopyStats::default();
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    let mut ar = tar::Archive::new(input);
    let entries = ar
        .entries()
        .map_err(|e| CopyError::Archive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| CopyError::Archive(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| CopyError::Archive(e.to_string()))?
            .into_owned();
        let rel = safe_relative(&name)?;
        let mut parts = rel.components();
        let first = PathBuf::from(parts.next().map(|c| c.as_os_str()).unwrap_or_default());
        match &root {
            // Into a new name: one source only.
            Some(r) if rename_to.is_some() && *r != first => {
                return Err(CopyError::NotADirectory(dest.display().to_string()))
            }
            Some(_) => {}
            None => root = Some(first.clone()),
        }
        let rest = parts.as_path();
        let mapped = match &rename_to {
            // (Joining an empty path would add a trailing '/'.)
            Some(n) if rest.as_os_str().is_empty() => n.clone(),
            Some(n) => n.join(rest),
            None => rel.clone(),
        };
        let target = base.join(&mapped);
        no_symlink_between(&base, &target)?;
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644);
        let mtime = header.mtime().unwrap_or(0);
        match header.entry_type() {
            tar::EntryType::Directory => {
                // A symlink sent earlier under this name would make `create_dir_all`
                // succeed and the modes below land on whatever it points to.
                if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(CopyError::Unsafe(format!(
                        "{}: a directory over a symlink",
                        name.display()
                    )));
                }
                std::fs::create_dir_all(&target).map_err(|e| io(&target, e))?;
                if preserve {
                    dirs.push((target, mode, mtime));
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                write_file(&mut entry, &target, preserve)?;
                stats.files += 1;
                stats.bytes = stats.bytes.saturating_add(entry.size());
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| CopyError::Archive(e.to_string()))?
                    .ok_or_else(|| CopyError::Archive("symlink without target".into()))?;
                let _ = std::fs::remove_file(&target);
                std::os::unix::fs::symlink(&link, &target).map_err(|e| io(&target, e))?;
            }
            other => tracing::warn!("skipping {} ({other:?})", name.display()),
        }
    }
    // Directories' times last: writing into them changed them.
    for (d, mode, mtime) in dirs.into_iter().rev() {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        // Through a handle opened without following links: never onto a link's target.
        let Ok(dir) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
            .open(&d)
        else {
            continue;
        };
        let _ = dir.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777));
        let mtime = filetime::FileTime::from_unix_time(i64::try_from(mtime).unwrap_or(0), 0);
        let _ = filetime::set_file_handle_times(&dir, None, Some(mtime));
    }
    Ok(stats)
}

/// A relative path of plain names: no root, no `..` (a lying sender's `../../etc`).
fn safe_relative(p: &Path) -> Result<PathBuf, CopyError> {
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
fn no_symlink_between(base: &Path, target: &Path) -> Result<(), CopyError> {
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

/// Writes one file under a temporary name beside it, then renames it into place.
fn write_file<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    target: &Path,
    preserve: bool,
) -> Result<(), CopyError> {
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = target.with_file_name(format!(".{name}.shvcp-{:08x}", rand::random::<u32>()));
    entry.set_preserve_permissions(preserve);
    entry.set_preserve_mtime(preserve);
    entry.set_unpack_xattrs(false);
    let result = entry
        .unpack(&tmp)
        .map_err(|e| io(target, e))
        .and_then(|_| std::fs::rename(&tmp, target).map_err(|e| io(target, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A blocking writer that hands chunks to an async task (the tunnel's sender).
pub struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 128 * 1024;

impl ChannelWriter {
    pub fn new(tx: tokio::sync::mpsc::Sender<Vec<u8>>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "tunnel closed"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A blocking reader fed by an async task (the tunnel's receiver); EOF when the
/// sender is dropped.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shvcp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_tree_round_trips_with_modes_and_mtimes() {
        use std::os::unix::fs::PermissionsExt;
        let src = tmp("src");
        std::fs::create_dir_all(src.join("tree/sub")).unwrap();
        std::fs::write(src.join("tree/a.txt"), b"alpha").unwrap();
        std::fs::write(src.join("tree/sub/b.bin"), [0u8, 255, 7]).unwrap();
        std::fs::set_permissions(
            src.join("tree/a.txt"),
            std::fs::Permissions::from_mode(0o751),
        )
        .unwrap();
        filetime::set_file_mtime(
            src.join("tree/a.txt"),
            filetime::FileTime::from_unix_time(1_000_000_000, 0),
        )
        .unwrap();
        let mut stream = Vec::new();
        archive(&[src.join("tree")], true, &mut stream).unwrap();
        let dst = tmp("dst");
        extract(&stream[..], &dst, true).unwrap();
        assert_eq!(std::fs::read(dst.join("tree/a.txt")).unwrap(), b"alpha");
        assert_eq!(
            std::fs::read(dst.join("tree/sub/b.bin")).unwrap(),
            [0, 255, 7]
        );
        let m = std::fs::metadata(dst.join("tree/a.txt")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o751);
        assert_eq!(
            filetime::FileTime::from_last_modification_time(&m).unix_seconds(),
            1_000_000_000
        );
        // Into a new name: a tree, and a single file.
        extract(&stream[..], &dst.join("renamed"), false).unwrap();
        assert!(dst.join("renamed/sub/b.bin").is_file());
        let mut one = Vec::new();
        archive(&[src.join("tree/a.txt")], false, &mut one).unwrap();
        extract(&one[..], &dst.join("new.txt"), false).unwrap();
        assert_eq!(std::fs::read(dst.join("new.txt")).unwrap(), b"alpha");
        let _ = std::fs::remove_dir_all(&src);
        let _ = std::fs::remove_dir_all(&dst);
    }

    #[test]
    fn a_lying_sender_cannot_write_outside_the_destination() {
        use std::os::unix::fs::PermissionsExt;
        let dst = tmp("evil");
        // `../escape` and an absolute path.
        for name in ["../escape", "/tmp/shvcp-abs"] {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            // Bypass the builder's own checks: write the raw name into the header.
            let bytes = h.as_old_mut().name.as_mut();
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
            let stream = b.into_inner().unwrap();
            let e = extract(&stream[..], &dst, false).unwrap_err();
            assert!(matches!(e, CopyError::Unsafe(_)), "{name}: {e}");
        }
        // A symlink to elsewhere, then a file through it.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "x", "/etc").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        b.append_data(&mut h, "x/passwd-shvcp-test", &b"x"[..])
            .unwrap();
        let stream = b.into_inner().unwrap();
        let e = extract(&stream[..], &dst, false).unwrap_err();
        assert!(matches!(e, CopyError::Unsafe(_)), "{e}");
        assert!(!Path::new("/etc/passwd-shvcp-test").exists());
        // A symlink to elsewhere, then a directory of that name with mode 0777 (with -p
        // the mode would have gone to the link's target).
        let outside = tmp("outside");
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "d", &outside).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_data(&mut h, "d", &b""[..]).unwrap();
        let stream = b.into_inner().unwrap();
        let e = extract(&stream[..], &dst.join("t"), true).unwrap_err();
        assert!(matches!(e, CopyError::Unsafe(_)), "{e}");
        let m = std::fs::metadata(&outside).unwrap();
        assert_eq!(
            m.permissions().mode() & 0o777,
            0o700,
            "chmod through a link"
        );
        let _ = std::fs::remove_dir_all(&outside);
        let _ = std::fs::remove_dir_all(&dst);
    }

    #[test]
    fn missing_sources_and_directories_without_r_are_errors() {
        let e = archive(&[PathBuf::from("/nonexistent/shvcp")], false, Vec::new()).unwrap_err();
        assert!(e.to_string().contains("No such file"), "{e}");
        let e = archive(&[std::env::temp_dir()], false, Vec::new()).unwrap_err();
        assert!(matches!(e, CopyError::IsDirectory(_)));
    }
}
