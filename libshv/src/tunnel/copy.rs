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
    #[error("{0}: no such directory")]
    NoSuchDirectory(String),
    #[error("not copied ({} entr{}): {}", .0.len(), if .0.len() == 1 { "y" } else { "ies" }, .0.join(", "))]
    Skipped(Vec<String>),
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

/// Reads a tar stream into `dest` (blocking). An existing directory receives the
/// entries under their names; otherwise the stream must hold one source, which is
/// created as `dest` (a file copied to a new name, or a directory copied with -r).
/// `preserve` applies the archive's modes and mtimes (directories' last).
///
/// Nothing is written before the destination is known good: `dest` written with a
/// trailing `/` must be an existing directory (so must it for several sources: the
/// sender says so with that `/`), and the directory a new name goes into must exist.
/// An entry that cannot be copied (a FIFO, a device) does not stop the others, but
/// makes the whole copy fail with its name ([`CopyError::Skipped`]): nothing is lost
/// silently. Sparse files are written sparse where the file system allows.
pub fn extract<R: Read>(input: R, dest: &Path, preserve: bool) -> Result<CopyStats, CopyError> {
    let wants_dir = dest.as_os_str().as_encoded_bytes().ends_with(b"/");
    let base = check_destination(dest, wants_dir)?;
    let into_dir = base == dest;
    let mut skipped = Vec::new();
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
            // GNU sparse entries: the tar crate writes their data and seeks over
            // the holes, so the copy is as sparse as the file system lets it be.
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
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
            other => {
                tracing::warn!("not copied: {} ({other:?})", name.display());
                if skipped.len() < 16 {
                    skipped.push(format!("{} ({})", name.display(), kind_name(other)));
                } else if skipped.len() == 16 {
                    skipped.push("…".into());
                }
            }
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
    if !skipped.is_empty() {
        return Err(CopyError::Skipped(skipped));
    }
    Ok(stats)
}

/// A tar entry type as a person calls it.
fn kind_name(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Fifo => "a FIFO",
        tar::EntryType::Char => "a character device",
        tar::EntryType::Block => "a block device",
        tar::EntryType::Link => "a hard link",
        _ => "an entry of an unsupported kind",
    }
}

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
    fn sparse_files_stay_sparse_and_odd_entries_are_errors() {
        use std::io::{Seek, SeekFrom};
        let src = tmp("sparse-src");
        let f = src.join("holes.bin");
        {
            let mut w = std::fs::File::create(&f).unwrap();
            w.write_all(b"head").unwrap();
            w.seek(SeekFrom::Start(64 << 20)).unwrap();
            w.write_all(b"tail").unwrap();
        }
        let mut stream = Vec::new();
        archive(std::slice::from_ref(&f), false, &mut stream).unwrap();
        let dst = tmp("sparse-dst");
        extract(&stream[..], &dst, false).unwrap();
        let out = dst.join("holes.bin");
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&f).unwrap());
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&out).unwrap();
        assert_eq!(m.len(), (64 << 20) + 4);
        assert!(
            m.blocks() * 512 < 1 << 20,
            "not sparse: {} blocks",
            m.blocks()
        );

        // A FIFO in the tree: the rest is copied, the copy fails naming it.
        let tree = src.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("a"), b"a").unwrap();
        nix::unistd::mkfifo(
            &tree.join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let mut stream = Vec::new();
        archive(&[tree], true, &mut stream).unwrap();
        let e = extract(&stream[..], &dst, false).unwrap_err().to_string();
        assert!(e.contains("pipe (a FIFO)"), "{e}");
        assert_eq!(std::fs::read(dst.join("tree/a")).unwrap(), b"a");
    }

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
