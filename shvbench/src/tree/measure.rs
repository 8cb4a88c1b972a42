//! What `shvbench tree` measures through a broker of the tree: how long until every
//! device answers, call latency, `ls` of wide nodes, signals to one subscriber, and
//! a broker's CPU while it works.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libshv::codec::Incoming;
use libshv::{RpcMessage, RpcUrl};
use tokio_util::sync::CancellationToken;

use super::devices::{mono_nanos, SIGNAL};
use crate::proto::{self, Conn};
use crate::stats::Samples;
use crate::BenchError;

/// How long one probing call may take before it counts as failed and is retried.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before a failed probe of a device is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Logs in to `url`, retrying until `deadline` (a broker that has just been started
/// again may still be reading its config).
async fn connect_until(url: &RpcUrl, deadline: Instant) -> Result<Conn, BenchError> {
    loop {
        match proto::connect_login(url).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

/// Calls `PATH:get` on every path through `url` with `workers` connections until
/// each has answered once, retrying failures; returns how many calls failed on the
/// way. Errors when `within` passes first.
pub async fn until_all_answer(
    url: &RpcUrl,
    paths: Vec<String>,
    workers: usize,
    within: Duration,
) -> Result<u64, BenchError> {
    let deadline = Instant::now() + within;
    let total = paths.len();
    let queue = Arc::new(Mutex::new(VecDeque::from(paths)));
    let failed = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..workers.max(1))
        .map(|w| {
            let (url, queue, failed, answered) =
                (url.clone(), queue.clone(), failed.clone(), answered.clone());
            tokio::spawn(async move {
                let mut conn = connect_until(&url, deadline).await?;
                let mut id = (w as i64) << 32;
                loop {
                    let Some(path) = queue.lock().expect("queue lock").pop_front() else {
                        return Ok::<(), BenchError>(());
                    };
                    id += 1;
                    let ok = match conn.call(id, &path, "get", None, PROBE_TIMEOUT).await {
                        Ok(m) => m.result().is_ok(),
                        Err(BenchError::Timeout(_)) => false,
                        Err(_) => {
                            // The connection broke (the broker went away): a new one.
                            conn = connect_until(&url, deadline).await?;
                            false
                        }
                    };
                    if ok {
                        answered.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    failed.fetch_add(1, Ordering::Relaxed);
                    queue.lock().expect("queue lock").push_back(path);
                    if Instant::now() > deadline {
                        return Err(BenchError::Timeout(format!(
                            "{} of {total} devices answered within {within:?}",
                            answered.load(Ordering::Relaxed)
                        )));
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await
            .map_err(|e| BenchError::Io(format!("probe task: {e}")))??;
    }
    Ok(failed.load(Ordering::Relaxed))
}

/// `n` sequential `get` calls, path after path round robin; latency samples.
pub async fn latency(url: &RpcUrl, paths: &[String], n: usize) -> Result<Samples, BenchError> {
    let mut conn = proto::connect_login(url).await?;
    let mut samples = Samples::with_capacity(n);
    for i in 0..n {
        let path = &paths[i % paths.len().max(1)];
        let t = Instant::now();
        conn.call(i as i64 + 1, path, "get", None, PROBE_TIMEOUT)
            .await?
            .result()
            .map_err(|e| BenchError::Rpc(format!("{path}:get: {e}")))?;
        samples.push_nanos(t.elapsed().as_nanos() as i64);
    }
    Ok(samples)
}

/// Calls that answered and calls that failed (an error, a timeout or a broken
/// connection, after which the caller logs in again).
#[derive(Debug, Clone, Copy, Default)]
pub struct Calls {
    pub ok: u64,
    pub failed: u64,
    pub secs: f64,
}

impl Calls {
    pub fn per_s(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }
}

/// `clients` connections each with one call in flight for `time`, to paths spread
/// over them; failures are counted, not fatal.
pub async fn calls(
    url: &RpcUrl,
    paths: &[String],
    clients: usize,
    time: Duration,
) -> Result<Calls, BenchError> {
    let paths = Arc::new(paths.to_vec());
    let start = Instant::now();
    let deadline = start + time;
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|c| {
            let (url, paths) = (url.clone(), paths.clone());
            tokio::spawn(async move {
                let mut conn = proto::connect_login(&url).await?;
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut i = c * 7919;
                let mut id = 0;
                while Instant::now() < deadline {
                    i = i.wrapping_add(104_729);
                    id += 1;
                    let path = &paths[i % paths.len()];
                    match conn.call(id, path, "get", None, PROBE_TIMEOUT).await {
                        Ok(m) if m.result().is_ok() => ok += 1,
                        Ok(_) | Err(BenchError::Timeout(_)) => failed += 1,
                        Err(_) => {
                            failed += 1;
                            conn = connect_until(&url, deadline + PROBE_TIMEOUT).await?;
                        }
                    }
                }
                Ok::<(u64, u64), BenchError>((ok, failed))
            })
        })
        .collect();
    let mut total = Calls::default();
    for t in tasks {
        let (ok, failed) = t
            .await
            .map_err(|e| BenchError::Io(format!("caller task: {e}")))??;
        total.ok += ok;
        total.failed += failed;
    }
    total.secs = start.elapsed().as_secs_f64();
    Ok(total)
}

/// `n` calls of `ls` on `path`; latency samples and the number of names listed.
pub async fn ls(url: &RpcUrl, path: &str, n: usize) -> Result<(Samples, usize), BenchError> {
    let mut conn = proto::connect_login(url).await?;
    let mut samples = Samples::with_capacity(n);
    let mut names = 0;
    for i in 0..n.max(1) {
        let t = Instant::now();
        let r = conn
            .call(i as i64 + 1, path, "ls", None, PROBE_TIMEOUT)
            .await?
            .result()
            .map_err(|e| BenchError::Rpc(format!("{path}:ls: {e}")))?;
        samples.push_nanos(t.elapsed().as_nanos() as i64);
        names = r.as_list().len();
    }
    Ok((samples, names))
}

/// One subscriber of `RI` on a broker, timing each `chng` signal's delivery.
pub struct Subscriber {
    shared: Arc<SubShared>,
    stop: CancellationToken,
}

#[derive(Default)]
struct SubShared {
    delivered: AtomicU64,
    /// CLOCK_MONOTONIC ns of the last delivery.
    last: AtomicU64,
    samples: Mutex<Samples>,
}

impl Subscriber {
    pub async fn start(url: &RpcUrl, ri: &str) -> Result<Subscriber, BenchError> {
        let mut conn = proto::connect_login(url).await?;
        conn.subscribe(1, ri).await?;
        let shared = Arc::new(SubShared::default());
        let stop = CancellationToken::new();
        let (s, st) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            let Conn { mut reader, writer } = conn;
            // The write half lives as long as the reader: dropping it would end the
            // session.
            let _writer = writer;
            loop {
                let item = tokio::select! {
                    _ = st.cancelled() => break,
                    i = reader.next() => i,
                };
                let f = match item {
                    Some(Ok(Incoming::Frame(f))) => f,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break,
                };
                if !f.is_signal() || f.method() != Some(SIGNAL) {
                    continue;
                }
                let now = mono_nanos();
                if let Some(ts) = RpcMessage::from_frame(&f)
                    .ok()
                    .and_then(|m| m.param().map(|p| p.as_int()))
                {
                    s.samples.lock().expect("samples lock").push_nanos(now - ts);
                }
                s.delivered.fetch_add(1, Ordering::Relaxed);
                s.last.store(now as u64, Ordering::Relaxed);
            }
        });
        Ok(Subscriber { shared, stop })
    }

    /// Forgets what was delivered so far.
    pub fn reset(&self) {
        self.shared.delivered.store(0, Ordering::Relaxed);
        *self.shared.samples.lock().expect("samples lock") = Samples::default();
    }

    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    /// CLOCK_MONOTONIC ns of the last delivery.
    pub fn last_delivery(&self) -> i64 {
        self.shared.last.load(Ordering::Relaxed) as i64
    }

    pub fn take_samples(&self) -> Samples {
        std::mem::take(&mut *self.shared.samples.lock().expect("samples lock"))
    }

    /// Waits until `expected` were delivered or none came for `quiet`.
    pub async fn drain(&self, expected: u64, quiet: Duration) {
        let mut seen = self.delivered();
        let mut since = Instant::now();
        while self.delivered() < expected && since.elapsed() < quiet {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = self.delivered();
            if now != seen {
                seen = now;
                since = Instant::now();
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Samples a process's CPU time every 100 ms until stopped: the busiest 100 ms as a
/// percentage of one core, and the CPU seconds in all.
pub struct CpuWatch {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<(f64, f64)>,
}

impl CpuWatch {
    pub fn start(pid: u32) -> CpuWatch {
        let stop = CancellationToken::new();
        let st = stop.clone();
        let task = tokio::spawn(async move {
            let cpu = || crate::ssh::cpu::process_cpu(pid).as_secs_f64();
            let first = cpu();
            let (mut last, mut t_last) = (first, Instant::now());
            let mut peak = 0.0f64;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = st.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let (now, t) = (cpu(), Instant::now());
                let dt = t.duration_since(t_last).as_secs_f64();
                if dt > 0.05 {
                    peak = peak.max((now - last) / dt * 100.0);
                    (last, t_last) = (now, t);
                }
            }
            (peak, cpu() - first)
        });
        CpuWatch { stop, task }
    }

    /// (peak % of one core over 100 ms, CPU seconds).
    pub async fn finish(self) -> (f64, f64) {
        self.stop.cancel();
        self.task.await.unwrap_or((f64::NAN, f64::NAN))
    }
}
