//! Building and reading tunnel frames: handshake answers and `[channel, bytes]` data.

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("{0}")]
    Client(#[from] ClientError),
    /// An RPC error answered instead of a tunnel (path not found, access denied, …).
    #[error("{0}")]
    Rpc(RpcError),
    #[error("tunnel failed: {0}")]
    Failed(String),
    #[error("tunnel not opened within {0:?}")]
    Timeout(Duration),
    #[error("bad TunnelCtl: {0}")]
    BadCtl(#[from] TunnelCtlError),
}

/// What a tunnel end receives.
#[derive(Debug, Clone, PartialEq)]
pub enum TunnelEvent {
    /// Bytes on a data channel (0 stdin, 1 stdout, 2 stderr).
    /// Data of `channel`: a slice of the received frame's body where the fast path read
    /// it (no copy).
    Data { channel: i64, data: bytes::Bytes },
    /// A channel 3 control message.
    Control(Control),
    /// The far side (or a broker) closed the tunnel.
    Closed(CloseStatus),
}

pub(super) fn response_meta(request_id: i64, cids: &[i64]) -> MetaMap {
    let mut meta = MetaMap::new();
    meta.insert(tag::META_TYPE_ID, RpcValue::from(1));
    meta.insert(tag::REQUEST_ID, RpcValue::from(request_id));
    if !cids.is_empty() {
        meta.insert(tag::CALLER_IDS, meta::stack_to_value(cids));
    }
    meta
}

/// Builds a tunnel response frame `<8:id, 11:cids[, 13:null][, 15:tctl]>i{[2:result]}`.
pub fn tunnel_frame(
    request_id: i64,
    cids: &[i64],
    rev_caller_ids: bool,
    ctl: Option<&TunnelCtl>,
    result: Option<RpcValue>,
) -> RpcFrame {
    let mut meta = response_meta(request_id, cids);
    if rev_caller_ids {
        // Asks every broker on the way to record the path back to us (rcid rule).
        meta.insert(tag::REV_CALLER_IDS, RpcValue::null());
    }
    if let Some(c) = ctl {
        meta.insert(tag::TUNNEL_CTL, c.to_value());
    }
    let mut body = IMap::new();
    if let Some(r) = result {
        body.insert(key::RESULT, r);
    }
    RpcMessage { meta, body }.into_frame()
}

/// A tunnel control frame answering `request_meta`: its RequestId, sent back along
/// its CallerIds.
pub(super) fn answer(
    request_meta: &MetaMap,
    rev_caller_ids: bool,
    state: TunnelState,
    result: Option<RpcValue>,
) -> RpcFrame {
    let rid = request_meta
        .get(tag::REQUEST_ID)
        .and_then(as_i64)
        .unwrap_or_default();
    let cids = meta::stack_from_value(request_meta.get(tag::CALLER_IDS));
    tunnel_frame(
        rid,
        &cids,
        rev_caller_ids,
        Some(&TunnelCtl::new(state)),
        result,
    )
}

/// The agent's answer to `launchRexec` (step 2): a response carrying `13:null` and a
/// FindTunnelRequest with the agent's `nonce`, sent back along the request's CallerIds.
pub fn find_tunnel_request(request_meta: &MetaMap, nonce: Option<&str>) -> RpcFrame {
    let mut ctl = TunnelCtl::new(TunnelState::FindTunnelRequest);
    ctl.nonce = nonce.map(str::to_string);
    let rid = request_meta
        .get(tag::REQUEST_ID)
        .and_then(as_i64)
        .unwrap_or_default();
    let cids = meta::stack_from_value(request_meta.get(tag::CALLER_IDS));
    tunnel_frame(rid, &cids, true, Some(&ctl), None)
}

/// A CloseTunnel sent back along a request's CallerIds with `{"error": reason}`, for
/// failures after the agent already answered with FindTunnelRequest.
pub fn close_with_error(request_meta: &MetaMap, reason: &str) -> RpcFrame {
    let status = CloseStatus::Error(reason.to_string()).to_value();
    answer(request_meta, false, TunnelState::CloseTunnel, Some(status))
}

/// Decodes one data result `[channel, bytes]` (Blob, or String from old peers).
pub fn parse_data(result: &RpcValue) -> Option<TunnelEvent> {
    let Value::List(l) = &result.value else {
        return None;
    };
    let ch = as_i64(l.first()?)?;
    let payload = l.get(1)?;
    if ch == channel::CONTROL {
        return Control::parse(payload).map(TunnelEvent::Control);
    }
    let data = match &payload.value {
        Value::Blob(b) => bytes::Bytes::copy_from_slice(b),
        Value::String(s) => bytes::Bytes::copy_from_slice(s.as_bytes()),
        _ => return None,
    };
    Some(TunnelEvent::Data { channel: ch, data })
}
