//! Routing by meta only: requests by shvPath (longest mount prefix) with access
//! checked and lowered, responses by CallerIds if something authorizes them, signals to
//! the subscribers allowed to see them. Bodies are forwarded untouched.
//!
//! A frame's path reads top to bottom here: [`Broker::on_frame`] lets the tunnel part
//! take its control frames ([`Broker::intercept_tunnel`]), [`Broker::decide`] reads the
//! state and returns a [`Decision`] without changing anything, and [`Broker::apply`]
//! carries it out.

use super::decision::{Decision, Dropped, Effect};
use super::*;

impl Broker {
    pub(super) fn on_frame(&mut self, from: PeerId, mut frame: RpcFrame) {
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        peer.last_rx = Instant::now();
        // Not the whole meta: a TunnelCtl in it may carry a tunnel secret.
        tracing::trace!(
            peer = from,
            path = %shown(frame.shv_path()),
            method = %shown(frame.method().unwrap_or("")),
            rid = ?frame.request_id(),
            body_len = frame.body.len(),
            "frame"
        );
        // Tunnel rule 1: a frame that carries RevCallerIds (even Null) gets the sender pushed.
        if frame.has_rev_caller_ids() {
            meta::push_id(&mut frame.meta, tag::REV_CALLER_IDS, from);
        }
        let Some(frame) = self.intercept_tunnel(from, frame) else {
            return;
        };
        let decision = self.decide(from, frame);
        self.apply(from, decision);
    }

    /// What becomes of `frame` from `from`. Reads the state, changes nothing.
    pub fn decide(&self, from: PeerId, frame: RpcFrame) -> Decision {
        match frame.kind() {
            libshv::frame::Kind::Request => self.decide_request(from, frame),
            libshv::frame::Kind::Response => self.decide_response(from, frame),
            libshv::frame::Kind::Signal => self.decide_signal(from, frame),
            libshv::frame::Kind::Invalid => Decision::Drop(Dropped::NotAMessage),
        }
    }

    /// Carries out a decision for a frame that came from `from`.
    pub(super) fn apply(&mut self, from: PeerId, decision: Decision) {
        match decision {
            Decision::Forward { to, frame, effect } => {
                match effect {
                    Effect::Expect {
                        key,
                        budget,
                        launch,
                        run_cmd,
                    } => {
                        if let Some(agent_path) = run_cmd {
                            self.audit_run_cmd(from, &agent_path, &frame);
                        }
                        if launch.is_some() {
                            // Whether a tunnel host named in the answer counts depends
                            // on the target being a broker: ask now, ahead of the
                            // launch. A broker answers `ls` itself, the launch only
                            // after the agent below it did.
                            self.probe_before_launch(to);
                        }
                        // Cannot fail: decide saw room, and nothing ran in between.
                        let _ = self.pending.insert(key, budget, launch);
                    }
                    Effect::Answer(key) => {
                        self.pending.answer(&key);
                    }
                    Effect::TunnelData(tid) => self.tunnel_data(tid, to, &frame),
                }
                self.send_to(to, frame);
            }
            Decision::Local {
                request,
                path,
                method,
                level,
                param,
            } => {
                let r = api::call(self, from, &path, &method, level, param);
                self.respond(from, &request, r);
            }
            Decision::Refuse { request, error } => self.respond(from, &request, Err(error)),
            Decision::Publish(frame) => {
                self.observe_tree_session(from, &frame);
                self.deliver_signal(&frame)
            }
            Decision::OwnAnswer { rid, frame } => {
                if let Some(own) = self.forwarding.answered(from, rid) {
                    self.own_response(from, own, &frame);
                }
            }
            Decision::Drop(why) => {
                match why {
                    Dropped::HeartbeatAnswer => {}
                    Dropped::UnmountedSignal => tracing::trace!(peer = from, "{why} dropped"),
                    Dropped::Unsolicited { target, rid } => {
                        tracing::debug!(peer = from, target, rid, "{why} dropped")
                    }
                    _ => tracing::debug!(peer = from, "{why} dropped"),
                }
                if why.is_response() {
                    self.dropped_responses += 1;
                }
            }
        }
    }

    fn decide_request(&self, from: PeerId, mut frame: RpcFrame) -> Decision {
        let refuse = |frame: RpcFrame, error| Decision::Refuse {
            request: frame.meta,
            error,
        };
        let path = frame.shv_path().to_string();
        let method = frame.method().unwrap_or("").to_string();
        // Access rules and mounts match segment by segment: `a/x/`, `a//x` or `a/./x`
        // must not slip past a rule written for `a/x`.
        if let Err(e) = check_request_path(&path) {
            return refuse(frame, RpcError::method_not_found(e));
        }
        let Some(peer) = self.peers.get(&from) else {
            return Decision::Drop(Dropped::GoneSender);
        };
        let Some(granted) = self.granted_level(from, &path, &method) else {
            let e = RpcError::method_not_found(format!(
                "access denied: no grant for {}:{}",
                shown(&path),
                shown(&method)
            ));
            return refuse(frame, e);
        };
        let level = match (frame.access_level(), peer.is_parent()) {
            (Some(l), _) => l.min(granted),
            // A parent that states no level gets what its Access string says, or Browse.
            (None, true) => frame
                .meta
                .get(tag::ACCESS)
                .and_then(|a| libshv::access::level_from_access(a.as_str()))
                .unwrap_or(level::BROWSE),
            (None, false) => granted,
        };
        // Reaching into any client's own tree is for administrators only, whatever a
        // broad `**` read rule would say.
        if path.starts_with(".broker/client/") && level < level::SUPER_SERVICE {
            let e = RpcError::method_not_found(format!(
                "access denied: {path} needs '{}'",
                level_name(level::SUPER_SERVICE)
            ));
            return refuse(frame, e);
        }
        let Some((target, rest)) = self.route_path(&path) else {
            return self.decide_local(frame, path, method, level);
        };
        // A device is never cut off for what its callers send it: while its queue
        // is half full, further requests are refused instead.
        if self.peers.get(&target).is_some_and(|t| t.tx.is_busy()) {
            let e = RpcError::new(
                code::TRY_AGAIN_LATER,
                format!("{} is busy, try again later", shown(&path)),
            );
            return refuse(frame, e);
        }
        let key = pending::Key {
            responder: target,
            caller: from,
            request_id: frame.request_id().unwrap_or_default(),
            below: meta::stack_from_value(frame.meta.get(tag::CALLER_IDS)),
        };
        // A parent relays for all users up the tree: each of them has a budget.
        let budget = if peer.is_parent() {
            pending::Budget::PerOrigin
        } else {
            pending::Budget::User(peer.user.clone())
        };
        if !self.pending.has_room(&key, &budget) {
            let l = &self.settings.limits;
            let e = RpcError::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "too many requests waiting for an answer (at most {} per client, {} per user)",
                    l.max_pending, l.max_pending_per_user
                ),
            );
            return refuse(frame, e);
        }
        let runs = method == "launchRexec" || method == "runCmd";
        if runs && frame.body.len() > crate::pending::MAX_DECODED_LAUNCH {
            // The audit trail shows what runs; a command it could not read here
            // (without stalling routing) is not forwarded at all.
            let e = RpcError::invalid_param(format!(
                "{method} parameters of more than {} bytes are refused",
                crate::pending::MAX_DECODED_LAUNCH
            ));
            return refuse(frame, e);
        }
        frame.set_shv_path(&rest);
        let level = libshv::access::named_floor(level);
        frame.meta.insert(tag::ACCESS_LEVEL, RpcValue::from(level));
        frame
            .meta
            .insert(tag::ACCESS, RpcValue::from(level_name(level)));
        let login = (!peer.is_parent()).then_some(&*peer.user);
        libshv::meta::user_id::append(&mut frame.meta, login, &self.settings.name);
        meta::push_id(&mut frame.meta, tag::CALLER_IDS, from);
        let launch = (method == "launchRexec").then(|| crate::pending::launch_of(&path, &frame));
        let run_cmd = (method == "runCmd" && level >= level::COMMAND).then_some(path);
        Decision::Forward {
            to: target,
            frame,
            effect: Effect::Expect {
                key,
                budget,
                launch,
                run_cmd,
            },
        }
    }

    /// A request for the broker's own tree: its parameter decoded (and bounded) here.
    fn decide_local(&self, frame: RpcFrame, path: String, method: String, level: i64) -> Decision {
        let max = self.settings.limits.local_param_size;
        if frame.body.len() > max {
            let error = RpcError::invalid_param(format!(
                "the broker's own methods take at most {max} bytes of parameter"
            ));
            return Decision::Refuse {
                request: frame.meta,
                error,
            };
        }
        match RpcMessage::from_frame(&frame) {
            Ok(m) => Decision::Local {
                param: m.param().cloned(),
                request: frame.meta,
                path,
                method,
                level,
            },
            Err(e) => Decision::Refuse {
                request: frame.meta,
                error: RpcError::invalid_param(format!("cannot decode request: {e}")),
            },
        }
    }
    /// The level `from`'s roles grant for `path:method`. For a device's own tree seen
    /// through `.broker/client/<id>/…` it is also at most what they grant at the
    /// device's mount point: that path must not be a way around the device's rules.
    fn granted_level(&self, from: PeerId, path: &str, method: &str) -> Option<i64> {
        let grants = &self.peers.get(&from)?.grants;
        // Every logged-in user may browse the broker's own nodes (as pySHV grants): a
        // client needs `.app:shvVersionMajor` to know it talks SHV 3, and
        // `.broker/currentClient` (SHV 2 clients `.broker/app`) to subscribe.
        let implicit = matches!(
            path,
            "" | ".app" | ".broker" | ".broker/currentClient" | ".broker/app"
        )
        .then_some(level::BROWSE);
        let level = grants.level(path, method).or(implicit)?;
        let Some(rest) = path.strip_prefix(".broker/client/") else {
            return Some(level);
        };
        let (id, inner) = rest.split_once('/').unwrap_or((rest, ""));
        let mount = id
            .parse::<PeerId>()
            .ok()
            .and_then(|id| self.peers.get(&id))
            .and_then(|p| p.mount.as_deref());
        match mount {
            Some(m) => Some(level.min(grants.level(&join_path(m, inner), method)?)),
            None => Some(level),
        }
    }

    /// The peer serving `path` and the path relative to it: the longest mount prefix,
    /// or `.broker/client/<id>/…`.
    pub(super) fn route_path(&self, path: &str) -> Option<(PeerId, String)> {
        if let Some(rest) = path.strip_prefix(".broker/client/") {
            let (id, rest) = rest.split_once('/').unwrap_or((rest, ""));
            let id: PeerId = id.parse().ok()?;
            // Clients only: not our parent link (that would send requests up the tree
            // with our credentials there) nor a tunnel end.
            let p = self.peers.get(&id)?;
            return (p.kind == PeerKind::User).then(|| (id, rest.to_string()));
        }
        self.mounts
            .route(path)
            .map(|(id, rest)| (id, rest.to_string()))
    }

    fn decide_response(&self, from: PeerId, mut frame: RpcFrame) -> Decision {
        let Some(target) = meta::pop_id(&mut frame.meta, tag::CALLER_IDS) else {
            // Without CallerIds the response is for the broker itself.
            let rid = frame.request_id().unwrap_or_default();
            if self.forwarding.is_own(from, rid) {
                return Decision::OwnAnswer { rid, frame };
            }
            if self.peers.get(&from).is_some_and(Peer::is_parent) {
                return Decision::Drop(Dropped::HeartbeatAnswer);
            }
            return Decision::Drop(Dropped::NoCallerIds);
        };
        let key = pending::Key {
            responder: from,
            caller: target,
            request_id: frame.request_id().unwrap_or_default(),
            below: meta::stack_from_value(frame.meta.get(tag::CALLER_IDS)),
        };
        let effect = if self.pending.contains(&key) {
            Effect::Answer(key)
        } else if let Some(tid) = self.tunnel_of(from, target, &frame) {
            Effect::TunnelData(tid)
        } else {
            return Decision::Drop(Dropped::Unsolicited {
                target,
                rid: key.request_id,
            });
        };
        Decision::Forward {
            to: target,
            frame,
            effect,
        }
    }

    fn decide_signal(&self, from: PeerId, mut frame: RpcFrame) -> Decision {
        let Some(mount) = self.peers.get(&from).and_then(|p| p.mount.as_deref()) else {
            return Decision::Drop(Dropped::UnmountedSignal);
        };
        if check_request_path(frame.shv_path()).is_err() {
            return Decision::Drop(Dropped::BadSignalPath);
        }
        let path = join_path(mount, frame.shv_path());
        frame.set_shv_path(&path);
        frame.meta.remove(tag::CALLER_IDS);
        Decision::Publish(frame)
    }

    /// Sends a signal to every subscriber whose RI matches and whose access level on
    /// the signal's path:source is at least the signal's level (default Read; a device
    /// may lower it to Browse, never below: a subscriber needs some grant).
    pub fn deliver_signal(&mut self, frame: &RpcFrame) {
        let path = frame.shv_path();
        let source = frame.source();
        let name = frame.method().unwrap_or("");
        let needed = frame
            .access_level()
            .unwrap_or(level::READ)
            .max(level::BROWSE);
        let now = Instant::now();
        let targets: Vec<PeerId> = self
            .subscriptions
            .subscribers(path, source, name, now)
            .filter(|id| {
                self.peers
                    .get(id)
                    .is_some_and(|p| p.grants.level(path, source).unwrap_or(0) >= needed)
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        // Serialized once, shared by every subscriber's queue.
        let encoded = self.outgoing.shared(libshv::codec::encode_frame(frame));
        for id in targets {
            self.send_to(id, Outgoing::Encoded(encoded.clone()));
        }
    }
}

/// A path the broker accepts in a request or signal: canonical and not too long.
fn check_request_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH_LEN {
        return Err(format!("path longer than {MAX_PATH_LEN} bytes"));
    }
    libshv::path::check(path).map_err(|e| format!("invalid path '{}': {e}", shown(path)))
}
