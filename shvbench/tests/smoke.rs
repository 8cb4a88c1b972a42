//! Runs `shvbench`'s smoke mode against our shvbroker of this build (built by
//! `cargo build --workspace` before the tests, started by the `tests` crate's harness), including a 1 MiB round trip through
//! a tunnel (debug shvagent, shvrexec, shvrsh). Asserts only that calls, signals and
//! tunnel bytes went through: timing on a shared CI machine means nothing.

use libshv::RpcUrl;
use tests::{profile_dir, Broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_against_our_broker() {
    // The test harness's broker: readiness and port from its --ready-file.
    let broker = Broker::start_with_args(None, &["--log", "info"]);
    let port = broker.port;
    let url = RpcUrl::parse(&format!("tcp://admin@127.0.0.1:{port}?password=admin")).unwrap();
    let device = RpcUrl::parse(&format!("tcp://device@127.0.0.1:{port}?password=device")).unwrap();
    let pid = broker.pid();
    let bins = shvbench::tunnel::TunnelBins::in_dir(&profile_dir());
    if let Err(e) = bins.check() {
        panic!("{e} (run `cargo build --workspace` first)");
    }
    let r = shvbench::smoke(&url, &device, "test/bench", Some(pid), Some(&bins))
        .await
        .expect("smoke run");
    assert!(r.rpc.calls > 0, "no rpc call succeeded: {:?}", r.rpc);
    assert_eq!(r.rpc.errors, 0, "{:?}", r.rpc);
    assert!(
        r.relay.calls > 0,
        "no call through the relay: {:?}",
        r.relay
    );
    assert!(
        r.fanout.delivered > 0,
        "no signal delivered: {:?}",
        r.fanout
    );
    assert_eq!(r.idle.connected, r.idle.clients, "{:?}", r.idle);
    assert!(r.idle.rss_after_kib.is_some(), "RSS of the broker not read");
    // The byte-for-byte check is inside the scenario; here only that it ran.
    let t = r.tunnel.as_ref().expect("tunnel round");
    assert_eq!(t.cat.bytes, 1 << 20, "{t:?}");
    assert_eq!(t.echo.keystrokes, 3, "{t:?}");
    assert!(r.relay_bulk.is_some());
}

/// `shvbench tree` end to end on a tiny tree (2 sites × 4 devices, two and three
/// levels, every fault case with a short outage), with the debug binaries: every row
/// has a value in both columns and signals reached the subscriber on central.
#[test]
fn tree_smoke() {
    let dir = profile_dir();
    let work = std::env::temp_dir().join(format!("shvbench-tree-smoke-{}", std::process::id()));
    let report = work.join("report.md");
    let out = std::process::Command::new(dir.join("shvbench"))
        .arg("tree")
        .args([
            "--sites",
            "2",
            "--devices",
            "8",
            "--levels",
            "2,3",
            "--regions",
            "1",
        ])
        .args(["--device-procs", "2", "--calls", "20", "--rates", "200"])
        .args(["--signal-secs", "0.3", "--outage", "0.5", "--within", "60"])
        .arg("--ours")
        .arg(dir.join("shvbroker"))
        .arg("--workdir")
        .arg(&work)
        .arg("--output")
        .arg(&report)
        .output()
        .expect("run shvbench (cargo build --workspace first)");
    assert!(
        out.status.success(),
        "shvbench tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(&report).expect("report written");
    assert!(!md.contains("stopped early"), "{md}");
    let row = |name: &str| -> Vec<String> {
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row {name:?} in\n{md}"));
        line.split('|')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .skip(1)
            .collect()
    };
    for name in [
        "bring-up: every device answers on central: s",
        "call on central p50: ms",
        "central restart at once: every device answers after: s",
        "site killed, restarted at once: its devices answer after: s",
    ] {
        let cells = row(name);
        assert_eq!(cells.len(), 2, "{name}: {cells:?}");
        assert!(
            cells.iter().all(|c| c.parse::<f64>().is_ok()),
            "{name}: {cells:?}"
        );
    }
    for c in row("signals 200/s: delivered/s") {
        assert!(
            c.parse::<f64>().unwrap() > 0.0,
            "no signal delivered:\n{md}"
        );
    }
    assert_eq!(row("central `ls SITE/test`: names"), ["4", "4"], "{md}");
    // Two centrals by default: not one call through the surviving one may fail.
    assert_eq!(
        row("one of two centrals killed: of them failed"),
        ["0", "0"],
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&work);
}
