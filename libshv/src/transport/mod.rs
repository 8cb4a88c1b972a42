//! The transports, as layers over one byte-stream trait ([`stream::ByteStream`]), each
//! layer importing only the ones below it:
//!
//! - [`stream`]: the byte stream of an endpoint (TCP, a Unix socket, a serial line);
//! - [`tls`]: TLS over a byte stream (`ssl://`, `ssls://`, `wss://`);
//! - [`serial`] and [`ws`]: the framings that are not Block, each turned into a
//!   Block-framed stream by a bridge (a pipe and two tasks);
//! - [`connection`]: the layers composed, [`dial`] for a client and [`accept`] for a
//!   listener, into Block frames.

pub mod connection;
pub mod serial;
pub mod stream;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "ws")]
pub mod ws;

pub use connection::{accept, dial, framed, AcceptHooks, Accepted, Acceptor};
pub use connection::{FrameReader, FrameWriter};
pub use stream::{BoxRead, BoxStream, BoxWrite, ByteStream, RawStream};

/// The error for a transport this build of libshv left out.
#[allow(dead_code)] // with every feature on, nothing is left out
pub(crate) fn not_built(what: &str, feature: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("{what}: this program was built without libshv's `{feature}` feature"),
    )
}
