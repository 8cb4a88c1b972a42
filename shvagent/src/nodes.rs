//! The agent's nodes (the root with the remote-shell methods, and `.app`), and the
//! access level a request was granted.

use libshv::access::level;
use libshv::message::RpcError;
use libshv::meta::tag;
use libshv::node::{self, flag, MethodDesc};
use libshv::shvproto::Value;
use libshv::RpcValue;

use crate::COMMAND_ACCESS;
/// The agent's nodes: the root with the remote-shell methods, and `.app`.
const ROOT_METHODS: &[MethodDesc] = &[
    node::DIR,
    node::LS,
    MethodDesc::new(
        "launchRexec",
        flag::NOT_IDEMPOTENT,
        "{method:s,params:{cmd:[s],cols:i,rows:i,env:{s},cwd:s}}",
        "n",
        COMMAND_ACCESS,
    ),
    MethodDesc::new(
        "runCmd",
        flag::NOT_IDEMPOTENT,
        "s|[s]|{cmd:s|[s],cwd:s,env:{s}}",
        "[i,s|b,s|b]",
        COMMAND_ACCESS,
    ),
];
const APP_METHODS: &[MethodDesc] = &[
    node::DIR,
    node::LS,
    MethodDesc::getter("shvVersionMajor", "i", level::BROWSE),
    MethodDesc::getter("shvVersionMinor", "i", level::BROWSE),
    MethodDesc::getter("name", "s", level::BROWSE),
    MethodDesc::getter("version", "s", level::BROWSE),
    MethodDesc::new("ping", 0, "n", "n", level::BROWSE),
];

/// A node's methods and children; None for a path the agent does not have.
pub(crate) fn node_of(path: &str) -> Option<(&'static [MethodDesc], &'static [&'static str])> {
    match path {
        "" => Some((ROOT_METHODS, &[".app"])),
        ".app" => Some((APP_METHODS, &[])),
        _ => None,
    }
}

pub(crate) fn dir(path: &str, param: Option<&RpcValue>) -> Result<RpcValue, RpcError> {
    let (methods, _) = node_of(path).ok_or_else(|| no_such_path(path))?;
    Ok(node::dir(methods, param))
}

pub(crate) fn ls(path: &str, param: Option<&RpcValue>) -> Result<RpcValue, RpcError> {
    let (_, children) = node_of(path).ok_or_else(|| no_such_path(path))?;
    Ok(node::ls(children, param))
}

pub(crate) fn no_such_path(path: &str) -> RpcError {
    RpcError::method_not_found(format!("no such path: '{path}'"))
}

/// The access level the broker granted this request; a request from a broker that
/// does not set one (SHV 2) is trusted, as the broker already checked it.
pub(crate) fn granted_level(meta: &libshv::shvproto::MetaMap) -> i64 {
    match meta.get(tag::ACCESS_LEVEL).and_then(libshv::value::as_i64) {
        Some(l) => l,
        None => match meta.get(tag::ACCESS).map(|v| &v.value) {
            Some(Value::String(s)) => libshv::access::level_from_access(s).unwrap_or(level::ADMIN),
            _ => level::ADMIN,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_and_ls() {
        let d = dir("", None).unwrap();
        let names: Vec<_> = d
            .as_list()
            .iter()
            .map(|m| m.get(1).unwrap().as_str().to_string())
            .collect();
        assert_eq!(names, ["dir", "ls", "launchRexec", "runCmd"]);
        assert!(dir(".app", Some(&RpcValue::from("ping")))
            .unwrap()
            .as_bool());
        assert!(!dir(".app", Some(&RpcValue::from("nope")))
            .unwrap()
            .as_bool());
        assert_eq!(ls("", None).unwrap().to_cpon(), r#"[".app"]"#);
        assert!(ls("", Some(&RpcValue::from(".app"))).unwrap().as_bool());
        assert!(ls("x/y", None).is_err());
    }

    #[test]
    fn access_level_from_meta() {
        let mut m = libshv::shvproto::MetaMap::new();
        assert_eq!(granted_level(&m), level::ADMIN);
        m.insert(tag::ACCESS, RpcValue::from("rd"));
        assert_eq!(granted_level(&m), level::READ);
        m.insert(tag::ACCESS_LEVEL, RpcValue::from(24));
        assert_eq!(granted_level(&m), 24);
    }
}
