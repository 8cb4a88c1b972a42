//! The child processes of the tunnel scenario: where their binaries are, shvagent
//! mounted on the broker, and shvrsh with piped stdio.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use libshv::RpcUrl;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::EXIT_TIMEOUT;
use crate::proto;
use crate::BenchError;
/// The remote-shell binaries (release builds next to shvbench by default).
#[derive(Debug, Clone)]
pub struct TunnelBins {
    pub agent: PathBuf,
    pub rsh: PathBuf,
    pub rexec: PathBuf,
}

impl TunnelBins {
    pub fn in_dir(dir: &Path) -> Self {
        TunnelBins {
            agent: dir.join("shvagent"),
            rsh: dir.join("shvrsh"),
            rexec: dir.join("shvrexec"),
        }
    }

    /// The directory of this executable (for a test binary in `target/*/deps`, its
    /// parent), i.e. the same target directory and profile as shvbench.
    pub fn next_to_exe() -> Self {
        let dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .map(|d| {
                if d.file_name().is_some_and(|n| n == "deps") {
                    d.parent().map(Path::to_path_buf).unwrap_or(d)
                } else {
                    d
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        Self::in_dir(&dir)
    }

    /// An error naming every missing binary and how to build them.
    pub fn check(&self) -> Result<(), BenchError> {
        let missing: Vec<String> = [&self.agent, &self.rsh, &self.rexec]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(BenchError::Config(format!(
                "tunnel scenario: missing {} (build them with `cargo build --release -p shvagent -p shvrexec -p shvrsh`, or pass --bin-dir)",
                missing.join(", ")
            )))
        }
    }
}

/// The URL for a command line (no password: that goes in SHV_PASSWORD).
fn url_arg(url: &RpcUrl) -> (String, String) {
    (
        url.without_secrets(),
        url.password.clone().unwrap_or_default(),
    )
}

/// A running shvagent; killed on drop (its shvrexec children die with it).
pub struct Agent {
    child: Child,
    pub mount: String,
    pub log: PathBuf,
}

impl Agent {
    /// Starts `shvagent DEVICE_URL --mount MOUNT --rexec REXEC` (log in `log`) and
    /// waits until `MOUNT:dir` answers through the broker for `admin`.
    pub async fn start(
        bins: &TunnelBins,
        device: &RpcUrl,
        admin: &RpcUrl,
        mount: &str,
        log: &Path,
    ) -> Result<Agent, BenchError> {
        Self::start_with(bins, device, admin, mount, log, &[]).await
    }

    /// The same, with more shvagent options (e.g. `--allow-forward`).
    pub async fn start_with(
        bins: &TunnelBins,
        device: &RpcUrl,
        admin: &RpcUrl,
        mount: &str,
        log: &Path,
        extra: &[&str],
    ) -> Result<Agent, BenchError> {
        bins.check()?;
        if let Some(d) = log.parent() {
            std::fs::create_dir_all(d).map_err(|e| BenchError::Io(e.to_string()))?;
        }
        let logfile = std::fs::File::create(log).map_err(|e| BenchError::Io(e.to_string()))?;
        let (url, password) = url_arg(device);
        let child = Command::new(&bins.agent)
            .arg(&url)
            .args(["--mount", mount])
            .args(extra)
            .arg("--rexec")
            .arg(&bins.rexec)
            .env("SHV_PASSWORD", password)
            // Per-launch info lines would only cost time; shvrexec inherits this.
            .env("RUST_LOG", "warn")
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(logfile))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Io(format!("cannot start {}: {e}", bins.agent.display())))?;
        let mut agent = Agent {
            child,
            mount: mount.to_string(),
            log: log.to_path_buf(),
        };
        let mut conn = proto::connect_login(admin).await?;
        let deadline = Instant::now() + proto::SETUP_TIMEOUT;
        let mut id = 2_000_000_000;
        loop {
            id += 1;
            let r = conn
                .call(id, mount, "dir", None, proto::SETUP_TIMEOUT)
                .await?;
            if r.result().is_ok() {
                return Ok(agent);
            }
            if let Ok(Some(status)) = agent.child.try_wait() {
                return Err(BenchError::Io(format!(
                    "shvagent exited ({status}); see {}",
                    log.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(format!(
                    "shvagent never appeared at {mount}; see {}",
                    log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The agent's process id (0 once it has been reaped).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// SIGTERM, then SIGKILL if it does not exit within 5 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A child process with piped stdio (shvrsh, ssh); stderr is collected by a task for
/// error messages.
pub(crate) struct Piped {
    pub(crate) child: Child,
    name: String,
    stderr: tokio::task::JoinHandle<String>,
}

/// shvrsh with piped stdio.
pub(crate) type Rsh = Piped;

impl Piped {
    /// `shvrsh [-t] --no-escape URL AGENT -- CMD...`.
    pub(crate) fn spawn(
        bins: &TunnelBins,
        url: &RpcUrl,
        agent: &str,
        pty: bool,
        cmd: &[&str],
    ) -> Result<Piped, BenchError> {
        let (u, password) = url_arg(url);
        let mut c = Command::new(&bins.rsh);
        if pty {
            c.arg("-t");
        }
        c.arg("--no-escape")
            .arg(&u)
            .arg(agent)
            .arg("--")
            .args(cmd)
            .env("SHV_PASSWORD", password)
            .env("RUST_LOG", "warn");
        Self::start(c, "shvrsh")
    }

    /// Starts `cmd` with stdin, stdout and stderr piped; `name` is for messages.
    pub(crate) fn start(mut cmd: Command, name: &str) -> Result<Piped, BenchError> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| BenchError::Io(format!("cannot start {name}: {e}")))?;
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = tokio::spawn(async move {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s).await;
            String::from_utf8_lossy(&s).into_owned()
        });
        Ok(Piped {
            child,
            name: name.to_string(),
            stderr,
        })
    }

    /// An error with what the process said on stderr.
    pub(crate) async fn fail(mut self, what: String) -> BenchError {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        let stderr = tokio::time::timeout(Duration::from_secs(2), self.stderr)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        BenchError::Io(format!(
            "{}: {what}; its stderr: {}",
            self.name,
            stderr.trim()
        ))
    }

    /// Waits for the process to exit with status 0.
    pub(crate) async fn finish(mut self) -> Result<(), BenchError> {
        match tokio::time::timeout(EXIT_TIMEOUT, self.child.wait()).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => Err(self.fail(format!("exited with {s}")).await),
            Ok(Err(e)) => Err(self.fail(e.to_string()).await),
            Err(_) => Err(self
                .fail(format!("did not exit within {EXIT_TIMEOUT:?}"))
                .await),
        }
    }
}
