//! Requests forwarded and not yet answered. A response is forwarded only if it answers
//! one of these (or belongs to an open tunnel), so this table is what stops a client
//! from injecting responses into other clients' sessions. It is bounded per caller, per
//! user over all of the user's connections, and its entries expire.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::peers::PeerId;
use libshv::{RpcFrame, RpcMessage};

/// Entries older than this are forgotten (their caller will have timed out).
pub const PENDING_TTL: Duration = Duration::from_secs(600);

/// Who asked for a launchRexec, noted with the pending request when it is forwarded
/// (for the tunnel table and the audit log).
#[derive(Debug)]
pub struct Launch {
    pub user: String,
    pub agent_path: String,
    pub command: String,
    /// What kind of session: `shell`, `command`, `forward`, `copy`.
    pub kind: &'static str,
    /// The terminal size asked for (PTY sessions; else 80×24).
    pub cols: u16,
    pub rows: u16,
    /// The access level the launch was forwarded with (the caller's grant on the
    /// agent's path): a tunnel is hosted only for a launch that held `cmd`.
    pub level: i64,
}

/// Longest command text kept for the tunnel table and the audit log.
pub const MAX_COMMAND_TEXT: usize = 256;

/// Launch parameters decoded for the tunnel table and the audit trail at most: this
/// runs on the broker task, and a launch of megabytes (say 400 000 one-letter
/// arguments) would stall everyone's routing while it is taken apart.
pub const MAX_DECODED_LAUNCH: usize = 64 * 1024;

/// Who launches what (a `launchRexec` request on its way to `agent_path`). Only a short
/// text is kept: the request may carry a command of megabytes.
pub fn launch_of(agent_path: &str, frame: &RpcFrame) -> Launch {
    let level = frame.access_level().unwrap_or(0);
    let param = (frame.body.len() <= MAX_DECODED_LAUNCH)
        .then(|| RpcMessage::from_frame(frame).ok())
        .flatten()
        .and_then(|m| m.param().cloned());
    // The agent's own reading (libshv), so the trail shows what runs. Larger launches
    // are refused before they get here (routing), so this one is never unread.
    let command = match &param {
        Some(p) => libshv::tunnel::describe_launch(p, MAX_COMMAND_TEXT),
        None => format!("(a launch of {} bytes, not read)", frame.body.len()),
    };
    let launch = param
        .as_ref()
        .and_then(|p| libshv::tunnel::LaunchParams::from_value(p).ok());
    let (kind, cols, rows) = match &launch {
        Some(l) => (l.kind(), l.cols, l.rows),
        None => ("command", 0, 0),
    };
    let size = |v: u16, default: u16| if v == 0 { default } else { v };
    Launch {
        kind,
        level,
        cols: size(cols, 80),
        rows: size(rows, 24),
        // The end of the chain is what this broker appended (the authenticated user);
        // what comes before is the callers' own word.
        user: tail(&frame.user_id(), MAX_COMMAND_TEXT),
        agent_path: truncate(agent_path, MAX_COMMAND_TEXT),
        command,
    }
}

fn tail(s: &str, max: usize) -> String {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// One forwarded request: who answers, who asked, the request id, and the CallerIds
/// below the caller (the caller may be a broker relaying for many clients, whose
/// request ids may coincide).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub responder: PeerId,
    pub caller: PeerId,
    pub request_id: i64,
    pub below: Vec<i64>,
}

struct Entry {
    at: Instant,
    /// The client below a relaying caller it was counted for ([`Budget`]).
    origin: Option<i64>,
    /// The user it was counted for ([`Budget::User`]).
    user: Option<Arc<str>>,
    /// Set for `launchRexec`: only such a request may be answered by a
    /// FindTunnelRequest, and the tunnel table takes this over.
    launch: Option<Launch>,
}

/// The caller (or its user) already has as many requests waiting as it may.
#[derive(Debug)]
pub struct TooMany;

pub struct PendingRequests {
    entries: HashMap<Key, Entry>,
    per_caller: HashMap<PeerId, usize>,
    /// Counts of a relaying caller's requests by the client below it that sent them.
    per_origin: HashMap<(PeerId, i64), usize>,
    /// Counts of requests by user, over all of the user's connections.
    per_user: HashMap<Arc<str>, usize>,
    max_per_caller: usize,
    max_per_user: usize,
}

/// Callers that relay for many clients (our parent broker) have a budget per client
/// below them, `max_pending` each, so that one user up the tree cannot use up what all
/// of them share; in all such a caller may have this many times `max_pending`.
pub const RELAY_SHARE: usize = 16;

/// How a caller's requests are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Budget {
    /// One budget for the caller, and the budget of its user, shared by all of the
    /// user's connections: more connections do not buy a user more waiting requests.
    User(Arc<str>),
    /// One per client below the caller (the last of its CallerIds), for a caller that
    /// relays for others and is trusted to say who (a parent broker).
    PerOrigin,
}

impl PendingRequests {
    pub fn new(max_per_caller: usize, max_per_user: usize) -> Self {
        PendingRequests {
            entries: HashMap::new(),
            per_caller: HashMap::new(),
            per_origin: HashMap::new(),
            per_user: HashMap::new(),
            max_per_caller,
            max_per_user,
        }
    }

    /// Notes a forwarded request. A request id the caller reuses while it is pending
    /// replaces the old entry.
    pub fn insert(
        &mut self,
        key: Key,
        budget: Budget,
        launch: Option<Launch>,
    ) -> Result<(), TooMany> {
        if let Some(old) = self.entries.get_mut(&key) {
            old.at = Instant::now();
            old.launch = launch;
            return Ok(());
        }
        if !self.has_room(&key, &budget) {
            return Err(TooMany);
        }
        let origin = Self::origin(&key, &budget);
        let user = match budget {
            Budget::User(u) => Some(u),
            Budget::PerOrigin => None,
        };
        self.count(key.caller, origin, user.as_ref());
        let entry = Entry {
            at: Instant::now(),
            origin,
            user,
            launch,
        };
        self.entries.insert(key, entry);
        Ok(())
    }

    /// Would [`insert`](Self::insert) accept `key`?
    pub fn has_room(&self, key: &Key, budget: &Budget) -> bool {
        if self.entries.contains_key(key) {
            return true;
        }
        let total = self.count_of(key.caller);
        if let Budget::User(u) = budget {
            if self.per_user.get(u).copied().unwrap_or(0) >= self.max_per_user {
                return false;
            }
        }
        match Self::origin(key, budget) {
            None => total < self.max_per_caller,
            Some(o) => {
                let mine = self.per_origin.get(&(key.caller, o)).copied().unwrap_or(0);
                mine < self.max_per_caller
                    && total < self.max_per_caller.saturating_mul(RELAY_SHARE)
            }
        }
    }

    fn origin(key: &Key, budget: &Budget) -> Option<i64> {
        match budget {
            Budget::User(_) => None,
            // A parent's own requests (no CallerIds) share one budget too.
            Budget::PerOrigin => Some(key.below.last().copied().unwrap_or(-1)),
        }
    }

    fn count(&mut self, caller: PeerId, origin: Option<i64>, user: Option<&Arc<str>>) {
        *self.per_caller.entry(caller).or_default() += 1;
        if let Some(o) = origin {
            *self.per_origin.entry((caller, o)).or_default() += 1;
        }
        if let Some(u) = user {
            *self.per_user.entry(u.clone()).or_default() += 1;
        }
    }

    /// Whether a response with this key answers a pending request.
    pub fn contains(&self, key: &Key) -> bool {
        self.entries.contains_key(key)
    }

    /// Takes the entry a response answers; false if there is none.
    pub fn answer(&mut self, key: &Key) -> bool {
        self.take(key).is_some()
    }

    /// Takes the entry a FindTunnelRequest answers: only a pending `launchRexec`.
    pub fn answer_launch(&mut self, key: &Key) -> Option<Launch> {
        self.entries.get(key)?.launch.as_ref()?;
        self.take(key)?.launch
    }

    fn take(&mut self, key: &Key) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.uncount(key.caller, e.origin, e.user.as_ref());
        Some(e)
    }

    fn uncount(&mut self, caller: PeerId, origin: Option<i64>, user: Option<&Arc<str>>) {
        fn down<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, k: K) {
            if let Some(n) = map.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&k);
                }
            }
        }
        down(&mut self.per_caller, caller);
        if let Some(o) = origin {
            down(&mut self.per_origin, (caller, o));
        }
        if let Some(u) = user {
            down(&mut self.per_user, u.clone());
        }
    }

    /// Forgets everything to or from a peer that is gone.
    pub fn peer_gone(&mut self, id: PeerId) {
        self.entries
            .retain(|k, _| k.responder != id && k.caller != id);
        self.recount();
    }

    /// Forgets entries older than [`PENDING_TTL`].
    pub fn expire(&mut self, now: Instant) {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now.duration_since(e.at) < PENDING_TTL);
        if self.entries.len() != before {
            self.recount();
        }
    }

    fn recount(&mut self) {
        self.per_caller.clear();
        self.per_origin.clear();
        self.per_user.clear();
        let counted: Vec<(PeerId, Option<i64>, Option<Arc<str>>)> = self
            .entries
            .iter()
            .map(|(k, e)| (k.caller, e.origin, e.user.clone()))
            .collect();
        for (caller, origin, user) in counted {
            self.count(caller, origin, user.as_ref());
        }
    }

    /// Requests `caller` has waiting.
    pub fn count_of(&self, caller: PeerId) -> usize {
        self.per_caller.get(&caller).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(responder: PeerId, caller: PeerId, rid: i64, below: &[i64]) -> Key {
        Key {
            responder,
            caller,
            request_id: rid,
            below: below.to_vec(),
        }
    }

    fn user(name: &str) -> Budget {
        Budget::User(name.into())
    }

    fn launch() -> Launch {
        Launch {
            user: "u".into(),
            agent_path: "a".into(),
            command: "c".into(),
            kind: "command",
            cols: 80,
            rows: 24,
            level: libshv::access::level::COMMAND,
        }
    }

    #[test]
    fn bounded_per_caller() {
        let mut p = PendingRequests::new(2, 1000);
        p.insert(key(1, 7, 1, &[]), user("u"), None).unwrap();
        p.insert(key(1, 7, 2, &[]), user("u"), None).unwrap();
        // The same key again replaces, it does not count twice.
        p.insert(key(1, 7, 2, &[]), user("u"), None).unwrap();
        assert!(p.insert(key(1, 7, 3, &[]), user("u"), None).is_err());
        // Another caller has its own budget.
        p.insert(key(1, 8, 3, &[]), user("u"), None).unwrap();
        assert!(p.answer(&key(1, 7, 1, &[])));
        assert!(!p.answer(&key(1, 7, 1, &[])));
        p.insert(key(1, 7, 3, &[]), user("u"), None).unwrap();
        assert_eq!(p.count_of(7), 2);
        p.peer_gone(1);
        assert_eq!(p.count_of(7), 0);
        assert_eq!(p.count_of(8), 0);
    }

    #[test]
    fn bounded_per_user_over_its_connections() {
        let mut p = PendingRequests::new(2, 3);
        p.insert(key(1, 7, 1, &[]), user("eve"), None).unwrap();
        p.insert(key(1, 7, 2, &[]), user("eve"), None).unwrap();
        p.insert(key(1, 8, 1, &[]), user("eve"), None).unwrap();
        // Caller 8 has room of its own, its user has none.
        assert!(p.insert(key(1, 8, 2, &[]), user("eve"), None).is_err());
        assert!(!p.has_room(&key(1, 9, 1, &[]), &user("eve")));
        p.insert(key(1, 9, 1, &[]), user("bob"), None).unwrap();
        assert!(p.answer(&key(1, 7, 1, &[])));
        p.insert(key(1, 8, 2, &[]), user("eve"), None).unwrap();
        // Departures and expiry give the user's count back.
        p.peer_gone(8);
        p.insert(key(1, 10, 1, &[]), user("eve"), None).unwrap();
        p.expire(Instant::now() + PENDING_TTL);
        assert!(p.per_user.is_empty());
    }

    #[test]
    fn a_parent_has_a_budget_per_client_below_it() {
        let mut p = PendingRequests::new(2, 1000);
        let relay = Budget::PerOrigin;
        p.insert(key(1, 9, 1, &[40, 4]), relay.clone(), None)
            .unwrap();
        p.insert(key(1, 9, 2, &[41, 4]), relay.clone(), None)
            .unwrap();
        // Client 4 of the parent has used its two; client 5 has its own.
        assert!(!p.has_room(&key(1, 9, 3, &[4]), &relay));
        assert!(p.insert(key(1, 9, 3, &[4]), relay.clone(), None).is_err());
        p.insert(key(1, 9, 3, &[5]), relay.clone(), None).unwrap();
        assert_eq!(p.count_of(9), 3);
        assert!(p.answer(&key(1, 9, 1, &[40, 4])));
        p.insert(key(1, 9, 4, &[4]), relay.clone(), None).unwrap();
        // In all at most RELAY_SHARE budgets, however many clients it names.
        for c in 100..200 {
            let _ = p.insert(key(1, 9, c, &[c]), relay.clone(), None);
        }
        assert_eq!(p.count_of(9), 2 * RELAY_SHARE);
        // Expiry and departures keep the counts true.
        p.expire(Instant::now() + PENDING_TTL);
        assert_eq!(p.count_of(9), 0);
        assert!(p.per_origin.is_empty());
        p.insert(key(1, 9, 1, &[4]), relay.clone(), None).unwrap();
        p.peer_gone(9);
        assert!(p.per_origin.is_empty() && p.per_caller.is_empty());
    }

    #[test]
    fn relayed_requests_with_equal_ids_are_kept_apart() {
        let mut p = PendingRequests::new(10, 1000);
        p.insert(key(1, 9, 10, &[4]), user("u"), Some(launch()))
            .unwrap();
        p.insert(key(1, 9, 10, &[5]), user("u"), Some(launch()))
            .unwrap();
        assert!(p.answer_launch(&key(1, 9, 10, &[5])).is_some());
        assert!(p.answer_launch(&key(1, 9, 10, &[4])).is_some());
    }

    #[test]
    fn find_tunnel_request_answers_only_a_launch() {
        let mut p = PendingRequests::new(10, 1000);
        p.insert(key(1, 2, 3, &[]), user("u"), None).unwrap();
        assert!(p.answer_launch(&key(1, 2, 3, &[])).is_none());
        // … and the plain request stays answerable.
        assert!(p.answer(&key(1, 2, 3, &[])));
    }
}
