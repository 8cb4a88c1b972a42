//! `shvcp`: files both ways through a tunnel, byte-exact; a tree with -r -p keeps modes
//! and mtimes; a missing file is exit status 1 with one line.

mod rsh_common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rand::RngCore;
use rsh_common::Agent;
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
