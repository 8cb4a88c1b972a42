//! The load scenarios: `rpc`, `fanout` and `idle`. Every loop is bounded by a deadline
//! and every wait by a timeout, so a stuck broker makes a scenario fail, not hang.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libshv::codec::Incoming;
use libshv::url::Transport;
use libshv::{RpcMessage, RpcUrl, RpcValue};
use tokio::sync::{Barrier, Notify};
use tokio_util::sync::CancellationToken;

use crate::proto::{self, Conn};
use crate::stats::{self, Samples};
use crate::BenchError;

/// Per-call timeout during measurement: long enough for a saturated Python broker.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How many logins run at once while setting up many clients.
const LOGIN_PARALLELISM: usize = 64;
/// The signal the fanout device emits (source method `get`).
const SIGNAL: &str = "chng";

/// Where the rpc load goes.
#[derive(Clone, Debug)]
pub enum Target {
    /// A broker: callers log in with `client`, the device with `device` and mounts
    /// itself at `mount`.
    Broker {
        client: Box<RpcUrl>,
        device: Box<RpcUrl>,
        mount: String,
    },
    /// The raw relay: no login; one device connection per client.
    Relay {
        client: Box<Transport>,
        device: Box<Transport>,
    },
}

impl Target {
    pub fn broker(client: RpcUrl, mut device: RpcUrl, mount: &str) -> Self {
        device.mount_point = Some(mount.to_string());
        Target::Broker {
            client: Box::new(client),
            device: Box::new(device),
            mount: mount.to_string(),
        }
    }
    fn call_path(&self) -> &str {
        match self {
            Target::Broker { mount, .. } => mount,
            Target::Relay { .. } => "test/bench",
        }
    }
    async fn connect_client(&self) -> Result<Conn, BenchError> {
        match self {
            Target::Broker { client, .. } => proto::connect_login(client).await,
            Target::Relay { client, .. } => proto::connect_raw(client).await,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcResult {
    pub clients: usize,
    pub calls: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub calls_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Mounts the device (or, for the relay, one device connection per client) and waits
/// until a call through the target is answered.
async fn start_devices(
    target: &Target,
    clients: usize,
    stop: &CancellationToken,
) -> Result<Vec<proto::Device>, BenchError> {
    let mut devices = Vec::new();
    match target {
        Target::Broker { device, .. } => {
            let conn = proto::connect_login(device).await?;
            devices.push(proto::spawn_device(conn, stop.clone()));
        }
        Target::Relay { device, .. } => {
            for _ in 0..clients {
                let conn = proto::connect_raw(device).await?;
                devices.push(proto::spawn_device(conn, stop.clone()));
            }
        }
    }
    Ok(devices)
}

/// Calls `path:get` until it succeeds: brokers may publish a mount a moment after the
/// device's login was answered.
async fn wait_routable(conn: &mut Conn, path: &str) -> Result<(), BenchError> {
    let deadline = Instant::now() + proto::SETUP_TIMEOUT;
    let mut id = 1_000_000_000;
    loop {
        id += 1;
        let r = conn
            .call(id, path, "get", None, proto::SETUP_TIMEOUT)
            .await?;
        match r.result() {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(BenchError::Rpc(format!("{path}:get never answered: {e}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `clients` callers, each with one outstanding `get` on the device, for `duration`.
pub async fn rpc(
    target: &Target,
    clients: usize,
    duration: Duration,
) -> Result<RpcResult, BenchError> {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let _devices = start_devices(target, clients, &stop).await?;
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(target.connect_client().await?);
    }
    let path = target.call_path().to_string();
    wait_routable(&mut conns[0], &path).await?;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut tasks = Vec::with_capacity(clients);
    for (i, mut conn) in conns.into_iter().enumerate() {
        let barrier = barrier.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let start = Instant::now();
            let deadline = start + duration;
            let mut samples = Samples::with_capacity(4096);
            let mut errors = 0u64;
            // Request ids are unique per connection; the brokers add CallerIds.
            let mut id = (i as i64 + 1) * 10_000_000;
            while Instant::now() < deadline {
                id += 1;
                let t0 = Instant::now();
                match conn
                    .call(id, &path, "get", Some(RpcValue::from(id)), CALL_TIMEOUT)
                    .await
                {
                    Ok(m) if m.result().is_ok() => {
                        samples.push_nanos(t0.elapsed().as_nanos() as i64);
                    }
                    Ok(_) => errors += 1,
                    Err(e) => {
                        tracing::warn!("rpc client {i}: {e}");
                        errors += 1;
                        break;
                    }
                }
            }
            (samples, errors, Instant::now())
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut all = Samples::default();
    let mut errors = 0;
    let mut end = start;
    for t in tasks {
        let (s, e, finished) = t
            .await
            .map_err(|e| BenchError::Io(format!("client task: {e}")))?;
        all.extend(s);
        errors += e;
        end = end.max(finished);
    }
    let elapsed = end.duration_since(start);
    let calls = all.len() as u64;
    Ok(RpcResult {
        clients,
        calls,
        errors,
        elapsed,
        calls_per_s: calls as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_us: all.percentile(50.0),
        p99_us: all.percentile(99.0),
    })
}

#[derive(Debug, Clone)]
pub struct FanoutResult {
    pub subscribers: usize,
    pub emitted: u64,
    pub delivered: u64,
    /// emitted × subscribers: what should have arrived.
    pub expected: u64,
    pub elapsed: Duration,
    pub delivered_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Flow control shared by the emitter and the subscribers.
struct FanoutShared {
    delivered: AtomicU64,
    /// When the latest signal arrived ([`stats::now_nanos`]): the rate is computed up to
    /// it, so a drain wait for signals a broker lost does not dilute the rate.
    last_delivery: AtomicI64,
    emitter_waiting: AtomicBool,
    progress: Notify,
}

/// One device emits `chng` signals (param: the emit timestamp) to `subscribers`
/// subscribers for `duration`. The emitter keeps at most `window` signals per
/// subscriber in flight on average, so brokers are measured at their delivery rate
/// rather than by how much they can buffer (ours disconnects a client whose queue
/// overflows).
pub async fn fanout(
    client: &RpcUrl,
    device: &RpcUrl,
    mount: &str,
    subscribers: usize,
    duration: Duration,
    window: u64,
) -> Result<FanoutResult, BenchError> {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let mut device_url = device.clone();
    device_url.mount_point = Some(mount.to_string());
    let dev = proto::spawn_device(proto::connect_login(&device_url).await?, stop.clone());
    // Signals are only emitted once the mount is routable; one probe suffices.
    let mut probe = proto::connect_login(client).await?;
    wait_routable(&mut probe, mount).await?;
    drop(probe);
    let ri = format!("{mount}/**:*:{SIGNAL}");
    let subs: Vec<Result<Conn, BenchError>> = futures::stream::iter(0..subscribers)
        .map(|_| {
            let ri = ri.clone();
            async move {
                let mut c = proto::connect_login(client).await?;
                c.subscribe(1, &ri).await?;
                Ok(c)
            }
        })
        .buffer_unordered(LOGIN_PARALLELISM)
        .collect()
        .await;
    let shared = Arc::new(FanoutShared {
        delivered: AtomicU64::new(0),
        last_delivery: AtomicI64::new(0),
        emitter_waiting: AtomicBool::new(false),
        progress: Notify::new(),
    });
    let mut tasks = Vec::with_capacity(subscribers);
    for c in subs {
        let Conn { mut reader, writer } = c?;
        let shared = shared.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            // Dropping the write half would shut the socket down for writing, and the
            // brokers take that as a disconnect: it lives as long as the reader.
            let _writer = writer;
            let mut samples = Samples::with_capacity(4096);
            loop {
                let item = tokio::select! {
                    _ = stop.cancelled() => break,
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
                let now = stats::now_nanos();
                if let Some(ts) = RpcMessage::from_frame(&f)
                    .ok()
                    .and_then(|m| m.param().map(|p| p.as_int()))
                {
                    samples.push_nanos(now - ts);
                }
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                shared.last_delivery.store(now, Ordering::Relaxed);
                if shared.emitter_waiting.load(Ordering::Relaxed) {
                    shared.progress.notify_one();
                }
            }
            samples
        }));
    }
    let m = subscribers as u64;
    let start = Instant::now();
    let start_nanos = stats::now_nanos();
    let deadline = start + duration;
    let mut emitted = 0u64;
    while Instant::now() < deadline {
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if emitted * m >= delivered + window * m {
            shared.emitter_waiting.store(true, Ordering::Relaxed);
            // The timeout covers a notify that raced with setting the flag.
            let _ =
                tokio::time::timeout(Duration::from_millis(5), shared.progress.notified()).await;
            shared.emitter_waiting.store(false, Ordering::Relaxed);
            continue;
        }
        let param = RpcValue::from(stats::now_nanos());
        let sig = RpcMessage::new_signal("x", SIGNAL, "get", Some(param)).into_frame();
        if dev.out.send(sig).await.is_err() {
            return Err(BenchError::Closed);
        }
        emitted += 1;
    }
    // Drain: what was emitted may still be on its way.
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while shared.delivered.load(Ordering::Relaxed) < emitted * m && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let last = shared.last_delivery.load(Ordering::Relaxed);
    let elapsed = if last > start_nanos {
        Duration::from_nanos((last - start_nanos) as u64)
    } else {
        start.elapsed()
    };
    stop.cancel();
    let mut all = Samples::default();
    for t in tasks {
        all.extend(
            t.await
                .map_err(|e| BenchError::Io(format!("subscriber task: {e}")))?,
        );
    }
    let delivered = shared.delivered.load(Ordering::Relaxed);
    Ok(FanoutResult {
        subscribers,
        emitted,
        delivered,
        expected: emitted * m,
        elapsed,
        delivered_per_s: delivered as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_us: all.percentile(50.0),
        p99_us: all.percentile(99.0),
    })
}

#[derive(Debug, Clone)]
pub struct IdleResult {
    pub clients: usize,
    pub connected: usize,
    pub login_secs: f64,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// (after − before) / connected, KiB.
    pub kib_per_client: Option<f64>,
}

/// VmRSS of a process in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `clients` logged-in clients that then do nothing; the broker's RSS is read before
/// and after (when its pid is known).
pub async fn idle(
    url: &RpcUrl,
    clients: usize,
    broker_pid: Option<u32>,
) -> Result<IdleResult, BenchError> {
    let rss_before = broker_pid.and_then(rss_kib);
    let t0 = Instant::now();
    let conns: Vec<Result<Conn, BenchError>> = futures::stream::iter(0..clients)
        .map(|_| proto::connect_login(url))
        .buffer_unordered(LOGIN_PARALLELISM)
        .collect()
        .await;
    let login_secs = t0.elapsed().as_secs_f64();
    // Keep only the sockets: the codec buffers (64 KiB each) would make this process,
    // not the broker, the memory hog.
    let mut held = Vec::with_capacity(clients);
    let mut first_error = None;
    for c in conns {
        match c {
            Ok(c) => held.push((c.reader.into_inner(), c.writer.into_inner())),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = &first_error {
        tracing::warn!(
            "idle: {} of {clients} logins failed, first: {e}",
            clients - held.len()
        );
    }
    // Let the broker finish whatever it does after a login (lsmod, bookkeeping).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = broker_pid.and_then(rss_kib);
    let connected = held.len();
    drop(held);
    if connected == 0 {
        return Err(first_error.unwrap_or(BenchError::Closed));
    }
    let kib_per_client = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some((a as f64 - b as f64) / connected as f64),
        _ => None,
    };
    Ok(IdleResult {
        clients,
        connected,
        login_secs,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        kib_per_client,
    })
}
