//! The broker task: the one owner of broker state. Connections send it [`Event`]s; it
//! routes requests by shvPath, responses by CallerIds, and signals to subscribers, and
//! answers the broker's own API. It never awaits on a peer: each peer has a bounded
//! queue, and a peer whose queue is full is disconnected rather than buffered for.
//!
//! The state is in parts that each keep their own tables and invariants: the peers
//! ([`crate::peers`]), the mount table ([`Mounts`]), the subscriptions
//! ([`Subscriptions`]), the pending requests
//! ([`PendingRequests`]), the tunnel table ([`Tunnels`]), the subscriptions forwarded
//! to sub-brokers ([`forwarding::Forwarding`]) and the parent links ([`Links`]). The
//! broker task ties them together, by concern: [`registry`] (who comes and goes),
//! [`routing`] (frames), [`api`] (the broker's own nodes), [`forwarding`] and
//! [`tunneling`].

mod api;
pub mod decision;
mod forwarding;
mod registry;
mod routing;
mod tunneling;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libshv::access::{level, level_name};
use libshv::logsafe::shown;
use libshv::message::{code, RpcError, RpcMessage};
use libshv::meta::{self, tag};
use libshv::ri::Ri;
use libshv::{RpcFrame, RpcValue};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::access::Grants;
use crate::config::check_mount_path;
use crate::events::{Event, LoginInfo, Registration};
use crate::links::Links;
use crate::mounts::Mounts;
use crate::peers::{Peer, PeerId, PeerKind, SessionCounts};
use crate::pending::{self, PendingRequests};
use crate::queue::{Full, Outgoing};
use crate::settings::Settings;
use crate::subscriptions::Subscriptions;
use crate::tunnel::Tunnels;
use forwarding::Forwarding;

/// Longest shvPath the broker routes; longer requests are refused, longer signals
/// dropped (paths are matched against every access rule and subscription).
pub const MAX_PATH_LEN: usize = 4096;

pub struct Broker {
    settings: Arc<Settings>,
    peers: HashMap<PeerId, Peer>,
    /// Logged-in users' connections, counted per user.
    sessions: SessionCounts,
    mounts: Mounts,
    subscriptions: Subscriptions,
    /// Requests forwarded and not yet answered.
    pending: PendingRequests,
    tunnels: Tunnels,
    /// Sessions hosted by brokers below (the tree-wide `.broker/tunnels:list`).
    remote_sessions: crate::remote_sessions::RemoteSessions,
    /// Responses dropped because nothing authorized them.
    dropped_responses: u64,
    /// Where tunnel ends reach us (the public address, else our first network
    /// listener).
    tunnel_address: Option<libshv::url::Transport>,
    /// `tunnel.audit_log`: every session's open and close.
    audit: crate::audit::AuditLog,
    /// `tunnel.record_dir`: the sessions hosted here, as asciicast files.
    recorder: Option<crate::recording::Recorder>,
    links: Links,
    forwarding: Forwarding,
    /// Bytes queued to all peers (shared with the peers' queues).
    outgoing: Arc<crate::queue::Total>,
    /// Peers to disconnect once the current event is dealt with (a full queue found
    /// while delivering): disconnecting emits signals that may find more, so it is
    /// done in a loop here rather than by recursion.
    doomed: Vec<(PeerId, &'static str)>,
}

impl Broker {
    pub fn new(
        settings: Arc<Settings>,
        tunnel_address: Option<libshv::url::Transport>,
        audit: crate::audit::AuditLog,
        recorder: Option<crate::recording::Recorder>,
        outgoing: Arc<crate::queue::Total>,
    ) -> Self {
        Broker {
            peers: HashMap::new(),
            sessions: SessionCounts::default(),
            mounts: Mounts::default(),
            subscriptions: Subscriptions::new(settings.limits.max_subscriptions),
            pending: PendingRequests::new(
                settings.limits.max_pending,
                settings.limits.max_pending_per_user,
            ),
            tunnels: Tunnels::new(settings.tunnel.secret_ttl),
            remote_sessions: Default::default(),
            dropped_responses: 0,
            links: Links::new(&settings.parents),
            settings,
            tunnel_address,
            audit,
            recorder,
            forwarding: Forwarding::default(),
            outgoing,
            doomed: Vec::new(),
        }
    }

    /// Whom a peer's subscriptions are charged to, and the user's byte bound.
    fn subscription_owner(&self, peer: &Peer) -> crate::subscriptions::Owner {
        if peer.is_parent() {
            return crate::subscriptions::Owner::Parent;
        }
        let max_bytes = self
            .settings
            .account(&peer.user)
            .and_then(|a| a.max_subscription_bytes)
            .unwrap_or(self.settings.limits.max_subscription_bytes_per_user);
        crate::subscriptions::Owner::User {
            name: peer.user.to_string(),
            max_bytes,
        }
    }

    /// The peer mounted at `path` and the path relative to it, or the client addressed
    /// by `.broker/client/<id>/…`.
    pub fn route(&self, path: &str) -> Option<(PeerId, String)> {
        self.route_path(path)
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
                    Some(ev) => self.handle(ev),
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

    /// Deals with one event, all of it, before the next: the synchronous seam the
    /// broker's own tests drive (`broker/tests`) with no sockets.
    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::Register(reg, reply) => self.register(*reg, reply),
            Event::Frame(id, frame, _permit) => self.on_frame(id, frame),
            Event::Gone(id) => self.remove_peer(id),
            Event::Link(index, status) => self.links.update(index, status),
        }
        self.disconnect_doomed();
    }

    fn disconnect_doomed(&mut self) {
        while let Some((id, why)) = self.doomed.pop() {
            self.disconnect(id, why);
        }
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
        self.subscriptions.expire(now);
        self.pending.expire(now);
        self.forwarding.expire(now);
        self.tunnels_housekeeping(now);
        self.retry_probes();
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
            Err(Full::Overflow) => {
                if !self.doomed.iter().any(|(d, _)| *d == id) {
                    self.doomed
                        .push((id, "send queue full (client does not read)"));
                }
                false
            }
            Err(Full::Pressure) => {
                if !self.doomed.iter().any(|(d, _)| *d == id) {
                    self.doomed.push((
                        id,
                        "all send queues together are full (limits.outgoing_bytes) and this \
                         client's is among the longest",
                    ));
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

    /// `lsmod` for the topmost node that appears with a mount or disappears with an
    /// unmount (the mount point itself, or an ancestor no other mount keeps), on that
    /// node's parent: `{name: mounted}`. `mount` is already in (or out of) the table.
    fn emit_lsmod(&mut self, mount: &str, mounted: bool) {
        let top = self.mounts.topmost_new_node(mount);
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
        let (mut out, below) = self.mounts.children(path);
        let exists = path.is_empty() || below;
        let builtin: &[&str] = match path {
            "" => &[".app", ".broker"],
            ".app" | ".broker/currentClient" | ".broker/tunnels" | ".broker/app" => &[],
            // `tunnels` and `app` (the SHV 2 API) answer but are not listed: peers
            // compare this list exactly.
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

pub use libshv::path::join as join_path;
#[cfg(test)]
mod tests;
