//! The "Block" stream framing as a tokio codec:
//! `[length: ChainPack UInt][format byte][payload]`, length counting format + payload.
//!
//! Frames above the size limit are never buffered whole: the first bytes are kept (so
//! a request can be answered with an error), the rest is drained as it arrives, and the
//! stream stays in sync. Reads through `FramedRead` are cancellation-safe: a partial
//! frame stays in the codec's buffer.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{RpcFrame, FORMAT_CHAINPACK, FORMAT_RESET_SESSION};
use crate::value::{self, DecodeError};

pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// How much of an oversized frame is kept for a look at its meta.
const OVERSIZED_HEAD: usize = 64 * 1024;

#[derive(Debug)]
pub enum Incoming {
    Frame(RpcFrame),
    ResetSession,
    /// A frame larger than the limit; `head` holds its first bytes (format byte
    /// excluded) and the rest was or will be skipped.
    Oversized {
        size: u64,
        format: u8,
        head: Bytes,
    },
    /// A well-delimited frame whose content is bad; the stream is still in sync.
    Invalid(String),
}

#[derive(Debug)]
pub struct BlockCodec {
    max_frame: usize,
    skipping: u64,
}

impl Default for BlockCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl BlockCodec {
    /// Changes the largest accepted frame (e.g. a small limit before login).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    pub fn new(max_frame: usize) -> Self {
        BlockCodec {
            max_frame,
            skipping: 0,
        }
    }
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

impl Decoder for BlockCodec {
    type Item = Incoming;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, std::io::Error> {
        if self.skipping > 0 {
            let n = (src.len() as u64).min(self.skipping);
            src.advance(n as usize);
            self.skipping -= n;
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        let (len, hdr) = match value::read_uint(src, 0) {
            Ok(x) => x,
            Err(DecodeError::Truncated) => return Ok(None),
            Err(_) => return Err(invalid("invalid frame length")),
        };
        if len == 0 {
            src.advance(hdr);
            return Ok(Some(Incoming::Invalid("zero-length frame".into())));
        }
        if len > self.max_frame as u64 {
            let keep = (OVERSIZED_HEAD as u64).min(len) as usize;
            if src.len() < hdr + keep {
                src.reserve(hdr + keep - src.len());
                return Ok(None);
            }
            src.advance(hdr);
            let mut head = src.split_to(keep).freeze();
            let format = head[0];
            head.advance(1);
            self.skipping = len - keep as u64;
            let n = (src.len() as u64).min(self.skipping);
            src.advance(n as usize);
            self.skipping -= n;
            return Ok(Some(Incoming::Oversized {
                size: len,
                format,
                head,
            }));
        }
        let len = len as usize;
        if src.len() < hdr + len {
            // No reserve of the announced length: that is the peer's word, and the
            // reader decides what a frame being read may hold (crate::reader).
            return Ok(None);
        }
        src.advance(hdr);
        let mut payload = src.split_to(len).freeze();
        let format = payload[0];
        payload.advance(1);
        Ok(Some(match format {
            FORMAT_CHAINPACK => match RpcFrame::parse(payload) {
                Ok(f) => Incoming::Frame(f),
                Err(e) => Incoming::Invalid(format!("malformed message: {e}")),
            },
            FORMAT_RESET_SESSION if payload.is_empty() => Incoming::ResetSession,
            other => Incoming::Invalid(format!("unsupported format byte {other}")),
        }))
    }
}

impl BlockCodec {
    /// Bytes the frame at the start of `src` needs buffered whole (length header
    /// included), once its header is there; None while it is not, or for a frame
    /// that is skipped rather than buffered (oversized, or the rest of one).
    pub fn frame_in_progress(&self, src: &[u8]) -> Option<usize> {
        if self.skipping > 0 {
            return None;
        }
        let (len, hdr) = value::read_uint(src, 0).ok()?;
        if len > self.max_frame as u64 {
            return None;
        }
        usize::try_from(len).ok()?.checked_add(hdr)
    }
}

/// Writes the frame header for a payload of `payload_len` bytes (format byte excluded).
/// The next whole Block frame at the start of `buf`: (where its payload starts, where it
/// ends). None while more bytes are needed or if the length cannot be a frame's (the
/// caller's stream is then broken: it comes from our own writer).
pub fn next_block(buf: &[u8]) -> Option<(usize, usize)> {
    let (len, pos) = crate::value::read_uint(buf, 0).ok()?;
    let end = usize::try_from(len).ok()?.checked_add(pos)?;
    (buf.len() >= end).then_some((pos, end))
}

pub fn write_header(dst: &mut BytesMut, payload_len: usize, format: u8) {
    let (hdr, n) = value::uint_bytes(payload_len as u64 + 1);
    dst.extend_from_slice(&hdr[..n]);
    dst.extend_from_slice(&[format]);
}

/// Appends one framed message (header included) to `dst`.
pub fn encode_into(frame: &RpcFrame, dst: &mut BytesMut) {
    encode_head(frame, dst);
    dst.extend_from_slice(body_of(frame));
}

/// Frames with at least this big a body are best written with [`write_frame`], the
/// body straight from its `Bytes` instead of copied into the write buffer.
pub const DIRECT_BODY: usize = 16 * 1024;

fn body_of(frame: &RpcFrame) -> &[u8] {
    if frame.body.is_empty() {
        &[0x8a, 0xff]
    } else {
        &frame.body
    }
}

/// Writes one frame to `w`: header and meta through a small buffer, the body directly
/// (one copy fewer per byte on bulk traffic such as tunnels).
pub async fn write_frame<W: tokio::io::AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    frame: &RpcFrame,
) -> std::io::Result<()> {
    use std::io::IoSlice;
    use tokio::io::AsyncWriteExt;
    let mut head = BytesMut::with_capacity(128);
    encode_head(frame, &mut head);
    // One writev for both parts: two writes would send the small head as its own
    // segment (TCP_NODELAY) and wake the reader twice.
    let mut parts = [IoSlice::new(&head), IoSlice::new(body_of(frame))];
    let mut rest = &mut parts[..];
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Everything of a framed message but its body: the length (which counts the body),
/// the format byte and the meta.
///
/// The meta is serialized straight into `dst` behind a gap as large as the largest
/// header; once its length is known the header is written and the (small) meta moved
/// down: no temporary buffers on the hot path.
pub fn encode_head(frame: &RpcFrame, dst: &mut BytesMut) {
    use bytes::BufMut;
    use shvproto::Writer;
    const GAP: usize = 10; // a 9-byte length + the format byte
    let start = dst.len();
    dst.resize(start + GAP, 0);
    {
        let mut w = (&mut *dst).writer();
        shvproto::ChainPackWriter::new(&mut w)
            .write_meta(&frame.meta)
            .expect("writing to memory cannot fail");
    }
    let meta_len = dst.len() - start - GAP;
    let (len, n) = value::uint_bytes((meta_len + body_of(frame).len() + 1) as u64);
    dst[start..start + n].copy_from_slice(&len[..n]);
    dst[start + n] = FORMAT_CHAINPACK;
    dst.copy_within(start + GAP..start + GAP + meta_len, start + n + 1);
    dst.truncate(start + n + 1 + meta_len);
}

impl Encoder<RpcFrame> for BlockCodec {
    type Error = std::io::Error;

    fn encode(&mut self, frame: RpcFrame, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        encode_into(&frame, dst);
        Ok(())
    }
}

/// A ResetSession message as a Block frame (length 1, format 0).
pub fn encode_reset_session() -> [u8; 2] {
    [0x01, FORMAT_RESET_SESSION]
}

/// Encodes one frame to bytes (header included), e.g. for raw test clients.
pub fn encode_frame(frame: &RpcFrame) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode_into(frame, &mut b);
    b.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shvproto::RpcValue;

    fn decode_all(codec: &mut BlockCodec, data: &[u8]) -> Vec<Incoming> {
        let mut buf = BytesMut::from(data);
        let mut out = Vec::new();
        while let Some(i) = codec.decode(&mut buf).unwrap() {
            out.push(i);
        }
        out
    }

    #[test]
    fn spec_example_hello_bytes() {
        // <1:1,8:1,10:"hello">i{} as ChainPack, framed.
        let msg = RpcValue::from_cpon(r#"<1:1,8:1,10:"hello">i{}"#)
            .unwrap()
            .to_chainpack();
        let expected: Vec<u8> = [
            &[0x11, 0x01][..],
            &[0x8b, 0x41, 0x41, 0x48, 0x41, 0x4a, 0x86, 0x05],
            b"hello",
            &[0xff, 0x8a, 0xff],
        ]
        .concat();
        assert_eq!(&expected[2..], &msg[..]);
        let out = decode_all(&mut BlockCodec::default(), &expected);
        let Incoming::Frame(f) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(f.method(), Some("hello"));
        assert_eq!(encode_frame(f), expected);
    }

    #[test]
    fn split_reads_and_reset() {
        let f = crate::message::RpcMessage::new_request(7, "x", "ls", None).to_frame();
        let mut bytes = encode_frame(&f);
        bytes.extend_from_slice(&[0x01, 0x00]); // ResetSession
        let mut codec = BlockCodec::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in &bytes {
            buf.extend_from_slice(&[*b]);
            while let Some(i) = codec.decode(&mut buf).unwrap() {
                out.push(i);
            }
        }
        assert!(matches!(&out[0], Incoming::Frame(g) if *g == f));
        assert!(matches!(out[1], Incoming::ResetSession));
    }

    #[test]
    fn oversized_is_drained_and_stream_stays_in_sync() {
        let big = crate::message::RpcMessage::new_request(
            9,
            "",
            "echo",
            Some(RpcValue::from(vec![0u8; 5000])),
        )
        .to_frame();
        let small = crate::message::RpcMessage::new_request(10, "", "ls", None).to_frame();
        let mut bytes = encode_frame(&big);
        bytes.extend(encode_frame(&small));
        let mut codec = BlockCodec::new(1000);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in bytes.chunks(700) {
            buf.extend_from_slice(chunk);
            while let Some(i) = codec.decode(&mut buf).unwrap() {
                out.push(i);
            }
        }
        assert_eq!(out.len(), 2, "{out:?}");
        let Incoming::Oversized { format, head, .. } = &out[0] else {
            panic!()
        };
        assert_eq!(*format, 1);
        assert_eq!(head[0], 0x8b);
        assert!(matches!(&out[1], Incoming::Frame(g) if g.request_id() == Some(10)));
    }

    #[test]
    fn bad_content_is_reported_not_fatal() {
        let mut codec = BlockCodec::default();
        // zero length, unknown format 7, truncated meta, then a good frame
        let mut bytes = vec![0x00, 0x02, 0x07, 0x00, 0x03, 0x01, 0x8b, 0x41];
        let good = crate::message::RpcMessage::new_request(1, "", "ls", None).to_frame();
        bytes.extend(encode_frame(&good));
        let out = decode_all(&mut codec, &bytes);
        assert!(matches!(out[0], Incoming::Invalid(_)));
        assert!(matches!(out[1], Incoming::Invalid(_)));
        assert!(matches!(out[2], Incoming::Invalid(_)));
        assert!(matches!(&out[3], Incoming::Frame(g) if *g == good));
    }
}
