//! The agent's nodes (the root with the remote-shell methods, and `.app`), and the
//! access level a request was granted.

use libshv::access::level;
use libshv::node::{self, flag, MethodDesc, Node};

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

/// The agent's node at `path`; None for a path the agent does not have.
pub(crate) fn node_of(path: &str) -> Option<Node<'static>> {
    match path {
        "" => Some(Node::new(ROOT_METHODS, [".app"])),
        ".app" => Some(Node::new(APP_METHODS, None::<String>)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libshv::RpcValue;

    /// `ls` and `dir` as the tree answers them, at the lowest level.
    fn answer(path: &str, method: &str, param: Option<RpcValue>) -> RpcValue {
        match node_of(path)
            .unwrap()
            .resolve(path, method, level::BROWSE, param.as_ref())
        {
            Ok(libshv::node::Resolved::Answer(v)) => v,
            other => panic!("{path}:{method}: {other:?}"),
        }
    }

    #[test]
    fn dir_and_ls() {
        let d = answer("", "dir", None);
        let names: Vec<_> = d
            .as_list()
            .iter()
            .map(|m| m.get(1).unwrap().as_str().to_string())
            .collect();
        assert_eq!(names, ["dir", "ls", "launchRexec", "runCmd"]);
        assert!(answer(".app", "dir", Some("ping".into())).as_bool());
        assert!(!answer(".app", "dir", Some("nope".into())).as_bool());
        assert_eq!(answer("", "ls", None).to_cpon(), r#"[".app"]"#);
        assert!(answer("", "ls", Some(".app".into())).as_bool());
        assert!(node_of("x/y").is_none());
    }
}
