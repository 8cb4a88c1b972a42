//! hello / login: the parameters a client sends and the password hashing both sides use.

use sha1::{Digest, Sha1};
use shvproto::{Map, RpcValue, Value};

/// hex(SHA1(data))
pub fn sha1_hex(data: &[u8]) -> String {
    hex::encode(Sha1::digest(data))
}

/// The SHA1 login response: hex(SHA1(nonce + hex(SHA1(plain)))), given hex(SHA1(plain)).
pub fn sha1_login(nonce: &str, sha1_of_password: &str) -> String {
    let mut h = Sha1::new();
    h.update(nonce.as_bytes());
    h.update(sha1_of_password.as_bytes());
    hex::encode(h.finalize())
}

#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    None,
    Plain(String),
    /// hex(SHA1(password))
    Sha1(String),
    Token(String),
    TunnelSecret(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::Plain(_) => "Plain(***)",
            Credentials::Sha1(_) => "Sha1(***)",
            Credentials::Token(_) => "Token(***)",
            Credentials::TunnelSecret(_) => "TunnelSecret(***)",
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct LoginParams {
    pub user: String,
    pub credentials: Credentials,
    /// Use SHA1 (the password never crosses the wire) rather than PLAIN.
    pub use_sha1: bool,
    pub device_id: Option<String>,
    pub mount_point: Option<String>,
    /// Seconds; 0 disables the broker's idle watchdog for this client.
    pub idle_timeout: Option<u64>,
    pub user_agent: Option<String>,
    /// Announce this connection as a child broker (`options.broker: {}`): a C++ parent
    /// forwards its clients' subscriptions only to connections that say so.
    pub broker: bool,
}

impl LoginParams {
    /// Builds the `login` method parameter for the broker's `nonce`.
    pub fn to_value(&self, nonce: &str) -> RpcValue {
        let mut login = Map::new();
        let mut options = Map::new();
        match &self.credentials {
            Credentials::TunnelSecret(secret) => {
                // A tunnel login carries no user; the secret is the only credential.
                login.insert("user".into(), "".into());
                login.insert("type".into(), "PLAIN".into());
                login.insert("password".into(), "".into());
                let mut t = Map::new();
                t.insert("secret".into(), secret.as_str().into());
                options.insert("tunnel".into(), t.into());
            }
            Credentials::Token(t) => {
                login.insert("type".into(), "TOKEN".into());
                login.insert("token".into(), t.as_str().into());
            }
            Credentials::Plain(p) if !self.use_sha1 => {
                login.insert("user".into(), self.user.as_str().into());
                login.insert("type".into(), "PLAIN".into());
                login.insert("password".into(), p.as_str().into());
            }
            Credentials::Plain(p) => {
                login.insert("user".into(), self.user.as_str().into());
                login.insert("type".into(), "SHA1".into());
                let pass = sha1_login(nonce, &sha1_hex(p.as_bytes()));
                login.insert("password".into(), pass.into());
            }
            Credentials::Sha1(h) => {
                login.insert("user".into(), self.user.as_str().into());
                login.insert("type".into(), "SHA1".into());
                login.insert("password".into(), sha1_login(nonce, h).into());
            }
            Credentials::None => {
                login.insert("user".into(), self.user.as_str().into());
                login.insert("type".into(), "PLAIN".into());
                login.insert("password".into(), "".into());
            }
        }
        if self.device_id.is_some() || self.mount_point.is_some() {
            let mut dev = Map::new();
            if let Some(id) = &self.device_id {
                dev.insert("deviceId".into(), id.as_str().into());
            }
            if let Some(mp) = &self.mount_point {
                dev.insert("mountPoint".into(), mp.as_str().into());
            }
            options.insert("device".into(), dev.into());
        }
        if let Some(t) = self.idle_timeout {
            options.insert("idleWatchDogTimeOut".into(), RpcValue::from(t as i64));
        }
        if let Some(ua) = &self.user_agent {
            options.insert("userAgent".into(), ua.as_str().into());
        }
        if self.broker {
            options.insert("broker".into(), Map::new().into());
        }
        let mut param = Map::new();
        param.insert("login".into(), login.into());
        param.insert("options".into(), options.into());
        param.into()
    }
}

/// A `login` request's parameter as a broker reads it (untrusted input from a
/// connection that has not logged in yet). No `Debug`: it holds the password.
pub struct LoginRequest {
    pub user: String,
    pub password: String,
    /// `PLAIN`, `SHA1` or `TOKEN` (upper-cased; `PLAIN` when absent).
    pub kind: String,
    pub device_id: Option<String>,
    pub mount_point: Option<String>,
    /// Seconds, at most [`MAX_IDLE_TIMEOUT`]; 0 = no watchdog.
    pub idle_timeout: Option<u64>,
    pub user_agent: Option<String>,
    /// Set for a tunnel end logging in with its one-time secret.
    pub tunnel_secret: Option<String>,
}

/// Longest idle watchdog a client may ask for (a day); more is taken as this.
pub const MAX_IDLE_TIMEOUT: u64 = 24 * 3600;

fn str_of(v: Option<&RpcValue>) -> Option<String> {
    match &v?.value {
        Value::String(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Parses the `login` method's parameter: the inverse of [`LoginParams::to_value`].
pub fn parse_login(param: &RpcValue) -> Result<LoginRequest, &'static str> {
    let Value::Map(m) = &param.value else {
        return Err("parameter must be a Map");
    };
    let login = m.get("login").ok_or("missing 'login'")?;
    if !login.is_map() {
        return Err("'login' must be a Map");
    }
    let empty = RpcValue::from(shvproto::Map::new());
    let options = m.get("options").unwrap_or(&empty);
    let device = options.get("device");
    let idle = options
        .get("idleWatchDogTimeOut")
        .and_then(crate::value::as_u64)
        .map(|s| s.min(MAX_IDLE_TIMEOUT));
    let tunnel_secret = options.get("tunnel").and_then(|t| str_of(t.get("secret")));
    Ok(LoginRequest {
        user: str_of(login.get("user")).unwrap_or_default(),
        password: str_of(login.get("password")).unwrap_or_default(),
        kind: str_of(login.get("type"))
            .unwrap_or_else(|| "PLAIN".into())
            .to_ascii_uppercase(),
        device_id: device.and_then(|d| str_of(d.get("deviceId"))),
        mount_point: device.and_then(|d| str_of(d.get("mountPoint"))),
        idle_timeout: idle,
        user_agent: str_of(options.get("userAgent")),
        tunnel_secret,
    })
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_login_matches_reference() {
        // hex(sha1("admin")) is a well-known vector.
        assert_eq!(
            sha1_hex(b"admin"),
            "d033e22ae348aeb5660fc2140aec35850c4da997"
        );
        let expected = sha1_hex(b"abcd1234d033e22ae348aeb5660fc2140aec35850c4da997");
        assert_eq!(
            sha1_login("abcd1234", "d033e22ae348aeb5660fc2140aec35850c4da997"),
            expected
        );
    }

    #[test]
    fn secrets_not_in_debug() {
        let p = LoginParams {
            credentials: Credentials::Plain("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
