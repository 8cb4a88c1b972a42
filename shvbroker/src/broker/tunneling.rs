//! The broker's side of tunnels (spec/tunnel.md): the FindTunnel branch, CloseTunnel
//! on failures, and the authorization of tunnel data, over the tunnel table
//! ([`crate::tunnel::Tunnels`]).

use std::time::{Duration, Instant, SystemTime};

use libshv::logsafe::shown;
use libshv::message::RpcMessage;
use libshv::meta::{self, tag};
use libshv::tunnel::{tctl_key as key, CloseStatus, Control, TunnelEvent, TunnelState};
use libshv::{RpcFrame, RpcValue};
use shvproto::{Map, MetaMap};

use super::Broker;
use crate::peers::PeerId;
use crate::pending;
use crate::tunnel::*;

impl Broker {
    /// Where frames enter: the tunnel part takes what is its own (a tunnel end's
    /// requests, the TunnelCtl control responses) and hands back everything else for
    /// the router. Tunnel *data* are ordinary responses, authorized by the router with
    /// [`Broker::tunnel_of`].
    pub(super) fn intercept_tunnel(
        &mut self,
        from: PeerId,
        mut frame: RpcFrame,
    ) -> Option<RpcFrame> {
        match frame.kind() {
            libshv::frame::Kind::Request
                if self.peers.get(&from).is_some_and(|p| p.is_tunnel_end()) =>
            {
                let r = if frame.shv_path() == ".app" && frame.method() == Some("ping") {
                    Ok(RpcValue::null())
                } else {
                    Err(libshv::RpcError::method_not_found(
                        "a tunnel connection may only ping",
                    ))
                };
                self.respond(from, &frame.meta, r);
                None
            }
            libshv::frame::Kind::Response if self.tunnel_response(from, &mut frame) => None,
            _ => Some(frame),
        }
    }

    /// Handles the tunnel-specific responses. Returns true if the frame was consumed.
    fn tunnel_response(&mut self, from: PeerId, frame: &mut RpcFrame) -> bool {
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
                if let Some(t) = self.tunnels.find_mut(|t| {
                    t.rexec_peer == Some(from)
                        && t.request_id == rid
                        && cids.last() == Some(&t.rsh_peer)
                        && t.rexec_request_id.is_none()
                }) {
                    t.rexec_request_id = w;
                    t.rexec_rest = rcid;
                    if t.hosted {
                        tracing::info!(target: "audit", tunnel = t.id, user = %shown(&t.user), agent = %shown(&t.agent_path), command = %shown(&t.command), "tunnel open");
                        let tid = t.id;
                        self.session_opened(tid);
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
                .ids(|t| {
                    t.agent_side == from
                        && t.rsh_peer == target
                        && t.request_id == rid
                        && t.rexec_request_id.is_none()
                })
                .first()
                .copied()
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
        if let Some(t) = tid.and_then(|tid| self.tunnels.remove(tid)) {
            let status = match RpcMessage::from_frame(frame).map(|m| m.result()) {
                Ok(Ok(v)) => CloseStatus::from_value(Some(&v)),
                Ok(Err(e)) => CloseStatus::Error(e.message),
                Err(e) => CloseStatus::Error(e.to_string()),
            };
            self.session_closed(t, status);
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
        // The device's word that it launched is not enough: the caller must have held
        // the launching grant on the agent's path when the broker forwarded it (a
        // lying device would otherwise get tunnels hosted, recorded and audited for
        // any caller, its own read-only login included).
        if launch.level < libshv::access::level::COMMAND {
            tracing::warn!(
                peer = from,
                user = %shown(&launch.user),
                agent = %shown(&launch.agent_path),
                "FindTunnelRequest refused: the launch was forwarded with access level {} (below cmd)",
                launch.level
            );
            let f = close_frame(
                rid,
                below,
                "launching a tunnel needs cmd access on the agent",
            );
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
        let public = self.settings.tunnel_address.is_some();
        let last_broker = cids.len() == 1;
        // The nearest broker to rsh with a public address hosts the tunnel; rsh's own
        // broker does if nobody on the way could.
        let host_here = public || (last_broker && !has_host);
        if host_here || has_host {
            let rsh_rest = below.to_vec();
            // Only a parent link says truly which operator below it launched.
            let relays = self.peers.get(&rsh_peer).is_some_and(|p| p.is_parent());
            // The operator's roles limit the session where this broker logged them in.
            let policy = self
                .peers
                .get(&rsh_peer)
                .filter(|p| !p.is_parent())
                .map(|p| self.settings.session_policy(&p.user))
                .unwrap_or_default();
            let Some(t) =
                self.tunnels
                    .open(host_here, (rsh_peer, relays), rsh_rest, rid, from, launch)
            else {
                // Tunnels per operator connection and per agent connection are bounded.
                let f = close_frame(rid, below, "too many open tunnels for this connection");
                self.send_to(rsh_peer, f);
                return;
            };
            let tid = t.id;
            if let Some(t) = self.tunnels.get_mut(tid) {
                t.policy = policy;
            }
            let Some(t) = self.tunnels.get(tid) else {
                return;
            };
            if host_here {
                tracing::info!(target: "audit", tunnel = t.id, user = %shown(&t.user), agent = %shown(&t.agent_path), command = %shown(&t.command), "tunnel requested");
                let (host, port) = match &self.tunnel_address {
                    Some(t) => libshv::tunnel::tunnel_host_port(t),
                    None => ("127.0.0.1".into(), 0),
                };
                tctl.insert(key::HOST, RpcValue::from(host));
                tctl.insert(key::PORT, RpcValue::from(i64::from(port)));
                tctl.insert(key::SECRET, RpcValue::from(t.secret()));
                tctl.insert(key::CALLER_IDS, meta::stack_to_value(&cids));
            }
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
            self.tunnels.note_find_pending(rsh_peer, from, rid);
            frame.meta.insert(tag::TUNNEL_CTL, tctl_value(tctl));
            meta::pop_id(&mut frame.meta, tag::CALLER_IDS);
            self.send_to(rsh_peer, frame.clone());
        }
    }

    /// The tunnel that lets `from` send `frame` (already popped) to `target`. The
    /// CallerIds left must be the tunnel's own path below `target`: else an end could
    /// address another client behind the same connection (a parent link) whose pending
    /// request happens to have the tunnel's request id.
    pub(super) fn tunnel_of(&self, from: PeerId, target: PeerId, frame: &RpcFrame) -> Option<u64> {
        let rid = frame.request_id()?;
        let rest = frame.meta.get(tag::CALLER_IDS);
        self.tunnels
            .iter()
            .find(|t| {
                let Some(rexec) = t.rexec_peer else {
                    return false;
                };
                (from == rexec
                    && target == t.rsh_peer
                    && rid == t.request_id
                    && meta::stack_eq(rest, &t.rsh_rest))
                    || (from == t.rsh_peer
                        && target == rexec
                        && Some(rid) == t.rexec_request_id
                        && meta::stack_eq(rest, &t.rexec_rest))
            })
            .map(|t| t.id)
    }

    /// Accounts for data of tunnel `tid` going to `target` (and records it, if
    /// recording).
    pub(super) fn tunnel_data(&mut self, tid: u64, target: PeerId, frame: &RpcFrame) {
        let mut recorded = None;
        if let Some(t) = self.tunnels.get_mut(tid) {
            let n = frame.body.len() as u64;
            let to_rsh = target == t.rsh_peer;
            if to_rsh {
                t.bytes_to_rsh = t.bytes_to_rsh.saturating_add(n);
            } else {
                t.bytes_to_rexec = t.bytes_to_rexec.saturating_add(n);
            }
            t.last_activity = SystemTime::now();
            // The idle clock only where a limit reads it: no second clock read per
            // frame on the common path.
            if t.policy.idle_timeout.is_some() {
                t.active_at = Instant::now();
                t.warned_idle = false;
                if t.kind == "forward" {
                    track_forward_conns(t, to_rsh, frame);
                }
            }
            if t.recording.is_some() {
                recorded = Some(to_rsh);
            }
        }
        if let (Some(to_rsh), Some(rec)) = (recorded, self.recorder.as_mut()) {
            record(rec, tid, to_rsh, frame);
        }
    }

    /// A `runCmd` forwarded with command access: it runs on the agent at once, so it
    /// is audited as it passes, read as the agent reads it.
    pub(super) fn audit_run_cmd(&mut self, from: PeerId, agent_path: &str, frame: &RpcFrame) {
        let max = crate::pending::MAX_COMMAND_TEXT;
        let param = RpcMessage::from_frame(frame).ok();
        let command = match libshv::tunnel::LaunchParams::from_run_cmd(
            param.as_ref().and_then(|m| m.param()),
        ) {
            Ok(l) => l.describe(max),
            Err(e) => format!("(not a valid runCmd: {})", shown(&e.message)),
        };
        let (client, login) = self
            .peers
            .get(&from)
            .map(|p| (p.addr.clone(), p.user.to_string()))
            .unwrap_or_default();
        let chain = frame.user_id();
        // The connection's login alone would name only the parent broker for a call
        // relayed from above: the chain says who asked.
        tracing::info!(target: "audit", user = %shown(&login), user_chain = %shown(&chain), agent = %shown(agent_path), command = %shown(&command), "runCmd");
        let mut m = serde_json::Map::new();
        m.insert("event".into(), "run".into());
        m.insert("kind".into(), "runCmd".into());
        m.insert("user".into(), shown(&login).to_string().into());
        m.insert("user_chain".into(), shown(&chain).to_string().into());
        m.insert("client".into(), shown(&client).to_string().into());
        m.insert("agent".into(), shown(agent_path).to_string().into());
        m.insert("command".into(), command.into());
        self.audit.write(m);
    }

    /// A hosted session began (rexec opened it): its recording and audit entry.
    fn session_opened(&mut self, tid: u64) {
        let Some(t) = self.tunnels.get(tid) else {
            return;
        };
        let (client_addr, login) = self
            .peers
            .get(&t.rsh_peer)
            .map(|p| (p.addr.clone(), p.user.to_string()))
            .unwrap_or_default();
        let recording = self.recorder.as_mut().and_then(|r| {
            r.start(crate::recording::SessionStart {
                id: t.id,
                width: t.cols,
                height: t.rows,
                command: t.command.clone(),
                user: login.clone(),
                agent: t.agent_path.clone(),
            })
        });
        let refused = self.recorder.is_some() && recording.is_none();
        if let Some(t) = self.tunnels.get_mut(tid) {
            t.client_addr = client_addr;
            t.login = login;
            t.recording = recording;
        }
        if let Some(t) = self.tunnels.get(tid) {
            let mut entry = audit_entry(t, "open");
            if refused {
                entry.insert(
                    "not_recorded".into(),
                    "tunnel.record_dir is at its cap".into(),
                );
            }
            self.audit.write(entry);
        }
        if let Some(t) = self.tunnels.get(tid) {
            let f = session_signal(t, crate::remote_sessions::OPENED, None);
            self.deliver_signal(&f);
        }
    }

    /// A tunnel this broker took part in is gone: the log line, and for a hosted one
    /// the end of its recording and its audit entry.
    fn session_closed(&mut self, t: Tunnel, status: CloseStatus) {
        let text = status.to_value().to_cpon();
        audit_close(&t, &text);
        if !t.hosted {
            return;
        }
        if t.rexec_request_id.is_some() {
            let f = session_signal(&t, crate::remote_sessions::CLOSED, Some(&status));
            self.deliver_signal(&f);
        }
        let mut entry = audit_entry(&t, "close");
        let (key, value): (&str, serde_json::Value) = match &status {
            CloseStatus::ExitCode(c) => ("exit_code", (*c).into()),
            CloseStatus::Signal(s) => ("signal", (*s).into()),
            CloseStatus::Error(e) => ("error", shown(e).to_string().into()),
            CloseStatus::Detached => ("detached", true.into()),
        };
        entry.insert(key.into(), value);
        entry.insert("bytes_to_operator".into(), t.bytes_to_rsh.into());
        entry.insert("bytes_to_device".into(), t.bytes_to_rexec.into());
        let secs = SystemTime::now()
            .duration_since(t.opened_at)
            .map_or(0.0, |d| d.as_secs_f64());
        entry.insert(
            "duration_s".into(),
            ((secs * 1000.0).round() / 1000.0).into(),
        );
        match (self.recorder.as_mut(), &t.recording) {
            (Some(rec), Some(_)) => {
                let line = self.audit.defer(entry);
                if let Some(line) = rec.close(t.id, line) {
                    if !line.try_write() {
                        self.audit.lost_one();
                    }
                }
            }
            _ => self.audit.write(entry),
        }
    }

    /// A tunnel never hangs half-open: when one side goes, the other gets CloseTunnel.
    pub fn tunnels_peer_gone(&mut self, id: PeerId) {
        self.tunnels.expire_find_pending(Instant::now(), Some(id));
        let gone = self
            .tunnels
            .ids(|t| t.rsh_peer == id || t.rexec_peer == Some(id));
        for tid in gone {
            let Some(t) = self.tunnels.remove(tid) else {
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
                self.session_closed(t, gone_status("the operator's end disconnected"));
            } else {
                let f = close_frame(
                    t.request_id,
                    &t.rsh_rest,
                    "the device's end of the tunnel disconnected",
                );
                self.send_to(t.rsh_peer, f);
                self.session_closed(t, gone_status("the device's end disconnected"));
            }
        }
    }

    /// Hosted tunnels whose rexec never came are closed with an error to rsh; transit
    /// entries no CreateTunnelRequest passed through (another broker hosts) are dropped.
    pub fn tunnels_housekeeping(&mut self, now: Instant) {
        for tid in self.tunnels.overdue(now) {
            let Some(t) = self.tunnels.remove(tid) else {
                continue;
            };
            if t.hosted {
                let f = close_frame(
                    t.request_id,
                    &t.rsh_rest,
                    "the device's end did not connect to the tunnel in time",
                );
                self.send_to(t.rsh_peer, f);
                self.session_closed(t, gone_status("the device's end never connected"));
            }
        }
        self.tunnels.expire_find_pending(now, None);
        self.enforce_session_policy(now);
    }

    /// Sessions past their operator's `tunnel_idle_timeout` or `tunnel_max_duration`
    /// end; a notice reaches the operator a quarter of the limit before (at most a
    /// minute), once per approach.
    fn enforce_session_policy(&mut self, now: Instant) {
        let limited = self.tunnels.ids(|t| {
            t.rexec_request_id.is_some()
                && (t.policy.idle_timeout.is_some() || t.policy.max_duration.is_some())
        });
        for tid in limited {
            let Some(t) = self.tunnels.get_mut(tid) else {
                continue;
            };
            let (notice, end) = policy_step(t, now);
            let (rsh, rid, rest) = (t.rsh_peer, t.request_id, t.rsh_rest.clone());
            if let Some(text) = notice {
                self.send_to(rsh, crate::tunnel::notice_frame(rid, &rest, &text));
            }
            if let Some(why) = end {
                tracing::info!(target: "audit", tunnel = tid, "{why}");
                self.end_tunnel(tid, &why);
            }
        }
    }

    /// Closes a tunnel on an admin's request.
    pub fn close_tunnel(&mut self, tid: u64) -> bool {
        self.end_tunnel(tid, "tunnel closed by an administrator")
    }

    /// Ends a tunnel from here: CloseTunnel with `why` to both ends.
    fn end_tunnel(&mut self, tid: u64, why: &str) -> bool {
        let Some(t) = self.tunnels.remove(tid) else {
            return false;
        };
        if let (Some(rexec), Some(w)) = (t.rexec_peer, t.rexec_request_id) {
            self.send_to(rexec, close_frame(w, &t.rexec_rest, why));
        }
        self.send_to(t.rsh_peer, close_frame(t.request_id, &t.rsh_rest, why));
        if let (true, Some(rexec)) = (t.hosted, t.rexec_peer) {
            self.disconnect(rexec, "tunnel closed");
        }
        self.session_closed(t, gone_status(why));
        true
    }

    /// `.broker/tunnels:list`: the sessions this broker takes part in (`host` ""), then
    /// those hosted below it that it learnt of (`host`: the hosting broker's path here).
    pub fn tunnel_list(&self) -> RpcValue {
        let mut list: Vec<&Tunnel> = self.tunnels.iter().collect();
        list.sort_by_key(|t| t.id);
        let mut v: Vec<RpcValue> = list
            .into_iter()
            .map(|t| {
                let mut m = session_info(t);
                m.insert("host".into(), RpcValue::from(""));
                RpcValue::from(m)
            })
            .collect();
        v.extend(self.remote_sessions.iter().map(|s| {
            let mut m = s.fields.clone();
            m.insert(
                "id".into(),
                RpcValue::from(i64::try_from(s.id).unwrap_or(i64::MAX)),
            );
            m.insert("hosted".into(), RpcValue::from(true));
            m.insert("host".into(), RpcValue::from(s.host.as_str()));
            RpcValue::from(m)
        }));
        v.into()
    }

    /// A signal from a child broker: if it is a session of its subtree opening or
    /// closing, our table of sessions below follows (and, with `tunnel.audit_below`,
    /// our audit log).
    pub(super) fn observe_tree_session(&mut self, from: PeerId, frame: &RpcFrame) {
        use crate::remote_sessions::{session_id, CLOSED, NODE, OPENED};
        let name = frame.method().unwrap_or("");
        if name != OPENED && name != CLOSED {
            return;
        }
        let Some(host) = frame
            .shv_path()
            .strip_suffix(NODE)
            .and_then(|h| h.strip_suffix('/'))
        else {
            return;
        };
        let Some(child) = self
            .peers
            .get(&from)
            .filter(|p| p.is_child_broker())
            .and_then(|p| p.mount.clone())
        else {
            return;
        };
        // A session description is small; a child sending a huge one is not read.
        if frame.body.len() > 16 * 1024 {
            return;
        }
        let Some(info) = RpcMessage::from_frame(frame)
            .ok()
            .and_then(|m| m.param().cloned())
        else {
            return;
        };
        let Some(id) = session_id(&info) else {
            return;
        };
        let known = if name == OPENED {
            self.remote_sessions.opened(&child, host, id, &info)
        } else {
            self.remote_sessions.closed(host, id).is_some()
        };
        if known && self.settings.tunnel.audit_below {
            self.audit_below(host, id, name == OPENED, &info);
        }
    }

    /// An audit line for a session hosted below (`tunnel.audit_below`).
    fn audit_below(&mut self, host: &str, id: u64, opened: bool, info: &RpcValue) {
        let mut m = serde_json::Map::new();
        m.insert("event".into(), if opened { "open" } else { "close" }.into());
        m.insert("host".into(), shown(host).to_string().into());
        m.insert("session".into(), id.into());
        if let shvproto::Value::Map(f) = &info.value {
            for (key, json) in [
                ("login", "user"),
                ("user", "user_chain"),
                ("agentPath", "agent"),
                ("command", "command"),
                ("kind", "kind"),
                ("status", "status"),
            ] {
                if let Some(v) = f.get(key) {
                    let text = v.as_str();
                    let cut: String = text.chars().take(512).collect();
                    m.insert(json.into(), shown(&cut).to_string().into());
                }
            }
            for (key, json) in [
                ("bytesToRsh", "bytes_to_operator"),
                ("bytesToRexec", "bytes_to_device"),
            ] {
                if let (false, Some(v)) = (opened, f.get(key)) {
                    m.insert(json.into(), v.as_int().into());
                }
            }
        }
        self.audit.write(m);
    }
}

/// Tells subscribers (a parent broker's forwarded subscription among them) that a
/// session hosted here opened or closed: `.broker/tunnels:tunnelOpened` /
/// `tunnelClosed`, source `list`, for those who may list sessions.
fn session_signal(t: &Tunnel, name: &str, status: Option<&CloseStatus>) -> RpcFrame {
    let mut m = session_info(t);
    m.insert("login".into(), RpcValue::from(shown(&t.login).to_string()));
    if let Some(st) = status {
        m.insert("status".into(), RpcValue::from(st.to_value().to_cpon()));
    }
    let mut msg = RpcMessage::new_signal(
        crate::remote_sessions::NODE,
        name,
        "list",
        Some(RpcValue::from(m)),
    );
    msg.meta.insert(
        tag::ACCESS_LEVEL,
        RpcValue::from(libshv::access::level::SUPER_SERVICE),
    );
    msg.into_frame()
}

/// A session's description, as `.broker/tunnels:list` and the session signals give it.
fn session_info(t: &Tunnel) -> Map {
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    let mut m = Map::new();
    m.insert(
        "id".into(),
        RpcValue::from(i64::try_from(t.id).unwrap_or(i64::MAX)),
    );
    m.insert("hosted".into(), RpcValue::from(t.hosted));
    m.insert("agentPath".into(), RpcValue::from(t.agent_path.as_str()));
    m.insert("user".into(), RpcValue::from(t.user.as_str()));
    m.insert("command".into(), RpcValue::from(t.command.as_str()));
    m.insert("kind".into(), RpcValue::from(t.kind));
    m.insert(
        "connected".into(),
        RpcValue::from(t.rexec_request_id.is_some()),
    );
    m.insert("openedAt".into(), RpcValue::from(ms(t.opened_at)));
    m.insert("lastActivity".into(), RpcValue::from(ms(t.last_activity)));
    let count = |n: u64| RpcValue::from(i64::try_from(n).unwrap_or(i64::MAX));
    m.insert("bytesToRsh".into(), count(t.bytes_to_rsh));
    m.insert("bytesToRexec".into(), count(t.bytes_to_rexec));
    m
}

fn gone_status(why: &str) -> CloseStatus {
    CloseStatus::Error(why.to_string())
}

/// The fields every audit entry of a session has.
fn audit_entry(t: &Tunnel, event: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("event".into(), event.into());
    m.insert("session".into(), t.id.into());
    m.insert("kind".into(), t.kind.into());
    // As this broker authenticated the operator's connection; `user_chain` is the
    // UserId the request arrived with (what brokers below vouch for, then ours).
    m.insert("user".into(), shown(&t.login).to_string().into());
    m.insert("user_chain".into(), shown(&t.user).to_string().into());
    m.insert("client".into(), shown(&t.client_addr).to_string().into());
    m.insert("agent".into(), shown(&t.agent_path).to_string().into());
    m.insert("command".into(), shown(&t.command).to_string().into());
    if let Some(r) = &t.recording {
        m.insert("recording".into(), r.clone().into());
    }
    m
}

/// Hands a data frame of a recorded session to the recorder: output towards the
/// operator, input and resizes from them.
fn record(rec: &mut crate::recording::Recorder, tid: u64, to_rsh: bool, frame: &RpcFrame) {
    use libshv::tunnel::channel;
    // On the broker task: a frame off the data fast path is decoded only if small;
    // a larger one is marked as a gap in the recording.
    match libshv::tunnel::frame_event_bounded(frame, 4096) {
        Err(libshv::tunnel::NotRead) => rec.gap(tid, "a frame in an unusual layout"),
        Ok(Some(TunnelEvent::Data { channel: ch, data })) => {
            if to_rsh && (ch == channel::STDOUT || ch == channel::STDERR) {
                rec.output(tid, &data);
            } else if !to_rsh && ch == channel::STDIN {
                rec.input(tid, &data);
            }
        }
        Ok(Some(TunnelEvent::Control(Control::Resize { cols, rows }))) if !to_rsh => {
            rec.resize(tid, cols, rows);
        }
        _ => {}
    }
}

/// What the policy asks of tunnel `t` now: a notice for the operator, and the reason
/// to end it. Marks notices as sent.
fn policy_step(t: &mut Tunnel, now: Instant) -> (Option<String>, Option<String>) {
    let warn_before = |limit: Duration| (limit / 4).min(Duration::from_secs(60));
    let secs = |d: Duration| d.as_secs_f64().round() as u64;
    if let Some(limit) = t.policy.max_duration {
        let age = now.saturating_duration_since(t.opened);
        if age >= limit {
            let why = format!(
                "session ended: it reached its maximum duration of {} s (tunnel_max_duration)",
                secs(limit)
            );
            return (None, Some(why));
        }
        if !t.warned_max && age + warn_before(limit) >= limit {
            t.warned_max = true;
            let text = format!(
                "this session ends in {} s: maximum duration {} s (tunnel_max_duration)",
                secs(limit - age),
                secs(limit)
            );
            return (Some(text), None);
        }
    }
    if let Some(limit) = t.policy.idle_timeout {
        if !t.open_conns.is_empty() {
            return (None, None);
        }
        let idle = now.saturating_duration_since(t.active_at);
        if idle >= limit {
            let why = format!(
                "session ended: idle for {} s (tunnel_idle_timeout)",
                secs(limit)
            );
            return (None, Some(why));
        }
        if !t.warned_idle && idle + warn_before(limit) >= limit {
            t.warned_idle = true;
            let text = format!(
                "this session has been idle for {} s and ends in {} s unless used (tunnel_idle_timeout)",
                secs(idle),
                secs(limit - idle)
            );
            return (Some(text), None);
        }
    }
    (None, None)
}

/// Follows a forward's connections opening and closing (control frames, small; data
/// frames take the fast path and are not decoded), so that one with connections open
/// never counts as idle however quiet they are. A connection ends with ConnClose from
/// either side, or with ConnEof from both.
fn track_forward_conns(t: &mut Tunnel, to_rsh: bool, frame: &RpcFrame) {
    let Ok(Some(TunnelEvent::Control(c))) = libshv::tunnel::frame_event_bounded(frame, 4096) else {
        return;
    };
    match c {
        Control::ConnOpen(n) | Control::ConnOpenTo { id: n, .. }
            if t.open_conns.len() < crate::tunnel::MAX_TRACKED_CONNS =>
        {
            t.open_conns.insert(n, 0);
        }
        Control::ConnEof(n) => {
            let ended = t.open_conns.get_mut(&n).map(|dirs| {
                *dirs |= if to_rsh { 1 } else { 2 };
                *dirs == 3
            });
            if ended == Some(true) {
                t.open_conns.remove(&n);
            }
        }
        Control::ConnClose(n) => {
            t.open_conns.remove(&n);
        }
        _ => {}
    }
}
