//! Lean SHV connections for load generation.
//!
//! The load generator shares two CPU cores with the broker under test, so it avoids the
//! convenience layers of `libshv::Client` (a task per request, channels per call) and
//! drives `FrameReader`/`FrameWriter` directly: one task per simulated client, one
//! outstanding request, frames built with the same libshv types the brokers parse.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use libshv::codec::{Incoming, DEFAULT_MAX_FRAME};
use libshv::login::LoginParams;
use libshv::transport::{FrameReader, FrameWriter};
use libshv::url::Transport;
use libshv::{ClientConfig, RpcFrame, RpcMessage, RpcUrl, RpcValue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::BenchError;

/// How long one login or one setup call may take before the scenario gives up.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Conn {
    pub reader: FrameReader,
    pub writer: FrameWriter,
}

/// Connects without logging in (the raw relay has no login phase).
pub async fn connect_raw(transport: &Transport) -> Result<Conn, BenchError> {
    let (reader, writer) = libshv::transport::dial(transport, DEFAULT_MAX_FRAME)
        .await
        .map_err(|e| BenchError::Connect(transport.to_string(), e))?;
    Ok(Conn { reader, writer })
}

/// Login parameters from a URL (user, password, devmount), SHA1 login as shvcall does.
pub fn login_params(url: &RpcUrl) -> LoginParams {
    let mut p = ClientConfig::from_url(url.clone()).login;
    p.user_agent = Some("shvbench".into());
    p
}

/// Connects and logs in (hello + login).
pub async fn connect_login(url: &RpcUrl) -> Result<Conn, BenchError> {
    let mut c = connect_raw(url.transport()).await?;
    libshv::client::login(
        &mut c.reader,
        &mut c.writer,
        &login_params(url),
        SETUP_TIMEOUT,
    )
    .await
    .map_err(|e| BenchError::Login(url.to_string(), e.to_string()))?;
    Ok(c)
}

impl Conn {
    /// Sends a request and waits for the response with the same id; other frames
    /// (signals, stray responses) are skipped.
    pub async fn call(
        &mut self,
        id: i64,
        path: &str,
        method: &str,
        param: Option<RpcValue>,
        timeout: Duration,
    ) -> Result<RpcMessage, BenchError> {
        let frame = RpcMessage::new_request(id, path, method, param).into_frame();
        self.writer
            .send(frame)
            .await
            .map_err(|e| BenchError::Io(e.to_string()))?;
        let wait = async {
            loop {
                match self.reader.next().await {
                    Some(Ok(Incoming::Frame(f)))
                        if f.is_response() && f.request_id() == Some(id) =>
                    {
                        return RpcMessage::from_frame(&f)
                            .map_err(|e| BenchError::Protocol(e.to_string()));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(BenchError::Io(e.to_string())),
                    None => return Err(BenchError::Closed),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| BenchError::Timeout(format!("{path}:{method}")))?
    }

    /// `.broker/currentClient:subscribe(ri)`; a false or error result is an error.
    pub async fn subscribe(&mut self, id: i64, ri: &str) -> Result<(), BenchError> {
        let r = self
            .call(
                id,
                ".broker/currentClient",
                "subscribe",
                Some(RpcValue::from(ri)),
                SETUP_TIMEOUT,
            )
            .await?
            .result()
            .map_err(|e| BenchError::Rpc(format!("subscribe {ri}: {e}")))?;
        // pyshv answers Null for a fresh subscription, the Rust brokers true.
        if r.is_bool() && !r.as_bool() {
            return Err(BenchError::Rpc(format!("subscribe {ri} refused")));
        }
        Ok(())
    }
}

/// The answer of the benchmark device to one request. `ls`/`dir` get honest empty
/// answers (a broker asks `ls(".broker")` to learn whether a mounted peer is a broker,
/// and must be told "no"); every other method answers `true` without decoding the body,
/// so the device costs as little as possible.
pub(crate) fn device_answer(req: &RpcFrame) -> RpcFrame {
    let result = match req.method() {
        Some("ls") | Some("dir") => {
            let has_param = req.body.len() > 2;
            if has_param {
                RpcValue::from(false)
            } else {
                RpcValue::from(Vec::<RpcValue>::new())
            }
        }
        _ => RpcValue::from(true),
    };
    RpcMessage::response_to(&req.meta)
        .with_result(result)
        .into_frame()
}

/// Handle to a running benchmark device: frames sent through `out` are written
/// (batched) by the device's writer task.
#[derive(Clone)]
pub struct Device {
    pub out: mpsc::Sender<RpcFrame>,
}

/// Runs the benchmark device on a logged-in (or raw, for the relay) connection until
/// `stop`: answers requests, and writes whatever is queued on the returned handle.
pub fn spawn_device(conn: Conn, stop: CancellationToken) -> Device {
    let (tx, rx) = mpsc::channel::<RpcFrame>(1024);
    let Conn { mut reader, writer } = conn;
    tokio::spawn(write_batched(writer, rx, stop.clone()));
    let answers = tx.clone();
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                _ = stop.cancelled() => break,
                i = reader.next() => i,
            };
            match item {
                Some(Ok(Incoming::Frame(f))) if f.is_request() => {
                    if answers.send(device_answer(&f)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    });
    Device { out: tx }
}

/// Writes queued frames, flushing once per batch of what is already queued: this is
/// what keeps the device from being the bottleneck with 64 callers.
pub async fn write_batched(
    mut writer: FrameWriter,
    mut rx: mpsc::Receiver<RpcFrame>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            f = rx.recv() => f,
        };
        let Some(f) = first else { break };
        if writer.feed(f).await.is_err() {
            break;
        }
        while let Ok(f) = rx.try_recv() {
            if writer.feed(f).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            break;
        }
    }
}
