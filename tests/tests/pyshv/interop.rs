//! Interop with Python pyshv 0.13.0 (the venv at `<repo>/.venv`): pyshv as a client, as
//! a device, and as a subscriber of signals emitted by our libshv device.
//! These tests never skip: without the venv they fail with a hint.

use libshv::login::sha1_hex;
use libshv::RpcValue;
use tests::*;

/// Lines of the script up to `DONE`, as (key, rest).
async fn collect(py: &mut PyProc) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        let l = py.line().await;
        if l == "DONE" {
            return out;
        }
        let (k, v) = l.split_once(' ').unwrap_or((l.as_str(), ""));
        out.push((k.to_string(), v.to_string()));
    }
}

fn value<'a>(lines: &'a [(String, String)], key: &str) -> &'a str {
    lines
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no '{key}' in the script output: {lines:?}"))
}

async fn pyshv_client_session(url: String, broker: &Broker) {
    let mut py = PyProc::spawn("py_client.py", &[&url]);
    let lines = collect(&mut py).await;
    assert_eq!(
        py.wait().await,
        0,
        "stderr:\n{}\nbroker:\n{}",
        py.stderr(),
        broker.stderr()
    );
    assert!(lines.iter().any(|(k, _)| k == "LOGGED_IN"), "{lines:?}");
    assert!(
        value(&lines, "peer_shv_version").starts_with("[3, "),
        "{lines:?}"
    );
    assert_eq!(value(&lines, "ls_root"), r#"[".app", ".broker", "test"]"#);
    let ls_broker = value(&lines, "ls_broker");
    assert!(
        ls_broker.contains(r#""currentClient""#) && ls_broker.contains(r#""client""#),
        "{ls_broker}"
    );
    assert!(!ls_broker.contains(r#""clients""#), "{ls_broker}");
    assert_eq!(value(&lines, "ls_has_broker"), "true");
    let dir_app = value(&lines, "dir_app");
    for m in [
        "dir",
        "ls",
        "name",
        "ping",
        "shvVersionMajor",
        "shvVersionMinor",
        "version",
    ] {
        assert!(dir_app.contains(&format!("\"{m}\"")), "{dir_app} lacks {m}");
    }
    assert_eq!(value(&lines, "dir_app_has_ping"), "true");
    assert_eq!(value(&lines, "shvVersionMajor"), "3");
    assert!(lines.iter().any(|(k, _)| k == "ping_ok"));
    assert_eq!(value(&lines, "info_userName"), r#""admin""#);
    assert_eq!(value(&lines, "number_get"), "42");
    assert_eq!(value(&lines, "echo"), r#"{"a": [1, 2, "x"], "b": null}"#);
    assert_eq!(value(&lines, "number_set"), "true");
    assert_eq!(value(&lines, "number_get2"), "5");
    assert_eq!(value(&lines, "dev_ls"), r#"[".app", "number"]"#);
    assert_eq!(value(&lines, "error"), r#"["RpcMethodNotFoundError", 2]"#);
}

#[tokio::test]
async fn pyshv_client_sha1_login_lists_and_calls() {
    let broker = Broker::start(None);
    let _dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let url = format!(
        "tcp://admin@127.0.0.1:{}?shapass={}",
        broker.port,
        sha1_hex(b"admin")
    );
    pyshv_client_session(url, &broker).await;
}

#[tokio::test]
async fn pyshv_client_password_url_login() {
    // pyshv turns a plain password into a SHA1 login on plain TCP.
    let broker = Broker::start(None);
    let _dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    pyshv_client_session(broker.url("admin", "admin"), &broker).await;
}

#[tokio::test]
async fn pyshv_client_bad_password_fails() {
    let broker = Broker::start(None);
    let mut py = PyProc::spawn("py_client.py", &[&broker.url("admin", "wrong")]);
    let code = py.wait().await;
    assert_ne!(code, 0, "pyshv logged in with a wrong password");
    assert!(py.seen.is_empty(), "{:?}", py.seen);
    let (c, _) = broker.connect("admin", "admin").await;
    assert_served(&c).await;
}

#[tokio::test]
async fn pyshv_device_called_by_shvcall() {
    let broker = Broker::start(None);
    let url = format!("{}&devmount=test/pydev", broker.url("device", "device"));
    let mut py = PyProc::spawn("py_device.py", &[&url]);
    py.expect_line("READY").await;
    let admin = broker.url("admin", "admin");

    let out = shvcall(&admin, "test", "ls", None).await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, r#"["pydev"]"#),
        "{out:?}"
    );
    let out = shvcall(&admin, "test/pydev", "ls", None).await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, r#"[".app",".device","counter"]"#),
        "{out:?}"
    );
    let out = shvcall(&admin, "test/pydev/counter", "get", None).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "123"), "{out:?}");
    let out = shvcall(&admin, "test/pydev/.app", "name", None).await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, r#""pyshv-test-device""#),
        "{out:?}"
    );
    let out = shvcall(&admin, "test/pydev/.device", "name", None).await;
    assert_eq!((out.code, out.stdout.trim()), (0, r#""pydev""#), "{out:?}");
    let out = shvcall(&admin, "test/pydev", "echo", Some(r#"{"a":[1,2],"b":"x"}"#)).await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, r#"{"a":[1,2],"b":"x"}"#),
        "{out:?}"
    );
    let out = shvcall(&admin, "test/pydev/counter", "set", Some("7")).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "null"), "{out:?}");
    let out = shvcall(&admin, "test/pydev/counter", "get", None).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "7"), "{out:?}");

    // pyshv reads the AccessLevel the broker granted (viewer: rd, so no set).
    let out = shvcall(
        &broker.url("viewer", "viewer"),
        "test/pydev",
        "accessLevel",
        None,
    )
    .await;
    assert_eq!((out.code, out.stdout.trim()), (0, "8"), "{out:?}");
    let out = shvcall(&admin, "test/pydev", "accessLevel", None).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "63"), "{out:?}");
    let out = shvcall(
        &broker.url("viewer", "viewer"),
        "test/pydev/counter",
        "set",
        Some("1"),
    )
    .await;
    assert_eq!(out.code, 1, "viewer must not set: {out:?}");
    let out = shvcall(&admin, "test/pydev/counter", "get", None).await;
    assert_eq!(out.stdout.trim(), "7", "{out:?}");

    let out = shvcall(&admin, "test/pydev/nosuch", "get", None).await;
    assert_eq!(out.code, 1, "{out:?}");
    drop(py);
}

#[tokio::test]
async fn pyshv_device_by_device_id() {
    let broker = Broker::start(Some(&config_yaml(&[("py-1", "test/pyid")], "")));
    let url = format!("{}&devid=py-1", broker.url("device", "device"));
    let mut py = PyProc::spawn("py_device.py", &[&url]);
    py.expect_line("READY").await;
    let out = shvcall(
        &broker.url("viewer", "viewer"),
        "test/pyid/counter",
        "get",
        None,
    )
    .await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, "123"),
        "{out:?}\nbroker:\n{}",
        broker.stderr()
    );
}

#[tokio::test]
async fn pyshv_device_unmount_emits_lsmod() {
    let broker = Broker::start(None);
    let _keep = broker
        .mount_device("device", "device", "test/keep", TestDevice::new())
        .await;
    let (c, mut sigs) = broker.connect("admin", "admin").await;
    assert!(c.subscribe("test:*:lsmod", None).await.unwrap());
    let url = format!("{}&devmount=test/pydev", broker.url("device", "device"));
    let mut py = PyProc::spawn("py_device.py", &[&url]);
    py.expect_line("READY").await;
    let s = next_signal(&mut sigs).await;
    assert_eq!(signal_parts(&s).3.to_cpon(), r#"{"pydev":true}"#);
    drop(py); // kill_on_drop: the connection breaks
    let s = next_signal(&mut sigs).await;
    assert_eq!(signal_parts(&s).3.to_cpon(), r#"{"pydev":false}"#);
}

#[tokio::test]
async fn pyshv_subscriber_gets_signal_from_our_device() {
    let broker = Broker::start(None);
    let dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let mut py = PyProc::spawn(
        "py_subscriber.py",
        &[&broker.url("viewer", "viewer"), "test/dev1/**:*:chng", "2"],
    );
    py.expect_line("SUBSCRIBED").await;
    // Not matching the RI: must not reach the script (it would be printed first).
    dev.client
        .emit("number", "other", "get", Some(RpcValue::from(1)))
        .await
        .unwrap();
    dev.client
        .emit("number", "chng", "get", Some(RpcValue::from(7)))
        .await
        .unwrap();
    let (admin, _) = broker.connect("admin", "admin").await;
    admin
        .call("test/dev1/number", "set", Some(RpcValue::from(9)))
        .await
        .unwrap();
    assert_eq!(
        py.line().await,
        r#"SIGNAL ["test/dev1/number", "chng", "get", 7]"#
    );
    assert_eq!(
        py.line().await,
        r#"SIGNAL ["test/dev1/number", "chng", "get", 9]"#
    );
    assert_eq!(py.line().await, "DONE");
    assert_eq!(py.wait().await, 0, "{}", py.stderr());
}

#[tokio::test]
async fn pyshv_slow_call_runs_once_on_our_device() {
    // pyshv re-sends a request with Abort=false ("still running?") every second without
    // a response; that query must not start the method a second time.
    let broker = Broker::start(None);
    let dev = TestDevice::new();
    let _d = broker
        .mount_device("device", "device", "test/dev1", dev.clone())
        .await;
    let mut py = PyProc::spawn(
        "py_call.py",
        &[&broker.url("admin", "admin"), "test/dev1", "slow"],
    );
    assert_eq!(py.line().await, "RESULT 1", "stderr:\n{}", py.stderr());
    assert_eq!(py.line().await, "DONE");
    assert_eq!(
        dev.slow_calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the abort query (body key 5 = false) was executed as a new call"
    );
}

/// A pySHV `SHVValueClient` of a user whose roles grant only `test/**` subscribes and
/// gets its signals: it must learn that the broker speaks SHV 3 (`.app` is browsable
/// by every logged-in user), else it falls back to SHV 2 calls that fail.
#[tokio::test]
async fn pyshv_value_client_with_only_test_access_gets_signals() {
    let yaml = "users:
  tester: {password: tester, roles: [tester]}
  device: {password: device, roles: [device]}
roles:
  tester: {access: [{ri: 'test/**:*', grant: cmd}]}
  device: {access: [{ri: '**:*', grant: rd}], mount_points: ['test/**']}
";
    let broker = Broker::start(Some(yaml));
    let dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let mut py = PyProc::spawn(
        "py_valueclient.py",
        &[
            &broker.url("tester", "tester"),
            "test/**:*:chng",
            "test/dev1/number",
            "2",
        ],
    );
    py.expect_line("SUBSCRIBED").await;
    for v in [7, 9] {
        dev.client
            .emit("number", "chng", "get", Some(RpcValue::from(v)))
            .await
            .unwrap();
        assert_eq!(py.line().await, format!("VALUE {v}"));
    }
    assert_eq!(py.line().await, "CACHED 9");
    assert_eq!(py.line().await, "DONE");
    assert_eq!(py.wait().await, 0, "{}", py.stderr());
}
