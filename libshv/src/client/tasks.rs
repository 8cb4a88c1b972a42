//! The background tasks of a connection: the writer (batching, heartbeat) and the reader
//! (responses to calls, requests served, signals).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};

use super::{Client, Pending, RequestHandler, WeakClient};
use crate::codec::Incoming;
use crate::frame::RpcFrame;
use crate::message::{RpcError, RpcMessage};
use crate::transport::{FrameReader, FrameWriter};
use crate::writer::{write_batch, Outgoing};

/// Writes what the client queues, batched, with a heartbeat when nothing was sent for
/// `heartbeat`. Ends when every sender is gone, the socket fails, or [`Client::close`]
/// cancels it: then what is queued already is written and the socket shut down, within
/// the client's timeout.
pub(super) async fn write_loop(
    writer: FrameWriter,
    mut rx: mpsc::Receiver<RpcFrame>,
    heartbeat: Option<Duration>,
    client: Client,
) {
    // The write loop must not keep the connection alive on its own.
    let Client {
        shared, timeout, ..
    } = client;
    let weak = Arc::downgrade(&shared);
    let stop = shared.stop.clone();
    drop(shared);
    let period = heartbeat.unwrap_or(Duration::from_secs(3600 * 24 * 365));
    let mut writer = crate::writer::outgoing_writer(writer);
    let stopping = stop.clone();
    let work = async move {
        loop {
            let frame = tokio::select! {
                biased;
                // Closing: no more waiting, only what is queued already.
                _ = stopping.cancelled() => match rx.try_recv() {
                    Ok(f) => f,
                    Err(_) => break,
                },
                next = tokio::time::timeout(period, rx.recv()) => match next {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => {
                        let Some(shared) = weak.upgrade() else { break };
                        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                        RpcMessage::new_request(id, ".app", "ping", None).into_frame()
                    }
                },
            };
            // Batch what is already queued into one flush.
            let more = || rx.try_recv().ok().map(Outgoing::Frame);
            if write_batch(&mut writer, frame.into(), more).await.is_err() {
                break;
            }
        }
        let _ = writer.close().await;
    };
    // A write is not interrupted when closing starts (a large body goes to the socket
    // in pieces), only given up once a peer that does not read has had its time.
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        () = work => {}
        () = deadline => tracing::debug!("close: unsent frames dropped after {timeout:?}"),
    }
}

/// Reads frames until the peer closes the connection or [`Client::close`] cancels it:
/// responses go to their callers, requests to the handler (each in its own task),
/// signals to the application.
pub(super) async fn read_loop(
    mut reader: FrameReader,
    client: WeakClient,
    signals: mpsc::Sender<RpcMessage>,
    handler: Option<Arc<dyn RequestHandler>>,
    closed: watch::Sender<bool>,
) {
    let stop = client.shared.stop.clone();
    let mut dropped_signals: u64 = 0;
    let work = async {
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
                            let err = RpcError::new(
                                crate::message::code::REQUEST_INVALID,
                                "request aborted",
                            );
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
    };
    // Closing may come while a response waits for room in its stream: the read loop
    // stops wherever it waits.
    tokio::select! {
        () = work => {}
        () = stop.cancelled() => {}
    }
    drop(reader);
    client.shared.pending.lock().unwrap().clear();
    let _ = closed.send(true);
}
