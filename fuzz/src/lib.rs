//! Entry points shared by the fuzz targets (`fuzz_targets/*.rs`, nightly + libFuzzer) and
//! the stable corpus replay test (`libshv/tests/fuzz_corpus.rs`, which includes this
//! file by path), so that CI replays every corpus file through exactly the code the
//! fuzzers ran.
//!
//! Each function takes untrusted bytes and must never panic, overflow the stack or
//! allocate without bound. Beyond "no crash" they check cheap invariants (decoding in
//! chunks equals decoding at once; what decodes re-encodes and decodes again), because
//! those catch real bugs that a silent `Err` would hide.

use bytes::BytesMut;
use libshv::codec::{BlockCodec, Incoming};
use libshv::shvproto::RpcValue;
use libshv::tunnel::{LaunchParams, TunnelCtl};
use libshv::{value, RpcFrame, RpcMessage};
use tokio_util::codec::Decoder;

/// One fuzz entry point: takes untrusted bytes, must not panic.
pub type Entry = fn(&[u8]);

/// The corpus directory names, one per entry point.
pub const TARGETS: &[(&str, Entry)] = &[
    ("block_codec", block_codec),
    ("frame_parse", frame_parse),
    ("message_decode", message_decode),
    ("cpon_parse", cpon_parse),
    ("tunnel_ctl", tunnel_ctl),
    ("login_params", login_params),
    ("serial_decoder", serial_decoder),
    ("url_parse", url_parse),
];

/// Runs a codec over `chunks` of a stream until it wants more data or fails; returns a
/// printable trace of what it produced (compared between two chunkings).
fn run_codec(max_frame: usize, chunks: &[&[u8]]) -> Vec<String> {
    let mut codec = BlockCodec::new(max_frame);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => {
                    if let Incoming::Frame(f) = &item {
                        // What the broker does next with a frame: look at its kind,
                        // and re-encode it for forwarding.
                        let _ = (f.kind(), f.shv_path(), f.method(), f.request_id());
                        let _ = libshv::codec::encode_frame(f);
                    }
                    out.push(format!("{item:?}"));
                }
                Ok(None) => break,
                // A broken length prefix: the broker drops the connection here.
                Err(e) => {
                    out.push(format!("error: {e}"));
                    return out;
                }
            }
        }
    }
    out
}

/// Block frame reader over arbitrary chunk boundaries. Byte 0 picks the frame size
/// limit (small, so the oversized/drain path is reached), byte 1 the chunk size; the
/// result must not depend on how the stream was split.
pub fn block_codec(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let max_frame = match data[0] {
        0 => libshv::codec::DEFAULT_MAX_FRAME,
        n => usize::from(n),
    };
    let chunk = usize::from(data[1] % 16) + 1;
    let stream = &data[2..];
    let whole = run_codec(max_frame, &[stream]);
    let chunks: Vec<&[u8]> = stream.chunks(chunk).collect();
    let split = run_codec(max_frame, &chunks);
    assert_eq!(whole, split, "decoding depends on chunk boundaries");
}

/// The broker's hot path: meta-only parse of a message payload (after the format byte).
pub fn frame_parse(data: &[u8]) {
    let Ok(f) = RpcFrame::parse(bytes::Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = (f.kind(), f.shv_path(), f.method(), f.source(), f.user_id());
    let _ = (f.request_id(), f.access_level(), f.has_rev_caller_ids());
    let _ = libshv::meta::stack_from_value(f.meta.get(libshv::meta::tag::CALLER_IDS));
    let _ = libshv::meta::stack_from_value(f.meta.get(libshv::meta::tag::REV_CALLER_IDS));
    if let Some(Ok(ctl)) = TunnelCtl::from_frame(&f) {
        let _ = ctl.to_value();
    }
    // What the broker forwards must parse again at the next hop.
    let again = RpcFrame::parse(bytes::Bytes::from(f.payload()));
    assert!(again.is_ok(), "re-encoded frame does not parse: {again:?}");
}

/// Full decode of a message (an endpoint's view) and of a bare ChainPack value.
pub fn message_decode(data: &[u8]) {
    // As for Cpon: the ChainPack guard must not under-count at a small limit.
    if value::skip_value(data, 0, SMALL_DEPTH) == Ok(data.len()) {
        if let Ok(v) = RpcValue::from_chainpack(data) {
            assert!(
                depth(&v) <= SMALL_DEPTH,
                "depth guard under-counted {data:?}"
            );
        }
    }
    if let Ok(v) = value::from_chainpack(data) {
        let again = value::from_chainpack(&v.to_chainpack());
        assert!(again.is_ok(), "re-encoded value does not decode: {again:?}");
        let _ = v.to_cpon();
    }
    if let Ok(f) = RpcFrame::parse(bytes::Bytes::copy_from_slice(data)) {
        if let Ok(m) = RpcMessage::from_frame(&f) {
            let _ = m.result();
            let _ = m.param();
            let back = RpcMessage::from_frame(&m.to_frame());
            assert!(back.is_ok(), "re-encoded message does not decode: {back:?}");
        }
    }
}

/// Nesting depth as the guards count it (a MetaMap is a sibling of the value it
/// annotates), measured on `shvproto`'s own Cpon output: that text has no comments and
/// escapes every quote, so a plain bracket count outside strings is exact there.
fn depth(v: &RpcValue) -> usize {
    let (mut d, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for c in v.to_cpon().bytes() {
        match (in_str, esc, c) {
            (true, true, _) => esc = false,
            (true, false, b'\\') => esc = true,
            (true, false, b'"') => in_str = false,
            (true, false, _) => {}
            (false, _, b'"') => in_str = true,
            (false, _, b'[' | b'{' | b'<') => {
                d += 1;
                max = max.max(d);
            }
            (false, _, b']' | b'}' | b'>') => d = d.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Depth limit for the soundness checks: small, so that the fuzzer can reach it.
const SMALL_DEPTH: usize = 4;

/// Cpon text (shvcall parameters, shvrexec's stdin line).
pub fn cpon_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The guard must never under-count: whatever it lets through at a small limit
    // parses to a value no deeper than that limit. (If the guard were fooled, the parse
    // below would recurse past it; inputs are short, so that is a depth, not a crash.)
    if value::check_cpon_depth(text, SMALL_DEPTH).is_ok() {
        if let Ok(v) = RpcValue::from_cpon(text) {
            // Sound bound: the opener cap (the depth count follows the grammar, and
            // shvproto's lenient reader may tokenize malformed text differently).
            assert!(
                depth(&v) <= SMALL_DEPTH * value::CPON_CONTAINERS_PER_LEVEL,
                "depth guard under-counted {text:?}"
            );
        }
    }
    let Ok(v) = value::from_cpon(text) else {
        return;
    };
    let cpon = v.to_cpon();
    let again = value::from_cpon(&cpon);
    assert!(
        again.is_ok(),
        "re-encoded Cpon {cpon:?} does not parse: {again:?}"
    );
    // Not checked: Cpon -> ChainPack. shvproto's Cpon reader wraps integers that
    // overflow i64 (e.g. "-333…3" becomes i64::MIN), and its ChainPack writer cannot
    // encode i64::MIN (`abs()` overflows: a panic with debug assertions, undecodable
    // bytes without). Found by this target; see docs/SECURITY.md "Known issues".
}

/// TunnelCtl (meta tag 15) and the other tunnel inputs: launchRexec params and data.
pub fn tunnel_ctl(data: &[u8]) {
    let Ok(v) = value::from_chainpack(data) else {
        return;
    };
    if let Ok(ctl) = TunnelCtl::parse(&v) {
        let back = TunnelCtl::parse(&ctl.to_value());
        assert_eq!(back.as_ref(), Ok(&ctl), "TunnelCtl does not round-trip");
    }
    if let Ok(p) = LaunchParams::from_value(&v) {
        let _ = LaunchParams::from_value(&p.to_value()).expect("LaunchParams round trip");
    }
    let _ = libshv::tunnel::parse_data(&v);
    let _ = libshv::tunnel::CloseStatus::from_value(Some(&v));
}

/// The broker's `login` parameter parser (before any authentication).
pub fn login_params(data: &[u8]) {
    let Ok(v): Result<RpcValue, _> = value::from_chainpack(data) else {
        return;
    };
    let _ = libshv::login::parse_login(&v);
}

/// The Serial framing's reader (tcps, ssls, unixs, serial lines) over arbitrary chunk
/// boundaries. Byte 0 picks CRC on/off and a small size limit (so the skip path is
/// reached), byte 1 the chunk size. The result must not depend on the split, and every
/// message re-encodes to a frame that decodes to itself.
pub fn serial_decoder(data: &[u8]) {
    use libshv::transport::serial::{encode, SerialDecoder, SerialItem};
    if data.len() < 2 {
        return;
    }
    let crc = data[0] & 1 == 1;
    let max = usize::from(data[0] >> 1) + 1;
    let chunk = usize::from(data[1] % 16) + 1;
    let stream = &data[2..];
    let run = |chunks: &[&[u8]]| {
        let mut dec = SerialDecoder::new(crc, max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Ok(Some(item)) = dec.decode(&mut buf) {
                if let SerialItem::Message(m) = &item {
                    assert!(m.len() <= max, "a message beyond the limit came through");
                    let mut again = SerialDecoder::new(crc, max);
                    let mut b = BytesMut::from(&encode(m, crc)[..]);
                    match again.decode(&mut b) {
                        Ok(Some(SerialItem::Message(m2))) => assert_eq!(&m2, m),
                        other => panic!("re-encoded message did not decode: {other:?}"),
                    }
                }
                out.push(format!("{item:?}"));
            }
        }
        out
    };
    let whole = run(&[stream]);
    let chunks: Vec<&[u8]> = stream.chunks(chunk).collect();
    assert_eq!(whole, run(&chunks), "decoding depends on chunk boundaries");
}

/// URLs (command lines, configs) and tunnel hosts (sent by a broker above): parsing
/// never panics, a parsed URL prints and parses back to the same transport, and a
/// tunnel host never names a local socket or serial line.
pub fn url_parse(data: &[u8]) {
    use libshv::url::{Endpoint, RpcUrl};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(u) = RpcUrl::parse(text) {
        let shown = u.without_secrets();
        let back = RpcUrl::parse(&shown)
            .unwrap_or_else(|e| panic!("{shown:?} (from {text:?}) does not parse: {e}"));
        assert_eq!(back.transport(), u.transport(), "{text:?} → {shown:?}");
        let _ = libshv::url::redact(text);
    }
    if let Ok(t) = libshv::tunnel::parse_tunnel_address(text, Some(1)) {
        assert!(
            matches!(t.endpoint, Endpoint::Tcp { .. }),
            "{text:?} → {t:?}"
        );
    }
}
