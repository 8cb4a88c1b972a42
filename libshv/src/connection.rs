//! Opening a framed connection to a URL's transport.

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::codec::BlockCodec;
use crate::url::Transport;

pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
pub type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;
pub type FrameReader = FramedRead<BoxRead, BlockCodec>;
pub type FrameWriter = FramedWrite<BoxWrite, BlockCodec>;

/// Wraps any byte stream halves into frame reader and writer.
pub fn framed(read: BoxRead, write: BoxWrite, max_frame: usize) -> (FrameReader, FrameWriter) {
    (
        FramedRead::with_capacity(read, BlockCodec::new(max_frame), 64 * 1024),
        FramedWrite::new(write, BlockCodec::new(max_frame)),
    )
}

pub async fn connect(
    transport: &Transport,
    max_frame: usize,
) -> std::io::Result<(FrameReader, FrameWriter)> {
    match transport {
        Transport::Tcp { host, port } => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            s.set_nodelay(true)?;
            let (r, w) = s.into_split();
            Ok(framed(Box::pin(r), Box::pin(w), max_frame))
        }
        Transport::Ssl { host, port, tls } => {
            let config = crate::tls::client_config(tls).map_err(std::io::Error::other)?;
            let name = crate::tls::server_name(host).map_err(std::io::Error::other)?;
            let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            s.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, s)
                .await?;
            let (r, w) = tokio::io::split(tls);
            Ok(framed(Box::pin(r), Box::pin(w), max_frame))
        }
        Transport::Ws { host, port, .. } => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            s.set_nodelay(true)?;
            let (r, w) = crate::ws::connect(s, &transport.to_string(), max_frame).await?;
            Ok(framed(r, w, max_frame))
        }
        Transport::Tcps { host, port } => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            s.set_nodelay(true)?;
            let (r, w) = crate::serial::bridge(s, false, max_frame);
            Ok(framed(r, w, max_frame))
        }
        Transport::Unixs { path } => {
            let s = tokio::net::UnixStream::connect(path).await?;
            let (r, w) = crate::serial::bridge(s, false, max_frame);
            Ok(framed(r, w, max_frame))
        }
        Transport::Unix { path } => {
            let s = tokio::net::UnixStream::connect(path).await?;
            let (r, w) = s.into_split();
            Ok(framed(Box::pin(r), Box::pin(w), max_frame))
        }
    }
}
