//! The broker's side of tunnels (spec/tunnel.md): the FindTunnel branch, one-time
//! secrets, the tunnel table that authorizes tunnel data, and CloseTunnel on failures.
//!
//! Every broker on the way from the tunnel's host to rsh keeps an entry: the host a
//! *hosted* one (rexec connects to it with the secret), the brokers above it a *transit*
//! one (their rexec side is the link the FindTunnelRequest came up by). An entry
//! authorizes exactly two flows: rexec side → rsh side with id R, and rsh side → rexec
//! side with id W. Brokers between the agent and the host only let the one
//! FindTunnelResponse back down.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use libshv::message::RpcMessage;
use libshv::meta::{self, tag};
use libshv::{RpcFrame, RpcValue};
use rand::RngCore;
use shvproto::{IMap, Map, MetaMap, Value};

use libshv::logsafe::shown;

use crate::peer::{constant_time_eq, PeerId};
use crate::pending;
use crate::state::Broker;

use libshv::tunnel::{tctl_key as key, TunnelState, TUNNEL_CTL_META_TYPE};

pub struct Tunnel {
    pub id: u64,
    /// Hosted here: rexec logs in to this broker with the secret.
    pub hosted: bool,
    /// The one-time secret (hosted only; cleared once presented).
    secret: String,
    /// Until when rexec may come (hosted) or CreateTunnelRequest pass (transit).
    deadline: Instant,
    /// The connection towards rsh, the CallerIds below it, and rsh's request id R.
    pub rsh_peer: PeerId,
    pub rsh_rest: Vec<i64>,
    pub request_id: i64,
    /// The connection the FindTunnelRequest came by (the agent, or a sub-broker).
    pub agent_side: PeerId,
    /// The connection towards rexec, the CallerIds below it, and rexec's request id W.
    pub rexec_peer: Option<PeerId>,
    pub rexec_rest: Vec<i64>,
    pub rexec_request_id: Option<i64>,
    pub agent_path: String,
    pub user: String,
    pub command: String,
    pub opened_at: SystemTime,
    pub last_activity: SystemTime,
    pub bytes_to_rsh: u64,
    pub bytes_to_rexec: u64,
}

/// Who asked for a launchRexec, noted with the pending request when it is forwarded
/// (for the tunnel table and the audit log).
#[derive(Debug)]
pub struct Launch {
    pub user: String,
    pub agent_path: String,
    pub command: String,
}

pub struct Tunnels {
    pub open: HashMap<u64, Tunnel>,
    /// FindTunnelRequests forwarded up: (upstream peer, downstream peer, R) → how many
    /// and when the last went, so that exactly as many FindTunnelResponses may come
    /// back down (several operators' launches may share R on one link).
    find_pending: HashMap<(PeerId, PeerId, i64), (usize, Instant)>,
    next_id: u64,
    secret_ttl: Duration,
}

impl Tunnels {
    pub fn new(secret_ttl: Duration) -> Self {
        Tunnels {
            open: HashMap::new(),
            find_pending: HashMap::new(),
            next_id: 1,
            secret_ttl,
        }
    }

    /// Lets one FindTunnelResponse from `up` down to `down` for R pass.
    fn take_find_pending(&mut self, up: PeerId, down: PeerId, rid: i64) -> bool {
        let key = (up, down, rid);
        let Some(e) = self.find_pending.get_mut(&key) else {
            return false;
        };
        e.0 -= 1;
        if e.0 == 0 {
            self.find_pending.remove(&key);
        }
        true
    }

    /// Accepts a tunnel secret once, before it expires; binds `peer` as the tunnel's rexec.
    pub fn claim_secret(&mut self, secret: &str, peer: PeerId) -> Option<u64> {
        let now = Instant::now();
        let t = self.open.values_mut().find(|t| {
            t.hosted
                && t.rexec_peer.is_none()
                && !t.secret.is_empty()
                && constant_time_eq(&t.secret, secret)
        })?;
        // Single use: forget the secret whether or not it is still valid.
        t.secret.clear();
        if t.deadline < now {
            return None;
        }
        t.rexec_peer = Some(peer);
        Some(t.id)
    }
}

fn tctl_of(frame: &RpcFrame) -> Option<IMap> {
    match &frame.tunnel_ctl()?.value {
        Value::IMap(m) => Some((**m).clone()),
        _ => None,
    }
}

fn tctl_state(frame: &RpcFrame) -> Option<TunnelState> {
    let state = frame.tunnel_ctl()?.get(key::STATE)?.as_int();
    TunnelState::try_from(state).ok()
}

fn tctl_value(m: IMap) -> RpcValue {
    let mut meta = MetaMap::new();
    meta.insert(tag::META_TYPE_ID, RpcValue::from(TUNNEL_CTL_META_TYPE));
    RpcValue::new(Value::IMap(Box::new(m)), Some(meta))
}

fn new_secret() -> String {
    let mut b = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn close_frame(request_id: i64, cids: &[i64], error: &str) -> RpcFrame {
    let mut m = IMap::new();
    m.insert(key::STATE, RpcValue::from(TunnelState::CloseTunnel as i64));
    let mut status = Map::new();
    status.insert("error".into(), RpcValue::from(error));
    let mut msg = RpcMessage {
        meta: MetaMap::new(),
        body: IMap::new(),
    }
    .with_result(status.into());
    msg.meta.insert(tag::META_TYPE_ID, RpcValue::from(1));
    msg.meta.insert(tag::REQUEST_ID, RpcValue::from(request_id));
    if !cids.is_empty() {
        msg.meta.insert(tag::CALLER_IDS, meta::stack_to_value(cids));
    }
    msg.meta.insert(tag::TUNNEL_CTL, tctl_value(m));
    msg.into_frame()
}

/// Open tunnels (hosted or transit) one connection may take part in, as the operator's
/// side or as the agent's side.
const MAX_TUNNELS_PER_PEER: usize = 64;

/// Longest command text kept for the tunnel table and the audit log.
const MAX_COMMAND_TEXT: usize = 256;

/// Who launches what (a `launchRexec` request on its way to `agent_path`). Only a short
/// text is kept: the request may carry a command of megabytes.
pub fn launch_of(agent_path: &str, frame: &RpcFrame) -> Launch {
    let command = RpcMessage::from_frame(frame)
        .ok()
        .and_then(|m| m.param().cloned())
        .map(|p| describe_command(&p))
        .unwrap_or_default();
    Launch {
        // The end of the chain is what this broker appended (the authenticated user);
        // what comes before is the callers' own word.
        user: tail(frame.user_id().unwrap_or(""), MAX_COMMAND_TEXT),
        agent_path: truncate(agent_path, MAX_COMMAND_TEXT),
        command: truncate(&command, MAX_COMMAND_TEXT),
    }
}

fn tail(s: &str, max: usize) -> String {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Broker {
    /// Handles the tunnel-specific responses. Returns true if the frame was consumed.
    pub fn tunnel_response(&mut self, from: PeerId, frame: &mut RpcFrame) -> bool {
        match tctl_state(frame) {
            Some(TunnelState::FindTunnelRequest) => {
                self.find_tunnel(from, frame);
                true
            }
            Some(TunnelState::FindTunnelResponse) => {
                let rid = frame.request_id().unwrap_or_default();
                let target = meta::pop_id(&mut frame.meta, tag::CALLER_IDS);
                match target.filter(|t| self.tunnels.take_find_pending(from, *t, rid)) {
                    Some(t) => {
                        self.send_to(t, frame.clone());
                    }
                    None => {
                        tracing::debug!(
                            peer = from,
                            rid,
                            "FindTunnelResponse nobody asked for dropped"
                        );
                        self.dropped_responses += 1;
                    }
                }
                true
            }
            Some(TunnelState::CreateTunnelRequest) => {
                // rexec announces its request id W and, with RevCallerIds, its path.
                let rid = frame.request_id().unwrap_or_default();
                let cids = meta::stack_from_value(frame.meta.get(tag::CALLER_IDS));
                let mut rcid = meta::stack_from_value(frame.meta.get(tag::REV_CALLER_IDS));
                rcid.pop(); // that is `from` itself
                let w = frame
                    .tunnel_ctl()
                    .and_then(|t| t.get(key::REQUEST_ID))
                    .map(|v| v.as_int());
                if let Some(t) = self.tunnels.open.values_mut().find(|t| {
                    t.rexec_peer == Some(from)
                        && t.request_id == rid
                        && cids.last() == Some(&t.rsh_peer)
                        && t.rexec_request_id.is_none()
                }) {
                    t.rexec_request_id = w;
                    t.rexec_rest = rcid;
                    if t.hosted {
                        tracing::info!(target: "audit", tunnel = t.id, user = %shown(&t.user), agent = %shown(&t.agent_path), command = %shown(&t.command), "tunnel open");
                    }
                }
                false
            }
            Some(TunnelState::CloseTunnel) => {
                self.close_from_end(from, frame);
                true
            }
            _ => false,
        }
    }

    /// CloseTunnel sent by an end (rexec when the command ended, rsh on detach, or the
    /// agent when it could not start rexec): forwarded, and the entry removed.
    fn close_from_end(&mut self, from: PeerId, frame: &RpcFrame) {
        let mut out = frame.clone();
        let rid = frame.request_id().unwrap_or_default();
        let Some(target) = meta::pop_id(&mut out.meta, tag::CALLER_IDS) else {
            self.dropped_responses += 1;
            return;
        };
        let tid = self.tunnel_of(from, target, &out).or_else(|| {
            // The agent gives up before rexec ever connected.
            self.tunnels
                .open
                .values()
                .find(|t| {
                    t.agent_side == from
                        && t.rsh_peer == target
                        && t.request_id == rid
                        && t.rexec_request_id.is_none()
                })
                .map(|t| t.id)
        });
        let key = pending::Key {
            responder: from,
            caller: target,
            request_id: rid,
            below: meta::stack_from_value(out.meta.get(tag::CALLER_IDS)),
        };
        let pending = tid.is_none() && self.pending.answer(&key);
        if tid.is_none() && !pending {
            tracing::debug!(
                peer = from,
                target,
                rid,
                "CloseTunnel for no tunnel dropped"
            );
            self.dropped_responses += 1;
            return;
        }
        self.send_to(target, out);
        if let Some(t) = tid.and_then(|tid| self.tunnels.open.remove(&tid)) {
            let status = RpcMessage::from_frame(frame)
                .ok()
                .and_then(|m| m.result().ok())
                .map(|r| r.to_cpon())
                .unwrap_or_default();
            audit_close(&t, &status);
        }
    }

    /// FindTunnelRequest from the agent's side (tunnel.md steps 2-3, Multi-broker).
    fn find_tunnel(&mut self, from: PeerId, frame: &mut RpcFrame) {
        let cids = meta::stack_from_value(frame.meta.get(tag::CALLER_IDS));
        let rid = frame.request_id().unwrap_or_default();
        let Some((&rsh_peer, below)) = cids.split_last() else {
            return;
        };
        // Only the agent a `launchRexec` went to may answer it with a FindTunnelRequest.
        let key = pending::Key {
            responder: from,
            caller: rsh_peer,
            request_id: rid,
            below: below.to_vec(),
        };
        let Some(launch) = self.pending.answer_launch(&key) else {
            tracing::debug!(
                peer = from,
                "FindTunnelRequest answering no pending launchRexec dropped"
            );
            self.dropped_responses += 1;
            return;
        };
        // Tunnels per operator connection and per agent connection are bounded.
        let (by_rsh, by_agent) = self.tunnels.open.values().fold((0, 0), |(r, a), t| {
            (
                r + usize::from(t.rsh_peer == rsh_peer),
                a + usize::from(t.agent_side == from),
            )
        });
        if by_rsh >= MAX_TUNNELS_PER_PEER || by_agent >= MAX_TUNNELS_PER_PEER {
            let f = close_frame(rid, below, "too many open tunnels for this connection");
            self.send_to(rsh_peer, f);
            return;
        }
        let mut tctl = tctl_of(frame).unwrap_or_default();
        // A host filled in below us counts only if it came from a broker (a device
        // could otherwise make us keep transit entries for tunnels that never were).
        let from_broker = self
            .peers
            .get(&from)
            .is_some_and(|p| p.is_broker == Some(true));
        let has_host = from_broker
            && tctl
                .get(&key::SECRET)
                .is_some_and(|s| !s.as_str().is_empty());
        let public = self.config.tunnel.public_address.clone();
        let last_broker = cids.len() == 1;
        // The nearest broker to rsh with a public address hosts the tunnel; rsh's own
        // broker does if nobody on the way could.
        let host_here = public.is_some() || (last_broker && !has_host);
        if host_here || has_host {
            let id = self.tunnels.next_id;
            self.tunnels.next_id += 1;
            let now = SystemTime::now();
            let secret = if host_here {
                new_secret()
            } else {
                String::new()
            };
            let t = Tunnel {
                id,
                hosted: host_here,
                secret: secret.clone(),
                deadline: Instant::now() + self.tunnels.secret_ttl,
                rsh_peer,
                rsh_rest: cids[..cids.len() - 1].to_vec(),
                request_id: rid,
                agent_side: from,
                // In transit, rexec's traffic comes up the link the request came by.
                rexec_peer: if host_here { None } else { Some(from) },
                rexec_rest: Vec::new(),
                rexec_request_id: None,
                agent_path: launch.agent_path,
                user: launch.user,
                command: launch.command,
                opened_at: now,
                last_activity: now,
                bytes_to_rsh: 0,
                bytes_to_rexec: 0,
            };
            if host_here {
                tracing::info!(target: "audit", tunnel = id, user = %shown(&t.user), agent = %shown(&t.agent_path), command = %shown(&t.command), "tunnel requested");
                let (host, port) = match public.as_deref().and_then(|a| a.rsplit_once(':')) {
                    Some((h, p)) => (h.to_string(), p.parse().unwrap_or(0)),
                    None => self
                        .tcp_address
                        .clone()
                        .unwrap_or_else(|| ("127.0.0.1".into(), 0)),
                };
                tctl.insert(key::HOST, RpcValue::from(host));
                tctl.insert(key::PORT, RpcValue::from(port as i64));
                tctl.insert(key::SECRET, RpcValue::from(secret));
                tctl.insert(key::CALLER_IDS, meta::stack_to_value(&cids));
            }
            self.tunnels.open.insert(id, t);
        }
        if last_broker {
            // Back to the agent along the gathered RevCallerIds.
            let mut rcid = meta::stack_from_value(frame.meta.get(tag::REV_CALLER_IDS));
            let Some(agent_conn) = rcid.pop() else {
                return;
            };
            tctl.insert(
                key::STATE,
                RpcValue::from(TunnelState::FindTunnelResponse as i64),
            );
            let mut meta = MetaMap::new();
            meta.insert(tag::META_TYPE_ID, RpcValue::from(1));
            meta.insert(tag::REQUEST_ID, RpcValue::from(rid));
            if !rcid.is_empty() {
                meta.insert(tag::CALLER_IDS, meta::stack_to_value(&rcid));
            }
            meta.insert(tag::TUNNEL_CTL, tctl_value(tctl));
            let body = bytes::Bytes::from_static(&[0x8a, 0xff]);
            self.send_to(agent_conn, RpcFrame { meta, body });
        } else {
            // Further up the tree, keeping what we filled in; remember to let the
            // FindTunnelResponse back down.
            let e = self
                .tunnels
                .find_pending
                .entry((rsh_peer, from, rid))
                .or_insert((0, Instant::now()));
            e.0 += 1;
            e.1 = Instant::now();
            frame.meta.insert(tag::TUNNEL_CTL, tctl_value(tctl));
            meta::pop_id(&mut frame.meta, tag::CALLER_IDS);
            self.send_to(rsh_peer, frame.clone());
        }
    }

    /// The tunnel that lets `from` send `frame` (already popped) to `target`.
    fn tunnel_of(&self, from: PeerId, target: PeerId, frame: &RpcFrame) -> Option<u64> {
        let rid = frame.request_id()?;
        self.tunnels
            .open
            .values()
            .find(|t| {
                let Some(rexec) = t.rexec_peer else {
                    return false;
                };
                (from == rexec && target == t.rsh_peer && rid == t.request_id)
                    || (from == t.rsh_peer && target == rexec && Some(rid) == t.rexec_request_id)
            })
            .map(|t| t.id)
    }

    /// Authorizes tunnel data and accounts for it.
    pub fn tunnel_authorizes(&mut self, from: PeerId, target: PeerId, frame: &RpcFrame) -> bool {
        let Some(tid) = self.tunnel_of(from, target, frame) else {
            return false;
        };
        if let Some(t) = self.tunnels.open.get_mut(&tid) {
            let n = frame.body.len() as u64;
            if target == t.rsh_peer {
                t.bytes_to_rsh = t.bytes_to_rsh.saturating_add(n);
            } else {
                t.bytes_to_rexec = t.bytes_to_rexec.saturating_add(n);
            }
            t.last_activity = SystemTime::now();
        }
        true
    }

    /// A tunnel never hangs half-open: when one side goes, the other gets CloseTunnel.
    pub fn tunnels_peer_gone(&mut self, id: PeerId) {
        self.tunnels
            .find_pending
            .retain(|(up, down, _), _| *up != id && *down != id);
        let gone: Vec<u64> = self
            .tunnels
            .open
            .values()
            .filter(|t| t.rsh_peer == id || t.rexec_peer == Some(id))
            .map(|t| t.id)
            .collect();
        for tid in gone {
            let Some(t) = self.tunnels.open.remove(&tid) else {
                continue;
            };
            if t.rsh_peer == id {
                if let (Some(rexec), Some(w)) = (t.rexec_peer, t.rexec_request_id) {
                    let f = close_frame(
                        w,
                        &t.rexec_rest,
                        "the operator's end of the tunnel disconnected",
                    );
                    self.send_to(rexec, f);
                }
                audit_close(&t, "rsh side disconnected");
            } else {
                let f = close_frame(
                    t.request_id,
                    &t.rsh_rest,
                    "the device's end of the tunnel disconnected",
                );
                self.send_to(t.rsh_peer, f);
                audit_close(&t, "rexec side disconnected");
            }
        }
    }

    /// Hosted tunnels whose rexec never came are closed with an error to rsh; transit
    /// entries no CreateTunnelRequest passed through (another broker hosts) are dropped.
    pub fn tunnels_housekeeping(&mut self, now: Instant) {
        let stale: Vec<u64> = self
            .tunnels
            .open
            .values()
            .filter(|t| t.rexec_request_id.is_none() && t.deadline < now)
            .map(|t| t.id)
            .collect();
        for tid in stale {
            let Some(t) = self.tunnels.open.remove(&tid) else {
                continue;
            };
            if t.hosted {
                let f = close_frame(
                    t.request_id,
                    &t.rsh_rest,
                    "the device's end did not connect to the tunnel in time",
                );
                self.send_to(t.rsh_peer, f);
                audit_close(&t, "rexec never connected");
            }
        }
        let ttl = self.tunnels.secret_ttl * 6;
        self.tunnels
            .find_pending
            .retain(|_, (_, t)| now.duration_since(*t) < ttl);
    }

    /// Closes a tunnel on an admin's request.
    pub fn close_tunnel(&mut self, tid: u64) -> bool {
        let Some(t) = self.tunnels.open.remove(&tid) else {
            return false;
        };
        let why = "tunnel closed by an administrator";
        if let (Some(rexec), Some(w)) = (t.rexec_peer, t.rexec_request_id) {
            self.send_to(rexec, close_frame(w, &t.rexec_rest, why));
        }
        self.send_to(t.rsh_peer, close_frame(t.request_id, &t.rsh_rest, why));
        if let (true, Some(rexec)) = (t.hosted, t.rexec_peer) {
            self.disconnect(rexec, "tunnel closed");
        }
        audit_close(&t, "closed by an administrator");
        true
    }

    /// `.broker/tunnels:list`
    pub fn tunnel_list(&self) -> RpcValue {
        let ms = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        };
        let mut list: Vec<&Tunnel> = self.tunnels.open.values().collect();
        list.sort_by_key(|t| t.id);
        let v: Vec<RpcValue> = list
            .into_iter()
            .map(|t| {
                let mut m = Map::new();
                m.insert("id".into(), RpcValue::from(t.id as i64));
                m.insert("hosted".into(), RpcValue::from(t.hosted));
                m.insert("agentPath".into(), RpcValue::from(t.agent_path.as_str()));
                m.insert("user".into(), RpcValue::from(t.user.as_str()));
                m.insert("command".into(), RpcValue::from(t.command.as_str()));
                m.insert(
                    "connected".into(),
                    RpcValue::from(t.rexec_request_id.is_some()),
                );
                m.insert("openedAt".into(), RpcValue::from(ms(t.opened_at)));
                m.insert("lastActivity".into(), RpcValue::from(ms(t.last_activity)));
                m.insert("bytesToRsh".into(), RpcValue::from(t.bytes_to_rsh as i64));
                m.insert(
                    "bytesToRexec".into(),
                    RpcValue::from(t.bytes_to_rexec as i64),
                );
                RpcValue::from(m)
            })
            .collect();
        v.into()
    }
}

fn audit_close(t: &Tunnel, status: &str) {
    tracing::info!(
        target: "audit",
        tunnel = t.id,
        user = %shown(&t.user),
        agent = %shown(&t.agent_path),
        command = %shown(&t.command),
        bytes_to_rsh = t.bytes_to_rsh,
        bytes_to_rexec = t.bytes_to_rexec,
        status = %shown(status),
        "tunnel closed"
    );
}

/// A short text of the launched command for logs (never data, never secrets).
fn describe_command(param: &RpcValue) -> String {
    let method = param
        .get("method")
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let params = param.get("params");
    let cmd = params.and_then(|p| {
        if p.is_map() {
            p.get("cmd")
        } else if p.is_list() {
            p.get(0)
        } else {
            Some(p)
        }
    });
    let cmd = match cmd.map(|c| &c.value) {
        Some(Value::String(s)) => s.to_string(),
        Some(Value::List(l)) => l
            .iter()
            .map(|x| x.as_str().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    if cmd.is_empty() {
        method
    } else {
        format!("{method}: {cmd}")
    }
}
