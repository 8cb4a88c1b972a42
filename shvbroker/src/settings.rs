//! The broker's settings: the second of the config's two layers. [`crate::config`] is the
//! file as data (serde, one `Default` per section); [`Settings::new`] checks it once and
//! compiles what every later reader would otherwise re-parse: URLs into [`RpcUrl`]s, access
//! levels into numbers, RIs into patterns, passwords into their hashes. A check that
//! fails names the key (`limits.login_timeout: …`).
//!
//! Every running part of the broker reads `Settings`, never `Config`.

mod checks;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use libshv::access::parse_level;
use libshv::ri::Ri;
use libshv::url::Transport;
use libshv::RpcUrl;

use crate::config::{public_tunnel_address, Autosetup, Config, Limits, TunnelConfig};

/// A config key and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Invalid {
    /// Where in the file, as a path of keys: `users.alice.roles`, `connections[0].url`.
    pub key: String,
    pub message: String,
}

impl Invalid {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The checked, compiled config the broker runs by.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub listen: Vec<RpcUrl>,
    accounts: BTreeMap<String, Account>,
    roles: BTreeMap<String, CompiledRole>,
    pub autosetup: Vec<Autosetup>,
    pub parents: Vec<Parent>,
    pub tunnel: TunnelConfig,
    /// `tunnel.public_address`, parsed.
    pub tunnel_address: Option<Transport>,
    pub limits: Limits,
    pub web_root: Option<PathBuf>,
    pub web_hosts: Vec<String>,
}

/// A user as login and the broker need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// hex(SHA1(password)).
    pub sha1pass: String,
    pub roles: Vec<String>,
    /// The user's own `max_sessions`, over `limits.max_sessions_per_user`.
    pub max_sessions: Option<usize>,
    /// The user's own `max_subscription_bytes`, over the limit for all users.
    pub max_subscription_bytes: Option<usize>,
    /// The level of the broker's own requests to this user's connections.
    pub own_request_level: i64,
}

/// A role's rules in order (first match wins) and where its users may mount.
#[derive(Debug, Clone)]
struct CompiledRole {
    rules: Vec<(Ri, i64)>,
    mount_points: Vec<String>,
    policy: SessionPolicy,
}

/// How long a user's remote sessions may idle and last (`roles.*.tunnel_idle_timeout`,
/// `tunnel_max_duration`): over several roles, the smallest of each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionPolicy {
    pub idle_timeout: Option<Duration>,
    pub max_duration: Option<Duration>,
}

impl SessionPolicy {
    fn of_role(r: &crate::config::Role) -> SessionPolicy {
        let secs = |v: Option<u64>| v.filter(|s| *s > 0).map(Duration::from_secs);
        SessionPolicy {
            idle_timeout: secs(r.tunnel_idle_timeout),
            max_duration: secs(r.tunnel_max_duration),
        }
    }

    /// The stricter of the two, limit by limit.
    fn and(self, o: SessionPolicy) -> SessionPolicy {
        let min = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        SessionPolicy {
            idle_timeout: min(self.idle_timeout, o.idle_timeout),
            max_duration: min(self.max_duration, o.max_duration),
        }
    }
}

/// A parent broker this broker links up to (`connections[i]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Parent {
    pub url: RpcUrl,
    pub mount_point: Option<String>,
    pub device_id: Option<String>,
    /// Between heartbeats; at least one second.
    pub heartbeat: Duration,
    pub reconnect_max: Duration,
}

impl Settings {
    /// Checks `config` and compiles it. Passwords must be hashed already, as
    /// [`Config::parse`] and [`Config::default`] leave them; a plain one is hashed here.
    pub fn new(config: &Config) -> Result<Settings, Invalid> {
        checks::check(config)?;
        let accounts = config
            .users
            .iter()
            .map(|(name, u)| {
                let sha1pass = config.user_sha1(name).unwrap_or_default();
                let account = Account {
                    sha1pass,
                    roles: u.roles.clone(),
                    max_sessions: u.max_sessions,
                    max_subscription_bytes: u.max_subscription_bytes,
                    own_request_level: u.own_request_level(),
                };
                (name.clone(), account)
            })
            .collect();
        let roles = config
            .roles
            .iter()
            .map(|(name, r)| {
                let rules = r
                    .access
                    .iter()
                    .filter_map(|a| Some((Ri::parse(&a.ri), parse_level(&a.grant)?)))
                    .collect();
                let role = CompiledRole {
                    rules,
                    mount_points: r.mount_points.clone(),
                    policy: SessionPolicy::of_role(r),
                };
                (name.clone(), role)
            })
            .collect();
        let listen = config
            .listen
            .iter()
            .enumerate()
            .map(|(i, u)| {
                RpcUrl::parse(u).map_err(|e| Invalid::new(format!("listen[{i}]"), e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let parents = config
            .connections
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let url = RpcUrl::parse(&c.url)
                    .map_err(|e| Invalid::new(format!("connections[{i}].url"), e.to_string()))?;
                Ok(Parent {
                    url,
                    mount_point: c.mount_point.clone(),
                    device_id: c.device_id.clone(),
                    heartbeat: c.heartbeat.max(Duration::from_secs(1)),
                    reconnect_max: c.reconnect_max,
                })
            })
            .collect::<Result<_, Invalid>>()?;
        let tunnel_address = match &config.tunnel.public_address {
            Some(a) => Some(
                public_tunnel_address(a)
                    .map_err(|e| Invalid::new("tunnel.public_address", e.to_string()))?,
            ),
            None => None,
        };
        Ok(Settings {
            name: config.name.clone(),
            listen,
            accounts,
            roles,
            autosetup: config.autosetup.clone(),
            parents,
            tunnel: config.tunnel.clone(),
            tunnel_address,
            limits: config.limits.clone(),
            web_root: config.web_root.clone(),
            web_hosts: config.web_hosts.clone(),
        })
    }

    pub fn account(&self, user: &str) -> Option<&Account> {
        self.accounts.get(user)
    }

    /// The session limits of `user` (none for a user this broker does not know, such
    /// as one a parent broker vouches for: its own broker applies them).
    pub fn session_policy(&self, user: &str) -> SessionPolicy {
        self.account(user)
            .map_or(&[][..], |a| &a.roles)
            .iter()
            .filter_map(|role| self.roles.get(role))
            .fold(SessionPolicy::default(), |p, r| p.and(r.policy))
    }

    /// The access rules of `user`'s roles, in the order of its roles and of each role's
    /// rules (the first match wins), and the mount point patterns of those roles.
    pub(crate) fn rules_of(&self, user: &str) -> (Vec<(Ri, i64)>, Vec<String>) {
        let mut rules = Vec::new();
        let mut mounts = Vec::new();
        for role in self.account(user).map_or(&[][..], |a| &a.roles) {
            if let Some(r) = self.roles.get(role) {
                rules.extend(r.rules.iter().cloned());
                mounts.extend(r.mount_points.iter().cloned());
            }
        }
        (rules, mounts)
    }
}

impl Default for Settings {
    /// The built-in config's settings.
    fn default() -> Self {
        Settings::new(&Config::default()).expect("the built-in config is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_durations_and_urls_are_parsed() {
        let c = Config::parse(
            "limits: {login_timeout: 7}\nconnections: [{url: 'tcp://u@p:1?password=x', heartbeat: 0}]\ntunnel: {public_address: 'h:1'}\n",
            "t",
        )
        .unwrap();
        let s = Settings::new(&c).unwrap();
        assert_eq!(s.limits.login_timeout, Duration::from_secs(7));
        assert_eq!(s.parents[0].url.user, "u");
        // A heartbeat of 0 would spin; the settings never hold one.
        assert_eq!(s.parents[0].heartbeat, Duration::from_secs(1));
        assert_eq!(s.tunnel_address.as_ref().unwrap().to_string(), "tcp://h:1");
        assert_eq!(s.account("admin"), None);
    }

    #[test]
    fn roles_compile_in_order() {
        let s = Settings::default();
        let (rules, mounts) = s.rules_of("device");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].1, libshv::access::level::READ);
        assert_eq!(mounts, ["test/**"]);
        assert_eq!(s.rules_of("nobody").0.len(), 0);
        assert_eq!(
            s.account("admin").unwrap().sha1pass,
            libshv::login::sha1_hex(b"admin")
        );
    }
}
