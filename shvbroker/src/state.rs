//! The broker task: the one owner of broker state. Connections send it [`Event`]s; it
//! routes requests by shvPath, responses by CallerIds, and signals to subscribers, and
//! answers the broker's own API. It never awaits on a peer: each peer has a bounded
//! queue, and a peer whose queue is full is disconnected rather than buffered for.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use libshv::access::{level, level_name};
use libshv::logsafe::shown;
use libshv::message::{code, RpcError, RpcMessage};
use libshv::meta::{self, tag};
use libshv::ri::Ri;
use libshv::{RpcFrame, RpcValue};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::access::Grants;
use crate::config::{check_mount_path, Config};
use crate::peer::{Event, LoginInfo, Outgoing, PeerId, Registration};
use crate::pending::{self, PendingRequests};
use crate::queue::{Full, QueueSender};
use crate::tunnel::Tunnels;

/// Longest shvPath the broker routes; longer requests are refused, longer signals
/// dropped (paths are matched against every access rule and subscription).
pub const MAX_PATH_LEN: usize = 4096;

pub struct Peer {
    pub id: PeerId,
    pub user: String,
    pub grants: Grants,
    pub mount: Option<String>,
    pub device_id: Option<String>,
    pub user_agent: Option<String>,
    pub addr: String,
    pub tx: QueueSender,
    pub cancel: CancellationToken,
    /// RI text → (parsed RI, expiry).
    pub subscriptions: HashMap<String, (Ri, Option<Instant>)>,
    /// Set for a tunnel end logged in with a secret.
    pub tunnel: Option<u64>,
    /// What this broker appends to UserId for the peer's requests.
    pub user_id: String,
    /// Set for our link to a parent broker (index in `connections`).
    pub parent_link: Option<usize>,
    /// Whether a mounted peer is itself a broker (asked with `ls(".broker")`).
    pub is_broker: Option<bool>,
    pub connected_at: SystemTime,
    /// When the last frame from this peer arrived (`clientInfo:idleTime`).
    pub last_rx: Instant,
    /// The idle watchdog in force for this peer (None: off).
    pub idle_max: Option<Duration>,
}

/// Requests the broker itself sent to a peer, by (peer, request id).
pub enum OwnRequest {
    /// `ls(".broker")` on a freshly mounted peer.
    IsBroker,
    /// Subscription forwarding and the like: the answer needs no action.
    Quiet,
}

/// Parent link state for `.broker:parents`.
#[derive(Default, Clone)]
pub struct LinkState {
    pub url: String,
    pub peer: Option<PeerId>,
    pub since: Option<SystemTime>,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

pub struct Broker {
    pub config: Arc<Config>,
    pub peers: HashMap<PeerId, Peer>,
    /// Mount point → peer.
    pub mounts: HashMap<String, PeerId>,
    /// Requests forwarded and not yet answered.
    pub pending: PendingRequests,
    pub tunnels: Tunnels,
    /// Responses dropped because nothing authorized them.
    pub dropped_responses: u64,
    /// The address (host, port) of our first TCP listener, for tunnels.
    pub tcp_address: Option<(String, u16)>,
    pub started: SystemTime,
    pub links: Vec<LinkState>,
    /// Requests the broker sent on its own behalf and when: (peer, request id).
    pub own_requests: HashMap<(PeerId, i64), (OwnRequest, Instant)>,
    /// Peers to disconnect once the current event is dealt with (a full queue found
    /// while delivering): disconnecting emits signals that may find more, so it is
    /// done in a loop here rather than by recursion.
    doomed: Vec<(PeerId, &'static str)>,
    /// Subscriptions forwarded to each sub-broker: RI → when last (re)sent.
    pub forwarded: HashMap<PeerId, HashMap<String, Instant>>,
    pub(crate) next_rid: i64,
}

impl Broker {
    pub fn new(config: Arc<Config>, tcp_address: Option<(String, u16)>) -> Self {
        let secret_ttl = Duration::from_secs(config.tunnel.secret_ttl);
        Broker {
            peers: HashMap::new(),
            mounts: HashMap::new(),
            pending: PendingRequests::new(config.limits.max_pending),
            tunnels: Tunnels::new(secret_ttl),
            dropped_responses: 0,
            links: config
                .connections
                .iter()
                .map(|c| LinkState {
                    url: libshv::RpcUrl::parse(&c.url)
                        .map(|u| u.to_string())
                        .unwrap_or_default(),
                    ..Default::default()
                })
                .collect(),
            config,
            tcp_address,
            started: SystemTime::now(),
            own_requests: HashMap::new(),
            doomed: Vec::new(),
            forwarded: HashMap::new(),
            next_rid: 0,
        }
    }

    /// Runs until `shutdown`; then disconnects every peer.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    // The event's in-flight permit is given back when it is dropped,
                    // after the event has been dealt with.
                    Some(ev) => self.on_event(ev),
                    None => break,
                },
                _ = tick.tick() => self.housekeeping(),
                _ = shutdown.cancelled() => break,
            }
        }
        for p in self.peers.values() {
            p.cancel.cancel();
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Register(reg, reply) => self.register(reg, reply),
            Event::Frame(id, frame, _permit) => self.on_frame(id, frame),
            Event::Gone(id) => self.remove_peer(id),
            Event::Link(index, status) => self.link_status(index, status),
        }
        self.disconnect_doomed();
    }

    fn disconnect_doomed(&mut self) {
        while let Some((id, why)) = self.doomed.pop() {
            self.disconnect(id, why);
        }
    }

    fn register(&mut self, reg: Registration, reply: oneshot::Sender<Result<(), RpcError>>) {
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
            user: String::new(),
            grants: Grants::none(),
            mount: None,
            device_id: None,
            user_agent: None,
            addr,
            tx,
            cancel,
            subscriptions: HashMap::new(),
            tunnel: None,
            user_id: String::new(),
            parent_link: None,
            is_broker: None,
            connected_at: SystemTime::now(),
            last_rx: Instant::now(),
            idle_max: idle_timeout,
        };
        match login {
            LoginInfo::Parent { link, url } => {
                peer.parent_link = Some(link);
                peer.user = format!("parent:{url}");
                peer.grants = Grants::all();
            }
            LoginInfo::Tunnel { secret } => match self.tunnels.claim_secret(&secret, id) {
                Some(tid) => {
                    peer.tunnel = Some(tid);
                    peer.user = format!("tunnel#{tid}");
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
                peer.user = user;
                peer.grants = grants;
                peer.device_id = device_id;
                peer.user_agent = user_agent;
                peer.mount = mount;
                for ri in subscriptions {
                    let ri = Ri::parse(&ri);
                    peer.subscriptions.insert(ri.to_string(), (ri, None));
                }
            }
        }
        // As pyshv does: `user:broker` for our own users, just `broker` for requests
        // from a parent (whose user is already in the chain).
        peer.user_id = match peer.parent_link {
            Some(_) => self.config.name.clone(),
            None => format!("{}:{}", peer.user, self.config.name),
        };
        tracing::info!(
            peer = id,
            user = %shown(&peer.user),
            addr = %shown(&peer.addr),
            mount = %shown(peer.mount.as_deref().unwrap_or("")),
            "logged in"
        );
        let mount = peer.mount.clone();
        self.peers.insert(id, peer);
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
            self.mounts.insert(m.clone(), id);
            self.emit_lsmod(&m, true);
            // Is it a broker? Then subscriptions reaching into it must be forwarded.
            let mut ls = RpcMessage::new_request(0, "", "ls", Some(RpcValue::from(".broker")));
            self.send_own_request(id, &mut ls, OwnRequest::IsBroker);
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
            crate::autosetup::rule_for(&self.config.autosetup, grants, d).map(|r| (r, d))
        });
        let subscriptions = rule
            .map(|(r, _)| r.subscriptions.clone())
            .unwrap_or_default();
        let Some(mp) = mount_point else {
            let mount = rule.and_then(|(r, d)| {
                crate::autosetup::mount_point(r, d, user, grants, |p| {
                    self.mount_collision(p).is_none()
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
        if let Some(existing) = self.mount_collision(&path) {
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

    /// The existing mount that `path` would equal, nest in or cover.
    fn mount_collision(&self, path: &str) -> Option<&str> {
        self.mounts
            .keys()
            .find(|m| *m == path || is_under(m, path) || is_under(path, m))
            .map(String::as_str)
    }

    pub fn remove_peer(&mut self, id: PeerId) {
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        // Not cancelled here: after ResetSession the connection lives on.
        tracing::info!(peer = id, user = %shown(&peer.user), "gone");
        self.pending.peer_gone(id);
        self.own_requests.retain(|(p, _), _| *p != id);
        self.doomed.retain(|(p, _)| *p != id);
        self.forwarded.remove(&id);
        if let Some(m) = &peer.mount {
            self.mounts.remove(m);
            self.emit_lsmod(m, false);
        }
        self.tunnels_peer_gone(id);
    }

    pub fn disconnect(&mut self, id: PeerId, why: &str) {
        if let Some(p) = self.peers.get(&id) {
            tracing::warn!(peer = id, user = %shown(&p.user), addr = %shown(&p.addr), "disconnecting: {why}");
            p.cancel.cancel();
        }
        self.remove_peer(id);
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        for p in self.peers.values_mut() {
            p.subscriptions
                .retain(|_, (_, exp)| exp.is_none_or(|e| e > now));
        }
        self.pending.expire(now);
        self.own_requests
            .retain(|_, (_, at)| now.duration_since(*at) < OWN_REQUEST_TTL);
        self.tunnels_housekeeping(now);
        self.sync_forwarded_subscriptions();
        self.disconnect_doomed();
    }

    /// Queues a frame to a peer; a full queue (in frames or bytes) disconnects the
    /// peer: it does not read what it asked for.
    pub fn send_to(&mut self, id: PeerId, frame: impl Into<Outgoing>) -> bool {
        let Some(p) = self.peers.get(&id) else {
            return false;
        };
        match p.tx.push(frame) {
            Ok(()) => true,
            Err(Full::Full) => {
                if !self.doomed.iter().any(|(d, _)| *d == id) {
                    self.doomed
                        .push((id, "send queue full (client does not read)"));
                }
                false
            }
            Err(Full::Closed) => false,
        }
    }

    /// Queues a frame the broker itself wants sent (its own requests): a full queue
    /// only drops it; whoever needs it sends it again later.
    pub fn try_send_to(&mut self, id: PeerId, frame: impl Into<Outgoing>) -> bool {
        self.peers
            .get(&id)
            .is_some_and(|p| !p.tx.is_busy() && p.tx.push(frame).is_ok())
    }

    fn respond(
        &mut self,
        to: PeerId,
        request_meta: &shvproto::MetaMap,
        result: Result<RpcValue, RpcError>,
    ) {
        // The request came straight from `to`: its CallerIds (if any) go back as they came.
        let msg = RpcMessage::response_to(request_meta).with_result_or_error(result);
        self.send_to(to, msg.into_frame());
    }

    fn on_frame(&mut self, from: PeerId, mut frame: RpcFrame) {
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
        if peer.tunnel.is_some() {
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
        let level = match (frame.access_level(), peer.parent_link) {
            (Some(l), _) => l.min(granted),
            // A parent that states no level gets what its Access string says, or Browse.
            (None, Some(_)) => frame
                .meta
                .get(tag::ACCESS)
                .and_then(|a| libshv::access::level_from_access(a.as_str()))
                .unwrap_or(level::BROWSE),
            (None, None) => granted,
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
        if let Some((target, rest)) = self.route(&path) {
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
            if !self.pending.has_room(&key) {
                let e = RpcError::new(
                    code::TRY_AGAIN_LATER,
                    format!(
                        "too many requests waiting for an answer (at most {})",
                        self.config.limits.max_pending
                    ),
                );
                self.respond(from, &frame.meta, Err(e));
                return;
            }
            frame.set_shv_path(&rest);
            let level = libshv::access::named_floor(level);
            frame.meta.insert(tag::ACCESS_LEVEL, RpcValue::from(level));
            frame
                .meta
                .insert(tag::ACCESS, RpcValue::from(level_name(level)));
            let user_id = match frame.user_id() {
                Some(u) if !u.is_empty() => format!("{u};{}", peer.user_id),
                _ => peer.user_id.clone(),
            };
            frame.meta.insert(tag::USER_ID, RpcValue::from(user_id));
            meta::push_id(&mut frame.meta, tag::CALLER_IDS, from);
            let launch = (method == "launchRexec").then(|| crate::tunnel::launch_of(&path, &frame));
            // Cannot fail: there was room above, and nothing ran in between.
            let _ = self.pending.insert(key, launch);
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
        let r = crate::api::call(self, from, &path, &method, level, param);
        self.respond(from, &meta, r);
    }

    /// The level `from`'s roles grant for `path:method`. For a device's own tree seen
    /// through `.broker/client/<id>/…` it is also at most what they grant at the
    /// device's mount point: that path must not be a way around the device's rules.
    fn granted_level(&self, from: PeerId, path: &str, method: &str) -> Option<i64> {
        let grants = &self.peers.get(&from)?.grants;
        // Every logged-in user may browse the broker's own nodes (as pySHV grants): a
        // client needs `.app:shvVersionMajor` to know it talks SHV 3, and
        // `.broker/currentClient` to subscribe.
        let implicit = matches!(path, "" | ".app" | ".broker" | ".broker/currentClient")
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
    pub fn route(&self, path: &str) -> Option<(PeerId, String)> {
        if let Some(rest) = path.strip_prefix(".broker/client/") {
            let (id, rest) = rest.split_once('/').unwrap_or((rest, ""));
            let id: PeerId = id.parse().ok()?;
            // Clients only: not our parent link (that would send requests up the tree
            // with our credentials there) nor a tunnel end.
            let p = self.peers.get(&id)?;
            let client = p.parent_link.is_none() && p.tunnel.is_none();
            return client.then(|| (id, rest.to_string()));
        }
        let mut prefix = path;
        loop {
            if let Some(id) = self.mounts.get(prefix) {
                let rest = path[prefix.len()..].trim_start_matches('/');
                return Some((*id, rest.to_string()));
            }
            prefix = &prefix[..prefix.rfind('/')?];
        }
    }

    fn on_response(&mut self, from: PeerId, mut frame: RpcFrame) {
        if self.tunnel_response(from, &mut frame) {
            return;
        }
        let Some(target) = meta::pop_id(&mut frame.meta, tag::CALLER_IDS) else {
            // Without CallerIds the response is for the broker itself.
            let rid = frame.request_id().unwrap_or_default();
            match self.own_requests.remove(&(from, rid)) {
                Some((own, _)) => self.own_response(from, own, &frame),
                None if self
                    .peers
                    .get(&from)
                    .is_some_and(|p| p.parent_link.is_some()) =>
                {
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
            .peers
            .values()
            .filter(|p| {
                p.subscriptions.values().any(|(ri, exp)| {
                    exp.is_none_or(|e| e > now) && ri.matches_signal(path, source, name)
                }) && p.grants.level(path, source).unwrap_or(0) >= needed
            })
            .map(|p| p.id)
            .collect();
        if targets.is_empty() {
            return;
        }
        // Serialized once, shared by every subscriber's queue.
        let encoded = bytes::Bytes::from(libshv::codec::encode_frame(frame));
        for id in targets {
            self.send_to(id, Outgoing::Encoded(encoded.clone()));
        }
    }

    /// `lsmod` for the topmost node that appears with a mount or disappears with an
    /// unmount (the mount point itself, or an ancestor no other mount keeps), on that
    /// node's parent: `{name: mounted}`. `mount` is already in (or out of) the table.
    fn emit_lsmod(&mut self, mount: &str, mounted: bool) {
        let others = || self.mounts.keys().filter(|m| m.as_str() != mount);
        let mut top = mount;
        for (i, _) in mount.match_indices('/') {
            let prefix = &mount[..i];
            if !others().any(|m| m == prefix || is_under(m, prefix)) {
                top = prefix;
                break;
            }
        }
        let (parent, name) = top.rsplit_once('/').unwrap_or(("", top));
        let mut m = shvproto::Map::new();
        m.insert(name.to_string(), RpcValue::from(mounted));
        let mut msg = RpcMessage::new_signal(parent, "lsmod", "ls", Some(m.into()));
        msg.meta
            .insert(tag::ACCESS_LEVEL, RpcValue::from(level::BROWSE));
        self.deliver_signal(&msg.into_frame());
    }

    /// Child names of a virtual (broker-served) node; None if no such node. The list of
    /// connections under `.broker/client` is for SuperService only (`level`).
    pub fn virtual_children(&self, path: &str, level: i64) -> Option<Vec<String>> {
        let mut out = BTreeSet::new();
        let mut exists = path.is_empty();
        for m in self.mounts.keys() {
            let rest = if path.is_empty() {
                Some(m.as_str())
            } else {
                m.strip_prefix(path).and_then(|r| r.strip_prefix('/'))
            };
            if let Some(rest) = rest {
                exists = true;
                out.insert(rest.split('/').next().unwrap_or(rest).to_string());
            }
        }
        let builtin: &[&str] = match path {
            "" => &[".app", ".broker"],
            ".app" | ".broker/currentClient" | ".broker/tunnels" => &[],
            // `tunnels` answers but is not listed: peers compare this list exactly.
            ".broker" => &["currentClient", "client"],
            ".broker/client" => {
                if level >= level::SUPER_SERVICE {
                    out.extend(self.peers.keys().map(|k| k.to_string()));
                }
                &[]
            }
            _ if exists => &[],
            _ => return None,
        };
        let mut list: Vec<String> = builtin.iter().map(|s| s.to_string()).collect();
        list.extend(out);
        Some(list)
    }
}

pub use libshv::path::{is_under, join as join_path};

/// How long the broker waits for the answer to its own requests.
const OWN_REQUEST_TTL: Duration = Duration::from_secs(60);

/// A path the broker accepts in a request or signal: canonical and not too long.
fn check_request_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH_LEN {
        return Err(format!("path longer than {MAX_PATH_LEN} bytes"));
    }
    libshv::path::check(path).map_err(|e| format!("invalid path '{}': {e}", shown(path)))
}
