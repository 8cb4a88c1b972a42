//! Decoding of RPC values through `shvproto`, guarded against deep nesting.
//!
//! `shvproto`'s readers are recursive: a few kilobytes of nested `[[[[…` overflow the
//! stack. Every decode in this crate therefore goes through [`check_chainpack`] /
//! [`check_cpon_depth`] first, which walk the bytes iteratively.

use shvproto::RpcValue;

/// Containers may nest at most this deep (the message's own meta + IMap count too).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
    #[error("truncated data")]
    Truncated,
    #[error("invalid ChainPack type byte 0x{0:02x} at offset {1}")]
    InvalidType(u8, usize),
    #[error("unbalanced container end at offset {0}")]
    Unbalanced(usize),
    #[error("{0}")]
    Codec(String),
}

mod cp {
    pub const NULL: u8 = 0x80;
    pub const UINT: u8 = 0x81;
    pub const INT: u8 = 0x82;
    pub const DOUBLE: u8 = 0x83;
    pub const BLOB: u8 = 0x85;
    pub const STRING: u8 = 0x86;
    pub const LIST: u8 = 0x88;
    pub const MAP: u8 = 0x89;
    pub const IMAP: u8 = 0x8a;
    pub const META: u8 = 0x8b;
    pub const DECIMAL: u8 = 0x8c;
    pub const DATETIME: u8 = 0x8d;
    pub const CSTRING: u8 = 0x8e;
    pub const FALSE: u8 = 0xfd;
    pub const TRUE: u8 = 0xfe;
    pub const TERM: u8 = 0xff;
}

/// Reads a ChainPack variable-length unsigned number at `pos`; returns (value, next pos).
/// An integer from the wire: an Int, or a UInt that fits in i64 (a cast would wrap a
/// larger one to a negative number). The one place integers are read this way.
pub fn as_i64(v: &RpcValue) -> Option<i64> {
    match v.value {
        shvproto::Value::Int(i) => Some(i),
        shvproto::Value::UInt(u) => i64::try_from(u).ok(),
        _ => None,
    }
}

/// A non-negative integer from the wire (Int ≥ 0 or UInt).
pub fn as_u64(v: &RpcValue) -> Option<u64> {
    match v.value {
        shvproto::Value::Int(i) => u64::try_from(i).ok(),
        shvproto::Value::UInt(u) => Some(u),
        _ => None,
    }
}

pub fn read_uint(data: &[u8], pos: usize) -> Result<(u64, usize), DecodeError> {
    let head = *data.get(pos).ok_or(DecodeError::Truncated)?;
    let (extra, mut num) = if head & 0x80 == 0 {
        (0, u64::from(head & 0x7f))
    } else if head & 0x40 == 0 {
        (1, u64::from(head & 0x3f))
    } else if head & 0x20 == 0 {
        (2, u64::from(head & 0x1f))
    } else if head & 0x10 == 0 {
        (3, u64::from(head & 0x0f))
    } else if head == 0xff {
        return Err(DecodeError::InvalidType(head, pos));
    } else {
        (usize::from(head & 0x0f) + 4, 0)
    };
    let end = pos + 1 + extra;
    let bytes = data.get(pos + 1..end).ok_or(DecodeError::Truncated)?;
    for b in bytes {
        num = (num << 8) | u64::from(*b);
    }
    Ok((num, end))
}

/// Encodes `num` as a ChainPack variable-length unsigned number.
pub fn write_uint(out: &mut Vec<u8>, num: u64) {
    let (buf, n) = uint_bytes(num);
    out.extend_from_slice(&buf[..n]);
}

/// The ChainPack encoding of `num` in a stack buffer: (bytes, length).
pub fn uint_bytes(num: u64) -> ([u8; 9], usize) {
    let mut b = [0u8; 9];
    let bits = 64 - num.leading_zeros() as usize;
    let n = if bits <= 7 {
        b[0] = num as u8;
        1
    } else if bits <= 14 {
        b[..2].copy_from_slice(&[0x80 | (num >> 8) as u8, num as u8]);
        2
    } else if bits <= 21 {
        b[..3].copy_from_slice(&[0xc0 | (num >> 16) as u8, (num >> 8) as u8, num as u8]);
        3
    } else if bits <= 28 {
        b[..4].copy_from_slice(&[
            0xe0 | (num >> 24) as u8,
            (num >> 16) as u8,
            (num >> 8) as u8,
            num as u8,
        ]);
        4
    } else {
        let nbytes = bits.div_ceil(8);
        b[0] = 0xf0 | (nbytes - 4) as u8;
        for i in 0..nbytes {
            b[1 + i] = (num >> (8 * (nbytes - 1 - i))) as u8;
        }
        nbytes + 1
    };
    (b, n)
}

/// Skips one scalar or the opening byte of a container; returns (next pos, depth change).
fn step(data: &[u8], pos: usize) -> Result<(usize, isize), DecodeError> {
    let b = *data.get(pos).ok_or(DecodeError::Truncated)?;
    let p = pos + 1;
    Ok(match b {
        0x00..=0x7f | cp::NULL | cp::TRUE | cp::FALSE => (p, 0),
        cp::UINT | cp::INT | cp::DATETIME => (read_uint(data, p)?.1, 0),
        cp::DOUBLE => {
            if data.len() < p + 8 {
                return Err(DecodeError::Truncated);
            }
            (p + 8, 0)
        }
        cp::DECIMAL => {
            let (_, p) = read_uint(data, p)?;
            (read_uint(data, p)?.1, 0)
        }
        cp::BLOB | cp::STRING => {
            let (len, p) = read_uint(data, p)?;
            let end = usize::try_from(len)
                .ok()
                .and_then(|l| p.checked_add(l))
                .filter(|e| *e <= data.len())
                .ok_or(DecodeError::Truncated)?;
            (end, 0)
        }
        cp::CSTRING => {
            let nul = data[p..]
                .iter()
                .position(|c| *c == 0)
                .ok_or(DecodeError::Truncated)?;
            (p + nul + 1, 0)
        }
        cp::LIST | cp::MAP | cp::IMAP | cp::META => (p, 1),
        cp::TERM => (p, -1),
        _ => return Err(DecodeError::InvalidType(b, pos)),
    })
}

/// Walks one complete ChainPack value (with its optional MetaMap) starting at `pos`
/// without recursion, checking that containers nest at most `max_depth` deep.
/// Returns the offset just past the value.
pub fn skip_value(data: &[u8], mut pos: usize, max_depth: usize) -> Result<usize, DecodeError> {
    if data.get(pos) == Some(&cp::META) {
        pos = skip_container(data, pos, max_depth)?;
    }
    skip_container(data, pos, max_depth)
}

/// Checks a whole ChainPack buffer holding one value: depth-limited and fully consumed.
pub fn check_chainpack(data: &[u8]) -> Result<(), DecodeError> {
    let end = skip_value(data, 0, MAX_DEPTH)?;
    if end != data.len() {
        return Err(DecodeError::Codec(format!(
            "{} trailing bytes after the value",
            data.len() - end
        )));
    }
    Ok(())
}

/// Like [`skip_container`], and also refuses a value of more than `max_items` scalars
/// and containers: what a small encoding can expand to once decoded is bounded too.
pub fn skip_container_bounded(
    data: &[u8],
    pos: usize,
    max_depth: usize,
    max_items: usize,
) -> Result<usize, DecodeError> {
    let mut depth = 0usize;
    let mut p = pos;
    let mut items = 0usize;
    loop {
        let (next, d) = step(data, p)?;
        p = next;
        if d != -1 {
            items += 1;
            if items > max_items {
                return Err(DecodeError::Codec(format!(
                    "more than {max_items} values in one container"
                )));
            }
        }
        if d == 1 {
            depth += 1;
            if depth > max_depth {
                return Err(DecodeError::TooDeep(max_depth));
            }
        } else if d == -1 {
            if depth == 0 {
                return Err(DecodeError::Unbalanced(p - 1));
            }
            depth -= 1;
        }
        if depth == 0 {
            return Ok(p);
        }
    }
}

/// Skips a scalar or a whole container (a MetaMap counts as one) at `pos`, depth-limited.
pub fn skip_container(data: &[u8], pos: usize, max_depth: usize) -> Result<usize, DecodeError> {
    skip_container_bounded(data, pos, max_depth, usize::MAX)
}

/// Decodes ChainPack after the depth check.
pub fn from_chainpack(data: &[u8]) -> Result<RpcValue, DecodeError> {
    check_chainpack(data)?;
    RpcValue::from_chainpack(data).map_err(|e| DecodeError::Codec(e.to_string()))
}

/// Decodes the first ChainPack value of `data` and returns it with the number of bytes
/// left after it, which the caller may ignore: a message body is read this way because
/// the C++ libshv reads one value and ignores the rest, and one of its releases (the
/// Nov 2024 `RpcDriver::writeFrame` rework that shvapp pins) wrote every body twice.
pub fn from_chainpack_prefix(data: &[u8]) -> Result<(RpcValue, usize), DecodeError> {
    let end = skip_value(data, 0, MAX_DEPTH)?;
    let value =
        RpcValue::from_chainpack(&data[..end]).map_err(|e| DecodeError::Codec(e.to_string()))?;
    Ok((value, data.len() - end))
}

/// Checks the bracket depth of Cpon text without recursion.
///
/// The scan must see the text exactly as `shvproto`'s Cpon reader does, or brackets it
/// takes for nesting can hide from the count: strings (`"…"`, `b"…"`, `d"…"`, with
/// backslash escapes) and comments (`/* … */`, `// …\n`) are skipped. Comments matter:
/// a `"` inside `/*"*/` once made this scan treat all the following `[[[…` as string
/// content, and the reader then recursed until the stack overflowed (found while
/// writing the `cpon_parse` fuzz target; kept in `fuzz/regressions/cpon_parse/`). The block comment is ended the
/// way the reader ends it: after a `*` the next byte is consumed whatever it is, so
/// `**/` does not close a comment.
///
/// shvproto's Cpon reader is lenient with malformed text and may split it into tokens
/// differently from this scan (fuzzing found such inputs), so the depth count alone is
/// not a bound on its recursion. Every container it opens needs one of `[`, `{`, `<`,
/// so the number of those characters is: it is capped at
/// [`CPON_CONTAINERS_PER_LEVEL`] × `max_depth`, whatever strings and comments say.
pub fn check_cpon_depth(text: &str, max_depth: usize) -> Result<(), DecodeError> {
    let openers = text
        .bytes()
        .filter(|b| matches!(b, b'[' | b'{' | b'<'))
        .count();
    if openers > max_depth.saturating_mul(CPON_CONTAINERS_PER_LEVEL) {
        return Err(DecodeError::TooDeep(max_depth));
    }
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0usize;
    while i < bytes.len() {
        let c = bytes[i];
        i += 1;
        match c {
            b'"' => {
                // A string or blob/datetime body: up to the next unescaped quote.
                loop {
                    match bytes.get(i) {
                        None => return Err(DecodeError::Truncated),
                        Some(b'\\') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b'/' => match bytes.get(i) {
                Some(b'*') => {
                    i += 1;
                    loop {
                        let b = *bytes.get(i).ok_or(DecodeError::Truncated)?;
                        i += 1;
                        if b == b'*' {
                            let b = *bytes.get(i).ok_or(DecodeError::Truncated)?;
                            i += 1;
                            if b == b'/' {
                                break;
                            }
                        }
                    }
                }
                Some(b'/') => {
                    i += 1;
                    match bytes[i..].iter().position(|b| *b == b'\n') {
                        Some(n) => i += n + 1,
                        // The reader fails at the end of input inside a line comment.
                        None => return Err(DecodeError::Truncated),
                    }
                }
                // The reader rejects any other `/`; nothing after it is read.
                _ => {
                    return Err(DecodeError::Codec(format!(
                        "malformed comment at {}",
                        i - 1
                    )))
                }
            },
            b'[' | b'{' | b'<' => {
                depth += 1;
                if depth > max_depth {
                    return Err(DecodeError::TooDeep(max_depth));
                }
            }
            b']' | b'}' | b'>' => {
                depth = depth.checked_sub(1).ok_or(DecodeError::Unbalanced(i - 1))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// With [`MAX_DEPTH`], Cpon text may hold at most 1024 container openers (brackets in
/// strings count too): Cpon is read only from local input such as command lines.
pub const CPON_CONTAINERS_PER_LEVEL: usize = 16;

/// Decodes Cpon after the depth check.
pub fn from_cpon(text: &str) -> Result<RpcValue, DecodeError> {
    check_cpon_depth(text, MAX_DEPTH)?;
    RpcValue::from_cpon(text).map_err(|e| DecodeError::Codec(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_round_trip() {
        for n in [
            0u64,
            1,
            63,
            127,
            128,
            1000,
            16383,
            16384,
            1 << 20,
            1 << 27,
            1 << 28,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut v = Vec::new();
            write_uint(&mut v, n);
            let mut theirs = Vec::new();
            shvproto::ChainPackWriter::new(&mut theirs)
                .write_uint_data(n)
                .unwrap();
            assert_eq!(v, theirs, "n={n}");
            assert_eq!(read_uint(&v, 0).unwrap(), (n, v.len()), "n={n}");
        }
    }

    #[test]
    fn deep_nesting_rejected_before_decode() {
        let mut data = vec![cp::LIST; 100_000];
        data.extend(vec![cp::TERM; 100_000]);
        assert_eq!(from_chainpack(&data), Err(DecodeError::TooDeep(MAX_DEPTH)));
        let text = "[".repeat(100_000);
        assert_eq!(from_cpon(&text), Err(DecodeError::TooDeep(MAX_DEPTH)));
    }

    /// Regression (fuzzing): a quote inside a comment hid the brackets after it from
    /// the depth check, and `shvproto` overflowed the stack on 10^5 nested lists.
    #[test]
    fn cpon_comments_cannot_hide_nesting() {
        let deep = "[".repeat(100_000);
        for pre in ["/*\"*/", "//\"\n", "/* \\\" */", "/***/ /*\"**/*/"] {
            let text = format!("{pre}{deep}");
            assert!(from_cpon(&text).is_err(), "{pre:?}");
        }
        // Comments, and brackets inside strings and comments, are still fine.
        let v = from_cpon("/* [[[ \" */ [1, // ]]] \"\n \"[[\\\"\", b\"]\"] /**/").unwrap();
        assert_eq!(v.to_cpon(), r#"[1,"[[\"",b"]"]"#);
        assert!(from_cpon("/* never closed [[[").is_err());
    }

    #[test]
    fn shallow_values_decode() {
        let v = RpcValue::from_cpon(r#"<1:2>{"a":[1,2,{"b":b"x"}],"c":i{1:"\"["}}"#).unwrap();
        let cp = v.to_chainpack();
        assert_eq!(from_chainpack(&cp).unwrap(), v);
        assert_eq!(from_cpon(&v.to_cpon()).unwrap(), v);
    }

    #[test]
    fn truncated_and_garbage() {
        assert_eq!(
            from_chainpack(&[cp::STRING, 0x10, b'a']),
            Err(DecodeError::Truncated)
        );
        assert!(matches!(
            from_chainpack(&[0x84]),
            Err(DecodeError::InvalidType(0x84, 0))
        ));
        assert!(from_chainpack(&[cp::TERM]).is_err());
    }
}
