//! Where a connection goes: the byte stream, TLS over it or not, and the framing; how
//! each combination is written as a URL scheme.

use std::fmt;

use super::DEFAULT_BAUDRATE;

/// The TLS options of an `ssl://` URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA(s) to trust (clients: instead of the system's; a broker: for
    /// client certificates).
    pub ca: Option<String>,
    /// PEM file of our certificate chain (a broker's; a client's for `verify=true`
    /// brokers).
    pub cert: Option<String>,
    /// PEM file of the key of `cert`.
    pub key: Option<String>,
    /// Check the peer's certificate (None: the side's default).
    pub verify: Option<bool>,
}

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
