//! Describing a node's methods the way `dir` answers, and answering `dir` and `ls`: one
//! encoding for the broker's own nodes, devices (shvagent) and test devices.
//!
//! Types use the RPC type notation current peers use: `n` Null, `b` Bool, `i` Int,
//! `s` String, `[s]` a List of Strings, `{b}` a Map of Bools, `!name` a named type, `|`
//! alternatives.

use shvproto::{IMap, Map, RpcValue, Value};

use crate::access::level;

/// `dir` method flags.
pub mod flag {
    pub const GETTER: i64 = 1 << 1;
    pub const SETTER: i64 = 1 << 2;
    pub const LARGE_RESULT: i64 = 1 << 3;
    pub const NOT_IDEMPOTENT: i64 = 1 << 4;
    pub const USER_ID_REQUIRED: i64 = 1 << 5;
}

/// One method of a node as `dir` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodDesc {
    pub name: &'static str,
    pub flags: i64,
    pub param: &'static str,
    pub result: &'static str,
    /// The access level needed (as `dir` shows it).
    pub access: i64,
    /// Signals the method's node emits: (name, value type).
    pub signals: &'static [(&'static str, &'static str)],
}

impl MethodDesc {
    pub const fn new(
        name: &'static str,
        flags: i64,
        param: &'static str,
        result: &'static str,
        access: i64,
    ) -> Self {
        MethodDesc {
            name,
            flags,
            param,
            result,
            access,
            signals: &[],
        }
    }

    /// A getter: no parameter, returns `result`.
    pub const fn getter(name: &'static str, result: &'static str, access: i64) -> Self {
        Self::new(name, flag::GETTER, "n", result, access)
    }

    pub const fn with_signals(self, signals: &'static [(&'static str, &'static str)]) -> Self {
        MethodDesc { signals, ..self }
    }

    /// The `dir` entry as peers encode it: name, flags and access always; param and
    /// result only when not Null; signals only when there are any (Null for a signal
    /// whose type is the method's result).
    pub fn to_value(&self) -> RpcValue {
        let mut e = IMap::new();
        e.insert(1, RpcValue::from(self.name));
        e.insert(2, RpcValue::from(self.flags));
        if self.param != "n" {
            e.insert(3, RpcValue::from(self.param));
        }
        if self.result != "n" {
            e.insert(4, RpcValue::from(self.result));
        }
        e.insert(5, RpcValue::from(self.access));
        if !self.signals.is_empty() {
            let mut sigs = Map::new();
            for (n, t) in self.signals {
                let t = if *t == self.result {
                    RpcValue::null()
                } else {
                    RpcValue::from(*t)
                };
                sigs.insert(n.to_string(), t);
            }
            e.insert(6, RpcValue::from(sigs));
        }
        RpcValue::from(e)
    }
}

/// `dir`, which every node has.
pub const DIR: MethodDesc = MethodDesc::new("dir", 0, "n|b|s", "[!dir]|b", level::BROWSE);
/// `ls`, which every node has.
pub const LS: MethodDesc =
    MethodDesc::new("ls", 0, "s|n", "[s]|b", level::BROWSE).with_signals(&[("lsmod", "{b}")]);

/// The answer to `dir(param)` on a node with `methods`: every descriptor, or with a
/// String parameter whether that method exists.
pub fn dir<'a>(
    methods: impl IntoIterator<Item = &'a MethodDesc>,
    param: Option<&RpcValue>,
) -> RpcValue {
    match param.map(|p| &p.value) {
        Some(Value::String(name)) => {
            RpcValue::from(methods.into_iter().any(|m| m.name == name.as_str()))
        }
        _ => RpcValue::from(
            methods
                .into_iter()
                .map(MethodDesc::to_value)
                .collect::<Vec<_>>(),
        ),
    }
}

/// The answer to `ls(param)` on a node with `children`: their names, or with a String
/// parameter whether that child exists.
pub fn ls<S: AsRef<str>>(children: &[S], param: Option<&RpcValue>) -> RpcValue {
    match param.map(|p| &p.value) {
        Some(Value::String(name)) => {
            RpcValue::from(children.iter().any(|c| c.as_ref() == name.as_str()))
        }
        _ => RpcValue::from(
            children
                .iter()
                .map(|c| RpcValue::from(c.as_ref()))
                .collect::<Vec<_>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_entries_are_encoded_like_peers_do() {
        assert_eq!(
            DIR.to_value().to_cpon(),
            r#"i{1:"dir",2:0,3:"n|b|s",4:"[!dir]|b",5:1}"#
        );
        assert_eq!(
            LS.to_value().to_cpon(),
            r#"i{1:"ls",2:0,3:"s|n",4:"[s]|b",5:1,6:{"lsmod":"{b}"}}"#
        );
        let g = MethodDesc::getter("get", "i", level::READ).with_signals(&[("chng", "i")]);
        assert_eq!(
            g.to_value().to_cpon(),
            r#"i{1:"get",2:2,4:"i",5:8,6:{"chng":null}}"#
        );
        let ping = MethodDesc::new("ping", 0, "n", "n", level::BROWSE);
        assert_eq!(ping.to_value().to_cpon(), r#"i{1:"ping",2:0,5:1}"#);
    }

    #[test]
    fn dir_and_ls_answers() {
        let methods = [DIR, LS];
        assert!(dir(&methods, Some(&RpcValue::from("ls"))).as_bool());
        assert!(!dir(&methods, Some(&RpcValue::from("x"))).as_bool());
        assert_eq!(dir(&methods, None).as_list().len(), 2);
        assert_eq!(ls(&["a", "b"], None).to_cpon(), r#"["a","b"]"#);
        assert!(ls(&["a"], Some(&RpcValue::from("a"))).as_bool());
    }
}
