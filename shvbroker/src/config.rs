//! Broker configuration as data: the YAML file (serde, one `Default` per section), or the
//! built-in default that is safe on a laptop. The checks and what is compiled from it
//! are the second layer, [`crate::settings::Settings`].

mod autosetup;
mod connections;
mod limits;
mod mount_point;
mod seconds;
mod tunnel;
mod users;

use std::collections::BTreeMap;
use std::path::Path;

use libshv::login::sha1_hex;
use serde::{Deserialize, Serialize};

pub use autosetup::{expand, Autosetup};
pub use connections::Connection;
pub use limits::Limits;
pub use mount_point::check_mount_path;
pub use tunnel::{public_tunnel_address, RecordLimits, TunnelConfig, WhenFull};
use users::{rule, user};
pub use users::{AccessRule, Role, User};

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

fn default_name() -> String {
    "shvbroker".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
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
                tunnel_idle_timeout: None,
                tunnel_max_duration: None,
            },
        );
        roles.insert(
            "device".into(),
            Role {
                access: vec![rule("**:*", "rd")],
                mount_points: vec!["test/**".into()],
                tunnel_idle_timeout: None,
                tunnel_max_duration: None,
            },
        );
        roles.insert(
            "viewer".into(),
            Role {
                access: vec![rule("**:*", "rd")],
                mount_points: vec![],
                tunnel_idle_timeout: None,
                tunnel_max_duration: None,
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

    /// Parses YAML and hashes the passwords; serde_yaml's messages carry the line and
    /// column of the problem. Whether the values make sense is
    /// [`crate::settings::Settings::new`]'s to say.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string(),
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

    /// hex(SHA1(password)) of a user, if the user exists.
    pub fn user_sha1(&self, name: &str) -> Option<String> {
        let u = self.users.get(name)?;
        u.sha1pass
            .clone()
            .or_else(|| u.password.as_ref().map(|p| sha1_hex(p.as_bytes())))
    }
}

/// What `--print-config` shows in place of a secret.
pub const REDACTED: &str = "REDACTED";

/// Overwrites a secret's bytes before they are freed (best effort: copies made by the
/// YAML parser are not reached).
fn wipe(secret: String) {
    let mut b = secret.into_bytes();
    b.iter_mut().for_each(|x| *x = 0);
    std::hint::black_box(&b);
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
        // What --print-config shows parses as it is, and is refused until the secrets
        // are put back, naming where.
        let settle = |text: &str| {
            crate::settings::Settings::new(&Config::parse(text, "t").unwrap()).map(|_| ())
        };
        let e = settle(&shown).unwrap_err().to_string();
        assert!(e.contains("users.u.sha1pass: REDACTED"), "{e}");
        let fixed = shown.replace(&format!("sha1pass: {REDACTED}"), "password: x");
        let e = settle(&fixed).unwrap_err().to_string();
        assert!(e.contains("connections[0].url: its password is ***"), "{e}");
        let fixed = fixed.replace("password=***", "password=x");
        assert_eq!(settle(&fixed), Ok(()));
    }
}
