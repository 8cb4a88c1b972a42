//! A device tree: describing a node's methods the way `dir` answers, and resolving a
//! request on a node ([`Node::resolve`]: method, access, `ls` and `dir` answered), once
//! for the broker's own nodes, devices (shvagent) and test devices.
//!
//! Types use the RPC type notation current peers use: `n` Null, `b` Bool, `i` Int,
//! `s` String, `[s]` a List of Strings, `{b}` a Map of Bools, `!name` a named type, `|`
//! alternatives.

use shvproto::{IMap, Map, RpcValue, Value};

use crate::access::{level, level_name};
use crate::logsafe::shown;
use crate::message::RpcError;

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
    /// The access level `dir` shows.
    pub access: i64,
    /// The level a call needs: `access` unless [`MethodDesc::callable_from`] lowered it.
    pub call_access: i64,
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
            call_access: access,
            signals: &[],
        }
    }

    /// Callable from `level` on, whatever `dir` shows (the broker's `.app` getters:
    /// every client must learn the SHV version, whatever its roles).
    pub const fn callable_from(self, level: i64) -> Self {
        MethodDesc {
            call_access: level,
            ..self
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

/// A node of a device tree as its owner describes it for one request: the methods `dir`
/// lists (in order, `dir` and `ls` among them), those it answers without listing them
/// (extensions that peers comparing `dir` must not see), and its children.
#[derive(Debug, Clone, Default)]
pub struct Node<'a> {
    methods: Vec<&'a MethodDesc>,
    unlisted: Vec<&'a MethodDesc>,
    children: Vec<String>,
}

/// What is left of a request once its node has done what every node does.
#[derive(Debug)]
pub enum Resolved<'a> {
    /// `ls` or `dir`, answered from the node's description.
    Answer(RpcValue),
    /// One of the owner's methods, allowed at the request's level: the owner runs it.
    Call(&'a MethodDesc),
}

impl<'a> Node<'a> {
    pub fn new<C: Into<String>>(
        methods: impl IntoIterator<Item = &'a MethodDesc>,
        children: impl IntoIterator<Item = C>,
    ) -> Node<'a> {
        Node {
            methods: methods.into_iter().collect(),
            unlisted: Vec::new(),
            children: children.into_iter().map(Into::into).collect(),
        }
    }

    /// Methods answered but not listed by `dir` (a `dir` for one name still finds them).
    pub fn with_unlisted(mut self, methods: impl IntoIterator<Item = &'a MethodDesc>) -> Self {
        self.unlisted.extend(methods);
        self
    }

    /// Finds `method` on this node (at `path`) and checks the request's `level`; answers
    /// `ls` and `dir` itself. A missing method and too low a level are both
    /// MethodNotFound, as SHV 3 answers "no access".
    pub fn resolve(
        &self,
        path: &str,
        method: &str,
        level: i64,
        param: Option<&RpcValue>,
    ) -> Result<Resolved<'a>, RpcError> {
        let all = || self.methods.iter().chain(&self.unlisted).copied();
        let Some(desc) = all().find(|m| m.name == method) else {
            return Err(RpcError::method_not_found(format!(
                "no method '{}' on '{}'",
                shown(method),
                shown(path)
            )));
        };
        if level < desc.call_access {
            return Err(RpcError::method_not_found(format!(
                "access denied: {}:{} needs '{}', you have '{}'",
                shown(path),
                shown(method),
                level_name(desc.call_access),
                level_name(level)
            )));
        }
        Ok(match method {
            "ls" => Resolved::Answer(ls(&self.children, param)),
            "dir" => Resolved::Answer(match param.map(|p| &p.value) {
                // Whether a method exists: the unlisted ones exist too.
                Some(Value::String(_)) => dir(all(), param),
                _ => dir(self.methods.iter().copied(), None),
            }),
            _ => Resolved::Call(desc),
        })
    }
}

/// The answer for a path that has no node.
pub fn no_such_path(path: &str) -> RpcError {
    RpcError::method_not_found(format!("no such path: '{}'", shown(path)))
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

    #[test]
    fn resolve_checks_method_and_level_and_answers_ls_and_dir() {
        let get = MethodDesc::getter("get", "i", level::READ);
        let hidden = MethodDesc::new("x", 0, "n", "n", level::WRITE);
        let version = MethodDesc::getter("v", "s", level::READ).callable_from(level::BROWSE);
        let methods = [DIR, LS, get, version];
        let n = Node::new(&methods, ["a"]).with_unlisted([&hidden]);
        let answer = |m: &str, l: i64, p: Option<RpcValue>| match n.resolve("p", m, l, p.as_ref()) {
            Ok(Resolved::Answer(v)) => Ok(v.to_cpon()),
            Ok(Resolved::Call(d)) => Ok(format!("call {}", d.name)),
            Err(e) => Err(e.message),
        };
        assert_eq!(answer("ls", level::BROWSE, None).unwrap(), r#"["a"]"#);
        assert_eq!(answer("get", level::READ, None).unwrap(), "call get");
        assert_eq!(answer("v", level::BROWSE, None).unwrap(), "call v");
        let e = answer("get", level::BROWSE, None).unwrap_err();
        assert_eq!(e, "access denied: p:get needs 'rd', you have 'bws'");
        let e = answer("nope", level::ADMIN, None).unwrap_err();
        assert_eq!(e, "no method 'nope' on 'p'");
        // `dir` lists the listed ones only, but finds an unlisted one by name.
        let d = n.resolve("p", "dir", level::BROWSE, None).unwrap();
        let Resolved::Answer(d) = d else { panic!() };
        assert_eq!(d.as_list().len(), 4);
        assert_eq!(
            answer("dir", level::BROWSE, Some("x".into())).unwrap(),
            "true"
        );
        assert_eq!(answer("x", level::WRITE, None).unwrap(), "call x");
        assert_eq!(no_such_path("q\n").message, "no such path: 'q\\n'");
    }
}
