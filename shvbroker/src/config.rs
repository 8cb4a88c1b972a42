//! Broker configuration: YAML on disk, or the built-in default that is safe on a laptop.

use std::collections::BTreeMap;
use std::path::Path;

use libshv::access::parse_level;
use libshv::login::sha1_hex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of this broker (shown by `.broker:name`, appended to UserId).
    #[serde(default = "default_name")]
    pub name: String,
    /// URLs to listen on: `tcp://HOST:PORT`, `unix:PATH`.
    #[serde(default)]
    pub listen: Vec<String>,
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// deviceId → mount point.
    #[serde(default)]
    pub mounts: BTreeMap<String, String>,
    /// Parent brokers this broker connects to as a device.
    #[serde(default)]
    pub connections: Vec<Connection>,
    #[serde(default)]
    pub tunnel: TunnelConfig,
    #[serde(default)]
    pub limits: Limits,
}

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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// `PATH:METHOD` pattern; a bare path means any method.
    pub ri: String,
    /// Access level: bws, rd, wr, cmd, cfg, srv, ssrv, dev, su, or 0..63.
    pub grant: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// Parent broker URL (credentials included).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Seconds between heartbeats to the parent.
    #[serde(default = "default_heartbeat")]
    pub heartbeat: u64,
    /// Maximum reconnect back-off in seconds.
    #[serde(default = "default_reconnect")]
    pub reconnect_max: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// `host:port` a tunnel end (shvrexec) can reach this broker at; tunnels are hosted
    /// by the nearest broker to the operator that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_address: Option<String>,
    /// Seconds a tunnel secret stays valid.
    #[serde(default = "default_secret_ttl")]
    pub secret_ttl: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted frame in bytes; bigger frames are drained and refused.
    #[serde(default = "default_max_frame")]
    pub max_frame_size: usize,
    /// Frames queued to one client before it is disconnected as too slow.
    #[serde(default = "default_queue")]
    pub client_queue: usize,
    /// Failed logins on one connection before it is closed.
    #[serde(default = "default_login_attempts")]
    pub login_attempts: u32,
    /// Seconds a new connection has to complete login.
    #[serde(default = "default_login_timeout")]
    pub login_timeout: u64,
    /// Default idle watchdog in seconds (a client may ask for another value at login).
    #[serde(default = "default_idle")]
    pub idle_timeout: u64,
}

fn default_name() -> String {
    "shvbroker".into()
}
fn default_heartbeat() -> u64 {
    60
}
fn default_reconnect() -> u64 {
    30
}
fn default_secret_ttl() -> u64 {
    10
}
fn default_max_frame() -> usize {
    libshv::codec::DEFAULT_MAX_FRAME
}
fn default_queue() -> usize {
    4096
}
fn default_login_attempts() -> u32 {
    3
}
fn default_login_timeout() -> u64 {
    30
}
fn default_idle() -> u64 {
    180
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            public_address: None,
            secret_ttl: default_secret_ttl(),
        }
    }
}
impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: default_max_frame(),
            client_queue: default_queue(),
            login_attempts: default_login_attempts(),
            login_timeout: default_login_timeout(),
            idle_timeout: default_idle(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// The socket path used by the default config: `$XDG_RUNTIME_DIR/shvbroker.sock`, else /tmp.
pub fn default_unix_socket() -> String {
    let dir = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into());
    format!("{dir}/shvbroker.sock")
}

fn rule(ri: &str, grant: &str) -> AccessRule {
    AccessRule {
        ri: ri.into(),
        grant: grant.into(),
    }
}

fn user(password: &str, role: &str) -> User {
    User {
        password: Some(password.into()),
        sha1pass: None,
        roles: vec![role.into()],
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut users = BTreeMap::new();
        users.insert("admin".into(), user("admin", "admin"));
        users.insert("device".into(), user("device", "device"));
        users.insert("viewer".into(), user("viewer", "viewer"));
        let mut roles = BTreeMap::new();
        roles.insert(
            "admin".into(),
            Role {
                access: vec![rule("**:*", "su")],
                mount_points: vec!["**".into()],
            },
        );
        roles.insert(
            "device".into(),
            Role {
                access: vec![rule("**:*", "rd")],
                mount_points: vec!["test/**".into()],
            },
        );
        roles.insert(
            "viewer".into(),
            Role {
                access: vec![rule("**:*", "rd")],
                mount_points: vec![],
            },
        );
        Config {
            name: default_name(),
            listen: vec![
                "tcp://127.0.0.1:3755".into(),
                format!("unix:{}", default_unix_socket()),
            ],
            users,
            roles,
            mounts: BTreeMap::new(),
            connections: Vec::new(),
            tunnel: TunnelConfig::default(),
            limits: Limits::default(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(file.clone(), e))?;
        Self::parse(&text, &file)
    }

    /// Parses YAML; serde_yaml's messages carry the line and column of the problem.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let cfg: Config = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            file: file.to_string(),
            message,
        })?;
        Ok(cfg)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("config is always serializable")
    }

    fn validate(&self) -> Result<(), String> {
        for (name, u) in &self.users {
            if u.password.is_none() && u.sha1pass.is_none() {
                return Err(format!("user '{name}' has neither password nor sha1pass"));
            }
            if let Some(h) = &u.sha1pass {
                if h.len() != 40 || hex::decode(h).is_err() {
                    return Err(format!("user '{name}': sha1pass must be 40 hex digits"));
                }
            }
            for r in &u.roles {
                if !self.roles.contains_key(r) {
                    return Err(format!("user '{name}' has unknown role '{r}'"));
                }
            }
        }
        for (name, r) in &self.roles {
            for a in &r.access {
                if parse_level(&a.grant).is_none() {
                    return Err(format!(
                        "role '{name}': unknown access level '{}' for '{}'",
                        a.grant, a.ri
                    ));
                }
            }
        }
        for (dev, mp) in &self.mounts {
            check_mount_path(mp).map_err(|e| format!("mounts: device '{dev}': {e}"))?;
        }
        for c in &self.connections {
            libshv::RpcUrl::parse(&c.url).map_err(|e| format!("connections: {e}"))?;
        }
        if let Some(a) = &self.tunnel.public_address {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(format!("tunnel.public_address '{a}' must be host:port"));
            }
        }
        if self.limits.max_frame_size < 1024 {
            return Err("limits.max_frame_size must be at least 1024".into());
        }
        if self.limits.client_queue == 0 {
            return Err("limits.client_queue must be at least 1".into());
        }
        Ok(())
    }

    /// hex(SHA1(password)) of a user, if the user exists.
    pub fn user_sha1(&self, name: &str) -> Option<String> {
        let u = self.users.get(name)?;
        u.sha1pass
            .clone()
            .or_else(|| u.password.as_ref().map(|p| sha1_hex(p.as_bytes())))
    }
}

/// A mount point must be a relative path of non-empty segments that does not shadow the
/// broker's own nodes.
pub fn check_mount_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.split('/').any(|s| s.is_empty()) {
        return Err(format!("invalid mount point '{path}'"));
    }
    let first = path.split('/').next().unwrap_or("");
    if first.starts_with('.') {
        return Err(format!(
            "mount point '{path}' would shadow the broker's '{first}'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_yaml() {
        let c = Config::default();
        let back = Config::parse(&c.to_yaml(), "x").unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_key_reports_line() {
        let err = Config::parse("name: a\nlisten: []\nbogus: 1\n", "b.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.yaml"), "{err}");
        assert!(err.contains("bogus"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_references() {
        let e = Config::parse("users:\n  a: {password: x, roles: [nope]}\n", "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown role 'nope'"), "{e}");
        let e = Config::parse("roles:\n  r: {access: [{ri: '**', grant: max}]}\n", "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown access level"), "{e}");
        assert!(check_mount_path(".broker/x").is_err());
        assert!(check_mount_path("a//b").is_err());
    }
}
