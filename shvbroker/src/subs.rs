//! Requests the broker sends on its own behalf, parent link bookkeeping, and the
//! forwarding of subscriptions into mounted sub-brokers.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use libshv::logsafe::shown;
use libshv::message::RpcMessage;
use libshv::meta::tag;
use libshv::ri::Ri;
use libshv::{RpcFrame, RpcValue};

use crate::link::LinkStatus;
use crate::peer::PeerId;
use crate::state::{Broker, OwnRequest};

/// TTL asked of sub-brokers for forwarded subscriptions, and how often they are renewed.
const FORWARD_TTL: u64 = 120;
const FORWARD_REFRESH: Duration = Duration::from_secs(60);
/// Distinct RIs forwarded to one sub-broker at most; beyond, one `**:*:*` covers them
/// all (the signals are filtered here anyway), so users cannot fill the sub-broker's
/// subscription table or its queue.
const MAX_FORWARDED: usize = 64;
/// Subscribe/unsubscribe requests sent to one sub-broker per round (every 500 ms).
const FORWARD_BURST: usize = 32;

impl Broker {
    /// Sends a request of the broker's own; false if `to`'s queue is busy (nothing is
    /// sent then: a peer is never cut off for what the broker itself sends it).
    pub fn send_own_request(&mut self, to: PeerId, msg: &mut RpcMessage, what: OwnRequest) -> bool {
        let rid = self.next_own_rid();
        msg.meta.insert(tag::REQUEST_ID, RpcValue::from(rid));
        if !self.try_send_to(to, msg.to_frame()) {
            return false;
        }
        self.own_requests.insert((to, rid), (what, Instant::now()));
        true
    }

    fn next_own_rid(&mut self) -> i64 {
        // Responses to the broker carry no CallerIds, so these ids cannot clash with
        // the ids of the clients whose requests pass through.
        self.next_rid += 1;
        self.next_rid
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
                    self.sync_forwarded_subscriptions();
                }
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

    pub fn link_status(&mut self, index: usize, status: LinkStatus) {
        let Some(l) = self.links.get_mut(index) else {
            return;
        };
        match status {
            LinkStatus::Connected { peer } => {
                l.peer = Some(peer);
                l.since = Some(SystemTime::now());
                l.last_error = None;
            }
            LinkStatus::Disconnected { error } => {
                if l.peer.take().is_some() || l.since.is_some() {
                    l.reconnects += 1;
                }
                l.since = None;
                l.last_error = Some(error);
            }
        }
    }

    /// Makes each sub-broker's forwarded subscriptions match what our clients need:
    /// subscribe what is new or due for renewal, unsubscribe what nobody needs.
    pub fn sync_forwarded_subscriptions(&mut self) {
        let now = Instant::now();
        let children: Vec<(PeerId, String)> = self
            .peers
            .values()
            .filter(|p| p.is_broker == Some(true))
            .filter_map(|p| p.mount.clone().map(|m| (p.id, m)))
            .collect();
        for (child, mount) in children {
            let mut desired: BTreeSet<String> = self
                .peers
                .values()
                .filter(|p| p.id != child)
                .flat_map(|p| p.subscriptions.values())
                .filter(|(_, exp)| exp.is_none_or(|e| e > now))
                .filter_map(|(ri, _)| ri.relative_to(&mount))
                .map(|ri| full_ri(&ri))
                .collect();
            if desired.len() > MAX_FORWARDED {
                desired = BTreeSet::from(["**:*:*".to_string()]);
            }
            let sent = self.forwarded.remove(&child).unwrap_or_default();
            let mut next: HashMap<String, Instant> = HashMap::new();
            let mut budget = FORWARD_BURST;
            for ri in &desired {
                match sent.get(ri) {
                    Some(t) if now.duration_since(*t) < FORWARD_REFRESH => {
                        next.insert(ri.clone(), *t);
                    }
                    // Not sent, or due: sent now if the budget allows, else next round.
                    _ if budget > 0 => {
                        budget -= 1;
                        let p = RpcValue::from(vec![
                            RpcValue::from(ri.as_str()),
                            RpcValue::from(FORWARD_TTL as i64),
                        ]);
                        let mut m = RpcMessage::new_request(
                            0,
                            ".broker/currentClient",
                            "subscribe",
                            Some(p),
                        );
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
                let mut m = RpcMessage::new_request(
                    0,
                    ".broker/currentClient",
                    "unsubscribe",
                    Some(RpcValue::from(ri.as_str())),
                );
                // Kept as sent until the unsubscribe goes out.
                if budget == 0 || !self.send_own_request(child, &mut m, OwnRequest::Quiet) {
                    next.insert(ri.clone(), *t);
                } else {
                    budget -= 1;
                }
            }
            self.forwarded.insert(child, next);
        }
    }

    /// `.broker:parents`
    pub fn parents_value(&self) -> RpcValue {
        let list: Vec<RpcValue> = self
            .links
            .iter()
            .map(|l| {
                let mut m = shvproto::Map::new();
                m.insert("url".into(), RpcValue::from(l.url.as_str()));
                m.insert("connected".into(), RpcValue::from(l.peer.is_some()));
                let since = l
                    .since
                    .and_then(|s| s.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map(|d| RpcValue::from(d.as_millis() as i64))
                    .unwrap_or_else(RpcValue::null);
                m.insert("since".into(), since);
                m.insert("reconnects".into(), RpcValue::from(l.reconnects as i64));
                if let Some(e) = &l.last_error {
                    m.insert("lastError".into(), RpcValue::from(e.as_str()));
                }
                RpcValue::from(m)
            })
            .collect();
        list.into()
    }
}

/// Subscription RIs are always sent in the full `path:method:signal` form.
fn full_ri(ri: &Ri) -> String {
    format!(
        "{}:{}:{}",
        ri.path,
        ri.method,
        ri.signal.as_deref().unwrap_or("*")
    )
}
