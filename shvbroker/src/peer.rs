//! One client connection: the login phase, then frames to the broker task, and a writer
//! task draining this peer's bounded queue onto its socket.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use libshv::codec::BlockCodec;
use libshv::codec::Incoming;
use libshv::connection::{BoxRead, BoxWrite, FrameReader};
use libshv::login::{sha1_hex, sha1_login};
use libshv::logsafe::shown;
use libshv::message::{code, RpcError, RpcMessage};
use libshv::writer::{write_batch, OutgoingCodec, OutgoingWriter};
use libshv::{RpcFrame, RpcValue};
use rand::Rng;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;

use crate::access::Grants;
use crate::config::Config;
pub use crate::queue::Outgoing;
use crate::queue::{self, QueueReceiver, QueueSender};

pub use crate::events::{Event, LoginInfo, Registration};
pub use crate::peers::PeerId;

/// What every connection task shares.
pub struct PeerContext {
    pub config: Arc<Config>,
    pub next_id: std::sync::atomic::AtomicI64,
    pub events: mpsc::Sender<Event>,
    pub shutdown: CancellationToken,
    pub login_failures: LoginFailures,
    /// Bytes of frames on their way from peer tasks to the broker task: the event
    /// channel is bounded in frames, this bounds it in bytes.
    pub inflight: Arc<Semaphore>,
    /// Bytes queued to all peers together (`limits.outgoing_bytes`).
    pub outgoing: Arc<queue::Total>,
    /// Connections in all and those not logged in yet (bounded).
    pub admission: Arc<crate::admission::Admission>,
    /// The memory of frames being read, per user and in all.
    pub read_budgets: crate::reading::ReadBudgets,
}

impl PeerContext {
    pub fn new(
        config: Arc<Config>,
        events: mpsc::Sender<Event>,
        shutdown: CancellationToken,
        outgoing: Arc<queue::Total>,
    ) -> PeerContext {
        let inflight = Arc::new(Semaphore::new(config.limits.inflight_bytes));
        let admission = crate::admission::Admission::new(
            config.limits.max_unauthenticated,
            config.limits.max_unauthenticated_per_address,
            crate::admission::connection_cap(config.limits.max_connections),
        );
        let l = &config.limits;
        let read_budgets = crate::reading::ReadBudgets::new(
            l.read_bytes,
            l.read_bytes_per_user,
            Duration::from_secs(l.frame_timeout),
        );
        PeerContext {
            outgoing,
            admission,
            read_budgets,
            config,
            next_id: std::sync::atomic::AtomicI64::new(0),
            events,
            shutdown,
            login_failures: LoginFailures::default(),
            inflight,
        }
    }

    /// A bounded outgoing queue for a new connection.
    pub fn queue(&self) -> (QueueSender, QueueReceiver) {
        let l = &self.config.limits;
        queue::channel(l.client_queue, l.client_queue_bytes, self.outgoing.clone())
    }
}

/// Recent failed logins per source address. Failed answers to one address are spaced
/// out one after another, whatever the number of connections they come by: N parallel
/// connections guess no faster than one. Entries fade after [`FAILURE_MEMORY`].
#[derive(Default)]
pub struct LoginFailures(std::sync::Mutex<std::collections::HashMap<String, SourceFailures>>);

struct SourceFailures {
    count: u32,
    last: std::time::Instant,
    /// When the next failed answer to this address may go out.
    next_slot: std::time::Instant,
}

const FAILURE_MEMORY: Duration = Duration::from_secs(300);
/// The longest a failed login's answer is held back.
const MAX_PENALTY: Duration = Duration::from_secs(16);
/// Source addresses remembered at most (a fresh one beyond that gets only the
/// per-connection throttle).
const MAX_SOURCES: usize = 10_000;

impl LoginFailures {
    /// Records a failure from `addr` (the `conn_failures`-th on its connection) and
    /// returns how long to wait before answering it.
    fn penalty(&self, addr: &str, conn_failures: u32) -> Duration {
        let now = std::time::Instant::now();
        let delay = |level: u32| Duration::from_millis(250u64 << level.min(5));
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let source = source_of(addr);
        if !map.contains_key(source) && map.len() >= MAX_SOURCES {
            map.retain(|_, e| now.duration_since(e.last) < FAILURE_MEMORY);
            if map.len() >= MAX_SOURCES {
                return delay(conn_failures);
            }
        }
        let e = map.entry(source.to_string()).or_insert(SourceFailures {
            count: 0,
            last: now,
            next_slot: now,
        });
        if now.duration_since(e.last) >= FAILURE_MEMORY {
            e.count = 0;
        }
        e.count = e.count.saturating_add(1);
        e.last = now;
        // Each failure on this connection, and every fourth recent one from the same
        // address, doubles the delay, up to 8 s; answers queue up behind each other.
        let slot = e.next_slot.max(now) + delay(conn_failures.max(e.count / 4));
        // Queued answers wait at most this long, so that a flood from one address
        // (or from all local users: unix sockets are one source) cannot push every
        // later failed answer past the login timeout.
        let slot = slot.min(now + MAX_PENALTY);
        e.next_slot = slot;
        slot - now
    }
}

/// The address part of `ip:port` (unix sockets count as one source).
fn source_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(addr)
}

/// Serves one connection until it ends. Its client id is given at each successful
/// login (a new one after ResetSession), as pySHV does: ids count logins, not sockets.
/// `ticket` is its place among the connections not logged in, given back at login;
/// `meter` meters what a framing bridge below gathers, charged like frames once the
/// connection has logged in.
pub async fn run(
    read: BoxRead,
    write: BoxWrite,
    addr: String,
    ctx: Arc<PeerContext>,
    ticket: crate::admission::Ticket,
    meter: Option<libshv::reader::Meter>,
) {
    let limits = &ctx.config.limits;
    let mut reader = FrameReader::new(read, BlockCodec::new(limits.max_frame_size));
    let write: BoxWrite = match limits.write_stall_timeout {
        0 => write,
        s => Box::pin(crate::stall::StallGuard::new(write, Duration::from_secs(s))),
    };
    let writer = FramedWrite::new(write, OutgoingCodec);
    let (tx, rx) = ctx.queue();
    let cancel = ctx.shutdown.child_token();
    let writer_task = tokio::spawn(write_loop(writer, rx, cancel.clone(), addr.clone()));
    tracing::debug!(addr = %shown(&addr), "connected");
    let mut conn = Conn {
        id: NOT_LOGGED_IN,
        tx,
        cancel: cancel.clone(),
        addr,
        ctx: ctx.clone(),
        bad_frames: Default::default(),
        ticket: Some(ticket),
        readmission: None,
        budget: None,
    };
    loop {
        // Boxed: the login phase's state (timers, the login decoding) lives on the heap
        // only while it runs, instead of enlarging every idle connection's task.
        let Some(idle) = Box::pin(conn.login_phase(&mut reader)).await else {
            // A login cut off while the broker task registered it: let it forget.
            if conn.id != NOT_LOGGED_IN {
                let _ = ctx.events.send(Event::Gone(conn.id)).await;
            }
            break;
        };
        conn.logged_in();
        // Logged in: frames beyond the free window are charged to the user's budget
        // (before login they are small, and bridges are capped by the ticket).
        let budget = conn.budget.take();
        if let Some(m) = &meter {
            m.set_budget(budget.clone());
        }
        reader.set_budget(budget);
        let reset = conn.serve(&mut reader, idle).await;
        reader.set_budget(None);
        if let Some(m) = &meter {
            m.set_budget(None);
        }
        let _ = ctx.events.send(Event::Gone(conn.id)).await;
        if !reset {
            break;
        }
        tracing::debug!(peer = conn.id, "ResetSession: back to login");
        conn.id = NOT_LOGGED_IN;
        // Not logged in again: counted and capped like a new connection.
        match conn.readmission.as_ref().map(|r| r.again()) {
            Some(Ok(ticket)) => conn.ticket = Some(ticket),
            Some(Err(why)) => {
                tracing::info!(addr = %shown(&conn.addr), "closing after ResetSession: {}", why.describe());
                break;
            }
            None => {}
        }
        // Its bad frames as a logged-in client do not count against the new login.
        conn.bad_frames
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }
    cancel.cancel();
    let id = conn.id;
    let bad = conn.bad_frames.load(std::sync::atomic::Ordering::Relaxed);
    if bad > BAD_FRAMES_LOGGED {
        tracing::info!(peer = id, addr = %shown(&conn.addr), "{bad} bad frames dropped in all");
    }
    drop(conn);
    let _ = writer_task.await;
    tracing::debug!(peer = id, "disconnected");
}

/// Why a login did not succeed.
enum Failed {
    /// Wrong credentials or a malformed login: counts toward the failed-login delay of
    /// the source address.
    Denied(RpcError),
    /// The password was right, but the broker refused the session (a mount point, the
    /// user's session limit): no delay.
    Refused(RpcError),
}

/// The answer to a request before login (pySHV's text, which peers match).
const LOGIN_REQUIRED_MSG: &str = "Use login method (login required)";

/// The id of a connection that has not logged in (yet, or again after ResetSession).
const NOT_LOGGED_IN: PeerId = -1;

pub(crate) struct Conn {
    pub(crate) id: PeerId,
    pub(crate) tx: QueueSender,
    pub(crate) cancel: CancellationToken,
    pub(crate) addr: String,
    pub(crate) ctx: Arc<PeerContext>,
    /// Frames that were not messages (see [`Conn::bad_frame`]).
    pub(crate) bad_frames: std::sync::atomic::AtomicU32,
    /// Its place among the connections not logged in (and the pre-login byte cap of
    /// its bridge, if any): given back once its credentials are verified.
    pub(crate) ticket: Option<crate::admission::Ticket>,
    /// What the ticket became at login (to take it again after ResetSession).
    pub(crate) readmission: Option<crate::admission::Readmission>,
    /// The read budget of whom it logged in as, between login and serving.
    pub(crate) budget: Option<libshv::reader::ReadBudget>,
}

/// Bad frames logged per connection; after these, only a count when it ends.
const BAD_FRAMES_LOGGED: u32 = 3;
/// Bad frames a connection may send before login: a peer that sends garbage is not
/// speaking SHV (one zero byte is a frame: without a bound, a log line per byte).
const BAD_FRAMES_BEFORE_LOGIN: u32 = 16;

enum Read {
    Frame(RpcFrame),
    Reset,
    Skip,
    Closed,
}

impl Conn {
    /// The connection has logged in (or its password is verified): its ticket among
    /// the connections not logged in goes, and the pre-login byte cap with it.
    fn logged_in(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.readmission = Some(t.logged_in());
        }
    }

    /// A frame that is not a message: dropped, logged only the first few times; before
    /// login a few of them close the connection.
    fn bad_frame(&self, why: &str) -> Read {
        use std::sync::atomic::Ordering;
        let n = self
            .bad_frames
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if n <= BAD_FRAMES_LOGGED {
            tracing::warn!(peer = self.id, addr = %shown(&self.addr), "bad frame dropped: {}", shown(why));
            if n == BAD_FRAMES_LOGGED {
                tracing::warn!(peer = self.id, addr = %shown(&self.addr), "further bad frames of this connection are not logged");
            }
        }
        if self.id == NOT_LOGGED_IN && n >= BAD_FRAMES_BEFORE_LOGIN {
            tracing::info!(peer = self.id, addr = %shown(&self.addr), "{n} bad frames before login, disconnecting");
            return Read::Closed;
        }
        Read::Skip
    }

    async fn respond(&self, request: &RpcFrame, result: Result<RpcValue, RpcError>) {
        let msg = RpcMessage::response_to(&request.meta).with_result_or_error(result);
        let _ = self.tx.send(msg.into_frame()).await;
    }

    /// Reads the next frame, answering what needs no broker state (oversized requests).
    async fn next(&self, reader: &mut FrameReader, watchdog: Option<&mut Watchdog>) -> Read {
        let item = tokio::select! {
            _ = self.cancel.cancelled() => return Read::Closed,
            t = async {
                match watchdog {
                    Some(w) => w.expired().await,
                    None => std::future::pending().await,
                }
            } => Err(t),
            r = reader.next() => Ok(r),
        };
        match item {
            Err(t) => {
                tracing::info!(peer = self.id, addr = %shown(&self.addr), "no frame for {t:?}, disconnecting");
                Read::Closed
            }
            Ok(None) => Read::Closed,
            Ok(Some(Err(e))) => {
                tracing::info!(peer = self.id, addr = %shown(&self.addr), "stream error, disconnecting: {}", shown(&e.to_string()));
                Read::Closed
            }
            Ok(Some(Ok(Incoming::Frame(f)))) => Read::Frame(f),
            Ok(Some(Ok(Incoming::ResetSession))) => Read::Reset,
            Ok(Some(Ok(Incoming::Invalid(why)))) => self.bad_frame(&why.to_string()),
            Ok(Some(Ok(Incoming::Oversized { size, format, head }))) => {
                tracing::warn!(peer = self.id, addr = %shown(&self.addr), size, "oversized frame skipped");
                if format != libshv::frame::FORMAT_CHAINPACK {
                    // Not even a message: the peer is not speaking our protocol.
                    return Read::Closed;
                }
                if let Some(meta) = partial_meta(&head) {
                    let f = RpcFrame {
                        meta,
                        body: Default::default(),
                    };
                    if f.is_request() {
                        let limit = self.ctx.config.limits.max_frame_size;
                        let err = RpcError::new(
                            code::REQUEST_INVALID,
                            format!("frame of {size} bytes exceeds the limit of {limit}"),
                        );
                        self.respond(&f, Err(err)).await;
                    }
                }
                Read::Skip
            }
        }
    }

    /// hello / workflows / login. Returns the idle timeout to use once logged in, or
    /// None when the connection must close. The whole phase, not just each read, is
    /// bounded by `login_timeout`: a client that floods `hello` and never reads its
    /// answers blocks on its full queue, and is cut off all the same.
    async fn login_phase(&mut self, reader: &mut FrameReader) -> Option<Option<Duration>> {
        let limit = Duration::from_secs(self.ctx.config.limits.login_timeout);
        // Before login frames are small: larger ones are drained, never buffered.
        reader.decoder_mut().set_max_frame(MAX_LOGIN_FRAME);
        // The pool of connections not logged in may evict this one to make room.
        let evicted = self
            .ticket
            .as_ref()
            .map(|t| t.eviction())
            .unwrap_or_default();
        let outcome = tokio::select! {
            o = tokio::time::timeout(limit, self.login_steps(reader)) => Some(o),
            _ = evicted.cancelled() => None,
        };
        reader
            .decoder_mut()
            .set_max_frame(self.ctx.config.limits.max_frame_size);
        match outcome {
            Some(Ok(r)) => r,
            Some(Err(_)) => {
                tracing::info!(peer = self.id, addr = %shown(&self.addr), "no login within {limit:?}, disconnecting");
                None
            }
            None => {
                // Logged once per burst by the pool's owner, not per connection.
                tracing::debug!(addr = %shown(&self.addr), "evicted before login to make room");
                None
            }
        }
    }

    async fn login_steps(&mut self, reader: &mut FrameReader) -> Option<Option<Duration>> {
        let config = self.ctx.config.clone();
        let nonce: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        let mut failures = 0u32;
        loop {
            let frame = match self.next(reader, None).await {
                Read::Frame(f) => f,
                Read::Reset | Read::Skip => continue,
                Read::Closed => return None,
            };
            if !frame.is_request() {
                continue;
            }
            if frame.body.len() > MAX_LOGIN_FRAME {
                let e = RpcError::invalid_param(format!(
                    "a request before login may have at most {MAX_LOGIN_FRAME} bytes"
                ));
                self.respond(&frame, Err(e)).await;
                continue;
            }
            if !frame.shv_path().is_empty() {
                self.respond(
                    &frame,
                    Err(RpcError::new(code::LOGIN_REQUIRED, LOGIN_REQUIRED_MSG)),
                )
                .await;
                continue;
            }
            match frame.method().unwrap_or("") {
                "hello" => {
                    let mut m = shvproto::Map::new();
                    m.insert("nonce".into(), nonce.as_str().into());
                    self.respond(&frame, Ok(m.into())).await;
                }
                "workflows" => {
                    let l = vec![RpcValue::from("PLAIN"), RpcValue::from("SHA1")];
                    self.respond(&frame, Ok(l.into())).await;
                }
                "login" => {
                    let param = RpcMessage::from_frame(&frame)
                        .ok()
                        .and_then(|m| m.param().cloned());
                    let parsed = param
                        .as_ref()
                        .map(|p| parse_login(p))
                        .unwrap_or(Err("missing login parameter"));
                    let outcome = match parsed {
                        Err(why) => Err(Failed::Denied(RpcError::invalid_param(format!(
                            "invalid login: {why}"
                        )))),
                        Ok(req) => self.try_login(&config, &nonce, req, &frame).await,
                    };
                    match outcome {
                        Ok(idle) => {
                            // Answered by the broker task on registration.
                            return Some(idle);
                        }
                        Err(failed) => {
                            failures += 1;
                            let err = match failed {
                                Failed::Denied(err) => {
                                    let delay =
                                        self.ctx.login_failures.penalty(&self.addr, failures);
                                    tokio::time::sleep(delay).await;
                                    err
                                }
                                // The password was right: no reason to slow down the
                                // other logins from this address.
                                Failed::Refused(err) => err,
                            };
                            self.respond(&frame, Err(err)).await;
                            if failures >= config.limits.login_attempts {
                                tracing::info!(peer = self.id, addr = %shown(&self.addr), "too many failed logins, disconnecting");
                                return None;
                            }
                        }
                    }
                }
                _ => {
                    self.respond(
                        &frame,
                        Err(RpcError::new(code::LOGIN_REQUIRED, LOGIN_REQUIRED_MSG)),
                    )
                    .await;
                }
            }
        }
    }

    async fn try_login(
        &mut self,
        config: &Config,
        nonce: &str,
        req: LoginRequest,
        request: &RpcFrame,
    ) -> Result<Option<Duration>, Failed> {
        // A client may lengthen its watchdog, within limits.max_idle_timeout, but not
        // switch off the broker's own: asking for none (0) gets the longest.
        let longest = Duration::from_secs(config.limits.max_idle_timeout);
        let idle = Some(
            match req.idle_timeout.unwrap_or(config.limits.idle_timeout) {
                0 => longest,
                s => Duration::from_secs(s).min(longest),
            },
        );
        // A tunnel secret is checked by the broker task: a wrong one is a failed login
        // like a wrong password (it is what an unauthenticated sender guesses at).
        let is_tunnel = req.tunnel_secret.is_some();
        self.budget = Some(match is_tunnel {
            true => self.ctx.read_budgets.for_tunnel_end(&self.addr),
            false => self.ctx.read_budgets.for_user(&req.user),
        });
        let login = if let Some(secret) = req.tunnel_secret {
            LoginInfo::Tunnel { secret }
        } else {
            // One message for a wrong password and an unknown user: never reveal which.
            let denied = || {
                RpcError::new(
                    code::METHOD_CALL_EXCEPTION,
                    "Invalid login: wrong user name or password",
                )
            };
            let stored = config.user_sha1(&req.user);
            let ok = match (&stored, req.kind.as_str()) {
                (Some(h), "PLAIN") => constant_time_eq(&sha1_hex(req.password.as_bytes()), h),
                (Some(h), "SHA1") => {
                    constant_time_eq(&sha1_login(nonce, h), &req.password.to_ascii_lowercase())
                }
                (_, "PLAIN" | "SHA1") => false,
                (_, other) => {
                    return Err(Failed::Denied(RpcError::invalid_param(format!(
                        "unsupported login type '{}'",
                        shown(other)
                    ))))
                }
            };
            if !ok {
                tracing::info!(peer = self.id, addr = %shown(&self.addr), user = %shown(&req.user), "login failed");
                return Err(Failed::Denied(denied()));
            }
            // Verified: lift the pre-login byte cap now, before the login answer goes
            // out, or a bridge could still be capped when the client (rightly) sends a
            // large first request as soon as it has that answer.
            self.logged_in();
            LoginInfo::User {
                grants: Grants::for_user(config, &req.user),
                user: req.user,
                device_id: req.device_id,
                mount_point: req.mount_point,
                user_agent: req.user_agent,
            }
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let id = self
            .ctx
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Known before the broker task hears of it: whatever happens to this login
        // (even a timeout while registering), the connection says Gone with this id.
        self.id = id;
        let reg = Registration {
            id,
            login,
            idle_timeout: idle,
            tx: self.tx.clone(),
            cancel: self.cancel.clone(),
            addr: self.addr.clone(),
            login_request: Some(request.meta.clone()),
        };
        let shutting_down = || {
            Failed::Refused(RpcError::new(
                code::TRY_AGAIN_LATER,
                "broker is shutting down",
            ))
        };
        self.ctx
            .events
            .send(Event::Register(Box::new(reg), reply_tx))
            .await
            .map_err(|_| shutting_down())?;
        reply_rx
            .await
            .map_err(|_| shutting_down())?
            .inspect_err(|_| self.id = NOT_LOGGED_IN)
            .map_err(|e| match is_tunnel {
                true => Failed::Denied(e),
                false => Failed::Refused(e),
            })?;
        Ok(idle)
    }

    /// Logged in: frames go to the broker task. Returns true on ResetSession.
    pub(crate) async fn serve(&self, reader: &mut FrameReader, idle: Option<Duration>) -> bool {
        let mut watchdog = idle.map(Watchdog::new);
        loop {
            // Idle is the time spent waiting for the peer (as before, a timeout
            // around each read), not the time its frames wait for room here.
            if let Some(w) = &mut watchdog {
                w.fed();
            }
            match self.next(reader, watchdog.as_mut()).await {
                Read::Frame(f) => {
                    // Awaiting here pushes back on a flooding client instead of queueing.
                    let Ok(permit) = self.inflight_permit(&f).await else {
                        return false;
                    };
                    if self
                        .ctx
                        .events
                        .send(Event::Frame(self.id, f, permit))
                        .await
                        .is_err()
                    {
                        return false;
                    }
                }
                Read::Skip => {}
                Read::Reset => return true,
                Read::Closed => return false,
            }
        }
    }
}

/// The idle watchdog of a logged-in connection: one timer per idle period, not one per
/// frame (arming a timer around every read cost about 10% of the calls/s of 64 RPC
/// clients, once every client had a watchdog).
struct Watchdog {
    idle: Duration,
    last: tokio::time::Instant,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Watchdog {
    fn new(idle: Duration) -> Watchdog {
        let now = tokio::time::Instant::now();
        Watchdog {
            idle,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    /// Waiting for the peer starts (again) now.
    fn fed(&mut self) {
        self.last = tokio::time::Instant::now();
    }

    /// Ready once nothing came for the idle period; the period is the result.
    async fn expired(&mut self) -> Duration {
        loop {
            self.timer.as_mut().await;
            let due = self.last + self.idle;
            if tokio::time::Instant::now() >= due {
                return self.idle;
            }
            self.timer.as_mut().reset(due);
        }
    }
}

impl Conn {
    /// The frame's share of the in-flight byte budget (a frame larger than the whole
    /// budget takes all of it).
    async fn inflight_permit(
        &self,
        f: &RpcFrame,
    ) -> Result<OwnedSemaphorePermit, tokio::sync::AcquireError> {
        let budget = self.ctx.config.limits.inflight_bytes;
        let n = f
            .body
            .len()
            .saturating_add(crate::queue::FRAME_OVERHEAD)
            .min(budget);
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.ctx.inflight.clone().acquire_many_owned(n).await
    }
}

/// Requests before login are small (hello, workflows, login): a larger one is refused
/// unread, so that an unauthenticated socket cannot make the broker decode megabytes.
const MAX_LOGIN_FRAME: usize = 64 * 1024;

pub use libshv::login::constant_time_eq;
use libshv::login::{parse_login, LoginRequest};

/// The meta of an oversized frame, if its kept head holds all of it.
fn partial_meta(head: &[u8]) -> Option<shvproto::MetaMap> {
    let end = libshv::value::skip_container(head, 0, libshv::value::MAX_DEPTH).ok()?;
    let mut slice = &head[..end];
    use shvproto::Reader;
    shvproto::ChainPackReader::new(&mut slice)
        .try_read_meta()
        .ok()?
}

/// Connections closed for stalling, for their log line. (Process-wide: the line is
/// about the process's log.)
static STALLS: std::sync::Mutex<libshv::logsafe::Burst> =
    std::sync::Mutex::new(libshv::logsafe::Burst::new());

/// Drains a peer's queue onto its socket until the queue ends or the peer is cancelled.
/// `addr` names the peer in the log.
pub(crate) async fn write_loop(
    mut writer: OutgoingWriter,
    mut rx: QueueReceiver,
    cancel: CancellationToken,
    addr: String,
) {
    {
        let work = async {
            while let Some(first) = rx.recv().await {
                // Batch what is already queued into one flush.
                write_batch(&mut writer, first, || rx.try_recv()).await?;
            }
            Ok::<(), std::io::Error>(())
        };
        // A peer that stops reading blocks `flush`; cancellation must still win.
        tokio::select! {
            r = work => match r {
                // A stalled peer (crate::stall) is the broker's decision: say so, once
                // per burst (a user can stall thousands of connections at once).
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    let due = STALLS.lock().unwrap_or_else(|e| e.into_inner()).note();
                    if let Some(n) = due {
                        tracing::warn!(addr = %shown(&addr), "disconnecting: {e} ({n} such connection(s) since the last line)");
                    }
                }
                Err(e) => tracing::debug!(addr = %shown(&addr), "write failed: {e}"),
                Ok(()) => {}
            },
            _ = cancel.cancelled() => {}
        }
    }
    // Best effort: deliver what is already queued (e.g. a last error), then close.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(f) = rx.try_recv() {
            writer.feed(f).await?;
        }
        writer.close().await
    })
    .await;
    cancel.cancel();
}
