//! The data path without the generic codec: data bodies written and read directly
//! (they are most of a tunnel's frames).

use super::*;

/// ChainPack's type bytes of the two forms data travel in.
const BLOB: u8 = 0x85;
const STRING: u8 = 0x86;

/// The body `i{2:[channel, b"…"]}` of a data frame (`"…"` in the journal dialect, the
/// bytes as they are: a C++ String holds any bytes), written directly (one copy of the
/// bytes instead of three through RpcValue and the generic writer).
pub(super) fn data_body(channel: i64, data: &[u8], dialect: Dialect) -> bytes::Bytes {
    let (len, n) = crate::value::uint_bytes(data.len() as u64);
    let mut b = Vec::with_capacity(data.len() + 24);
    b.extend_from_slice(&data_head(channel, dialect));
    b.extend_from_slice(&len[..n]);
    b.extend_from_slice(data);
    b.extend_from_slice(&[0xff, 0xff]);
    bytes::Bytes::from(b)
}

/// `i{2:[channel, ` and the Blob's (String's) type byte: what comes before a data
/// frame's length. Channels 0..=63 are one tiny-Int byte; forward connections go
/// beyond (16 + N).
pub(super) fn data_head(channel: i64, dialect: Dialect) -> Vec<u8> {
    let mut head = vec![0x8a, 0x42, 0x88];
    match u8::try_from(channel) {
        Ok(c) if c <= 0x3f => head.push(0x40 | c),
        _ => head.extend_from_slice(&RpcValue::from(channel).to_chainpack()),
    }
    head.push(match dialect {
        Dialect::Shv => BLOB,
        Dialect::Journal => STRING,
    });
    head
}

/// ChainPack's Int and UInt type bytes (channels beyond 63, e.g. forward connections'
/// 16 + N, are written as Ints).
const UINT: u8 = 0x81;
const INT: u8 = 0x82;

/// A channel number at the start of `rest` (tiny Int/UInt, Int or UInt) and what follows
/// it. Every channel takes the fast path: a long-lived forward's channels count up, and
/// past 63 its frames once fell to the generic decoder, halving its throughput.
fn read_channel(rest: &[u8]) -> Option<(i64, &[u8])> {
    let (&ch, tail) = rest.split_first()?;
    match ch {
        0x00..=0x3f => Some((i64::from(ch), tail)),
        0x40..=0x7f => Some((i64::from(ch & 0x3f), tail)),
        UINT => {
            let (n, end) = crate::value::read_uint(tail, 0).ok()?;
            Some((i64::try_from(n).ok()?, &tail[end..]))
        }
        INT => {
            // A signed number: the top bit of its first significant byte is the sign.
            let (_, end) = crate::value::read_uint(tail, 0).ok()?;
            let (v, left) = crate::value::from_chainpack_prefix(rest.get(..end + 1)?).ok()?;
            (left == 0).then_some(())?;
            Some((crate::value::as_i64(&v)?, &tail[end..]))
        }
        _ => None,
    }
}

/// The common data frame `i{2:[channel, b"…"]}` (or `"…"`, as the C++ ends send it),
/// read straight out of the body: the generic decoder reads a Blob a byte at a time,
/// which made it most of a tunnel end's CPU, and it refuses a String that is not
/// UTF-8, which a C++ end's output need not be. Anything else (control Maps, other
/// layouts) takes the generic path.
pub(super) fn fast_data(body: &bytes::Bytes) -> Option<TunnelEvent> {
    // 8a IMap, 42 key Int 2 (Result), 88 List, channel (tiny Int/UInt), 85 Blob | 86 String
    let rest = body.strip_prefix(&[0x8a, 0x42, 0x88])?;
    let (channel, rest) = read_channel(rest)?;
    if channel == channel::CONTROL {
        return None;
    }
    let (&ty, rest) = rest.split_first()?;
    if ty != BLOB && ty != STRING {
        return None;
    }
    let (len, start) = crate::value::read_uint(rest, 0).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    rest.get(start..end)?;
    // Where the bytes sit in the body: handed on as a slice of it, not copied.
    let offset = body.len() - rest.len();
    // The List and the IMap end right after the bytes, or this is not our layout.
    // Bytes after the IMap are ignored, as the C++ libshv ignores them (one of its
    // releases writes every body twice; see `value::from_chainpack_prefix`).
    (rest.get(end..end.checked_add(2)?)? == [0xff, 0xff]).then(|| TunnelEvent::Data {
        channel,
        data: body.slice(offset + start..offset + end),
    })
}
