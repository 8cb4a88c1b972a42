//! Tunnels (tunnel.md): the `TunnelCtl` meta value and the endpoint state machine that
//! `shvrsh` (operator side) and `shvrexec` (device side) share.
//!
//! A tunnel is a pair of request ids: R (rsh's `launchRexec` request) on which rexec
//! sends and rsh receives, and W (rexec's own id) on which rsh sends and rexec receives.
//! Every frame is an RPC *response*; brokers route it by its CallerIds (tag 11), which
//! each end learned from the RevCallerIds (tag 13) of the handshake frame it received.
//!
//! ```text
//! rsh   --launchRexec(R)----------------------------------> agent      (launch_request)
//! agent --<8:R,13:null,tctl{1:1}>--> broker                            (find_tunnel_request)
//! broker--<8:R,tctl{1:2,2,3,4,6}>--> agent -> spawns rexec             (FindTunnelResponse)
//! rexec --<8:R,11:cids,13:null,tctl{1:3,5:W}>--> rsh                  (TunnelEnd::create)
//! rsh   --<8:W,11:rcid,13:null,tctl{1:4}>--> rexec                    (TunnelEnd::accept)
//! data  --<8:R|W,11:path>i{2:[channel, blob]}-->                      (send_data / recv)
//! close --<8:R|W,11:path,tctl{1:5}>i{2:{"exitCode":n}}-->             (close)
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use shvproto::{IMap, Map, MetaMap, RpcValue, Value};
use tokio::sync::mpsc;

use crate::client::{Client, ClientError};
use crate::frame::RpcFrame;
use crate::message::{RpcError, RpcMessage};
use crate::meta::{self, key, tag};

/// MetaTypeId of a TunnelCtl value.
pub const TUNNEL_CTL_META_TYPE: i64 = 3;

/// Tunnel data channels.
pub mod channel {
    pub const STDIN: i64 = 0;
    /// stdout, and in PTY mode also stderr.
    pub const STDOUT: i64 = 1;
    pub const STDERR: i64 = 2;
    /// Control Maps from rsh to rexec: `{"resize":[c,r]}`, `{"eof":true}`, `{"signal":N}`.
    pub const CONTROL: i64 = 3;
}

/// TunnelCtl IMap keys.
pub mod tctl_key {
    pub const STATE: i32 = 1;
    pub const HOST: i32 = 2;
    pub const PORT: i32 = 3;
    pub const SECRET: i32 = 4;
    pub const REQUEST_ID: i32 = 5;
    pub const CALLER_IDS: i32 = 6;
    /// [ext] A value the agent puts in its FindTunnelRequest and brokers copy into the
    /// FindTunnelResponse, so that the agent binds the response to its own launch even
    /// when several operators' launches share a request id.
    pub const NONCE: i32 = 7;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelCtlError {
    #[error("TunnelCtl is not an IMap")]
    NotIMap,
    #[error("TunnelCtl has no State")]
    NoState,
    #[error("unknown TunnelCtl State {0}")]
    BadState(i64),
    #[error("TunnelCtl key {0} has a wrong type")]
    BadField(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelState {
    FindTunnelRequest = 1,
    FindTunnelResponse = 2,
    CreateTunnelRequest = 3,
    CreateTunnelResponse = 4,
    CloseTunnel = 5,
}

impl TryFrom<i64> for TunnelState {
    type Error = TunnelCtlError;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Ok(match v {
            1 => TunnelState::FindTunnelRequest,
            2 => TunnelState::FindTunnelResponse,
            3 => TunnelState::CreateTunnelRequest,
            4 => TunnelState::CreateTunnelResponse,
            5 => TunnelState::CloseTunnel,
            other => return Err(TunnelCtlError::BadState(other)),
        })
    }
}

/// The TunnelCtl meta value (tag 15).
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelCtl {
    pub state: TunnelState,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// One-time login secret; never printed by `Debug`.
    pub secret: Option<String>,
    pub request_id: Option<i64>,
    /// The cid path from the tunnel broker to rsh (top last); empty = absent.
    pub caller_ids: Vec<i64>,
    /// [ext] The agent's launch nonce, echoed by brokers.
    pub nonce: Option<String>,
}

impl fmt::Debug for TunnelCtl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelCtl")
            .field("state", &self.state)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("request_id", &self.request_id)
            .field("caller_ids", &self.caller_ids)
            .field("nonce", &self.nonce)
            .finish()
    }
}

fn as_i64(v: &RpcValue) -> Option<i64> {
    match v.value {
        Value::Int(i) => Some(i),
        Value::UInt(u) => i64::try_from(u).ok(),
        _ => None,
    }
}

impl TunnelCtl {
    pub fn new(state: TunnelState) -> Self {
        TunnelCtl {
            state,
            host: None,
            port: None,
            secret: None,
            request_id: None,
            caller_ids: Vec::new(),
            nonce: None,
        }
    }

    /// Tolerant parse: the `<1:3>` meta is optional (old peers omit it), only State is
    /// mandatory, Null fields count as absent, unknown keys are ignored.
    pub fn parse(v: &RpcValue) -> Result<Self, TunnelCtlError> {
        let Value::IMap(m) = &v.value else {
            return Err(TunnelCtlError::NotIMap);
        };
        let field = |k: i32| m.get(&k).filter(|v| !v.is_null());
        let state = field(tctl_key::STATE).ok_or(TunnelCtlError::NoState)?;
        let state = as_i64(state).ok_or(TunnelCtlError::BadField(tctl_key::STATE))?;
        let string = |k: i32| -> Result<Option<String>, TunnelCtlError> {
            match field(k).map(|v| &v.value) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.to_string())),
                Some(_) => Err(TunnelCtlError::BadField(k)),
            }
        };
        let int = |k: i32| -> Result<Option<i64>, TunnelCtlError> {
            field(k)
                .map(|v| as_i64(v).ok_or(TunnelCtlError::BadField(k)))
                .transpose()
        };
        let port = int(tctl_key::PORT)?
            .map(|p| u16::try_from(p).map_err(|_| TunnelCtlError::BadField(tctl_key::PORT)))
            .transpose()?;
        Ok(TunnelCtl {
            state: TunnelState::try_from(state)?,
            host: string(tctl_key::HOST)?,
            port,
            secret: string(tctl_key::SECRET)?,
            request_id: int(tctl_key::REQUEST_ID)?,
            caller_ids: meta::stack_from_value(field(tctl_key::CALLER_IDS)),
            nonce: string(tctl_key::NONCE)?,
        })
    }

    /// The wire form: `<1:3>i{1:state, …}` with absent fields left out.
    pub fn to_value(&self) -> RpcValue {
        let mut m = IMap::new();
        m.insert(tctl_key::STATE, RpcValue::from(self.state as i64));
        if let Some(h) = &self.host {
            m.insert(tctl_key::HOST, RpcValue::from(h.as_str()));
        }
        if let Some(p) = self.port {
            m.insert(tctl_key::PORT, RpcValue::from(i64::from(p)));
        }
        if let Some(s) = &self.secret {
            m.insert(tctl_key::SECRET, RpcValue::from(s.as_str()));
        }
        if let Some(r) = self.request_id {
            m.insert(tctl_key::REQUEST_ID, RpcValue::from(r));
        }
        if !self.caller_ids.is_empty() {
            m.insert(tctl_key::CALLER_IDS, meta::stack_to_value(&self.caller_ids));
        }
        if let Some(n) = &self.nonce {
            m.insert(tctl_key::NONCE, RpcValue::from(n.as_str()));
        }
        let mut mm = MetaMap::new();
        mm.insert(tag::META_TYPE_ID, RpcValue::from(TUNNEL_CTL_META_TYPE));
        RpcValue::new(Value::IMap(Box::new(m)), Some(mm))
    }

    /// The TunnelCtl of a frame, if it carries one.
    pub fn from_frame(frame: &RpcFrame) -> Option<Result<Self, TunnelCtlError>> {
        frame.tunnel_ctl().map(Self::parse)
    }
}

/// How a tunnel ended, as carried in the CloseTunnel result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseStatus {
    ExitCode(i32),
    Signal(i32),
    /// A failure reported by the far side or a broker (`{"error": "..."}`).
    Error(String),
    /// Closed without a status (e.g. the operator detached).
    Detached,
}

impl CloseStatus {
    pub fn to_value(&self) -> RpcValue {
        let mut m = Map::new();
        match self {
            CloseStatus::ExitCode(c) => {
                m.insert("exitCode".into(), RpcValue::from(i64::from(*c)));
            }
            CloseStatus::Signal(s) => {
                m.insert("signal".into(), RpcValue::from(i64::from(*s)));
            }
            CloseStatus::Error(e) => {
                m.insert("error".into(), RpcValue::from(e.as_str()));
            }
            CloseStatus::Detached => return RpcValue::null(),
        }
        RpcValue::from(m)
    }

    pub fn from_value(v: Option<&RpcValue>) -> Self {
        let Some(Value::Map(m)) = v.map(|v| &v.value) else {
            return CloseStatus::Detached;
        };
        if let Some(e) = m.get("error") {
            return CloseStatus::Error(match &e.value {
                Value::String(s) => s.to_string(),
                _ => e.to_cpon(),
            });
        }
        if let Some(c) = m.get("exitCode").and_then(as_i64) {
            return CloseStatus::ExitCode(c as i32);
        }
        if let Some(s) = m.get("signal").and_then(as_i64) {
            return CloseStatus::Signal(s as i32);
        }
        CloseStatus::Detached
    }

    /// Process exit status the way ssh reports it: code, 128+signal, 255 for failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            CloseStatus::ExitCode(c) => *c,
            CloseStatus::Signal(s) => 128 + *s,
            CloseStatus::Error(_) | CloseStatus::Detached => 255,
        }
    }
}

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
    Data { channel: i64, data: Vec<u8> },
    /// A channel 3 control value (a Map).
    Control(RpcValue),
    /// The far side (or a broker) closed the tunnel.
    Closed(CloseStatus),
}

/// The `launchRexec` parameter rsh sends (tunnel.md step 1, Map form of params).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LaunchParams {
    /// Use a PTY (`runPtyCmd`) rather than pipes (`runCmd`).
    pub pty: bool,
    /// Program and arguments; empty = the user's login shell.
    pub cmd: Vec<String>,
    pub cols: u16,
    pub rows: u16,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
}

pub const METHOD_RUN_PTY_CMD: &str = "runPtyCmd";
pub const METHOD_RUN_CMD: &str = "runCmd";

impl LaunchParams {
    pub fn method(&self) -> &'static str {
        if self.pty {
            METHOD_RUN_PTY_CMD
        } else {
            METHOD_RUN_CMD
        }
    }

    /// `{"method": ..., "params": {"cmd": [...], "cols": c, "rows": r, "env": {...}}}`
    pub fn to_value(&self) -> RpcValue {
        let mut p = Map::new();
        p.insert(
            "cmd".into(),
            RpcValue::from(
                self.cmd
                    .iter()
                    .map(|s| RpcValue::from(s.as_str()))
                    .collect::<Vec<_>>(),
            ),
        );
        if self.pty {
            p.insert("cols".into(), RpcValue::from(i64::from(self.cols)));
            p.insert("rows".into(), RpcValue::from(i64::from(self.rows)));
        }
        if !self.env.is_empty() {
            let env: Map = self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), RpcValue::from(v.as_str())))
                .collect();
            p.insert("env".into(), RpcValue::from(env));
        }
        if let Some(cwd) = &self.cwd {
            p.insert("cwd".into(), RpcValue::from(cwd.as_str()));
        }
        let mut m = Map::new();
        m.insert("method".into(), RpcValue::from(self.method()));
        m.insert("params".into(), RpcValue::from(p));
        RpcValue::from(m)
    }

    /// Parses `{"method": ..., "params": ...}` where params is the Map form, the List
    /// form `[cmd, cols, rows]`, or (for runCmd) `cmd` alone; cmd is a String (run by
    /// `/bin/sh -c`) or a List `[prog, arg…]`.
    pub fn from_value(v: &RpcValue) -> Result<Self, RpcError> {
        let bad = |m: &str| RpcError::invalid_param(m.to_string());
        let Value::Map(m) = &v.value else {
            return Err(bad("launchRexec param must be a Map {method, params}"));
        };
        let method = match m.get("method").map(|v| &v.value) {
            Some(Value::String(s)) => s.as_str(),
            _ => return Err(bad("launchRexec param has no 'method'")),
        };
        let pty = match method {
            METHOD_RUN_PTY_CMD => true,
            METHOD_RUN_CMD => false,
            other => return Err(bad(&format!("unknown launchRexec method '{other}'"))),
        };
        let mut out = LaunchParams {
            pty,
            cols: 80,
            rows: 24,
            ..Default::default()
        };
        let dim = |v: Option<&RpcValue>, default: u16| -> u16 {
            v.and_then(as_i64)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        let params = m.get("params").cloned().unwrap_or_else(RpcValue::null);
        match &params.value {
            Value::Map(p) => {
                out.cmd = cmd_from_value(p.get("cmd"))?;
                out.cols = dim(p.get("cols"), 80);
                out.rows = dim(p.get("rows"), 24);
                if let Some(Value::Map(env)) = p.get("env").map(|v| &v.value) {
                    for (k, v) in env.iter() {
                        if let Value::String(s) = &v.value {
                            out.env.push((k.clone(), s.to_string()));
                        }
                    }
                }
                if let Some(Value::String(s)) = p.get("cwd").map(|v| &v.value) {
                    out.cwd = Some(s.to_string());
                }
            }
            Value::List(l) if pty => {
                out.cmd = cmd_from_value(l.first())?;
                out.cols = dim(l.get(1), 80);
                out.rows = dim(l.get(2), 24);
            }
            _ => out.cmd = cmd_from_value(Some(&params))?,
        }
        Ok(out)
    }
}

/// A command as String (`/bin/sh -c STRING`) or List of Strings; Null = login shell.
fn cmd_from_value(v: Option<&RpcValue>) -> Result<Vec<String>, RpcError> {
    match v.map(|v| &v.value) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec!["/bin/sh".into(), "-c".into(), s.to_string()]),
        Some(Value::List(l)) => l
            .iter()
            .map(|a| match &a.value {
                Value::String(s) => Ok(s.to_string()),
                _ => Err(RpcError::invalid_param("cmd items must be Strings")),
            })
            .collect(),
        Some(_) => Err(RpcError::invalid_param(
            "cmd must be a String or a List of Strings",
        )),
    }
}

fn response_meta(request_id: i64, cids: &[i64]) -> MetaMap {
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
fn answer(
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
        return Some(TunnelEvent::Control(payload.clone()));
    }
    let data = match &payload.value {
        Value::Blob(b) => b.to_vec(),
        Value::String(s) => s.as_bytes().to_vec(),
        _ => return None,
    };
    Some(TunnelEvent::Data { channel: ch, data })
}

/// The body `i{2:[channel, b"…"]}` of a data frame, written directly (one copy of the
/// bytes instead of three through RpcValue and the generic writer).
fn data_body(channel: i64, data: &[u8]) -> bytes::Bytes {
    let (len, n) = crate::value::uint_bytes(data.len() as u64);
    let mut b = Vec::with_capacity(data.len() + 16);
    // Channels are 0..=3: a tiny Int.
    b.extend_from_slice(&[0x8a, 0x42, 0x88, 0x40 | (channel as u8 & 0x3f), 0x85]);
    b.extend_from_slice(&len[..n]);
    b.extend_from_slice(data);
    b.extend_from_slice(&[0xff, 0xff]);
    bytes::Bytes::from(b)
}

/// The common data frame `i{2:[channel, b"…"]}`, read straight out of the body: the
/// generic decoder reads a Blob a byte at a time, which made it most of a tunnel end's
/// CPU. Anything else (control Maps, Strings, other layouts) takes the generic path.
fn fast_data(body: &[u8]) -> Option<TunnelEvent> {
    // 8a IMap, 42 key Int 2 (Result), 88 List, channel (tiny Int/UInt), 85 Blob
    let rest = body.strip_prefix(&[0x8a, 0x42, 0x88])?;
    let (&ch, rest) = rest.split_first()?;
    let channel = match ch {
        0x00..=0x3f => i64::from(ch),
        0x40..=0x7f => i64::from(ch & 0x3f),
        _ => return None,
    };
    if channel == channel::CONTROL {
        return None;
    }
    let rest = rest.strip_prefix(&[0x85])?;
    let (len, start) = crate::value::read_uint(rest, 0).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    let data = rest.get(start..end)?;
    // The List and the IMap end right after the Blob, or this is not our layout.
    (rest.get(end..)? == [0xff, 0xff]).then(|| TunnelEvent::Data {
        channel,
        data: data.to_vec(),
    })
}

/// Interprets a frame received on a tunnel's stream.
fn frame_event(frame: &RpcFrame) -> Result<Option<TunnelEvent>, TunnelError> {
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
}

/// How many frames may queue on a tunnel's receive stream before the client's reader
/// waits (back-pressure towards the broker instead of unbounded memory).
const STREAM_CAPACITY: usize = 256;

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
const FRAME_COST: usize = 4096;

fn cost(len: usize) -> usize {
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
        let rid = client.next_request_id();
        let mut rx = client.register_stream(rid, STREAM_CAPACITY);
        let req = RpcMessage::new_request(rid, agent_path, "launchRexec", Some(params.to_value()));
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

    /// Splits into a cloneable sender and the receiver, so that reading and writing
    /// can run in separate tasks.
    pub fn split(self) -> (TunnelSender, TunnelReceiver) {
        let sender = TunnelSender {
            client: self.client.clone(),
            send_id: self.send_id,
            send_cids: self.send_cids,
            window: Arc::new(tokio::sync::Semaphore::new(FLOW_WINDOW)),
        };
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let buffered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Acks must be seen even while the application is blocked sending (waiting for
        // those very acks), so a pump reads the stream independently of `recv`.
        tokio::spawn(pump(self.rx, events_tx, sender.clone(), buffered.clone()));
        let receiver = TunnelReceiver {
            client: self.client,
            events: events_rx,
            recv_id: self.recv_id,
            closed: self.closed,
            acker: sender.clone(),
            unacked: 0,
            buffered,
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
    /// Bytes we may still send before the far side acknowledges ([`FLOW_WINDOW`]).
    window: Arc<tokio::sync::Semaphore>,
}

impl TunnelSender {
    /// Sends bytes on a data channel as `[channel, blob]`, waiting while the far side
    /// has [`FLOW_WINDOW`] bytes unacknowledged.
    pub async fn send_data(&self, channel: i64, data: &[u8]) -> Result<(), TunnelError> {
        for chunk in data.chunks(MAX_CHUNK) {
            let permits = self
                .window
                .acquire_many(cost(chunk.len()) as u32)
                .await
                .map_err(|_| TunnelError::Failed("tunnel closed".into()))?;
            permits.forget();
            let mut frame = tunnel_frame(self.send_id, &self.send_cids, false, None, None);
            frame.body = data_body(channel, chunk);
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
        let permits = self
            .window
            .acquire_many(cost(len) as u32)
            .await
            .map_err(|_| TunnelError::Failed("tunnel closed".into()))?;
        permits.forget();
        let (l, n) = crate::value::uint_bytes(len as u64);
        let start = DATA_HEADROOM - 5 - n;
        buf[start..start + 5].copy_from_slice(&[
            0x8a,
            0x42,
            0x88,
            0x40 | (channel as u8 & 0x3f),
            0x85,
        ]);
        buf[start + 5..DATA_HEADROOM].copy_from_slice(&l[..n]);
        buf.extend_from_slice(&[0xff, 0xff]);
        let mut frame = tunnel_frame(self.send_id, &self.send_cids, false, None, None);
        frame.body = bytes::Bytes::from(buf).slice(start..);
        Ok(self.client.send_frame(frame).await?)
    }

    /// The far side consumed `n` more bytes.
    fn acknowledged(&self, n: usize) {
        // Never beyond the window, whatever a confused peer claims.
        let room = FLOW_WINDOW.saturating_sub(self.window.available_permits());
        self.window.add_permits(n.min(room));
    }

    /// Sends a control Map on channel 3 (rsh → rexec).
    pub async fn send_control(&self, control: RpcValue) -> Result<(), TunnelError> {
        let result = RpcValue::from(vec![RpcValue::from(channel::CONTROL), control]);
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
    /// Window cost the pump queued and the application has not taken yet.
    buffered: Arc<std::sync::atomic::AtomicUsize>,
}

/// Reads the tunnel's raw stream: acks go straight to the sender's window, everything
/// else is queued for [`TunnelReceiver::recv`]. The queue is bounded by the window: a
/// far side that ignores it is cut off rather than buffered for.
async fn pump(
    mut rx: mpsc::Receiver<RpcFrame>,
    events: mpsc::UnboundedSender<TunnelEvent>,
    sender: TunnelSender,
    buffered: Arc<std::sync::atomic::AtomicUsize>,
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
            TunnelEvent::Control(v) if v.get("ack").is_some() => {
                let n = v
                    .get("ack")
                    .map(|n| n.as_int().max(0) as usize)
                    .unwrap_or(0);
                sender.acknowledged(n);
                continue;
            }
            TunnelEvent::Data { data, .. } => {
                let queued = buffered.fetch_add(cost(data.len()), Ordering::Relaxed);
                if queued > 2 * FLOW_WINDOW {
                    let why = "the far side ignores the tunnel's flow control".to_string();
                    let _ = events.send(TunnelEvent::Closed(CloseStatus::Error(why)));
                    break;
                }
            }
            TunnelEvent::Closed(_) => {
                let _ = events.send(ev);
                break;
            }
            TunnelEvent::Control(_) => {}
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
        if self.unacked >= FLOW_WINDOW / 4 {
            let mut m = shvproto::Map::new();
            m.insert("ack".into(), RpcValue::from(self.unacked as i64));
            self.unacked = 0;
            if let Err(e) = self.acker.send_control(m.into()).await {
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
            TunnelEvent::Data { data, .. } => {
                let c = cost(data.len());
                self.unacked += c;
                self.buffered
                    .fetch_sub(c, std::sync::atomic::Ordering::Relaxed);
            }
            TunnelEvent::Control(_) => {}
        }
        Some(ev)
    }
}

impl Drop for TunnelReceiver {
    fn drop(&mut self) {
        self.client.unregister(self.recv_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ctl_full() -> TunnelCtl {
        TunnelCtl {
            state: TunnelState::FindTunnelResponse,
            host: Some("127.0.0.1".into()),
            port: Some(3755),
            secret: Some("s3cr3t".into()),
            request_id: Some(42),
            caller_ids: vec![1, 7],
            nonce: Some("n0nce".into()),
        }
    }

    #[test]
    fn fast_data_matches_the_generic_decoder() {
        for (ch, data) in [(1i64, vec![]), (2, b"abc".to_vec()), (0, vec![0u8; 70_000])] {
            let v = RpcValue::from(vec![RpcValue::from(ch), RpcValue::from(data.clone())]);
            let mut m = shvproto::IMap::new();
            m.insert(2, v.clone());
            let body = RpcValue::from(m).to_chainpack();
            assert_eq!(fast_data(&body), parse_data(&v), "channel {ch}");
            assert_eq!(
                fast_data(&body),
                Some(TunnelEvent::Data { channel: ch, data })
            );
        }
        // What we write is what the generic writer writes.
        for (ch, data) in [(0i64, b"".to_vec()), (2, vec![7u8; 300])] {
            let v = RpcValue::from(vec![RpcValue::from(ch), RpcValue::from(data.clone())]);
            let mut m = shvproto::IMap::new();
            m.insert(2, v);
            assert_eq!(
                &data_body(ch, &data)[..],
                &RpcValue::from(m).to_chainpack()[..]
            );
        }
        // Control maps, truncated or trailing bytes: not the fast path.
        let ctl = RpcValue::from_cpon(r#"i{2:[3,{"eof":true}]}"#)
            .unwrap()
            .to_chainpack();
        assert_eq!(fast_data(&ctl), None);
        let good = RpcValue::from_cpon(r#"i{2:[1,b"xy"]}"#)
            .unwrap()
            .to_chainpack();
        assert_eq!(fast_data(&good[..good.len() - 1]), None);
        let mut longer = good.clone();
        longer.insert(longer.len() - 1, 0x41);
        assert_eq!(fast_data(&longer), None);
    }

    #[test]
    fn tctl_wire_shape() {
        let v = TunnelCtl::new(TunnelState::FindTunnelRequest).to_value();
        assert_eq!(v.to_cpon(), "<1:3>i{1:1}");
        let v = ctl_full().to_value();
        assert_eq!(
            v.to_cpon(),
            r#"<1:3>i{1:2,2:"127.0.0.1",3:3755,4:"s3cr3t",5:42,6:[1,7],7:"n0nce"}"#
        );
        let one = TunnelCtl {
            caller_ids: vec![5],
            ..TunnelCtl::new(TunnelState::CreateTunnelRequest)
        };
        assert_eq!(one.to_value().to_cpon(), "<1:3>i{1:3,6:5}");
    }

    #[test]
    fn tctl_round_trip() {
        for c in [
            ctl_full(),
            TunnelCtl::new(TunnelState::CloseTunnel),
            TunnelCtl {
                caller_ids: vec![3],
                request_id: Some(-1),
                ..TunnelCtl::new(TunnelState::CreateTunnelResponse)
            },
        ] {
            let v = c.to_value();
            assert_eq!(TunnelCtl::parse(&v).unwrap(), c);
            let cp = RpcValue::from_chainpack(v.to_chainpack()).unwrap();
            assert_eq!(TunnelCtl::parse(&cp).unwrap(), c);
            let cpon = RpcValue::from_cpon(v.to_cpon()).unwrap();
            assert_eq!(TunnelCtl::parse(&cpon).unwrap(), c);
        }
    }

    #[test]
    fn tctl_tolerant_parse() {
        // No meta, UInt state, Null fields, [] and [x] stacks, unknown keys.
        let v = RpcValue::from_cpon(r#"i{1:2u,2:null,3:4000u,6:[],99:"x"}"#).unwrap();
        let c = TunnelCtl::parse(&v).unwrap();
        assert_eq!(c.state, TunnelState::FindTunnelResponse);
        assert_eq!(c.host, None);
        assert_eq!(c.port, Some(4000));
        assert!(c.caller_ids.is_empty());
        let v = RpcValue::from_cpon("i{1:4,6:[9]}").unwrap();
        assert_eq!(TunnelCtl::parse(&v).unwrap().caller_ids, vec![9]);
        assert_eq!(
            TunnelCtl::parse(&RpcValue::from_cpon("i{2:\"h\"}").unwrap()),
            Err(TunnelCtlError::NoState)
        );
        assert_eq!(
            TunnelCtl::parse(&RpcValue::from_cpon("i{1:9}").unwrap()),
            Err(TunnelCtlError::BadState(9))
        );
        assert_eq!(
            TunnelCtl::parse(&RpcValue::from_cpon("{}").unwrap()),
            Err(TunnelCtlError::NotIMap)
        );
        assert_eq!(
            TunnelCtl::parse(&RpcValue::from_cpon("i{1:1,3:70000}").unwrap()),
            Err(TunnelCtlError::BadField(3))
        );
    }

    #[test]
    fn secret_not_in_debug() {
        assert!(!format!("{:?}", ctl_full()).contains("s3cr3t"));
    }

    #[test]
    fn step2_find_tunnel_request_shape() {
        let req = RpcValue::from_cpon(
            r#"<1:1,8:12,9:"test/agent",10:"launchRexec",11:[3,4]>i{1:{"method":"runCmd","params":{"cmd":["ls"]}}}"#,
        )
        .unwrap();
        let f = RpcFrame::parse(Bytes::from(req.to_chainpack())).unwrap();
        let out = find_tunnel_request(&f.meta, None);
        let msg = RpcMessage::from_frame(&out).unwrap();
        assert_eq!(
            RpcValue::new(Value::IMap(Box::new(msg.body.clone())), Some(msg.meta)).to_cpon(),
            "<1:1,8:12,11:[3,4],13:null,15:<1:3>i{1:1}>i{}"
        );
        assert!(out.is_response());
    }

    #[test]
    fn step6_7_shapes() {
        let f = tunnel_frame(
            12,
            &[3],
            true,
            Some(&TunnelCtl {
                state: TunnelState::CreateTunnelRequest,
                host: Some("localhost".into()),
                port: Some(3755),
                secret: None,
                request_id: Some(10),
                caller_ids: vec![3],
                nonce: None,
            }),
            None,
        );
        let v = RpcValue::from_chainpack(f.payload()).unwrap();
        assert_eq!(
            v.to_cpon(),
            r#"<1:1,8:12,11:3,13:null,15:<1:3>i{1:3,2:"localhost",3:3755,5:10,6:3}>i{}"#
        );
        let f = tunnel_frame(
            10,
            &[8],
            true,
            Some(&TunnelCtl::new(TunnelState::CreateTunnelResponse)),
            None,
        );
        let v = RpcValue::from_chainpack(f.payload()).unwrap();
        assert_eq!(v.to_cpon(), "<1:1,8:10,11:8,13:null,15:<1:3>i{1:4}>i{}");
    }

    #[test]
    fn data_and_close_frames() {
        let f = tunnel_frame(
            12,
            &[3],
            false,
            None,
            Some(RpcValue::from(vec![
                RpcValue::from(1),
                RpcValue::from(&b"hi\n"[..]),
            ])),
        );
        let v = RpcValue::from_chainpack(f.payload()).unwrap();
        assert_eq!(v.to_cpon(), r#"<1:1,8:12,11:3>i{2:[1,b"hi\n"]}"#);
        assert_eq!(
            frame_event(&f).unwrap(),
            Some(TunnelEvent::Data {
                channel: 1,
                data: b"hi\n".to_vec()
            })
        );
        // Old peers send Strings.
        let s = RpcValue::from_cpon(r#"[2,"err"]"#).unwrap();
        assert_eq!(
            parse_data(&s),
            Some(TunnelEvent::Data {
                channel: 2,
                data: b"err".to_vec()
            })
        );
        let c = RpcValue::from_cpon(r#"[3,{"resize":[100,40]}]"#).unwrap();
        assert!(matches!(parse_data(&c), Some(TunnelEvent::Control(_))));

        let close = tunnel_frame(
            12,
            &[3],
            false,
            Some(&TunnelCtl::new(TunnelState::CloseTunnel)),
            Some(CloseStatus::ExitCode(3).to_value()),
        );
        let v = RpcValue::from_chainpack(close.payload()).unwrap();
        assert_eq!(
            v.to_cpon(),
            r#"<1:1,8:12,11:3,15:<1:3>i{1:5}>i{2:{"exitCode":3}}"#
        );
        assert_eq!(
            frame_event(&close).unwrap(),
            Some(TunnelEvent::Closed(CloseStatus::ExitCode(3)))
        );
        let err =
            RpcValue::from_cpon(r#"<1:1,8:12,15:<1:3>i{1:5}>i{2:{"error":"secret expired"}}"#)
                .unwrap();
        let f = RpcFrame::parse(Bytes::from(err.to_chainpack())).unwrap();
        assert_eq!(
            frame_event(&f).unwrap(),
            Some(TunnelEvent::Closed(CloseStatus::Error(
                "secret expired".into()
            )))
        );
    }

    #[test]
    fn close_status_codes() {
        assert_eq!(CloseStatus::ExitCode(3).exit_code(), 3);
        assert_eq!(CloseStatus::Signal(9).exit_code(), 137);
        assert_eq!(CloseStatus::Error("x".into()).exit_code(), 255);
        for s in [
            CloseStatus::ExitCode(0),
            CloseStatus::Signal(15),
            CloseStatus::Error("boom".into()),
        ] {
            assert_eq!(CloseStatus::from_value(Some(&s.to_value())), s);
        }
        assert_eq!(CloseStatus::from_value(None), CloseStatus::Detached);
    }

    #[test]
    fn launch_params_forms() {
        let p = LaunchParams {
            pty: true,
            cmd: vec!["sh".into(), "-c".into(), "echo hi".into()],
            cols: 100,
            rows: 40,
            env: vec![("TERM".into(), "xterm-256color".into())],
            cwd: None,
        };
        let v = p.to_value();
        assert_eq!(
            v.to_cpon(),
            r#"{"method":"runPtyCmd","params":{"cmd":["sh","-c","echo hi"],"cols":100,"env":{"TERM":"xterm-256color"},"rows":40}}"#
        );
        assert_eq!(LaunchParams::from_value(&v).unwrap(), p);
        // Original List form and String cmd.
        let v = RpcValue::from_cpon(r#"{"method":"runPtyCmd","params":["top",120,50]}"#).unwrap();
        let p = LaunchParams::from_value(&v).unwrap();
        assert_eq!(p.cmd, vec!["/bin/sh", "-c", "top"]);
        assert_eq!((p.cols, p.rows, p.pty), (120, 50, true));
        let v = RpcValue::from_cpon(r#"{"method":"runCmd","params":["ls","-l"]}"#).unwrap();
        let p = LaunchParams::from_value(&v).unwrap();
        assert_eq!(p.cmd, vec!["ls", "-l"]);
        assert!(!p.pty);
        let v = RpcValue::from_cpon(r#"{"method":"runPtyCmd"}"#).unwrap();
        assert!(LaunchParams::from_value(&v).unwrap().cmd.is_empty());
        assert!(
            LaunchParams::from_value(&RpcValue::from_cpon(r#"{"method":"rm"}"#).unwrap()).is_err()
        );
        assert!(LaunchParams::from_value(
            &RpcValue::from_cpon(r#"{"method":"runCmd","params":[1]}"#).unwrap()
        )
        .is_err());
    }
}
