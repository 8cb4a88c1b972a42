//! Sessions hosted by brokers below this one (the tree-wide view of
//! `.broker/tunnels:list`): learnt from the `tunnelOpened` / `tunnelClosed` signals a
//! hosting broker emits on its `.broker/tunnels`, which reach us as any signal of a
//! child broker does (our forwarded subscription asks for them). Keyed by the host's
//! path as seen here (`site`, `site/edge`) and its session id.
//!
//! A child broker may lie or flood: the table is bounded in entries (in all and per
//! direct child), only known fields are kept, each string capped, and every entry of
//! a child goes when the child does.

use std::collections::BTreeMap;

use shvproto::{Map, RpcValue, Value};

/// Sessions kept in all, and per direct child (its whole subtree).
pub const MAX_SESSIONS: usize = 8192;
pub const MAX_PER_CHILD: usize = 2048;
/// Longest string kept of a field.
const MAX_FIELD: usize = 512;
/// The fields kept of a session's description, as `.broker/tunnels:list` names them.
const FIELDS: &[&str] = &[
    "agentPath",
    "user",
    "login",
    "command",
    "kind",
    "connected",
    "openedAt",
    "lastActivity",
    "bytesToRsh",
    "bytesToRexec",
];

/// The signal names of a hosting broker (on its `.broker/tunnels`, source `list`).
pub const OPENED: &str = "tunnelOpened";
pub const CLOSED: &str = "tunnelClosed";
/// The path the signals are emitted on, below a broker's root.
pub const NODE: &str = ".broker/tunnels";

/// One session hosted below: its host's path here, its id there, what it said.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSession {
    pub host: String,
    pub id: u64,
    pub fields: Map,
}

#[derive(Debug, Default)]
pub struct RemoteSessions {
    sessions: BTreeMap<(String, u64), RemoteSession>,
}

/// The direct child's mount a host path is under (`site` of `site/edge`): what the
/// per-child bound counts.
fn child_of<'a>(host: &'a str, mounts: &[&'a str]) -> Option<&'a str> {
    mounts
        .iter()
        .copied()
        .find(|m| host == *m || host.starts_with(&format!("{m}/")))
}

impl RemoteSessions {
    /// A session opened at `host` (a path under the child mounted at `child`); false
    /// if a bound refused it.
    pub fn opened(&mut self, child: &str, host: &str, id: u64, info: &RpcValue) -> bool {
        let key = (host.to_string(), id);
        if !self.sessions.contains_key(&key) {
            let under_child = self
                .sessions
                .keys()
                .filter(|(h, _)| child_of(h, &[child]).is_some())
                .count();
            if self.sessions.len() >= MAX_SESSIONS || under_child >= MAX_PER_CHILD {
                return false;
            }
        }
        let s = RemoteSession {
            host: host.to_string(),
            id,
            fields: kept_fields(info),
        };
        self.sessions.insert(key, s);
        true
    }

    /// A session at `host` closed: its entry, if it had one.
    pub fn closed(&mut self, host: &str, id: u64) -> Option<RemoteSession> {
        self.sessions.remove(&(host.to_string(), id))
    }

    /// The child mounted at `mount` is gone: so is every session below it.
    pub fn child_gone(&mut self, mount: &str) {
        self.sessions
            .retain(|(h, _), _| child_of(h, &[mount]).is_none());
    }

    pub fn iter(&self) -> impl Iterator<Item = &RemoteSession> {
        self.sessions.values()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// The known fields of a session Map, strings capped; anything else is dropped.
fn kept_fields(info: &RpcValue) -> Map {
    let mut out = Map::new();
    let Value::Map(m) = &info.value else {
        return out;
    };
    for key in FIELDS {
        let Some(v) = m.get(*key) else { continue };
        let kept = match &v.value {
            Value::String(s) => {
                let mut end = s.len().min(MAX_FIELD);
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                RpcValue::from(&s[..end])
            }
            Value::Int(_) | Value::UInt(_) | Value::Bool(_) => v.clone(),
            _ => continue,
        };
        out.insert((*key).to_string(), kept);
    }
    out
}

/// The id of a session description (`id`), if it is a sane one.
pub fn session_id(info: &RpcValue) -> Option<u64> {
    let Value::Map(m) = &info.value else {
        return None;
    };
    match &m.get("id")?.value {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::UInt(u) => Some(*u),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: i64, command: &str) -> RpcValue {
        let mut m = Map::new();
        m.insert("id".into(), RpcValue::from(id));
        m.insert("command".into(), RpcValue::from(command));
        m.insert("evil".into(), RpcValue::from(vec![RpcValue::from(1); 100]));
        RpcValue::from(m)
    }

    #[test]
    fn only_known_fields_capped_and_forgotten_with_the_child() {
        let mut t = RemoteSessions::default();
        let long = "x".repeat(10_000);
        assert!(t.opened("site", "site", 1, &info(1, &long)));
        assert!(t.opened("site", "site/edge", 1, &info(1, "sh")));
        assert!(t.opened("site2", "site2", 7, &info(7, "sh")));
        let s = t.iter().next().unwrap();
        assert_eq!(s.fields.get("command").unwrap().as_str().len(), MAX_FIELD);
        assert!(!s.fields.contains_key("evil"));
        assert_eq!(session_id(&info(7, "")), Some(7));
        assert_eq!(session_id(&info(-1, "")), None);
        t.child_gone("site");
        assert_eq!(t.len(), 1);
        // `site2` is not under `site`.
        assert!(t.closed("site2", 7).is_some());
        assert!(t.is_empty());
    }

    #[test]
    fn a_flooding_child_is_bounded_and_others_still_fit() {
        let mut t = RemoteSessions::default();
        let mut n = 0;
        while t.opened("bad", "bad", n, &info(1, "sh")) {
            n += 1;
        }
        assert_eq!(n as usize, MAX_PER_CHILD);
        assert!(t.opened("good", "good/edge", 1, &info(1, "sh")));
        // Re-announcing a known session is an update, not a new entry.
        assert!(t.opened("good", "good/edge", 1, &info(1, "bash")));
        assert_eq!(t.len(), MAX_PER_CHILD + 1);
    }
}
