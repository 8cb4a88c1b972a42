//! An async SHV client: hello/login, calls with timeouts, subscriptions and signals,
//! heartbeat, serving requests as a mounted device, and raw frame access for tunnels.

mod config;
mod login;
mod reconnect;
mod tasks;

pub use config::{ClientConfig, CommandLineError};
pub use login::login;
pub use reconnect::serve_reconnecting;
use tasks::{read_loop, write_loop};

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shvproto::RpcValue;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::frame::RpcFrame;
use crate::message::{RpcError, RpcMessage};
use crate::transport::{FrameReader, FrameWriter};

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
    /// Cancelled by [`Client::close`]: the background tasks wind down.
    stop: CancellationToken,
    /// The reader and writer tasks, awaited by the first [`Client::close`] (a second
    /// one waits on the lock until they have ended).
    tasks: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A logged-in connection. Cheap to clone; the connection closes when the last clone
/// and the background tasks are gone, the peer disconnects, or on [`Client::close`].
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
            crate::transport::dial(transport, config.max_frame),
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
            stop: CancellationToken::new(),
            tasks: tokio::sync::Mutex::new(Vec::new()),
        });
        let client = Client {
            out: out_tx,
            shared,
            timeout: config.timeout,
            closed: closed_rx,
        };
        let writer = tokio::spawn(write_loop(writer, out_rx, config.heartbeat, client.clone()));
        let reader = tokio::spawn(read_loop(
            reader,
            client.downgrade(),
            sig_tx,
            handler,
            closed_tx,
        ));
        client
            .shared
            .tasks
            .try_lock()
            .expect("nobody else has the new client yet")
            .extend([writer, reader]);
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

    /// Closes the connection, for this client and every clone of it, and returns once
    /// its background tasks have ended and the socket is closed. Frames already queued
    /// are still written (for at most the call timeout, then the socket is closed
    /// anyway), calls waiting for a response fail with [`ClientError::Disconnected`],
    /// and requests still being served are aborted: nothing of the connection is left
    /// running. Closing a closed client returns at once.
    ///
    /// Called from a [`RequestHandler`], the handler's own task is aborted with the
    /// others, at its first wait after `close` returns.
    pub async fn close(&self) {
        self.shared.stop.cancel();
        let mut tasks = self.shared.tasks.lock().await;
        for task in tasks.drain(..) {
            let _ = task.await;
        }
        // Served requests hold clones of the client: without this they would run on
        // (a handler that never returns would keep its task forever).
        let serving: Vec<_> = self.shared.serving.lock().unwrap().drain().collect();
        for (_, task) in serving {
            task.abort();
        }
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
