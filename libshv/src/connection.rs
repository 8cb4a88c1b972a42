//! Opening a framed connection to a URL's transport: a byte stream (TCP, a Unix socket,
//! a serial line), TLS over it if the scheme says so, then the framing (Block as is;
//! Serial and WebSocket through a bridge to Block), so that everything above sees one
//! Block-framed stream whatever the transport.

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::FramedWrite;

use crate::codec::BlockCodec;
use crate::url::{Endpoint, Framing, Transport};

pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
pub type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;
pub use crate::reader::FrameReader;
pub type FrameWriter = FramedWrite<BoxWrite, BlockCodec>;

/// A byte stream of any transport.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}
pub type BoxStream = Box<dyn ByteStream>;

/// Wraps any byte stream halves into frame reader and writer.
pub fn framed(read: BoxRead, write: BoxWrite, max_frame: usize) -> (FrameReader, FrameWriter) {
    (
        FrameReader::new(read, BlockCodec::new(max_frame)),
        FramedWrite::new(write, BlockCodec::new(max_frame)),
    )
}

/// A connected byte stream before any TLS or framing, of its concrete type: plain
/// Block framing splits it into owned halves without a lock or another box (what most
/// connections are; it costs idle connections less memory).
pub enum RawStream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
    Tty(tokio_serial::SerialStream),
}

impl RawStream {
    /// The two halves, for Block framing straight on the stream.
    pub fn into_halves(self) -> (BoxRead, BoxWrite) {
        match self {
            RawStream::Tcp(s) => {
                let (r, w) = s.into_split();
                (Box::pin(r), Box::pin(w))
            }
            RawStream::Unix(s) => {
                let (r, w) = s.into_split();
                (Box::pin(r), Box::pin(w))
            }
            RawStream::Tty(s) => split(Box::new(s)),
        }
    }

    /// The stream as a trait object, for TLS or a framing bridge on top.
    pub fn boxed(self) -> BoxStream {
        match self {
            RawStream::Tcp(s) => Box::new(s),
            RawStream::Unix(s) => Box::new(s),
            RawStream::Tty(s) => Box::new(s),
        }
    }
}

pub async fn connect(
    transport: &Transport,
    max_frame: usize,
) -> std::io::Result<(FrameReader, FrameWriter)> {
    let raw = open(&transport.endpoint).await?;
    if transport.tls.is_none() && transport.framing == Framing::Block {
        let (r, w) = raw.into_halves();
        return Ok(framed(r, w, max_frame));
    }
    let mut stream = raw.boxed();
    if let Some(tls) = &transport.tls {
        let host = match &transport.endpoint {
            Endpoint::Tcp { host, .. } => host.as_str(),
            _ => return Err(std::io::Error::other("TLS needs a host name")),
        };
        let config = crate::tls::client_config(tls).map_err(std::io::Error::other)?;
        let name = crate::tls::server_name(host).map_err(std::io::Error::other)?;
        let s = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await?;
        stream = Box::new(s);
    }
    let (r, mut w) = match &transport.framing {
        Framing::Block => split(stream),
        Framing::Serial { crc } => crate::serial::bridge(stream, *crc, max_frame, None),
        Framing::WebSocket { .. } => {
            crate::ws::connect(stream, &transport.to_string(), max_frame).await?
        }
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

/// Splits a stream into boxed halves.
pub fn split(stream: BoxStream) -> (BoxRead, BoxWrite) {
    let (r, w) = tokio::io::split(stream);
    (Box::pin(r), Box::pin(w))
}

/// Opens the byte stream of an endpoint.
pub async fn open(endpoint: &Endpoint) -> std::io::Result<RawStream> {
    Ok(match endpoint {
        Endpoint::Tcp { host, port } => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            s.set_nodelay(true)?;
            RawStream::Tcp(s)
        }
        Endpoint::Unix { path } => RawStream::Unix(tokio::net::UnixStream::connect(path).await?),
        Endpoint::Tty { path, baudrate } => RawStream::Tty(open_tty(path, *baudrate)?),
    })
}

/// Opens a serial line in raw mode at `baudrate`, exclusively (a second opener would
/// interleave its bytes with ours).
pub fn open_tty(path: &str, baudrate: u32) -> std::io::Result<tokio_serial::SerialStream> {
    use tokio_serial::SerialPortBuilderExt;
    tokio_serial::new(path, baudrate)
        .open_native_async()
        .map_err(|e| std::io::Error::other(format!("{path}: {e}")))
}
