//! Reading the tar stream into a destination, trusting nothing in it: entry kinds
//! allowed, files written under a temporary name and renamed into place when complete.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::dest::{check_destination, no_symlink_between, safe_relative};
use super::{io, CopyError, CopyStats};
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::tunnel::copy::archive;
    use crate::tunnel::copy::tests::tmp;

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
}
