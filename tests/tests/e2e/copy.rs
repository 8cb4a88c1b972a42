//! `shvcp`: files both ways through a tunnel, byte-exact; a tree with -r -p keeps modes
//! and mtimes; a missing file is exit status 1 with one line.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::shell_rig::Agent;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tests::*;

async fn shvcp(broker: &Broker, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(bin("shvcp"));
    cmd.arg("-q")
        .args(args.iter().take_while(|a| a.starts_with('-')))
        .arg(broker.url("admin", "admin"))
        .args(args.iter().skip_while(|a| a.starts_with('-')))
        .stdin(std::process::Stdio::null());
    tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .expect("shvcp hung")
        .expect("run shvcp")
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "shvcp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mtime(p: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().mtime()
}

fn set_mtime(p: &Path, t: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: t,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: t,
            tv_nsec: 0,
        },
    ];
    // SAFETY: a valid C string and two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_mib_both_ways_byte_exact() {
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, "test/agent").await;
    let dir = TempDir::new("shvcp");
    let (local, device) = (dir.path().join("local"), dir.path().join("device"));
    std::fs::create_dir_all(&local).unwrap();
    std::fs::create_dir_all(&device).unwrap();
    let mut data = vec![0u8; 20 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    std::fs::write(local.join("big.bin"), &data).unwrap();
    let want = Sha256::digest(&data);
    let up = format!("test/agent:{}", device.join("up.bin").display());
    ok(&shvcp(&broker, &[local.join("big.bin").to_str().unwrap(), &up]).await);
    assert_eq!(
        Sha256::digest(std::fs::read(device.join("up.bin")).unwrap()),
        want
    );
    let down = local.join("down.bin");
    ok(&shvcp(&broker, &[&up, down.to_str().unwrap()]).await);
    assert_eq!(Sha256::digest(std::fs::read(&down).unwrap()), want);
    // Nothing temporary is left behind.
    for d in [&local, &device] {
        for e in std::fs::read_dir(d).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.contains("shvcp-"), "left over: {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_with_r_and_p_keeps_modes_and_mtimes() {
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, "test/agent").await;
    let dir = TempDir::new("shvcp-tree");
    let src = dir.path().join("src/tree");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(src.join("sub/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(src.join("sub/deeper/c.bin"), [0u8, 1, 2, 255]).unwrap();
    let modes = [
        ("a.txt", 0o640),
        ("sub/run.sh", 0o750),
        ("sub/deeper/c.bin", 0o600),
    ];
    for (f, m) in modes {
        std::fs::set_permissions(src.join(f), std::fs::Permissions::from_mode(m)).unwrap();
        set_mtime(&src.join(f), 1_500_000_000);
    }
    std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o710)).unwrap();
    set_mtime(&src.join("sub"), 1_400_000_000);
    let device = dir.path().join("device");
    std::fs::create_dir_all(&device).unwrap();
    let remote = format!("test/agent:{}", device.display());
    ok(&shvcp(&broker, &["-r", "-p", src.to_str().unwrap(), &remote]).await);
    // And back again, into a new name.
    let back = dir.path().join("back");
    let remote_tree = format!("test/agent:{}", device.join("tree").display());
    ok(&shvcp(&broker, &["-r", "-p", &remote_tree, back.to_str().unwrap()]).await);
    for root in [device.join("tree"), back] {
        for (f, m) in modes {
            let p = root.join(f);
            assert_eq!(
                std::fs::read(&p).unwrap(),
                std::fs::read(src.join(f)).unwrap(),
                "{}",
                p.display()
            );
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, m, "{}", p.display());
            assert_eq!(mtime(&p), 1_500_000_000, "{}", p.display());
        }
        let sub = root.join("sub");
        assert_eq!(
            std::fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
            0o710
        );
        assert_eq!(mtime(&sub), 1_400_000_000, "{}", sub.display());
    }
}

#[tokio::test]
async fn a_missing_remote_file_is_one_line_and_status_1() {
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, "test/agent").await;
    let dir = TempDir::new("shvcp-missing");
    let dest = dir.path().join("x");
    let out = shvcp(
        &broker,
        &["test/agent:/nonexistent/shvcp-file", dest.to_str().unwrap()],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("shvcp: test/agent:/nonexistent/shvcp-file: No such file"),
        "{err}"
    );
    assert!(!dest.exists());
    // A directory without -r, and a local source that is missing: also one line.
    let out = shvcp(&broker, &[dir.path().to_str().unwrap(), "test/agent:/tmp/"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1) && err.contains("is a directory"),
        "{err}"
    );
}

/// A sparse file, both ways: the exact size and content, and still sparse (once it was
/// skipped with exit status 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_file_both_ways_stays_sparse() {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, "test/agent").await;
    let dir = TempDir::new("shvcp-sparse");
    let src = dir.path().join("holes.bin");
    {
        let mut f = std::fs::File::create(&src).unwrap();
        f.write_all(b"start").unwrap();
        f.seek(SeekFrom::Start(256 << 20)).unwrap();
        f.write_all(b"end").unwrap();
    }
    let size = (256u64 << 20) + 3;
    let remote = dir.path().join("remote");
    std::fs::create_dir(&remote).unwrap();
    ok(&shvcp(
        &broker,
        &[
            src.to_str().unwrap(),
            &format!("test/agent:{}/", remote.display()),
        ],
    )
    .await);
    let back = dir.path().join("back.bin");
    ok(&shvcp(
        &broker,
        &[
            &format!("test/agent:{}/holes.bin", remote.display()),
            back.to_str().unwrap(),
        ],
    )
    .await);
    for p in [remote.join("holes.bin"), back.clone()] {
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.len(), size, "{}", p.display());
        assert!(
            m.blocks() * 512 < 8 << 20,
            "{} is not sparse: {} blocks",
            p.display(),
            m.blocks()
        );
        let data = std::fs::read(&p).unwrap();
        assert!(data.starts_with(b"start") && data.ends_with(b"end"));
        assert!(data[5..data.len() - 3].iter().all(|b| *b == 0));
    }
}

/// scp's rules for destinations, checked before anything is written: a missing `DST/`
/// is an error (not a file named DST), several sources need an existing directory, a
/// new name needs its directory; a FIFO is an error naming it, not a silent skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_are_checked_and_nothing_is_skipped_silently() {
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, "test/agent").await;
    let dir = TempDir::new("shvcp-dest");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, b"a").unwrap();
    std::fs::write(&b, b"b").unwrap();
    let missing = dir.path().join("nosuch");
    let fail = |out: &std::process::Output, want: &str| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    };
    let remote_a = format!("test/agent:{}", a.display());
    let remote_b = format!("test/agent:{}", b.display());
    let slash = format!("{}/", missing.display());
    // Downloads.
    fail(
        &shvcp(&broker, &[&remote_a, &slash]).await,
        "no such directory",
    );
    fail(
        &shvcp(&broker, &[&remote_a, &remote_b, missing.to_str().unwrap()]).await,
        "no such directory",
    );
    let deep = missing.join("x");
    fail(
        &shvcp(&broker, &[&remote_a, deep.to_str().unwrap()]).await,
        "no such directory",
    );
    assert!(
        !missing.exists(),
        "a download created {}",
        missing.display()
    );
    // Uploads.
    let up = format!("test/agent:{slash}");
    fail(
        &shvcp(&broker, &[a.to_str().unwrap(), &up]).await,
        "no such directory",
    );
    let up = format!("test/agent:{}", missing.display());
    fail(
        &shvcp(&broker, &[a.to_str().unwrap(), b.to_str().unwrap(), &up]).await,
        "no such directory",
    );
    let up = format!("test/agent:{}", deep.display());
    fail(
        &shvcp(&broker, &[a.to_str().unwrap(), &up]).await,
        "no such directory",
    );
    assert!(!missing.exists(), "an upload created {}", missing.display());
    // A FIFO in a tree: the rest arrives, the copy fails naming it.
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f"), b"f").unwrap();
    nix::unistd::mkfifo(
        &tree.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    fail(
        &shvcp(
            &broker,
            &[
                "-r",
                &format!("test/agent:{}", tree.display()),
                out_dir.to_str().unwrap(),
            ],
        )
        .await,
        "pipe (a FIFO)",
    );
    assert_eq!(std::fs::read(out_dir.join("tree/f")).unwrap(), b"f");
}

/// Ctrl-C in the middle of a download: exit 130 and no temporary file left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_mid_download_leaves_nothing() {
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, "test/agent").await;
    let dir = TempDir::new("shvcp-int");
    let big = dir.path().join("big.bin");
    {
        let mut data = vec![0u8; 1 << 20];
        let mut f = std::fs::File::create(&big).unwrap();
        for _ in 0..400 {
            rand::thread_rng().fill_bytes(&mut data);
            std::io::Write::write_all(&mut f, &data).unwrap();
        }
    }
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let child = tokio::process::Command::new(bin("shvcp"))
        .arg("-q")
        .arg(broker.url("admin", "admin"))
        .arg(format!("test/agent:{}", big.display()))
        .arg(&out_dir)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the temporary file is there and growing, then interrupt.
    wait_for("a temporary file in the destination", || async {
        std::fs::read_dir(&out_dir)
            .unwrap()
            .flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 1 << 20))
            .then_some(())
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("shvcp did not stop")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Remote relative paths start in the home of the user the agent runs as, and `~` is
/// expanded there, as scp does (they once started in the agent's working directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_relative_paths_start_at_home() {
    let broker = Broker::start(None);
    let home = TempDir::new("shvcp-home");
    let _agent = Agent::start_with_env(
        &broker,
        &broker.url("device", "device"),
        "test/agent",
        &[],
        &[("HOME", home.path().to_str().unwrap())],
    )
    .await;
    std::fs::write(home.path().join("notes.txt"), b"at home").unwrap();
    let dir = TempDir::new("shvcp-home-local");
    for (remote, name) in [("notes.txt", "a"), ("~/notes.txt", "b")] {
        let dest = dir.path().join(name);
        ok(&shvcp(
            &broker,
            &[&format!("test/agent:{remote}"), dest.to_str().unwrap()],
        )
        .await);
        assert_eq!(std::fs::read(&dest).unwrap(), b"at home", "{remote}");
    }
    let up = dir.path().join("a");
    ok(&shvcp(&broker, &[up.to_str().unwrap(), "test/agent:~/uploaded"]).await);
    assert_eq!(
        std::fs::read(home.path().join("uploaded")).unwrap(),
        b"at home"
    );
}
