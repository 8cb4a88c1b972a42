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
pub mod tls;
pub mod ws;

pub use connection::{accept, dial, framed, AcceptHooks, Accepted, Acceptor};
pub use connection::{FrameReader, FrameWriter};
pub use stream::{BoxRead, BoxStream, BoxWrite, ByteStream, RawStream};
