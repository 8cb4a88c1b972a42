//! Meta tags of an RPC message and the CallerIds / RevCallerIds stack helpers.

use shvproto::{MetaMap, RpcValue, Value};

pub mod tag {
    pub const META_TYPE_ID: i32 = 1;
    pub const REQUEST_ID: i32 = 8;
    pub const SHV_PATH: i32 = 9;
    pub const METHOD: i32 = 10;
    pub const CALLER_IDS: i32 = 11;
    pub const REV_CALLER_IDS: i32 = 13;
    pub const ACCESS: i32 = 14;
    pub const TUNNEL_CTL: i32 = 15;
    pub const USER_ID: i32 = 16;
    pub const ACCESS_LEVEL: i32 = 17;
    pub const SOURCE: i32 = 19;
    pub const REPEAT: i32 = 20;
}

/// Body keys of the message IMap.
pub mod key {
    pub const PARAM: i32 = 1;
    pub const RESULT: i32 = 2;
    pub const ERROR: i32 = 3;
    pub const DELAY: i32 = 4;
    pub const ABORT: i32 = 5;
}

/// Reads a CallerIds-style stack: Null/absent = empty, Int = one, List = top last.
pub fn stack_from_value(v: Option<&RpcValue>) -> Vec<i64> {
    match v.map(|v| &v.value) {
        Some(Value::Int(i)) => vec![*i],
        // Connection ids are i64; a UInt above i64::MAX is no id (a cast would make it
        // i64::MIN, which shvproto's ChainPack writer cannot encode: it panics on it).
        Some(Value::UInt(i)) => i64::try_from(*i).into_iter().collect(),
        Some(Value::List(l)) => l.iter().filter_map(crate::value::as_i64).collect(),
        _ => Vec::new(),
    }
}

/// Is the stack in `v` exactly `want`? ([`stack_from_value`] without building it: asked
/// for every tunnel frame.)
pub fn stack_eq(v: Option<&RpcValue>, want: &[i64]) -> bool {
    match v.map(|v| &v.value) {
        Some(Value::Int(i)) => want == [*i],
        Some(Value::UInt(i)) => match i64::try_from(*i) {
            Ok(i) => want == [i],
            Err(_) => want.is_empty(),
        },
        Some(Value::List(l)) => l
            .iter()
            .filter_map(crate::value::as_i64)
            .eq(want.iter().copied()),
        _ => want.is_empty(),
    }
}

/// The canonical wire form of a stack: Null for empty, Int for one, List otherwise.
pub fn stack_to_value(ids: &[i64]) -> RpcValue {
    match ids {
        [] => RpcValue::null(),
        [one] => RpcValue::from(*one),
        many => RpcValue::from(many.iter().map(|i| RpcValue::from(*i)).collect::<Vec<_>>()),
    }
}

/// Pushes `id` onto the stack stored under `tag`.
pub fn push_id(meta: &mut MetaMap, tag: i32, id: i64) {
    let mut ids = stack_from_value(meta.get(tag));
    ids.push(id);
    meta.insert(tag, stack_to_value(&ids));
}

/// Pops the top of the stack stored under `tag`; an emptied stack removes the tag.
pub fn pop_id(meta: &mut MetaMap, tag: i32) -> Option<i64> {
    let mut ids = stack_from_value(meta.get(tag));
    let top = ids.pop();
    if ids.is_empty() {
        meta.remove(tag);
    } else {
        meta.insert(tag, stack_to_value(&ids));
    }
    top
}

#[cfg(test)]
mod tests {
    #[test]
    fn stack_eq_agrees_with_stack_from_value() {
        let values = [
            None,
            Some(RpcValue::null()),
            Some(RpcValue::from(7)),
            Some(RpcValue::from(u64::MAX)),
            Some(RpcValue::from(vec![RpcValue::from(1), RpcValue::from(2)])),
            Some(RpcValue::from(vec![RpcValue::from(1), RpcValue::from("x")])),
            Some(RpcValue::from("not a stack")),
        ];
        let wants: [&[i64]; 5] = [&[], &[7], &[1], &[1, 2], &[2, 1]];
        for v in &values {
            for want in wants {
                assert_eq!(
                    stack_eq(v.as_ref(), want),
                    stack_from_value(v.as_ref()) == want,
                    "{v:?} {want:?}"
                );
            }
        }
    }

    use super::*;

    #[test]
    fn push_pop_shapes() {
        let mut m = MetaMap::new();
        push_id(&mut m, tag::CALLER_IDS, 5);
        assert_eq!(m.get(tag::CALLER_IDS), Some(&RpcValue::from(5i64)));
        push_id(&mut m, tag::CALLER_IDS, 7);
        assert_eq!(m.get(tag::CALLER_IDS).unwrap().to_cpon(), "[5,7]");
        push_id(&mut m, tag::CALLER_IDS, 9);
        assert_eq!(m.get(tag::CALLER_IDS).unwrap().to_cpon(), "[5,7,9]");
        assert_eq!(pop_id(&mut m, tag::CALLER_IDS), Some(9));
        assert_eq!(pop_id(&mut m, tag::CALLER_IDS), Some(7));
        assert_eq!(m.get(tag::CALLER_IDS), Some(&RpcValue::from(5i64)));
        assert_eq!(pop_id(&mut m, tag::CALLER_IDS), Some(5));
        assert!(m.get(tag::CALLER_IDS).is_none());
        assert_eq!(pop_id(&mut m, tag::CALLER_IDS), None);
    }

    /// Regression: `11:2^63u` (or 13) from a client became i64::MIN on push, and the
    /// broker's writer panicked encoding it (debug builds): in the broker task for a
    /// signal with RevCallerIds, which stopped all routing.
    #[test]
    fn uint_above_i64_is_no_caller_id() {
        let big = RpcValue::from(1u64 << 63);
        assert!(stack_from_value(Some(&big)).is_empty());
        let list = RpcValue::from(vec![RpcValue::from(u64::MAX), RpcValue::from(7u64)]);
        assert_eq!(stack_from_value(Some(&list)), vec![7]);
        let mut m = MetaMap::new();
        m.insert(tag::REV_CALLER_IDS, big);
        push_id(&mut m, tag::REV_CALLER_IDS, 4);
        assert_eq!(m.get(tag::REV_CALLER_IDS), Some(&RpcValue::from(4i64)));
        // Why it matters: shvproto cannot encode i64::MIN (abs() overflows).
        if cfg!(debug_assertions) {
            let r = std::panic::catch_unwind(|| RpcValue::from(i64::MIN).to_chainpack());
            assert!(
                r.is_err(),
                "shvproto encodes i64::MIN now; the guard may go"
            );
        }
    }

    #[test]
    fn lenient_input_shapes() {
        let empty = RpcValue::from_cpon("[]").unwrap();
        assert!(stack_from_value(Some(&empty)).is_empty());
        let one = RpcValue::from_cpon("[3]").unwrap();
        assert_eq!(stack_from_value(Some(&one)), vec![3]);
        assert!(stack_from_value(Some(&RpcValue::null())).is_empty());
        let mut m = MetaMap::new();
        m.insert(tag::REV_CALLER_IDS, RpcValue::null());
        push_id(&mut m, tag::REV_CALLER_IDS, 4);
        assert_eq!(m.get(tag::REV_CALLER_IDS), Some(&RpcValue::from(4i64)));
    }
}

/// The user a request's UserId (`meta`'s tag 16) vouches for: the last entry, which the
/// broker nearest to the receiver appended for the login it authenticated. Everything
/// before it is what the caller and the brokers above said, and a caller may write
/// anything there.
pub fn verified_user(meta: &MetaMap) -> &str {
    let chain = meta
        .get(crate::meta::tag::USER_ID)
        .map(|u| u.as_str())
        .unwrap_or("");
    chain.rsplit(';').next().unwrap_or("")
}

#[cfg(test)]
mod verified_user_tests {
    use super::*;

    #[test]
    fn the_last_entry_is_the_verified_user() {
        let mut m = MetaMap::new();
        assert_eq!(verified_user(&m), "");
        m.insert(
            tag::USER_ID,
            RpcValue::from("admin:forged;alice:shv1;bob:shv2"),
        );
        assert_eq!(verified_user(&m), "bob:shv2");
    }
}
