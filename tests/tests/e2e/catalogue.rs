//! The bad-input catalogue: named hostile or broken inputs, each sent by a raw TCP
//! client to a running broker, with the outcome the broker must produce (an error code,
//! a silent drop with the stream still in sync, or a disconnect). After every case a
//! second, logged-in client must still be served (`ping` + `ls`) and the broker process
//! must still be running. The cases run one after another on one broker, so damage
//! that one case leaves behind shows up in the next.

use libshv::login::{Credentials, LoginParams};
use libshv::tunnel;
use libshv::{RpcMessage, RpcValue};
use tests::*;

/// The request id every crafted request uses; the outcome is judged on its response.
const ID: i64 = 7;
/// The id of the probe sent after a case to prove the stream is still in sync.
const PROBE: i64 = 9999;

/// Limits small enough to reach quickly: 64 KiB frames, 3 s to log in.
fn broker_config() -> String {
    config_yaml(&[], "limits: {max_frame_size: 65536, login_timeout: 3}\n")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// A fresh connection (no hello, no login).
    Fresh,
    /// Logged in as viewer (read access everywhere, may not mount).
    Viewer,
    /// Logged in as viewer with a 2 s idle watchdog.
    ViewerIdle2s,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// The request `ID` is answered with this error code.
    Error(i64),
    /// The request `ID` is answered with this error code; the rest of the frame is
    /// still being drained, so the stream cannot be probed afterwards.
    ErrorThenDraining(i64),
    /// Nothing answers the input, and a probe sent after it is answered.
    Dropped,
    /// The broker closes the connection.
    Disconnect,
}

struct Case {
    name: &'static str,
    phase: Phase,
    send: Vec<u8>,
    expect: Expect,
}

/// A Block frame of a ChainPack message written as Cpon.
fn msg(cpon: &str) -> Vec<u8> {
    let v = RpcValue::from_cpon(cpon).unwrap_or_else(|e| panic!("{cpon}: {e}"));
    frame_bytes(1, &v.to_chainpack())
}

/// A request `ID` to `.app:ping` whose body (after the meta) is `body` verbatim.
fn ping_with_body(body: &[u8]) -> Vec<u8> {
    let meta = RpcValue::from_cpon(format!(r#"<1:1,8:{ID},9:".app",10:"ping">i{{}}"#))
        .unwrap()
        .to_chainpack();
    // The payload of a body-less message ends with the empty IMap 0x8a 0xff.
    let mut payload = meta[..meta.len() - 2].to_vec();
    payload.extend_from_slice(body);
    frame_bytes(1, &payload)
}

/// A ChainPack String/Blob header claiming `len` bytes, with none following.
fn huge_len(type_byte: u8, len: u64) -> Vec<u8> {
    let mut v = vec![type_byte];
    libshv::value::write_uint(&mut v, len);
    v
}

/// A request `ID` whose meta ShvPath is `path_bytes` (a raw ChainPack value).
fn request_with_raw_path(path_bytes: &[u8]) -> Vec<u8> {
    let mut p = vec![0x8b, 0x01, 0x41, 0x08, 0x40 + ID as u8, 0x0a];
    p.extend_from_slice(&[0x86, 0x02, b'l', b's']);
    p.push(0x09);
    p.extend_from_slice(path_bytes);
    p.extend_from_slice(&[0xff, 0x8a, 0xff]);
    frame_bytes(1, &p)
}

/// A frame header claiming `len` bytes with format `format`, followed by `body`.
fn header_then(len: u64, format: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    libshv::value::write_uint(&mut v, len);
    v.push(format);
    v.extend_from_slice(body);
    v
}

fn pseudo_random(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}

fn login_param(cpon: &str) -> Vec<u8> {
    msg(&format!(r#"<1:1,8:{ID},10:"login">i{{1:{cpon}}}"#))
}

fn cases() -> Vec<Case> {
    use Expect::*;
    use Phase::*;
    let deep = |n: usize| [vec![0x8a, 0x01], vec![0x88; n], vec![0xff; n], vec![0xff]].concat();
    // A request meta followed by 64 KiB of padding: the head an oversized frame keeps.
    let oversized_head = {
        let mut m = RpcValue::from_cpon(format!(r#"<1:1,8:{ID},9:".app",10:"ping">i{{}}"#))
            .unwrap()
            .to_chainpack();
        m.truncate(m.len() - 2);
        m.resize(70_000, 0x80);
        m
    };
    let mut c = vec![
        Case {
            name: "garbage bytes",
            phase: Fresh,
            send: pseudo_random(4096, 7),
            expect: Disconnect,
        },
        Case {
            name: "0xff length byte",
            phase: Viewer,
            send: vec![0xff; 16],
            expect: Disconnect,
        },
        Case {
            name: "zero-length frame",
            phase: Fresh,
            send: vec![0x00],
            expect: Dropped,
        },
        Case {
            name: "zero-length frames x1000",
            phase: Viewer,
            send: vec![0x00; 1000],
            expect: Dropped,
        },
        Case {
            // One log line per byte before this was bounded.
            name: "zero-length frames x100000 before login",
            phase: Fresh,
            send: vec![0x00; 100_000],
            expect: Disconnect,
        },
        Case {
            name: "unknown format byte 7",
            phase: Viewer,
            send: frame_bytes(7, b"xyz"),
            expect: Dropped,
        },
        Case {
            name: "format 2 (JSON) not spoken",
            phase: Fresh,
            send: frame_bytes(2, b"{}"),
            expect: Dropped,
        },
        Case {
            name: "format byte only, no payload",
            phase: Viewer,
            send: vec![0x01, 0x01],
            expect: Dropped,
        },
        Case {
            name: "request over the 64 KiB limit",
            phase: Viewer,
            send: ping_with_body(
                &[
                    &[0x8a, 0x01][..],
                    &huge_len(0x85, 100_000),
                    &vec![0u8; 100_000],
                    &[0xff],
                ]
                .concat(),
            ),
            expect: Error(code::REQUEST_INVALID),
        },
        Case {
            name: "length prefix 2^60, then silence",
            phase: Viewer,
            send: header_then(1 << 60, 1, &oversized_head),
            expect: ErrorThenDraining(code::REQUEST_INVALID),
        },
        Case {
            name: "oversized frame of unknown format",
            phase: Viewer,
            send: header_then(1 << 20, 7, &[0u8; 70_000]),
            expect: Disconnect,
        },
        Case {
            name: "truncated frame then silence (before login)",
            phase: Fresh,
            send: header_then(100, 1, &[0x8b, 0x41, 0x41]),
            expect: Disconnect,
        },
        Case {
            name: "truncated frame then silence (idle watchdog)",
            phase: ViewerIdle2s,
            send: header_then(100, 1, &[0x8b, 0x41, 0x41]),
            expect: Disconnect,
        },
        Case {
            name: "nesting depth 3x10^4 in param (under the limit)",
            phase: Viewer,
            send: ping_with_body(&deep(30_000)),
            expect: Error(code::INVALID_PARAM),
        },
        Case {
            name: "nesting depth 10^5 in meta",
            phase: Viewer,
            send: frame_bytes(
                1,
                &[
                    &[0x8b, 0x01][..],
                    &vec![0x88; 100_000],
                    &vec![0xff; 100_001],
                ]
                .concat(),
            ),
            expect: Dropped,
        },
        Case {
            name: "String length 2^40 with no data (param)",
            phase: Viewer,
            send: ping_with_body(&[&[0x8a, 0x01][..], &huge_len(0x86, 1 << 40)].concat()),
            expect: Error(code::INVALID_PARAM),
        },
        Case {
            name: "Blob length 2^62 with no data (param)",
            phase: Viewer,
            send: ping_with_body(&[&[0x8a, 0x01][..], &huge_len(0x85, 1 << 62)].concat()),
            expect: Error(code::INVALID_PARAM),
        },
        Case {
            name: "String length 2^40 in ShvPath",
            phase: Viewer,
            send: request_with_raw_path(&huge_len(0x86, 1 << 40)),
            expect: Dropped,
        },
        Case {
            name: "invalid UTF-8 in ShvPath",
            phase: Viewer,
            send: request_with_raw_path(&[0x86, 0x02, 0xff, 0xfe]),
            expect: Dropped,
        },
        Case {
            name: "invalid UTF-8 in a String param",
            phase: Viewer,
            send: {
                let m = RpcValue::from_cpon(format!(
                    r#"<1:1,8:{ID},9:".broker",10:"mountedClientInfo">i{{}}"#
                ))
                .unwrap()
                .to_chainpack();
                let mut p = m[..m.len() - 2].to_vec();
                p.extend_from_slice(&[0x8a, 0x01, 0x86, 0x03, b'a', 0xc3, 0x28, 0xff]);
                frame_bytes(1, &p)
            },
            expect: Error(code::INVALID_PARAM),
        },
        Case {
            name: "RequestId as String",
            phase: Viewer,
            send: msg(r#"<1:1,8:"7",9:".app",10:"ping">i{}"#),
            expect: Dropped,
        },
        Case {
            name: "ShvPath as Int",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,9:5,10:"ls">i{}"#),
            expect: Dropped,
        },
        Case {
            name: "Method as List",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,9:".app",10:["ping"]>i{}"#),
            expect: Dropped,
        },
        Case {
            name: "CallerIds as Map",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,9:".app",10:"ping",11:{"a":1}>i{}"#),
            expect: Dropped,
        },
        Case {
            name: "CallerIds as List of Strings",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,9:".app",10:"ping",11:["x","y"]>i{}"#),
            expect: Dropped,
        },
        Case {
            name: "AccessLevel as String",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,9:".broker",10:"clients",17:"su">i{}"#),
            expect: Dropped,
        },
        Case {
            name: "AccessLevel 63 claimed by a viewer",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,9:".broker",10:"disconnectClient",17:63,14:"su">i{1:1}"#),
            expect: Error(METHOD_NOT_FOUND),
        },
        Case {
            name: "UserId as Int",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,9:".app",10:"ping",16:5>i{}"#),
            expect: Dropped,
        },
        Case {
            name: "Repeat as String",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,9:".app",10:"ping",20:"yes">i{}"#),
            expect: Dropped,
        },
        Case {
            name: "neither request, response nor signal",
            phase: Viewer,
            send: msg(r#"<1:1,9:".app">i{1:1}"#),
            expect: Dropped,
        },
        Case {
            name: "body is a List, not an IMap",
            phase: Viewer,
            send: frame_bytes(
                1,
                &RpcValue::from_cpon(r#"<1:1,8:7,9:".app",10:"ping">[1]"#)
                    .unwrap()
                    .to_chainpack(),
            ),
            expect: Dropped,
        },
        Case {
            name: "message without a MetaMap",
            phase: Viewer,
            send: frame_bytes(1, &[0x8a, 0xff]),
            expect: Dropped,
        },
        Case {
            name: "response with no pending request",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,11:1>i{2:"forged"}"#),
            expect: Dropped,
        },
        Case {
            name: "response with CallerIds list",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,11:[1,2,3]>i{2:"forged"}"#),
            expect: Dropped,
        },
        Case {
            name: "request before login: .app:ping",
            phase: Fresh,
            send: msg(r#"<1:1,8:7,9:".app",10:"ping">i{}"#),
            expect: Error(LOGIN_REQUIRED),
        },
        Case {
            name: "request before login: ls of root",
            phase: Fresh,
            send: msg(r#"<1:1,8:7,10:"ls">i{}"#),
            expect: Error(LOGIN_REQUIRED),
        },
        Case {
            name: "login param not a Map",
            phase: Fresh,
            send: login_param("[1,2]"),
            expect: Error(code::INVALID_PARAM),
        },
        Case {
            name: "login.login as String",
            phase: Fresh,
            send: login_param(r#"{"login":"admin"}"#),
            expect: Error(code::INVALID_PARAM),
        },
        Case {
            name: "login with wrong types (user Int, password List)",
            phase: Fresh,
            send: login_param(r#"{"login":{"user":5,"password":[1],"type":"PLAIN"}}"#),
            expect: Error(code::METHOD_CALL_EXCEPTION),
        },
        Case {
            name: "login type KERBEROS",
            phase: Fresh,
            send: login_param(r#"{"login":{"user":"admin","password":"x","type":"KERBEROS"}}"#),
            expect: Error(code::INVALID_PARAM),
        },
        Case {
            name: "login with tunnel secret as Int",
            phase: Fresh,
            send: login_param(
                r#"{"login":{"user":"","password":"","type":"PLAIN"},"options":{"tunnel":{"secret":42}}}"#,
            ),
            expect: Error(code::METHOD_CALL_EXCEPTION),
        },
        Case {
            name: "login with an unknown tunnel secret",
            phase: Fresh,
            send: login_param(
                r#"{"login":{"user":"","password":"","type":"PLAIN"},"options":{"tunnel":{"secret":"00112233445566778899aabbccddeeff"}}}"#,
            ),
            expect: Error(code::METHOD_CALL_EXCEPTION),
        },
        Case {
            name: "login with idleWatchDogTimeOut as String",
            phase: Fresh,
            send: login_param(
                r#"{"login":{"user":"nobody","password":"x","type":"PLAIN"},"options":{"idleWatchDogTimeOut":"never"}}"#,
            ),
            expect: Error(code::METHOD_CALL_EXCEPTION),
        },
        Case {
            name: "ResetSession with a payload",
            phase: Viewer,
            send: frame_bytes(0, &[0x01]),
            expect: Dropped,
        },
        Case {
            name: "ResetSession mid-stream, then a request",
            phase: Viewer,
            send: [
                frame_bytes(0, &[]),
                msg(r#"<1:1,8:7,9:".app",10:"ping">i{}"#),
            ]
            .concat(),
            expect: Error(LOGIN_REQUIRED),
        },
        Case {
            name: "TunnelCtl without State",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,11:1,13:null,15:<1:3>i{2:"h",3:1}>i{}"#),
            expect: Dropped,
        },
        Case {
            name: "TunnelCtl with State 9",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,11:1,15:i{1:9}>i{}"#),
            expect: Dropped,
        },
        Case {
            name: "TunnelCtl as String",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,11:1,15:"tunnel">i{}"#),
            expect: Dropped,
        },
        Case {
            name: "unsolicited FindTunnelRequest",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,11:1,13:null,15:<1:3>i{1:1}>i{}"#),
            expect: Dropped,
        },
        Case {
            name: "CreateTunnelRequest with Port out of range",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,11:1,13:null,15:<1:3>i{1:3,2:"127.0.0.1",3:99999,5:1}>i{}"#),
            expect: Dropped,
        },
        Case {
            name: "CloseTunnel for no tunnel",
            phase: Viewer,
            send: msg(r#"<1:1,8:7,11:1,15:<1:3>i{1:5}>i{2:{"exitCode":0}}"#),
            expect: Dropped,
        },
        Case {
            name: "signal from an unmounted client",
            phase: Viewer,
            send: msg(r#"<1:1,9:"test/dev/x",10:"chng">i{1:1}"#),
            expect: Dropped,
        },
    ];
    // RevCallerIds that does not fit a connection id (was i64::MIN after push: a panic
    // in the broker's encoder in debug builds).
    let mut rcid = RpcValue::from_cpon(format!(r#"<1:1,8:{ID},9:".app",10:"ping">i{{}}"#)).unwrap();
    rcid.meta
        .as_mut()
        .unwrap()
        .insert(13, RpcValue::from(1u64 << 63));
    c.push(Case {
        name: "RevCallerIds 2^63 (UInt)",
        phase: Viewer,
        send: frame_bytes(1, &rcid.to_chainpack()),
        expect: Dropped,
    });
    c
}

/// Error code constants not re-exported by the harness.
mod code {
    pub use libshv::message::code::*;
}

async fn login_viewer(raw: &mut RawConn, idle: Option<u64>) {
    let hello = raw.call("", "hello", None).await.result().expect("hello");
    let nonce = hello
        .get("nonce")
        .map(|n| n.as_str().to_string())
        .unwrap_or_default();
    let p = LoginParams {
        user: "viewer".into(),
        credentials: Credentials::Plain("viewer".into()),
        use_sha1: true,
        idle_timeout: idle,
        ..Default::default()
    };
    raw.call("", "login", Some(p.to_value(&nonce)))
        .await
        .result()
        .expect("viewer login");
}

/// What the broker did, as a string comparable to the expectation.
async fn observe(raw: &mut RawConn, expect: Expect, phase: Phase) -> Result<(), String> {
    match expect {
        Expect::Disconnect => loop {
            match raw.recv().await {
                RawEvent::Closed => return Ok(()),
                RawEvent::Timeout => return Err("still open after the timeout".into()),
                // Errors answering parts of the input may come before the close.
                RawEvent::Frame(_) | RawEvent::Other(_) => continue,
            }
        },
        Expect::Error(want) | Expect::ErrorThenDraining(want) => {
            let m = loop {
                match raw.recv().await {
                    RawEvent::Frame(f) if f.is_response() && f.request_id() == Some(ID) => {
                        break RpcMessage::from_frame(&f).map_err(|e| e.to_string())?
                    }
                    RawEvent::Frame(_) => continue,
                    other => return Err(format!("no response: {other:?}")),
                }
            };
            match m.result() {
                Err(e) if e.code == want => {}
                Err(e) => return Err(format!("error {} ({})", e.code, e.message)),
                Ok(v) => return Err(format!("result {}", v.to_cpon())),
            }
            if expect == Expect::Error(want) {
                probe(raw, phase).await
            } else {
                Ok(())
            }
        }
        Expect::Dropped => probe(raw, phase).await,
    }
}

/// Sends a request the connection's phase allows and waits for its answer; anything
/// answering `ID` on the way means the input was not dropped.
async fn probe(raw: &mut RawConn, phase: Phase) -> Result<(), String> {
    let (path, method) = match phase {
        Phase::Fresh => ("", "hello"),
        _ => (".app", "ping"),
    };
    raw.send(&RpcMessage::new_request(PROBE, path, method, None))
        .await
        .map_err(|e| format!("probe not sent: {e}"))?;
    loop {
        match raw.recv().await {
            RawEvent::Frame(f) if f.request_id() == Some(PROBE) => {
                // Any answer (even "login required" after a ResetSession) proves the
                // stream is in sync.
                return RpcMessage::from_frame(&f)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
            }
            RawEvent::Frame(f) if f.request_id() == Some(ID) => {
                return Err(format!("answered instead of dropped: {}", f.meta))
            }
            RawEvent::Frame(_) => continue,
            other => return Err(format!("probe unanswered: {other:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_catalogue() {
    let mut broker = Broker::start(Some(&broker_config()));
    let (observer, _) = broker.connect("admin", "admin").await;
    let cases = cases();
    assert!(cases.len() >= 30, "the catalogue has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let mut raw = broker.raw().await;
        match case.phase {
            Phase::Fresh => {}
            Phase::Viewer => login_viewer(&mut raw, None).await,
            Phase::ViewerIdle2s => login_viewer(&mut raw, Some(2)).await,
        }
        // The peer may close while we still write (e.g. garbage): that is its answer.
        let _ = raw.send_bytes(&case.send).await;
        let outcome = observe(&mut raw, case.expect, case.phase).await;
        drop(raw);
        // Another client is served after every case, and the broker still runs.
        broker.assert_running();
        assert_served(&observer).await;
        let line = format!("{:<50} expected {:?}", case.name, case.expect);
        match outcome {
            Ok(()) => eprintln!("ok    {line}"),
            Err(got) => {
                eprintln!("FAIL  {line}: {got}");
                failures.push(format!("{line}: {got}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "catalogue failures:\n{}",
        failures.join("\n")
    );
    // Bad frames are logged a few times per connection, not once each: the 101 000
    // zero-length frames above are a handful of lines.
    let logged = broker.stderr().matches("bad frame dropped").count();
    assert!(logged < 200, "{logged} lines of 'bad frame dropped'");
}

/// 10 000 hellos on one connection: each is answered, always with the same nonce, and
/// the connection can still log in afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hellos() {
    let mut broker = Broker::start(Some(&broker_config()));
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    let mut nonces = std::collections::BTreeSet::new();
    // In batches, so that neither side's socket buffer has to hold all the answers.
    for batch in 0..10 {
        let mut bytes = Vec::new();
        for i in 0..1000 {
            let id = 1 + batch * 1000 + i;
            bytes.extend(libshv::codec::encode_frame(
                &RpcMessage::new_request(id, "", "hello", None).to_frame(),
            ));
        }
        raw.send_bytes(&bytes).await.expect("send hellos");
        for i in 0..1000 {
            let m = raw.response(1 + batch * 1000 + i).await;
            let v = m.result().expect("hello answered");
            nonces.insert(
                v.get("nonce")
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
            );
        }
        assert_served(&observer).await;
    }
    assert_eq!(
        nonces.len(),
        1,
        "repeated hellos must give one nonce: {nonces:?}"
    );
    raw.login("viewer", "viewer", true)
        .await
        .expect("login after 10 000 hellos");
    broker.assert_running();
    assert_served(&observer).await;
}

/// A response forged towards another client's connection id, and a signal with a
/// forged path from an unmounted client, never reach that client; a device's signal
/// carrying RevCallerIds 2^63 is delivered (under its own mount) without hurting the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_responses_and_signals_reach_nobody() {
    let mut broker = Broker::start(Some(&broker_config()));
    let (observer, _) = broker.connect("admin", "admin").await;
    // The victim subscribes to everything and learns its own connection id.
    let mut victim = broker.raw().await;
    victim
        .login("admin", "admin", true)
        .await
        .expect("victim login");
    let sub = victim
        .call(
            ".broker/currentClient",
            "subscribe",
            Some(RpcValue::from("**:*:*")),
        )
        .await;
    assert!(sub.result().is_ok(), "subscribe: {:?}", sub.result());
    let info = victim.call(".broker/currentClient", "info", None).await;
    let victim_id = info
        .result()
        .unwrap()
        .get("clientId")
        .map(|v| v.as_int())
        .expect("clientId");

    let mut attacker = broker.raw().await;
    login_viewer(&mut attacker, None).await;
    for forged in [
        format!(r#"<1:1,8:100,11:{victim_id}>i{{2:"forged"}}"#),
        format!(r#"<1:1,8:100,11:[{victim_id}],13:null,15:<1:3>i{{1:4}}>i{{}}"#),
        format!(r#"<1:1,8:100,11:{victim_id}>i{{2:[1,b"injected"]}}"#),
        r#"<1:1,9:"test/dev/status",10:"chng">i{1:"forged"}"#.to_string(),
        r#"<1:1,9:".broker",10:"lsmod">i{1:{"x":true}}"#.to_string(),
    ] {
        attacker.send_bytes(&msg(&forged)).await.unwrap();
    }
    // The attacker's own ping is answered after all of that was processed...
    assert!(attacker.call(".app", "ping", None).await.result().is_ok());
    // ...and the victim sees its own ping's answer with nothing forged before it.
    victim
        .send(&RpcMessage::new_request(PROBE, ".app", "ping", None))
        .await
        .unwrap();
    match victim.recv().await {
        RawEvent::Frame(f) if f.request_id() == Some(PROBE) => {}
        other => panic!("victim received something forged: {other:?}"),
    }

    // A device's signal with RevCallerIds 2^63: delivered under its mount point.
    let mut device = broker.raw().await;
    let hello = device.call("", "hello", None).await.result().unwrap();
    let p = LoginParams {
        user: "device".into(),
        credentials: Credentials::Plain("device".into()),
        mount_point: Some("test/dev".into()),
        ..Default::default()
    };
    let nonce = hello.get("nonce").unwrap().as_str().to_string();
    device
        .call("", "login", Some(p.to_value(&nonce)))
        .await
        .result()
        .expect("device login");
    let mut sig = RpcValue::from_cpon(r#"<1:1,9:"../../x",10:"chng">i{1:1}"#).unwrap();
    sig.meta
        .as_mut()
        .unwrap()
        .insert(13, RpcValue::from(1u64 << 63));
    device
        .send_bytes(&frame_bytes(1, &sig.to_chainpack()))
        .await
        .unwrap();
    let sig = RpcValue::from_cpon(r#"<1:1,9:"status",10:"chng",13:null>i{1:2}"#).unwrap();
    device
        .send_bytes(&frame_bytes(1, &sig.to_chainpack()))
        .await
        .unwrap();
    let got = loop {
        match victim.recv().await {
            RawEvent::Frame(f) if f.is_signal() && f.method() == Some("chng") => break f,
            RawEvent::Frame(_) => continue,
            other => panic!("device signal not delivered: {other:?}"),
        }
    };
    // Whatever the device claims, its signals live under its mount point.
    assert!(
        got.shv_path().starts_with("test/dev"),
        "signal path {}",
        got.shv_path()
    );
    broker.assert_running();
    assert_served(&observer).await;
}

/// hello + login with a tunnel secret (as shvrexec does).
async fn tunnel_login(
    raw: &mut RawConn,
    secret: &str,
) -> Result<RpcValue, libshv::message::RpcError> {
    let hello = raw.call("", "hello", None).await.result().unwrap();
    let nonce = hello.get("nonce").unwrap().as_str().to_string();
    let p = LoginParams {
        credentials: Credentials::TunnelSecret(secret.to_string()),
        idle_timeout: Some(0),
        ..Default::default()
    };
    raw.call("", "login", Some(p.to_value(&nonce)))
        .await
        .result()
}

/// A raw "agent" logged in as device and mounted at test/agent.
async fn raw_agent(broker: &Broker) -> RawConn {
    let mut agent = broker.raw().await;
    let hello = agent.call("", "hello", None).await.result().unwrap();
    let p = LoginParams {
        user: "device".into(),
        credentials: Credentials::Plain("device".into()),
        mount_point: Some("test/agent".into()),
        ..Default::default()
    };
    let nonce = hello.get("nonce").unwrap().as_str().to_string();
    agent
        .call("", "login", Some(p.to_value(&nonce)))
        .await
        .result()
        .expect("agent login");
    agent
}

/// The raw agent's part of a launch: it answers the `launchRexec` it gets with
/// FindTunnelRequest. Returns that request and the broker's FindTunnelResponse (with
/// the secret).
async fn agent_finds_tunnel(agent: &mut RawConn) -> (libshv::RpcFrame, tunnel::TunnelCtl) {
    let req = loop {
        match agent.recv().await {
            RawEvent::Frame(f) if f.method() == Some("launchRexec") => break f,
            RawEvent::Frame(_) => continue,
            other => panic!("agent got no launchRexec: {other:?}"),
        }
    };
    let find = tunnel::find_tunnel_request(&req.meta, None);
    agent
        .send_bytes(&libshv::codec::encode_frame(&find))
        .await
        .unwrap();
    let ftr = loop {
        match agent.recv().await {
            RawEvent::Frame(f) => {
                if let Some(Ok(ctl)) = tunnel::TunnelCtl::from_frame(&f) {
                    if ctl.state == tunnel::TunnelState::FindTunnelResponse {
                        break ctl;
                    }
                }
            }
            other => panic!("agent got no FindTunnelResponse: {other:?}"),
        }
    };
    (req, ftr)
}

/// A tunnel end (rexec's side, raw) logged in with the secret of `ftr`, having sent
/// CreateTunnelRequest to the launch `rid` (its own request id 900).
async fn raw_rexec(broker: &Broker, rid: i64, ftr: &tunnel::TunnelCtl) -> RawConn {
    let mut rexec = broker.raw().await;
    let secret = ftr.secret.clone().expect("a secret");
    tunnel_login(&mut rexec, &secret)
        .await
        .expect("rexec login");
    let create = tunnel::TunnelCtl {
        state: tunnel::TunnelState::CreateTunnelRequest,
        request_id: Some(900),
        caller_ids: ftr.caller_ids.clone(),
        ..tunnel::TunnelCtl::new(tunnel::TunnelState::CreateTunnelRequest)
    };
    let f = tunnel::tunnel_frame(rid, &ftr.caller_ids, true, Some(&create), None);
    rexec
        .send_bytes(&libshv::codec::encode_frame(&f))
        .await
        .unwrap();
    rexec
}

/// A broker, an observer, a raw "agent" at test/agent that answered a raw rsh's
/// `launchRexec` (request id 50) with FindTunnelRequest, the rsh, and the
/// FindTunnelResponse the agent got (with the secret).
async fn tunnel_found() -> (Broker, libshv::Client, RawConn, RawConn, tunnel::TunnelCtl) {
    let broker = Broker::start(Some(&broker_config()));
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut agent = raw_agent(&broker).await;
    let mut rsh = broker.raw().await;
    rsh.login("admin", "admin", true).await.expect("rsh login");
    let launch = tunnel::LaunchParams {
        pty: false,
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
    let (_, ftr) = agent_finds_tunnel(&mut agent).await;
    (broker, observer, agent, rsh, ftr)
}

/// A tunnel secret is single use: the first login with it succeeds, a replay fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_secret_replayed_is_refused() {
    let (mut broker, observer, _agent, _rsh, ftr) = tunnel_found().await;
    let secret = ftr.secret.expect("FindTunnelResponse carries a secret");
    let mut first = broker.raw().await;
    tunnel_login(&mut first, &secret)
        .await
        .expect("first use of the secret");
    let mut replay = broker.raw().await;
    let err = tunnel_login(&mut replay, &secret)
        .await
        .expect_err("replayed secret");
    assert_eq!(err.code, code::METHOD_CALL_EXCEPTION, "{err:?}");
    // The secret never leaks into the broker's log.
    assert!(!broker.stderr().contains(&secret), "secret logged");
    broker.assert_running();
    assert_served(&observer).await;
}

/// A tunnel end may send only along the tunnel's own path: a frame with the tunnel's
/// request id but more CallerIds below the operator's connection (another client behind
/// a parent link, had there been one) is dropped; the tunnel's own frames pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_end_cannot_address_beyond_its_own_path() {
    let (mut broker, observer, _agent, mut rsh, ftr) = tunnel_found().await;
    let mut rexec = raw_rexec(&broker, 50, &ftr).await;
    let send = |f: libshv::RpcFrame| libshv::codec::encode_frame(&f);
    let mut forged_path = vec![77];
    forged_path.extend(&ftr.caller_ids);
    let data = |s: &str| Some(RpcValue::from(s.as_bytes().to_vec()));
    for (path, what) in [(&forged_path, "forged"), (&ftr.caller_ids, "good")] {
        rexec
            .send_bytes(&send(tunnel::tunnel_frame(
                50,
                path,
                false,
                None,
                data(what),
            )))
            .await
            .unwrap();
    }
    // rsh gets CreateTunnelRequest, then the good frame; the forged one never.
    let first_data = loop {
        match rsh.recv().await {
            RawEvent::Frame(f) if f.request_id() == Some(50) && f.tunnel_ctl().is_none() => {
                break f
            }
            RawEvent::Frame(_) => continue,
            other => panic!("rsh got no tunnel data: {other:?}"),
        }
    };
    let got = RpcMessage::from_frame(&first_data)
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(got.as_blob(), b"good", "{}", got.to_cpon());
    broker.assert_running();
    assert_served(&observer).await;
}

/// Controls on a tunnel (resize, eof, signal) are outside its flow-control window, but
/// wait in the same queue until the application takes them: a far end that floods
/// them gets the tunnel closed with an error once they hold twice the window, instead
/// of growing the queue for as long as it likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_tunnel_controls_closes_the_tunnel() {
    let mut broker = Broker::start(Some(&broker_config()));
    let mut agent = raw_agent(&broker).await;
    let (client, _) = broker.connect("admin", "admin").await;
    let launching = tokio::spawn(async move {
        let params = tunnel::LaunchParams {
            pty: false,
            cmd: vec!["true".into()],
            ..Default::default()
        };
        let end = tunnel::TunnelEnd::launch(&client, "test/agent", &params, TIMEOUT).await;
        (client, end)
    });
    let (req, ftr) = agent_finds_tunnel(&mut agent).await;
    let rid = req.request_id().expect("the launch's request id");
    let mut rexec = raw_rexec(&broker, rid, &ftr).await;
    let (client, end) = launching.await.unwrap();
    let (_sender, mut receiver) = end.expect("the tunnel opens").split();
    // 70 000 `eof` controls, each counted 64 bytes while queued: 4.3 MB, over twice
    // the 2 MiB window. The operator's application reads none of them meanwhile.
    let eof = RpcValue::from(vec![RpcValue::from(3), tunnel::Control::Eof.to_value()]);
    let one = tunnel::tunnel_frame(rid, &ftr.caller_ids, false, None, Some(eof));
    let batch = libshv::codec::encode_frame(&one).repeat(1000);
    for _ in 0..70 {
        rexec.send_bytes(&batch).await.unwrap();
    }
    // Before the application reads: rexec's ping answered means the broker has queued
    // the whole flood to the operator; the operator's own ping answered, coming after
    // it on that connection, means its client has handed the flood to the tunnel.
    assert!(rexec.call(".app", "ping", None).await.result().is_ok());
    client
        .call(".app", "ping", None)
        .await
        .expect("operator's ping");
    let mut controls = 0;
    let closed = tokio::time::timeout(TIMEOUT, async {
        loop {
            match receiver.recv().await {
                Some(tunnel::TunnelEvent::Control(_)) => controls += 1,
                Some(tunnel::TunnelEvent::Closed(status)) => break status,
                Some(_) => {}
                None => panic!("the receiver ended without a Closed event"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the flood never closed the tunnel ({controls} controls came)"));
    assert!(
        matches!(&closed, tunnel::CloseStatus::Error(e) if e.contains("flow control")),
        "{closed:?}"
    );
    assert!(controls < 70_000, "{controls}");
    broker.assert_running();
}
