//! One client connection: the login phase, then frames to the broker task, and a writer
//! task draining this peer's bounded queue onto its socket.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use libshv::codec::BlockCodec;
use libshv::codec::Incoming;
use libshv::connection::{BoxRead, BoxWrite, FrameReader};
use libshv::login::{sha1_hex, sha1_login};
use libshv::message::{code, RpcError, RpcMessage};
use libshv::{RpcFrame, RpcValue};
use rand::Rng;
use shvproto::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Encoder, FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::access::Grants;
use crate::config::Config;

pub type PeerId = i64;

/// Messages from connections to the broker task (the one owner of broker state).
pub enum Event {
    Register(Registration, oneshot::Sender<Result<(), RpcError>>),
    Frame(PeerId, RpcFrame),
    Gone(PeerId),
    /// A parent link (by index in `connections`) changed state.
    Link(usize, crate::link::LinkStatus),
}

pub struct Registration {
    pub id: PeerId,
    pub login: LoginInfo,
    pub tx: mpsc::Sender<Outgoing>,
    pub cancel: CancellationToken,
    pub addr: String,
    /// The meta of the `login` request: the broker task answers it, so that the login
    /// response reaches the peer before anything the broker sends it after mounting.
    pub login_request: Option<shvproto::MetaMap>,
}

pub enum LoginInfo {
    User {
        user: String,
        grants: Grants,
        device_id: Option<String>,
        mount_point: Option<String>,
        user_agent: Option<String>,
    },
    /// A tunnel end (shvrexec) logging in with a one-time secret.
    Tunnel { secret: String },
    /// Our link to a parent broker (we logged in there as a device).
    Parent { link: usize, url: String },
}

/// What every connection task shares.
pub struct PeerContext {
    pub config: Arc<Config>,
    pub next_id: std::sync::atomic::AtomicI64,
    pub events: mpsc::Sender<Event>,
    pub shutdown: CancellationToken,
    pub login_failures: LoginFailures,
}

/// Recent failed logins per source address, so that opening a new connection for
/// every guess does not reset the throttle. Entries fade after [`FAILURE_MEMORY`].
#[derive(Default)]
pub struct LoginFailures(
    std::sync::Mutex<std::collections::HashMap<String, (u32, std::time::Instant)>>,
);

const FAILURE_MEMORY: Duration = Duration::from_secs(300);

impl LoginFailures {
    /// Records a failure from `addr` and returns how many it made recently.
    fn record(&self, addr: &str) -> u32 {
        let now = std::time::Instant::now();
        let mut map = self.0.lock().unwrap();
        // Bounded: stale entries go whenever the map grows.
        if map.len() > 10_000 {
            map.retain(|_, (_, t)| now.duration_since(*t) < FAILURE_MEMORY);
        }
        let e = map.entry(source_of(addr).to_string()).or_insert((0, now));
        if now.duration_since(e.1) >= FAILURE_MEMORY {
            *e = (0, now);
        }
        e.0 += 1;
        e.1 = now;
        e.0
    }
}

/// The address part of `ip:port` (unix sockets count as one source).
fn source_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(addr)
}

pub async fn run(id: PeerId, read: BoxRead, write: BoxWrite, addr: String, ctx: Arc<PeerContext>) {
    let limits = &ctx.config.limits;
    let mut reader =
        FramedRead::with_capacity(read, BlockCodec::new(limits.max_frame_size), 64 * 1024);
    let writer = FramedWrite::new(write, OutCodec);
    let (tx, rx) = mpsc::channel(limits.client_queue);
    let cancel = ctx.shutdown.child_token();
    let writer_task = tokio::spawn(write_loop(writer, rx, cancel.clone()));
    tracing::debug!(peer = id, %addr, "connected");
    let mut conn = Conn {
        id,
        tx,
        cancel: cancel.clone(),
        addr,
        ctx: ctx.clone(),
    };
    loop {
        let Some(idle) = conn.login_phase(&mut reader).await else {
            break;
        };
        let reset = conn.serve(&mut reader, idle).await;
        let _ = ctx.events.send(Event::Gone(id)).await;
        if !reset {
            break;
        }
        tracing::debug!(peer = id, "ResetSession: back to login");
    }
    cancel.cancel();
    drop(conn);
    let _ = writer_task.await;
    tracing::debug!(peer = id, "disconnected");
}

pub(crate) struct Conn {
    pub(crate) id: PeerId,
    pub(crate) tx: mpsc::Sender<Outgoing>,
    pub(crate) cancel: CancellationToken,
    pub(crate) addr: String,
    pub(crate) ctx: Arc<PeerContext>,
}

enum Read {
    Frame(RpcFrame),
    Reset,
    Skip,
    Closed,
}

impl Conn {
    async fn respond(&self, request: &RpcFrame, result: Result<RpcValue, RpcError>) {
        let msg = RpcMessage::response_to(&request.meta).with_result_or_error(result);
        let _ = self.tx.send(msg.into_frame().into()).await;
    }

    /// Reads the next frame, answering what needs no broker state (oversized requests).
    async fn next(&self, reader: &mut FrameReader, timeout: Option<Duration>) -> Read {
        let item = tokio::select! {
            _ = self.cancel.cancelled() => return Read::Closed,
            r = async {
                match timeout {
                    Some(t) => tokio::time::timeout(t, reader.next()).await.map_err(|_| t),
                    None => Ok(reader.next().await),
                }
            } => r,
        };
        match item {
            Err(t) => {
                tracing::info!(peer = self.id, addr = %self.addr, "no frame for {t:?}, disconnecting");
                Read::Closed
            }
            Ok(None) => Read::Closed,
            Ok(Some(Err(e))) => {
                tracing::info!(peer = self.id, addr = %self.addr, "stream error, disconnecting: {e}");
                Read::Closed
            }
            Ok(Some(Ok(Incoming::Frame(f)))) => Read::Frame(f),
            Ok(Some(Ok(Incoming::ResetSession))) => Read::Reset,
            Ok(Some(Ok(Incoming::Invalid(why)))) => {
                tracing::warn!(peer = self.id, addr = %self.addr, "bad frame dropped: {why}");
                Read::Skip
            }
            Ok(Some(Ok(Incoming::Oversized { size, format, head }))) => {
                tracing::warn!(peer = self.id, addr = %self.addr, size, "oversized frame skipped");
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
    /// None when the connection must close.
    async fn login_phase(&mut self, reader: &mut FrameReader) -> Option<Option<Duration>> {
        let config = self.ctx.config.clone();
        let nonce: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(config.limits.login_timeout);
        let mut failures = 0u32;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = match self.next(reader, Some(left)).await {
                Read::Frame(f) => f,
                Read::Reset | Read::Skip => continue,
                Read::Closed => return None,
            };
            if !frame.is_request() {
                continue;
            }
            if !frame.shv_path().is_empty() {
                self.respond(
                    &frame,
                    Err(RpcError::new(code::LOGIN_REQUIRED, "login required")),
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
                        Err(why) => Err(RpcError::invalid_param(format!("invalid login: {why}"))),
                        Ok(req) => self.try_login(&config, &nonce, req, &frame).await,
                    };
                    match outcome {
                        Ok(idle) => {
                            // Answered by the broker task on registration.
                            return Some(idle);
                        }
                        Err(err) => {
                            failures += 1;
                            // Throttle guessing: each failure on this connection, and
                            // every fourth recent one from the same address (so that a
                            // new connection per guess does not reset it), doubles the
                            // delay, up to 8 s.
                            let recent = self.ctx.login_failures.record(&self.addr);
                            let level = failures.max(recent / 4).min(5);
                            let delay = Duration::from_millis(250u64 << level);
                            tokio::time::sleep(delay).await;
                            self.respond(&frame, Err(err)).await;
                            if failures >= config.limits.login_attempts {
                                tracing::info!(peer = self.id, addr = %self.addr, "too many failed logins, disconnecting");
                                return None;
                            }
                        }
                    }
                }
                _ => {
                    self.respond(
                        &frame,
                        Err(RpcError::new(code::LOGIN_REQUIRED, "login required")),
                    )
                    .await;
                }
            }
        }
    }

    async fn try_login(
        &self,
        config: &Config,
        nonce: &str,
        req: LoginRequest,
        request: &RpcFrame,
    ) -> Result<Option<Duration>, RpcError> {
        let idle = match req.idle_timeout {
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
            None => Some(Duration::from_secs(config.limits.idle_timeout)).filter(|d| !d.is_zero()),
        };
        let login = if let Some(secret) = req.tunnel_secret {
            LoginInfo::Tunnel { secret }
        } else {
            // One message for a wrong password and an unknown user: never reveal which.
            let denied = || {
                RpcError::new(
                    code::METHOD_CALL_EXCEPTION,
                    "invalid login: wrong user name or password",
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
                    return Err(RpcError::invalid_param(format!(
                        "unsupported login type '{other}'"
                    )))
                }
            };
            if !ok {
                tracing::info!(peer = self.id, addr = %self.addr, user = %req.user, "login failed");
                return Err(denied());
            }
            LoginInfo::User {
                grants: Grants::for_user(config, &req.user),
                user: req.user,
                device_id: req.device_id,
                mount_point: req.mount_point,
                user_agent: req.user_agent,
            }
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let reg = Registration {
            id: self.id,
            login,
            tx: self.tx.clone(),
            cancel: self.cancel.clone(),
            addr: self.addr.clone(),
            login_request: Some(request.meta.clone()),
        };
        self.ctx
            .events
            .send(Event::Register(reg, reply_tx))
            .await
            .map_err(|_| RpcError::new(code::TRY_AGAIN_LATER, "broker is shutting down"))?;
        reply_rx
            .await
            .map_err(|_| RpcError::new(code::TRY_AGAIN_LATER, "broker is shutting down"))??;
        Ok(idle)
    }

    /// Logged in: frames go to the broker task. Returns true on ResetSession.
    pub(crate) async fn serve(&self, reader: &mut FrameReader, idle: Option<Duration>) -> bool {
        loop {
            match self.next(reader, idle).await {
                Read::Frame(f) => {
                    // Awaiting here pushes back on a flooding client instead of queueing.
                    if self
                        .ctx
                        .events
                        .send(Event::Frame(self.id, f))
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

/// A parsed `login` parameter (fields stay private to the broker).
pub struct LoginRequest {
    user: String,
    password: String,
    kind: String,
    device_id: Option<String>,
    mount_point: Option<String>,
    idle_timeout: Option<u64>,
    user_agent: Option<String>,
    tunnel_secret: Option<String>,
}

fn str_of(v: Option<&RpcValue>) -> Option<String> {
    match &v?.value {
        Value::String(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Parses the `login` method's parameter (untrusted input from a connection that has
/// not logged in yet). Public so that the fuzz target `login_params` can reach it.
pub fn parse_login(param: &RpcValue) -> Result<LoginRequest, &'static str> {
    let Value::Map(m) = &param.value else {
        return Err("parameter must be a Map");
    };
    let login = m.get("login").ok_or("missing 'login'")?;
    if !login.is_map() {
        return Err("'login' must be a Map");
    }
    let empty = RpcValue::from(shvproto::Map::new());
    let options = m.get("options").unwrap_or(&empty);
    let device = options.get("device");
    let idle = options
        .get("idleWatchDogTimeOut")
        .and_then(|v| match v.value {
            Value::Int(i) if i >= 0 => Some(i as u64),
            Value::UInt(u) => Some(u),
            _ => None,
        });
    let tunnel_secret = options.get("tunnel").and_then(|t| str_of(t.get("secret")));
    Ok(LoginRequest {
        user: str_of(login.get("user")).unwrap_or_default(),
        password: str_of(login.get("password")).unwrap_or_default(),
        kind: str_of(login.get("type"))
            .unwrap_or_else(|| "PLAIN".into())
            .to_ascii_uppercase(),
        device_id: device.and_then(|d| str_of(d.get("deviceId"))),
        mount_point: device.and_then(|d| str_of(d.get("mountPoint"))),
        idle_timeout: idle,
        user_agent: str_of(options.get("userAgent")),
        tunnel_secret,
    })
}

pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

/// What the broker queues to a peer: a frame to serialize in the peer's writer task, or
/// bytes already framed (a signal encoded once for all its subscribers).
#[derive(Debug)]
pub enum Outgoing {
    Frame(RpcFrame),
    Encoded(bytes::Bytes),
}

impl From<RpcFrame> for Outgoing {
    fn from(f: RpcFrame) -> Self {
        Outgoing::Frame(f)
    }
}

pub(crate) struct OutCodec;

impl Encoder<Outgoing> for OutCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Outgoing, dst: &mut bytes::BytesMut) -> Result<(), Self::Error> {
        match item {
            Outgoing::Frame(f) => libshv::codec::encode_into(&f, dst),
            Outgoing::Encoded(b) => dst.extend_from_slice(&b),
        }
        Ok(())
    }
}

pub(crate) type PeerWriter = FramedWrite<BoxWrite, OutCodec>;

/// Queues one frame on the writer; a large body (tunnel data) goes to the socket
/// straight from its `Bytes`, not through a copy into the write buffer.
async fn put(writer: &mut PeerWriter, item: Outgoing) -> std::io::Result<()> {
    match item {
        Outgoing::Frame(f) if f.body.len() >= libshv::codec::DIRECT_BODY => {
            writer.flush().await?;
            libshv::codec::write_frame(writer.get_mut(), &f).await
        }
        item => writer.feed(item).await,
    }
}

pub(crate) async fn write_loop(
    mut writer: PeerWriter,
    mut rx: mpsc::Receiver<Outgoing>,
    cancel: CancellationToken,
) {
    {
        let work = async {
            while let Some(frame) = rx.recv().await {
                put(&mut writer, frame).await?;
                // Batch what is already queued into one flush.
                while let Ok(f) = rx.try_recv() {
                    put(&mut writer, f).await?;
                }
                writer.flush().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        // A peer that stops reading blocks `flush`; cancellation must still win.
        tokio::select! {
            _ = work => {}
            _ = cancel.cancelled() => {}
        }
    }
    // Best effort: deliver what is already queued (e.g. a last error), then close.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(f) = rx.try_recv() {
            writer.feed(f).await?;
        }
        writer.close().await
    })
    .await;
    cancel.cancel();
}
