//! What the tunnel tests (shells, forwards, copies, recordings) share: a real
//! `shvagent` mounted on a test broker, finding its `shvrexec` children, and reading
//! `.broker/tunnels:list`.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libshv::shvproto::Value;
use libshv::{Client, RpcValue};
use tests::{bin, Broker, TIMEOUT};

/// The deadline of the explicit "within 2 s" requirements.
pub const TWO_SECONDS: Duration = Duration::from_secs(2);

/// A running `shvagent` (killed on Drop) with its stderr kept for failure messages.
pub struct Agent {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    /// `shvagent URL --mount MOUNT` as `device`, and waits until the broker lists it.
    pub async fn start(broker: &Broker, mount: &str) -> Agent {
        Self::start_with_url(broker, &broker.url("device", "device"), mount).await
    }

    /// `shvagent URL --mount MOUNT` over any transport (`url` logs in as `device`).
    pub async fn start_with_url(broker: &Broker, url: &str, mount: &str) -> Agent {
        Self::start_with_args(broker, url, mount, &[]).await
    }

    /// The same, with more shvagent options.
    pub async fn start_with_args(broker: &Broker, url: &str, mount: &str, args: &[&str]) -> Agent {
        Self::start_with_env(broker, url, mount, args, &[]).await
    }

    /// The same, with more environment variables (a HOME of the test's own).
    #[allow(dead_code)]
    pub async fn start_with_env(
        broker: &Broker,
        url: &str,
        mount: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let mut child = Command::new(bin("shvagent"))
            .arg(url)
            .args(args)
            .args(["--mount", mount])
            // A known login shell for the interactive test (a developer's zsh with its
            // rc files would make the prompt and timing unpredictable).
            .env("SHELL", "/bin/sh")
            .env_remove("SHV_PASSWORD")
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shvagent");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let buf = stderr.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut b = buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
        });
        let agent = Agent { child, stderr };
        let (client, _) = broker.connect("admin", "admin").await;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if client.call(mount, "dir", None).await.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "shvagent never appeared at {mount}; agent stderr:\n{}\nbroker stderr:\n{}",
                agent.stderr(),
                broker.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The pids of the agent's `shvrexec` children (a /proc scan: ppid and comm).
    pub fn rexec_pids(&self) -> Vec<i32> {
        children_named(self.pid() as i32, "shvrexec")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- shvagent stderr ----\n{}---- end ----", self.stderr());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes whose parent is `ppid` and whose comm is `name`, from /proc/PID/stat.
pub fn children_named(ppid: i32, name: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."; comm may contain spaces or parens, so split at
        // the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let mut rest = stat[close + 1..].split_whitespace();
        let _state = rest.next();
        let parent = rest.next().and_then(|p| p.parse::<i32>().ok());
        if comm == name && parent == Some(ppid) {
            out.push(pid);
        }
    }
    out
}

/// `.broker/tunnels:list` as (id, connected, bytesToRsh, bytesToRexec, agentPath).
#[derive(Debug, Clone, PartialEq)]
pub struct TunnelRow {
    pub id: i64,
    pub connected: bool,
    pub bytes_to_rsh: i64,
    pub bytes_to_rexec: i64,
    pub agent_path: String,
    pub user: String,
}

pub async fn tunnels(admin: &Client) -> Vec<TunnelRow> {
    let v = admin
        .call(".broker/tunnels", "list", None)
        .await
        .expect(".broker/tunnels:list");
    let Value::List(l) = &v.value else {
        panic!("tunnels:list is not a List: {}", v.to_cpon());
    };
    l.iter()
        .map(|t| {
            let get = |k: &str| -> RpcValue {
                t.get(k)
                    .cloned()
                    .unwrap_or_else(|| panic!("tunnel row without {k}: {}", t.to_cpon()))
            };
            TunnelRow {
                id: get("id").as_int(),
                connected: get("connected").as_bool(),
                bytes_to_rsh: get("bytesToRsh").as_int(),
                bytes_to_rexec: get("bytesToRexec").as_int(),
                agent_path: get("agentPath").as_str().to_string(),
                user: get("user").as_str().to_string(),
            }
        })
        .collect()
}

/// Polls `.broker/tunnels:list` until a connected tunnel to `agent_path` is listed.
pub async fn wait_connected_tunnel(admin: &Client, agent_path: &str) -> TunnelRow {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(t) = tunnels(admin)
            .await
            .into_iter()
            .find(|t| t.connected && t.agent_path == agent_path)
        {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "no connected tunnel to {agent_path} within {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGKILL to a pid we started (directly or through the agent).
pub fn sigkill(pid: i32) {
    // SAFETY: kill(2) with a pid of a process this test started.
    let r = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(r, 0, "kill -KILL {pid}");
}

/// What came of piping bytes through a remote `cat`.
pub struct CatRun {
    pub code: i32,
    pub out: Vec<u8>,
    pub stderr: String,
}

/// Pipes `data` through `shvrsh URL AGENT -- cat` (closing stdin at the end, the EOF
/// that must end the remote cat) and collects what comes back. Panics if shvrsh does
/// not finish within 180 s: generous, for megabytes through debug builds of four
/// processes on a busy machine.
pub async fn through_remote_cat(url: &str, agent: &str, data: Vec<u8>) -> CatRun {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut rsh = spawn_rsh(url, agent, &["cat"]);
    let mut stdin = rsh.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        stdin.write_all(&data).await.expect("write to shvrsh");
    });
    let mut stdout = rsh.stdout.take().unwrap();
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        stdout
            .read_to_end(&mut out)
            .await
            .expect("read shvrsh stdout");
        out
    });
    let mut stderr = rsh.stderr.take().unwrap();
    let err = tokio::spawn(async move {
        let mut e = String::new();
        let _ = stderr.read_to_string(&mut e).await;
        e
    });
    let status = match tokio::time::timeout(Duration::from_secs(180), rsh.wait()).await {
        Ok(st) => st.expect("wait for shvrsh"),
        Err(_) => panic!("shvrsh -- cat did not finish (stdin EOF not passed on?)"),
    };
    writer.await.unwrap();
    let out = tokio::time::timeout(TIMEOUT, reader)
        .await
        .expect("stdout not closed")
        .unwrap();
    CatRun {
        code: status.code().unwrap_or(-1),
        out,
        stderr: err.await.unwrap(),
    }
}

/// `shvrsh URL AGENT -- CMD…` with all three streams piped, killed on drop.
pub fn spawn_rsh(url: &str, path: &str, cmd: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(bin("shvrsh"))
        .arg(url)
        .arg(path)
        .arg("--")
        .args(cmd)
        .env_remove("SHV_PASSWORD")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shvrsh")
}
