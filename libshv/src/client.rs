//! An async SHV client: hello/login, calls with timeouts, subscriptions and signals,
//! heartbeat, serving requests as a mounted device, and raw frame access for tunnels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use shvproto::{RpcValue, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::codec::{Incoming, DEFAULT_MAX_FRAME};
use crate::connection::{self, FrameReader, FrameWriter};
use crate::frame::RpcFrame;
use crate::login::{Credentials, LoginParams};
use crate::message::{RpcError, RpcMessage};
use crate::url::RpcUrl;
use crate::writer::{write_batch, Outgoing};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("login failed: {0}")]
    Login(String),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("connection closed")]
    Disconnected,
    #[error("protocol error: {0}")]
    Protocol(String),
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub url: RpcUrl,
    pub login: LoginParams,
    /// Timeout of `call`.
    pub timeout: Duration,
    /// Send `.app:ping` when nothing was sent for this long.
    pub heartbeat: Option<Duration>,
    pub max_frame: usize,
}

impl ClientConfig {
    /// Credentials and device options taken from the URL; SHA1 login unless `shapass`
    /// is absent and the caller asks otherwise.
    pub fn from_url(url: RpcUrl) -> Self {
        let credentials = if let Some(t) = &url.token {
            Credentials::Token(t.clone())
        } else if let Some(h) = &url.shapass {
            Credentials::Sha1(h.clone())
        } else if let Some(p) = &url.password {
            Credentials::Plain(p.clone())
        } else if let Ok(p) = std::env::var("SHV_PASSWORD") {
            Credentials::Plain(p)
        } else {
            Credentials::None
        };
        let login = LoginParams {
            user: url.user.clone(),
            credentials,
            use_sha1: true,
            device_id: url.device_id.clone(),
            mount_point: url.mount_point.clone(),
            idle_timeout: None,
            user_agent: Some(format!("libshv-rs/{}", env!("CARGO_PKG_VERSION"))),
            broker: false,
        };
        ClientConfig {
            url,
            login,
            timeout: Duration::from_secs(10),
            heartbeat: Some(Duration::from_secs(60)),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// A command line's connection options that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CommandLineError {
    #[error(transparent)]
    Url(#[from] crate::url::UrlError),
    #[error("cannot read {0}: {1}")]
    PasswordFile(String, std::io::Error),
}

impl ClientConfig {
    /// What every command-line tool does with its URL, `--password-file` and `--plain`.
    pub fn from_command_line(
        url: &str,
        password_file: Option<&std::path::Path>,
        plain: bool,
    ) -> Result<Self, CommandLineError> {
        let mut config = ClientConfig::from_url(RpcUrl::parse(url)?);
        if let Some(f) = password_file {
            config
                .password_from_file(f)
                .map_err(|e| CommandLineError::PasswordFile(f.display().to_string(), e))?;
        }
        config.login.use_sha1 = !plain;
        Ok(config)
    }

    /// Takes the password from the first line of a file (`--password-file`), so that it
    /// need not sit on a command line.
    pub fn password_from_file(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        let text = std::fs::read_to_string(path)?;
        self.login.credentials = Credentials::Plain(text.lines().next().unwrap_or("").to_string());
        Ok(())
    }
}

/// Serves requests that reach a client mounted as a device.
#[async_trait::async_trait]
pub trait RequestHandler: Send + Sync + 'static {
    /// Returns the result to send back, or `None` when the handler replied itself
    /// (e.g. with a raw frame, as tunnels do).
    async fn handle(
        &self,
        client: &Client,
        request: RpcMessage,
    ) -> Option<Result<RpcValue, RpcError>>;
}

enum Pending {
    Once(oneshot::Sender<RpcFrame>),
    Stream(mpsc::Sender<RpcFrame>),
}

struct Shared {
    pending: Mutex<HashMap<i64, Pending>>,
    next_id: AtomicI64,
    /// Requests being served, by (request id, CallerIds as Cpon): SHV 3 callers re-send
    /// a long request with Abort=false to ask if it still runs, or Abort=true to cancel.
    serving: Mutex<HashMap<(i64, String), tokio::task::AbortHandle>>,
}

/// A logged-in connection. Cheap to clone; the connection closes when the last clone
/// and the background tasks are gone or the peer disconnects.
#[derive(Clone)]
pub struct Client {
    out: mpsc::Sender<RpcFrame>,
    shared: Arc<Shared>,
    timeout: Duration,
    closed: watch::Receiver<bool>,
}

/// Signals received by the client (all of them, unfiltered).
/// Signals received and not yet taken by the application; a slow consumer loses the
/// newest beyond this (with a warning) rather than stall the connection.
pub const SIGNAL_QUEUE: usize = 1024;

pub type SignalReceiver = mpsc::Receiver<RpcMessage>;

impl Client {
    /// Connects, logs in and starts the background tasks.
    pub async fn connect(
        config: &ClientConfig,
        handler: Option<Arc<dyn RequestHandler>>,
    ) -> Result<(Client, SignalReceiver), ClientError> {
        let transport = config.url.transport();
        tracing::debug!("connecting to {transport}");
        // Bounded like the login: a host that drops our SYNs would otherwise hold a
        // command-line tool for the kernel's two minutes.
        let (mut reader, mut writer) = tokio::time::timeout(
            config.timeout,
            connection::connect(transport, config.max_frame),
        )
        .await
        .map_err(|_| ClientError::Timeout(config.timeout))?
        .map_err(|e| ClientError::Connect(transport.to_string(), e))?;
        tracing::debug!(
            "connected to {transport}; logging in as '{}'",
            config.login.user
        );
        login(&mut reader, &mut writer, &config.login, config.timeout).await?;
        tracing::debug!("logged in to {transport}");
        Ok(Self::start(reader, writer, config, handler))
    }

    fn start(
        reader: FrameReader,
        writer: FrameWriter,
        config: &ClientConfig,
        handler: Option<Arc<dyn RequestHandler>>,
    ) -> (Client, SignalReceiver) {
        let (out_tx, out_rx) = mpsc::channel(256);
        let (sig_tx, sig_rx) = mpsc::channel(SIGNAL_QUEUE);
        let (closed_tx, closed_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            serving: Mutex::new(HashMap::new()),
            // A fresh start per connection: request ids are only unique per sender, and
            // a peer that relays for many (a broker, an agent) must never confuse two
            // senders' requests, so do not hand every process the same ids.
            next_id: AtomicI64::new(rand::Rng::gen_range(&mut rand::thread_rng(), 1..1i64 << 30)),
        });
        let client = Client {
            out: out_tx,
            shared,
            timeout: config.timeout,
            closed: closed_rx,
        };
        tokio::spawn(write_loop(writer, out_rx, config.heartbeat, client.clone()));
        tokio::spawn(read_loop(
            reader,
            client.downgrade(),
            sig_tx,
            handler,
            closed_tx,
        ));
        (client, sig_rx)
    }

    /// A handle that does not keep the connection open.
    fn downgrade(&self) -> WeakClient {
        WeakClient {
            out: self.out.downgrade(),
            shared: self.shared.clone(),
            timeout: self.timeout,
            closed: self.closed.clone(),
        }
    }

    pub fn next_request_id(&self) -> i64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Resolves when the connection is gone.
    pub async fn closed(&self) {
        let mut c = self.closed.clone();
        let _ = c.wait_for(|closed| *closed).await;
    }
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Sends a frame as is.
    pub async fn send_frame(&self, frame: RpcFrame) -> Result<(), ClientError> {
        self.out
            .send(frame)
            .await
            .map_err(|_| ClientError::Disconnected)
    }

    pub async fn send(&self, msg: RpcMessage) -> Result<(), ClientError> {
        self.send_frame(msg.into_frame()).await
    }

    /// Routes every response with `request_id` into the returned channel until
    /// [`Client::unregister`] (tunnels receive many responses to one request).
    pub fn register_stream(&self, request_id: i64, capacity: usize) -> mpsc::Receiver<RpcFrame> {
        let (tx, rx) = mpsc::channel(capacity);
        self.shared
            .pending
            .lock()
            .unwrap()
            .insert(request_id, Pending::Stream(tx));
        rx
    }

    pub fn unregister(&self, request_id: i64) {
        self.shared.pending.lock().unwrap().remove(&request_id);
    }

    /// Sends a request frame and waits for its response frame.
    pub async fn call_frame(
        &self,
        frame: RpcFrame,
        timeout: Duration,
    ) -> Result<RpcFrame, ClientError> {
        let id = frame
            .request_id()
            .ok_or_else(|| ClientError::Protocol("request without id".into()))?;
        let (tx, rx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .unwrap()
            .insert(id, Pending::Once(tx));
        if let Err(e) = self.send_frame(frame).await {
            self.unregister(id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(f)) => Ok(f),
            Ok(Err(_)) => Err(ClientError::Disconnected),
            Err(_) => {
                self.unregister(id);
                Err(ClientError::Timeout(timeout))
            }
        }
    }

    /// Calls `path:method(param)` and returns the result (or the RPC error).
    pub async fn call(
        &self,
        path: &str,
        method: &str,
        param: Option<RpcValue>,
    ) -> Result<RpcValue, ClientError> {
        self.call_timeout(path, method, param, self.timeout).await
    }

    pub async fn call_timeout(
        &self,
        path: &str,
        method: &str,
        param: Option<RpcValue>,
        timeout: Duration,
    ) -> Result<RpcValue, ClientError> {
        let id = self.next_request_id();
        let frame = RpcMessage::new_request(id, path, method, param).into_frame();
        let resp = self.call_frame(frame, timeout).await?;
        let msg =
            RpcMessage::from_frame(&resp).map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(msg.result()?)
    }

    /// Subscribes to signals matching the RI (`path:method:signal`), optionally with a TTL.
    /// A broker without SHV 3's `.broker/currentClient:subscribe` (the C++ one) is asked
    /// with SHV 2's `.broker/app:subscribe` (no TTL there; it may deliver more than the
    /// RI asks for: [`Ri::to_shv2`](crate::ri::Ri::to_shv2)).
    pub async fn subscribe(&self, ri: &str, ttl: Option<u64>) -> Result<bool, ClientError> {
        let param = match ttl {
            Some(t) => RpcValue::from(vec![RpcValue::from(ri), RpcValue::from(t as i64)]),
            None => RpcValue::from(ri),
        };
        let r = match self
            .call(".broker/currentClient", "subscribe", Some(param))
            .await
        {
            Err(ClientError::Rpc(e)) if e.code == crate::message::code::METHOD_NOT_FOUND => {
                let shv2 = crate::ri::Ri::parse(ri).to_shv2();
                self.call(".broker/app", "subscribe", Some(shv2)).await?
            }
            r => r?,
        };
        Ok(r.as_bool())
    }

    /// Ends a subscription, over SHV 2's `.broker/app:unsubscribe` where SHV 3's
    /// `.broker/currentClient:unsubscribe` is missing.
    pub async fn unsubscribe(&self, ri: &str) -> Result<bool, ClientError> {
        let r = match self
            .call(
                ".broker/currentClient",
                "unsubscribe",
                Some(RpcValue::from(ri)),
            )
            .await
        {
            Err(ClientError::Rpc(e)) if e.code == crate::message::code::METHOD_NOT_FOUND => {
                let shv2 = crate::ri::Ri::parse(ri).to_shv2();
                self.call(".broker/app", "unsubscribe", Some(shv2)).await?
            }
            r => r?,
        };
        Ok(r.as_bool())
    }

    /// Emits a signal from this client (meaningful when mounted as a device).
    pub async fn emit(
        &self,
        path: &str,
        signal: &str,
        source: &str,
        param: Option<RpcValue>,
    ) -> Result<(), ClientError> {
        self.send(RpcMessage::new_signal(path, signal, source, param))
            .await
    }
}

/// Keeps a device (or any client) connected: connect, serve until the link drops, back
/// off (1 s, doubling up to `max_backoff`; reset after a link that held that long),
/// reconnect. `on_connect` runs after every successful login (e.g. to re-subscribe).
/// Returns only when the very first login is refused: a wrong password does not fix
/// itself, while a broker that is down or restarting does.
pub async fn serve_reconnecting(
    config: &ClientConfig,
    handler: Option<Arc<dyn RequestHandler>>,
    max_backoff: Duration,
    mut on_connect: impl FnMut(&Client),
) -> ClientError {
    let mut backoff = crate::backoff::Backoff::new(max_backoff);
    let mut ever_connected = false;
    loop {
        match Client::connect(config, handler.clone()).await {
            // Signals are dropped unread: a kept, undrained receiver would stall reads.
            Ok((client, _)) => {
                ever_connected = true;
                tracing::info!("connected to {}", config.url.transport());
                on_connect(&client);
                let since = tokio::time::Instant::now();
                client.closed().await;
                tracing::warn!("connection to {} lost", config.url.transport());
                backoff.connected_for(since.elapsed());
            }
            Err(e @ ClientError::Login(_)) if !ever_connected => return e,
            Err(e) => tracing::warn!("{e}; retrying"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// hello + login on a fresh connection.
pub async fn login(
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    params: &LoginParams,
    timeout: Duration,
) -> Result<(), ClientError> {
    let hello = RpcMessage::new_request(1, "", "hello", None).into_frame();
    let resp = exchange(reader, writer, hello, timeout).await?;
    let nonce = match resp.result() {
        Ok(v) => match v.get("nonce").map(|n| &n.value) {
            Some(Value::String(s)) => s.to_string(),
            _ => String::new(),
        },
        Err(e) => return Err(ClientError::Login(format!("hello: {e}"))),
    };
    let login = RpcMessage::new_request(2, "", "login", Some(params.to_value(&nonce))).into_frame();
    let resp = exchange(reader, writer, login, timeout).await?;
    resp.result().map_err(|e| ClientError::Login(e.message))?;
    Ok(())
}

async fn exchange(
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    frame: RpcFrame,
    timeout: Duration,
) -> Result<RpcMessage, ClientError> {
    let id = frame.request_id();
    writer
        .send(frame)
        .await
        .map_err(|_| ClientError::Disconnected)?;
    let wait = async {
        loop {
            match reader.next().await {
                Some(Ok(Incoming::Frame(f))) if f.is_response() && f.request_id() == id => {
                    return RpcMessage::from_frame(&f)
                        .map_err(|e| ClientError::Protocol(e.to_string()));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ClientError::Protocol(e.to_string())),
                None => return Err(ClientError::Disconnected),
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

async fn write_loop(
    writer: FrameWriter,
    mut rx: mpsc::Receiver<RpcFrame>,
    heartbeat: Option<Duration>,
    client: Client,
) {
    // The write loop must not keep the connection alive on its own.
    let Client { shared, .. } = client;
    let weak = Arc::downgrade(&shared);
    drop(shared);
    let period = heartbeat.unwrap_or(Duration::from_secs(3600 * 24 * 365));
    let mut writer = crate::writer::outgoing_writer(writer);
    loop {
        let frame = match tokio::time::timeout(period, rx.recv()).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => {
                let Some(shared) = weak.upgrade() else { break };
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                RpcMessage::new_request(id, ".app", "ping", None).into_frame()
            }
        };
        // Batch what is already queued into one flush.
        let more = || rx.try_recv().ok().map(Outgoing::Frame);
        if write_batch(&mut writer, frame.into(), more).await.is_err() {
            break;
        }
    }
    let _ = writer.close().await;
}

/// What the read loop holds: the connection closes (the writer ends, which shuts the
/// socket) once the application has dropped every [`Client`].
struct WeakClient {
    out: mpsc::WeakSender<RpcFrame>,
    shared: Arc<Shared>,
    timeout: Duration,
    closed: watch::Receiver<bool>,
}

impl WeakClient {
    fn upgrade(&self) -> Option<Client> {
        Some(Client {
            out: self.out.upgrade()?,
            shared: self.shared.clone(),
            timeout: self.timeout,
            closed: self.closed.clone(),
        })
    }
}

async fn read_loop(
    mut reader: FrameReader,
    client: WeakClient,
    signals: mpsc::Sender<RpcMessage>,
    handler: Option<Arc<dyn RequestHandler>>,
    closed: watch::Sender<bool>,
) {
    let mut dropped_signals: u64 = 0;
    while let Some(item) = reader.next().await {
        let frame = match item {
            Ok(Incoming::Frame(f)) => f,
            Ok(other) => {
                tracing::warn!(
                    "ignoring bad frame from peer: {}",
                    crate::logsafe::shown(&format!("{other:?}"))
                );
                continue;
            }
            Err(e) => {
                tracing::debug!("read error: {e}");
                break;
            }
        };
        if frame.is_response() {
            let id = frame.request_id().unwrap_or_default();
            let target = {
                let mut pending = client.shared.pending.lock().unwrap();
                match pending.get(&id) {
                    Some(Pending::Stream(tx)) => Some(Pending::Stream(tx.clone())),
                    Some(Pending::Once(_)) => pending.remove(&id),
                    None => None,
                }
            };
            match target {
                Some(Pending::Once(tx)) => {
                    let _ = tx.send(frame);
                }
                Some(Pending::Stream(tx)) => {
                    let _ = tx.send(frame).await;
                }
                None => tracing::debug!("response to unknown request {id} dropped"),
            }
        } else if frame.is_request() {
            let msg = match RpcMessage::from_frame(&frame) {
                Ok(m) => m,
                Err(e) => {
                    let resp = RpcMessage::response_to(&frame.meta).with_error(
                        &RpcError::invalid_param(format!("cannot decode request: {e}")),
                    );
                    if let Some(c) = client.upgrade() {
                        let _ = c.send(resp).await;
                    }
                    continue;
                }
            };
            let Some(client) = client.upgrade() else {
                continue;
            };
            let key = (
                frame.request_id().unwrap_or_default(),
                frame
                    .meta
                    .get(crate::meta::tag::CALLER_IDS)
                    .map(|c| c.to_cpon())
                    .unwrap_or_default(),
            );
            if let Some(abort) = msg.body.get(&crate::meta::key::ABORT) {
                // Not a new call: a question about (or the cancel of) a running one.
                let running = client.shared.serving.lock().unwrap().remove(&key);
                match running {
                    Some(task) if abort.as_bool() => {
                        task.abort();
                        let err =
                            RpcError::new(crate::message::code::REQUEST_INVALID, "request aborted");
                        let _ = client
                            .send(RpcMessage::response_to(&frame.meta).with_error(&err))
                            .await;
                    }
                    Some(task) => {
                        client.shared.serving.lock().unwrap().insert(key, task);
                    }
                    None => {}
                }
                continue;
            }
            let handler = handler.clone();
            let task_client = client.clone();
            let task_key = key.clone();
            // Held across the spawn so that the task's own removal comes after this insert.
            let mut serving = client.shared.serving.lock().unwrap();
            let task = tokio::spawn(async move {
                let client = task_client;
                let meta = msg.meta.clone();
                let result = match handler {
                    Some(h) => h.handle(&client, msg).await,
                    None => Some(Err(RpcError::method_not_found(
                        "this client serves no requests",
                    ))),
                };
                client.shared.serving.lock().unwrap().remove(&task_key);
                if let Some(r) = result {
                    let _ = client
                        .send(RpcMessage::response_to(&meta).with_result_or_error(r))
                        .await;
                }
            });
            serving.insert(key, task.abort_handle());
        } else if frame.is_signal() {
            if let Ok(msg) = RpcMessage::from_frame(&frame) {
                // Never waits: an application that does not drain its signals must not
                // stall the responses to its calls. While its queue (SIGNAL_QUEUE) is
                // full, signals are dropped and counted; a dropped receiver means it
                // wants none.
                if let Err(mpsc::error::TrySendError::Full(_)) = signals.try_send(msg) {
                    dropped_signals += 1;
                    if dropped_signals.is_power_of_two() {
                        tracing::warn!(
                            "{dropped_signals} signals dropped: the application does not read them"
                        );
                    }
                }
            }
        }
    }
    client.shared.pending.lock().unwrap().clear();
    let _ = closed.send(true);
}
