//! The transports together, and with the peers: `wss://`, `ssls://` and `serial:` for
//! our clients and broker; pySHV over `ws://`, `ssls://` and a serial line; a pySHV
//! device on `ws://` called over `ssl://`; pySHV's broker on `ws://`; a remote shell
//! whose three ends use three transports; the web root of a `ws://` listener; an
//! expired server certificate.

use std::time::Duration;

use crate::shell_rig::Agent;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tests::pki::Pki;
use tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A broker listening on each of `listens` and on TCP (for the harness), in that order.
fn broker_on(listens: &[String]) -> Broker {
    let mut args: Vec<&str> = Vec::new();
    for l in listens {
        args.extend(["--listen", l.as_str()]);
    }
    args.extend(["--listen", "tcp://127.0.0.1:0"]);
    Broker::start_with_args(None, &args)
}

fn url(scheme: &str, port: u16, user: &str, tail: &str) -> String {
    format!("{scheme}://{user}@127.0.0.1:{port}{tail}")
}

/// Our shvcall gets an answer from the broker on `ws://127.0.0.1:PORT`.
async fn assert_ws_served(port: u16) {
    let u = url("ws", port, "admin", "?password=admin");
    let out = shvcall(&u, ".app", "shvVersionMajor", None).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "3"), "{out:?}");
}

#[tokio::test]
async fn shvcall_over_wss_and_ssls() {
    let pki = Pki::new();
    let broker = broker_on(&[pki.listen_scheme("wss", ""), pki.listen_scheme("ssls", "")]);
    let ca = pki.file("ca.pem");
    for scheme in ["wss", "ssls"] {
        let port = broker.listen_port(scheme);
        let u = url(scheme, port, "admin", &format!("?password=admin&ca={ca}"));
        let out = shvcall(&u, ".app", "shvVersionMajor", None).await;
        assert_eq!((out.code, out.stdout.trim()), (0, "3"), "{scheme}: {out:?}");
        // A parameter with every byte value the framings escape.
        let param = format!("b\"{}\"", "\\a2\\a3\\a4\\aa\\00\\ff".repeat(4000));
        let out = shvcall(&u, ".app", "ping", Some(&param)).await;
        assert_eq!(out.code, 0, "{scheme}: {out:?}");
        // Without the CA: refused, and the message says why.
        let u = url(scheme, port, "admin", "?password=admin");
        let out = shvcall(&u, ".app", "ping", None).await;
        assert!(
            out.code != 0 && out.stderr.contains("UnknownIssuer"),
            "{scheme}: {out:?}"
        );
    }
}

/// A broker whose certificate has expired: clients refuse it with a message that says
/// so; the broker serves on.
#[tokio::test]
async fn an_expired_server_certificate_is_refused_clearly() {
    let pki = Pki::new();
    let listen = format!(
        "ssl://127.0.0.1:0?cert={}&key={}",
        pki.file("expired.pem"),
        pki.file("expired.key")
    );
    let mut broker = broker_on(&[listen]);
    let port = broker.listen_port("ssl");
    let u = url(
        "ssl",
        port,
        "admin",
        &format!("?password=admin&ca={}", pki.file("ca.pem")),
    );
    let out = shvcall(&u, ".app", "ping", None).await;
    assert!(
        out.code != 0 && out.stderr.contains("certificate expired"),
        "an expired certificate was not refused clearly: {out:?}"
    );
    broker.assert_running();
    let (c, _) = broker.connect("admin", "admin").await;
    assert_served(&c).await;
}

#[tokio::test]
async fn pyshv_clients_over_ws_and_ssls() {
    let pki = Pki::new();
    let broker = broker_on(&["ws://127.0.0.1:0".into(), pki.listen_scheme("ssls", "")]);
    let ws = format!(
        "ws://127.0.0.1:{}?user=admin&password=admin",
        broker.listen_port("ws")
    );
    let ssls = format!(
        "ssls://127.0.0.1:{}?user=admin&password=admin&ca={}",
        broker.listen_port("ssls"),
        pki.file("ca.pem")
    );
    for u in [ws, ssls] {
        let mut py = PyProc::spawn("py_call.py", &[&u, ".app", "shvVersionMajor"]);
        assert_eq!(py.line().await, "RESULT 3", "{u}: {}", py.stderr());
        assert_eq!(py.line().await, "DONE");
        assert_eq!(py.wait().await, 0, "{}", py.stderr());
    }
}

/// A pySHV device mounted over `ws://` is called by our shvcall over `ssl://`.
#[tokio::test]
async fn pyshv_device_on_ws_called_over_ssl() {
    let pki = Pki::new();
    let broker = broker_on(&["ws://127.0.0.1:0".into(), pki.listen("")]);
    let dev_url = format!(
        "ws://127.0.0.1:{}?user=device&password=device&devmount=test/pydev",
        broker.listen_port("ws")
    );
    let mut dev = PyProc::spawn("py_device.py", &[&dev_url]);
    assert_eq!(dev.line().await, "READY", "{}", dev.stderr());
    let u = url(
        "ssl",
        broker.listen_port("ssl"),
        "admin",
        &format!("?password=admin&ca={}", pki.file("ca.pem")),
    );
    let out = shvcall(&u, "test/pydev/counter", "get", None).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "123"), "{out:?}");
    let out = shvcall(&u, "test/pydev", "echo", Some(r#"{"a":[1,2,b"\ff"]}"#)).await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, r#"{"a":[1,2,b"\ff"]}"#),
        "{out:?}"
    );
}

/// Our shvcall talks to pySHV's broker listening on `ws://`.
#[tokio::test]
async fn shvcall_to_pyshv_broker_over_ws() {
    let port = free_port();
    let _py = PyBroker::start(
        &pyshv_admin_config("pyws", &format!("ws://127.0.0.1:{port}")),
        port,
    );
    assert_ws_served(port).await;
}

/// Two pseudo-terminals whose masters are joined, as a null-modem cable joins two
/// serial ports: what is written to one slave is read from the other.
struct NullModem {
    a: String,
    b: String,
    // The slaves stay open here so that the line does not hang up when a peer closes
    // and reopens its end.
    _slaves: [std::os::fd::OwnedFd; 2],
}

impl NullModem {
    fn new() -> NullModem {
        use std::os::fd::AsRawFd;
        let a = nix::pty::openpty(None, None).unwrap();
        let b = nix::pty::openpty(None, None).unwrap();
        let name =
            |fd: &std::os::fd::OwnedFd| nix::unistd::ttyname(fd).unwrap().display().to_string();
        let (name_a, name_b) = (name(&a.slave), name(&b.slave));
        for s in [&a.slave, &b.slave] {
            let mut t = nix::sys::termios::tcgetattr(s).unwrap();
            nix::sys::termios::cfmakeraw(&mut t);
            nix::sys::termios::tcsetattr(s, nix::sys::termios::SetArg::TCSANOW, &t).unwrap();
            let _ = s.as_raw_fd();
        }
        let (ma, mb) = (std::fs::File::from(a.master), std::fs::File::from(b.master));
        for (mut from, mut to) in [(ma.try_clone().unwrap(), mb.try_clone().unwrap()), (mb, ma)] {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 4096];
                while let Ok(n) = from.read(&mut buf) {
                    // EIO when no slave is open at the moment: wait for one.
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            });
        }
        NullModem {
            a: name_a,
            b: name_b,
            _slaves: [a.slave, b.slave],
        }
    }
}

/// The broker on one end of a serial line (`serial:`), our shvcall and then pySHV on
/// the other, with the Serial framing and its CRC.
#[tokio::test]
async fn shvcall_and_pyshv_over_a_serial_line() {
    let line = NullModem::new();
    let listen = format!("serial:{}?baudrate=115200", line.a);
    let mut broker = broker_on(&[listen]);
    let u = format!("tty:{}?user=admin&password=admin", line.b);
    let out = shvcall(&u, ".app", "shvVersionMajor", None).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "3"), "{out:?}");
    let param = format!("b\"{}\"", "\\a2\\a3\\a4\\aa".repeat(2000));
    let out = shvcall(&u, ".app", "ping", Some(&param)).await;
    assert_eq!(out.code, 0, "{out:?}");
    let mut py = PyProc::spawn("py_call.py", &[&u, ".app", "shvVersionMajor"]);
    assert_eq!(py.line().await, "RESULT 3", "{}", py.stderr());
    assert_eq!(py.line().await, "DONE");
    assert_eq!(py.wait().await, 0, "{}", py.stderr());
    broker.assert_running();
}

/// A remote shell whose three ends use three transports: shvrsh over `wss://`, the
/// agent over `ssl://`, and shvrexec reaching the broker's tunnel host over `ssl://`
/// (the broker's first network listener, with the agent's CA). 10 MiB go through
/// `cat` and come back byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_across_wss_ssl_and_a_tls_tunnel_host_is_byte_exact() {
    let pki = Pki::new();
    let broker = broker_on(&[pki.listen(""), pki.listen_scheme("wss", "")]);
    let ca = pki.file("ca.pem");
    let agent_url = url(
        "ssl",
        broker.listen_port("ssl"),
        "device",
        &format!("?password=device&ca={ca}"),
    );
    let agent = Agent::start_with_url(&broker, &agent_url, "test/agent").await;
    let rsh_url = url(
        "wss",
        broker.listen_port("wss"),
        "admin",
        &format!("?password=admin&ca={ca}"),
    );
    let mut data = vec![0u8; 10 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    let want = Sha256::digest(&data);
    let run = crate::shell_rig::through_remote_cat(&rsh_url, "test/agent", data).await;
    assert_eq!(run.code, 0, "shvrsh stderr: {}", run.stderr);
    assert_eq!(run.out.len(), 10 << 20, "length of what came back");
    assert_eq!(Sha256::digest(&run.out), want, "sha256 of what came back");
    // shvrexec went to the tunnel host over TLS, not plain TCP.
    let ssl = format!(
        "connecting to tunnel broker ssl://127.0.0.1:{}",
        broker.listen_port("ssl")
    );
    assert!(
        agent.stderr().contains(&ssl),
        "agent stderr:\n{}",
        agent.stderr()
    );
}

/// A `ws://` listener with a web root answers plain HTTP GETs with its files (and
/// nothing outside it) and still upgrades WebSockets on the same port.
#[tokio::test]
async fn the_web_root_is_served_beside_websockets() {
    let dir = TempDir::new("webroot");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "<!doctype html><title>t</title>").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    let root_arg = root.display().to_string();
    let mut broker = Broker::start_with_args(
        None,
        &["--listen", "ws://127.0.0.1:0", "--web-root", &root_arg],
    );
    let port = broker.listen_port("ws");
    let get = |req: String| async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(TIMEOUT, s.read_to_string(&mut out))
            .await
            .expect("an HTTP answer")
            .unwrap();
        out
    };
    let page = get("GET / HTTP/1.1\r\nHost: x\r\n\r\n".into()).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("Content-Type: text/html"), "{page}");
    assert!(page.ends_with("<!doctype html><title>t</title>"), "{page}");
    for bad in ["/../secret.txt", "/%2e%2e/secret.txt", "/nope.js"] {
        let r = get(format!("GET {bad} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{bad}: {r}");
        assert!(
            !r.contains("secret\n") && !r.ends_with("secret"),
            "{bad}: {r}"
        );
    }
    let r = get("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".into()).await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    let r = get(format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(10_000))).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    assert_ws_served(port).await;
    broker.assert_running();
}

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Peers that finish the WebSocket handshake (or connect to a Serial-framed port) and
/// then stay silent are cut off at `login_timeout`, and their sockets are really
/// released: the bridges between the framings must not keep them open.
#[tokio::test]
async fn silent_websocket_and_serial_peers_release_their_sockets() {
    let broker = Broker::start_with_args(
        Some(&config_yaml(&[], "limits: {login_timeout: 2}\n")),
        &[
            "--listen",
            "ws://127.0.0.1:0",
            "--listen",
            "tcps://127.0.0.1:0",
            "--listen",
            "tcp://127.0.0.1:0",
        ],
    );
    let (ws, tcps) = (broker.listen_port("ws"), broker.listen_port("tcps"));
    let before = fd_count(broker.pid());
    let mut held = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..20 {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", ws))
            .await
            .unwrap();
        let (conn, _) = tokio_tungstenite::client_async(format!("ws://127.0.0.1:{ws}/"), tcp)
            .await
            .expect("WebSocket handshake");
        held.push(conn);
        sockets.push(
            tokio::net::TcpStream::connect(("127.0.0.1", tcps))
                .await
                .unwrap(),
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = fd_count(broker.pid());
        if now <= before + 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the broker still holds {now} fds (had {before} before 40 silent peers)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop((held, sockets));
}

/// A WebSocket subscriber that stops reading is closed after `write_stall_timeout`, and
/// its socket really goes: the bridge's task, stuck writing to the socket, must not keep
/// it (and its place among `max_connections`) after the connection above has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_websocket_peer_releases_its_socket() {
    use futures::SinkExt;
    let limits = "limits: {write_stall_timeout: 2, client_queue_bytes: 134217728}\n";
    let broker = Broker::start_with_args(
        Some(&config_yaml(&[], limits)),
        &[
            "--listen",
            "ws://127.0.0.1:0",
            "--listen",
            "tcp://127.0.0.1:0",
        ],
    );
    let ws = broker.listen_port("ws");
    let before = fd_count(broker.pid());
    let u = libshv::RpcUrl::parse(&url("ws", ws, "viewer", "?password=viewer")).unwrap();
    let cc = libshv::client::ClientConfig::from_url(u.clone());
    let (mut reader, mut writer) = libshv::transport::dial(u.transport(), 1 << 24)
        .await
        .expect("ws connect");
    libshv::client::login(&mut reader, &mut writer, &cc.login, TIMEOUT)
        .await
        .expect("login over ws");
    let sub = libshv::RpcMessage::new_request(
        1,
        ".broker/currentClient",
        "subscribe",
        Some("**:*:*".into()),
    );
    writer.send(sub.to_frame()).await.unwrap();
    // From here on the subscriber reads nothing; a device floods it with 48 MiB, far
    // more than the socket buffers and both bridges' pipes hold.
    let mut device = RawConn::device(broker.port, "device", "device", "test/flood").await;
    let signal =
        libshv::RpcMessage::new_signal("x", "chng", "get", Some(vec![0x5au8; 64 * 1024].into()))
            .to_frame();
    let batch = libshv::codec::encode_frame(&signal).repeat(16);
    for _ in 0..48 {
        device.send_bytes(&batch).await.expect("flood");
    }
    broker.wait_log("took no bytes for 2 s");
    wait_for("the stalled socket to be closed", || async {
        (fd_count(broker.pid()) <= before + 1).then_some(())
    })
    .await;
    assert!(device.call(".app", "ping", None).await.result().is_ok());
    drop((reader, writer));
}

/// A browser page of another site (or of a name pointed at us) may not open a
/// WebSocket to the broker; the broker's own page may, and so may non-browser clients.
#[tokio::test]
async fn a_page_of_another_site_cannot_open_a_websocket() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut broker = broker_on(&["ws://127.0.0.1:0".into()]);
    let port = broker.listen_port("ws");
    let try_origin = |origin: &'static str, host: String| async move {
        let mut req = format!("ws://127.0.0.1:{port}/")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        req.headers_mut().insert("Host", host.parse().unwrap());
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tokio_tungstenite::client_async(req, tcp).await.map(|_| ())
    };
    let own = format!("127.0.0.1:{port}");
    let err = try_origin("https://evil.example", own.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let err = try_origin("http://evil.example", "evil.example".into())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let own_origin: &'static str = Box::leak(format!("http://{own}").into_boxed_str());
    try_origin(own_origin, own)
        .await
        .expect("the broker's own page");
    broker.wait_log("upgrade refused");
    broker.assert_running();
}

/// Hostile WebSocket inputs (the transports' part of the bad-input catalogue): each
/// gets its connection refused or closed, and the broker keeps serving WebSocket
/// clients afterwards.
#[tokio::test]
async fn hostile_websocket_inputs_are_refused_and_the_broker_serves_on() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut broker = Broker::start_with_args(
        Some(&config_yaml(
            &[],
            "limits: {max_frame_size: 65536, login_timeout: 3}\n",
        )),
        &[
            "--listen",
            "ws://127.0.0.1:0",
            "--listen",
            "tcp://127.0.0.1:0",
        ],
    );
    let port = broker.listen_port("ws");
    let served = |what: &'static str| async move {
        let u = url("ws", port, "admin", "?password=admin");
        let out = shvcall(&u, ".app", "ping", None).await;
        assert_eq!(out.code, 0, "after {what}: {out:?}");
    };
    // Raw requests: the answer (if any) and then the close, within the login timeout.
    let raw_cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "an upgrade without Sec-WebSocket-Key",
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n"
                .to_vec(),
            "",
        ),
        (
            "a header that never ends",
            b"GET / HTTP/1.1\r\n"
                .iter()
                .chain(b"X-A: b\r\n".repeat(20_000).iter())
                .copied()
                .collect(),
            "",
        ),
        ("HTTP/0.9", b"GET /\r\n\r\n".to_vec(), ""),
        (
            "TLS to a plain port",
            vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5],
            "",
        ),
    ];
    for (name, bytes, answer) in raw_cases {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let _ = s.write_all(&bytes).await;
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "{name}: the connection was not closed");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with(answer), "{name}: answered {text:?}");
        served(name).await;
    }
    // A binary message beyond max_frame_size: the connection is closed.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/"), tcp)
        .await
        .unwrap();
    let _ = ws.send(Message::binary(vec![0u8; 200_000])).await;
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        use futures::StreamExt;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "an oversized message did not close the connection"
    );
    served("an oversized message").await;
    broker.assert_running();
    // Each refusal is logged with its reason.
    for reason in ["Sec-WebSocket-Key", "Too many headers", "httparse error"] {
        broker.wait_log(reason);
    }
}

/// Before login a WebSocket or Serial-framed connection may send 128 KiB in all: a
/// 4 MiB message (under the default 16 MiB max_frame_size) is cut off rather than
/// gathered whole; after login the full frame size is there again.
#[tokio::test]
async fn websocket_and_serial_connections_cannot_send_megabytes_before_login() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut broker = broker_on(&["ws://127.0.0.1:0".into(), "tcps://127.0.0.1:0".into()]);
    let big = vec![0x55u8; 4 << 20];
    let closed_within = |what: &str, r: Result<(), tokio::time::error::Elapsed>| {
        assert!(r.is_ok(), "{what}: the connection was not cut off");
    };

    let ws_port = broker.listen_port("ws");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", ws_port))
        .await
        .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://127.0.0.1:{ws_port}/"), tcp)
        .await
        .unwrap();
    let (mut sink, mut stream) = ws.split();
    let sending = tokio::spawn(async move { sink.send(Message::binary(big)).await });
    let r = tokio::time::timeout(TIMEOUT, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    closed_within("WebSocket", r);
    let _ = sending.await;
    broker.wait_log("more than 128 KiB before login");

    let tcps_port = broker.listen_port("tcps");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", tcps_port))
        .await
        .unwrap();
    // A frame that starts and never ends.
    let mut frame = vec![libshv::transport::serial::STX];
    frame.resize(4 << 20, 0x55);
    let (mut rd, mut wr) = s.split();
    let r = tokio::time::timeout(TIMEOUT, async {
        let mut sink = Vec::new();
        tokio::join!(wr.write_all(&frame), rd.read_to_end(&mut sink)).1
    })
    .await;
    closed_within("Serial framing", r.map(|_| ()));
    let deadline = std::time::Instant::now() + TIMEOUT;
    while broker.stderr().matches("before login").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", broker.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Logged in, a 1 MiB request passes both bridges whole (and is refused by the
    // broker's own method for its size, not by the transport).
    for scheme in ["ws", "tcps"] {
        let port = broker.listen_port(scheme);
        let mut c = broker.config("admin", "admin");
        c.url = libshv::RpcUrl::parse(&url(scheme, port, "admin", "?password=admin")).unwrap();
        let (client, _) = broker.try_connect(&c, None).await.expect(scheme);
        let param = libshv::RpcValue::from("x".repeat(1 << 20));
        let e = client
            .call(".broker/currentClient", "subscribe", Some(param))
            .await
            .expect_err(scheme);
        assert!(
            e.to_string().contains("bytes of parameter"),
            "{scheme}: {e}"
        );
        assert!(client.call(".app", "ping", None).await.is_ok(), "{scheme}");
    }
    broker.assert_running();
}

/// Connections that do not log in are bounded per source address (and in all): past
/// the bound the oldest of them is evicted to make room, not the newcomer, the
/// evictions are logged once per burst, and a real client gets in at once.
#[tokio::test]
async fn connections_not_logged_in_are_bounded() {
    let broker = Broker::start(Some(&config_yaml(
        &[],
        "limits: {max_unauthenticated_per_address: 4, login_timeout: 30}\n",
    )));
    let port = broker.listen_port("tcp");
    let mut silent = Vec::new();
    for _ in 0..24 {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
        // One at a time, so that the broker sees them in this order.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first 20 made room for the next ones and were closed; the last 4 wait.
    for (i, s) in silent.iter_mut().enumerate().take(20) {
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "connection {i} was not evicted: {r:?}"
        );
    }
    for (i, s) in silent.iter_mut().enumerate().skip(20) {
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await;
        assert!(r.is_err(), "connection {i} was closed: {r:?}");
    }
    broker.wait_log("evicted to make room");
    let log = broker.stderr();
    let warnings = log.matches("evicted to make room").count();
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} warnings for 20 evictions:\n{log}"
    );
    // A real client gets in while the pool is full, at the cost of the oldest.
    let cfg = broker.config("viewer", "viewer");
    broker.try_connect(&cfg, None).await.expect("login");
}
