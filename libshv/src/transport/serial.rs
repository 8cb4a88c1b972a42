//! The Serial framing (SHV's stream layer for byte streams without lengths: `tcps://`,
//! `unixs:`, serial lines): `STX message ETX [CRC32]`, where inside the message STX, ETX,
//! ATX and ESC are escaped as `ESC 02|03|04|0A`, ATX aborts a message being sent, and the
//! CRC-32 (IEEE, big-endian, escaped too) of the escaped message follows ETX on serial
//! lines only (pySHV sends none over TCP and Unix sockets).
//!
//! [`bridge`] turns such a stream into a Block-framed one, so that everything above the
//! framing (the client, the broker's connections) stays as it is.

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

use super::stream::{BoxRead, BoxWrite};

pub const STX: u8 = 0xA2;
pub const ETX: u8 = 0xA3;
pub const ATX: u8 = 0xA4;
pub const ESC: u8 = 0xAA;

fn is_special(b: u8) -> bool {
    matches!(b, STX | ETX | ATX | ESC)
}

/// Escapes `data` into `out`. Runs of plain bytes are copied whole (bulk data is
/// mostly plain; a byte-at-a-time loop made the Serial framing a fifth as fast as
/// Block framing).
pub fn escape(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len() + data.len() / 64);
    let mut rest = data;
    while !rest.is_empty() {
        let run = rest
            .iter()
            .position(|&b| is_special(b))
            .unwrap_or(rest.len());
        out.extend_from_slice(&rest[..run]);
        let Some(&b) = rest.get(run) else { break };
        let code = match b {
            STX => 0x02,
            ETX => 0x03,
            ATX => 0x04,
            _ => 0x0A,
        };
        out.extend_from_slice(&[ESC, code]);
        rest = &rest[run + 1..];
    }
}

/// One message (format byte and payload) as a Serial frame.
pub fn encode(message: &[u8], crc: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    out.push(STX);
    escape(message, &mut out);
    out.push(ETX);
    if crc {
        let sum = crc32(&out[1..out.len() - 1]);
        escape(&sum.to_be_bytes(), &mut out);
    }
    out
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Reads Serial frames: yields each message (unescaped). Bytes outside STX…ETX are
/// skipped, an ATX drops the message in progress, a message whose CRC is wrong or that
/// grows beyond `max` bytes is dropped (the rest of it skipped up to the next STX).
/// Every byte is looked at once: input is consumed as it is scanned.
pub struct SerialDecoder {
    crc: bool,
    max: usize,
    state: State,
    msg: Vec<u8>,
    /// The escaped bytes of the message (what the CRC covers).
    crc_sum: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for STX.
    Idle,
    /// Inside a message; `escaped` after an ESC.
    Message { escaped: bool },
    /// After a message too large: skipping to the next STX.
    Skipping,
    /// After ETX: `got` CRC bytes so far.
    Crc {
        got: usize,
        value: u32,
        escaped: bool,
    },
}

impl SerialDecoder {
    pub fn new(crc: bool, max: usize) -> Self {
        SerialDecoder {
            crc,
            max,
            state: State::Idle,
            msg: Vec::new(),
            crc_sum: !0,
        }
    }

    fn start(&mut self) {
        self.msg.clear();
        self.crc_sum = !0;
        self.state = State::Message { escaped: false };
    }

    /// Adds escaped bytes to the CRC (only on lines that use one).
    fn sum_all(&mut self, bytes: &[u8]) {
        if self.crc {
            for &b in bytes {
                self.sum(b);
            }
        }
    }

    fn sum(&mut self, b: u8) {
        if !self.crc {
            return;
        }
        let mut crc = self.crc_sum ^ u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
        self.crc_sum = crc;
    }
}

fn unescape(b: u8) -> Option<u8> {
    match b {
        0x02 => Some(STX),
        0x03 => Some(ETX),
        0x04 => Some(ATX),
        0x0A => Some(ESC),
        _ => None,
    }
}

/// What the decoder found.
#[derive(Debug, PartialEq, Eq)]
pub enum SerialItem {
    Message(Vec<u8>),
    /// A message dropped (aborted, too large, bad escape or CRC), with the reason.
    Dropped(&'static str),
}

impl Decoder for SerialDecoder {
    type Item = SerialItem;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<SerialItem>, std::io::Error> {
        while !src.is_empty() {
            // Fast paths over runs: looking for STX, and the plain bytes of a message.
            match self.state {
                State::Idle | State::Skipping => {
                    let skip = src.iter().position(|&b| b == STX).unwrap_or(src.len());
                    src.advance(skip);
                    if src.is_empty() {
                        break;
                    }
                }
                State::Message { escaped: false } => {
                    let room = self.max.saturating_sub(self.msg.len()).saturating_add(1);
                    let run = src
                        .iter()
                        .take(room)
                        .position(|&b| is_special(b))
                        .unwrap_or(src.len().min(room));
                    if run > 0 {
                        self.sum_all(&src[..run]);
                        self.msg.extend_from_slice(&src[..run]);
                        src.advance(run);
                        if self.msg.len() > self.max {
                            self.msg = Vec::new();
                            self.state = State::Skipping;
                            return Ok(Some(SerialItem::Dropped("message too large")));
                        }
                        continue;
                    }
                }
                _ => {}
            }
            let b = src[0];
            src.advance(1);
            match self.state {
                State::Idle | State::Skipping => {
                    if b == STX {
                        self.start();
                    }
                }
                State::Message { escaped: true } => {
                    self.sum(b);
                    match unescape(b) {
                        Some(u) => {
                            self.msg.push(u);
                            self.state = State::Message { escaped: false };
                        }
                        None => {
                            self.state = State::Idle;
                            return Ok(Some(SerialItem::Dropped("bad escape")));
                        }
                    }
                }
                State::Message { escaped: false } => match b {
                    STX => {
                        // A new message starts: the one in progress is lost.
                        self.start();
                        return Ok(Some(SerialItem::Dropped("message interrupted")));
                    }
                    ATX => {
                        self.state = State::Idle;
                        return Ok(Some(SerialItem::Dropped("message aborted")));
                    }
                    ETX if self.crc => {
                        self.state = State::Crc {
                            got: 0,
                            value: 0,
                            escaped: false,
                        }
                    }
                    ETX => {
                        self.state = State::Idle;
                        return Ok(Some(SerialItem::Message(std::mem::take(&mut self.msg))));
                    }
                    ESC => {
                        self.sum(b);
                        self.state = State::Message { escaped: true };
                    }
                    b => {
                        self.sum(b);
                        self.msg.push(b);
                    }
                },
                State::Crc {
                    got,
                    value,
                    escaped,
                } => {
                    let byte = if escaped {
                        unescape(b).unwrap_or(0)
                    } else if b == ESC {
                        self.state = State::Crc {
                            got,
                            value,
                            escaped: true,
                        };
                        continue;
                    } else {
                        b
                    };
                    let value = (value << 8) | u32::from(byte);
                    if got + 1 < 4 {
                        self.state = State::Crc {
                            got: got + 1,
                            value,
                            escaped: false,
                        };
                        continue;
                    }
                    self.state = State::Idle;
                    if value != !self.crc_sum {
                        return Ok(Some(SerialItem::Dropped("bad CRC")));
                    }
                    return Ok(Some(SerialItem::Message(std::mem::take(&mut self.msg))));
                }
            }
            if self.msg.len() > self.max {
                self.msg = Vec::new();
                self.state = State::Skipping;
                return Ok(Some(SerialItem::Dropped("message too large")));
            }
        }
        Ok(None)
    }
}

/// How long shutting the stream down may wait for a peer that does not read.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Turns a Serial-framed byte stream into a Block-framed one (a pipe and two tasks):
/// messages read are handed on with a length prefix, Block frames written are sent as
/// Serial frames. The tasks end when either side closes. `meter`, if given, is the
/// meter of `stream`'s reads (crate::reader::Metered): it is settled once each message
/// has been handed on, so a message being gathered is charged to the peer's budget.
pub fn bridge<S>(
    stream: S,
    crc: bool,
    max_frame: usize,
    meter: Option<crate::reader::Meter>,
) -> (BoxRead, BoxWrite)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut net_r, mut net_w) = tokio::io::split(stream);
    let (mut pipe_r, mut pipe_w) = tokio::io::split(theirs);
    // Serial in → Block out.
    let reader = tokio::spawn(async move {
        let mut dec = SerialDecoder::new(crc, max_frame);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            while let Ok(Some(item)) = dec.decode(&mut buf) {
                match item {
                    SerialItem::Message(m) => {
                        let mut out = BytesMut::new();
                        let (hdr, n) = crate::value::uint_bytes(m.len() as u64);
                        out.put_slice(&hdr[..n]);
                        out.put_slice(&m);
                        if pipe_w.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                    SerialItem::Dropped(why) => {
                        tracing::debug!("serial framing: {why}");
                    }
                }
                if let Some(m) = &meter {
                    m.settle();
                }
            }
            match net_r.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = pipe_w.shutdown().await;
    });
    // Block in → Serial out. This side ends when the connection above is done with the
    // stream (it dropped its halves); it then shuts the stream down, bounded, and stops
    // the reader, which would otherwise hold the socket (or the serial line) for as long
    // as the peer stays silent.
    tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        'pipe: loop {
            // Whole Block frames in the buffer go out as Serial frames.
            while let Some((pos, end)) = crate::codec::next_block(&buf) {
                let frame = encode(&buf[pos..end], crc);
                buf.advance(end);
                if net_w.write_all(&frame).await.is_err() {
                    break 'pipe;
                }
            }
            match pipe_r.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, net_w.shutdown()).await;
        reader.abort();
    });
    let (r, w) = tokio::io::split(ours);
    (Box::pin(r), Box::pin(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], crc: bool) -> Vec<SerialItem> {
        let mut d = SerialDecoder::new(crc, 1024);
        let mut b = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(i) = d.decode(&mut b).unwrap() {
            out.push(i);
        }
        out
    }

    #[test]
    fn round_trip_with_every_special_byte() {
        let msg = [0x01, STX, ETX, ATX, ESC, 0x00, 0xff];
        for crc in [false, true] {
            let f = encode(&msg, crc);
            assert_eq!(f.iter().filter(|b| **b == STX).count(), 1);
            assert_eq!(decode_all(&f, crc), vec![SerialItem::Message(msg.to_vec())]);
        }
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn garbage_aborts_and_bad_crcs_are_dropped() {
        let good = encode(&[1, 2, 3], true);
        let mut bad = good.clone();
        bad[2] ^= 0x40;
        let mut stream = vec![0x00, 0x11];
        stream.extend_from_slice(&[STX, 5, 6, ATX]);
        stream.extend_from_slice(&bad);
        stream.extend_from_slice(&good);
        let items = decode_all(&stream, true);
        assert_eq!(items[0], SerialItem::Dropped("message aborted"));
        assert_eq!(items[1], SerialItem::Dropped("bad CRC"));
        assert_eq!(items[2], SerialItem::Message(vec![1, 2, 3]));
        let big = encode(&vec![7u8; 5000], false);
        assert_eq!(
            decode_all(&big, false)[0],
            SerialItem::Dropped("message too large")
        );
    }

    #[test]
    fn large_messages_in_any_chunking_with_and_without_crc() {
        // Mostly plain bytes (the fast path) with specials sprinkled in.
        let msg: Vec<u8> = (0..200_000u32)
            .map(|i| match i % 97 {
                0 => STX,
                1 => ESC,
                2 => ATX,
                3 => ETX,
                _ => (i * 31 % 251) as u8,
            })
            .collect();
        for crc in [false, true] {
            let mut wire = vec![0x55, 0x66]; // garbage before the first STX
            wire.extend(encode(&msg, crc));
            wire.extend(encode(&[1, 2], crc));
            for chunk in [1, 7, 4096, wire.len()] {
                let mut dec = SerialDecoder::new(crc, 1 << 20);
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                for c in wire.chunks(chunk) {
                    buf.extend_from_slice(c);
                    while let Some(item) = dec.decode(&mut buf).unwrap() {
                        got.push(item);
                    }
                }
                assert!(
                    matches!(&got[..], [SerialItem::Message(a), SerialItem::Message(b)] if *a == msg && b == &[1, 2]),
                    "crc {crc}, chunk {chunk}: {} items",
                    got.len()
                );
            }
            // Beyond the limit: dropped, and the next message still decodes.
            let mut dec = SerialDecoder::new(crc, 1000);
            let mut buf = BytesMut::from(&wire[..]);
            let mut got = Vec::new();
            while let Some(item) = dec.decode(&mut buf).unwrap() {
                got.push(item);
            }
            assert!(
                matches!(&got[..], [SerialItem::Dropped(_), SerialItem::Message(b)] if b == &[1, 2]),
                "crc {crc}: {} items",
                got.len()
            );
        }
    }
}
