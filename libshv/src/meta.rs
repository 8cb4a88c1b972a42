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

/// UserId (tag 16) in the two forms peers use. Ours and pySHV's: a String, a chain of
/// `user:broker` entries joined by `;`, each broker on the way appending the login it
/// authenticated (`broker` alone for a request from its parent). The C++ brokers': a
/// Map `{"shvUser": user, "brokerId": broker}`, one entry that each broker overwrites
/// for its own clients' requests and leaves as it is for its parent's.
pub mod user_id {
    use std::borrow::Cow;

    use shvproto::{MetaMap, RpcValue, Value};

    use super::tag;

    pub const KEY_SHV_USER: &str = "shvUser";
    pub const KEY_BROKER_ID: &str = "brokerId";

    /// Whether `v` is a UserId of either form (Null: none).
    pub fn valid(v: &Value) -> bool {
        match v {
            Value::String(_) | Value::Null => true,
            Value::Map(m) => m
                .iter()
                .all(|(_, v)| matches!(v.value, Value::String(_) | Value::Null)),
            _ => false,
        }
    }

    /// The UserId as one readable chain: the String as it is, a Map as
    /// `shvUser:brokerId`; "" when there is none.
    pub fn chain(meta: &MetaMap) -> Cow<'_, str> {
        match meta.get(tag::USER_ID).map(|v| &v.value) {
            Some(Value::String(s)) => Cow::Borrowed(s.as_str()),
            Some(Value::Map(m)) => {
                let get = |k: &str| match m.get(k).map(|v| &v.value) {
                    Some(Value::String(s)) => s.as_str(),
                    _ => "",
                };
                Cow::Owned(entry(get(KEY_SHV_USER), get(KEY_BROKER_ID)))
            }
            _ => Cow::Borrowed(""),
        }
    }

    /// The user the UserId vouches for: its last entry, which the broker nearest to
    /// the receiver wrote for the login it authenticated. Everything before it is what
    /// the caller and the brokers above said, and a caller may write anything there.
    pub fn verified(meta: &MetaMap) -> Cow<'_, str> {
        match chain(meta) {
            Cow::Borrowed(s) => Cow::Borrowed(s.rsplit(';').next().unwrap_or("")),
            Cow::Owned(s) => Cow::Owned(s.rsplit(';').next().unwrap_or("").to_string()),
        }
    }

    /// A broker named `broker` forwards the request: for its own client's request
    /// (`user` Some) it adds that login; for its parent's (None) it adds its name.
    /// Either in the form the frame carries: appended to a String chain, or, as the
    /// C++ brokers do, written into a Map (which a parent's request keeps unchanged).
    pub fn append(meta: &mut MetaMap, user: Option<&str>, broker: &str) {
        let next = match meta.get(tag::USER_ID).map(|v| &v.value) {
            Some(Value::Map(m)) => {
                let Some(user) = user else { return };
                let mut m = (**m).clone();
                m.insert(KEY_SHV_USER.into(), RpcValue::from(user));
                m.insert(KEY_BROKER_ID.into(), RpcValue::from(broker));
                RpcValue::from(m)
            }
            Some(Value::String(s)) if !s.is_empty() => {
                RpcValue::from(format!("{s};{}", entry(user.unwrap_or(""), broker)))
            }
            _ => RpcValue::from(entry(user.unwrap_or(""), broker)),
        };
        meta.insert(tag::USER_ID, next);
    }

    fn entry(user: &str, broker: &str) -> String {
        match (user.is_empty(), broker.is_empty()) {
            (false, false) => format!("{user}:{broker}"),
            (false, true) => user.to_string(),
            (true, _) => broker.to_string(),
        }
    }
}

/// [`user_id::verified`]: the user a request's UserId vouches for.
pub fn verified_user(meta: &MetaMap) -> std::borrow::Cow<'_, str> {
    user_id::verified(meta)
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

    fn cpp(user: &str, broker: &str) -> RpcValue {
        let mut m = shvproto::Map::new();
        m.insert(user_id::KEY_SHV_USER.into(), RpcValue::from(user));
        m.insert(user_id::KEY_BROKER_ID.into(), RpcValue::from(broker));
        RpcValue::from(m)
    }

    #[test]
    fn a_cpp_map_reads_as_one_entry_and_is_overwritten_in_its_own_form() {
        let mut m = MetaMap::new();
        m.insert(tag::USER_ID, cpp("alice", "cppbroker"));
        assert_eq!(user_id::chain(&m), "alice:cppbroker");
        assert_eq!(verified_user(&m), "alice:cppbroker");
        // A request from our parent (the C++ broker): kept as it is.
        user_id::append(&mut m, None, "ours");
        assert_eq!(m.get(tag::USER_ID), Some(&cpp("alice", "cppbroker")));
        // Our own client's request that carried a Map: written as a C++ broker would.
        user_id::append(&mut m, Some("bob"), "ours");
        assert_eq!(m.get(tag::USER_ID), Some(&cpp("bob", "ours")));
        assert!(user_id::valid(&cpp("a", "b").value));
        let mut bad = shvproto::Map::new();
        bad.insert("shvUser".into(), RpcValue::from(1));
        assert!(!user_id::valid(&RpcValue::from(bad).value));
    }

    #[test]
    fn a_string_chain_is_appended_to() {
        let mut m = MetaMap::new();
        user_id::append(&mut m, Some("alice"), "site");
        assert_eq!(user_id::chain(&m), "alice:site");
        user_id::append(&mut m, None, "central");
        assert_eq!(user_id::chain(&m), "alice:site;central");
        assert_eq!(verified_user(&m), "central");
    }
}
