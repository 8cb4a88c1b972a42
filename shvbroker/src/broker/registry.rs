//! Who comes and goes: registering a logged-in connection (its kind, grants, mount
//! and initial subscriptions) and forgetting a connection that is gone.

use super::*;

impl Broker {
    pub(super) fn register(
        &mut self,
        reg: Registration,
        reply: oneshot::Sender<Result<(), RpcError>>,
    ) {
        let Registration {
            id,
            login,
            tx,
            cancel,
            addr,
            idle_timeout,
            login_request,
        } = reg;
        let mut peer = Peer {
            id,
            kind: PeerKind::User,
            user: "".into(),
            grants: Grants::none(),
            mount: None,
            device_id: None,
            user_agent: None,
            addr,
            tx,
            cancel,
            is_broker: None,
            shv2_subscriptions: false,
            last_rx: Instant::now(),
            idle_max: idle_timeout,
        };
        let mut configured = Vec::new();
        match login {
            LoginInfo::Parent { link, url } => {
                peer.kind = PeerKind::Parent { link };
                peer.user = format!("parent:{url}").into();
                peer.grants = Grants::all();
            }
            LoginInfo::Tunnel { secret } => match self.tunnels.claim_secret(&secret, id) {
                Some(tid) => {
                    peer.kind = PeerKind::TunnelEnd { tunnel: tid };
                    peer.user = format!("tunnel#{tid}").into();
                }
                None => {
                    tracing::info!(
                        peer = id,
                        addr = %shown(&peer.addr),
                        "tunnel login refused: unknown, used or expired secret"
                    );
                    let _ = reply.send(Err(RpcError::new(
                        code::METHOD_CALL_EXCEPTION,
                        "Invalid login: tunnel secret not valid",
                    )));
                    return;
                }
            },
            LoginInfo::User {
                user,
                grants,
                device_id,
                mount_point,
                user_agent,
            } => {
                let (mount, subscriptions) = match self.resolve_mount_request(
                    &user,
                    &grants,
                    device_id.as_deref(),
                    mount_point.as_deref(),
                ) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::info!(peer = id, user = %shown(&user), "mount refused: {}", shown(&e.message));
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                let max = self
                    .settings
                    .account(&user)
                    .and_then(|a| a.max_sessions)
                    .unwrap_or(self.settings.limits.max_sessions_per_user);
                if !self.sessions.open(&user, max) {
                    if let Some(n) = self.sessions.refusals.note() {
                        tracing::warn!(peer = id, user = %shown(&user), addr = %shown(&peer.addr), "login refused: the user has {max} sessions already (limits.max_sessions_per_user, or the user's max_sessions); {n} such refusal(s) since the last line");
                    }
                    let _ = reply.send(Err(RpcError::new(
                        code::METHOD_CALL_EXCEPTION,
                        format!("Invalid login: this user has {max} sessions already"),
                    )));
                    return;
                }
                peer.user = user.into();
                peer.grants = grants;
                peer.device_id = device_id;
                peer.user_agent = user_agent;
                peer.mount = mount;
                configured = subscriptions;
            }
        }
        tracing::info!(
            peer = id,
            user = %shown(&peer.user),
            addr = %shown(&peer.addr),
            mount = %shown(peer.mount.as_deref().unwrap_or("")),
            "logged in"
        );
        let mount = peer.mount.clone();
        let owner = self.subscription_owner(&peer);
        self.peers.insert(id, peer);
        for ri in &configured {
            self.subscriptions.add_configured(id, &owner, Ri::parse(ri));
        }
        if let Some(meta) = login_request {
            let ok = RpcMessage::response_to(&meta).with_result(RpcValue::null());
            self.send_to(id, ok.into_frame());
        }
        if reply.send(Ok(())).is_err() {
            // The connection gave up waiting (its login timed out): forget it now
            // rather than keep a peer nobody will ever say Gone for.
            self.remove_peer(id);
            return;
        }
        if let Some(m) = mount {
            // Checked in resolve_mount_request, and nothing ran in between.
            self.mounts.insert(&m, id);
            self.emit_lsmod(&m, true);
            // Is it a broker? Then subscriptions reaching into it must be forwarded. One
            // that says it is our broker is asked at once (its sessions are wanted for
            // the tree-wide view); its answer decides, not what it says of itself.
            let announced = self
                .peers
                .get(&id)
                .and_then(|p| p.user_agent.as_deref())
                .is_some_and(|ua| ua.starts_with("shvbroker/"));
            if announced {
                self.probe(id, m);
            } else {
                self.probe_when_subscribed(id, m);
            }
        }
        // Its own subscriptions (from autosetup) may reach into other mounts.
        let own: Vec<Ri> = self.subscriptions.ris_of(id).cloned().collect();
        for ri in &own {
            self.probe_mounts_reached(id, ri);
        }
    }

    /// Where a logging-in device is to be mounted, and the subscriptions made for it.
    /// A mount point the device asks for wins (its roles must allow it); else the
    /// autosetup rule for its deviceId places it — the rules also decide who may claim
    /// a deviceId at all. Never nested in or over another mount, never shadowing the
    /// broker's own nodes.
    fn resolve_mount_request(
        &self,
        user: &str,
        grants: &Grants,
        device_id: Option<&str>,
        mount_point: Option<&str>,
    ) -> Result<(Option<String>, Vec<String>), RpcError> {
        if let Some(d) = device_id {
            crate::autosetup::check_device_id(d)?;
        }
        let rule = device_id.and_then(|d| {
            crate::autosetup::rule_for(&self.settings.autosetup, grants, d).map(|r| (r, d))
        });
        let subscriptions = rule
            .map(|(r, _)| r.subscriptions.clone())
            .unwrap_or_default();
        let Some(mp) = mount_point else {
            let mount = rule.and_then(|(r, d)| {
                crate::autosetup::mount_point(r, d, user, grants, |p| {
                    self.mounts.collision(p).is_none()
                })
            });
            return Ok((mount, subscriptions));
        };
        let path = mp.trim_matches('/').to_string();
        check_mount_path(&path).map_err(|e| RpcError::new(code::METHOD_CALL_EXCEPTION, e))?;
        if !grants.may_mount(&path) {
            return Err(RpcError::new(
                code::METHOD_CALL_EXCEPTION,
                format!("mount point '{}' not allowed for this user", shown(&path)),
            ));
        }
        if let Some(existing) = self.mounts.collision(&path) {
            return Err(RpcError::new(
                code::METHOD_CALL_EXCEPTION,
                format!(
                    "mount point '{}' collides with the mount '{existing}'",
                    shown(&path)
                ),
            ));
        }
        Ok((Some(path), subscriptions))
    }

    pub fn remove_peer(&mut self, id: PeerId) {
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        // Not cancelled here: after ResetSession the connection lives on.
        tracing::info!(peer = id, user = %shown(&peer.user), "gone");
        if peer.kind == PeerKind::User {
            self.sessions.close(&peer.user);
        }
        self.pending.peer_gone(id);
        self.subscriptions.peer_gone(id);
        self.forwarding.peer_gone(id);
        self.doomed.retain(|(p, _)| *p != id);
        if let Some(m) = &peer.mount {
            self.mounts.remove(m);
            self.emit_lsmod(m, false);
            self.remote_sessions.child_gone(m);
        }
        self.tunnels_peer_gone(id);
    }
}
