//! Users, their roles and the access rules of each role; the default ones.

use libshv::access::parse_level;
use serde::{Deserialize, Serialize};
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Plain password (hashed with SHA1 at load time; only the hash is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// hex(SHA1(password)), the alternative to `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1pass: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Logged-in connections this user may have at once (default
    /// `limits.max_sessions_per_user`; 0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<usize>,
    /// Bytes of subscriptions this user may hold over all its connections (default
    /// `limits.max_subscription_bytes_per_user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_subscription_bytes: Option<usize>,
    /// The access level (`bws`, `rd`, … `su`) the broker's own requests to this user's
    /// connections carry: its `ls` probe and the subscriptions it forwards into a child
    /// broker logged in as this user. A child broker grants them by it (the C++ broker
    /// applies its `masterBroker` role to such requests without one). Default `rd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_request_access: Option<String>,
}

impl User {
    /// The level of [`User::own_request_access`].
    pub fn own_request_level(&self) -> i64 {
        self.own_request_access
            .as_deref()
            .and_then(parse_level)
            .unwrap_or(libshv::access::level::READ)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Access rules, first match wins: RI pattern (`path:method`, globs) → level.
    #[serde(default)]
    pub access: Vec<AccessRule>,
    /// Path patterns where users of this role may mount themselves.
    #[serde(default)]
    pub mount_points: Vec<String>,
    /// Seconds a remote session (shell, command, forward, copy) this broker's users of
    /// the role opened may pass with no bytes either way before it is ended; a warning
    /// reaches the operator first. The smallest over a user's roles applies; absent or
    /// 0: no limit. A forward with connections open is never idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_idle_timeout: Option<u64>,
    /// Seconds such a session may last at all, busy or not (same rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_max_duration: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// `PATH:METHOD` pattern; a bare path means any method.
    pub ri: String,
    /// Access level: bws, rd, wr, cmd, cfg, srv, ssrv, dev, su, or 0..63.
    pub grant: String,
}

pub(super) fn rule(ri: &str, grant: &str) -> AccessRule {
    AccessRule {
        ri: ri.into(),
        grant: grant.into(),
    }
}

pub(super) fn user(password: &str, role: &str) -> User {
    User {
        password: Some(password.into()),
        sha1pass: None,
        roles: vec![role.into()],
        max_sessions: None,
        max_subscription_bytes: None,
        own_request_access: None,
    }
}
