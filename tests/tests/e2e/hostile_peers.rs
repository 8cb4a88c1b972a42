//! Round 2 of hardening: each test is named after a finding of the adversarial review
//! (a hostile read-only user, an unauthenticated socket, a lying device) and fails on
//! the broker before the fix.

use std::time::{Duration, Instant};

use libshv::login::{Credentials, LoginParams};
use libshv::message::code;
use libshv::{RpcMessage, RpcValue};
use tests::*;

/// Users admin (su), viewer (read everywhere), plc (may mount under prod/**), and one
/// autosetup rule: deviceId `plc1` is for the plc role, at prod/plc1.
const PLC_CONFIG: &str = "name: testbroker
users:
  admin: {password: admin, roles: [admin]}
  plc: {password: plc, roles: [plc]}
  viewer: {password: viewer, roles: [viewer]}
  ops: {password: ops, roles: [ops]}
roles:
  admin: {access: [{ri: '**:*', grant: su}], mount_points: ['**']}
  plc: {access: [{ri: '**:*', grant: rd}], mount_points: ['prod/**']}
  viewer: {access: [{ri: '**:*', grant: rd}]}
  ops:
    access:
      - {ri: '.broker/**:*', grant: ssrv}
      - {ri: 'prod/**:*', grant: bws}
      - {ri: '**:*', grant: rd}
autosetup:
  - {device_id: plc1, roles: [plc], mount_point: prod/plc1}
";

fn error_code(msg: &RpcMessage) -> i64 {
    expect_error(msg).code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_subscribe_with_huge_ttl_does_not_stop_the_broker() {
    let mut broker = Broker::start(None);
    let (viewer, _) = broker.connect("viewer", "viewer").await;
    for ttl in [RpcValue::from(i64::MAX), RpcValue::from(u64::MAX)] {
        let p = RpcValue::from(vec![RpcValue::from("**:*:*"), ttl]);
        viewer
            .call(".broker/currentClient", "subscribe", Some(p))
            .await
            .expect("subscribe with a huge TTL");
    }
    // Still a working broker for everybody, new logins included.
    let (admin, _) = broker.connect("admin", "admin").await;
    assert_served(&admin).await;
    assert_served(&viewer).await;
    broker.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_id_mount_needs_a_role_the_autosetup_rule_names() {
    let broker = Broker::start(Some(PLC_CONFIG));
    // The viewer claims the PLC's deviceId: it is logged in, but mounted nowhere.
    let mut fake = broker.raw().await;
    let p = LoginParams {
        user: "viewer".into(),
        credentials: Credentials::Plain("viewer".into()),
        device_id: Some("plc1".into()),
        ..Default::default()
    };
    fake.login_params(&p).await.expect("viewer login");
    let (admin, _) = broker.connect("admin", "admin").await;
    let r = admin.call("prod/plc1", "ls", None).await;
    assert!(r.is_err(), "the viewer got mounted at prod/plc1: {r:?}");
    // The real device gets the mount point, and the admins' requests go to it.
    let _plc = broker
        .mount_device_id("plc", "plc", "plc1", TestDevice::with_number(7))
        .await;
    let v = admin.call("prod/plc1/number", "get", None).await.unwrap();
    assert_eq!(v.as_int(), 7);
    // Nothing ever reached the impostor.
    match fake.recv_within(Duration::from_millis(300)).await {
        RawEvent::Timeout => {}
        other => panic!("the impostor received {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_slash_and_dot_segments_cannot_skip_access_rules() {
    let broker = Broker::start(Some(PLC_CONFIG));
    let _plc = broker
        .mount_device("plc", "plc", "prod/dev", TestDevice::with_number(1))
        .await;
    let (ops, _) = broker.connect("ops", "ops").await;
    // `prod/**` is Browse only for ops: no set, whatever the path's spelling.
    for path in [
        "prod/dev/number",
        "prod/dev/number/",
        "prod//dev/number",
        "prod/./dev/number",
        "prod/x/../dev/number",
        "/prod/dev/number",
    ] {
        let r = ops.call(path, "set", Some(RpcValue::from(99))).await;
        assert!(r.is_err(), "{path}:set was let through: {r:?}");
    }
    let (admin, _) = broker.connect("admin", "admin").await;
    let v = admin.call("prod/dev/number", "get", None).await.unwrap();
    assert_eq!(v.as_int(), 1, "a set got through");
    // Non-canonical paths are refused as such, also for an administrator.
    let e = admin
        .call("prod/dev/number/", "get", None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid path"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_point_with_dot_segments_is_refused() {
    let broker = Broker::start(None);
    for mp in ["test/..", "test/.", "test/../x", "test//x"] {
        let mut d = broker.raw().await;
        let p = LoginParams {
            user: "device".into(),
            credentials: Credentials::Plain("device".into()),
            mount_point: Some(mp.into()),
            ..Default::default()
        };
        assert!(d.login_params(&p).await.is_err(), "mounted at {mp}");
    }
    let (admin, _) = broker.connect("admin", "admin").await;
    let mounts = admin.call(".broker", "mounts", None).await.unwrap();
    assert!(string_list(&mounts).is_empty(), "{}", mounts.to_cpon());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_client_path_uses_the_device_grant() {
    let broker = Broker::start(Some(PLC_CONFIG));
    let dev = broker
        .mount_device("plc", "plc", "prod/dev", TestDevice::with_number(1))
        .await;
    let id = dev
        .client
        .call(".broker/currentClient", "info", None)
        .await
        .unwrap()
        .get("clientId")
        .unwrap()
        .as_int();
    let (ops, _) = broker.connect("ops", "ops").await;
    // ops has ssrv on .broker/** but only Browse on prod/**: reaching the device by
    // its client id must not lift that.
    let path = format!(".broker/client/{id}/number");
    let r = ops.call(&path, "set", Some(RpcValue::from(99))).await;
    assert!(r.is_err(), "{path}:set was let through");
    let (admin, _) = broker.connect("admin", "admin").await;
    let v = admin.call("prod/dev/number", "get", None).await.unwrap();
    assert_eq!(v.as_int(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_broker_client_at_read_access_lists_no_connections() {
    let broker = Broker::start(None);
    let (viewer, _) = broker.connect("viewer", "viewer").await;
    let (admin, _) = broker.connect("admin", "admin").await;
    let seen = viewer.call(".broker/client", "ls", None).await.unwrap();
    assert!(string_list(&seen).is_empty(), "{}", seen.to_cpon());
    let all = admin.call(".broker/client", "ls", None).await.unwrap();
    assert!(string_list(&all).len() >= 2, "{}", all.to_cpon());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_signal_with_access_level_zero_needs_a_grant() {
    let yaml = "users:
  admin: {password: admin, roles: [admin]}
  device: {password: device, roles: [device]}
  nobody: {password: nobody, roles: [nobody]}
roles:
  admin: {access: [{ri: '**:*', grant: su}], mount_points: ['**']}
  device: {access: [{ri: '**:*', grant: rd}], mount_points: ['test/**']}
  nobody: {access: [{ri: '.broker/**:*', grant: bws}, {ri: 'other/**:*', grant: rd}]}
";
    let broker = Broker::start(Some(yaml));
    let (nobody, mut nobody_signals) = broker.connect("nobody", "nobody").await;
    let (admin, mut admin_signals) = broker.connect("admin", "admin").await;
    for c in [&nobody, &admin] {
        c.call(
            ".broker/currentClient",
            "subscribe",
            Some(RpcValue::from("**:*:*")),
        )
        .await
        .expect("subscribe");
    }
    let mut dev = RawConn::device(broker.port, "device", "device", "test/dev").await;
    let mut sig = RpcMessage::new_signal("x", "chng", "get", Some(RpcValue::from(1)));
    sig.meta.insert(17, RpcValue::from(0));
    dev.send(&sig).await.unwrap();
    // The admin gets it (so it was delivered), the user without a grant does not.
    loop {
        let got = next_signal(&mut admin_signals).await;
        if signal_parts(&got).0 == "test/dev/x" {
            break;
        }
    }
    // A round trip: anything queued for `nobody` before it has arrived by now.
    nobody
        .call(".broker/currentClient", "subscriptions", None)
        .await
        .expect("nobody is served");
    while let Ok(m) = nobody_signals.try_recv() {
        assert_ne!(
            signal_parts(&m).0,
            "test/dev/x",
            "a signal reached a subscriber with no grant on its path"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_methods_refuse_large_parameters() {
    let broker = Broker::start(None);
    let mut viewer = broker.raw().await;
    viewer.login("viewer", "viewer", true).await.unwrap();
    let big = RpcValue::from("x".repeat(1 << 20));
    let r = viewer
        .call(".broker/currentClient", "subscribe", Some(big))
        .await;
    assert_eq!(error_code(&r), code::INVALID_PARAM);
    // RI length and count are capped too.
    let long = RpcValue::from(format!("{}:*:*", "a/".repeat(600)));
    let r = viewer
        .call(".broker/currentClient", "subscribe", Some(long))
        .await;
    assert_eq!(error_code(&r), code::INVALID_PARAM);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_client_are_capped() {
    let broker = Broker::start(Some(&config_yaml(&[], "limits: {max_subscriptions: 10}\n")));
    let mut viewer = broker.raw().await;
    viewer.login("viewer", "viewer", true).await.unwrap();
    for i in 0..10 {
        let r = viewer
            .call(
                ".broker/currentClient",
                "subscribe",
                Some(RpcValue::from(format!("a{i}/**:*:*"))),
            )
            .await;
        assert!(r.result().is_ok());
    }
    let r = viewer
        .call(
            ".broker/currentClient",
            "subscribe",
            Some(RpcValue::from("b/**:*:*")),
        )
        .await;
    assert!(r.result().is_err(), "an 11th subscription was accepted");
}

/// Every signal is matched against every subscription, so one user's subscriptions are
/// bounded in bytes over all of its connections: opening more connections does not buy
/// a read-only user more matching work per signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_user_are_capped_over_all_connections() {
    // Each RI below is 10 bytes, charged 10 + 64: room for exactly 10 of them.
    let budget = 10 * (10 + 64);
    let limits = format!("limits: {{max_subscription_bytes_per_user: {budget}}}\n");
    let broker = Broker::start(Some(&config_yaml(&[], &limits)));
    let subscribe = |i: usize| Some(RpcValue::from(format!("a{i:02}/**:*:*")));
    let mut first = broker.raw().await;
    first.login("viewer", "viewer", true).await.unwrap();
    let mut second = broker.raw().await;
    second.login("viewer", "viewer", true).await.unwrap();
    for i in 0..6 {
        let r = first
            .call(".broker/currentClient", "subscribe", subscribe(i))
            .await;
        assert!(r.result().is_ok(), "{r:?}");
    }
    for i in 6..10 {
        let r = second
            .call(".broker/currentClient", "subscribe", subscribe(i))
            .await;
        assert!(r.result().is_ok(), "{r:?}");
    }
    let r = second
        .call(".broker/currentClient", "subscribe", subscribe(10))
        .await;
    let e = expect_error(&r);
    assert!(e.message.contains("user's subscriptions"), "{e:?}");
    // Another user has a budget of its own.
    let mut admin = broker.raw().await;
    admin.login("admin", "admin", true).await.unwrap();
    let r = admin
        .call(".broker/currentClient", "subscribe", subscribe(10))
        .await;
    assert!(r.result().is_ok(), "{r:?}");
    // Unsubscribing gives room back, and so does a connection that goes away.
    let r = second
        .call(".broker/currentClient", "unsubscribe", subscribe(9))
        .await;
    assert_eq!(r.result().unwrap(), RpcValue::from(true));
    let r = second
        .call(".broker/currentClient", "subscribe", subscribe(10))
        .await;
    assert!(r.result().is_ok(), "{r:?}");
    drop(first);
    // (Each try is a new connection of the same user: the bytes are the user's.)
    wait_for("the closed connection's bytes", || async {
        let mut c = broker.raw().await;
        c.login("viewer", "viewer", true).await.ok()?;
        let r = c
            .call(".broker/currentClient", "subscribe", subscribe(11))
            .await;
        r.result().ok()
    })
    .await;
}

/// One login cannot take every connection the broker has room for: a read-only user's
/// sessions are bounded (`max_sessions_per_user`), other users still log in, and a
/// closed session gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_user_are_capped() {
    let limits = "limits: {max_sessions_per_user: 3}\n";
    let broker = Broker::start(Some(&config_yaml(&[], limits)));
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let mut c = broker.raw().await;
        c.login("viewer", "viewer", true)
            .await
            .expect("login within the limit");
        sessions.push(c);
    }
    let mut fourth = broker.raw().await;
    let e = fourth.login("viewer", "viewer", true).await.unwrap_err();
    assert!(e.message.contains("3 sessions already"), "{e:?}");
    broker.wait_log("login refused: the user has 3 sessions already");
    let mut admin = broker.raw().await;
    admin
        .login("admin", "admin", true)
        .await
        .expect("another user logs in");
    drop(sessions.pop());
    wait_for("the closed session's place", || async {
        let mut c = broker.raw().await;
        c.login("viewer", "viewer", true).await.ok()
    })
    .await;
}

/// Some(()) when a new connection gets an answer to `hello` (None: it was closed).
async fn answered(broker: &Broker) -> Option<()> {
    let mut c = broker.raw().await;
    c.send(&RpcMessage::new_request(1, "", "hello", None))
        .await
        .ok()?;
    match c.recv_within(Duration::from_secs(5)).await {
        RawEvent::Frame(_) => Some(()),
        _ => None,
    }
}

/// After a ResetSession a connection is not logged in again, and counted as such: a
/// user cannot step outside the bound on connections not logged in (or, for as long
/// as `login_timeout`, outside its session limit) by resetting logged-in connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_session_counts_as_not_logged_in_again() {
    let limits = "limits: {max_unauthenticated_per_address: 2}\n";
    let broker = Broker::start(Some(&config_yaml(&[], limits)));
    let mut first = broker.raw().await;
    first.login("viewer", "viewer", true).await.unwrap();
    let mut second = broker.raw().await;
    second.login("viewer", "viewer", true).await.unwrap();
    for c in [&mut first, &mut second] {
        c.send_bytes(&libshv::codec::encode_reset_session())
            .await
            .unwrap();
        let r = c.call(".app", "ping", None).await;
        assert_eq!(
            expect_error(&r).code,
            code::LOGIN_REQUIRED,
            "after ResetSession"
        );
    }
    // Both are waiting for a login again: the address has no room for a third, which
    // evicts the oldest of them.
    let mut third = broker.raw().await;
    assert!(first.expect_closed().await.is_empty(), "evicted");
    // The second, logging in again, gives its place back: a new connection beside
    // the third evicts nobody.
    second
        .login("viewer", "viewer", true)
        .await
        .expect("login after reset");
    assert!(answered(&broker).await.is_some());
    third
        .send(&RpcMessage::new_request(1, "", "hello", None))
        .await
        .unwrap();
    assert!(
        matches!(
            third.recv_within(Duration::from_secs(5)).await,
            RawEvent::Frame(_)
        ),
        "the third was evicted though there was room"
    );
}

/// Connections in all are bounded (`max_connections`), logged in or not: one more is
/// closed at once, with one log line per burst, and a closed one makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_all_are_capped() {
    let broker = Broker::start(Some(&config_yaml(&[], "limits: {max_connections: 4}\n")));
    let mut open = Vec::new();
    let mut admin = broker.raw().await;
    admin.login("admin", "admin", true).await.unwrap();
    for _ in 0..3 {
        open.push(broker.raw().await);
    }
    // Make sure the broker has accepted all four before the fifth comes.
    let r = admin.call(".app", "ping", None).await;
    assert!(r.result().is_ok());
    for _ in 0..20 {
        let mut extra = broker.raw().await;
        assert!(extra.expect_closed().await.is_empty());
    }
    broker.wait_log("too many connections (limits.max_connections)");
    let lines = broker.stderr().matches("limits.max_connections").count();
    assert_eq!(lines, 1, "one log line per burst, not one per connection");
    // The connections already in are served.
    let r = admin.call(".app", "ping", None).await;
    assert!(r.result().is_ok());
    drop(open.pop());
    // The place comes back once the broker has seen the close; until then a new
    // connection is closed before it gets an answer.
    wait_for("the closed connection's place", || answered(&broker)).await;
}

/// A caller cannot keep more requests waiting on a silent device than `max_pending`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_requests_are_bounded_per_caller_and_per_user() {
    let limits = "limits: {max_pending: 16, max_pending_per_user: 24}\n";
    let broker = Broker::start(Some(&config_yaml(&[], limits)));
    // A device that reads but never answers.
    let _dev = RawConn::device(broker.port, "device", "device", "test/silent").await;
    // Sends `n` requests to the silent device; returns their ids.
    async fn ask(c: &mut RawConn, n: usize) -> Vec<i64> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let id = c.next_id();
            ids.push(id);
            let rq = RpcMessage::new_request(id, "test/silent", "get", None);
            c.send(&rq).await.unwrap();
        }
        ids
    }
    let mut viewer = broker.raw().await;
    viewer.login("viewer", "viewer", true).await.unwrap();
    let ids = ask(&mut viewer, 20).await;
    // The four over the client's limit are refused at once; the sixteen stay pending.
    for id in &ids[16..] {
        let r = viewer.response(*id).await;
        assert_eq!(error_code(&r), code::TRY_AGAIN_LATER);
    }
    // A second connection of the same user has room for the user's remaining eight.
    let mut again = broker.raw().await;
    again.login("viewer", "viewer", true).await.unwrap();
    let ids = ask(&mut again, 10).await;
    for id in &ids[8..] {
        let e = expect_error(&again.response(*id).await);
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
        assert!(e.message.contains("24 per user"), "{e:?}");
    }
    // Another user is not refused: its request waits for the silent device like the
    // others (nothing comes back).
    let mut admin = broker.raw().await;
    admin.login("admin", "admin", true).await.unwrap();
    ask(&mut admin, 1).await;
    match admin.recv_within(Duration::from_millis(500)).await {
        RawEvent::Timeout => {}
        other => panic!("admin's request was answered by the broker: {other:?}"),
    }
}

/// A broker with a device at test/dev, and a raw connection logged in as viewer.
async fn viewer_and_device() -> (Broker, DeviceHandle, RawConn) {
    let broker = Broker::start(None);
    let dev = broker
        .mount_device("device", "device", "test/dev", TestDevice::new())
        .await;
    let mut viewer = broker.raw().await;
    viewer.login("viewer", "viewer", true).await.unwrap();
    (broker, dev, viewer)
}

/// A `launchRexec` of megabytes is refused by the broker without being taken apart
/// on its task: the audit trail could not show what it would run (security round 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_of_megabytes_is_refused_undecoded() {
    let (mut broker, _dev, mut viewer) = viewer_and_device().await;
    let args = vec!["\"a\""; 400_000].join(",");
    let p = RpcValue::from_cpon(format!(r#"{{"method":"runCmd","params":[{args}]}}"#)).unwrap();
    let r = viewer.call("test/dev", "launchRexec", Some(p)).await;
    assert_eq!(error_code(&r), code::INVALID_PARAM, "{r:?}");
    assert!(format!("{r:?}").contains("bytes are refused"), "{r:?}");
    broker.assert_running();
}

/// Refused `launchRexec` calls with 64 KiB commands are forgotten when answered: 3000
/// of them leave the broker's memory where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_launches_are_not_remembered() {
    let (mut broker, _dev, mut viewer) = viewer_and_device().await;
    let cmd = "x".repeat(64 * 1024);
    let param =
        RpcValue::from_cpon(format!(r#"{{"method":"runCmd","params":"{cmd}"}}"#)).expect("cpon");
    // Warm up (allocator pools, the device's buffers), then measure.
    for _ in 0..200 {
        let r = viewer
            .call("test/dev", "launchRexec", Some(param.clone()))
            .await;
        assert!(r.result().is_err());
    }
    let before = vm_rss_kib(broker.pid());
    for _ in 0..3000 {
        let r = viewer
            .call("test/dev", "launchRexec", Some(param.clone()))
            .await;
        assert!(r.result().is_err());
    }
    let after = vm_rss_kib(broker.pid());
    eprintln!("VmRSS before {before} KiB, after {after} KiB");
    // Remembering them would take 3000 x 64 KiB = 188 MiB.
    assert!(
        after < before + 32 * 1024,
        "VmRSS grew from {before} to {after} KiB"
    );
    broker.assert_running();
}

/// Callers flooding a slow device with requests get "try again later" instead of
/// getting the device cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cannot_get_a_device_disconnected() {
    let broker = Broker::start(Some(&config_yaml(&[], "limits: {client_queue: 64}\n")));
    // Logged in and mounted, then not read while the flood lasts.
    let mut dev = RawConn::device(broker.port, "device", "device", "test/slow").await;
    let mut viewer = broker.raw().await;
    viewer.login("viewer", "viewer", true).await.unwrap();
    // 400 requests of 64 KiB: far more than the socket buffers and the device's
    // queue of 64 hold.
    let param = RpcValue::from(vec![0u8; 64 * 1024]);
    for _ in 0..400 {
        let id = viewer.next_id();
        viewer
            .send(&RpcMessage::new_request(
                id,
                "test/slow",
                "set",
                Some(param.clone()),
            ))
            .await
            .unwrap();
    }
    let mut refused = 0;
    while let RawEvent::Frame(f) = viewer.recv_within(Duration::from_secs(2)).await {
        let m = RpcMessage::from_frame(&f).unwrap();
        if m.result().is_err_and(|e| e.code == code::TRY_AGAIN_LATER) {
            refused += 1;
        }
    }
    assert!(refused > 0, "no request was refused");
    // The device is still there and gets its requests.
    let (admin, _) = broker.connect("admin", "admin").await;
    let mounts = admin.call(".broker", "mounts", None).await.unwrap();
    assert_eq!(string_list(&mounts), vec!["test/slow".to_string()]);
    let mut got = 0;
    while let RawEvent::Frame(f) = dev.recv_within(Duration::from_millis(500)).await {
        if f.is_request() {
            got += 1;
        }
    }
    assert!(got >= 16, "the device got {got} requests");
}

/// A client that floods `hello` and never reads its answers is still cut off at
/// `login_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_flood_without_reading_is_cut_at_login_timeout() {
    let broker = Broker::start(Some(&config_yaml(
        &[],
        "limits: {login_timeout: 2, client_queue: 16}\n",
    )));
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", broker.port))
        .await
        .unwrap();
    let hello =
        libshv::codec::encode_frame(&RpcMessage::new_request(1, "", "hello", None).to_frame());
    let flood = hello.repeat(10_000);
    let start = Instant::now();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Write until the broker closes (a write error) or, at the latest, a long time.
    let writing = async {
        loop {
            if s.write_all(&flood).await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(TIMEOUT, writing).await;
    let waited = start.elapsed();
    assert!(waited < TIMEOUT, "still connected after {waited:?}");
    // Whatever was queued for us, the stream ends.
    let mut buf = vec![0u8; 1 << 16];
    let end = tokio::time::timeout(TIMEOUT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the broker kept the connection open");
}

/// Parallel connections from one address guess no faster than one: failed answers
/// to an address are spaced out one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_connections_do_not_multiply_the_guess_rate() {
    let broker = Broker::start(None);
    let start = Instant::now();
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..8 {
        let port = broker.port;
        guesses.spawn(async move {
            let mut c = RawConn::connect(port).await;
            let r = c.login("admin", &format!("guess{i}"), true).await;
            assert!(r.is_err());
            Instant::now()
        });
    }
    let mut last = start;
    while let Some(t) = guesses.join_next().await {
        last = last.max(t.unwrap());
    }
    // Eight answers at 0.25 s or more each, one after another; in parallel they all
    // came after 0.5 s.
    let took = last - start;
    assert!(
        took >= Duration::from_secs(2),
        "8 guesses answered in {took:?}"
    );
}

/// Peer strings are logged truncated and escaped: a 1 MiB malformed meta value makes
/// no megabyte log line, a user name with a newline forges no log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_data_in_logs_is_truncated_and_escaped() {
    let broker = Broker::start(None);
    let mut c = broker.raw().await;
    let _ = c.login("evil\nINFO forged line", "x", false).await;
    let mut c = broker.raw().await;
    c.login("admin", "admin", true).await.unwrap();
    // A request whose Method (meta tag 10) is a 1 MiB List: wrong-typed meta.
    let mut msg = RpcMessage::new_request(7, ".app", "ping", None);
    msg.meta.insert(
        10,
        RpcValue::from(vec![RpcValue::from("A".repeat(1 << 20))]),
    );
    c.send_bytes(&libshv::codec::encode_frame(&msg.to_frame()))
        .await
        .unwrap();
    assert!(c.call(".app", "ping", None).await.result().is_ok());
    let log = broker.stderr();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
    assert!(
        !log.lines().any(|l| l.starts_with("INFO forged")),
        "a forged log line:\n{log}"
    );
    assert!(log.contains("evil\\nINFO forged"), "{log}");
}

/// A FindTunnelRequest is only the answer to a pending `launchRexec`: a device that
/// answers an ordinary request with one gets no tunnel (and no secret).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_tunnel_request_answers_only_a_launch() {
    let broker = Broker::start(None);
    let mut dev = RawConn::device(broker.port, "device", "device", "test/liar").await;
    let (admin, _) = broker.connect("admin", "admin").await;
    let call = tokio::spawn({
        let admin = admin.clone();
        async move { admin.call("test/liar", "get", None).await }
    });
    let req = loop {
        match dev.recv().await {
            // (The broker's own `ls .broker` to a new mount comes first.)
            RawEvent::Frame(f) if f.is_request() && f.method() == Some("get") => break f,
            RawEvent::Frame(_) => continue,
            other => panic!("no request reached the device: {other:?}"),
        }
    };
    let find = libshv::tunnel::find_tunnel_request(&req.meta, None);
    dev.send_bytes(&libshv::codec::encode_frame(&find))
        .await
        .unwrap();
    match dev.recv_within(Duration::from_millis(500)).await {
        RawEvent::Timeout => {}
        RawEvent::Frame(f) => assert!(
            f.tunnel_ctl().is_none(),
            "the device got a tunnel answer: {}",
            f.meta
        ),
        other => panic!("{other:?}"),
    }
    let tunnels = admin.call(".broker/tunnels", "list", None).await.unwrap();
    assert_eq!(tunnels.to_cpon(), "[]");
    // The real answer still goes through.
    let resp = RpcMessage::response_to(&req.meta).with_result(RpcValue::from(5));
    dev.send(&resp).await.unwrap();
    let v = tokio::time::timeout(TIMEOUT, call).await.unwrap().unwrap();
    assert_eq!(v.unwrap().as_int(), 5);
}

#[tokio::test]
async fn url_errors_do_not_print_the_password() {
    let out = shvcall(
        "tcp://admin@127.0.0.1:1?password=hunter2&bogus=1",
        "",
        "ls",
        None,
    )
    .await;
    assert_ne!(out.code, 0);
    assert!(!out.stderr.contains("hunter2"), "{out:?}");
}

#[tokio::test]
async fn default_unix_socket_only_in_a_private_directory() {
    // A world-readable XDG_RUNTIME_DIR: no default socket at all (it could be bound
    // first by another local user).
    let shared = TempDir::new("xdg-shared");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_bin_env(
        "shvbroker",
        &["--print-config"],
        &[("XDG_RUNTIME_DIR", shared.path().to_str().unwrap())],
    )
    .await;
    // (Comment lines hold examples of every URL, `unix:` among them.)
    let config: String = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!config.contains("unix:"), "{}", out.stdout);
    assert!(!config.contains("/tmp/shvbroker.sock"), "{}", out.stdout);
    // A private one: the default socket is there.
    let private = TempDir::new("xdg-private");
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = run_bin_env(
        "shvbroker",
        &["--print-config"],
        &[("XDG_RUNTIME_DIR", private.path().to_str().unwrap())],
    )
    .await;
    let sock = private.path().join("shvbroker.sock");
    assert!(
        out.stdout.contains(&format!("unix:{}", sock.display())),
        "{}",
        out.stdout
    );
    // Every unix socket the broker creates is for its owner only. (Bound before the
    // TCP listener, whose log line the harness waits for.)
    let listen = format!("unix:{}", sock.display());
    let broker = Broker::start_with_args(
        None,
        &["--listen", &listen, "--listen", "tcp://127.0.0.1:0"],
    );
    let mode = std::fs::metadata(&sock).map(|m| m.permissions().mode() & 0o777);
    drop(broker);
    assert_eq!(mode.ok(), Some(0o600));
}

/// A meta that is small on the wire but huge once decoded (a 1 MiB CallerIds list of
/// one-byte ints, before login) is refused before it is decoded: the broker's memory
/// does not grow by the hundreds of megabytes it would take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_bombs_are_refused_before_decoding() {
    let mut broker = Broker::start(None);
    let before = vm_rss_kib(broker.pid());
    let mut conns = Vec::new();
    for _ in 0..8 {
        let mut c = broker.raw().await;
        // <1:1, 8:1, 9:"", 10:"hello", 11:[0, 0, … 1 MiB of them]>i{}
        let mut meta = vec![0x8b, 0x41, 0x41, 0x48, 0x41, 0x49, 0x86, 0x00];
        meta.extend([0x4a, 0x86, 0x05]);
        meta.extend(b"hello");
        meta.extend([0x4b, 0x88]);
        meta.extend(std::iter::repeat_n(0x40u8, 1 << 20));
        meta.extend([0xff, 0xff, 0x8a, 0xff]);
        c.send_bytes(&frame_bytes(1, &meta)).await.unwrap();
        conns.push(c);
    }
    let (admin, _) = broker.connect("admin", "admin").await;
    assert_served(&admin).await;
    let after = vm_rss_kib(broker.pid());
    eprintln!("VmRSS before {before} KiB, after {after} KiB");
    assert!(
        after < before + 64 * 1024,
        "VmRSS grew from {before} to {after} KiB"
    );
    broker.assert_running();
}
