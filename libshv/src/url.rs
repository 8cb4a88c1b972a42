//! SHV RPC URLs: `tcp://USER@HOST:PORT?password=P`, `unix:/path`, and options.

use std::fmt;

use crate::tls::TlsOptions;

pub const DEFAULT_PORT: u16 = 3755;
/// The SHV URL standard's default port of `ssl://`.
pub const DEFAULT_SSL_PORT: u16 = 3756;
/// The SHV URL standard's default port of `tcps://`.
pub const DEFAULT_TCPS_PORT: u16 = 3765;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        host: String,
        port: u16,
    },
    /// Block framing over TLS.
    Ssl {
        host: String,
        port: u16,
        tls: TlsOptions,
    },
    Unix {
        path: String,
    },
    /// Serial framing (no CRC, as pySHV) over TCP.
    Tcps {
        host: String,
        port: u16,
    },
    /// Serial framing over a Unix socket.
    Unixs {
        path: String,
    },
    /// WebSocket (`shv3` subprotocol, else Block frames in messages).
    Ws {
        host: String,
        port: u16,
        path: String,
    },
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
    #[error("unsupported URL scheme '{0}' (supported: tcp, ssl, tcps, ws, unix, unixs)")]
    Scheme(String),
}

impl RpcUrl {
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        // Error messages show the URL with its secrets masked: they end up in logs.
        let bad = |m: &str| UrlError::Invalid(redact(s), m.to_string());
        let u = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        let host = || match u.host_str() {
            None | Some("") => "localhost".to_string(),
            Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        };
        let mut transport = match u.scheme() {
            "tcp" => Transport::Tcp {
                host: host(),
                port: u.port().unwrap_or(DEFAULT_PORT),
            },
            "ws" => Transport::Ws {
                host: host(),
                port: u.port().unwrap_or(80),
                path: u.path().to_string(),
            },
            "tcps" => Transport::Tcps {
                host: host(),
                port: u.port().unwrap_or(DEFAULT_TCPS_PORT),
            },
            "unixs" => {
                let path = url_decode(u.path());
                if path.is_empty() {
                    return Err(bad("a unixs URL needs a socket path"));
                }
                Transport::Unixs { path }
            }
            "ssl" => Transport::Ssl {
                host: host(),
                port: u.port().unwrap_or(DEFAULT_SSL_PORT),
                tls: TlsOptions::default(),
            },
            "unix" | "localsocket" => {
                let path = url_decode(u.path());
                if path.is_empty() {
                    return Err(bad("a unix URL needs a socket path"));
                }
                Transport::Unix { path }
            }
            other => return Err(UrlError::Scheme(other.to_string())),
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
            if let Transport::Ssl { tls, .. } = &mut transport {
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

/// The URL text with every secret masked: the password of `user:password@`, and the
/// values of the `password`, `shapass` and `token` options. Works on text that does not
/// parse as a URL too, since it is used for error messages about such text.
pub fn redact(s: &str) -> String {
    // Options that are never secret; every other option's value is masked (also one
    // spelled in percent-escapes, which `parse` would decode into `password`).
    const PLAIN: [&str; 7] = ["user", "devid", "devmount", "ca", "cert", "key", "verify"];
    let (head, query) = match s.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (s, None),
    };
    let mut out = head.to_string();
    // user:password@host — the password may hold '/', '?' or '@': mask up to the
    // last '@' (more than the password at worst, never less).
    if let Some(scheme_end) = s.find("://") {
        let auth = scheme_end + 3;
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

fn url_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            Transport::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Transport::Ssl { host, port, .. } if host.contains(':') => {
                write!(f, "ssl://[{host}]:{port}")
            }
            Transport::Ssl { host, port, .. } => write!(f, "ssl://{host}:{port}"),
            Transport::Unix { path } => write!(f, "unix:{path}"),
            Transport::Tcps { host, port } if host.contains(':') => {
                write!(f, "tcps://[{host}]:{port}")
            }
            Transport::Tcps { host, port } => write!(f, "tcps://{host}:{port}"),
            Transport::Unixs { path } => write!(f, "unixs:{path}"),
            Transport::Ws { host, port, path } if host.contains(':') => {
                write!(f, "ws://[{host}]:{port}{path}")
            }
            Transport::Ws { host, port, path } => write!(f, "ws://{host}:{port}{path}"),
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
    fn url_errors_never_show_the_password() {
        for bad in [
            "tcp://admin@127.0.0.1:3755?password=hunter2&bogus=1",
            "tcp://admin:hunter2@127.0.0.1:99999",
            "tcp://admin@h?shapass=hunter2&token=hunter2&x",
            "ftp://admin:hunter2@h",
            "tcp://admin@h?pass%77ord=hunter2&bogus=1",
            "tcp://a:hun?ter2@h:99999",
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
        assert_eq!(
            u.transport(),
            &Transport::Tcp {
                host: "127.0.0.1".into(),
                port: 4000
            }
        );
        assert_eq!(u.user, "admin");
        assert_eq!(u.password.as_deref(), Some("se cret"));
        assert_eq!(u.device_id.as_deref(), Some("d1"));
        assert_eq!(u.mount_point.as_deref(), Some("test/a"));
        assert!(!format!("{u:?}").contains("cret"));
    }

    #[test]
    fn defaults_and_unix() {
        let u = RpcUrl::parse("tcp://user@")
            .unwrap_or_else(|_| RpcUrl::parse("tcp://user@localhost").unwrap());
        assert_eq!(
            u.transport(),
            &Transport::Tcp {
                host: "localhost".into(),
                port: 3755
            }
        );
        let u = RpcUrl::parse("unix:/run/shv.sock?user=x&shapass=abc").unwrap();
        assert_eq!(
            u.transport(),
            &Transport::Unix {
                path: "/run/shv.sock".into()
            }
        );
        assert_eq!(u.user, "x");
        assert_eq!(u.shapass.as_deref(), Some("abc"));
        let u = RpcUrl::parse("tcp://[::1]:5000").unwrap();
        assert_eq!(
            u.transport(),
            &Transport::Tcp {
                host: "::1".into(),
                port: 5000
            }
        );
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
}
