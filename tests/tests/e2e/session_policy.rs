//! Session policy per role (`roles.*.tunnel_idle_timeout`, `tunnel_max_duration`): an
//! idle shell is ended with a notice first and a failing exit status, a forward with a
//! quiet connection open is not idle (and is ended once it has none), a busy shell is
//! ended at its maximum duration; the audit log has the reason.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::shell_rig::{spawn_rsh, Agent};
use tests::{bin, free_port, Broker, TempDir, TIMEOUT};

/// Users `idler` (sessions end after 2 s without traffic) and `brief` (sessions last
/// 3 s at most; its other role without limits does not lift that), the agent's
/// `device`, and the audit log in `dir`.
fn config(dir: &TempDir) -> String {
    format!(
        r#"name: policy
users:
  admin: {{password: admin, roles: [admin]}}
  device: {{password: device, roles: [device]}}
  idler: {{password: idler, roles: [ops_idle]}}
  brief: {{password: brief, roles: [ops_brief, ops]}}
roles:
  admin: {{access: [{{ri: "**:*", grant: su}}], mount_points: ["**"]}}
  device: {{access: [{{ri: "**:*", grant: rd}}], mount_points: ["test/**"]}}
  ops: {{access: [{{ri: "**:*", grant: su}}]}}
  ops_idle: {{access: [{{ri: "**:*", grant: su}}], tunnel_idle_timeout: 2}}
  ops_brief: {{access: [{{ri: "**:*", grant: su}}], tunnel_max_duration: 3}}
tunnel:
  audit_log: "{}"
"#,
        dir.path().join("audit.jsonl").display()
    )
}

async fn finish(rsh: tokio::process::Child) -> (std::process::ExitStatus, String, Duration) {
    let t = Instant::now();
    let out = tokio::time::timeout(TIMEOUT, rsh.wait_with_output())
        .await
        .expect("shvrsh did not end")
        .expect("shvrsh");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t.elapsed(),
    )
}

fn audit(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap_or_default()
}

/// Waits until the audit log has a line containing `what`.
async fn wait_audit(dir: &TempDir, what: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let a = audit(dir);
        if a.contains(what) {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "no audit line with {what:?}:\n{a}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_shell_is_warned_then_ended() {
    let dir = TempDir::new("policy");
    let broker = Broker::start(Some(&config(&dir)));
    let _agent = Agent::start(&broker, "test/agent").await;
    // Output first (activity), then nothing.
    let rsh = spawn_rsh(
        &broker.url("idler", "idler"),
        "test/agent",
        &["sh", "-c", "echo started; sleep 60"],
    );
    let (status, err, took) = finish(rsh).await;
    assert!(!status.success(), "an idle shell ended as a success: {err}");
    assert!(took < Duration::from_secs(30), "ended only after {took:?}");
    assert!(
        err.contains("idle for") && err.contains("ends in"),
        "no warning before the cut: {err}"
    );
    assert!(
        err.contains("session ended: idle for 2 s (tunnel_idle_timeout)"),
        "{err}"
    );
    let a = wait_audit(&dir, "\"event\":\"close\"").await;
    assert!(a.contains("tunnel_idle_timeout"), "{a}");
    assert!(a.contains("\"user\":\"idler\""), "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_shell_ends_at_its_maximum_duration() {
    let dir = TempDir::new("policy");
    let broker = Broker::start(Some(&config(&dir)));
    let _agent = Agent::start(&broker, "test/agent").await;
    let rsh = spawn_rsh(
        &broker.url("brief", "brief"),
        "test/agent",
        &["sh", "-c", "while :; do echo tick; sleep 0.1; done"],
    );
    let (status, err, took) = finish(rsh).await;
    assert!(!status.success(), "{err}");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(20),
        "ended after {took:?}"
    );
    assert!(err.contains("this session ends in"), "no warning: {err}");
    assert!(
        err.contains("maximum duration of 3 s (tunnel_max_duration)"),
        "{err}"
    );
    // The limit of one role holds, though another role of the user has none.
    let a = wait_audit(&dir, "tunnel_max_duration").await;
    assert!(a.contains("\"user\":\"brief\""), "{a}");
}

/// A TCP service on the device's side that accepts one connection, says nothing for
/// `quiet`, then writes `hello` and closes.
async fn quiet_then_hello(quiet: Duration) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        tokio::time::sleep(quiet).await;
        let _ = s.write_all(b"hello").await;
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_with_a_quiet_connection_is_not_idle() {
    let dir = TempDir::new("policy");
    let broker = Broker::start(Some(&config(&dir)));
    let _agent = Agent::start_with_args(
        &broker,
        &broker.url("device", "device"),
        "test/agent",
        &["--allow-forward"],
    )
    .await;
    let target = quiet_then_hello(Duration::from_secs(5)).await;
    let lport = free_port();
    let mut rsh = tokio::process::Command::new(bin("shvrsh"))
        .arg(broker.url("idler", "idler"))
        .arg("test/agent")
        .args(["-N", "-L", &format!("{lport}:127.0.0.1:{target}")])
        .env_remove("SHV_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shvrsh");
    let deadline = Instant::now() + TIMEOUT;
    let mut conn = loop {
        if let Ok(c) = tokio::net::TcpStream::connect(("127.0.0.1", lport)).await {
            break c;
        }
        assert!(Instant::now() < deadline, "the forward never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // 5 s of silence on an open connection: more than twice the idle timeout.
    let mut got = Vec::new();
    tokio::time::timeout(TIMEOUT, conn.read_to_end(&mut got))
        .await
        .expect("the connection hung")
        .expect("read through the forward");
    assert_eq!(
        got, b"hello",
        "the forward was cut while its connection was open"
    );
    // With no connection left, the forward is idle and ends.
    drop(conn);
    let t = Instant::now();
    let status = tokio::time::timeout(TIMEOUT, rsh.wait())
        .await
        .expect("an idle forward was never ended")
        .unwrap();
    assert!(!status.success());
    assert!(t.elapsed() < Duration::from_secs(15));
    let mut err = String::new();
    rsh.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert!(err.contains("tunnel_idle_timeout"), "{err}");
}
