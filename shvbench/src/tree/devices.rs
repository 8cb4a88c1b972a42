//! The simulated devices of `shvbench tree`: a few processes (the hidden subcommand
//! `shvbench tree-devices`), each holding many light device connections, so that the
//! load generator does not share one runtime with every device and 100 000 devices
//! stay under the open-files limit of one process.
//!
//! A device logs in to its site broker as `device` with the mount point `test/devJ`,
//! answers every request as the benchmark device of [`crate::proto`] does, and
//! reconnects (0.1–0.5 s, random) when its site broker goes away. On a command line
//! on stdin, `emit RATE SECS`, the process's devices together emit RATE `chng` signals
//! a second for SECS seconds, round robin, each carrying the CLOCK_MONOTONIC time of
//! its emission in nanoseconds; the process then prints `emitted N`. It prints
//! `ready N` once its N devices are logged in the first time.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use libshv::codec::Incoming;
use libshv::{RpcFrame, RpcMessage, RpcUrl, RpcValue};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::proto::{self, Conn};
use crate::BenchError;

/// The method of the signals the devices emit.
pub const SIGNAL: &str = "chng";
/// Signals queued to one device before further ones are counted as dropped.
const DEVICE_QUEUE: usize = 256;
/// Logins in flight per process during bring-up.
const LOGIN_PARALLELISM: usize = 64;

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on this machine, so a
/// subscriber in another process can time a signal's delivery.
pub fn mono_nanos() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// What one device process is told to simulate.
#[derive(Debug, Clone)]
pub struct DeviceSet {
    /// Ports of the site brokers this process serves.
    pub ports: Vec<u16>,
    /// Devices per site broker.
    pub per_site: usize,
}

/// Runs the device process until stdin closes or says `quit`.
pub async fn serve(set: DeviceSet) -> Result<(), BenchError> {
    crate::raise_nofile_limit();
    let urls: Vec<RpcUrl> = set
        .ports
        .iter()
        .flat_map(|port| {
            (0..set.per_site).map(move |j| {
                RpcUrl::parse(&format!(
                    "tcp://device@127.0.0.1:{port}?password=device&devmount=test/dev{j}"
                ))
                .expect("a generated URL parses")
            })
        })
        .collect();
    let mut outs = Vec::with_capacity(urls.len());
    let mut devices = Vec::with_capacity(urls.len());
    for url in urls {
        let (tx, rx) = mpsc::channel::<RpcFrame>(DEVICE_QUEUE);
        outs.push(tx);
        devices.push((url, rx));
    }
    // First logins in bounded parallel (a device task is started only when a slot is
    // free); each device then lives in its own task.
    let mut pending = futures::stream::iter(devices)
        .map(|(url, rx)| {
            let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(device(url, rx, first_tx));
            first_rx
        })
        .buffer_unordered(LOGIN_PARALLELISM);
    let n = outs.len();
    while pending.next().await.is_some() {}
    let mut stdout = tokio::io::stdout();
    say(&mut stdout, &format!("ready {n}")).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["emit", rate, secs] => {
                let rate: f64 = rate.parse().unwrap_or(0.0);
                let secs: f64 = secs.parse().unwrap_or(0.0);
                let (emitted, dropped) =
                    emit(&outs, rate, Duration::from_secs_f64(secs.max(0.0))).await;
                say(&mut stdout, &format!("emitted {emitted} dropped {dropped}")).await?;
            }
            ["quit"] => break,
            _ => say(&mut stdout, &format!("error unknown command {line:?}")).await?,
        }
    }
    Ok(())
}

async fn say(out: &mut tokio::io::Stdout, line: &str) -> Result<(), BenchError> {
    let io = |e: std::io::Error| BenchError::Io(e.to_string());
    out.write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(io)?;
    out.flush().await.map_err(io)
}

/// `rate` signals a second over all devices for `time`, paced every millisecond;
/// returns how many were queued and how many were dropped because the device's queue
/// was full (a device that is reconnecting).
async fn emit(outs: &[mpsc::Sender<RpcFrame>], rate: f64, time: Duration) -> (u64, u64) {
    if outs.is_empty() || rate <= 0.0 {
        return (0, 0);
    }
    let start = Instant::now();
    let (mut emitted, mut dropped) = (0u64, 0u64);
    let mut next = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while start.elapsed() < time {
        tick.tick().await;
        let due = (rate * start.elapsed().as_secs_f64().min(time.as_secs_f64())) as u64;
        while emitted + dropped < due {
            let param = RpcValue::from(mono_nanos());
            let sig = RpcMessage::new_signal("x", SIGNAL, "get", Some(param)).into_frame();
            next = (next + 1) % outs.len();
            match outs[next].try_send(sig) {
                Ok(()) => emitted += 1,
                Err(_) => dropped += 1,
            }
        }
    }
    (emitted, dropped)
}

/// One device: logs in (again after each loss of its broker), answers requests and
/// writes the signals queued on `rx`.
async fn device(
    url: RpcUrl,
    mut rx: mpsc::Receiver<RpcFrame>,
    first: tokio::sync::oneshot::Sender<()>,
) {
    let mut first = Some(first);
    loop {
        let conn = match proto::connect_login(&url).await {
            Ok(c) => c,
            Err(_) => {
                let ms = 100 + rand_below(400);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                continue;
            }
        };
        if let Some(f) = first.take() {
            let _ = f.send(());
        }
        let closed = run_connection(conn, &mut rx).await;
        if closed {
            return;
        }
    }
}

/// Serves one connection until it breaks (false) or the process's queue closes (true).
async fn run_connection(conn: Conn, rx: &mut mpsc::Receiver<RpcFrame>) -> bool {
    let Conn {
        mut reader,
        mut writer,
    } = conn;
    loop {
        tokio::select! {
            item = reader.next() => match item {
                Some(Ok(Incoming::Frame(f))) if f.is_request() => {
                    if writer.send(proto::device_answer(&f)).await.is_err() {
                        return false;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return false,
            },
            sig = rx.recv() => {
                let Some(sig) = sig else { return true };
                if writer.feed(sig).await.is_err() {
                    return false;
                }
                while let Ok(more) = rx.try_recv() {
                    if writer.feed(more).await.is_err() {
                        return false;
                    }
                }
                if writer.flush().await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// A random number below `n`, from the thread-local generator of libshv's back-off.
fn rand_below(n: u64) -> u64 {
    use rand::Rng;
    rand::thread_rng().gen_range(0..n.max(1))
}

/// The device processes, as `shvbench tree` drives them.
pub struct DeviceProcs {
    procs: Vec<DeviceProc>,
}

struct DeviceProc {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl DeviceProc {
    async fn ask(&mut self, line: &str) -> Result<(), BenchError> {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| BenchError::Io(format!("device process: {e}")))
    }
    async fn answer(&mut self) -> Result<String, BenchError> {
        match self.stdout.next_line().await {
            Ok(Some(l)) => Ok(l),
            Ok(None) => Err(BenchError::Io("a device process exited".into())),
            Err(e) => Err(BenchError::Io(format!("device process: {e}"))),
        }
    }
}

/// The n-th number of a reply such as `emitted 10 dropped 0`.
fn number(line: &str, n: usize) -> u64 {
    line.split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok())
        .nth(n)
        .unwrap_or(0)
}

impl DeviceProcs {
    /// Starts `procs` processes of this executable (`tree-devices`), the site ports
    /// dealt out in contiguous blocks, and waits until every device has logged in.
    pub async fn start(
        ports: &[u16],
        per_site: usize,
        procs: usize,
        log: &std::path::Path,
        within: Duration,
    ) -> Result<DeviceProcs, BenchError> {
        let exe = std::env::current_exe().map_err(|e| BenchError::Io(e.to_string()))?;
        let procs = procs.clamp(1, ports.len().max(1));
        let chunk = ports.len().div_ceil(procs).max(1);
        let mut out = Vec::new();
        for (k, block) in ports.chunks(chunk).enumerate() {
            let list: Vec<String> = block.iter().map(|p| p.to_string()).collect();
            let logfile = std::fs::File::create(log.with_extension(format!("{k}.log")))
                .map_err(|e| BenchError::Io(e.to_string()))?;
            let mut child = tokio::process::Command::new(&exe)
                .arg("tree-devices")
                .arg("--ports")
                .arg(list.join(","))
                .arg("--per-site")
                .arg(per_site.to_string())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::from(logfile))
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| BenchError::Io(format!("cannot start device process: {e}")))?;
            let stdin = child.stdin.take().ok_or(BenchError::Closed)?;
            let stdout = BufReader::new(child.stdout.take().ok_or(BenchError::Closed)?).lines();
            out.push(DeviceProc {
                child,
                stdin,
                stdout,
            });
        }
        for p in &mut out {
            let line = tokio::time::timeout(within, p.answer())
                .await
                .map_err(|_| {
                    BenchError::Timeout(format!("devices did not all log in within {within:?}"))
                })??;
            if !line.starts_with("ready") {
                return Err(BenchError::Protocol(format!(
                    "device process said {line:?}"
                )));
            }
        }
        Ok(DeviceProcs { procs: out })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().filter_map(|p| p.child.id()).collect()
    }

    /// All processes emit `rate` signals a second together for `secs`; returns the
    /// signals queued and dropped.
    pub async fn emit(&mut self, rate: f64, secs: f64) -> Result<(u64, u64), BenchError> {
        let share = rate / self.procs.len() as f64;
        for p in &mut self.procs {
            p.ask(&format!("emit {share} {secs}")).await?;
        }
        let (mut emitted, mut dropped) = (0, 0);
        for p in &mut self.procs {
            let line = p.answer().await?;
            emitted += number(&line, 0);
            dropped += number(&line, 1);
        }
        Ok((emitted, dropped))
    }

    pub async fn stop(mut self) {
        for p in &mut self.procs {
            let _ = p.ask("quit").await;
        }
        for p in &mut self.procs {
            if tokio::time::timeout(Duration::from_secs(5), p.child.wait())
                .await
                .is_err()
            {
                let _ = p.child.kill().await;
            }
        }
    }
}
