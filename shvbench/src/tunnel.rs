//! The `tunnel` scenario: bytes and keystrokes through a remote shell (shvrsh →
//! broker tunnel → shvrexec started by shvagent), and the same bulk bytes through the
//! raw relay as the baseline.
//!
//! - bulk: `shvrsh URL AGENT -- cat`, N MiB piped in and all read back (checked byte
//!   for byte); MB/s = bytes each way / transfer time. The tunnel opening is timed
//!   separately (spawn until a 1-byte probe came back), so the rate is the steady state.
//! - download: `shvrsh URL AGENT -- head -c N /dev/zero`, one way, from the first
//!   received byte to EOF.
//! - echo: `shvrsh -t URL AGENT -- cat` (remote PTY, canonical mode): one printable
//!   byte written, read until the PTY's echo of it arrived; p50/p99 round trip.
//! - relay: N MiB as Block frames of 64 KiB from one socket through [`crate::relay`]
//!   to another, one way.
//!
//! Only our broker implements tunnels (`.broker/tunnels`, TunnelCtl). Every wait has a
//! timeout, and the child processes are killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use libshv::RpcUrl;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::proto;
use crate::stats::Samples;
use crate::BenchError;

/// Chunk size for writes and reads, and the relay's frame payload.
pub const CHUNK: usize = 64 * 1024;
/// The data pattern repeats every 251 bytes (a prime, so it never lines up with chunks).
const PERIOD: usize = 251;
/// How long the tunnel may take to open (spawn of shvrsh until the probe is back).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one bulk transfer (a broken tunnel fails instead of hanging).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long shvrsh may take to exit once the command's output is complete.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The keystroke of the echo test: printable, so no CR/LF translation applies.
const KEY: u8 = b'x';

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

#[derive(Debug, Clone)]
pub struct BulkResult {
    /// Payload bytes moved (each way for `cat`, one way for download and relay).
    pub bytes: u64,
    /// From spawning shvrsh until the first byte came back (tunnel open); zero for the relay.
    pub setup: Duration,
    /// The transfer itself.
    pub elapsed: Duration,
    pub mb_per_s: f64,
}

#[derive(Debug, Clone)]
pub struct EchoResult {
    pub keystrokes: usize,
    pub setup: Duration,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// `PERIOD`-periodic data, long enough to slice any chunk at any phase.
fn pattern() -> Vec<u8> {
    (0..CHUNK + PERIOD).map(|i| (i % PERIOD) as u8).collect()
}

pub fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9) / 1e6
}

/// shvrsh with piped stdio; stderr is collected by a task for error messages.
struct Rsh {
    child: Child,
    stderr: tokio::task::JoinHandle<String>,
}

impl Rsh {
    fn spawn(
        bins: &TunnelBins,
        url: &RpcUrl,
        agent: &str,
        pty: bool,
        cmd: &[&str],
    ) -> Result<Rsh, BenchError> {
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
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = c
            .spawn()
            .map_err(|e| BenchError::Io(format!("cannot start {}: {e}", bins.rsh.display())))?;
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = tokio::spawn(async move {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s).await;
            String::from_utf8_lossy(&s).into_owned()
        });
        Ok(Rsh { child, stderr })
    }

    /// An error with what shvrsh said on stderr.
    async fn fail(mut self, what: String) -> BenchError {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        let stderr = tokio::time::timeout(Duration::from_secs(2), self.stderr)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        BenchError::Io(format!("shvrsh: {what}; its stderr: {}", stderr.trim()))
    }

    /// Waits for shvrsh to exit with status 0.
    async fn finish(mut self) -> Result<(), BenchError> {
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

/// Reads and checks `total` bytes of the pattern (starting at phase 0).
async fn read_pattern<R: AsyncRead + Unpin>(
    r: &mut R,
    total: u64,
    pat: &[u8],
) -> Result<(), String> {
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < total {
        let want = CHUNK.min((total - pos) as usize);
        let n = r
            .read(&mut buf[..want])
            .await
            .map_err(|e| format!("read after {pos} bytes: {e}"))?;
        if n == 0 {
            return Err(format!("EOF after {pos} of {total} bytes"));
        }
        let off = (pos % PERIOD as u64) as usize;
        if buf[..n] != pat[off..off + n] {
            return Err(format!(
                "data differs within bytes {pos}..{}",
                pos + n as u64
            ));
        }
        pos += n as u64;
    }
    Ok(())
}

/// Writes `total` bytes of the pattern (starting at phase 0).
async fn write_pattern<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    total: u64,
    pat: &[u8],
) -> std::io::Result<()> {
    let mut pos = 0u64;
    while pos < total {
        let n = CHUNK.min((total - pos) as usize);
        let off = (pos % PERIOD as u64) as usize;
        w.write_all(&pat[off..off + n]).await?;
        pos += n as u64;
    }
    w.flush().await
}

/// `shvrsh URL AGENT -- cat`: `bytes` piped in and read back.
pub async fn bulk_cat(
    bins: &TunnelBins,
    url: &RpcUrl,
    agent: &str,
    bytes: u64,
) -> Result<BulkResult, BenchError> {
    let pat = pattern();
    let spawned = Instant::now();
    let mut rsh = Rsh::spawn(bins, url, agent, false, &["cat"])?;
    let mut stdin = rsh.child.stdin.take().expect("piped stdin");
    let mut stdout = rsh.child.stdout.take().expect("piped stdout");
    // The probe: its return marks the open tunnel, so the rate excludes the setup.
    let probe = async {
        stdin.write_all(b"P").await.map_err(|e| e.to_string())?;
        stdin.flush().await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        stdout.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        if b[0] != b'P' {
            return Err(format!("probe came back as {:?}", b[0]));
        }
        Ok(())
    };
    match tokio::time::timeout(OPEN_TIMEOUT, probe).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(rsh.fail(format!("probe: {e}")).await),
        Err(_) => {
            return Err(rsh
                .fail(format!("no probe echo within {OPEN_TIMEOUT:?}"))
                .await)
        }
    }
    let setup = spawned.elapsed();
    let t0 = Instant::now();
    let write = async {
        let r = write_pattern(&mut stdin, bytes, &pat).await;
        // EOF for cat, so that the session ends after the data.
        drop(stdin);
        r.map_err(|e| format!("write: {e}"))
    };
    let read = read_pattern(&mut stdout, bytes, &pat);
    let res = tokio::time::timeout(TRANSFER_TIMEOUT, async { tokio::try_join!(write, read) }).await;
    let elapsed = t0.elapsed();
    match res {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(rsh.fail(e).await),
        Err(_) => {
            return Err(rsh
                .fail(format!("transfer took over {TRANSFER_TIMEOUT:?}"))
                .await)
        }
    }
    drop(stdout);
    rsh.finish().await?;
    Ok(BulkResult {
        bytes,
        setup,
        elapsed,
        mb_per_s: mb_per_s(bytes, elapsed),
    })
}

/// `shvrsh URL AGENT -- head -c BYTES /dev/zero`: one way, timed from the first
/// received byte to EOF (the bytes of the first read are not counted).
pub async fn download(
    bins: &TunnelBins,
    url: &RpcUrl,
    agent: &str,
    bytes: u64,
) -> Result<BulkResult, BenchError> {
    let spawned = Instant::now();
    let n = bytes.to_string();
    let mut rsh = Rsh::spawn(bins, url, agent, false, &["head", "-c", &n, "/dev/zero"])?;
    drop(rsh.child.stdin.take());
    let mut stdout = rsh.child.stdout.take().expect("piped stdout");
    let mut buf = vec![0u8; CHUNK];
    let first = match tokio::time::timeout(OPEN_TIMEOUT, stdout.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => n as u64,
        Ok(Ok(_)) => return Err(rsh.fail("no output".into()).await),
        Ok(Err(e)) => return Err(rsh.fail(format!("read: {e}")).await),
        Err(_) => return Err(rsh.fail(format!("no output within {OPEN_TIMEOUT:?}")).await),
    };
    let setup = spawned.elapsed();
    let t0 = Instant::now();
    let read = async {
        let mut got = first;
        loop {
            let n = stdout.read(&mut buf).await?;
            if n == 0 {
                return Ok::<u64, std::io::Error>(got);
            }
            if buf[..n].iter().any(|b| *b != 0) {
                return Err(std::io::Error::other("non-zero byte from /dev/zero"));
            }
            got += n as u64;
        }
    };
    let got = match tokio::time::timeout(TRANSFER_TIMEOUT, read).await {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return Err(rsh.fail(format!("read: {e}")).await),
        Err(_) => {
            return Err(rsh
                .fail(format!("transfer took over {TRANSFER_TIMEOUT:?}"))
                .await)
        }
    };
    let elapsed = t0.elapsed();
    if got != bytes {
        return Err(rsh.fail(format!("got {got} of {bytes} bytes")).await);
    }
    rsh.finish().await?;
    Ok(BulkResult {
        bytes,
        setup,
        elapsed,
        mb_per_s: mb_per_s(bytes - first, elapsed),
    })
}

/// `shvrsh -t URL AGENT -- cat`: `keystrokes` single bytes, each timed until the
/// remote PTY's echo of it is read back. The PTY stays in canonical mode, so cat sees
/// nothing before the final newline and the echo is the only output meanwhile.
pub async fn echo(
    bins: &TunnelBins,
    url: &RpcUrl,
    agent: &str,
    keystrokes: usize,
) -> Result<EchoResult, BenchError> {
    let spawned = Instant::now();
    let mut rsh = Rsh::spawn(bins, url, agent, true, &["cat"])?;
    let mut stdin = rsh.child.stdin.take().expect("piped stdin");
    let mut stdout = rsh.child.stdout.take().expect("piped stdout");
    let mut samples = Samples::with_capacity(keystrokes);
    let mut setup = Duration::ZERO;
    // Keystroke 0 opens the tunnel and is not sampled.
    let run = async {
        let mut buf = [0u8; 4096];
        let mut seen = 0usize;
        for i in 0..=keystrokes {
            let t = Instant::now();
            stdin
                .write_all(&[KEY])
                .await
                .map_err(|e| format!("write: {e}"))?;
            stdin.flush().await.map_err(|e| format!("write: {e}"))?;
            let limit = if i == 0 {
                OPEN_TIMEOUT
            } else {
                Duration::from_secs(5)
            };
            while seen <= i {
                let n = tokio::time::timeout(limit, stdout.read(&mut buf))
                    .await
                    .map_err(|_| format!("keystroke {i}: no echo within {limit:?}"))?
                    .map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err(format!("EOF after {seen} echoed keystrokes"));
                }
                seen += buf[..n].iter().filter(|b| **b == KEY).count();
            }
            if i == 0 {
                setup = spawned.elapsed();
            } else {
                samples.push_nanos(t.elapsed().as_nanos() as i64);
            }
        }
        // End the line (cat prints it back) and end the input: shvrsh passes EOF on as ^D.
        stdin
            .write_all(b"\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        drop(stdin);
        let mut rest = Vec::new();
        tokio::time::timeout(EXIT_TIMEOUT, stdout.read_to_end(&mut rest))
            .await
            .map_err(|_| "no EOF after the last keystroke".to_string())?
            .map_err(|e| format!("read: {e}"))?;
        Ok::<(), String>(())
    };
    if let Err(e) = run.await {
        return Err(rsh.fail(e).await);
    }
    rsh.finish().await?;
    Ok(EchoResult {
        keystrokes,
        setup,
        p50_us: samples.percentile(50.0),
        p99_us: samples.percentile(99.0),
    })
}

/// The baseline: `bytes` as Block frames of 64 KiB payload from one socket through the
/// raw relay to another (one way).
pub async fn relay_bulk(bytes: u64) -> Result<BulkResult, BenchError> {
    let io = |e: std::io::Error| BenchError::Io(format!("relay bulk: {e}"));
    let relay = crate::relay::start().await?;
    let w = tokio::net::TcpStream::connect(relay.client_addr)
        .await
        .map_err(io)?;
    let r = tokio::net::TcpStream::connect(relay.device_addr)
        .await
        .map_err(io)?;
    w.set_nodelay(true).map_err(io)?;
    r.set_nodelay(true).map_err(io)?;
    let (_wr, mut w) = w.into_split();
    let (mut r, _rw) = r.into_split();
    // One frame as the probe: the relay has paired the sockets once it is through.
    let mut probe = Vec::new();
    libshv::value::write_uint(&mut probe, 1);
    probe.push(b'P');
    w.write_all(&probe).await.map_err(io)?;
    let mut back = vec![0u8; probe.len()];
    tokio::time::timeout(OPEN_TIMEOUT, r.read_exact(&mut back))
        .await
        .map_err(|_| BenchError::Timeout("relay probe".into()))?
        .map_err(io)?;
    let mut frame = Vec::with_capacity(CHUNK + 8);
    libshv::value::write_uint(&mut frame, CHUNK as u64);
    let header = frame.len();
    frame.extend((0..CHUNK).map(|i| (i % PERIOD) as u8));
    let frames = bytes.div_ceil(CHUNK as u64);
    let wire = frames * frame.len() as u64;
    let t0 = Instant::now();
    let write = async {
        for _ in 0..frames {
            w.write_all(&frame).await?;
        }
        w.flush().await
    };
    let read = async {
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        while got < wire {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::other(format!(
                    "EOF after {got} of {wire} bytes"
                )));
            }
            got += n as u64;
        }
        Ok(())
    };
    tokio::time::timeout(TRANSFER_TIMEOUT, async { tokio::try_join!(write, read) })
        .await
        .map_err(|_| BenchError::Timeout("relay bulk transfer".into()))?
        .map_err(io)?;
    let elapsed = t0.elapsed();
    let payload = frames * (frame.len() - header) as u64;
    Ok(BulkResult {
        bytes: payload,
        setup: Duration::ZERO,
        elapsed,
        mb_per_s: mb_per_s(payload, elapsed),
    })
}

/// What one tunnel round measured against one broker.
#[derive(Debug, Clone)]
pub struct TunnelRound {
    pub cat: BulkResult,
    pub download: Option<BulkResult>,
    pub echo: EchoResult,
}

/// Sizes of one tunnel round.
#[derive(Debug, Clone)]
pub struct TunnelSizes {
    pub bytes: u64,
    pub keystrokes: usize,
    pub download: bool,
}

/// One round against a running broker with the agent already mounted at `agent`.
pub async fn round(
    bins: &TunnelBins,
    url: &RpcUrl,
    agent: &str,
    sizes: &TunnelSizes,
) -> Result<TunnelRound, BenchError> {
    let cat = bulk_cat(bins, url, agent, sizes.bytes).await?;
    let download = if sizes.download {
        Some(download(bins, url, agent, sizes.bytes).await?)
    } else {
        None
    };
    let echo = echo(bins, url, agent, sizes.keystrokes).await?;
    Ok(TunnelRound {
        cat,
        download,
        echo,
    })
}
