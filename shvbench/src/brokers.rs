//! Starting and stopping the brokers under comparison, each with a generated config
//! that gives them the same users: `admin`/`admin` (callers, subscribers, idle clients,
//! full access) and `device`/`device` (the benchmark device, may mount under `test/`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use libshv::RpcUrl;
use tokio::process::{Child, Command};

use crate::BenchError;

/// Our broker's config: the benchmark's two users, and no per-user session limit (the
/// idle scenario logs in up to tens of thousands of clients as `admin`; the default
/// limit is 4096 per user).
const OURS_CONFIG: &str = "name: shvbench
users:
  admin: {password: admin, roles: [admin], max_sessions: 0}
  device: {password: device, roles: [device]}
roles:
  admin: {access: [{ri: '**:*', grant: su}], mount_points: ['**']}
  device: {access: [{ri: '**:*', grant: rd}], mount_points: ['test/**']}
";

/// How long a broker may take to accept connections after being started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a broker may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BrokerKind {
    /// This repository's shvbroker.
    Ours,
    /// The crates.io Rust shvbroker.
    Upstream,
    /// pyshv's pyshvbroker.
    Pyshv,
}

impl BrokerKind {
    pub fn all() -> [BrokerKind; 3] {
        [BrokerKind::Ours, BrokerKind::Upstream, BrokerKind::Pyshv]
    }
    /// Short column name.
    pub fn label(self) -> &'static str {
        match self {
            BrokerKind::Ours => "ours",
            BrokerKind::Upstream => "rust-shvbroker",
            BrokerKind::Pyshv => "pyshv",
        }
    }
}

impl std::str::FromStr for BrokerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ours" => Ok(BrokerKind::Ours),
            "upstream" | "rust" | "rust-shvbroker" => Ok(BrokerKind::Upstream),
            "pyshv" | "python" => Ok(BrokerKind::Pyshv),
            other => Err(format!("unknown broker '{other}' (ours, upstream, pyshv)")),
        }
    }
}

/// A running broker; killed if dropped without [`RunningBroker::stop`].
pub struct RunningBroker {
    pub kind: BrokerKind,
    pub port: u16,
    pub pid: u32,
    child: Child,
    pub log: PathBuf,
}

impl RunningBroker {
    pub fn url(&self, user: &str, password: &str) -> RpcUrl {
        RpcUrl::parse(&format!(
            "tcp://{user}@127.0.0.1:{}?password={password}",
            self.port
        ))
        .expect("a generated URL parses")
    }
    pub fn admin_url(&self) -> RpcUrl {
        self.url("admin", "admin")
    }
    pub fn device_url(&self) -> RpcUrl {
        self.url("device", "device")
    }

    /// SIGKILL, as a crash: no goodbye to its peers.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then SIGKILL if it does not exit in time.
    pub async fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!("{} did not exit on SIGTERM, killing", self.kind.label());
            let _ = self.child.kill().await;
        }
    }
}

/// A free loopback port (bound, read, released: brokers that log no chosen port need one).
pub fn free_port() -> Result<u16, BenchError> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::Io(e.to_string()))?;
    Ok(l.local_addr()
        .map_err(|e| BenchError::Io(e.to_string()))?
        .port())
}

/// The broker binaries used by `compare`.
#[derive(Debug, Clone)]
pub struct BrokerBins {
    pub ours: PathBuf,
    pub upstream: PathBuf,
    pub pyshv: PathBuf,
}

impl BrokerBins {
    pub fn path(&self, kind: BrokerKind) -> &Path {
        match kind {
            BrokerKind::Ours => &self.ours,
            BrokerKind::Upstream => &self.upstream,
            BrokerKind::Pyshv => &self.pyshv,
        }
    }
}

/// Version string of a broker binary, for the report.
pub async fn version(kind: BrokerKind, bin: &Path) -> String {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await;
    match out {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
            let text = if text.is_empty() {
                String::from_utf8_lossy(&o.stderr).trim().to_string()
            } else {
                text
            };
            match kind {
                // The crates.io broker prints the bare version number.
                BrokerKind::Upstream => format!("shvbroker {text} (crates.io)"),
                _ => text,
            }
        }
        Err(e) => format!("unknown ({e})"),
    }
}

/// Starts `kind` from `bin` on a fresh loopback port, with its config and log in
/// `workdir`, and waits until it accepts TCP connections.
pub async fn start(
    kind: BrokerKind,
    bin: &Path,
    workdir: &Path,
) -> Result<RunningBroker, BenchError> {
    std::fs::create_dir_all(workdir).map_err(|e| BenchError::Io(e.to_string()))?;
    let port = free_port()?;
    let listen = format!("tcp://127.0.0.1:{port}");
    // One log per start, so a broker that died in an early round leaves its reason.
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = workdir.join(format!("{}-{n:03}.log", kind.label()));
    let mut cmd = Command::new(bin);
    match kind {
        BrokerKind::Ours => {
            let cfg = workdir.join("ours.yaml");
            std::fs::write(&cfg, OURS_CONFIG).map_err(|e| BenchError::Io(e.to_string()))?;
            // Warnings only: per-login info lines would cost time in the idle scenario.
            cmd.arg("-c").arg(&cfg);
            cmd.args(["--listen", &listen, "--log", "warn"]);
        }
        BrokerKind::Upstream => {
            let cfg = workdir.join("upstream.yaml");
            let text = upstream_config(bin, &listen).await?;
            std::fs::write(&cfg, text).map_err(|e| BenchError::Io(e.to_string()))?;
            // `=W`: an empty module name sets the default level (shvproto parse_log_verbosity).
            cmd.arg("-c").arg(&cfg).args(["-v", "=W"]);
        }
        BrokerKind::Pyshv => {
            let cfg = workdir.join("pyshv.toml");
            std::fs::write(&cfg, pyshv_config(&listen))
                .map_err(|e| BenchError::Io(e.to_string()))?;
            cmd.arg("-c").arg(&cfg);
        }
    }
    let logfile = std::fs::File::create(&log).map_err(|e| BenchError::Io(e.to_string()))?;
    // Logs go to a file, never to a pipe nobody reads (a full pipe blocks the broker).
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(logfile))
        .kill_on_drop(true);
    RunningBroker::spawn(cmd, bin, kind, port, log).await
}

impl RunningBroker {
    /// Spawns `cmd` (its output already set up) and waits until it listens on `port`.
    async fn spawn(
        mut cmd: Command,
        bin: &Path,
        kind: BrokerKind,
        port: u16,
        log: PathBuf,
    ) -> Result<RunningBroker, BenchError> {
        let child = cmd
            .spawn()
            .map_err(|e| BenchError::Io(format!("cannot start {}: {e}", bin.display())))?;
        let pid = child.id().ok_or(BenchError::Closed)?;
        let mut broker = RunningBroker {
            kind,
            port,
            pid,
            child,
            log,
        };
        broker.wait_listening().await?;
        Ok(broker)
    }

    /// Waits until the port accepts TCP connections (or the broker exits).
    async fn wait_listening(&mut self) -> Result<(), BenchError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::Io(format!(
                    "{} exited at start ({status}); see {}",
                    self.kind.label(),
                    self.log.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(format!(
                    "{} did not listen within {START_TIMEOUT:?}; see {}",
                    self.kind.label(),
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts our broker listening on `listen` only (any transport; `port` is its TCP
/// port, polled until it accepts), with its log in `workdir`.
pub async fn start_ours_on(
    bin: &Path,
    workdir: &Path,
    listen: &str,
    port: u16,
) -> Result<RunningBroker, BenchError> {
    std::fs::create_dir_all(workdir).map_err(|e| BenchError::Io(e.to_string()))?;
    let scheme = listen.split("://").next().unwrap_or("x");
    let log = workdir.join(format!("ours-{scheme}-{port}.log"));
    let logfile = std::fs::File::create(&log).map_err(|e| BenchError::Io(e.to_string()))?;
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", listen, "--log", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(logfile))
        .kill_on_drop(true);
    RunningBroker::spawn(cmd, bin, BrokerKind::Ours, port, log).await
}

/// Starts our broker with the config file `config`, listening on `tcp://127.0.0.1:port`
/// (and nothing else), its log appended to `log`.
pub async fn start_ours_with(
    bin: &Path,
    config: &Path,
    port: u16,
    log: &Path,
) -> Result<RunningBroker, BenchError> {
    let logfile = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| BenchError::Io(format!("{}: {e}", log.display())))?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(config);
    cmd.args([
        "--listen",
        &format!("tcp://127.0.0.1:{port}"),
        "--log",
        "warn",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::from(logfile))
    .kill_on_drop(true);
    RunningBroker::spawn(cmd, bin, BrokerKind::Ours, port, log.to_path_buf()).await
}

/// The crates.io broker's own default (`--print-effective-config`) with our listener,
/// no outgoing connections, no access database, and a `device` user that may mount
/// under `test` (its `su` role's policy allows that).
async fn upstream_config(bin: &Path, listen: &str) -> Result<String, BenchError> {
    let out = Command::new(bin)
        .arg("--print-effective-config")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .map_err(|e| BenchError::Io(format!("{}: {e}", bin.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    upstream_config_from_default(&text, listen)
}

/// Edits the default YAML (a separate fn so it is testable without the binary).
pub fn upstream_config_from_default(
    default_yaml: &str,
    listen: &str,
) -> Result<String, BenchError> {
    use serde_yaml::{Mapping, Value};
    let bad = |m: &str| BenchError::Config(format!("upstream default config: {m}"));
    let mut cfg: Value = serde_yaml::from_str(default_yaml).map_err(|e| bad(&e.to_string()))?;
    let root = cfg.as_mapping_mut().ok_or_else(|| bad("not a mapping"))?;
    let mut l = Mapping::new();
    l.insert("url".into(), listen.into());
    root.insert("listen".into(), Value::Sequence(vec![Value::Mapping(l)]));
    root.insert("connections".into(), Value::Sequence(vec![]));
    root.insert("use_access_db".into(), false.into());
    let users = root
        .get_mut("access")
        .and_then(|a| a.get_mut("users"))
        .and_then(|u| u.as_mapping_mut())
        .ok_or_else(|| bad("no access.users"))?;
    let mut admin = users
        .get("admin")
        .cloned()
        .ok_or_else(|| bad("no admin user"))?;
    // Same shape as the admin entry, so whatever the password encoding is, it fits.
    let pw = admin
        .get_mut("password")
        .ok_or_else(|| bad("admin has no password"))?;
    *pw = replace_strings(pw.clone(), "admin", "device");
    users.insert("device".into(), admin);
    serde_yaml::to_string(&cfg).map_err(|e| bad(&e.to_string()))
}

fn replace_strings(v: serde_yaml::Value, from: &str, to: &str) -> serde_yaml::Value {
    use serde_yaml::Value;
    match v {
        Value::String(s) if s == from => Value::String(to.into()),
        Value::Tagged(mut t) => {
            t.value = replace_strings(t.value, from, to);
            Value::Tagged(t)
        }
        Value::Mapping(m) => Value::Mapping(
            m.into_iter()
                .map(|(k, v)| (k, replace_strings(v, from, to)))
                .collect(),
        ),
        other => other,
    }
}

/// pyshv's TOML config (shv/broker/config.py): same users and grants as the others.
pub fn pyshv_config(listen: &str) -> String {
    format!(
        r#"name = "pyshvbroker"
listen = ["{listen}"]

[user.admin]
password = "admin"
role = "admin"

[user.device]
password = "device"
role = "device"

[role.admin]
mountPoints = ["**"]
access.su = ["**:*"]

[role.device]
mountPoints = ["test/**"]
access.rd = ["**:*"]
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_config_gets_listener_and_device_user() {
        let default = "name: foo\nlisten:\n- url: tcp://localhost:3755\nuse_access_db: false\nconnections:\n- name: x\n  enabled: false\naccess:\n  users:\n    admin:\n      password: !Plain admin\n      roles:\n      - su\n";
        let out = upstream_config_from_default(default, "tcp://127.0.0.1:4000").unwrap();
        assert!(out.contains("url: tcp://127.0.0.1:4000"), "{out}");
        assert!(out.contains("connections: []"), "{out}");
        assert!(out.contains("device:"), "{out}");
        assert!(out.contains("password: !Plain device"), "{out}");
        assert!(out.contains("password: !Plain admin"), "{out}");
    }

    #[test]
    fn pyshv_config_lists_both_users() {
        let c = pyshv_config("tcp://127.0.0.1:4001");
        assert!(c.contains("listen = [\"tcp://127.0.0.1:4001\"]"));
        assert!(c.contains("[user.device]") && c.contains("[user.admin]"));
    }
}
