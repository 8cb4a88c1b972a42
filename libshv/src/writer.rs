//! Writing frames to a connection: what is queued is written in one batch and flushed
//! once; a large body (tunnel data) goes to the socket straight from its `Bytes`; a
//! frame encoded once can be sent to many connections. Used by the client and by the
//! broker's connections alike.

use bytes::{Bytes, BytesMut};
use futures::SinkExt;
use tokio_util::codec::{Encoder, FramedWrite};

use crate::codec::{encode_into, write_frame, DIRECT_BODY};
use crate::frame::RpcFrame;
use crate::transport::connection::FrameWriter;
use crate::transport::stream::BoxWrite;

/// What a connection's writer sends: a frame to serialize, or bytes already framed (a
/// signal encoded once for all its subscribers).
#[derive(Debug)]
pub enum Outgoing {
    Frame(RpcFrame),
    Encoded(Bytes),
}

impl From<RpcFrame> for Outgoing {
    fn from(f: RpcFrame) -> Self {
        Outgoing::Frame(f)
    }
}

/// Encodes [`Outgoing`] items as Block frames.
pub struct OutgoingCodec;

impl Encoder<Outgoing> for OutgoingCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Outgoing, dst: &mut BytesMut) -> Result<(), Self::Error> {
        match item {
            Outgoing::Frame(f) => encode_into(&f, dst),
            Outgoing::Encoded(b) => dst.extend_from_slice(&b),
        }
        Ok(())
    }
}

pub type OutgoingWriter = FramedWrite<BoxWrite, OutgoingCodec>;

/// The writer for a connection whose login (done with a plain frame writer) is over.
pub fn outgoing_writer(writer: FrameWriter) -> OutgoingWriter {
    FramedWrite::new(writer.into_inner(), OutgoingCodec)
}

/// Writes `first` and everything `more` yields without waiting, then flushes once.
pub async fn write_batch(
    writer: &mut OutgoingWriter,
    first: Outgoing,
    mut more: impl FnMut() -> Option<Outgoing>,
) -> std::io::Result<()> {
    put(writer, first).await?;
    while let Some(item) = more() {
        put(writer, item).await?;
    }
    writer.flush().await
}

async fn put(writer: &mut OutgoingWriter, item: Outgoing) -> std::io::Result<()> {
    match item {
        Outgoing::Frame(f) if f.body.len() >= DIRECT_BODY => {
            writer.flush().await?;
            write_frame(writer.get_mut(), &f).await
        }
        item => writer.feed(item).await,
    }
}
