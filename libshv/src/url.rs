//! SHV RPC URLs: `tcp://USER@HOST:PORT?password=P`, `unix:/path`, and options.

mod redact;
mod shape;
mod transport;

pub use redact::{query_escape, redact};
use shape::check_shape;
pub use transport::{Endpoint, Framing, TlsOptions, Transport};

use std::fmt;

pub const DEFAULT_PORT: u16 = 3755;
/// The SHV URL standard's default port of `ssl://`.
pub const DEFAULT_SSL_PORT: u16 = 3756;
/// The SHV URL standard's default port of `tcps://`.
pub const DEFAULT_TCPS_PORT: u16 = 3765;
/// The SHV URL standard's default port of `ssls://`.
pub const DEFAULT_SSLS_PORT: u16 = 3766;
/// pySHV's default speed of `serial:`/`tty:` lines.
pub const DEFAULT_BAUDRATE: u32 = 115_200;

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

    pub fn transport(&self) -> &Transport {
        self.transport
            .as_ref()
            .expect("parsed URLs always have a transport")
    }
}

fn url_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
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
}
