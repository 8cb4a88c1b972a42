//! The two ends of a tunnel: the handshake (rsh's `launch`, rexec's `create`), sending
//! and receiving data, and the end-to-end flow-control window.

use super::*;

/// Interprets a frame received on a tunnel's stream (also what a broker that records
/// a session reads from the frames it forwards).
/// [`frame_event`] for an observer on a hot path (a broker recording a session): data
/// by the fast path, and the generic decoder only for frames of at most `generic_max`
/// bytes (controls are a few bytes). Err for a larger frame it did not read: the
/// observer missed something (say data sent as a String rather than a Blob).
pub fn frame_event_bounded(
    frame: &RpcFrame,
    generic_max: usize,
) -> Result<Option<TunnelEvent>, NotRead> {
    if frame.tunnel_ctl().is_none() {
        if let Some(ev) = fast_data(&frame.body) {
            return Ok(Some(ev));
        }
    }
    if frame.body.len() > generic_max {
        return Err(NotRead);
    }
    Ok(frame_event(frame).ok().flatten())
}

/// A frame [`frame_event_bounded`] left unread.
#[derive(Debug, PartialEq, Eq)]
pub struct NotRead;

pub fn frame_event(frame: &RpcFrame) -> Result<Option<TunnelEvent>, TunnelError> {
    if frame.tunnel_ctl().is_none() {
        if let Some(ev) = fast_data(&frame.body) {
            return Ok(Some(ev));
        }
    }
    if let Some(ctl) = TunnelCtl::from_frame(frame) {
        let ctl = ctl?;
        if ctl.state == TunnelState::CloseTunnel {
            let msg = RpcMessage::from_frame(frame).map_err(|e| {
                TunnelError::Client(ClientError::Protocol(format!("bad CloseTunnel: {e}")))
            })?;
            return Ok(Some(TunnelEvent::Closed(match msg.result() {
                Ok(v) => CloseStatus::from_value(Some(&v)),
                Err(e) => CloseStatus::Error(e.message),
            })));
        }
        // Late or repeated handshake frames carry no data.
        return Ok(None);
    }
    let msg = RpcMessage::from_frame(frame)
        .map_err(|e| TunnelError::Client(ClientError::Protocol(e.to_string())))?;
    match msg.result() {
        Ok(v) => Ok(parse_data(&v)),
        // An error on the data path ends the tunnel with that reason.
        Err(e) => Ok(Some(TunnelEvent::Closed(CloseStatus::Error(e.message)))),
    }
}

/// One end of an open tunnel: sends on `send_id` along `send_cids`, receives every
/// response with its own id.
pub struct TunnelEnd {
    client: Client,
    rx: mpsc::Receiver<RpcFrame>,
    recv_id: i64,
    send_id: i64,
    send_cids: Vec<i64>,
    closed: bool,
    dialect: Dialect,
}

/// How many frames may queue on a tunnel's receive stream before the client's reader
/// waits (back-pressure towards the broker instead of unbounded memory).
pub(super) const STREAM_CAPACITY: usize = 256;

/// **[ext]** End-to-end flow control: a sender keeps at most this many data bytes
/// unacknowledged; the receiver acknowledges what its application has consumed with a
/// channel 3 control `{"ack": n}`. Brokers disconnect a peer that does not read (they
/// must not buffer without bound), so without a window a fast command and a slow
/// terminal would lose the tunnel; with it the command is slowed down instead.
pub const FLOW_WINDOW: usize = 2 * 1024 * 1024;
/// Largest data chunk per frame (keeps acks and window accounting fine-grained).
pub const MAX_CHUNK: usize = 256 * 1024;
/// Free bytes a reader leaves in front of its data for [`TunnelSender::send_data_buf`]
/// (room for the body's header: IMap, key, List, channel, Blob and its length).
pub const DATA_HEADROOM: usize = 16;
/// What a data frame costs in the window besides its bytes, so that a stream of tiny
/// frames (keystrokes) is bounded in frames too, far below a broker's queue limit.
pub(super) const FRAME_COST: usize = 4096;

/// What an event waiting for [`TunnelReceiver::recv`] counts in the queue: data its
/// window cost, a control a small fixed amount.
fn queued_cost(ev: &TunnelEvent) -> usize {
    match ev {
        TunnelEvent::Data { data, .. } => cost(data.len()),
        _ => 64,
    }
}

pub(super) fn cost(len: usize) -> usize {
    len + FRAME_COST
}

impl TunnelEnd {
    /// rsh side, steps 1 and 7: calls `launchRexec` on `agent_path`, waits for rexec's
    /// CreateTunnelRequest, answers it with CreateTunnelResponse and returns the open
    /// tunnel. An RPC error answered instead (no such path, no access, the agent
    /// failed) comes back as [`TunnelError::Rpc`], a CloseTunnel `{"error"}` from a
    /// broker or the agent as [`TunnelError::Failed`].
    pub async fn launch(
        client: &Client,
        agent_path: &str,
        params: &LaunchParams,
        timeout: Duration,
    ) -> Result<TunnelEnd, TunnelError> {
        Self::launch_in(client, agent_path, params, Dialect::Shv, timeout).await
    }

    /// [`TunnelEnd::launch`] to an agent that speaks `dialect`: the launch in its form,
    /// and the tunnel's data in its form (see [`Dialect`]).
    pub async fn launch_in(
        client: &Client,
        agent_path: &str,
        params: &LaunchParams,
        dialect: Dialect,
        timeout: Duration,
    ) -> Result<TunnelEnd, TunnelError> {
        let param = match dialect {
            Dialect::Shv => params.to_value(),
            Dialect::Journal => params.to_journal_value().map_err(TunnelError::Failed)?,
        };
        let rid = client.next_request_id();
        let mut rx = client.register_stream(rid, STREAM_CAPACITY);
        let req = RpcMessage::new_request(rid, agent_path, "launchRexec", Some(param));
        if let Err(e) = client.send(req).await {
            client.unregister(rid);
            return Err(e.into());
        }
        let wait = async {
            loop {
                let frame = rx.recv().await.ok_or(ClientError::Disconnected)?;
                match TunnelCtl::from_frame(&frame) {
                    Some(Ok(ctl)) if ctl.state == TunnelState::CreateTunnelRequest => {
                        let w = ctl.request_id.ok_or_else(|| {
                            TunnelError::Failed("CreateTunnelRequest without RequestId".into())
                        })?;
                        let rcid = meta::stack_from_value(frame.meta.get(tag::REV_CALLER_IDS));
                        return Ok((w, rcid));
                    }
                    Some(Ok(ctl)) if ctl.state == TunnelState::CloseTunnel => {
                        return Err(match frame_event(&frame)? {
                            Some(TunnelEvent::Closed(CloseStatus::Error(e))) => {
                                TunnelError::Failed(e)
                            }
                            _ => TunnelError::Failed("closed before it was opened".into()),
                        });
                    }
                    // Our broker must answer the agent's FindTunnelRequest itself; if it
                    // reaches us, the broker does not do tunnels and nothing will follow.
                    Some(Ok(ctl)) if ctl.state == TunnelState::FindTunnelRequest => {
                        return Err(TunnelError::Failed(
                            "the broker does not support tunnels (FindTunnelRequest was \
                             forwarded to the client)"
                                .into(),
                        ));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                    None => {
                        let msg = RpcMessage::from_frame(&frame)
                            .map_err(|e| ClientError::Protocol(e.to_string()))?;
                        match msg.result() {
                            Err(e) => return Err(TunnelError::Rpc(e)),
                            Ok(v) => {
                                return Err(TunnelError::Failed(format!(
                                    "launchRexec answered a plain result {}, not a tunnel \
                                     (the broker does not support tunnels?)",
                                    v.to_cpon()
                                )))
                            }
                        }
                    }
                }
            }
        };
        let (w, rcid) = match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                client.unregister(rid);
                return Err(e);
            }
            Err(_) => {
                client.unregister(rid);
                return Err(TunnelError::Timeout(timeout));
            }
        };
        let resp = tunnel_frame(
            w,
            &rcid,
            true,
            Some(&TunnelCtl::new(TunnelState::CreateTunnelResponse)),
            None,
        );
        if let Err(e) = client.send_frame(resp).await {
            client.unregister(rid);
            return Err(e.into());
        }
        tracing::debug!("tunnel open: receiving on {rid}, sending on {w} via {rcid:?}");
        Ok(TunnelEnd {
            client: client.clone(),
            rx,
            recv_id: rid,
            send_id: w,
            send_cids: rcid,
            closed: false,
            dialect,
        })
    }

    /// rexec side, steps 6 and 8: sends CreateTunnelRequest for the FindTunnelResponse
    /// `ftr` (which must carry RequestId R; the secret is not echoed) and waits for
    /// rsh's CreateTunnelResponse.
    pub async fn create(
        client: &Client,
        ftr: &TunnelCtl,
        timeout: Duration,
    ) -> Result<TunnelEnd, TunnelError> {
        let rid = ftr
            .request_id
            .ok_or_else(|| TunnelError::Failed("FindTunnelResponse without RequestId".into()))?;
        let w = client.next_request_id();
        let mut rx = client.register_stream(w, STREAM_CAPACITY);
        let ctl = TunnelCtl {
            state: TunnelState::CreateTunnelRequest,
            host: ftr.host.clone(),
            port: ftr.port,
            secret: None,
            request_id: Some(w),
            caller_ids: ftr.caller_ids.clone(),
            nonce: None,
        };
        let req = tunnel_frame(rid, &ftr.caller_ids, true, Some(&ctl), None);
        if let Err(e) = client.send_frame(req).await {
            client.unregister(w);
            return Err(e.into());
        }
        let wait = async {
            loop {
                let frame = rx.recv().await.ok_or(ClientError::Disconnected)?;
                match TunnelCtl::from_frame(&frame) {
                    Some(Ok(ctl)) if ctl.state == TunnelState::CreateTunnelResponse => {
                        return Ok(meta::stack_from_value(frame.meta.get(tag::REV_CALLER_IDS)));
                    }
                    Some(Ok(ctl)) if ctl.state == TunnelState::CloseTunnel => {
                        return Err(match frame_event(&frame)? {
                            Some(TunnelEvent::Closed(CloseStatus::Error(e))) => {
                                TunnelError::Failed(e)
                            }
                            _ => TunnelError::Failed("closed before it was opened".into()),
                        });
                    }
                    Some(Err(e)) => return Err(TunnelError::from(e)),
                    // rsh's data may not arrive before its CreateTunnelResponse; an RPC
                    // error (e.g. a broker refusing the frame) ends the attempt.
                    _ => {
                        if let Ok(msg) = RpcMessage::from_frame(&frame) {
                            if let Err(e) = msg.result() {
                                return Err(TunnelError::Rpc(e));
                            }
                        }
                    }
                }
            }
        };
        let path_to_rsh = match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                client.unregister(w);
                return Err(e);
            }
            Err(_) => {
                client.unregister(w);
                return Err(TunnelError::Timeout(timeout));
            }
        };
        tracing::debug!("tunnel open: receiving on {w}, sending on {rid} via {path_to_rsh:?}");
        Ok(TunnelEnd {
            client: client.clone(),
            rx,
            recv_id: w,
            send_id: rid,
            send_cids: path_to_rsh,
            closed: false,
            dialect: Dialect::Shv,
        })
    }

    pub fn recv_id(&self) -> i64 {
        self.recv_id
    }
    pub fn send_id(&self) -> i64 {
        self.send_id
    }
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The far end speaks `dialect` (the device's end learns it from the launch).
    pub fn with_dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Splits into a cloneable sender and the receiver, so that reading and writing
    /// can run in separate tasks.
    pub fn split(self) -> (TunnelSender, TunnelReceiver) {
        let sender = TunnelSender {
            client: self.client.clone(),
            send_id: self.send_id,
            send_cids: self.send_cids,
            window: Arc::new(tokio::sync::Semaphore::new(FLOW_WINDOW)),
            dialect: self.dialect,
        };
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let buffered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let room = Arc::new(tokio::sync::Notify::new());
        // Acks must be seen even while the application is blocked sending (waiting for
        // those very acks), so a pump reads the stream independently of `recv`.
        tokio::spawn(pump(
            self.rx,
            events_tx,
            sender.clone(),
            buffered.clone(),
            room.clone(),
        ));
        let receiver = TunnelReceiver {
            client: self.client,
            events: events_rx,
            recv_id: self.recv_id,
            closed: self.closed,
            acker: sender.clone(),
            unacked: 0,
            deferred: false,
            buffered,
            room,
        };
        (sender, receiver)
    }
}

/// The sending half of a tunnel. Cheap to clone.
#[derive(Clone)]
pub struct TunnelSender {
    client: Client,
    send_id: i64,
    send_cids: Vec<i64>,
    /// Bytes we may still send before the far side acknowledges ([`FLOW_WINDOW`]);
    /// unused in the journal dialect, which has no acks.
    window: Arc<tokio::sync::Semaphore>,
    dialect: Dialect,
}

impl TunnelSender {
    /// Waits while the far side has [`FLOW_WINDOW`] bytes unacknowledged, then takes
    /// `len` bytes' share of the window (nothing to wait for in the journal dialect).
    async fn take_window(&self, len: usize) -> Result<(), TunnelError> {
        if self.dialect == Dialect::Journal {
            return if self.window.is_closed() {
                Err(TunnelError::Failed("tunnel closed".into()))
            } else {
                Ok(())
            };
        }
        let permits = self
            .window
            .acquire_many(cost(len) as u32)
            .await
            .map_err(|_| TunnelError::Failed("tunnel closed".into()))?;
        permits.forget();
        Ok(())
    }

    /// Sends bytes on a data channel as `[channel, blob]` (a String in the journal
    /// dialect), waiting while the far side has [`FLOW_WINDOW`] bytes unacknowledged.
    pub async fn send_data(&self, channel: i64, data: &[u8]) -> Result<(), TunnelError> {
        for chunk in data.chunks(MAX_CHUNK) {
            self.take_window(chunk.len()).await?;
            let mut frame = tunnel_frame(self.send_id, &self.send_cids, false, None, None);
            frame.body = data_body(channel, chunk, self.dialect);
            self.client.send_frame(frame).await?;
        }
        Ok(())
    }

    /// Sends `buf[DATA_HEADROOM..]` on `channel` without copying the bytes: the frame
    /// body is built around them in place (readers leave [`DATA_HEADROOM`] free bytes
    /// in front). Bulk output is mostly memory copies; this saves one per byte.
    pub async fn send_data_buf(&self, channel: i64, mut buf: Vec<u8>) -> Result<(), TunnelError> {
        let len = buf.len().saturating_sub(DATA_HEADROOM);
        if len > MAX_CHUNK || buf.len() < DATA_HEADROOM {
            return self
                .send_data(channel, buf.get(DATA_HEADROOM..).unwrap_or(&[]))
                .await;
        }
        self.take_window(len).await?;
        let (l, n) = crate::value::uint_bytes(len as u64);
        let head = super::fast::data_head(channel, self.dialect);
        let mut frame = tunnel_frame(self.send_id, &self.send_cids, false, None, None);
        match DATA_HEADROOM.checked_sub(head.len() + n) {
            Some(start) => {
                buf[start..start + head.len()].copy_from_slice(&head);
                buf[start + head.len()..DATA_HEADROOM].copy_from_slice(&l[..n]);
                buf.extend_from_slice(&[0xff, 0xff]);
                frame.body = bytes::Bytes::from(buf).slice(start..);
            }
            // A channel number too long for the headroom: copy.
            None => {
                frame.body = super::fast::data_body(channel, &buf[DATA_HEADROOM..], self.dialect)
            }
        }
        Ok(self.client.send_frame(frame).await?)
    }

    /// The far side consumed `n` more bytes.
    fn acknowledged(&self, n: usize) {
        // Never beyond the window, whatever a confused peer claims.
        let room = FLOW_WINDOW.saturating_sub(self.window.available_permits());
        self.window.add_permits(n.min(room));
    }

    /// Sends a control Map on channel 3 (rsh → rexec). The journal dialect has no
    /// controls (a C++ end ignores channel 3): nothing is sent.
    pub async fn send_control(&self, control: Control) -> Result<(), TunnelError> {
        if self.dialect == Dialect::Journal {
            return Ok(());
        }
        let result = RpcValue::from(vec![RpcValue::from(channel::CONTROL), control.to_value()]);
        self.send_result(result).await
    }

    async fn send_result(&self, result: RpcValue) -> Result<(), TunnelError> {
        let f = tunnel_frame(self.send_id, &self.send_cids, false, None, Some(result));
        Ok(self.client.send_frame(f).await?)
    }

    /// Sends CloseTunnel with `status` (Null for [`CloseStatus::Detached`]).
    pub async fn close(&self, status: &CloseStatus) -> Result<(), TunnelError> {
        let result = match status {
            CloseStatus::Detached => None,
            s => Some(s.to_value()),
        };
        let f = tunnel_frame(
            self.send_id,
            &self.send_cids,
            false,
            Some(&TunnelCtl::new(TunnelState::CloseTunnel)),
            result,
        );
        Ok(self.client.send_frame(f).await?)
    }
}

/// The receiving half of a tunnel.
pub struct TunnelReceiver {
    client: Client,
    /// Events from the pump (acks already taken out).
    events: mpsc::UnboundedReceiver<TunnelEvent>,
    recv_id: i64,
    closed: bool,
    /// Sends our acks.
    acker: TunnelSender,
    /// Window cost handed to the application and not yet acknowledged.
    unacked: usize,
    /// Data is acknowledged through a [`DeferredAcker`], not when `recv` hands it out.
    deferred: bool,
    /// Window cost the pump queued and the application has not taken yet.
    buffered: Arc<std::sync::atomic::AtomicUsize>,
    /// Told when the application took something (a journal-dialect pump waits for it).
    room: Arc<tokio::sync::Notify>,
}

/// Reads the tunnel's raw stream: acks go straight to the sender's window, everything
/// else is queued for [`TunnelReceiver::recv`]. The queue is bounded by the window: a
/// far side that ignores it is cut off rather than buffered for. A journal-dialect far
/// side has no window to keep to: there the pump stops reading instead while the
/// queue is full, which holds the far side back through the broker.
async fn pump(
    mut rx: mpsc::Receiver<RpcFrame>,
    events: mpsc::UnboundedSender<TunnelEvent>,
    sender: TunnelSender,
    buffered: Arc<std::sync::atomic::AtomicUsize>,
    room: Arc<tokio::sync::Notify>,
) {
    use std::sync::atomic::Ordering;
    loop {
        let ev = match rx.recv().await {
            None => TunnelEvent::Closed(CloseStatus::Error("connection to broker lost".into())),
            Some(frame) => match frame_event(&frame) {
                Ok(Some(ev)) => ev,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!("ignoring bad tunnel frame: {e}");
                    continue;
                }
            },
        };
        match &ev {
            TunnelEvent::Control(Control::Ack(n)) => {
                sender.acknowledged(usize::try_from(*n).unwrap_or(usize::MAX));
                continue;
            }
            TunnelEvent::Closed(_) => {
                let _ = events.send(ev);
                break;
            }
            // Controls are outside the window (nobody acks them), but they wait in the
            // same queue: counted too, so that a flood of them cannot grow it forever.
            TunnelEvent::Data { .. } | TunnelEvent::Control(_) => {
                if sender.dialect == Dialect::Journal {
                    loop {
                        let notified = room.notified();
                        if buffered.load(Ordering::Relaxed) <= FLOW_WINDOW {
                            break;
                        }
                        notified.await;
                    }
                }
                let queued = buffered.fetch_add(queued_cost(&ev), Ordering::Relaxed);
                if queued > 2 * FLOW_WINDOW {
                    let why = "the far side ignores the tunnel's flow control".to_string();
                    let _ = events.send(TunnelEvent::Closed(CloseStatus::Error(why)));
                    break;
                }
            }
        }
        if events.send(ev).is_err() {
            break;
        }
    }
    // A sender waiting for acks must not wait forever.
    sender.window.close();
}

impl TunnelReceiver {
    /// The next event; a lost connection yields `Closed(Error("connection lost"))`.
    /// After a `Closed` event every call returns `None`.
    pub async fn recv(&mut self) -> Option<TunnelEvent> {
        if self.closed {
            return None;
        }
        // What the application took in the previous calls is consumed: acknowledge it
        // once a quarter window has gathered, so the far side keeps streaming.
        if self.unacked >= FLOW_WINDOW / 4 && self.acker.dialect == Dialect::Shv {
            let n = self.unacked as u64;
            self.unacked = 0;
            if let Err(e) = self.acker.send_control(Control::Ack(n)).await {
                tracing::debug!("cannot acknowledge tunnel data: {e}");
            }
        }
        let ev = self.events.recv().await.unwrap_or_else(|| {
            TunnelEvent::Closed(CloseStatus::Error("connection to broker lost".into()))
        });
        match &ev {
            TunnelEvent::Closed(_) => {
                self.closed = true;
                self.client.unregister(self.recv_id);
            }
            TunnelEvent::Data { data, .. } if !self.deferred => {
                self.unacked += cost(data.len());
            }
            TunnelEvent::Data { .. } | TunnelEvent::Control(_) => {}
        }
        if !matches!(ev, TunnelEvent::Closed(_)) {
            self.buffered
                .fetch_sub(queued_cost(&ev), std::sync::atomic::Ordering::Relaxed);
            self.room.notify_one();
        }
        Some(ev)
    }
}

impl TunnelReceiver {
    /// From now on data counts as consumed only when the application says so through
    /// the returned acker (e.g. once it is written to a child process), not when `recv`
    /// hands it out. Then whatever the application queues between the two is bounded by
    /// the far side's window ([`FLOW_WINDOW`]): a consumer that stops reading holds the
    /// far side back instead of growing a queue. Every data event must then be reported
    /// to an acker, also the ones the application drops.
    pub fn deferred_acks(&mut self) -> DeferredAcker {
        self.deferred = true;
        DeferredAcker {
            acker: self.acker.clone(),
            unacked: 0,
        }
    }
}

/// Acknowledges tunnel data as the application consumes it; see
/// [`TunnelReceiver::deferred_acks`]. Clones count separately, each acknowledging its own
/// share.
#[derive(Clone)]
pub struct DeferredAcker {
    acker: TunnelSender,
    unacked: usize,
}

impl DeferredAcker {
    /// `len` bytes of one data event are consumed: acknowledged once a quarter window
    /// has gathered (as `recv` does), so the far side keeps streaming.
    pub async fn consumed(&mut self, len: usize) {
        self.unacked = self.unacked.saturating_add(cost(len));
        if self.unacked >= FLOW_WINDOW / 4 && self.acker.dialect == Dialect::Shv {
            let n = self.unacked as u64;
            self.unacked = 0;
            if let Err(e) = self.acker.send_control(Control::Ack(n)).await {
                tracing::debug!("cannot acknowledge tunnel data: {e}");
            }
        }
    }
}

impl Drop for TunnelReceiver {
    fn drop(&mut self) {
        self.client.unregister(self.recv_id);
    }
}
