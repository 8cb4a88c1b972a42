//! Chaos: processes die with SIGKILL mid-session. A remote shell must end with a clear
//! error (not hang), and an agent must come back when its broker does.

use std::process::Stdio;

use tests::*;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

fn sigkill(pid: u32) {
    // SAFETY: kill(2) on a pid this test spawned (and has not reaped).
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(r, 0, "kill -9 {pid}");
}

fn spawn(name: &str, args: &[&str]) -> Child {
    Command::new(bin(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"))
}

/// Waits (generously) for a child and returns its exit code and stderr.
async fn finish(mut child: Child, what: &str) -> (Option<i32>, String) {
    let mut err = child.stderr.take().unwrap();
    let status = tokio::time::timeout(TIMEOUT * 2, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} did not exit within {:?}", TIMEOUT * 2))
        .expect("wait");
    let mut s = String::new();
    let _ = err.read_to_string(&mut s).await;
    (status.code(), s)
}

/// Starts `shvrsh … -- sh -c 'sleep 30'` and waits until the remote command runs.
async fn start_session(client: &libshv::Client, url: &str) -> Child {
    let rsh = spawn("shvrsh", &[url, "test/agent", "--", "sh", "-c", "sleep 30"]);
    // The session is open once the broker lists a tunnel.
    wait_for("an open tunnel", || async {
        let v = client.call(".broker/tunnels", "list", None).await.ok()?;
        match &v.value {
            libshv::shvproto::Value::List(l) if !l.is_empty() => Some(()),
            _ => None,
        }
    })
    .await;
    rsh
}

/// kill -9 of the broker: shvrsh exits 255 with a message; the agent reconnects (with
/// back-off) to a broker started again on the same port and is mounted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_rsh_fails_and_agent_comes_back() {
    let port = free_port();
    let listen = format!("tcp://127.0.0.1:{port}");
    let args = ["--listen", listen.as_str()];
    let broker = Broker::start_with_args(None, &args);
    let (admin, _) = broker.connect("admin", "admin").await;
    let agent = spawn(
        "shvagent",
        &[&broker.url("device", "device"), "--mount", "test/agent"],
    );
    wait_for_child(&admin, "test", "agent").await;
    let rsh = start_session(&admin, &broker.url("admin", "admin")).await;

    sigkill(broker.pid());
    let (code, stderr) = finish(rsh, "shvrsh after the broker died").await;
    assert_eq!(code, Some(255), "shvrsh exit code; stderr: {stderr}");
    assert!(!stderr.trim().is_empty(), "shvrsh said nothing");
    eprintln!("shvrsh: {}", stderr.trim());
    drop(admin);
    drop(broker);

    // A new broker on the same port: the agent finds it again on its own.
    let broker = Broker::start_with_args(None, &args);
    let (admin, _) = broker.connect("admin", "admin").await;
    wait_for_child(&admin, "test", "agent").await;
    drop(agent);
}

/// kill -9 of the agent during a session: the shell still ends, non-zero, with a
/// message, instead of hanging on a tunnel nobody will close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_during_session_ends_the_shell() {
    let mut broker = Broker::start(None);
    let (admin, _) = broker.connect("admin", "admin").await;
    let agent = spawn(
        "shvagent",
        &[&broker.url("device", "device"), "--mount", "test/agent"],
    );
    wait_for_child(&admin, "test", "agent").await;
    let rsh = start_session(&admin, &broker.url("admin", "admin")).await;
    let started = std::time::Instant::now();

    sigkill(agent.id().expect("agent pid"));
    let (code, stderr) = finish(rsh, "shvrsh after the agent died").await;
    eprintln!(
        "shvrsh exit {code:?} after {:?}: {}",
        started.elapsed(),
        stderr.trim()
    );
    assert_ne!(code, Some(0), "shvrsh exit code; stderr: {stderr}");
    assert!(code.is_some(), "shvrsh killed by a signal");
    assert!(!stderr.trim().is_empty(), "shvrsh said nothing");
    // The session ends because its agent died (shvrexec gets SIGHUP through
    // PR_SET_PDEATHSIG), long before the remote `sleep 30` would have ended it.
    assert!(
        stderr.contains("agent"),
        "the reason should name the agent: {stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the shell outlived its agent: {:?}",
        started.elapsed()
    );
    broker.assert_running();
    assert_served(&admin).await;
    drop(agent);
}
