//! A fully decoded RPC message, for endpoints (clients, devices, the broker's own API).

use bytes::Bytes;
use shvproto::{IMap, MetaMap, RpcValue, Value};

use crate::frame::RpcFrame;
use crate::meta::{key, tag};
use crate::value::{self, DecodeError};

/// RPC error codes (SHV 3).
pub mod code {
    pub const METHOD_NOT_FOUND: i64 = 2;
    pub const INVALID_PARAM: i64 = 3;
    pub const METHOD_CALL_EXCEPTION: i64 = 8;
    pub const LOGIN_REQUIRED: i64 = 10;
    pub const USER_ID_REQUIRED: i64 = 11;
    pub const NOT_IMPLEMENTED: i64 = 12;
    pub const TRY_AGAIN_LATER: i64 = 13;
    pub const REQUEST_INVALID: i64 = 14;
}

/// The SHV 3 name of an RPC error code, as the specification spells it.
pub fn code_name(code: i64) -> Option<&'static str> {
    Some(match code {
        1 => "InvalidRequest",
        2 => "MethodNotFound",
        3 => "InvalidParam",
        4 => "InternalError",
        5 => "ParseError",
        6 => "MethodCallTimeout",
        7 => "MethodCallCancelled",
        8 => "MethodCallException",
        9 => "Unknown",
        10 => "LoginRequired",
        11 => "UserIDRequired",
        12 => "NotImplemented",
        13 => "TryAgainLater",
        14 => "RequestInvalid",
        _ => return None,
    })
}

/// Shown as its message and its code's name (`no such path (MethodNotFound)`): a bare
/// `RPC error 2: …` read like an exit status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({})", code_name(*code).map_or_else(|| format!("RPC error code {code}"), str::to_string))]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }
    pub fn method_not_found(message: impl Into<String>) -> Self {
        Self::new(code::METHOD_NOT_FOUND, message)
    }
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_PARAM, message)
    }
    pub fn to_value(&self) -> RpcValue {
        let mut m = IMap::new();
        m.insert(1, RpcValue::from(self.code));
        m.insert(2, RpcValue::from(self.message.as_str()));
        RpcValue::from(m)
    }
    pub fn from_value(v: &RpcValue) -> Self {
        match &v.value {
            Value::IMap(m) => RpcError {
                code: m.get(&1).map(|c| c.as_int()).unwrap_or(0),
                message: m
                    .get(&2)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            },
            // SHV 2 peers sent a Map with "code"/"message".
            Value::Map(m) => RpcError {
                code: m.get("code").map(|c| c.as_int()).unwrap_or(0),
                message: m
                    .get("message")
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            },
            _ => RpcError::new(0, v.to_cpon()),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RpcMessage {
    pub meta: MetaMap,
    pub body: IMap,
}

fn base_meta() -> MetaMap {
    let mut meta = MetaMap::new();
    meta.insert(tag::META_TYPE_ID, RpcValue::from(1));
    meta
}

impl RpcMessage {
    pub fn new_request(id: i64, path: &str, method: &str, param: Option<RpcValue>) -> Self {
        let mut meta = base_meta();
        meta.insert(tag::REQUEST_ID, RpcValue::from(id));
        if !path.is_empty() {
            meta.insert(tag::SHV_PATH, RpcValue::from(path));
        }
        meta.insert(tag::METHOD, RpcValue::from(method));
        let mut body = IMap::new();
        if let Some(p) = param {
            body.insert(key::PARAM, p);
        }
        RpcMessage { meta, body }
    }

    pub fn new_signal(path: &str, signal: &str, source: &str, param: Option<RpcValue>) -> Self {
        let mut meta = base_meta();
        if !path.is_empty() {
            meta.insert(tag::SHV_PATH, RpcValue::from(path));
        }
        meta.insert(tag::METHOD, RpcValue::from(signal));
        if source != "get" {
            meta.insert(tag::SOURCE, RpcValue::from(source));
        }
        let mut body = IMap::new();
        if let Some(p) = param {
            body.insert(key::PARAM, p);
        }
        RpcMessage { meta, body }
    }

    /// A response skeleton for a request meta: copies RequestId and CallerIds.
    pub fn response_to(request_meta: &MetaMap) -> Self {
        let mut meta = base_meta();
        for t in [tag::REQUEST_ID, tag::CALLER_IDS] {
            if let Some(v) = request_meta.get(t) {
                meta.insert(t, v.clone());
            }
        }
        RpcMessage {
            meta,
            body: IMap::new(),
        }
    }

    pub fn with_result(mut self, result: RpcValue) -> Self {
        self.body.insert(key::RESULT, result);
        self
    }
    pub fn with_error(mut self, err: &RpcError) -> Self {
        self.body.insert(key::ERROR, err.to_value());
        self
    }
    pub fn with_result_or_error(self, r: Result<RpcValue, RpcError>) -> Self {
        match r {
            Ok(v) => self.with_result(v),
            Err(e) => self.with_error(&e),
        }
    }

    pub fn param(&self) -> Option<&RpcValue> {
        self.body.get(&key::PARAM)
    }
    pub fn result(&self) -> Result<RpcValue, RpcError> {
        if let Some(e) = self.body.get(&key::ERROR) {
            return Err(RpcError::from_value(e));
        }
        Ok(self
            .body
            .get(&key::RESULT)
            .cloned()
            .unwrap_or_else(RpcValue::null))
    }

    pub fn from_frame(frame: &RpcFrame) -> Result<Self, DecodeError> {
        let body = if frame.body.is_empty() {
            IMap::new()
        } else {
            // Trailing bytes are ignored as the C++ peers ignore them (see
            // `from_chainpack_prefix`); routing never re-encodes a body, so they are
            // forwarded as they came.
            match value::from_chainpack_prefix(&frame.body)?.0.value {
                Value::IMap(m) => *m,
                _ => return Err(DecodeError::Codec("message body is not an IMap".into())),
            }
        };
        Ok(RpcMessage {
            meta: frame.meta.clone(),
            body,
        })
    }

    pub fn to_frame(&self) -> RpcFrame {
        let body = RpcValue::from(self.body.clone()).to_chainpack();
        RpcFrame {
            meta: self.meta.clone(),
            body: Bytes::from(body),
        }
    }

    pub fn into_frame(self) -> RpcFrame {
        let body = RpcValue::from(self.body).to_chainpack();
        RpcFrame {
            meta: self.meta,
            body: Bytes::from(body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_written_twice_reads_as_its_first_value() {
        // What shvapp's pinned libshv sends: the body's bytes twice in one frame.
        let req = RpcMessage::new_request(2, "", "login", Some(RpcValue::from("x")));
        let mut f = req.to_frame();
        let mut twice = f.body.to_vec();
        twice.extend_from_slice(&f.body);
        f.body = Bytes::from(twice);
        let back = RpcMessage::from_frame(&f).unwrap();
        assert_eq!(back.param(), Some(&RpcValue::from("x")));
        // A truncated first value is still an error.
        f.body = f.body.slice(..3);
        assert!(RpcMessage::from_frame(&f).is_err());
    }

    #[test]
    fn request_response_round_trip() {
        let req = RpcMessage::new_request(3, "a/b", "set", Some(RpcValue::from(42)));
        let f = req.to_frame();
        assert!(f.is_request());
        let back = RpcMessage::from_frame(&f).unwrap();
        assert_eq!(back.param(), Some(&RpcValue::from(42)));
        let resp =
            RpcMessage::response_to(&back.meta).with_error(&RpcError::method_not_found("nope"));
        let rf = resp.to_frame();
        assert!(rf.is_response());
        let e = RpcMessage::from_frame(&rf).unwrap().result().unwrap_err();
        assert_eq!(e, RpcError::new(2, "nope"));
    }
}
