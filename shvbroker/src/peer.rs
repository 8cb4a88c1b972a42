//! One client connection: the login phase, then frames to the broker task, and a writer
//! task draining this peer's bounded queue onto its socket.

mod login;
mod writer;

pub use login::LoginFailures;
pub(crate) use writer::write_loop;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libshv::codec::BlockCodec;
use libshv::codec::Incoming;
use libshv::logsafe::shown;
use libshv::message::{code, RpcError, RpcMessage};
use libshv::transport::{BoxRead, BoxWrite, FrameReader};
use libshv::writer::OutgoingCodec;
use libshv::{RpcFrame, RpcValue};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;

use crate::queue::{self, QueueReceiver, QueueSender};
use crate::settings::Settings;

pub use crate::events::{Event, LoginInfo, Registration};
pub use crate::peers::PeerId;

/// What every connection task shares.
pub struct PeerContext {
    pub settings: Arc<Settings>,
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
        settings: Arc<Settings>,
        events: mpsc::Sender<Event>,
        shutdown: CancellationToken,
        outgoing: Arc<queue::Total>,
    ) -> PeerContext {
        let l = &settings.limits;
        let inflight = Arc::new(Semaphore::new(l.inflight_bytes));
        let admission = crate::admission::Admission::new(
            l.max_unauthenticated,
            l.max_unauthenticated_per_address,
            crate::admission::connection_cap(l.max_connections),
        );
        let read_budgets =
            crate::reading::ReadBudgets::new(l.read_bytes, l.read_bytes_per_user, l.frame_timeout);
        PeerContext {
            outgoing,
            admission,
            read_budgets,
            settings,
            next_id: std::sync::atomic::AtomicI64::new(0),
            events,
            shutdown,
            login_failures: LoginFailures::default(),
            inflight,
        }
    }

    /// A bounded outgoing queue for a new connection.
    pub fn queue(&self) -> (QueueSender, QueueReceiver) {
        let l = &self.settings.limits;
        queue::channel(l.client_queue, l.client_queue_bytes, self.outgoing.clone())
    }
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
    let limits = &ctx.settings.limits;
    let mut reader = FrameReader::new(read, BlockCodec::new(limits.max_frame_size));
    let write: BoxWrite = match limits.write_stall_timeout {
        d if d.is_zero() => write,
        d => Box::pin(crate::stall::StallGuard::new(write, d)),
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
                        let limit = self.ctx.settings.limits.max_frame_size;
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
}
impl Conn {
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
        let budget = self.ctx.settings.limits.inflight_bytes;
        let n = f
            .body
            .len()
            .saturating_add(crate::queue::FRAME_OVERHEAD)
            .min(budget);
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.ctx.inflight.clone().acquire_many_owned(n).await
    }
}

/// The meta of an oversized frame, if its kept head holds all of it.
fn partial_meta(head: &[u8]) -> Option<shvproto::MetaMap> {
    let end = libshv::value::skip_container(head, 0, libshv::value::MAX_DEPTH).ok()?;
    let mut slice = &head[..end];
    use shvproto::Reader;
    shvproto::ChainPackReader::new(&mut slice)
        .try_read_meta()
        .ok()?
}
