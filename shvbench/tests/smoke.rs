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
