//! A framed connection from a URL's transport, the layers composed in one place: the
//! byte stream (TCP, a Unix socket, a serial line), TLS over it if the scheme says so,
//! then the framing (Block as is; Serial and WebSocket through a bridge to Block), so
//! that everything above sees one Block-framed stream whatever the transport. [`dial`]
//! is the client's side, [`accept`] a listener's, with [`AcceptHooks`] for what the
//! listener does between the layers. The top layer: the others never import it.

use std::future::Future;

use tokio_util::codec::FramedWrite;

use super::serial;
use super::stream::{self, BoxRead, BoxStream, BoxWrite, RawStream};
#[cfg(feature = "tls")]
use super::tls;
#[cfg(feature = "ws")]
use super::ws;
use crate::codec::BlockCodec;
use crate::reader::Meter;
use crate::url::{Endpoint, Framing, Transport};

pub use crate::reader::FrameReader;
pub type FrameWriter = FramedWrite<BoxWrite, BlockCodec>;

/// Wraps any byte stream halves into frame reader and writer.
pub fn framed(read: BoxRead, write: BoxWrite, max_frame: usize) -> (FrameReader, FrameWriter) {
    (
        FrameReader::new(read, BlockCodec::new(max_frame)),
        FramedWrite::new(write, BlockCodec::new(max_frame)),
    )
}

/// Connects to `transport`: its byte stream, TLS, framing, then Block frames.
pub async fn dial(
    transport: &Transport,
    max_frame: usize,
) -> std::io::Result<(FrameReader, FrameWriter)> {
    let raw = stream::open(&transport.endpoint).await?;
    if transport.tls.is_none() && transport.framing == Framing::Block {
        let (r, w) = raw.into_halves();
        return Ok(framed(r, w, max_frame));
    }
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut stream = raw.boxed();
    if let Some(o) = &transport.tls {
        let host = match &transport.endpoint {
            Endpoint::Tcp { host, .. } => host.as_str(),
            _ => return Err(std::io::Error::other("TLS needs a host name")),
        };
        #[cfg(feature = "tls")]
        {
            stream = tls::connect(stream, host, o).await?;
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (host, o);
            return Err(super::not_built("TLS", "tls"));
        }
    }
    let (r, mut w) = match &transport.framing {
        Framing::Block => stream::split(stream),
        Framing::Serial { crc } => serial::bridge(stream, *crc, max_frame, None),
        #[cfg(feature = "ws")]
        Framing::WebSocket { .. } => ws::connect(stream, &transport.to_string(), max_frame).await?,
        #[cfg(not(feature = "ws"))]
        Framing::WebSocket { .. } => return Err(super::not_built("WebSocket", "ws")),
    };
    if let Endpoint::Tty { .. } = transport.endpoint {
        // A serial line outlives its users: the peer may still hold the session of
        // whoever used the line before. ResetSession makes it start afresh (pySHV does
        // the same when it opens a line).
        use tokio::io::AsyncWriteExt;
        w.write_all(&crate::codec::encode_reset_session()).await?;
    }
    Ok(framed(r, w, max_frame))
}

/// How a listener's connections are set up before they speak SHV.
pub struct Acceptor {
    /// TLS over the stream (from `tls::server_config`).
    #[cfg(feature = "tls")]
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub framing: Framing,
    /// The largest message a framing bridge gathers.
    pub max_frame: usize,
}

/// What a listener does between the layers of [`accept`]; each default does nothing.
pub trait AcceptHooks: Send + Sync {
    /// The stream as accepted, before TLS: what guards the socket itself (TLS and the
    /// bridges write more than the connection above asks for).
    fn accepted(&mut self, stream: BoxStream) -> BoxStream {
        stream
    }

    /// The stream a framing bridge (Serial, WebSocket) is about to take: a bridge
    /// gathers whole messages before the connection above could refuse them, and its
    /// tasks may hold the stream for a while after that connection ended.
    fn before_bridge(&mut self, stream: BoxStream) -> BoxStream {
        stream
    }

    /// A WebSocket listener's stream before the upgrade: None when the hook answered
    /// the request itself (a plain HTTP GET).
    fn before_upgrade(
        &mut self,
        stream: BoxStream,
    ) -> impl Future<Output = std::io::Result<Option<BoxStream>>> + Send {
        async { Ok(Some(stream)) }
    }

    /// The origin policy of a WebSocket upgrade: its `Origin` and `Host` headers
    /// admitted, or refused with a reason (answered with 403).
    fn admit(&self, _origin: Option<&str>, _host: Option<&str>) -> Result<(), String> {
        Ok(())
    }
}

/// An accepted connection, Block-framed.
pub struct Accepted {
    pub read: BoxRead,
    pub write: BoxWrite,
    /// For a bridge: the meter of its reads, settled as each message is handed on, so
    /// that a message being gathered can be charged like a frame being read.
    pub meter: Option<Meter>,
}

/// Sets up an accepted stream: `hooks.accepted`, TLS, then the framing. None when the
/// connection was an HTTP request that `hooks.before_upgrade` answered.
pub async fn accept<H: AcceptHooks>(
    raw: RawStream,
    how: &Acceptor,
    hooks: &mut H,
) -> std::io::Result<Option<Accepted>> {
    let max = how.max_frame;
    let mut stream = hooks.accepted(raw.boxed());
    #[cfg(feature = "tls")]
    if let Some(acceptor) = &how.tls {
        stream = tls::accept(acceptor, stream).await?;
    }
    if !matches!(how.framing, Framing::Block) {
        stream = hooks.before_bridge(stream);
    }
    let meter = Meter::default();
    Ok(Some(match &how.framing {
        Framing::Block => {
            let (read, write) = stream::split(stream);
            Accepted {
                read,
                write,
                meter: None,
            }
        }
        Framing::Serial { crc } => {
            let stream = meter.wrap(stream);
            let (read, write) = serial::bridge(stream, *crc, max, Some(meter.clone()));
            Accepted {
                read,
                write,
                meter: Some(meter),
            }
        }
        #[cfg(not(feature = "ws"))]
        Framing::WebSocket { .. } => return Err(super::not_built("WebSocket", "ws")),
        #[cfg(feature = "ws")]
        Framing::WebSocket { .. } => {
            let stream: BoxStream = Box::new(meter.wrap(stream));
            let Some(stream) = hooks.before_upgrade(stream).await? else {
                return Ok(None);
            };
            let hooks = &*hooks;
            let admit = |origin: Option<&str>, host: Option<&str>| hooks.admit(origin, host);
            let (read, write) = ws::accept(stream, max, &admit, Some(meter.clone())).await?;
            Accepted {
                read,
                write,
                meter: Some(meter),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    /// A transport this build left out is refused when dialled, naming the feature
    /// (CI runs this with `--no-default-features`).
    #[cfg(not(all(feature = "tls", feature = "ws", feature = "serial")))]
    #[tokio::test]
    async fn a_left_out_transport_names_its_feature() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let mut cases = Vec::new();
        if cfg!(not(feature = "tls")) {
            cases.push((format!("ssl://127.0.0.1:{port}"), "`tls`"));
        }
        if cfg!(not(feature = "ws")) {
            cases.push((format!("ws://127.0.0.1:{port}"), "`ws`"));
        }
        if cfg!(not(feature = "serial")) {
            cases.push(("serial:/dev/null".to_string(), "`serial`"));
        }
        for (url, feature) in cases {
            let u = crate::RpcUrl::parse(&url).unwrap();
            let e = match super::dial(u.transport(), 1 << 20).await {
                Ok(_) => panic!("{url} was dialled"),
                Err(e) => e,
            };
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{url}: {e}");
            assert!(e.to_string().contains(feature), "{url}: {e}");
        }
    }
}
