//! The C++ libshv/shvapp dialect, through real processes of ours: frames in the forms
//! the C++ brokers and tools send (a Map UserId, tunnel data as Strings, the journal's
//! launch parameters, SHV 2 subscriptions) and the C++ journal itself
//! (`shared/spec/journal.txt`) replayed against our broker and our agent.

use std::time::Duration;

use crate::shell_rig::Agent;
use libshv::meta::{self, tag};
use libshv::tunnel::{frame_event, TunnelCtl, TunnelEvent, TunnelState};
use libshv::{RpcFrame, RpcMessage, RpcValue};
use tests::*;

/// One frame of the journal: who (1 agent, 2 rsh, 3 rexec), whether the broker
/// received it (`<==`), and the message, its meta names turned into tags.
struct Logged {
    client: u32,
    received: bool,
    msg: RpcMessage,
}

/// The journal's frames that are messages (its "... N bytes of data ..." lines are
/// not), read as the C++ log writes them: meta and body keys by name.
fn journal() -> Vec<Logged> {
    let path = shared_dir().join("spec/journal.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.splitn(3, ' ');
        let (Some(client), Some(dir), Some(frame)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if frame.contains("bytes of data") {
            continue;
        }
        let mut cpon = frame.to_string();
        // Longest names first (`rcid` before `cid`, `RequestId` is not `id`).
        for (name, tag) in [
            ("T:RpcMessage", "1:1"),
            ("T:TunnelCtl", "1:3"),
            (",protocol:1u", ""),
            (",grant:\"rd\"", ""),
            ("rcid:", "13:"),
            ("cid:", "11:"),
            ("tctl:", "15:"),
            ("shvPath:", "9:"),
            ("method:", "10:"),
            ("id:", "8:"),
            ("State:", "1:"),
            ("Host:", "2:"),
            ("Port:", "3:"),
            ("Secret:", "4:"),
            ("RequestId:", "5:"),
            ("CallerIds:", "6:"),
            ("params:", "1:"),
            ("result:", "2:"),
        ] {
            cpon = cpon.replace(name, tag);
        }
        let v = RpcValue::from_cpon(&cpon).unwrap_or_else(|e| panic!("{cpon}: {e}"));
        let frame =
            RpcFrame::parse(v.to_chainpack().into()).unwrap_or_else(|e| panic!("{cpon}: {e}"));
        out.push(Logged {
            client: client.parse().unwrap(),
            received: dir == "<==",
            msg: RpcMessage::from_frame(&frame).unwrap_or_else(|e| panic!("{cpon}: {e}")),
        });
    }
    out
}

/// The next frame from `c` (the test fails if none comes within TIMEOUT).
async fn next_frame(c: &mut RawConn) -> RpcFrame {
    loop {
        match c.recv().await {
            RawEvent::Frame(f) => return f,
            RawEvent::Other(_) => continue,
            RawEvent::Closed => panic!("the broker closed the connection"),
            RawEvent::Timeout => panic!("nothing from the broker within {TIMEOUT:?}"),
        }
    }
}

fn show(f: &RpcFrame) -> String {
    format!("{:?}", f.meta)
}

/// Waits until `agent`'s log (shvrexec's included) has `needle`.
async fn agent_logged(agent: &Agent, needle: &str) {
    wait_for(needle, || async {
        agent.stderr().contains(needle).then_some(())
    })
    .await;
}

/// The `shared` directory beside the repository (the protocol notes).
fn shared_dir() -> std::path::PathBuf {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    repo.join("../shared")
}

/// A tunnel as the C++ shvrsh holds it, by hand over a raw connection: the ids and
/// the path back to rexec.
struct RawTunnel {
    conn: RawConn,
    /// rsh's launchRexec id (rexec sends on it).
    recv_id: i64,
    /// rexec's id (rsh sends on it) and the path there.
    send_id: i64,
    send_cids: Vec<i64>,
}

impl RawTunnel {
    /// Sends `launch` (the journal's launchRexec message) with our own request id and
    /// answers rexec's CreateTunnelRequest as the journal's rsh does.
    async fn open(mut conn: RawConn, launch: &RpcMessage) -> RawTunnel {
        let recv_id = conn.next_id();
        let mut req = launch.clone();
        req.meta.insert(tag::REQUEST_ID, RpcValue::from(recv_id));
        conn.send(&req).await.unwrap();
        let (send_id, send_cids) = loop {
            let f = next_frame(&mut conn).await;
            assert_eq!(f.request_id(), Some(recv_id), "{}", show(&f));
            if let Some(Ok(ctl)) = TunnelCtl::from_frame(&f) {
                if ctl.state == TunnelState::CreateTunnelRequest {
                    let rcid = meta::stack_from_value(f.meta.get(tag::REV_CALLER_IDS));
                    break (ctl.request_id.expect("RequestId"), rcid);
                }
            }
        };
        // The journal's `<8:W, 11:rcid, 13:null, 15:<1:3>i{1:4}>i{}`.
        let resp = libshv::tunnel::tunnel_frame(
            send_id,
            &send_cids,
            true,
            Some(&TunnelCtl::new(TunnelState::CreateTunnelResponse)),
            None,
        );
        conn.send_bytes(&libshv::codec::encode_frame(&resp))
            .await
            .unwrap();
        RawTunnel {
            conn,
            recv_id,
            send_id,
            send_cids,
        }
    }

    /// Sends the result `[channel, data]` the way the journal's rsh does (`data` a
    /// String, or whatever value the caller gives).
    async fn send_result(&mut self, result: RpcValue) {
        let f =
            libshv::tunnel::tunnel_frame(self.send_id, &self.send_cids, false, None, Some(result));
        self.conn
            .send_bytes(&libshv::codec::encode_frame(&f))
            .await
            .unwrap();
    }

    /// Reads output until `until` holds for it or the tunnel closes. Every data frame
    /// must carry a String, as a C++ shvrsh reads only those.
    async fn read_until(&mut self, until: impl Fn(&[u8]) -> bool) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        loop {
            let f = next_frame(&mut self.conn).await;
            if f.request_id() != Some(self.recv_id) {
                continue;
            }
            match frame_event(&f).expect("a tunnel frame") {
                Some(TunnelEvent::Data { channel, data }) => {
                    assert_eq!(channel, 1, "a PTY's output is channel 1");
                    assert_eq!(
                        f.body.get(4),
                        Some(&0x86),
                        "data to a C++ shvrsh must be a String: {}",
                        show(&f)
                    );
                    out.extend_from_slice(&data);
                    if until(&out) {
                        return (out, false);
                    }
                }
                Some(TunnelEvent::Closed(_)) => return (out, true),
                _ => {}
            }
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The journal's shvrsh (client 2) replayed against our broker and our shvagent: its
/// `runPtyCmd ["/bin/bash", 123, 34]` launch, its CreateTunnelResponse and its
/// keystrokes `l`, `s`, `\r` as Strings. What comes back is Strings, the PTY has the
/// journal's size, and 3 MB of output arrive though this rsh, like the C++ one, never
/// acknowledges anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_shvrsh_replayed_against_our_broker_and_agent() {
    let broker = Broker::start(Some(&config_yaml(&[], "")));
    let _agent = Agent::start(&broker, "test/agent").await;
    let journal = journal();
    let rsh: Vec<&Logged> = journal
        .iter()
        .filter(|l| l.client == 2 && l.received)
        .collect();
    let methods: Vec<String> = rsh
        .iter()
        .filter_map(|l| l.msg.to_frame().method().map(str::to_string))
        .collect();
    assert_eq!(
        methods,
        ["hello", "login", "launchRexec"],
        "the journal changed?"
    );
    // hello and login with our credentials (the journal's user is another broker's).
    let mut conn = broker.raw().await;
    conn.login("admin", "admin", true).await.unwrap();
    let launch = &rsh[2].msg;
    let mut t = RawTunnel::open(conn, launch).await;
    // The journal's CreateTunnelResponse was sent by `open`; then its keystrokes.
    let keys: Vec<&RpcMessage> = rsh[3..]
        .iter()
        .map(|l| &l.msg)
        .filter(|m| TunnelCtl::from_frame(&m.to_frame()).is_none())
        .collect();
    assert_eq!(keys.len(), 3, "l, s and CR");
    let (prompt, _) = t
        .read_until(|o| o.ends_with(b"$ ") || o.ends_with(b"# "))
        .await;
    assert!(!prompt.is_empty());
    for k in &keys {
        let result = k.result().unwrap();
        t.send_result(result).await;
    }
    let (ls, closed) = t.read_until(|o| contains(o, "ls\r\n")).await;
    assert!(
        !closed && contains(&ls, "ls"),
        "{}",
        String::from_utf8_lossy(&ls)
    );
    // The journal's size, and output beyond any flow-control window.
    let line = "stty size; head -c 3000000 /dev/zero | tr '\\0' x; echo; echo END-$((6*7))\r";
    t.send_result(RpcValue::from(vec![
        RpcValue::from(0),
        RpcValue::from(line),
    ]))
    .await;
    let (out, closed) = t.read_until(|o| contains(o, "END-42")).await;
    assert!(!closed, "closed early");
    assert!(contains(&out, "34 123"), "the PTY is 123x34");
    let xs = out.iter().filter(|b| **b == b'x').count();
    assert!(
        xs >= 3_000_000,
        "{xs} of 3000000 bytes arrived without acks"
    );
    t.send_result(RpcValue::from(vec![
        RpcValue::from(0),
        RpcValue::from("exit\r"),
    ]))
    .await;
    let (_, closed) = t.read_until(|_| false).await;
    assert!(closed, "the tunnel closes when the shell exits");
}

/// Bytes a C++ end sends in a String need not be UTF-8 (a C++ String holds any
/// bytes): written straight to the command, byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_strings_of_any_bytes_reach_the_command_byte_exact() {
    let broker = Broker::start(Some(&config_yaml(&[], "")));
    let _agent = Agent::start(&broker, "test/agent").await;
    let mut conn = broker.raw().await;
    conn.login("admin", "admin", true).await.unwrap();
    // The journal's runCmd form: the command as a List, no PTY.
    let launch = RpcMessage::new_request(
        0,
        "test/agent",
        "launchRexec",
        Some(
            RpcValue::from_cpon(r#"{"method":"runCmd","params":["od","-An","-tx1","-N4"]}"#)
                .unwrap(),
        ),
    );
    let mut t = RawTunnel::open(conn, &launch).await;
    // `[0, "\xff\xfe\x00\xc3"]` as a C++ writer encodes it: String, length, bytes.
    let mut body = vec![0x8a, 0x42, 0x88, 0x40, 0x86, 4, 0xff, 0xfe, 0x00, 0xc3];
    body.extend_from_slice(&[0xff, 0xff]);
    let mut frame = libshv::tunnel::tunnel_frame(t.send_id, &t.send_cids, false, None, None);
    frame.body = body.into();
    t.conn
        .send_bytes(&libshv::codec::encode_frame(&frame))
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let f = next_frame(&mut t.conn).await;
        match frame_event(&f).expect("a tunnel frame") {
            Some(TunnelEvent::Data { channel: 1, data }) => {
                assert_eq!(f.body.get(4), Some(&0x86), "answered in Strings");
                out.extend_from_slice(&data);
            }
            Some(TunnelEvent::Closed(_)) => break,
            _ => {}
        }
    }
    assert_eq!(String::from_utf8_lossy(&out).trim(), "ff fe 00 c3");
}

/// Our shvrsh told the agent speaks C++ (`--dialect cpp`) sends the journal's launch
/// form and reads Strings: against our own agent, which speaks both, the command runs
/// and its output and exit status come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_shvrsh_speaks_the_journal_dialect_when_told() {
    let broker = Broker::start(Some(&config_yaml(&[], "")));
    let agent = Agent::start(&broker, "test/agent").await;
    let out = run_bin(
        "shvrsh",
        &[
            &broker.url("admin", "admin"),
            "test/agent",
            "--dialect",
            "cpp",
            "--",
            "sh",
            "-c",
            "echo hi-$((6*7))",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "hi-42");
    agent_logged(&agent, "Journal dialect").await;
}

/// A request whose UserId is the C++ brokers' Map `{"shvUser", "brokerId"}` is routed
/// and answered (before, our libshv dropped it as "meta tag 16 has the wrong type"),
/// our broker writes its own login into the Map as a C++ broker would, and the audit
/// shows it as one chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_user_id_is_routed_written_in_its_form_and_audited() {
    let dir = TempDir::new("cpp-user-id");
    let extra = format!(
        "tunnel: {{audit_log: '{}'}}\n",
        dir.path().join("audit.jsonl").display()
    );
    let broker = Broker::start(Some(&config_yaml(&[], &extra)));
    let agent = Agent::start(&broker, "test/agent").await;
    let mut conn = broker.raw().await;
    conn.login("admin", "admin", true).await.unwrap();
    let id = conn.next_id();
    let mut req =
        RpcMessage::new_request(id, "test/agent", "runCmd", Some(RpcValue::from("echo ran")));
    let mut m = libshv::shvproto::Map::new();
    m.insert("shvUser".into(), RpcValue::from("forged"));
    m.insert("brokerId".into(), RpcValue::from("elsewhere"));
    req.meta.insert(tag::USER_ID, RpcValue::from(m));
    conn.send(&req).await.unwrap();
    let resp = loop {
        let f = next_frame(&mut conn).await;
        if f.request_id() == Some(id) {
            break RpcMessage::from_frame(&f).unwrap();
        }
    };
    let r = resp.result().expect("runCmd answered");
    assert!(r.to_cpon().contains("ran"), "{}", r.to_cpon());
    // The agent saw the login this broker verified, in the C++ form.
    agent_logged(&agent, "admin:testbroker").await;
    let deadline = std::time::Instant::now() + TIMEOUT;
    let line = loop {
        let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("\"run\"")) {
            break l.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no audit line");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["user"], "admin");
    assert_eq!(v["user_chain"], "admin:testbroker", "{line}");
    assert!(!line.contains("forged"), "{line}");
}

/// The C++ broker's SHV 2 subscription API on our broker: `.broker/app:subscribe`
/// `{"method", "path"}` delivers that signal from the path and below, nothing else,
/// until `unsubscribe`; `.broker/app:ping` answers (a C++ client's heartbeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shv2_subscriptions_and_ping_on_our_broker() {
    let broker = Broker::start(Some(&config_yaml(&[], "")));
    let port = broker.listen_port("tcp");
    let mut device = RawConn::connect(port).await;
    device
        .login_params(&libshv::login::LoginParams {
            user: "device".into(),
            credentials: libshv::login::Credentials::Plain("device".into()),
            mount_point: Some("test/dev".into()),
            ..Default::default()
        })
        .await
        .expect("device login");
    let mut sub = broker.raw().await;
    sub.login("viewer", "viewer", true).await.unwrap();
    let ping = sub.call(".broker/app", "ping", None).await;
    assert!(ping.result().is_ok(), "{:?}", ping.result());
    let p = RpcValue::from_cpon(r#"{"method":"chng","path":"test/dev"}"#).unwrap();
    let r = sub.call(".broker/app", "subscribe", Some(p.clone())).await;
    assert_eq!(r.result().unwrap(), RpcValue::from(true));
    let emit = |path: &str, sig: &str, n: i64| {
        RpcMessage::new_signal(path, sig, "get", Some(RpcValue::from(n)))
    };
    device.send(&emit("a/b", "other", 1)).await.unwrap();
    device.send(&emit("a/b", "chng", 2)).await.unwrap();
    device.send(&emit("", "chng", 3)).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let f = next_frame(&mut sub).await;
        if f.is_signal() {
            let m = RpcMessage::from_frame(&f).unwrap();
            got.push((f.shv_path().to_string(), m.param().unwrap().as_int()));
        }
    }
    assert_eq!(
        got,
        [("test/dev/a/b".to_string(), 2), ("test/dev".to_string(), 3)]
    );
    let r = sub.call(".broker/app", "unsubscribe", Some(p)).await;
    assert_eq!(r.result().unwrap(), RpcValue::from(true));
    device.send(&emit("", "chng", 4)).await.unwrap();
    // The device's ping comes back after its signal went (or not) to the subscriber.
    assert!(device.call(".app", "ping", None).await.result().is_ok());
    let r = sub.call(".app", "ping", None).await;
    assert!(r.result().is_ok());
    assert!(
        matches!(
            sub.recv_within(Duration::from_millis(200)).await,
            RawEvent::Timeout
        ),
        "a signal after unsubscribe"
    );
}

/// A child broker that has only SHV 2's subscriptions, as the C++ one: our broker's
/// own requests into it carry an AccessLevel (a C++ child refuses a parent's request
/// without one), and the subscriptions our clients make below its mount are forwarded
/// as `.broker/app:subscribe {"method", "path"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_reach_an_shv2_child_broker_with_a_grant() {
    let broker = Broker::start(Some(&config_yaml(&[], "")));
    let port = broker.listen_port("tcp");
    // The child: a raw connection that answers like the C++ broker does.
    let mut child = RawConn::connect(port).await;
    child
        .login_params(&libshv::login::LoginParams {
            user: "admin".into(),
            credentials: libshv::login::Credentials::Plain("admin".into()),
            mount_point: Some("test/child".into()),
            ..Default::default()
        })
        .await
        .expect("child login");
    let mut sub = broker.raw().await;
    sub.login("viewer", "viewer", true).await.unwrap();
    let r = sub
        .call(
            ".broker/currentClient",
            "subscribe",
            Some(RpcValue::from("test/child/dev/**:*:chng")),
        )
        .await;
    assert!(r.result().is_ok());
    let mut forwarded = None;
    for _ in 0..4 {
        let f = next_frame(&mut child).await;
        let m = RpcMessage::from_frame(&f).unwrap();
        let method = f.method().unwrap_or("").to_string();
        let level = f
            .meta
            .get(tag::ACCESS_LEVEL)
            .and_then(libshv::value::as_i64);
        assert!(
            level.is_some_and(|l| l >= libshv::access::level::READ),
            "the broker's own request without a grant: {}",
            show(&f)
        );
        let reply = match (f.shv_path(), method.as_str()) {
            ("", "ls") => Ok(RpcValue::from(true)),
            (".broker/currentClient", "dir") => Err(libshv::RpcError::method_not_found(
                "Method: 'dir' on path '.broker/currentClient' doesn't exist",
            )),
            (".broker/app", "subscribe") => {
                forwarded = m.param().map(|p| p.to_cpon());
                break;
            }
            other => panic!("unexpected {other:?}"),
        };
        let resp = RpcMessage::response_to(&f.meta).with_result_or_error(reply);
        child.send(&resp).await.unwrap();
    }
    assert_eq!(
        forwarded.as_deref(),
        Some(r#"{"method":"chng","path":"dev"}"#)
    );
}

/// Sends `msg` as the libshv that shvapp pins writes every frame (its Nov 2024
/// `writeFrame` rework): the body's bytes twice under one length.
async fn send_twice(c: &mut RawConn, msg: &RpcMessage) {
    let mut f = msg.to_frame();
    f.body = [&f.body[..], &f.body[..]].concat().into();
    c.send_bytes(&libshv::codec::encode_frame(&f))
        .await
        .unwrap();
}

/// A body written twice reads as its first copy, as the C++ peers read it: a device
/// that sends so logs in, mounts and answers calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_written_twice_as_shvapps_libshv_writes_them() {
    let broker = Broker::start(Some(&config_yaml(&[], "")));
    let port = broker.listen_port("tcp");
    let mut device = RawConn::connect(port).await;
    send_twice(&mut device, &RpcMessage::new_request(1, "", "hello", None)).await;
    let hello = RpcMessage::from_frame(&next_frame(&mut device).await).unwrap();
    let nonce = hello
        .result()
        .unwrap()
        .get("nonce")
        .unwrap()
        .as_str()
        .to_string();
    let login = libshv::login::LoginParams {
        user: "device".into(),
        credentials: libshv::login::Credentials::Plain("device".into()),
        use_sha1: true,
        mount_point: Some("test/twice".into()),
        ..Default::default()
    };
    send_twice(
        &mut device,
        &RpcMessage::new_request(2, "", "login", Some(login.to_value(&nonce))),
    )
    .await;
    let r = RpcMessage::from_frame(&next_frame(&mut device).await).unwrap();
    assert!(r.result().is_ok(), "login refused: {:?}", r.result());

    let mut client = broker.raw().await;
    client.login("admin", "admin", true).await.unwrap();
    let id = client.next_id();
    client
        .send(&RpcMessage::new_request(
            id,
            "test/twice",
            "echo",
            Some(RpcValue::from(7)),
        ))
        .await
        .unwrap();
    let req = next_frame(&mut device).await;
    assert_eq!(req.method(), Some("echo"));
    let param = RpcMessage::from_frame(&req).unwrap().param().cloned();
    send_twice(
        &mut device,
        &RpcMessage::response_to(&req.meta).with_result(param.unwrap()),
    )
    .await;
    let resp = client.response(id).await;
    assert_eq!(resp.result().unwrap(), RpcValue::from(7));
}

/// A parent link says in its login that it is a broker (`options.broker`): a C++
/// parent forwards its clients' subscriptions only into connections that say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_link_announces_a_broker_in_its_login() {
    let parent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let parent_port = parent.local_addr().unwrap().port();
    let _child = Broker::start(Some(&config_yaml(
        &[],
        &format!(
            "connections:\n  - url: 'tcp://device@127.0.0.1:{parent_port}?password=device'\n    mount_point: test/child\n"
        ),
    )));
    let (stream, _) = tokio::time::timeout(TIMEOUT, parent.accept())
        .await
        .expect("the child did not connect")
        .unwrap();
    let mut link = RawConn::accepted(stream);
    let hello = next_frame(&mut link).await;
    assert_eq!(hello.method(), Some("hello"));
    let nonce = RpcValue::from_cpon(r#"{"nonce":"12345678"}"#).unwrap();
    link.send(&RpcMessage::response_to(&hello.meta).with_result(nonce))
        .await
        .unwrap();
    let login = next_frame(&mut link).await;
    assert_eq!(login.method(), Some("login"));
    let param = RpcMessage::from_frame(&login)
        .unwrap()
        .param()
        .cloned()
        .unwrap();
    let options = param.get("options").expect("login options");
    assert_eq!(
        options.get("broker").map(|b| b.to_cpon()).as_deref(),
        Some("{}"),
        "options: {}",
        options.to_cpon()
    );
    assert_eq!(
        options
            .get("device")
            .and_then(|d| d.get("mountPoint"))
            .map(|m| m.as_str().to_string())
            .as_deref(),
        Some("test/child")
    );
}
