//! The byte stream every transport layer works on: TCP, a Unix socket or a serial line
//! when opened, then whatever a layer above makes of it (TLS over it, a framing bridge
//! on top), all as one trait object. The lowest layer: it imports no other transport
//! module.

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::url::Endpoint;

pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
pub type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

/// A byte stream of any transport.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}
pub type BoxStream = Box<dyn ByteStream>;

/// A connected byte stream before any TLS or framing, of its concrete type: plain
/// Block framing splits it into owned halves without a lock or another box (what most
/// connections are; it costs idle connections less memory).
pub enum RawStream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
    #[cfg(feature = "serial")]
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
            #[cfg(feature = "serial")]
            RawStream::Tty(s) => split(Box::new(s)),
        }
    }

    /// The stream as a trait object, for TLS or a framing bridge on top.
    pub fn boxed(self) -> BoxStream {
        match self {
            RawStream::Tcp(s) => Box::new(s),
            RawStream::Unix(s) => Box::new(s),
            #[cfg(feature = "serial")]
            RawStream::Tty(s) => Box::new(s),
        }
    }
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
        #[cfg(feature = "serial")]
        Endpoint::Tty { path, baudrate } => RawStream::Tty(open_tty(path, *baudrate)?),
        #[cfg(not(feature = "serial"))]
        Endpoint::Tty { .. } => return Err(super::not_built("a serial line", "serial")),
    })
}

#[cfg(feature = "serial")]
/// Opens a serial line in raw mode at `baudrate`, exclusively (a second opener would
/// interleave its bytes with ours).
pub fn open_tty(path: &str, baudrate: u32) -> std::io::Result<tokio_serial::SerialStream> {
    use tokio_serial::SerialPortBuilderExt;
    tokio_serial::new(path, baudrate)
        .open_native_async()
        .map_err(|e| std::io::Error::other(format!("{path}: {e}")))
}
