//! Requests the broker sends on its own behalf (is a new mount a broker? subscribe
//! and unsubscribe in sub-brokers), and the forwarding of our clients' subscriptions
//! into mounted sub-brokers.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::*;

/// Requests the broker itself sent to a peer, by (peer, request id).
pub enum OwnRequest {
    /// `ls(".broker")` on a freshly mounted peer.
    IsBroker,
    /// `dir(".broker/currentClient", "subscribe")` on a child broker: has it SHV 3's
    /// subscription API, or only SHV 2's `.broker/app:subscribe` (the C++ broker)?
    HasShv3Subscribe,
    /// Subscription forwarding and the like: the answer needs no action.
    Quiet,
}

/// How long the broker waits for the answer to its own requests.
const OWN_REQUEST_TTL: Duration = Duration::from_secs(60);

/// The broker's own requests awaiting answers, and what it has subscribed in each
/// sub-broker. Invariant: entries of a peer that is gone are forgotten with it.
#[derive(Default)]
pub struct Forwarding {
    own_requests: HashMap<(PeerId, i64), (OwnRequest, Instant)>,
    /// Subscriptions forwarded to each sub-broker: RI → when last (re)sent.
    forwarded: HashMap<PeerId, HashMap<String, Instant>>,
    /// Mounted peers not asked yet whether they are brokers, with their mount points:
    /// asked only once some other peer's subscription reaches into the mount (as pySHV
    /// does) or a `launchRexec` goes to it, so that a plain device never gets a request
    /// it did not expect (a client that resets its session while answering one can
    /// lose its send loop: pySHV's can).
    unprobed: HashMap<PeerId, String>,
    /// Peers whose probe could not be sent (their queue was busy): tried again on the
    /// tick, these only.
    probe_retry: Vec<PeerId>,
    next_rid: i64,
}

impl Forwarding {
    fn next_rid(&mut self) -> i64 {
        // Responses to the broker carry no CallerIds, so these ids cannot clash with
        // the ids of the clients whose requests pass through.
        self.next_rid += 1;
        self.next_rid
    }

    /// Whether `rid` to `from` is one of the broker's own requests, still awaited.
    pub fn is_own(&self, from: PeerId, rid: i64) -> bool {
        self.own_requests.contains_key(&(from, rid))
    }

    /// The broker's own request `rid` to `from`, if it was one (answered now).
    pub fn answered(&mut self, from: PeerId, rid: i64) -> Option<OwnRequest> {
        self.own_requests.remove(&(from, rid)).map(|(o, _)| o)
    }

    pub fn expire(&mut self, now: Instant) {
        self.own_requests
            .retain(|_, (_, at)| now.duration_since(*at) < OWN_REQUEST_TTL);
    }

    pub fn peer_gone(&mut self, id: PeerId) {
        self.own_requests.retain(|(p, _), _| *p != id);
        self.forwarded.remove(&id);
        self.unprobed.remove(&id);
        self.probe_retry.retain(|p| *p != id);
    }
}

/// TTL asked of sub-brokers for forwarded subscriptions, and how often they are renewed.
const FORWARD_TTL: u64 = 120;
const FORWARD_REFRESH: Duration = Duration::from_secs(60);
/// Distinct RIs forwarded to one sub-broker at most; beyond, one `**:*:*` covers them
/// all (the signals are filtered here anyway), so users cannot fill the sub-broker's
/// subscription table or its queue.
const MAX_FORWARDED: usize = 64;
/// What a broker asks of each child broker for itself: the session signals of the
/// child and of every broker below it (`remote_sessions`).
const TREE_SESSION_RIS: [&str; 2] = [".broker/tunnels:list:*", "**/.broker/tunnels:list:*"];
/// Subscribe/unsubscribe requests sent to one sub-broker per round (every 500 ms).
const FORWARD_BURST: usize = 32;

impl Broker {
    /// Sends a request of the broker's own; false if `to`'s queue is busy (nothing is
    /// sent then: a peer is never cut off for what the broker itself sends it).
    pub fn send_own_request(&mut self, to: PeerId, msg: &mut RpcMessage, what: OwnRequest) -> bool {
        let rid = self.forwarding.next_rid();
        msg.meta.insert(tag::REQUEST_ID, RpcValue::from(rid));
        // The grant a child broker is to apply, as for a request we forward for a
        // user (a C++ child refuses a parent's request without one), and who asks.
        let level = self
            .peers
            .get(&to)
            .and_then(|p| self.settings.account(&p.user))
            .map_or(libshv::access::level::READ, |a| a.own_request_level);
        msg.meta.insert(tag::ACCESS_LEVEL, RpcValue::from(level));
        msg.meta.insert(
            tag::ACCESS,
            RpcValue::from(libshv::access::level_name(level)),
        );
        libshv::meta::user_id::append(&mut msg.meta, None, &self.settings.name);
        if !self.try_send_to(to, msg.to_frame()) {
            return false;
        }
        self.forwarding
            .own_requests
            .insert((to, rid), (what, Instant::now()));
        true
    }

    /// A peer was just mounted at `mount`: ask it whether it is a broker if some
    /// subscription reaches into it, else once one does.
    pub fn probe_when_subscribed(&mut self, id: PeerId, mount: String) {
        if self.subscribed_into(id, &mount) {
            self.probe(id, mount);
        } else {
            self.forwarding.unprobed.insert(id, mount);
        }
    }

    /// `from` subscribed `ri`: probe the mounts it reaches into that were not asked yet.
    pub fn probe_mounts_reached(&mut self, from: PeerId, ri: &Ri) {
        let reached: Vec<(PeerId, String)> = self
            .forwarding
            .unprobed
            .iter()
            .filter(|(id, mount)| **id != from && ri.reaches(mount))
            .map(|(id, mount)| (*id, mount.clone()))
            .collect();
        for (id, mount) in reached {
            self.forwarding.unprobed.remove(&id);
            self.probe(id, mount);
        }
    }

    /// A `launchRexec` is about to go to `id`: ask it first, if nobody did yet.
    pub fn probe_before_launch(&mut self, id: PeerId) {
        if let Some(mount) = self.forwarding.unprobed.remove(&id) {
            self.probe(id, mount);
        }
    }

    /// Probes that could not be sent earlier, if any, against every subscription.
    pub fn retry_probes(&mut self) {
        for id in std::mem::take(&mut self.forwarding.probe_retry) {
            if let Some(mount) = self.forwarding.unprobed.remove(&id) {
                self.probe(id, mount);
            }
        }
    }

    /// Does a subscription of a peer other than `id` reach into `mount`?
    fn subscribed_into(&self, id: PeerId, mount: &str) -> bool {
        self.subscriptions
            .of_others(id, Instant::now())
            .any(|ri| ri.reaches(mount))
    }

    pub fn probe(&mut self, id: PeerId, mount: String) {
        let mut ls = RpcMessage::new_request(0, "", "ls", Some(RpcValue::from(".broker")));
        if !self.send_own_request(id, &mut ls, OwnRequest::IsBroker) {
            self.forwarding.unprobed.insert(id, mount);
            if !self.forwarding.probe_retry.contains(&id) {
                self.forwarding.probe_retry.push(id);
            }
        }
    }

    pub fn own_response(&mut self, from: PeerId, own: OwnRequest, frame: &RpcFrame) {
        match own {
            OwnRequest::IsBroker => {
                let is_broker = RpcMessage::from_frame(frame)
                    .ok()
                    .and_then(|m| m.result().ok())
                    .is_some_and(|r| r.is_bool() && r.as_bool());
                if let Some(p) = self.peers.get_mut(&from) {
                    p.is_broker = Some(is_broker);
                    if is_broker {
                        tracing::info!(peer = from, mount = %shown(p.mount.as_deref().unwrap_or("")), "mounted peer is a broker: forwarding subscriptions");
                    }
                }
                if is_broker {
                    let mut dir = RpcMessage::new_request(
                        0,
                        ".broker/currentClient",
                        "dir",
                        Some(RpcValue::from("subscribe")),
                    );
                    // Not sent (a busy queue): SHV 3 is assumed.
                    if !self.send_own_request(from, &mut dir, OwnRequest::HasShv3Subscribe) {
                        self.sync_forwarded_subscriptions();
                    }
                }
            }
            OwnRequest::HasShv3Subscribe => {
                let shv3 = RpcMessage::from_frame(frame)
                    .ok()
                    .and_then(|m| m.result().ok())
                    .is_some_and(|r| !r.is_null() && (!r.is_bool() || r.as_bool()));
                if let Some(p) = self.peers.get_mut(&from) {
                    p.shv2_subscriptions = !shv3;
                    if !shv3 {
                        tracing::info!(
                            peer = from,
                            "the child broker has only SHV 2 subscriptions (.broker/app:subscribe)"
                        );
                    }
                }
                self.sync_forwarded_subscriptions();
            }
            OwnRequest::Quiet => {
                if let Ok(Err(e)) = RpcMessage::from_frame(frame).map(|m| m.result()) {
                    tracing::warn!(
                        peer = from,
                        "sub-broker refused a forwarded subscription: {}",
                        shown(&e.to_string())
                    );
                }
            }
        }
    }

    /// Makes each sub-broker's forwarded subscriptions match what our clients need:
    /// subscribe what is new or due for renewal, unsubscribe what nobody needs.
    pub fn sync_forwarded_subscriptions(&mut self) {
        let now = Instant::now();
        let children: Vec<(PeerId, String, bool)> = self
            .peers
            .values()
            .filter(|p| p.is_child_broker())
            .filter_map(|p| p.mount.clone().map(|m| (p.id, m, p.shv2_subscriptions)))
            .collect();
        for (child, mount, shv2) in children {
            let mut desired: BTreeSet<String> = self
                .subscriptions
                .of_others(child, now)
                .filter_map(|ri| ri.relative_to(&mount))
                .map(|ri| full_ri(&ri))
                .collect();
            if shv2 {
                // What SHV 2 can say of each: RIs with the same cover are one
                // subscription there, unsubscribed only when none needs it.
                desired = desired
                    .iter()
                    .filter_map(|ri| Ri::from_shv2(&Ri::parse(ri).to_shv2()).ok())
                    .map(|ri| ri.to_string())
                    .collect();
            }
            if desired.len() > MAX_FORWARDED {
                desired = BTreeSet::from(["**:*:*".to_string()]);
            }
            if !shv2 {
                // The sessions hosted in the child's subtree, for our tree-wide view.
                for ri in TREE_SESSION_RIS {
                    desired.insert(ri.to_string());
                }
            }
            let sent = self.forwarding.forwarded.remove(&child).unwrap_or_default();
            let mut next: HashMap<String, Instant> = HashMap::new();
            let mut budget = FORWARD_BURST;
            for ri in &desired {
                match sent.get(ri) {
                    // SHV 2 subscriptions have no TTL: never renewed.
                    Some(t) if shv2 || now.duration_since(*t) < FORWARD_REFRESH => {
                        next.insert(ri.clone(), *t);
                    }
                    // Not sent, or due: sent now if the budget allows, else next round.
                    _ if budget > 0 => {
                        budget -= 1;
                        let mut m = subscribe_request(ri, shv2);
                        if self.send_own_request(child, &mut m, OwnRequest::Quiet) {
                            next.insert(ri.clone(), now);
                        } else if let Some(t) = sent.get(ri) {
                            next.insert(ri.clone(), *t);
                        }
                    }
                    _ => {
                        if let Some(t) = sent.get(ri) {
                            next.insert(ri.clone(), *t);
                        }
                    }
                }
            }
            for (ri, t) in sent.iter().filter(|(ri, _)| !desired.contains(*ri)) {
                let mut m = unsubscribe_request(ri, shv2);
                // Kept as sent until the unsubscribe goes out.
                if budget == 0 || !self.send_own_request(child, &mut m, OwnRequest::Quiet) {
                    next.insert(ri.clone(), *t);
                } else {
                    budget -= 1;
                }
            }
            self.forwarding.forwarded.insert(child, next);
        }
    }
}

/// Subscription RIs are always sent in the full `path:method:signal` form.
/// The (re)subscription of `ri` in a child broker: SHV 3's with a TTL, or SHV 2's
/// (which has none: the subscription stays until unsubscribed or the link ends).
fn subscribe_request(ri: &str, shv2: bool) -> RpcMessage {
    if shv2 {
        let p = Ri::parse(ri).to_shv2();
        return RpcMessage::new_request(0, ".broker/app", "subscribe", Some(p));
    }
    let p = RpcValue::from(vec![RpcValue::from(ri), RpcValue::from(FORWARD_TTL as i64)]);
    RpcMessage::new_request(0, ".broker/currentClient", "subscribe", Some(p))
}

fn unsubscribe_request(ri: &str, shv2: bool) -> RpcMessage {
    if shv2 {
        let p = Ri::parse(ri).to_shv2();
        return RpcMessage::new_request(0, ".broker/app", "unsubscribe", Some(p));
    }
    RpcMessage::new_request(
        0,
        ".broker/currentClient",
        "unsubscribe",
        Some(RpcValue::from(ri)),
    )
}

fn full_ri(ri: &Ri) -> String {
    format!(
        "{}:{}:{}",
        ri.path,
        ri.method,
        ri.signal.as_deref().unwrap_or("*")
    )
}
