//! Security round 4: frames a peer announces and never finishes cannot pin the broker's
//! memory, whatever the framing.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use libshv::login::{Credentials, LoginParams};
use libshv::{RpcFrame, RpcMessage};
use tests::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const MIB: usize = 1024 * 1024;
/// The broker's default max_frame_size.
const FRAME: usize = libshv::codec::DEFAULT_MAX_FRAME;
/// Connections per framing, as in the report.
const HOLDERS: usize = 64;

/// One whole-size Block frame less its last 64 bytes: the broker learns the length at
/// once and then waits for bytes that never come.
fn unfinished_block_frame() -> Vec<u8> {
    let mut f = frame_bytes(1, &vec![0u8; FRAME - 1]);
    f.truncate(f.len() - 64);
    f
}

/// The start of one WebSocket binary message of FRAME bytes (an SHV message of the
/// `shv3` subprotocol), less its last 64 bytes, masked with a zero key as a client must
/// mask (a zero key leaves the payload as it is).
fn unfinished_ws_message() -> Vec<u8> {
    let mut m = vec![0x82, 0x80 | 127];
    m.extend_from_slice(&(FRAME as u64).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.push(1); // ChainPack
    m.resize(m.len() + FRAME - 1 - 64, 0);
    m
}

fn viewer_login(nonce: &str) -> RpcMessage {
    let p = LoginParams {
        user: "viewer".into(),
        credentials: Credentials::Plain("viewer".into()),
        ..Default::default()
    };
    RpcMessage::new_request(2, "", "login", Some(p.to_value(nonce)))
}

/// A viewer logged in over raw TCP, then sending `unfinished_block_frame` for as long
/// as the broker reads (the task blocks once it stops).
async fn tcp_holder(port: u16) -> tokio::task::JoinHandle<()> {
    let mut c = RawConn::connect(port).await;
    c.login("viewer", "viewer", false)
        .await
        .expect("viewer login");
    tokio::spawn(async move {
        let _ = c.send_bytes(&unfinished_block_frame()).await;
        // Held open until the test aborts the task.
        std::future::pending::<()>().await;
    })
}

fn ws_message(m: &RpcMessage) -> Message {
    let mut b = vec![1u8];
    b.extend_from_slice(&m.to_frame().payload());
    Message::binary(b)
}

fn ws_response(m: Message) -> RpcMessage {
    let data = m.into_data();
    assert_eq!(data.first(), Some(&1), "a ChainPack message");
    let f = RpcFrame::parse(data.slice(1..)).expect("a frame");
    RpcMessage::from_frame(&f).expect("a message")
}

/// The same over `ws://` with the `shv3` subprotocol: one SHV message per WebSocket
/// message, the last one announced whole and never finished.
async fn ws_holder(port: u16) -> tokio::task::JoinHandle<()> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut req = format!("ws://127.0.0.1:{port}/")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("shv3"));
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        resp.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "shv3"
    );
    let next = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| loop {
        match tokio::time::timeout(TIMEOUT, ws.next()).await {
            Ok(Some(Ok(m @ Message::Binary(_)))) => return ws_response(m),
            Ok(Some(Ok(_))) => continue,
            other => panic!("WebSocket login: {other:?}"),
        }
    };
    ws.send(ws_message(&RpcMessage::new_request(1, "", "hello", None)))
        .await
        .unwrap();
    let hello = next(&mut ws).await.result().expect("hello");
    let nonce = hello.get("nonce").unwrap().as_str().to_string();
    ws.send(ws_message(&viewer_login(&nonce))).await.unwrap();
    next(&mut ws).await.result().expect("viewer login over ws");
    tokio::spawn(async move {
        // Underneath the WebSocket: a frame header and most of its payload.
        let _ = ws.get_mut().write_all(&unfinished_ws_message()).await;
        std::future::pending::<()>().await;
    })
}

/// The same in Serial framing (`tcps://`): a frame started with STX that never ends.
async fn serial_holder(port: u16) -> tokio::task::JoinHandle<()> {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut call = async |s: &mut tokio::net::TcpStream, m: RpcMessage| {
        let mut b = vec![1u8];
        b.extend_from_slice(&m.to_frame().payload());
        s.write_all(&libshv::transport::serial::encode(&b, false))
            .await
            .unwrap();
        // The response: STX … ETX, unescaped.
        loop {
            if let Some(end) = got
                .iter()
                .position(|b| *b == libshv::transport::serial::ETX)
            {
                let frame: Vec<u8> = got.drain(..=end).collect();
                let start = frame
                    .iter()
                    .position(|b| *b == libshv::transport::serial::STX)
                    .unwrap();
                let mut raw = Vec::new();
                let mut esc = false;
                for &b in &frame[start + 1..frame.len() - 1] {
                    if esc {
                        raw.push(match b {
                            0x02 => libshv::transport::serial::STX,
                            0x03 => libshv::transport::serial::ETX,
                            0x04 => libshv::transport::serial::ATX,
                            _ => libshv::transport::serial::ESC,
                        });
                        esc = false;
                    } else if b == libshv::transport::serial::ESC {
                        esc = true;
                    } else {
                        raw.push(b);
                    }
                }
                return ws_response(Message::binary(raw));
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(TIMEOUT, s.read(&mut chunk))
                .await
                .expect("a Serial response")
                .unwrap();
            assert_ne!(n, 0, "the broker closed the Serial connection");
            got.extend_from_slice(&chunk[..n]);
        }
    };
    let hello = call(&mut s, RpcMessage::new_request(1, "", "hello", None))
        .await
        .result()
        .expect("hello");
    let nonce = hello.get("nonce").unwrap().as_str().to_string();
    call(&mut s, viewer_login(&nonce))
        .await
        .result()
        .expect("viewer login over tcps");
    tokio::spawn(async move {
        let mut f = vec![libshv::transport::serial::STX, 1];
        f.resize(FRAME - 64, 0);
        let _ = s.write_all(&f).await;
        std::future::pending::<()>().await;
    })
}

#[derive(Clone, Copy, Debug)]
enum Framing {
    Block,
    WebSocket,
    Serial,
}

/// The report's attack: 64 viewer connections each holding a 16 MiB frame less 64
/// bytes. The broker charges frames being read to the user's budget (32 MiB) before
/// it reads them, so it holds two such frames, not 64 (+1 GiB on the unfixed broker),
/// and other users are served meanwhile.
async fn unfinished_frames_do_not_pin_memory(framing: Framing) {
    let broker = Broker::start_with_args(
        Some(&config_yaml(&[], "")),
        &[
            "--listen",
            "ws://127.0.0.1:0",
            "--listen",
            "tcps://127.0.0.1:0",
        ],
    );
    let (admin, _) = broker.connect("admin", "admin").await;
    assert_served(&admin).await;
    let pid = broker.pid();
    let baseline = vm_rss_kib(pid);

    let mut holders = Vec::new();
    for _ in 0..HOLDERS {
        holders.push(match framing {
            Framing::Block => tcp_holder(broker.port).await,
            Framing::WebSocket => ws_holder(broker.listen_port("ws")).await,
            Framing::Serial => serial_holder(broker.listen_port("tcps")).await,
        });
    }
    // Let the broker read whatever it is going to; sample its memory meanwhile.
    let mut peak = baseline;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(vm_rss_kib(pid));
    }
    // A fresh admin login and the established one are both served.
    let (fresh, _) = broker.connect("admin", "admin").await;
    assert_served(&fresh).await;
    assert_served(&admin).await;
    peak = peak.max(vm_rss_kib(pid));
    let grown_mib = (peak.saturating_sub(baseline)) as usize / 1024;
    eprintln!("{framing:?}: broker grew by {grown_mib} MiB");
    assert!(
        grown_mib < 64,
        "{framing:?}: {HOLDERS} connections holding unfinished 16 MiB frames grew the \
         broker by {grown_mib} MiB"
    );
    for h in holders {
        h.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_block_frames_do_not_pin_memory() {
    unfinished_frames_do_not_pin_memory(Framing::Block).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_websocket_messages_do_not_pin_memory() {
    unfinished_frames_do_not_pin_memory(Framing::WebSocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_serial_frames_do_not_pin_memory() {
    unfinished_frames_do_not_pin_memory(Framing::Serial).await;
}

/// A frame that holds its share of the budget longer than `frame_timeout` closes its
/// connection, and the share goes to the next one waiting: a holder cannot keep it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_never_finishes_is_cut_off_at_the_frame_timeout() {
    let mut broker = Broker::start(Some(&config_yaml(&[], "limits: {frame_timeout: 1}\n")));
    let mut c = RawConn::connect(broker.port).await;
    c.login("viewer", "viewer", false)
        .await
        .expect("viewer login");
    c.send_bytes(&unfinished_block_frame()).await.unwrap();
    let started = std::time::Instant::now();
    c.expect_closed().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed only after {:?}",
        started.elapsed()
    );
    broker.wait_log("did not arrive whole within");
    broker.assert_running();

    // A whole big frame from the same user still passes (refused for its content by
    // the method, not by the reader).
    let mut c = RawConn::connect(broker.port).await;
    c.login("viewer", "viewer", false)
        .await
        .expect("viewer login");
    let big = libshv::RpcValue::from("x".repeat(4 * MIB));
    let r = c
        .call(".broker/currentClient", "subscribe", Some(big))
        .await;
    assert!(r.result().is_err());
    assert!(c.call(".app", "ping", None).await.result().is_ok());
}

/// `idleWatchDogTimeOut: 0` asks for no watchdog at all: the broker gives the
/// configured maximum instead, so a silent connection is still closed.
#[tokio::test]
async fn a_client_cannot_switch_the_idle_watchdog_off() {
    let broker = Broker::start(Some(&config_yaml(&[], "limits: {max_idle_timeout: 1}\n")));
    let mut c = RawConn::connect(broker.port).await;
    let p = LoginParams {
        user: "viewer".into(),
        credentials: Credentials::Plain("viewer".into()),
        idle_timeout: Some(0),
        ..Default::default()
    };
    c.login_params(&p).await.expect("login");
    let started = std::time::Instant::now();
    c.expect_closed().await;
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The report's lying device: a plain `device` login (read access to the agent's
/// path) calls `launchRexec` on a peer that answers any launch with a
/// FindTunnelRequest. The broker hosts no tunnel for it: the launch was forwarded
/// with `rd`, below the `cmd` launching needs, whatever the device says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_login_cannot_get_a_tunnel_hosted() {
    use libshv::tunnel::{self, TunnelCtl, TunnelState};
    let dir = TempDir::new("r4-host");
    let extra = format!(
        "tunnel: {{record_dir: '{}', audit_log: '{}'}}\n",
        dir.path().join("rec").display(),
        dir.path().join("audit.jsonl").display()
    );
    let mut broker = Broker::start(Some(&config_yaml(&[], &extra)));
    let mut agent = RawConn::device(broker.port, "device", "device", "test/agent").await;
    let mut rsh = RawConn::connect(broker.port).await;
    rsh.login("device", "device", false)
        .await
        .expect("device login");
    let launch = tunnel::LaunchParams {
        cmd: vec!["true".into()],
        ..Default::default()
    };
    rsh.send(&RpcMessage::new_request(
        50,
        "test/agent",
        "launchRexec",
        Some(launch.to_value()),
    ))
    .await
    .unwrap();
    let req = loop {
        match agent.recv().await {
            RawEvent::Frame(f) if f.method() == Some("launchRexec") => break f,
            RawEvent::Frame(_) => continue,
            other => panic!("the lying agent got no launchRexec: {other:?}"),
        }
    };
    let find = tunnel::find_tunnel_request(&req.meta, None);
    agent
        .send_bytes(&libshv::codec::encode_frame(&find))
        .await
        .unwrap();
    // The caller hears that the tunnel is closed, and why.
    let close = loop {
        match rsh.recv().await {
            RawEvent::Frame(f) if f.request_id() == Some(50) => break f,
            RawEvent::Frame(_) => continue,
            other => panic!("the caller got no answer: {other:?}"),
        }
    };
    let ctl = TunnelCtl::from_frame(&close)
        .expect("a tunnel control")
        .unwrap();
    assert_eq!(ctl.state, TunnelState::CloseTunnel, "{ctl:?}");
    broker.wait_log("FindTunnelRequest refused");
    // The agent got no secret: nothing more comes to it.
    match agent.recv_within(Duration::from_millis(500)).await {
        RawEvent::Timeout => {}
        RawEvent::Frame(f) => assert!(
            TunnelCtl::from_frame(&f).is_none(),
            "the agent got a tunnel control: {f:?}"
        ),
        other => panic!("{other:?}"),
    }
    // Nothing was hosted: no session in the audit, no recording.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap_or_default();
    assert!(!audit.contains(r#""event":"open""#), "{audit}");
    let recs = std::fs::read_dir(dir.path().join("rec")).unwrap().count();
    assert_eq!(recs, 0);
    broker.assert_running();
}

/// The pool of connections not logged in (512 by default, 128 per address) filled with
/// idle sockets from four addresses: an admin from one of them and a device from
/// another still log in at once, each evicting one idle socket (of its own address
/// when that is full, else the oldest of the addresses holding the most), no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_full_of_idle_sockets_evicts_them_not_the_logins() {
    use std::net::Ipv4Addr;
    use tokio::io::AsyncReadExt;
    let mut broker = Broker::start(Some(&config_yaml(&[], "limits: {login_timeout: 60}\n")));
    let port = broker.listen_port("tcp");
    let mut idle = Vec::new();
    for host in 1..=4u8 {
        for _ in 0..128 {
            idle.push((
                host,
                connect_tcp_from(Ipv4Addr::new(127, 0, 0, host), port).await,
            ));
        }
    }
    // Make sure the broker has taken all of them into the pool: one more from each
    // address evicts that address's oldest, so the pool is full once each of those
    // has been closed.
    let admin = {
        let mut c = RawConn::connect(port).await;
        c.login("admin", "admin", true).await.expect("admin login");
        c
    };
    // The admin's login gave its place back: one more idle socket, from a fifth
    // address, fills the pool again.
    let _fifth = connect_tcp_from(Ipv4Addr::new(127, 0, 0, 5), port).await;
    let mut device = RawConn::connect_from(Ipv4Addr::new(127, 0, 0, 6), port).await;
    device
        .login("device", "device", true)
        .await
        .expect("device login from a sixth address");
    drop(admin);
    // Exactly two idle sockets were closed: 127.0.0.1's oldest (for the admin, whose
    // address was full) and the oldest of the heaviest address for the device.
    let mut closed = Vec::new();
    for (i, (host, s)) in idle.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(5), s.read(&mut b)).await {
            assert!(matches!(r, Ok(0) | Err(_)), "idle socket {i} got data");
            closed.push((*host, i % 128));
        }
    }
    // (127.0.0.2-4 hold 128 each then: the oldest of them is 127.0.0.2's first.)
    assert_eq!(closed, [(1, 0), (2, 0)]);
    broker.wait_log("evicted to make room");
    broker.assert_running();
}
