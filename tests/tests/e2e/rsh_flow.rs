//! Tunnel flow control: a command that outputs faster than the operator's side reads
//! must be slowed down, not cut off. (Brokers disconnect a peer whose send queue
//! overflows; the tunnel's ack window keeps the queue short.)

use std::process::Stdio;

use crate::shell_rig::Agent;
use tests::{bin, config_yaml, Broker, TIMEOUT};
use tokio::io::AsyncReadExt;

/// `shvrsh URL test/agent -- CMD…` as admin, stdout and stderr piped.
fn spawn_rsh(broker: &Broker, cmd: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(bin("shvrsh"))
        .arg(broker.url("admin", "admin"))
        .arg("test/agent")
        .arg("--")
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shvrsh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_gets_everything() {
    // A short per-client queue: without flow control 100 MB in pipe-sized chunks would
    // overflow it while the reader sleeps.
    let broker = Broker::start(Some(&config_yaml(&[], "limits:\n  client_queue: 64\n")));
    let _agent = Agent::start(&broker, "test/agent").await;
    let mut rsh = spawn_rsh(&broker, &["head", "-c", "100000000", "/dev/zero"]);
    let mut stdout = rsh.stdout.take().unwrap();
    // Let the command run far ahead of us before reading anything.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut total = 0usize;
    let mut buf = vec![0u8; 4096];
    let read_all = async {
        loop {
            let n = stdout.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
            // Keep reading slowly.
            if total % (1 << 20) < 4096 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    tokio::time::timeout(TIMEOUT, read_all)
        .await
        .expect("output never ended");
    let out = tokio::time::timeout(TIMEOUT, rsh.wait_with_output())
        .await
        .expect("shvrsh hung")
        .unwrap();
    assert_eq!(
        total,
        100_000_000,
        "stderr: {}\nbroker: {}",
        String::from_utf8_lossy(&out.stderr),
        broker.stderr()
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !broker.stderr().contains("send queue full"),
        "{}",
        broker.stderr()
    );
}

/// A command that ends while its output still waits for the operator's acks: the
/// output must all arrive once the operator reads again, and only then the exit status
/// (the tunnel may not close over unsent output because the reader paused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_pending_on_acks_when_the_command_exits_is_not_lost() {
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, "test/agent").await;
    let mut rsh = spawn_rsh(&broker, &["sh", "-c", "head -c 8000000 /dev/zero; exit 5"]);
    let mut stdout = rsh.stdout.take().unwrap();
    // The command writes what the window, the pipes and the queues hold, then exits;
    // we pause well past the end of the command before reading anything.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, stdout.read_to_end(&mut out))
        .await
        .expect("output never ended")
        .unwrap();
    let done = tokio::time::timeout(TIMEOUT, rsh.wait_with_output())
        .await
        .expect("shvrsh hung")
        .unwrap();
    assert_eq!(
        out.len(),
        8_000_000,
        "stderr: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(done.status.code(), Some(5));
}
