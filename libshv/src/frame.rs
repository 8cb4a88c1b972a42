//! A routable RPC frame: the meta decoded, the body kept as untouched bytes.
//!
//! Brokers route by the meta alone; the body (the IMap with param/result/error) is
//! carried as [`Bytes`] and written out byte for byte.

use bytes::Bytes;
use shvproto::{ChainPackReader, ChainPackWriter, MetaMap, Reader, RpcValue, Value, Writer};

use crate::meta::tag;
use crate::value::{self, DecodeError, MAX_DEPTH};

/// Format byte of a ChainPack RPC message in the Block framing.
pub const FORMAT_CHAINPACK: u8 = 1;
/// Format byte of ResetSession (with no payload).
pub const FORMAT_RESET_SESSION: u8 = 0;

#[derive(Clone, Debug, PartialEq)]
pub struct RpcFrame {
    pub meta: MetaMap,
    /// The ChainPack IMap body, verbatim.
    pub body: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
    Signal,
    Invalid,
}

/// Rejects a meta whose routing tags have the wrong type. Read leniently, such a frame
/// was misrouted rather than refused: `9:5` (ShvPath as Int) read as the root path and
/// got the root's `ls`, `10:[…]` (Method as List) made a request look like a response,
/// and `11:"x"` lost the caller path. A frame that breaks the types is not routed.
fn check_meta_types(meta: &MetaMap) -> Result<(), DecodeError> {
    let int = |v: &Value| match v {
        Value::Int(_) => true,
        Value::UInt(u) => i64::try_from(*u).is_ok(),
        _ => false,
    };
    for (t, ok) in [
        (tag::REQUEST_ID, &int as &dyn Fn(&Value) -> bool),
        (tag::SHV_PATH, &|v| matches!(v, Value::String(_))),
        (tag::METHOD, &|v| matches!(v, Value::String(_))),
        (tag::ACCESS, &|v| matches!(v, Value::String(_))),
        // Ours a String chain, the C++ brokers' a Map {shvUser, brokerId}.
        (tag::USER_ID, &crate::meta::user_id::valid),
        (tag::ACCESS_LEVEL, &int),
        (tag::SOURCE, &|v| matches!(v, Value::String(_))),
        (tag::REPEAT, &|v| matches!(v, Value::Bool(_))),
        (tag::TUNNEL_CTL, &|v| matches!(v, Value::IMap(_))),
        // Caller id stacks: Null/absent = empty, an Int, or a List of Ints.
        (tag::CALLER_IDS, &|v| stack_ok(v, &int)),
        (tag::REV_CALLER_IDS, &|v| stack_ok(v, &int)),
    ] {
        if let Some(v) = meta.get(t) {
            if !ok(&v.value) {
                // Not the value itself: it is the peer's, and may be megabytes.
                return Err(DecodeError::Codec(format!(
                    "meta tag {t} has the wrong type ({})",
                    v.type_name()
                )));
            }
        }
    }
    Ok(())
}

/// Largest MetaMap accepted, in encoded bytes and in values (real metas are a few
/// dozen values: ids, path, method, access, user id, caller id stacks, TunnelCtl).
pub const MAX_META_BYTES: usize = 8 * 1024;
pub const MAX_META_ITEMS: usize = 128;
/// Longest CallerIds / RevCallerIds stack (one entry per broker on the way).
pub const MAX_STACK: usize = 32;

fn stack_ok(v: &Value, int: &dyn Fn(&Value) -> bool) -> bool {
    match v {
        Value::Null => true,
        Value::List(l) => l.len() <= MAX_STACK && l.iter().all(|x| int(&x.value)),
        other => int(other),
    }
}

impl RpcFrame {
    /// Parses a ChainPack message payload (after the format byte): the MetaMap is decoded
    /// (depth-limited), the body is only checked to start like an IMap.
    pub fn parse(payload: Bytes) -> Result<Self, DecodeError> {
        if payload.first() != Some(&0x8b) {
            return Err(DecodeError::Codec(
                "message does not start with a MetaMap".into(),
            ));
        }
        // Bounded before it is decoded: a meta of a few kilobytes could otherwise
        // expand to megabytes of values, and every copy of the frame carries it.
        let meta_end = value::skip_container_bounded(&payload, 0, MAX_DEPTH, MAX_META_ITEMS)?;
        if meta_end > MAX_META_BYTES {
            return Err(DecodeError::Codec(format!(
                "MetaMap of {meta_end} bytes exceeds {MAX_META_BYTES}"
            )));
        }
        let mut slice = &payload[..meta_end];
        let meta = ChainPackReader::new(&mut slice)
            .try_read_meta()
            .map_err(|e| DecodeError::Codec(e.to_string()))?
            .ok_or_else(|| DecodeError::Codec("missing MetaMap".into()))?;
        check_meta_types(&meta)?;
        let body = payload.slice(meta_end..);
        match body.first() {
            None | Some(0x8a) => {}
            Some(_) => return Err(DecodeError::Codec("message body is not an IMap".into())),
        }
        Ok(RpcFrame { meta, body })
    }

    /// The ChainPack payload (MetaMap then body), without framing.
    pub fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 64);
        ChainPackWriter::new(&mut out)
            .write_meta(&self.meta)
            .expect("writing to a Vec cannot fail");
        out.extend_from_slice(if self.body.is_empty() {
            &[0x8a, 0xff]
        } else {
            &self.body
        });
        out
    }

    fn get_int(&self, t: i32) -> Option<i64> {
        value::as_i64(self.meta.get(t)?)
    }
    fn get_str(&self, t: i32) -> Option<&str> {
        match &self.meta.get(t)?.value {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<i64> {
        self.get_int(tag::REQUEST_ID)
    }
    pub fn shv_path(&self) -> &str {
        self.get_str(tag::SHV_PATH).unwrap_or("")
    }
    pub fn method(&self) -> Option<&str> {
        self.get_str(tag::METHOD)
    }
    pub fn source(&self) -> &str {
        self.get_str(tag::SOURCE).unwrap_or("get")
    }
    pub fn access_level(&self) -> Option<i64> {
        self.get_int(tag::ACCESS_LEVEL)
    }
    /// The UserId as one readable chain, whichever form it came in ("" for none).
    pub fn user_id(&self) -> std::borrow::Cow<'_, str> {
        crate::meta::user_id::chain(&self.meta)
    }
    pub fn tunnel_ctl(&self) -> Option<&RpcValue> {
        self.meta.get(tag::TUNNEL_CTL)
    }
    pub fn has_rev_caller_ids(&self) -> bool {
        self.meta.get(tag::REV_CALLER_IDS).is_some()
    }

    pub fn kind(&self) -> Kind {
        match (self.request_id().is_some(), self.method().is_some()) {
            (true, true) => Kind::Request,
            (true, false) => Kind::Response,
            (false, true) => Kind::Signal,
            (false, false) => Kind::Invalid,
        }
    }
    pub fn is_request(&self) -> bool {
        self.kind() == Kind::Request
    }
    pub fn is_response(&self) -> bool {
        self.kind() == Kind::Response
    }
    pub fn is_signal(&self) -> bool {
        self.kind() == Kind::Signal
    }

    pub fn set_shv_path(&mut self, path: &str) {
        if path.is_empty() {
            self.meta.remove(tag::SHV_PATH);
        } else {
            self.meta.insert(tag::SHV_PATH, RpcValue::from(path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_body_bytes() {
        let msg = RpcValue::from_cpon(r#"<1:1,8:42,9:"a/b",10:"get">i{1:[1,2,"x"]}"#).unwrap();
        let bytes = msg.to_chainpack();
        let f = RpcFrame::parse(Bytes::from(bytes.clone())).unwrap();
        assert_eq!(f.request_id(), Some(42));
        assert_eq!(f.shv_path(), "a/b");
        assert_eq!(f.method(), Some("get"));
        assert!(f.is_request());
        assert_eq!(f.payload(), bytes);
        let body = RpcValue::from_cpon(r#"i{1:[1,2,"x"]}"#)
            .unwrap()
            .to_chainpack();
        assert_eq!(&f.body[..], &body[..]);
    }

    #[test]
    fn rejects_deep_meta_and_non_imap_body() {
        let mut deep = vec![0x8b, 0x01];
        deep.extend(vec![0x88; 1000]);
        assert!(matches!(
            RpcFrame::parse(Bytes::from(deep)),
            Err(DecodeError::TooDeep(_))
        ));
        let bad = RpcValue::from_cpon("<8:1>[1]").unwrap().to_chainpack();
        assert!(RpcFrame::parse(Bytes::from(bad)).is_err());
        assert!(RpcFrame::parse(Bytes::from_static(&[0x88, 0xff])).is_err());
    }

    /// Found by the bad-input catalogue (tests/tests/e2e/catalogue.rs): wrong-typed routing
    /// tags were read as absent and the frame routed somewhere else.
    #[test]
    fn rejects_wrong_meta_types() {
        for bad in [
            r#"<1:1,8:"7",9:".app",10:"ping">i{}"#,
            r#"<1:1,8:7,9:5,10:"ls">i{}"#,
            r#"<1:1,8:7,9:".app",10:["ping"]>i{}"#,
            r#"<1:1,8:7,9:".app",10:"ping",11:{"a":1}>i{}"#,
            r#"<1:1,8:7,9:".app",10:"ping",11:["x"]>i{}"#,
            r#"<1:1,8:7,9:".app",10:"ping",17:"su">i{}"#,
            r#"<1:1,8:7,9:".app",10:"ping",16:5>i{}"#,
            r#"<1:1,8:7,11:1,15:"x">i{}"#,
        ] {
            let cp = RpcValue::from_cpon(bad).unwrap().to_chainpack();
            assert!(RpcFrame::parse(Bytes::from(cp)).is_err(), "{bad}");
        }
        let mut big = RpcValue::from_cpon(r#"<1:1,8:7,9:".app",10:"ping">i{}"#).unwrap();
        let meta = big.meta.as_mut().unwrap();
        meta.insert(tag::CALLER_IDS, RpcValue::from(1u64 << 63));
        assert!(RpcFrame::parse(Bytes::from(big.to_chainpack())).is_err());
        for good in [
            r#"<1:1,8:7,9:".app",10:"ping",11:[1,2u],13:null,16:"a:b",17:8u>i{}"#,
            r#"<1:1,9:"a",10:"chng",19:"get",20:true>i{}"#,
        ] {
            let cp = RpcValue::from_cpon(good).unwrap().to_chainpack();
            assert!(RpcFrame::parse(Bytes::from(cp)).is_ok(), "{good}");
        }
    }
}

#[cfg(test)]
mod meta_bounds {
    use super::*;

    #[test]
    fn large_or_numerous_metas_are_refused() {
        let mut meta = vec![0x8b, 0x41, 0x41, 0x4b, 0x88];
        meta.extend(std::iter::repeat_n(0x40u8, 1000));
        meta.extend([0xff, 0xff, 0x8a, 0xff]);
        assert!(RpcFrame::parse(Bytes::from(meta)).is_err());
        let mut meta = vec![0x8b, 0x41, 0x41, 0x49, 0x86];
        let (len, n) = value::uint_bytes(20_000);
        meta.extend(&len[..n]);
        meta.extend(std::iter::repeat_n(b'a', 20_000));
        meta.extend([0xff, 0x8a, 0xff]);
        assert!(RpcFrame::parse(Bytes::from(meta)).is_err());
        let ok = vec![
            0x8b, 0x41, 0x41, 0x4b, 0x88, 0x41, 0x42, 0xff, 0xff, 0x8a, 0xff,
        ];
        assert!(RpcFrame::parse(Bytes::from(ok)).is_ok());
    }
}
