//! Who is connected: one [`Peer`] per logged-in connection, of a [`PeerKind`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::access::Grants;
use crate::queue::QueueSender;

/// A connection's id, given at login (from 0).
pub type PeerId = i64;

/// What a connection is to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// A user's client or device (mounted or not).
    User,
    /// A tunnel end (shvrexec) logged in with the secret of this tunnel.
    TunnelEnd { tunnel: u64 },
    /// Our link to a parent broker (index in `connections`).
    Parent { link: usize },
}

pub struct Peer {
    pub id: PeerId,
    pub kind: PeerKind,
    /// Shared: the pending table counts requests per user with it.
    pub user: Arc<str>,
    pub grants: Grants,
    pub mount: Option<String>,
    pub device_id: Option<String>,
    pub user_agent: Option<String>,
    pub addr: String,
    pub tx: QueueSender,
    pub cancel: CancellationToken,
    /// Whether a mounted peer is itself a broker (asked with `ls(".broker")`).
    pub is_broker: Option<bool>,
    /// A child broker that has only SHV 2's `.broker/app:subscribe` (the C++ one).
    pub shv2_subscriptions: bool,
    /// When the last frame from this peer arrived (`clientInfo:idleTime`).
    pub last_rx: Instant,
    /// The idle watchdog in force for this peer (None: off).
    pub idle_max: Option<Duration>,
}

impl Peer {
    pub fn is_parent(&self) -> bool {
        matches!(self.kind, PeerKind::Parent { .. })
    }

    pub fn is_tunnel_end(&self) -> bool {
        matches!(self.kind, PeerKind::TunnelEnd { .. })
    }

    /// A mounted peer known to be a broker itself (subscriptions are forwarded to it).
    pub fn is_child_broker(&self) -> bool {
        self.is_broker == Some(true) && self.mount.is_some()
    }
}

/// Logged-in connections per user, so that one login (a read-only one included)
/// cannot take every connection the broker has room for.
#[derive(Default)]
pub struct SessionCounts {
    by_user: HashMap<String, usize>,
    /// Logins refused for the limit, logged once per burst.
    pub refusals: libshv::logsafe::Burst,
}

impl SessionCounts {
    /// Counts a new session of `user` unless it has `max` already (0: no limit).
    pub fn open(&mut self, user: &str, max: usize) -> bool {
        let n = self.by_user.get(user).copied().unwrap_or(0);
        if max != 0 && n >= max {
            return false;
        }
        *self.by_user.entry(user.to_string()).or_insert(0) += 1;
        true
    }

    /// A session of `user` has ended.
    pub fn close(&mut self, user: &str) {
        if let Some(n) = self.by_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.by_user.remove(user);
            }
        }
    }

    /// Sessions of `user` now.
    #[cfg(test)]
    pub fn of(&self, user: &str) -> usize {
        self.by_user.get(user).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bounded_per_user_and_come_back() {
        let mut s = SessionCounts::default();
        assert!(s.open("eve", 2));
        assert!(s.open("eve", 2));
        assert!(!s.open("eve", 2));
        assert!(s.open("bob", 2));
        assert!(s.open("bob", 0) && s.open("bob", 0), "0 is no limit");
        s.close("eve");
        assert!(s.open("eve", 2));
        s.close("eve");
        s.close("eve");
        assert_eq!(s.of("eve"), 0);
        assert!(!s.by_user.contains_key("eve"));
    }
}
