//! Who is subscribed to what. Every signal is tested against every live subscription
//! on the broker task, so what a client can subscribe is bounded twice: per connection
//! in number (`max_subscriptions`), and per user in bytes over all of the user's
//! connections (`max_subscription_bytes_per_user`, or the user's own
//! `max_subscription_bytes`). Without the second bound a read-only user who opens a
//! hundred connections could make each signal cost the broker half a second of
//! matching. Subscriptions the config makes (autosetup) are the administrator's choice:
//! neither refused nor charged.

use std::collections::HashMap;
use std::time::Instant;

use libshv::ri::Ri;

use crate::peers::PeerId;

/// What one subscription is charged besides its RI's bytes: its entry in the tables.
pub const ENTRY_COST: usize = 64;

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("at most {0} subscriptions per client")]
    PerClient(usize),
    #[error("the user's subscriptions over all its connections would exceed {0} bytes")]
    PerUser(usize),
}

/// Whom a peer's subscriptions are charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A logged-in user, and the bytes of subscriptions it may hold over all of its
    /// connections.
    User { name: String, max_bytes: usize },
    /// Our parent link: bounded per connection only (its subscriptions stand for the
    /// parent's clients, and the parent sends few: it folds many into one `**:*:*`).
    Parent,
}

struct PeerEntry {
    owner: Owner,
    /// RI text → the subscription.
    map: HashMap<String, Subscription>,
}

struct Subscription {
    ri: Ri,
    expiry: Option<Instant>,
    /// Counted in its user's bytes (not for configured ones).
    charged: bool,
}

pub struct Subscriptions {
    by_peer: HashMap<PeerId, PeerEntry>,
    /// Bytes charged to each user (only users with a charged subscription have one).
    by_user: HashMap<String, usize>,
    max_per_peer: usize,
}

fn cost(key: &str) -> usize {
    key.len() + ENTRY_COST
}

impl Subscriptions {
    pub fn new(max_per_peer: usize) -> Self {
        Subscriptions {
            by_peer: HashMap::new(),
            by_user: HashMap::new(),
            max_per_peer,
        }
    }

    /// Subscribes `peer` (owned by `owner`) to `ri` until `expiry` (None: for the
    /// session). Renewing an existing subscription only sets its expiry. Ok(true) when
    /// the subscription is new.
    pub fn add(
        &mut self,
        peer: PeerId,
        owner: &Owner,
        ri: Ri,
        expiry: Option<Instant>,
    ) -> Result<bool, Refused> {
        self.insert(peer, owner, ri, expiry, true)
    }

    /// Like [`Self::add`] for subscriptions the broker's config makes (autosetup): they
    /// are neither refused nor charged, since the administrator chose them.
    pub fn add_configured(&mut self, peer: PeerId, owner: &Owner, ri: Ri) {
        let _ = self.insert(peer, owner, ri, None, false);
    }

    fn insert(
        &mut self,
        peer: PeerId,
        owner: &Owner,
        ri: Ri,
        expiry: Option<Instant>,
        bounded: bool,
    ) -> Result<bool, Refused> {
        let key = ri.to_string();
        let entry = self.by_peer.entry(peer).or_insert_with(|| PeerEntry {
            owner: owner.clone(),
            map: HashMap::new(),
        });
        if let Some(existing) = entry.map.get_mut(&key) {
            existing.expiry = expiry;
            return Ok(false);
        }
        let charge = cost(&key);
        let charged = bounded && matches!(entry.owner, Owner::User { .. });
        if bounded {
            if entry.map.len() >= self.max_per_peer {
                return Err(Refused::PerClient(self.max_per_peer));
            }
            if let Owner::User { name, max_bytes } = &entry.owner {
                let used = self.by_user.get(name).copied().unwrap_or(0);
                if used.saturating_add(charge) > *max_bytes {
                    return Err(Refused::PerUser(*max_bytes));
                }
            }
        }
        if let (true, Owner::User { name, .. }) = (charged, &entry.owner) {
            *self.by_user.entry(name.clone()).or_insert(0) += charge;
        }
        let sub = Subscription {
            ri,
            expiry,
            charged,
        };
        entry.map.insert(key, sub);
        Ok(true)
    }

    /// Removes `peer`'s subscription to the RI `key` (as [`Ri`] displays it).
    pub fn remove(&mut self, peer: PeerId, key: &str) -> bool {
        let Some(entry) = self.by_peer.get_mut(&peer) else {
            return false;
        };
        let Some(sub) = entry.map.remove(key) else {
            return false;
        };
        if sub.charged {
            refund(&mut self.by_user, &entry.owner, cost(key));
        }
        if entry.map.is_empty() {
            self.by_peer.remove(&peer);
        }
        true
    }

    /// Forgets every subscription of a peer that is gone.
    pub fn peer_gone(&mut self, peer: PeerId) {
        if let Some(entry) = self.by_peer.remove(&peer) {
            let total = entry
                .map
                .iter()
                .filter(|(_, s)| s.charged)
                .map(|(k, _)| cost(k))
                .sum();
            refund(&mut self.by_user, &entry.owner, total);
        }
    }

    /// Drops the subscriptions whose TTL has run out.
    pub fn expire(&mut self, now: Instant) {
        let by_user = &mut self.by_user;
        self.by_peer.retain(|_, entry| {
            let mut freed = 0;
            entry.map.retain(|k, s| {
                let live = s.expiry.is_none_or(|e| e > now);
                if !live && s.charged {
                    freed += cost(k);
                }
                live
            });
            refund(by_user, &entry.owner, freed);
            !entry.map.is_empty()
        });
    }

    /// A peer's subscriptions: RI text and expiry.
    pub fn of(&self, peer: PeerId) -> impl Iterator<Item = (&str, Option<Instant>)> {
        self.by_peer
            .get(&peer)
            .into_iter()
            .flat_map(|e| e.map.iter().map(|(k, s)| (k.as_str(), s.expiry)))
    }

    /// A peer's subscriptions, parsed.
    pub fn ris_of(&self, peer: PeerId) -> impl Iterator<Item = &Ri> {
        self.by_peer
            .get(&peer)
            .into_iter()
            .flat_map(|e| e.map.values().map(|s| &s.ri))
    }

    /// The subscriptions of every peer but `except` that are live at `now`.
    pub fn of_others(&self, except: PeerId, now: Instant) -> impl Iterator<Item = &Ri> {
        self.by_peer
            .iter()
            .filter(move |(id, _)| **id != except)
            .flat_map(|(_, e)| e.map.values())
            .filter(move |s| s.expiry.is_none_or(|e| e > now))
            .map(|s| &s.ri)
    }

    /// The peers with a live subscription matching a signal `name` from `source` on
    /// `path`.
    pub fn subscribers<'a>(
        &'a self,
        path: &'a str,
        source: &'a str,
        name: &'a str,
        now: Instant,
    ) -> impl Iterator<Item = PeerId> + 'a {
        self.by_peer
            .iter()
            .filter(move |(_, e)| {
                e.map.values().any(|s| {
                    s.expiry.is_none_or(|e| e > now) && s.ri.matches_signal(path, source, name)
                })
            })
            .map(|(id, _)| *id)
    }

    /// Bytes charged to `user` now.
    #[cfg(test)]
    pub fn user_bytes(&self, user: &str) -> usize {
        self.by_user.get(user).copied().unwrap_or(0)
    }
}

fn refund(by_user: &mut HashMap<String, usize>, owner: &Owner, bytes: usize) {
    let Owner::User { name: user, .. } = owner else {
        return;
    };
    if let Some(used) = by_user.get_mut(user) {
        *used = used.saturating_sub(bytes);
        if *used == 0 {
            by_user.remove(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn user(name: &str, max_bytes: usize) -> Owner {
        Owner::User {
            name: name.into(),
            max_bytes,
        }
    }

    #[test]
    fn bounded_per_client_in_number_and_per_user_in_bytes() {
        let ri = |i: usize| Ri::parse(&format!("a/b{i}:*:chng"));
        let one = cost(&ri(0).to_string());
        let mut s = Subscriptions::new(3);
        let eve = user("eve", 5 * one);
        for i in 0..3 {
            assert_eq!(s.add(1, &eve, ri(i), None), Ok(true));
        }
        assert_eq!(s.add(1, &eve, ri(3), None), Err(Refused::PerClient(3)));
        // Renewing is not a new subscription: always allowed, never charged twice.
        assert_eq!(s.add(1, &eve, ri(0), None), Ok(false));
        // A second connection of the same user shares the user's bytes.
        assert_eq!(s.add(2, &eve, ri(3), None), Ok(true));
        assert_eq!(s.add(2, &eve, ri(4), None), Ok(true));
        assert_eq!(s.add(2, &eve, ri(5), None), Err(Refused::PerUser(5 * one)));
        // Another user, and the parent link, are not charged for eve.
        assert_eq!(s.add(3, &user("bob", 5 * one), ri(5), None), Ok(true));
        for i in 0..3 {
            assert_eq!(s.add(4, &Owner::Parent, ri(i), None), Ok(true));
        }
        // Freed by unsubscribing and by a connection going away.
        assert!(s.remove(2, &ri(4).to_string()));
        assert!(!s.remove(2, &ri(4).to_string()));
        assert_eq!(s.add(2, &eve, ri(5), None), Ok(true));
        s.peer_gone(1);
        assert_eq!(s.user_bytes("eve"), 2 * one);
        s.peer_gone(2);
        assert_eq!(s.user_bytes("eve"), 0);
        assert!(!s.by_user.contains_key("eve"));
        // Configured subscriptions are neither refused nor charged.
        for i in 0..8 {
            s.add_configured(5, &eve, ri(i));
        }
        assert_eq!(s.user_bytes("eve"), 0);
        assert_eq!(s.of(5).count(), 8);
        s.peer_gone(5);
        assert_eq!(s.user_bytes("eve"), 0);
        // A user with a budget of its own (the user's `max_subscription_bytes`).
        let big = user("fleet", 100 * one);
        for i in 0..3 {
            assert_eq!(s.add(7, &big, ri(i), None), Ok(true));
            assert_eq!(s.add(8, &big, ri(i), None), Ok(true));
        }
    }

    #[test]
    fn expiry_frees_and_matching_skips_the_expired() {
        let mut s = Subscriptions::new(10);
        let now = Instant::now();
        let soon = now + Duration::from_secs(1);
        let a = user("a", 10_000);
        s.add(1, &a, Ri::parse("x/**:*:chng"), Some(soon)).unwrap();
        s.add(2, &a, Ri::parse("x/y:*:*"), None).unwrap();
        let hits = |s: &Subscriptions, t| {
            let mut v: Vec<_> = s.subscribers("x/y", "get", "chng", t).collect();
            v.sort();
            v
        };
        assert_eq!(hits(&s, now), vec![1, 2]);
        let later = soon + Duration::from_secs(1);
        assert_eq!(hits(&s, later), vec![2]);
        assert_eq!(s.of_others(2, later).count(), 0);
        assert_eq!(s.of_others(1, now).count(), 1);
        s.expire(later);
        assert_eq!(s.of(1).count(), 0);
        assert_eq!(s.user_bytes("a"), cost("x/y:*:*"));
    }
}
