//! Runs `shvbench`'s smoke mode against our debug shvbroker (built by
//! `cargo build --workspace` before the tests), including a 1 MiB round trip through
//! a tunnel (debug shvagent, shvrexec, shvrsh). Asserts only that calls, signals and
//! tunnel bytes went through: timing on a shared CI machine means nothing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use libshv::RpcUrl;

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn debug_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug")
}

fn broker_bin() -> PathBuf {
    debug_dir().join("shvbroker")
}

/// Starts the broker on an ephemeral port and returns it with the port it logged.
fn start_broker() -> (KillOnDrop, u16) {
    let bin = broker_bin();
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        bin.display()
    );
    let mut child = Command::new(&bin)
        .args(["--listen", "tcp://127.0.0.1:0", "--log", "info"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shvbroker");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    // Keeps draining stderr after the port is found, so the broker never blocks on it.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on tcp://127.0.0.1:").nth(1) {
                let port: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                let _ = tx.send(port.parse::<u16>().ok());
            }
        }
    });
    let child = KillOnDrop(child);
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("broker logs its port")
        .expect("a numeric port");
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_against_our_broker() {
    let (broker, port) = start_broker();
    let url = RpcUrl::parse(&format!("tcp://admin@127.0.0.1:{port}?password=admin")).unwrap();
    let device = RpcUrl::parse(&format!("tcp://device@127.0.0.1:{port}?password=device")).unwrap();
    let pid = broker.0.id();
    let bins = shvbench::tunnel::TunnelBins::in_dir(&debug_dir());
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
