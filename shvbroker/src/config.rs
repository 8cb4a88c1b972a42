//! Broker configuration: YAML on disk, or the built-in default that is safe on a laptop.

use std::collections::BTreeMap;
use std::path::Path;

use libshv::access::parse_level;

pub use crate::autosetup::Autosetup;
pub use crate::mounts::check_mount_path;
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
    /// Where devices that log in with a deviceId are mounted, and who may claim which
    /// deviceId (first matching rule wins).
    #[serde(default)]
    pub autosetup: Vec<Autosetup>,
    /// Parent brokers this broker connects to as a device.
    #[serde(default)]
    pub connections: Vec<Connection>,
    #[serde(default)]
    pub tunnel: TunnelConfig,
    #[serde(default)]
    pub limits: Limits,
    /// A directory of static files (the web terminal, `web/dist`) that every
    /// `ws://`/`wss://` listener also serves to plain HTTP GET requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_root: Option<std::path::PathBuf>,
    /// Host names browsers reach this broker by (`broker.example.com`). A browser's
    /// WebSocket must come from a page of the same origin, and that origin's host must
    /// be an IP address, `localhost` or one of these: a page of another site can never
    /// use the broker with the visitor's network position (cross-site WebSocket
    /// hijacking, DNS rebinding).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub web_hosts: Vec<String>,
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
    /// `host:port`, or a URL (`ssl://host:3756`, `wss://host/shv`), at which a tunnel end
    /// (shvrexec) can reach this broker; tunnels are hosted by the nearest broker to the
    /// operator that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_address: Option<String>,
    /// Seconds a tunnel secret stays valid.
    #[serde(default = "default_secret_ttl")]
    pub secret_ttl: u64,
    /// Record every tunnel hosted here into this directory (asciicast v2, one file per
    /// session, named in the audit entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_dir: Option<std::path::PathBuf>,
    /// Record what the operator types too (off by default: it may hold passwords).
    #[serde(default)]
    pub record_input: bool,
    /// Bytes one recording may take on disk; then it ends with a marker event
    /// (0: no cap).
    #[serde(default = "default_record_max_bytes")]
    pub record_max_bytes: u64,
    /// Bytes all recordings in `record_dir` may take together (0: no cap).
    #[serde(default = "default_record_dir_max_bytes")]
    pub record_dir_max_bytes: u64,
    /// What happens when `record_dir` is at its cap: `delete_oldest` finished
    /// recordings, or `refuse` to record new sessions (they still run; the audit says
    /// they were not recorded).
    #[serde(default)]
    pub record_when_full: WhenFull,
    /// JSON lines of every session's open and close (who, from where, what, bytes each
    /// way, exit status, recording file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<std::path::PathBuf>,
}

/// `tunnel.record_when_full`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    #[default]
    DeleteOldest,
    Refuse,
}

/// What the recorder may put on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordLimits {
    pub max_bytes: u64,
    pub dir_max_bytes: u64,
    pub when_full: WhenFull,
}

impl TunnelConfig {
    pub fn record_limits(&self) -> RecordLimits {
        RecordLimits {
            max_bytes: self.record_max_bytes,
            dir_max_bytes: self.record_dir_max_bytes,
            when_full: self.record_when_full,
        }
    }
}

fn default_record_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_record_dir_max_bytes() -> u64 {
    1024 * 1024 * 1024
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
    /// Bytes queued to one client before it is disconnected as too slow.
    #[serde(default = "default_queue_bytes")]
    pub client_queue_bytes: usize,
    /// Bytes queued to all clients together; past it, clients whose queue holds more
    /// than an eighth of `client_queue_bytes` are disconnected as too slow.
    #[serde(default = "default_outgoing_bytes")]
    pub outgoing_bytes: usize,
    /// Bytes of received frames waiting for the broker task, all clients together;
    /// readers pause when it is used up.
    #[serde(default = "default_inflight_bytes")]
    pub inflight_bytes: usize,
    /// Subscriptions one client may hold.
    #[serde(default = "default_max_subscriptions")]
    pub max_subscriptions: usize,
    /// Bytes of subscriptions (each RI's length plus 64) one user may hold over all of
    /// its connections: every signal is matched against every subscription.
    #[serde(default = "default_max_subscription_bytes_per_user")]
    pub max_subscription_bytes_per_user: usize,
    /// Longest RI (in bytes) of a subscription or access rule a client may send.
    #[serde(default = "default_max_ri_len")]
    pub max_ri_len: usize,
    /// Requests one client may have waiting for an answer; more are refused.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Requests one user may have waiting over all of its connections.
    #[serde(default = "default_max_pending_per_user")]
    pub max_pending_per_user: usize,
    /// Largest request body (bytes) the broker decodes for its own methods.
    #[serde(default = "default_local_param_size")]
    pub local_param_size: usize,
    /// Failed logins on one connection before it is closed.
    #[serde(default = "default_login_attempts")]
    pub login_attempts: u32,
    /// Seconds a new connection has to complete login.
    #[serde(default = "default_login_timeout")]
    pub login_timeout: u64,
    /// Default idle watchdog in seconds (a client may ask for another value at login).
    #[serde(default = "default_idle")]
    pub idle_timeout: u64,
    /// The longest idle watchdog a client may ask for, in seconds: a client asking for
    /// none (`idleWatchDogTimeOut: 0`) or a longer one gets this.
    #[serde(default = "default_max_idle")]
    pub max_idle_timeout: u64,
    /// Bytes of frames being read (announced, not yet whole) all connections together
    /// may hold; frames beyond 64 KiB wait for their share before they are read.
    #[serde(default = "default_read_bytes")]
    pub read_bytes: usize,
    /// The same for the connections of one user together (tunnel ends: of one address).
    #[serde(default = "default_read_bytes_per_user")]
    pub read_bytes_per_user: usize,
    /// Seconds a frame beyond 64 KiB may take to arrive whole once it waits for or holds
    /// its share of `read_bytes`; then its connection is closed.
    #[serde(default = "default_frame_timeout")]
    pub frame_timeout: u64,
    /// Seconds a connection's socket may take no bytes while frames wait for it; then
    /// it is closed and its queue freed (0: never).
    #[serde(default = "default_write_stall_timeout")]
    pub write_stall_timeout: u64,
    /// Connections in all, logged in or not; more are closed at once. 0: as many as
    /// the open-files limit allows, less 256 kept for the broker's own files.
    #[serde(default)]
    pub max_connections: usize,
    /// Logged-in connections of one user (0: no limit); a user's own `max_sessions`
    /// overrides it (e.g. for a fleet of devices sharing one login).
    #[serde(default = "default_max_sessions_per_user")]
    pub max_sessions_per_user: usize,
    /// Connections that have not logged in yet, in all; more are closed at once.
    #[serde(default = "default_max_unauthenticated")]
    pub max_unauthenticated: usize,
    /// The same, per source address.
    #[serde(default = "default_max_unauthenticated_per_address")]
    pub max_unauthenticated_per_address: usize,
}

fn default_max_sessions_per_user() -> usize {
    4096
}
fn default_write_stall_timeout() -> u64 {
    60
}
fn default_max_unauthenticated() -> usize {
    512
}
fn default_max_unauthenticated_per_address() -> usize {
    128
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
fn default_queue_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_outgoing_bytes() -> usize {
    1024 * 1024 * 1024
}
fn default_inflight_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_max_subscriptions() -> usize {
    1024
}
fn default_max_subscription_bytes_per_user() -> usize {
    256 * 1024
}
fn default_max_ri_len() -> usize {
    1024
}
fn default_max_pending() -> usize {
    1024
}
fn default_max_pending_per_user() -> usize {
    8192
}
fn default_local_param_size() -> usize {
    64 * 1024
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
fn default_max_idle() -> u64 {
    3600
}
fn default_read_bytes() -> usize {
    256 * 1024 * 1024
}
fn default_read_bytes_per_user() -> usize {
    32 * 1024 * 1024
}
fn default_frame_timeout() -> u64 {
    60
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            public_address: None,
            secret_ttl: default_secret_ttl(),
            record_dir: None,
            record_input: false,
            record_max_bytes: default_record_max_bytes(),
            record_dir_max_bytes: default_record_dir_max_bytes(),
            record_when_full: WhenFull::default(),
            audit_log: None,
        }
    }
}
impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: default_max_frame(),
            client_queue: default_queue(),
            client_queue_bytes: default_queue_bytes(),
            inflight_bytes: default_inflight_bytes(),
            outgoing_bytes: default_outgoing_bytes(),
            max_subscriptions: default_max_subscriptions(),
            max_subscription_bytes_per_user: default_max_subscription_bytes_per_user(),
            max_ri_len: default_max_ri_len(),
            max_pending: default_max_pending(),
            max_pending_per_user: default_max_pending_per_user(),
            local_param_size: default_local_param_size(),
            login_attempts: default_login_attempts(),
            login_timeout: default_login_timeout(),
            idle_timeout: default_idle(),
            max_idle_timeout: default_max_idle(),
            read_bytes: default_read_bytes(),
            read_bytes_per_user: default_read_bytes_per_user(),
            frame_timeout: default_frame_timeout(),
            write_stall_timeout: default_write_stall_timeout(),
            max_connections: 0,
            max_sessions_per_user: default_max_sessions_per_user(),
            max_unauthenticated: default_max_unauthenticated(),
            max_unauthenticated_per_address: default_max_unauthenticated_per_address(),
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

/// The socket path used by the default config: `$XDG_RUNTIME_DIR/shvbroker.sock`, a
/// directory private to the user. Without one there is no default socket: a fixed path
/// in a shared directory such as /tmp could be bound first by another local user.
pub fn default_unix_socket() -> Option<String> {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")?;
    let dir = Path::new(&dir);
    use std::os::unix::fs::MetadataExt;
    let private = std::fs::metadata(dir).is_ok_and(|m| {
        m.is_dir() && m.mode() & 0o077 == 0 && m.uid() == nix::unistd::getuid().as_raw()
    });
    private.then(|| format!("{}/shvbroker.sock", dir.display()))
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
        max_sessions: None,
        max_subscription_bytes: None,
        own_request_access: None,
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
        let mut listen = vec!["tcp://127.0.0.1:3755".to_string()];
        listen.extend(default_unix_socket().map(|p| format!("unix:{p}")));
        let mut c = Config {
            name: default_name(),
            listen,
            users,
            roles,
            autosetup: Vec::new(),
            connections: Vec::new(),
            tunnel: TunnelConfig::default(),
            limits: Limits::default(),
            web_root: None,
            web_hosts: Vec::new(),
        };
        c.hash_passwords();
        c
    }
}

/// What `listen` takes, one line per transport (printed by `--print-config`).
const LISTEN_EXAMPLES: &str = "\
# listen: URLs, one per transport wanted (port 0 picks a free one):
#   tcp://0.0.0.0:3755                                  Block framing over TCP
#   ssl://0.0.0.0:3756?cert=server.pem&key=server.key   TLS (add &ca=ca.pem&verify=true
#                                                       to require client certificates)
#   tcps://0.0.0.0:3765                                 Serial framing over TCP
#   ssls://0.0.0.0:3766?cert=server.pem&key=server.key  Serial framing over TLS
#   ws://0.0.0.0:8080                                   WebSocket (shv3); with web_root
#                                                       also the web terminal's page
#   wss://0.0.0.0:8443?cert=server.pem&key=server.key   WebSocket over TLS
#   unix:/run/shvbroker.sock   unixs:/run/shvbroker-serial.sock
#   serial:/dev/ttyUSB0?baudrate=115200                 a serial line (one peer at a time)
";

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(file.clone(), e))?;
        Self::parse(&text, &file)
    }

    /// Parses YAML; serde_yaml's messages carry the line and column of the problem.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            file: file.to_string(),
            message,
        })?;
        cfg.hash_passwords();
        Ok(cfg)
    }

    /// Replaces every plain password by its SHA1 (all that login needs) and wipes the
    /// plain text.
    fn hash_passwords(&mut self) {
        for u in self.users.values_mut() {
            if let Some(p) = u.password.take() {
                u.sha1pass = Some(sha1_hex(p.as_bytes()));
                wipe(p);
            }
        }
    }

    /// The config as YAML, secrets included (for tests and tools that write configs).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("config is always serializable")
    }

    /// The config as YAML for people to read (`--print-config`): password hashes and
    /// the passwords in parent URLs are masked.
    pub fn to_yaml_redacted(&self) -> String {
        let mut c = self.clone();
        for u in c.users.values_mut() {
            if u.sha1pass.is_some() {
                u.sha1pass = Some(REDACTED.into());
            }
        }
        for conn in &mut c.connections {
            conn.url = libshv::url::redact(&conn.url);
        }
        format!(
            "# Secrets are shown as {REDACTED}: set `password: ...` (or `sha1pass: <hex SHA1>`)\n\
             # for each user, and the password in each connection URL, before using this.\n\
             {LISTEN_EXAMPLES}{}",
            c.to_yaml()
        )
    }

    fn validate(&self) -> Result<(), String> {
        for (name, u) in &self.users {
            if u.password.is_none() && u.sha1pass.is_none() {
                return Err(format!("user '{name}' has neither password nor sha1pass"));
            }
            if let Some(h) = &u.sha1pass {
                if h == REDACTED {
                    return Err(format!(
                        "users.{name}.sha1pass is {REDACTED} (as --print-config shows secrets): \
                         set `password: …` or the real `sha1pass: <40 hex digits>`"
                    ));
                }
                if h.len() != 40 || hex::decode(h).is_err() {
                    return Err(format!("user '{name}': sha1pass must be 40 hex digits"));
                }
            }
            for r in &u.roles {
                if !self.roles.contains_key(r) {
                    return Err(format!("user '{name}' has unknown role '{r}'"));
                }
            }
            if let Some(a) = &u.own_request_access {
                if parse_level(a).is_none() {
                    return Err(format!(
                        "user '{name}': unknown own_request_access level '{a}'"
                    ));
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
        for (i, a) in self.autosetup.iter().enumerate() {
            for r in &a.roles {
                if !self.roles.contains_key(r) {
                    return Err(format!("autosetup[{i}]: unknown role '{r}'"));
                }
            }
            if a.roles.is_empty() {
                return Err(format!("autosetup[{i}]: a rule needs at least one role"));
            }
            // The template with placeholders filled must be a valid mount point.
            let sample = crate::autosetup::expand(&a.mount_point, "dev", "role", "user", 1);
            check_mount_path(&sample).map_err(|e| format!("autosetup[{i}]: {e}"))?;
        }
        for (i, c) in self.connections.iter().enumerate() {
            let url = libshv::RpcUrl::parse(&c.url).map_err(|e| format!("connections: {e}"))?;
            if url.password.as_deref() == Some("***") || url.shapass.as_deref() == Some("***") {
                return Err(format!(
                    "connections[{i}].url: its password is *** (as --print-config shows \
                     secrets): put the real one back"
                ));
            }
            if c.heartbeat > DAY || c.reconnect_max > DAY {
                return Err("connections: heartbeat and reconnect_max are at most 86400".into());
            }
        }
        if self.tunnel.secret_ttl == 0 || self.tunnel.secret_ttl > 3600 {
            return Err("tunnel.secret_ttl must be 1..3600 seconds".into());
        }
        for (name, t) in [
            ("login_timeout", self.limits.login_timeout),
            ("idle_timeout", self.limits.idle_timeout),
            ("max_idle_timeout", self.limits.max_idle_timeout),
            ("write_stall_timeout", self.limits.write_stall_timeout),
            ("frame_timeout", self.limits.frame_timeout),
        ] {
            if t > DAY {
                return Err(format!("limits.{name} is at most 86400 (seconds)"));
            }
        }
        if self.limits.max_idle_timeout == 0 || self.limits.frame_timeout == 0 {
            return Err(
                "limits.max_idle_timeout and frame_timeout must be at least 1 (second)".into(),
            );
        }
        for (name, v) in [
            ("record_max_bytes", self.tunnel.record_max_bytes),
            ("record_dir_max_bytes", self.tunnel.record_dir_max_bytes),
        ] {
            // Room for a header and the marker that ends a capped recording.
            if v != 0 && v < 4096 {
                return Err(format!("tunnel.{name} is 0 (no cap) or at least 4096"));
            }
        }
        if let Some(a) = &self.tunnel.public_address {
            public_tunnel_address(a).map_err(|e| e.to_string())?;
        }
        if self.limits.max_frame_size < 1024 {
            return Err("limits.max_frame_size must be at least 1024".into());
        }
        let l = &self.limits;
        for (name, v) in [
            ("client_queue", l.client_queue),
            ("client_queue_bytes", l.client_queue_bytes),
            ("inflight_bytes", l.inflight_bytes),
            ("outgoing_bytes", l.outgoing_bytes),
            ("max_subscriptions", l.max_subscriptions),
            (
                "max_subscription_bytes_per_user",
                l.max_subscription_bytes_per_user,
            ),
            ("max_ri_len", l.max_ri_len),
            ("max_pending", l.max_pending),
            ("max_pending_per_user", l.max_pending_per_user),
            ("local_param_size", l.local_param_size),
        ] {
            if v == 0 {
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        if l.inflight_bytes > tokio::sync::Semaphore::MAX_PERMITS {
            return Err("limits.inflight_bytes is too large".into());
        }
        for (name, v) in [
            ("read_bytes", l.read_bytes),
            ("read_bytes_per_user", l.read_bytes_per_user),
        ] {
            if v > u32::MAX as usize {
                return Err(format!("limits.{name} is too large (at most 4 GiB)"));
            }
        }
        // One largest frame must fit a user's budget, and the broker's.
        if l.read_bytes_per_user < l.max_frame_size || l.read_bytes < l.read_bytes_per_user {
            return Err(format!(
                "limits.read_bytes_per_user ({}) must be at least max_frame_size ({}), and \
                 limits.read_bytes ({}) at least read_bytes_per_user",
                l.read_bytes_per_user, l.max_frame_size, l.read_bytes
            ));
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

const REDACTED: &str = "REDACTED";
/// Upper bound of the config's durations (seconds): keeps time arithmetic in range.
const DAY: u64 = 86_400;

/// Overwrites a secret's bytes before they are freed (best effort: copies made by the
/// YAML parser are not reached).
fn wipe(secret: String) {
    let mut b = secret.into_bytes();
    b.iter_mut().for_each(|x| *x = 0);
    std::hint::black_box(&b);
}

/// Parses `tunnel.public_address`: `host:port` (plain TCP) or a network transport URL
/// without user or options.
pub fn public_tunnel_address(a: &str) -> anyhow::Result<libshv::url::Transport> {
    if a.contains("://") {
        return libshv::tunnel::parse_tunnel_address(a, None)
            .map_err(|e| anyhow::anyhow!("tunnel.public_address: {e}"));
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => match p.parse::<u16>() {
            Ok(port) => Ok(libshv::url::Transport::tcp(
                h.trim_start_matches('[').trim_end_matches(']'),
                port,
            )),
            Err(_) => anyhow::bail!("tunnel.public_address '{a}' must be host:port or a URL"),
        },
        _ => anyhow::bail!("tunnel.public_address '{a}' must be host:port or a URL"),
    }
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
    fn per_user_limits_parse_and_round_trip() {
        let text = "users:\n  fleet: {password: x, roles: [], max_sessions: 0, max_subscription_bytes: 4194304}\nlimits: {max_connections: 100, max_sessions_per_user: 5}\n";
        let c = Config::parse(text, "u").unwrap();
        let fleet = &c.users["fleet"];
        assert_eq!(fleet.max_sessions, Some(0));
        assert_eq!(fleet.max_subscription_bytes, Some(4 << 20));
        assert_eq!(
            (c.limits.max_connections, c.limits.max_sessions_per_user),
            (100, 5)
        );
        assert_eq!(Config::parse(&c.to_yaml(), "u").unwrap(), c);
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
        assert!(check_mount_path(".history").is_ok());
    }

    #[test]
    fn check_mount_path_rejects_dot_segments() {
        for bad in ["test/..", "test/.", "test/../x", "./x", "test/", "/test"] {
            assert!(check_mount_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn print_config_redacts_and_plaintext_is_not_kept() {
        let c = Config::parse(
            "users:\n  u: {password: hunter2, roles: []}\nconnections:\n  - url: 'tcp://u@h?password=hunter2'\n",
            "t",
        )
        .unwrap();
        let u = &c.users["u"];
        assert_eq!(u.password, None);
        assert_eq!(u.sha1pass.as_deref(), Some(sha1_hex(b"hunter2").as_str()));
        let shown = c.to_yaml_redacted();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains(&sha1_hex(b"hunter2")), "{shown}");
        assert!(shown.contains(REDACTED), "{shown}");
        // What --print-config shows parses as it is, and refuses to load until the
        // secrets are put back, naming where.
        let e = Config::parse(&shown, "t").unwrap_err().to_string();
        assert!(e.contains("users.u.sha1pass is REDACTED"), "{e}");
        let fixed = shown.replace(&format!("sha1pass: {REDACTED}"), "password: x");
        let e = Config::parse(&fixed, "t").unwrap_err().to_string();
        assert!(e.contains("connections[0].url: its password is ***"), "{e}");
        let fixed = fixed.replace("password=***", "password=x");
        assert!(Config::parse(&fixed, "t").is_ok());
    }

    #[test]
    fn public_tunnel_address_is_host_port_or_a_network_url() {
        let t = public_tunnel_address("central.example:3755").unwrap();
        assert_eq!(t.to_string(), "tcp://central.example:3755");
        let t = public_tunnel_address("ssl://central.example:3756").unwrap();
        assert_eq!(t.to_string(), "ssl://central.example:3756");
        for bad in ["nohost", ":3755", "h:x", "unix:/x", "ssl://u@h?password=p"] {
            assert!(public_tunnel_address(bad).is_err(), "{bad}");
        }
    }
}
