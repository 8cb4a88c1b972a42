//! The data path without the generic codec: data bodies written and read directly
//! (they are most of a tunnel's frames).

use super::*;

/// The body `i{2:[channel, b"…"]}` of a data frame, written directly (one copy of the
/// bytes instead of three through RpcValue and the generic writer).
pub(super) fn data_body(channel: i64, data: &[u8]) -> bytes::Bytes {
    let (len, n) = crate::value::uint_bytes(data.len() as u64);
    let mut b = Vec::with_capacity(data.len() + 24);
    b.extend_from_slice(&data_head(channel));
    b.extend_from_slice(&len[..n]);
    b.extend_from_slice(data);
    b.extend_from_slice(&[0xff, 0xff]);
    bytes::Bytes::from(b)
}

/// `i{2:[channel, ` and the Blob's type byte: what comes before a data frame's length.
/// Channels 0..=63 are one tiny-Int byte; forward connections go beyond (16 + N).
pub(super) fn data_head(channel: i64) -> Vec<u8> {
    let mut head = vec![0x8a, 0x42, 0x88];
    match u8::try_from(channel) {
        Ok(c) if c <= 0x3f => head.push(0x40 | c),
        _ => head.extend_from_slice(&RpcValue::from(channel).to_chainpack()),
    }
    head.push(0x85);
    head
}

/// The common data frame `i{2:[channel, b"…"]}`, read straight out of the body: the
/// generic decoder reads a Blob a byte at a time, which made it most of a tunnel end's
/// CPU. Anything else (control Maps, Strings, other layouts) takes the generic path.
pub(super) fn fast_data(body: &[u8]) -> Option<TunnelEvent> {
    // 8a IMap, 42 key Int 2 (Result), 88 List, channel (tiny Int/UInt), 85 Blob
    let rest = body.strip_prefix(&[0x8a, 0x42, 0x88])?;
    let (&ch, rest) = rest.split_first()?;
    let channel = match ch {
        0x00..=0x3f => i64::from(ch),
        0x40..=0x7f => i64::from(ch & 0x3f),
        _ => return None,
    };
    if channel == channel::CONTROL {
        return None;
    }
    let rest = rest.strip_prefix(&[0x85])?;
    let (len, start) = crate::value::read_uint(rest, 0).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    let data = rest.get(start..end)?;
    // The List and the IMap end right after the Blob, or this is not our layout.
    (rest.get(end..)? == [0xff, 0xff]).then(|| TunnelEvent::Data {
        channel,
        data: data.to_vec(),
    })
}
