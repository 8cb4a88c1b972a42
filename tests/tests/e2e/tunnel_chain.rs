//! The whole tunnel chain on loopback: broker and agent in-process, the real shvrexec
//! binary spawned by the agent, and the rsh side driven through `libshv::tunnel`.

use std::time::Duration;

use libshv::tunnel::{CloseStatus, LaunchParams, TunnelEnd, TunnelEvent};
use libshv::{Client, ClientConfig, RpcUrl};
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn connect(url: &str) -> Client {
    let cfg = ClientConfig::from_url(RpcUrl::parse(url).unwrap());
    for _ in 0..50 {
        if let Ok((c, _)) = Client::connect(&cfg, None).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {url}");
}

/// Starts a broker and an agent mounted at test/agent; returns the admin URL.
async fn setup(stop: &CancellationToken) -> String {
    let port = free_port();
    let config = shvbroker::config::Config {
        listen: vec![format!("tcp://127.0.0.1:{port}")],
        ..Default::default()
    };
    let settings = shvbroker::settings::Settings::new(&config).unwrap();
    tokio::spawn(shvbroker::server::run(settings, stop.clone()));
    let agent_url = format!("tcp://device@127.0.0.1:{port}?password=device&devmount=test/agent");
    let admin = format!("tcp://admin@127.0.0.1:{port}?password=admin");
    let _ = connect(&admin).await;
    let cfg = ClientConfig::from_url(RpcUrl::parse(&agent_url).unwrap());
    let rexec = tests::bin("shvrexec");
    tokio::spawn(shvagent::run(cfg, rexec, false));
    let probe = connect(&admin).await;
    for _ in 0..50 {
        if probe.call("test/agent/.app", "name", None).await.is_ok() {
            return admin;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("agent did not mount");
}

/// Runs a command through a tunnel, feeding `input` then EOF; returns (out, err, status).
async fn run(admin: &str, launch: LaunchParams, input: &[u8]) -> (Vec<u8>, Vec<u8>, CloseStatus) {
    let client = connect(admin).await;
    let end = TunnelEnd::launch(&client, "test/agent", &launch, Duration::from_secs(20))
        .await
        .expect("tunnel opens");
    let (tx, mut rx) = end.split();
    if !input.is_empty() {
        tx.send_data(0, input).await.unwrap();
    }
    tx.send_control(libshv::tunnel::Control::Eof).await.unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("tunnel stalled")
            .expect("tunnel ended without CloseTunnel");
        match ev {
            TunnelEvent::Data { channel: 2, data } => err.extend(data),
            TunnelEvent::Data { data, .. } => out.extend(data),
            TunnelEvent::Control(_) => {}
            TunnelEvent::Closed(st) => return (out, err, st),
        }
    }
}

fn cmd(pty: bool, c: &[&str]) -> LaunchParams {
    LaunchParams {
        pty,
        cmd: c.iter().map(|s| s.to_string()).collect(),
        cols: 100,
        rows: 30,
        env: vec![("TERM".into(), "xterm-256color".into())],
        cwd: None,
        forward: None,
        copy: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_chain() {
    let stop = CancellationToken::new();
    let admin = setup(&stop).await;

    // Pipes: streams apart, stdin forwarded with EOF, exit code.
    let (out, err, st) = run(
        &admin,
        cmd(false, &["sh", "-c", "cat; echo oops >&2; exit 3"]),
        b"hello\n",
    )
    .await;
    assert_eq!(out, b"hello\n");
    assert_eq!(err, b"oops\n");
    assert_eq!(st, CloseStatus::ExitCode(3));

    // Binary-safe and larger than one frame.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (out, _, st) = run(&admin, cmd(false, &["cat"]), &data).await;
    assert_eq!(st, CloseStatus::ExitCode(0));
    assert!(out == data, "binary data changed on the way");

    // Signal status.
    let (_, _, st) = run(&admin, cmd(false, &["sh", "-c", "kill -9 $$"]), b"").await;
    assert_eq!(st, CloseStatus::Signal(9));

    // PTY: a terminal with the requested size and TERM.
    let (out, _, st) = run(
        &admin,
        cmd(true, &["sh", "-c", "tty; stty size; echo $TERM"]),
        b"",
    )
    .await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("/dev/pts/") && out.contains("30 100"), "{out}");
    assert!(out.contains("xterm-256color"), "{out}");
    assert_eq!(st, CloseStatus::ExitCode(0));

    // A missing program: exit status 127, as a shell reports it, and its name on stderr.
    let (_, err, st) = run(&admin, cmd(false, &["/no/such/program"]), b"").await;
    assert_eq!(st, CloseStatus::ExitCode(127));
    assert!(
        String::from_utf8_lossy(&err).contains("/no/such/program: command not found"),
        "{err:?}"
    );

    // No such path: an RPC error instead of a tunnel.
    let client = connect(&admin).await;
    let r = TunnelEnd::launch(
        &client,
        "test/nope",
        &cmd(false, &["true"]),
        Duration::from_secs(5),
    )
    .await;
    assert!(matches!(r, Err(libshv::tunnel::TunnelError::Rpc(_))));
    stop.cancel();
}
