//! `shvbench files`: the throughput of a port forward (`shvrsh -N -L`) and of `shvcp`
//! (upload and download) through our broker, next to `shvrsh -- cat` and the raw
//! relay (the same bytes from one socket to another through one relay process: the
//! machine's limit for one extra hop). Medians over rounds, ratios to the relay.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::brokers::{self, BrokerKind};
use crate::stats::median;
use crate::tunnel::{self, mb_per_s, TunnelBins};
use crate::BenchError;

const TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone)]
pub struct FilesOpts {
    pub ours: PathBuf,
    pub bins: TunnelBins,
    pub shvcp: PathBuf,
    pub workdir: PathBuf,
    pub rounds: usize,
    pub bytes: u64,
}

#[derive(Debug, Default)]
pub struct FilesReport {
    pub relay: Vec<f64>,
    pub cat: Vec<f64>,
    pub forward: Vec<f64>,
    /// The same forward's next connection after [`WARM_CONNECTIONS`] short ones.
    pub forward_late: Vec<f64>,
    pub upload: Vec<f64>,
    pub download: Vec<f64>,
}

impl FilesReport {
    pub fn markdown(&self, mib: u64) -> String {
        let relay = median(&self.relay);
        let mut out =
            format!("| {mib} MiB, one way | MB/s (median) | / raw relay |\n|---|---:|---:|\n");
        for (name, v) in [
            ("raw relay (baseline)", &self.relay),
            ("`shvrsh -- cat` (each way)", &self.cat),
            ("`shvrsh -N -L` forward", &self.forward),
            (
                "`shvrsh -N -L` forward, after 60 connections",
                &self.forward_late,
            ),
            ("`shvcp` upload", &self.upload),
            ("`shvcp` download", &self.download),
        ] {
            let m = median(v);
            out.push_str(&format!("| {name} | {m:.1} | {:.2} |\n", m / relay));
        }
        out
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> BenchError + '_ {
    move |e| BenchError::Io(format!("{what}: {e}"))
}

pub async fn run(opts: &FilesOpts) -> Result<FilesReport, BenchError> {
    opts.bins.check()?;
    if !opts.shvcp.is_file() {
        return Err(BenchError::Config(format!(
            "missing {} (cargo build --release -p shvcp)",
            opts.shvcp.display()
        )));
    }
    std::fs::create_dir_all(&opts.workdir).map_err(io("workdir"))?;
    let mut report = FilesReport::default();
    let file = opts.workdir.join("payload.bin");
    let data: Vec<u8> = (0..opts.bytes).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).map_err(io("payload"))?;
    for round in 0..opts.rounds.max(1) {
        eprintln!("round {}/{}", round + 1, opts.rounds.max(1));
        report
            .relay
            .push(tunnel::relay_bulk(opts.bytes).await?.mb_per_s);
        let broker = brokers::start(BrokerKind::Ours, &opts.ours, &opts.workdir).await?;
        let r = measure(opts, &broker, &file, &mut report).await;
        broker.stop().await;
        r?;
    }
    let _ = std::fs::remove_file(&file);
    Ok(report)
}

async fn measure(
    opts: &FilesOpts,
    broker: &brokers::RunningBroker,
    file: &Path,
    report: &mut FilesReport,
) -> Result<(), BenchError> {
    let (admin, device) = (broker.admin_url(), broker.device_url());
    let log = opts.workdir.join("shvagent-files.log");
    let agent = tunnel::Agent::start_with(
        &opts.bins,
        &device,
        &admin,
        "test/agent",
        &log,
        &["--allow-forward"],
    )
    .await?;
    let result = async {
        let cat = tunnel::bulk_cat(&opts.bins, &admin, "test/agent", opts.bytes).await?;
        report.cat.push(cat.mb_per_s);
        report.forward.push(forward(opts, &admin, 0).await?);
        let late = forward(opts, &admin, WARM_CONNECTIONS).await?;
        report.forward_late.push(late);
        let admin_arg = admin.without_secrets();
        let up = opts.workdir.join("up.bin");
        let remote = format!("test/agent:{}", up.display());
        report
            .upload
            .push(shvcp(opts, &admin_arg, &[&file.display().to_string(), &remote]).await?);
        let down = opts.workdir.join("down.bin");
        report
            .download
            .push(shvcp(opts, &admin_arg, &[&remote, &down.display().to_string()]).await?);
        for f in [up, down] {
            let got = std::fs::metadata(&f).map_err(io("copied file"))?.len();
            if got != opts.bytes {
                return Err(BenchError::Io(format!("{}: {got} bytes", f.display())));
            }
            let _ = std::fs::remove_file(f);
        }
        Ok(())
    }
    .await;
    agent.stop().await;
    result
}

/// Short connections through a forward before the measured one: a long-lived forward's
/// channel numbers count up (once past 63 its frames lost the fast path).
pub const WARM_CONNECTIONS: usize = 60;

/// `bytes` through `shvrsh -N -L` to a sink on "the device's side", on the forward's
/// connection after `warm` short ones; MB/s from the first byte sent to the last one
/// read by the sink.
async fn forward(opts: &FilesOpts, admin: &libshv::RpcUrl, warm: usize) -> Result<f64, BenchError> {
    let rsh = opts.bins.rsh.clone();
    let spawn = |lport: u16, sink_port: u16| {
        let mut c = tokio::process::Command::new(&rsh);
        c.arg(admin.without_secrets())
            .args([
                "test/agent",
                "-N",
                "-L",
                &format!("{lport}:127.0.0.1:{sink_port}"),
            ])
            .env("SHV_PASSWORD", admin.password.clone().unwrap_or_default());
        c
    };
    forward_via(spawn, opts.bytes, warm).await
}

/// `bytes` through a local port forward started by `spawn(local port, sink port)`
/// (shvrsh -N -L, ssh -N -L) to a sink here, on the forward's connection after `warm`
/// short ones; MB/s from the first byte sent to the last one read by the sink.
pub(crate) async fn forward_via(
    spawn: impl FnOnce(u16, u16) -> tokio::process::Command,
    bytes: u64,
    warm: usize,
) -> Result<f64, BenchError> {
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("sink"))?;
    let sink_port = sink.local_addr().map_err(io("sink"))?.port();
    let lport = brokers::free_port()?;
    let mut forwarder = spawn(lport, sink_port)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(io("forwarder"))?;
    let deadline = Instant::now() + TIMEOUT;
    let mut client = loop {
        if let Ok(c) = tokio::net::TcpStream::connect(("127.0.0.1", lport)).await {
            break c;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout("the forward never listened".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for _ in 0..warm {
        client.write_all(b"w").await.map_err(io("warm-up"))?;
        let (mut s, _) = tokio::time::timeout(TIMEOUT, sink.accept())
            .await
            .map_err(|_| BenchError::Timeout("warm-up connection".into()))?
            .map_err(io("sink"))?;
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.map_err(io("warm-up"))?;
        drop((s, client));
        client = tokio::net::TcpStream::connect(("127.0.0.1", lport))
            .await
            .map_err(io("forward"))?;
    }
    let reader = tokio::spawn(async move {
        let (mut s, _) = sink.accept().await?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        while got < bytes {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        Ok::<_, std::io::Error>((got, Instant::now()))
    });
    let chunk = vec![0x5au8; 256 * 1024];
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let n = chunk.len().min((bytes - sent) as usize);
        client.write_all(&chunk[..n]).await.map_err(io("forward"))?;
        sent += n as u64;
    }
    let (got, t1) = tokio::time::timeout(TIMEOUT, reader)
        .await
        .map_err(|_| BenchError::Timeout("forward transfer".into()))?
        .map_err(|e| BenchError::Io(e.to_string()))?
        .map_err(io("sink"))?;
    let _ = forwarder.kill().await;
    if got != bytes {
        return Err(BenchError::Io(format!("forward: {got} of {bytes} bytes")));
    }
    Ok(mb_per_s(bytes, t1 - t0))
}

/// One `shvcp` run (connect, tunnel, transfer, rename); MB/s over the whole run.
async fn shvcp(opts: &FilesOpts, url: &str, args: &[&str]) -> Result<f64, BenchError> {
    let password = libshv::RpcUrl::parse(url)
        .ok()
        .and_then(|u| u.password)
        .unwrap_or_else(|| "admin".into());
    let mut cmd = tokio::process::Command::new(&opts.shvcp);
    cmd.arg("-q")
        .arg(url)
        .args(args)
        .env("SHV_PASSWORD", password);
    timed_copy(cmd, "shvcp", opts.bytes).await
}

/// Runs a copy command (shvcp, scp) to its successful end; MB/s of `bytes` over the
/// whole run.
pub(crate) async fn timed_copy(
    mut cmd: tokio::process::Command,
    name: &str,
    bytes: u64,
) -> Result<f64, BenchError> {
    let t0 = Instant::now();
    let out = tokio::time::timeout(TIMEOUT, cmd.stdin(std::process::Stdio::null()).output())
        .await
        .map_err(|_| BenchError::Timeout(name.to_string()))?
        .map_err(io(name))?;
    if !out.status.success() {
        return Err(BenchError::Io(format!(
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(mb_per_s(bytes, t0.elapsed()))
}
