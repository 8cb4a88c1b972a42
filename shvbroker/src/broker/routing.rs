//! Routing by meta only: requests by shvPath (longest mount prefix) with access
//! checked and lowered, responses by CallerIds if something authorizes them, signals to
//! the subscribers allowed to see them. Bodies are forwarded untouched.

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
        match frame.kind() {
            libshv::frame::Kind::Request => self.on_request(from, frame),
            libshv::frame::Kind::Response => self.on_response(from, frame),
            libshv::frame::Kind::Signal => self.on_signal(from, frame),
            libshv::frame::Kind::Invalid => {
                tracing::debug!(
                    peer = from,
                    "frame that is neither request, response nor signal dropped"
                );
            }
        }
    }

    fn on_request(&mut self, from: PeerId, mut frame: RpcFrame) {
        let path = frame.shv_path().to_string();
        let method = frame.method().unwrap_or("").to_string();
        // Access rules and mounts match segment by segment: `a/x/`, `a//x` or `a/./x`
        // must not slip past a rule written for `a/x`.
        if let Err(e) = check_request_path(&path) {
            self.respond(from, &frame.meta, Err(RpcError::method_not_found(e)));
            return;
        }
        let Some(peer) = self.peers.get(&from) else {
            return;
        };
        if peer.is_tunnel_end() {
            let r = if path == ".app" && method == "ping" {
                Ok(RpcValue::null())
            } else {
                Err(RpcError::method_not_found(
                    "a tunnel connection may only ping",
                ))
            };
            self.respond(from, &frame.meta, r);
            return;
        }
        let Some(granted) = self.granted_level(from, &path, &method) else {
            let e = RpcError::method_not_found(format!(
                "access denied: no grant for {}:{}",
                shown(&path),
                shown(&method)
            ));
            self.respond(from, &frame.meta, Err(e));
            return;
        };
        let peer = &self.peers[&from];
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
            self.respond(from, &frame.meta, Err(e));
            return;
        }
        if let Some((target, rest)) = self.route_path(&path) {
            // A device is never cut off for what its callers send it: while its queue
            // is half full, further requests are refused instead.
            if self.peers.get(&target).is_some_and(|t| t.tx.is_busy()) {
                let e = RpcError::new(
                    code::TRY_AGAIN_LATER,
                    format!("{} is busy, try again later", shown(&path)),
                );
                self.respond(from, &frame.meta, Err(e));
                return;
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
                let l = &self.config.limits;
                let e = RpcError::new(
                    code::TRY_AGAIN_LATER,
                    format!(
                        "too many requests waiting for an answer (at most {} per client, {} per user)",
                        l.max_pending, l.max_pending_per_user
                    ),
                );
                self.respond(from, &frame.meta, Err(e));
                return;
            }
            let runs = method == "launchRexec" || method == "runCmd";
            if runs && frame.body.len() > crate::pending::MAX_DECODED_LAUNCH {
                // The audit trail shows what runs; a command it could not read here
                // (without stalling routing) is not forwarded at all.
                let e = RpcError::invalid_param(format!(
                    "{method} parameters of more than {} bytes are refused",
                    crate::pending::MAX_DECODED_LAUNCH
                ));
                self.respond(from, &frame.meta, Err(e));
                return;
            }
            frame.set_shv_path(&rest);
            let level = libshv::access::named_floor(level);
            frame.meta.insert(tag::ACCESS_LEVEL, RpcValue::from(level));
            frame
                .meta
                .insert(tag::ACCESS, RpcValue::from(level_name(level)));
            let login = (!peer.is_parent()).then_some(&*peer.user);
            libshv::meta::user_id::append(&mut frame.meta, login, &self.config.name);
            meta::push_id(&mut frame.meta, tag::CALLER_IDS, from);
            let launch =
                (method == "launchRexec").then(|| crate::pending::launch_of(&path, &frame));
            if method == "runCmd" && level >= level::COMMAND {
                self.audit_run_cmd(from, &path, &frame);
            }
            if launch.is_some() {
                // Whether a tunnel host named in the answer counts depends on the
                // target being a broker: ask now, ahead of the launch. A broker answers
                // `ls` itself, the launch only after the agent below it did.
                self.probe_before_launch(target);
            }
            // Cannot fail: there was room above, and nothing ran in between.
            let _ = self.pending.insert(key, budget, launch);
            self.send_to(target, frame);
            return;
        }
        let meta = frame.meta.clone();
        let max = self.config.limits.local_param_size;
        if frame.body.len() > max {
            let e = RpcError::invalid_param(format!(
                "the broker's own methods take at most {max} bytes of parameter"
            ));
            self.respond(from, &meta, Err(e));
            return;
        }
        let param = match RpcMessage::from_frame(&frame) {
            Ok(m) => m.param().cloned(),
            Err(e) => {
                self.respond(
                    from,
                    &meta,
                    Err(RpcError::invalid_param(format!(
                        "cannot decode request: {e}"
                    ))),
                );
                return;
            }
        };
        let r = api::call(self, from, &path, &method, level, param);
        self.respond(from, &meta, r);
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

    fn on_response(&mut self, from: PeerId, mut frame: RpcFrame) {
        if self.tunnel_response(from, &mut frame) {
            return;
        }
        let Some(target) = meta::pop_id(&mut frame.meta, tag::CALLER_IDS) else {
            // Without CallerIds the response is for the broker itself.
            let rid = frame.request_id().unwrap_or_default();
            match self.forwarding.answered(from, rid) {
                Some(own) => self.own_response(from, own, &frame),
                None if self.peers.get(&from).is_some_and(Peer::is_parent) => {
                    // Answers to our heartbeat pings.
                }
                None => {
                    tracing::debug!(peer = from, "response without CallerIds dropped");
                    self.dropped_responses += 1;
                }
            }
            return;
        };
        let key = pending::Key {
            responder: from,
            caller: target,
            request_id: frame.request_id().unwrap_or_default(),
            below: meta::stack_from_value(frame.meta.get(tag::CALLER_IDS)),
        };
        let rid = key.request_id;
        let authorized = self.pending.answer(&key) || self.tunnel_authorizes(from, target, &frame);
        if !authorized {
            tracing::debug!(peer = from, target, rid, "unsolicited response dropped");
            self.dropped_responses += 1;
            return;
        }
        self.send_to(target, frame);
    }

    fn on_signal(&mut self, from: PeerId, mut frame: RpcFrame) {
        let Some(mount) = self.peers.get(&from).and_then(|p| p.mount.clone()) else {
            tracing::trace!(peer = from, "signal from an unmounted client dropped");
            return;
        };
        if check_request_path(frame.shv_path()).is_err() {
            tracing::debug!(
                peer = from,
                "signal with a non-canonical or too long path dropped"
            );
            return;
        }
        let path = join_path(&mount, frame.shv_path());
        frame.set_shv_path(&path);
        frame.meta.remove(tag::CALLER_IDS);
        self.deliver_signal(&frame);
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
