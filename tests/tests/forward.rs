//! Port forwarding over tunnels (`shvrsh -L` / `-R` / `-N`): two concurrent
//! connections of 5 MiB each way through an echo server on the far side, byte-exact;
//! the forward ends with its shvrsh; an agent that does not allow forwarding says so.

mod rsh_common;

use std::time::Duration;

use rand::RngCore;
use rsh_common::Agent;
use sha2::{Digest, Sha256};
use tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB5: usize = 5 << 20;

/// An echo server (stands for a device's web UI or a PLC port): every connection gets
/// back what it sent, and is closed after the client's EOF.
async fn echo_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

fn free_port_now() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends 5 MiB of random bytes through `port`, half-closes, reads everything back.
async fn round_trip(port: u16) -> Result<(), String> {
    let mut data = vec![0u8; MIB5];
    rand::thread_rng().fill_bytes(&mut data);
    let want = Sha256::digest(&data);
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.map_err(|e| e.to_string())?;
        w.shutdown().await.map_err(|e| e.to_string())
    });
    let mut back = Vec::with_capacity(MIB5);
    tokio::time::timeout(Duration::from_secs(120), r.read_to_end(&mut back))
        .await
        .map_err(|_| format!("no EOF after {} bytes", back.len()))?
        .map_err(|e| e.to_string())?;
    writer.await.unwrap()?;
    if back.len() != MIB5 || Sha256::digest(&back) != want {
        return Err(format!(
            "{} bytes came back, not the same 5 MiB",
            back.len()
        ));
    }
    Ok(())
}

/// Waits until something listens on `port` (shvrsh's or the device's listener).
async fn wait_listening(port: u16, rsh: &mut tokio::process::Child) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Ok(Some(st)) = rsh.try_wait() {
            let mut err = String::new();
            let _ = rsh.stderr.take().unwrap().read_to_string(&mut err).await;
            panic!("shvrsh exited ({st}): {err}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn_rsh(broker: &Broker, args: &[String]) -> tokio::process::Child {
    tokio::process::Command::new(bin("shvrsh"))
        .arg(broker.url("admin", "admin"))
        .arg("test/agent")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shvrsh")
}

async fn start(allow: bool) -> (Broker, Agent) {
    let broker = Broker::start(None);
    let args: &[&str] = if allow { &["--allow-forward"] } else { &[] };
    let url = broker.url("device", "device");
    let agent = Agent::start_with_args(&broker, &url, "test/agent", args).await;
    (broker, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_forward_carries_two_concurrent_connections_and_ends_with_shvrsh() {
    let (broker, _agent) = start(true).await;
    let target = echo_server().await; // on the device's side
    let lport = free_port_now();
    let mut rsh = spawn_rsh(
        &broker,
        &[
            "-N".into(),
            "-L".into(),
            format!("{lport}:127.0.0.1:{target}"),
        ],
    );
    wait_listening(lport, &mut rsh).await;
    let (a, b) = tokio::join!(round_trip(lport), round_trip(lport));
    a.expect("first connection");
    b.expect("second connection");
    // The forward is listed as a live session.
    let (admin, _) = broker.connect("admin", "admin").await;
    let list = admin.call(".broker/tunnels", "list", None).await.unwrap();
    assert!(
        list.to_cpon().contains("forwardTcp: 127.0.0.1"),
        "{}",
        list.to_cpon()
    );
    rsh.kill().await.unwrap();
    let _ = rsh.wait().await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", lport))
            .await
            .is_err(),
        "the forward outlived shvrsh"
    );
    // And the broker forgets it.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let list = admin.call(".broker/tunnels", "list", None).await.unwrap();
        if list.as_list().is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", list.to_cpon());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forward_listens_on_the_device_until_shvrsh_goes() {
    let (broker, _agent) = start(true).await;
    let target = echo_server().await; // on the operator's side
    let rport = free_port_now();
    let mut rsh = spawn_rsh(
        &broker,
        &[
            "-N".into(),
            "-R".into(),
            format!("127.0.0.1:{rport}:127.0.0.1:{target}"),
        ],
    );
    wait_listening(rport, &mut rsh).await;
    let (a, b) = tokio::join!(round_trip(rport), round_trip(rport));
    a.expect("first connection");
    b.expect("second connection");
    rsh.kill().await.unwrap();
    let _ = rsh.wait().await;
    // The device's listener closes when the tunnel does.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while tokio::net::TcpStream::connect(("127.0.0.1", rport))
        .await
        .is_ok()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the device still listens"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_agent_without_allow_forward_refuses_clearly() {
    let (broker, _agent) = start(false).await;
    let lport = free_port_now();
    let rsh = spawn_rsh(
        &broker,
        &["-N".into(), "-L".into(), format!("{lport}:127.0.0.1:9")],
    );
    let out = tokio::time::timeout(TIMEOUT, rsh.wait_with_output())
        .await
        .expect("shvrsh hung")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(err.contains("port forwarding is not allowed"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
