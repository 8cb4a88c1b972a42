//! Hostile or broken peers on raw TCP: each gets an error or a clean disconnect of its
//! own connection, while another client keeps being served during and after.

use libshv::{RpcMessage, RpcValue};
use tests::*;

/// The broker process is alive, an existing client is served, and a new one can log in.
async fn assert_broker_healthy(broker: &mut Broker, observer: &libshv::Client) {
    broker.assert_running();
    assert_served(observer).await;
    let (fresh, _) = broker.connect("viewer", "viewer").await;
    assert_served(&fresh).await;
}

/// After something bad was sent: either the broker closes the connection, or it stays
/// in sync and answers a ping sent after the bad input. Returns true when closed.
async fn closed_or_still_in_sync(raw: &mut RawConn) -> bool {
    let id = raw.next_id();
    if raw
        .send(&RpcMessage::new_request(id, ".app", "ping", None))
        .await
        .is_err()
    {
        return true;
    }
    loop {
        match raw.recv().await {
            RawEvent::Closed => return true,
            RawEvent::Frame(f) if f.is_response() && f.request_id() == Some(id) => {
                let m = RpcMessage::from_frame(&f).unwrap();
                assert!(m.result().is_ok(), "ping after bad input: {:?}", m.result());
                return false;
            }
            RawEvent::Frame(_) => continue,
            RawEvent::Other(o) => panic!("broker sent something undecodable: {o}"),
            RawEvent::Timeout => panic!("broker neither answered nor closed for {TIMEOUT:?}"),
        }
    }
}

#[tokio::test]
async fn garbage_bytes_close_only_that_connection() {
    let mut broker = Broker::start(None);
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    // 0xff is not a valid ChainPack length: the stream cannot be resynchronised.
    let mut junk = vec![0xffu8, 0xfe, 0x00, 0x13, 0x37];
    let mut x: u32 = 12345;
    for _ in 0..4096 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        junk.push((x >> 16) as u8);
    }
    let _ = raw.send_bytes(&junk).await;
    assert_served(&observer).await; // during
    raw.expect_closed().await;
    assert_broker_healthy(&mut broker, &observer).await;
}

#[tokio::test]
async fn garbage_after_login_closes_only_that_connection() {
    let mut broker = Broker::start(None);
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    raw.login("viewer", "viewer", true).await.expect("login");
    let _ = raw.send_bytes(&[0xff; 64]).await;
    raw.expect_closed().await;
    assert_broker_healthy(&mut broker, &observer).await;
}

#[tokio::test]
async fn http_request_is_not_an_shv_peer() {
    let mut broker = Broker::start(None);
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    let _ = raw
        .send_bytes(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await;
    raw.shutdown_write().await;
    raw.expect_closed().await;
    assert_broker_healthy(&mut broker, &observer).await;
}

#[tokio::test]
async fn truncated_frame_then_close() {
    let mut broker = Broker::start(None);
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    raw.login("viewer", "viewer", true).await.expect("login");
    let full = libshv::codec::encode_frame(
        &RpcMessage::new_request(77, ".app", "ping", Some(RpcValue::from("x".repeat(500))))
            .to_frame(),
    );
    raw.send_bytes(&full[..full.len() / 2]).await.unwrap();
    // While the half frame is pending, others are served.
    assert_served(&observer).await;
    raw.shutdown_write().await;
    let frames = raw.expect_closed().await;
    assert!(
        frames.iter().all(|f| f.request_id() != Some(77)
            || !f.is_response()
            || RpcMessage::from_frame(f).unwrap().result().is_err()),
        "a truncated request must not be executed"
    );
    drop(raw);
    assert_broker_healthy(&mut broker, &observer).await;
}

#[tokio::test]
async fn truncated_frame_before_login_then_close() {
    let mut broker = Broker::start(None);
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    // Header says 1000 bytes, 10 follow.
    let mut bytes = Vec::new();
    libshv::value::write_uint(&mut bytes, 1000);
    bytes.extend_from_slice(&[1, 0x8b, 0x41, 0x41, 0x48, 0x41, 0x4a, 0x86, 0x05, b'h']);
    raw.send_bytes(&bytes).await.unwrap();
    assert_served(&observer).await;
    raw.shutdown_write().await;
    raw.expect_closed().await;
    assert_broker_healthy(&mut broker, &observer).await;
}

async fn oversized_request_is_refused_and_drained(broker: &mut Broker, blob: usize) {
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    raw.login("viewer", "viewer", true).await.expect("login");
    let id = raw.next_id();
    let big = libshv::codec::encode_frame(
        &RpcMessage::new_request(id, ".app", "ping", Some(RpcValue::from(vec![0x5au8; blob])))
            .to_frame(),
    );
    let half = big.len() / 2;
    raw.send_bytes(&big[..half])
        .await
        .expect("the broker must drain an oversized frame, not close on it");
    assert_served(&observer).await; // during
    raw.send_bytes(&big[half..])
        .await
        .expect("the broker must drain an oversized frame, not close on it");
    let resp = raw.response(id).await;
    let err = expect_error(&resp);
    assert_ne!(err.code, 0, "{err:?}");
    // The stream is still in sync: the same connection keeps working.
    let ping = raw.call(".app", "ping", None).await;
    assert!(
        ping.result().is_ok(),
        "ping after the oversized frame: {:?}",
        ping.result()
    );
    assert_broker_healthy(broker, &observer).await;
}

#[tokio::test]
async fn oversized_frame_with_configured_limit() {
    let mut broker = Broker::start(Some(&config_yaml(&[], "limits:\n  max_frame_size: 4096\n")));
    oversized_request_is_refused_and_drained(&mut broker, 200_000).await;
}

#[tokio::test]
async fn oversized_frame_over_default_16mib_limit() {
    let mut broker = Broker::start(None);
    oversized_request_is_refused_and_drained(&mut broker, 17 * 1024 * 1024).await;
}

#[tokio::test]
async fn frame_under_configured_limit_is_served() {
    let broker = Broker::start(Some(&config_yaml(&[], "limits:\n  max_frame_size: 4096\n")));
    let mut raw = broker.raw().await;
    raw.login("viewer", "viewer", true).await.expect("login");
    let r = raw
        .call(".app", "ping", Some(RpcValue::from(vec![1u8; 2000])))
        .await;
    assert!(r.result().is_ok(), "{:?}", r.result());
}

#[tokio::test]
async fn nesting_depth_100000_in_param() {
    let mut broker = Broker::start(None);
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    raw.login("admin", "admin", true).await.expect("login");
    // `ls` on the root is served by the broker itself, which must decode the param.
    let _ = raw
        .send_bytes(&deep_param_request(555, "", "ls", 100_000))
        .await;
    loop {
        match raw.recv().await {
            RawEvent::Closed => break,
            RawEvent::Frame(f) if f.is_response() && f.request_id() == Some(555) => {
                let m = RpcMessage::from_frame(&f).unwrap();
                expect_error(&m);
                closed_or_still_in_sync(&mut raw).await;
                break;
            }
            RawEvent::Frame(_) => continue,
            other => panic!("deep param: expected an error or a disconnect, got {other:?}"),
        }
    }
    assert_broker_healthy(&mut broker, &observer).await;
}

#[tokio::test]
async fn nesting_depth_100000_in_param_to_a_device() {
    let mut broker = Broker::start(None);
    let _dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    raw.login("admin", "admin", true).await.expect("login");
    let _ = raw
        .send_bytes(&deep_param_request(556, "test/dev1", "echo", 100_000))
        .await;
    loop {
        match raw.recv().await {
            RawEvent::Closed => break,
            RawEvent::Frame(f) if f.is_response() && f.request_id() == Some(556) => {
                expect_error(&RpcMessage::from_frame(&f).unwrap());
                break;
            }
            RawEvent::Frame(_) => continue,
            other => panic!("deep param: expected an error or a disconnect, got {other:?}"),
        }
    }
    assert_broker_healthy(&mut broker, &observer).await;
    assert_eq!(
        observer
            .call("test/dev1/number", "get", None)
            .await
            .unwrap()
            .as_int(),
        42
    );
}

#[tokio::test]
async fn nesting_depth_100000_in_meta() {
    let mut broker = Broker::start(None);
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    raw.login("admin", "admin", true).await.expect("login");
    // <1:1, 8:557, 10:"ping", 9:[[[[…]]]]> i{}
    let mut payload = vec![0x8b, 0x41, 0x41, 0x48, 0x81];
    libshv::value::write_uint(&mut payload, 557);
    payload.extend_from_slice(&[0x4a, 0x86, 0x04]);
    payload.extend_from_slice(b"ping");
    payload.push(0x49);
    payload.extend(std::iter::repeat_n(0x88u8, 100_000));
    payload.extend(std::iter::repeat_n(0xffu8, 100_000));
    payload.extend_from_slice(&[0xff, 0x8a, 0xff]);
    let _ = raw.send_bytes(&frame_bytes(1, &payload)).await;
    assert_served(&observer).await;
    closed_or_still_in_sync(&mut raw).await;
    assert_broker_healthy(&mut broker, &observer).await;
}

#[tokio::test]
async fn unknown_format_byte() {
    let mut broker = Broker::start(None);
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    raw.login("admin", "admin", true).await.expect("login");
    let payload = RpcMessage::new_request(9, ".app", "ping", None)
        .to_frame()
        .payload();
    let _ = raw.send_bytes(&frame_bytes(7, &payload)).await;
    closed_or_still_in_sync(&mut raw).await;
    assert_broker_healthy(&mut broker, &observer).await;
}

#[tokio::test]
async fn request_before_login_is_login_required() {
    let mut broker = Broker::start(None);
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    for (path, method) in [
        (".app", "ping"),
        ("", "ls"),
        (".broker", "clients"),
        ("test/x", "get"),
    ] {
        let r = raw.call(path, method, None).await;
        assert_eq!(
            expect_error(&r).code,
            LOGIN_REQUIRED,
            "{path}:{method} before login"
        );
    }
    assert_served(&observer).await;
    assert_broker_healthy(&mut broker, &observer).await;
}

#[tokio::test]
async fn unknown_method_or_path_is_method_not_found_raw() {
    let mut broker = Broker::start(None);
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    raw.login("admin", "admin", true).await.expect("login");
    for (path, method) in [
        (".app", "bogus"),
        ("bogus/path", "get"),
        (".broker/currentClient", "bogus"),
    ] {
        let r = raw.call(path, method, None).await;
        assert_eq!(expect_error(&r).code, METHOD_NOT_FOUND, "{path}:{method}");
    }
    // The connection stays usable.
    assert!(raw.call(".app", "ping", None).await.result().is_ok());
    assert_broker_healthy(&mut broker, &observer).await;
}

#[tokio::test]
async fn reset_session_goes_back_to_login() {
    let broker = Broker::start(None);
    let mut raw = broker.raw().await;
    raw.login("admin", "admin", true).await.expect("login");
    assert!(raw.call(".app", "ping", None).await.result().is_ok());
    raw.send_bytes(&[0x01, 0x00]).await.unwrap(); // ResetSession
    let r = raw.call(".app", "ping", None).await;
    assert_eq!(expect_error(&r).code, LOGIN_REQUIRED, "after ResetSession");
    raw.login("viewer", "viewer", true)
        .await
        .expect("login again after reset");
    let info = raw
        .call(".broker/currentClient", "info", None)
        .await
        .result()
        .unwrap();
    assert_eq!(
        info.get("userName")
            .map(|v| v.as_str().to_string())
            .as_deref(),
        Some("viewer")
    );
}

#[tokio::test]
async fn silent_connection_is_closed_after_login_timeout() {
    let mut broker = Broker::start(Some(&config_yaml(&[], "limits:\n  login_timeout: 1\n")));
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    raw.expect_closed().await;
    let mut raw = broker.raw().await;
    assert!(raw.call("", "hello", None).await.result().is_ok());
    raw.expect_closed().await;
    assert_broker_healthy(&mut broker, &observer).await;
}

#[tokio::test]
async fn too_many_failed_logins_close_the_connection() {
    let mut broker = Broker::start(Some(&config_yaml(&[], "limits:\n  login_attempts: 2\n")));
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut raw = broker.raw().await;
    let mut closed = false;
    for _ in 0..10 {
        let hid = raw.next_id();
        if raw
            .send(&RpcMessage::new_request(hid, "", "hello", None))
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let nonce = match raw.recv().await {
            RawEvent::Closed => {
                closed = true;
                break;
            }
            RawEvent::Frame(f) if f.request_id() == Some(hid) => RpcMessage::from_frame(&f)
                .unwrap()
                .result()
                .expect("hello")
                .get("nonce")
                .map(|n| n.as_str().to_string())
                .expect("nonce"),
            other => panic!("hello: {other:?}"),
        };
        let params = libshv::login::LoginParams {
            user: "admin".into(),
            credentials: libshv::login::Credentials::Plain("wrong".into()),
            use_sha1: true,
            ..Default::default()
        };
        let id = raw.next_id();
        if raw
            .send(&RpcMessage::new_request(
                id,
                "",
                "login",
                Some(params.to_value(&nonce)),
            ))
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        match raw.recv().await {
            RawEvent::Closed => {
                closed = true;
                break;
            }
            RawEvent::Frame(f) => {
                assert_eq!(f.request_id(), Some(id));
                expect_error(&RpcMessage::from_frame(&f).unwrap());
            }
            other => panic!("{other:?}"),
        }
    }
    if !closed {
        // The last error may have been followed by the close.
        raw.expect_closed().await;
    }
    assert_broker_healthy(&mut broker, &observer).await;
}
