//! SHV RPC URLs: `tcp://USER@HOST:PORT?password=P`, `unix:/path`, and options.

use std::fmt;

use crate::tls::TlsOptions;

pub const DEFAULT_PORT: u16 = 3755;
/// The SHV URL standard's default port of `ssl://`.
pub const DEFAULT_SSL_PORT: u16 = 3756;
/// The SHV URL standard's default port of `tcps://`.
pub const DEFAULT_TCPS_PORT: u16 = 3765;
/// The SHV URL standard's default port of `ssls://`.
pub const DEFAULT_SSLS_PORT: u16 = 3766;
/// pySHV's default speed of `serial:`/`tty:` lines.
pub const DEFAULT_BAUDRATE: u32 = 115_200;

/// Where an SHV connection goes, as three independent choices: the byte stream
/// ([`Endpoint`]), whether TLS runs over it, and how messages are framed on it
/// ([`Framing`]). Every URL scheme is one combination (see [`Transport::scheme`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    pub endpoint: Endpoint,
    /// TLS over the stream (`ssl`, `ssls`, `wss`).
    pub tls: Option<TlsOptions>,
    pub framing: Framing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp {
        host: String,
        port: u16,
    },
    Unix {
        path: String,
    },
    /// A serial line (a character device) at `baudrate`.
    Tty {
        path: String,
        baudrate: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// A length-prefixed Block per message (`tcp`, `ssl`, `unix`).
    Block,
    /// STX/ETX with escapes (`tcps`, `ssls`, `unixs`); with a CRC-32 on serial lines.
    Serial { crc: bool },
    /// WebSocket (`ws`, `wss`): `shv3` subprotocol, else Block frames in messages.
    WebSocket { path: String },
}

impl Transport {
    /// Block framing over plain TCP (`tcp://HOST:PORT`).
    pub fn tcp(host: impl Into<String>, port: u16) -> Self {
        Transport {
            endpoint: Endpoint::Tcp {
                host: host.into(),
                port,
            },
            tls: None,
            framing: Framing::Block,
        }
    }

    /// Block framing over a Unix socket (`unix:PATH`).
    pub fn unix(path: impl Into<String>) -> Self {
        Transport {
            endpoint: Endpoint::Unix { path: path.into() },
            tls: None,
            framing: Framing::Block,
        }
    }

    /// The URL scheme of this combination.
    pub fn scheme(&self) -> &'static str {
        match (&self.endpoint, self.tls.is_some(), &self.framing) {
            (Endpoint::Tty { .. }, _, _) => "serial",
            (Endpoint::Unix { .. }, _, Framing::Serial { .. }) => "unixs",
            (Endpoint::Unix { .. }, _, _) => "unix",
            (Endpoint::Tcp { .. }, false, Framing::Block) => "tcp",
            (Endpoint::Tcp { .. }, true, Framing::Block) => "ssl",
            (Endpoint::Tcp { .. }, false, Framing::Serial { .. }) => "tcps",
            (Endpoint::Tcp { .. }, true, Framing::Serial { .. }) => "ssls",
            (Endpoint::Tcp { .. }, false, Framing::WebSocket { .. }) => "ws",
            (Endpoint::Tcp { .. }, true, Framing::WebSocket { .. }) => "wss",
        }
    }

    /// Host and port of a TCP endpoint.
    pub fn host_port(&self) -> Option<(&str, u16)> {
        match &self.endpoint {
            Endpoint::Tcp { host, port } => Some((host, *port)),
            _ => None,
        }
    }

    /// The same transport with another host and port (a listener's chosen port).
    pub fn with_host_port(&self, host: &str, port: u16) -> Self {
        let mut t = self.clone();
        if let Endpoint::Tcp { .. } = t.endpoint {
            t.endpoint = Endpoint::Tcp {
                host: host.to_string(),
                port,
            };
        }
        t
    }
}

#[derive(Clone, PartialEq, Eq, Default)]
pub struct RpcUrl {
    pub transport: Option<Transport>,
    pub user: String,
    pub password: Option<String>,
    /// SHA1 of the password, hex.
    pub shapass: Option<String>,
    pub token: Option<String>,
    pub device_id: Option<String>,
    pub mount_point: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("invalid URL '{0}': {1}")]
    Invalid(String, String),
    #[error("unsupported URL scheme '{0}' (supported: tcp, ssl, tcps, ssls, ws, wss, unix, unixs, serial, tty)")]
    Scheme(String),
}

/// Schemes whose URL names a host (`SCHEME://HOST[:PORT]`).
const NETWORK_SCHEMES: [&str; 6] = ["tcp", "ssl", "tcps", "ssls", "ws", "wss"];
/// Schemes whose URL names a local path (`SCHEME:PATH`).
const LOCAL_SCHEMES: [&str; 5] = ["unix", "unixs", "localsocket", "serial", "tty"];

/// Refuses the near misses a lenient parser would take for something else: a missing
/// scheme, `tcp:/host` (read as a path, so the client dialled localhost:3755) and a
/// network URL without a host. Each message says what was probably meant.
fn check_shape(s: &str) -> Result<(), String> {
    // The suggestion repeats the URL, so it is redacted like the rest of the message.
    let hint_tcp = |rest: &str| {
        format!(
            "no scheme; did you mean {}?",
            redact(&format!("tcp://{}", rest.trim_start_matches('/')))
        )
    };
    let Some((scheme, rest)) = s.split_once(':') else {
        return Err(hint_tcp(s));
    };
    let scheme_lc = scheme.to_ascii_lowercase();
    if NETWORK_SCHEMES.contains(&scheme_lc.as_str()) {
        let Some(authority) = rest.strip_prefix("//") else {
            return Err(format!(
                "{scheme}: must be followed by //; did you mean {}?",
                redact(&format!("{scheme}://{}", rest.trim_start_matches('/')))
            ));
        };
        // The host sits after any `user[:password]@` and before `:port`, `/`, `?`.
        let authority = authority.split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if host.is_empty() || host.starts_with(':') {
            return Err(format!(
                "no host; did you mean {scheme}://127.0.0.1{}?",
                host
            ));
        }
        return Ok(());
    }
    if LOCAL_SCHEMES.contains(&scheme_lc.as_str()) {
        return Ok(());
    }
    // `127.0.0.1:3755`, `localhost:3755`, `broker.example:3755`: a host and port.
    let looks_like_host = scheme.contains('.')
        || scheme.eq_ignore_ascii_case("localhost")
        || (!rest.is_empty()
            && rest
                .split(['/', '?'])
                .next()
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty()));
    if looks_like_host {
        return Err(hint_tcp(s));
    }
    Ok(())
}

impl RpcUrl {
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        // Error messages show the URL with its secrets masked: they end up in logs.
        let bad = |m: &str| UrlError::Invalid(redact(s), m.to_string());
        check_shape(s).map_err(|m| bad(&m))?;
        let u = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        let host = || match u.host_str() {
            None | Some("") => "localhost".to_string(),
            Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        };
        let tcp = |default_port: u16| Endpoint::Tcp {
            host: host(),
            port: u.port().unwrap_or(default_port),
        };
        let local = |what: &str| {
            let path = url_decode(u.path());
            if path.is_empty() {
                Err(bad(&format!("a {what} URL needs a path")))
            } else {
                Ok(path)
            }
        };
        let ws = || Framing::WebSocket {
            path: u.path().to_string(),
        };
        let tls = || Some(TlsOptions::default());
        let (endpoint, tls, framing) = match u.scheme() {
            "tcp" => (tcp(DEFAULT_PORT), None, Framing::Block),
            "ssl" => (tcp(DEFAULT_SSL_PORT), tls(), Framing::Block),
            "tcps" => (tcp(DEFAULT_TCPS_PORT), None, Framing::Serial { crc: false }),
            "ssls" => (
                tcp(DEFAULT_SSLS_PORT),
                tls(),
                Framing::Serial { crc: false },
            ),
            "ws" => (tcp(80), None, ws()),
            "wss" => (tcp(443), tls(), ws()),
            "unix" | "localsocket" => (
                Endpoint::Unix {
                    path: local("unix")?,
                },
                None,
                Framing::Block,
            ),
            "unixs" => (
                Endpoint::Unix {
                    path: local("unixs")?,
                },
                None,
                Framing::Serial { crc: false },
            ),
            // A serial line: the Serial framing with its CRC, as pySHV's `tty:`.
            "serial" | "tty" => (
                Endpoint::Tty {
                    path: local("serial")?,
                    baudrate: DEFAULT_BAUDRATE,
                },
                None,
                Framing::Serial { crc: true },
            ),
            other => return Err(UrlError::Scheme(other.to_string())),
        };
        let mut transport = Transport {
            endpoint,
            tls,
            framing,
        };
        let mut url = RpcUrl {
            user: url_decode(u.username()),
            ..Default::default()
        };
        if let Some(p) = u.password() {
            url.password = Some(url_decode(p));
        }
        for (k, v) in u.query_pairs() {
            let v = v.into_owned();
            if let Endpoint::Tty { baudrate, .. } = &mut transport.endpoint {
                if k == "baudrate" {
                    *baudrate = v
                        .parse()
                        .ok()
                        .filter(|b| *b > 0)
                        .ok_or_else(|| bad("baudrate must be a positive number"))?;
                    continue;
                }
            }
            if let Some(tls) = &mut transport.tls {
                let slot = match k.as_ref() {
                    "ca" => Some(&mut tls.ca),
                    "cert" => Some(&mut tls.cert),
                    "key" => Some(&mut tls.key),
                    _ => None,
                };
                if let Some(slot) = slot {
                    *slot = Some(v);
                    continue;
                }
                match k.as_ref() {
                    "verify" => {
                        tls.verify = Some(match v.as_str() {
                            "true" | "1" | "yes" => true,
                            "false" | "0" | "no" => false,
                            _ => return Err(bad("verify must be true or false")),
                        });
                        continue;
                    }
                    "crl" => return Err(bad("certificate revocation lists are not supported yet")),
                    _ => {}
                }
            }
            match k.as_ref() {
                "password" => url.password = Some(v),
                "shapass" => url.shapass = Some(v),
                "token" => url.token = Some(v),
                "user" => url.user = v,
                "devid" => url.device_id = Some(v),
                "devmount" => url.mount_point = Some(v),
                other => return Err(bad(&format!("unknown option '{other}'"))),
            }
        }
        url.transport = Some(transport);
        Ok(url)
    }

    /// The URL with every option but its secrets (`password`, `shapass`, `token`): what
    /// may go on a command line or into a log, and parses back to the same transport.
    pub fn without_secrets(&self) -> String {
        let Some(t) = &self.transport else {
            return self.to_string();
        };
        let mut s = t.to_string();
        let mut q: Vec<String> = Vec::new();
        if !self.user.is_empty() {
            match s.split_once("://") {
                Some((scheme, rest)) => {
                    s = format!("{scheme}://{}@{rest}", query_escape(&self.user))
                }
                None => q.push(format!("user={}", query_escape(&self.user))),
            }
        }
        if let Some(tls) = &t.tls {
            for (k, v) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", query_escape(v)));
                }
            }
            if let Some(v) = tls.verify {
                q.push(format!("verify={v}"));
            }
        }
        for (k, v) in [("devid", &self.device_id), ("devmount", &self.mount_point)] {
            if let Some(v) = v {
                q.push(format!("{k}={}", query_escape(v)));
            }
        }
        if !q.is_empty() {
            s.push(if s.contains('?') { '&' } else { '?' });
            s.push_str(&q.join("&"));
        }
        s
    }

    pub fn transport(&self) -> &Transport {
        self.transport
            .as_ref()
            .expect("parsed URLs always have a transport")
    }
}

/// The URL text with every secret masked: the password of `user:password@`, and the
/// values of the `password`, `shapass` and `token` options. Works on text that does not
/// parse as a URL too, since it is used for error messages about such text.
pub fn redact(s: &str) -> String {
    // Options that are never secret; every other option's value is masked (also one
    // spelled in percent-escapes, which `parse` would decode into `password`).
    const PLAIN: [&str; 8] = [
        "user", "devid", "devmount", "ca", "cert", "key", "verify", "baudrate",
    ];
    let (head, query) = match s.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (s, None),
    };
    let mut out = head.to_string();
    // user:password@host — the password may hold '/', '?' or '@': mask up to the
    // last '@' (more than the password at worst, never less).
    // The user info starts after `scheme://`; in a malformed URL (`tcp:/a:pw@h`,
    // `a:pw@h`) after `scheme:` and its slashes, or at the start when that leaves no
    // colon before the '@' (the "scheme" was the user).
    let auth = match s.find("://") {
        Some(scheme_end) => Some(scheme_end + 3),
        None => s.find(':').map(|c| {
            let after = c + 1 + s[c + 1..].bytes().take_while(|b| *b == b'/').count();
            match s.rfind('@') {
                Some(at) if at > after && !s[after..at].contains(':') => 0,
                _ => after,
            }
        }),
    };
    if let Some(auth) = auth {
        if let Some(at) = s.rfind('@').filter(|at| *at > auth) {
            if let Some(colon) = s[auth..at].find(':') {
                let mut masked = s[..auth + colon + 1].to_string();
                masked.push_str("***");
                masked.push_str(&s[at..]);
                return redact_query(&masked[..], &PLAIN);
            }
        }
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(&mask_query(q, &PLAIN));
    }
    out
}

fn redact_query(s: &str, plain: &[&str]) -> String {
    match s.split_once('?') {
        Some((h, q)) => format!("{h}?{}", mask_query(q, plain)),
        None => s.to_string(),
    }
}

fn mask_query(q: &str, plain: &[&str]) -> String {
    q.split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if !plain.contains(&k) => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A URL query value, percent-encoded as `parse` decodes it (`&`, `=`, `%`, spaces…).
pub fn query_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn url_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme();
        match &self.endpoint {
            Endpoint::Tcp { host, port } => {
                // `ws://h:p/` and `ws://h:p` are the same; the short form reads better.
                let path = match &self.framing {
                    Framing::WebSocket { path } if path != "/" => path.as_str(),
                    _ => "",
                };
                if host.contains(':') {
                    write!(f, "{scheme}://[{host}]:{port}{path}")
                } else {
                    write!(f, "{scheme}://{host}:{port}{path}")
                }
            }
            Endpoint::Unix { path } => write!(f, "{scheme}:{path}"),
            Endpoint::Tty { path, baudrate } if *baudrate == DEFAULT_BAUDRATE => {
                write!(f, "{scheme}:{path}")
            }
            Endpoint::Tty { path, baudrate } => write!(f, "{scheme}:{path}?baudrate={baudrate}"),
        }
    }
}

/// Never prints secrets: shows transport and user only.
impl fmt::Debug for RpcUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl fmt::Display for RpcUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.transport {
            Some(t) if !self.user.is_empty() => {
                let s = t.to_string();
                let (scheme, rest) = s.split_once("://").unwrap_or(("", &s));
                if scheme.is_empty() {
                    write!(f, "{s} (user {})", self.user)
                } else {
                    write!(f, "{scheme}://{}@{rest}", self.user)
                }
            }
            Some(t) => write!(f, "{t}"),
            None => write!(f, "<no transport>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_miss_urls_are_refused_with_a_hint() {
        for (url, hint) in [
            (
                "tcp:/127.0.0.1:41755",
                "did you mean tcp://127.0.0.1:41755?",
            ),
            ("tcp:127.0.0.1:41755", "did you mean tcp://127.0.0.1:41755?"),
            ("127.0.0.1:3755", "did you mean tcp://127.0.0.1:3755?"),
            ("localhost:3755", "did you mean tcp://localhost:3755?"),
            ("127.0.0.1", "did you mean tcp://127.0.0.1?"),
            ("tcp://", "no host"),
            ("tcp://admin@", "no host"),
            ("tcp://admin@:3755", "no host"),
            ("ssl:/h:1", "did you mean ssl://h:1?"),
        ] {
            let e = RpcUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(hint), "{url}: {e}");
        }
        for good in [
            "tcp://127.0.0.1:1",
            "TCP://h",
            "unix:/run/x.sock",
            "unix:rel.sock",
            "serial:/dev/ttyS0",
            "ws://h/shv",
            "tcp://[::1]:1",
        ] {
            assert!(RpcUrl::parse(good).is_ok(), "{good}");
        }
        assert!(matches!(RpcUrl::parse("ftp://h"), Err(UrlError::Scheme(_))));
    }

    #[test]
    fn url_errors_never_show_the_password() {
        for bad in [
            "tcp://admin@127.0.0.1:3755?password=hunter2&bogus=1",
            "tcp://admin:hunter2@127.0.0.1:99999",
            "tcp://admin@h?shapass=hunter2&token=hunter2&x",
            "ftp://admin:hunter2@h",
            "tcp://admin@h?pass%77ord=hunter2&bogus=1",
            "tcp://a:hun?ter2@h:99999",
            "tcp:/admin:hunter2@h:1",
            "tcp:/admin@h:1?password=hunter2",
            "admin:hunter2@h",
        ] {
            let e = RpcUrl::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert_eq!(
            redact("tcp://a:pw@h:1?password=x&devid=d"),
            "tcp://a:***@h:1?password=***&devid=d"
        );
        assert_eq!(redact("tcp://a:p/w?x@h"), "tcp://a:***@h");
    }

    #[test]
    fn tcp_with_options() {
        let u =
            RpcUrl::parse("tcp://admin@127.0.0.1:4000?password=se%20cret&devid=d1&devmount=test/a")
                .unwrap();
        assert_eq!(u.transport(), &Transport::tcp("127.0.0.1", 4000));
        assert_eq!(u.user, "admin");
        assert_eq!(u.password.as_deref(), Some("se cret"));
        assert_eq!(u.device_id.as_deref(), Some("d1"));
        assert_eq!(u.mount_point.as_deref(), Some("test/a"));
        assert!(!format!("{u:?}").contains("cret"));
    }

    #[test]
    fn defaults_and_unix() {
        let u = RpcUrl::parse("tcp://user@localhost").unwrap();
        assert_eq!(u.transport(), &Transport::tcp("localhost", 3755));
        let u = RpcUrl::parse("unix:/run/shv.sock?user=x&shapass=abc").unwrap();
        assert_eq!(u.transport(), &Transport::unix("/run/shv.sock"));
        assert_eq!(u.user, "x");
        assert_eq!(u.shapass.as_deref(), Some("abc"));
        let u = RpcUrl::parse("tcp://[::1]:5000").unwrap();
        assert_eq!(u.transport(), &Transport::tcp("::1", 5000));
    }

    #[test]
    fn errors() {
        assert!(matches!(
            RpcUrl::parse("http://x"),
            Err(UrlError::Scheme(_))
        ));
        assert!(RpcUrl::parse("tcp://x?bogus=1").is_err());
        assert!(RpcUrl::parse("nonsense").is_err());
    }

    #[test]
    fn every_scheme_round_trips_with_its_default_port() {
        for (url, shown) in [
            ("tcp://h", "tcp://h:3755"),
            ("ssl://h", "ssl://h:3756"),
            ("tcps://h", "tcps://h:3765"),
            ("ssls://h", "ssls://h:3766"),
            ("ws://h/shv", "ws://h:80/shv"),
            ("wss://h:8443/x", "wss://h:8443/x"),
            ("unix:/run/s", "unix:/run/s"),
            ("unixs:/run/s", "unixs:/run/s"),
            ("tty:/dev/ttyUSB0", "serial:/dev/ttyUSB0"),
            (
                "serial:/dev/ttyS1?baudrate=9600",
                "serial:/dev/ttyS1?baudrate=9600",
            ),
        ] {
            let t = RpcUrl::parse(url).unwrap().transport().clone();
            assert_eq!(t.to_string(), shown, "{url}");
            assert_eq!(RpcUrl::parse(shown).unwrap().transport(), &t, "{shown}");
        }
        let t = RpcUrl::parse("ssls://h?ca=c.pem&verify=false").unwrap();
        let tls = t.transport().tls.clone().unwrap();
        assert_eq!(
            (tls.ca.as_deref(), tls.verify),
            (Some("c.pem"), Some(false))
        );
        assert_eq!(
            RpcUrl::parse("tty:/dev/x").unwrap().transport().framing,
            Framing::Serial { crc: true }
        );
        assert!(RpcUrl::parse("serial:/dev/x?baudrate=fast").is_err());
        assert!(RpcUrl::parse("tcp://h?baudrate=9600").is_err());
        assert!(RpcUrl::parse("tcp://h?ca=x").is_err());
    }

    #[test]
    fn without_secrets_keeps_every_other_option() {
        for url in [
            "ssl://admin@h:1?password=pw&ca=/etc/my%20ca.pem&verify=false&devmount=test/a",
            "unix:/run/s?user=u&password=pw&devid=d",
            "serial:/dev/ttyS0?baudrate=9600&user=u&token=pw",
            "wss://u@h:443/shv?shapass=pw&cert=c.pem&key=k.pem",
        ] {
            let u = RpcUrl::parse(url).unwrap();
            let shown = u.without_secrets();
            assert!(!shown.contains("pw"), "{shown}");
            let back = RpcUrl::parse(&shown).unwrap();
            assert_eq!(back.transport(), u.transport(), "{shown}");
            assert_eq!(
                (back.user, back.device_id, back.mount_point),
                (u.user, u.device_id, u.mount_point),
                "{shown}"
            );
        }
    }
}
