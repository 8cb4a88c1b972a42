//! The TunnelCtl meta value (tag 15), its states and keys, and how a tunnel ends.

use super::*;

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

pub(super) use crate::value::as_i64;

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

/// For logs and messages: `exit code 3`, `signal 15`, `error: …` (escaped: it may come
/// from the far side), `closed without a status`.
impl std::fmt::Display for CloseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseStatus::ExitCode(c) => write!(f, "exit code {c}"),
            CloseStatus::Signal(s) => write!(f, "signal {s}"),
            CloseStatus::Error(e) => write!(f, "error: {}", crate::logsafe::shown(e)),
            CloseStatus::Detached => f.write_str("closed without a status"),
        }
    }
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
            // A peer's number: checked, not trusted to be a real signal.
            CloseStatus::Signal(s) => s.checked_add(128).unwrap_or(255),
            CloseStatus::Error(_) | CloseStatus::Detached => 255,
        }
    }
}

/// A control message on channel 3 ([ext]) as a Map of one key: rsh asks rexec to resize
/// the PTY (`{"resize": [cols, rows]}`), close the command's stdin (`{"eof": true}`) or
/// signal it (`{"signal": N}`); either end acknowledges the data its application has
/// consumed (`{"ack": bytes}`, flow control).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Resize {
        cols: u16,
        rows: u16,
    },
    Eof,
    Signal(i32),
    Ack(u64),
    /// **[ext]** Forwarding tunnels ([`super::mux`]): connection N was accepted (the
    /// other side connects it), its sender will send no more, or it is gone.
    ConnOpen(u32),
    ConnEof(u32),
    ConnClose(u32),
    /// **[ext]** Dynamic forwards (`forwardDynamic`, `shvrsh -D`): connection N was
    /// accepted and is to be connected to `host:port` as the device sees it (a name is
    /// resolved there). `{"connOpen": N, "host": H, "port": P}`.
    ConnOpenTo {
        id: u32,
        host: String,
        port: u16,
    },
    /// **[ext]** Copying tunnels (`copyOut`): the bytes of file data the stream will
    /// carry, sent by the device before it, for the operator's progress bar.
    Total(u64),
    /// **[ext]** A line for the operator from a broker on the way (a session about to
    /// be ended by policy), at most [`MAX_NOTICE`] bytes: shown, never executed.
    /// `{"notice": "text"}`.
    Notice(String),
}

/// Longest notice text read; longer ones are cut at a character boundary.
pub const MAX_NOTICE: usize = 1024;

impl Control {
    pub fn to_value(self) -> RpcValue {
        let (key, v) = match self {
            Control::Resize { cols, rows } => (
                "resize",
                RpcValue::from(vec![
                    RpcValue::from(i64::from(cols)),
                    RpcValue::from(i64::from(rows)),
                ]),
            ),
            Control::Eof => ("eof", RpcValue::from(true)),
            Control::Signal(s) => ("signal", RpcValue::from(i64::from(s))),
            Control::Ack(n) => ("ack", RpcValue::from(i64::try_from(n).unwrap_or(i64::MAX))),
            Control::ConnOpen(n) => ("connOpen", RpcValue::from(i64::from(n))),
            Control::ConnEof(n) => ("connEof", RpcValue::from(i64::from(n))),
            Control::ConnClose(n) => ("connClose", RpcValue::from(i64::from(n))),
            Control::Total(n) => (
                "total",
                RpcValue::from(i64::try_from(n).unwrap_or(i64::MAX)),
            ),
            Control::Notice(text) => ("notice", RpcValue::from(text.as_str())),
            Control::ConnOpenTo { id, host, port } => {
                let mut m = Map::new();
                m.insert("connOpen".into(), RpcValue::from(i64::from(id)));
                m.insert("host".into(), RpcValue::from(host.as_str()));
                m.insert("port".into(), RpcValue::from(i64::from(port)));
                return RpcValue::from(m);
            }
        };
        let mut m = Map::new();
        m.insert(key.into(), v);
        RpcValue::from(m)
    }

    /// Reads a control Map; None for anything else (unknown controls are ignored, so
    /// that either end may learn new ones first). Sizes are clamped to 1..=65535.
    pub fn parse(v: &RpcValue) -> Option<Control> {
        let Value::Map(m) = &v.value else {
            return None;
        };
        if let Some(r) = m.get("resize") {
            let Value::List(l) = &r.value else {
                return None;
            };
            let dim = |i: usize| {
                l.get(i)
                    .and_then(as_i64)
                    .map(|x| x.clamp(1, i64::from(u16::MAX)) as u16)
            };
            return Some(Control::Resize {
                cols: dim(0)?,
                rows: dim(1)?,
            });
        }
        if let Some(e) = m.get("eof") {
            return matches!(e.value, Value::Bool(true)).then_some(Control::Eof);
        }
        if let Some(s) = m.get("signal") {
            return as_i64(s)
                .and_then(|s| i32::try_from(s).ok())
                .map(Control::Signal);
        }
        if let Some(n) = m.get("ack") {
            return as_i64(n)
                .and_then(|n| u64::try_from(n).ok())
                .map(Control::Ack);
        }
        let conn = |key: &str| {
            m.get(key)
                .and_then(as_i64)
                .and_then(|n| u32::try_from(n).ok())
        };
        if let Some(n) = conn("connOpen") {
            if let Some(h) = m.get("host") {
                let Value::String(host) = &h.value else {
                    return None;
                };
                let port = m
                    .get("port")
                    .and_then(as_i64)
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p > 0)?;
                // A DNS name is at most 253 bytes: a longer one is no destination.
                if host.is_empty() || host.len() > 255 {
                    return None;
                }
                return Some(Control::ConnOpenTo {
                    id: n,
                    host: host.to_string(),
                    port,
                });
            }
            return Some(Control::ConnOpen(n));
        }
        if let Some(n) = conn("connEof") {
            return Some(Control::ConnEof(n));
        }
        if let Some(n) = conn("connClose") {
            return Some(Control::ConnClose(n));
        }
        if let Some(n) = m.get("notice") {
            let Value::String(text) = &n.value else {
                return None;
            };
            let mut end = text.len().min(MAX_NOTICE);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            return Some(Control::Notice(text[..end].to_string()));
        }
        if let Some(n) = m.get("total") {
            return as_i64(n)
                .and_then(|n| u64::try_from(n).ok())
                .map(Control::Total);
        }
        None
    }
}
