//! The two dialects a tunnel end may speak: ours, and the C++ shvapp's (the journal's,
//! `shared/spec/journal.txt`).

use super::*;

/// How the far end of a tunnel speaks.
///
/// - [`Dialect::Shv`], ours: the launch parameter's `params` is a Map, data travel as
///   Blobs, the sender keeps to the end-to-end window ([`FLOW_WINDOW`]) that the
///   receiver opens with channel 3 acks, and channel 3 carries the other controls
///   (resize, eof, signal).
/// - [`Dialect::Journal`], the C++ shvrsh's and shvrexec's: `params` is the List
///   `[cmd, cols, rows]` (runPtyCmd) or the command itself (runCmd), data travel as
///   Strings holding any bytes, and there is neither a window nor controls (a C++ end
///   ignores channel 3 and reads a Blob as empty).
///
/// The launch carries the operator's dialect, so the device's end knows it from the
/// parameter it is started with ([`Dialect::of_launch`]); the operator's end asks the
/// agent (`dir` of `launchRexec` names our Map form, see [`Dialect::of_agent_dir`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    #[default]
    Shv,
    Journal,
}

/// Part of our agent's `dir` description of `launchRexec`'s parameter: an agent that
/// says this takes the Map form.
pub const MAP_FORM_SIGNATURE: &str = "params:{cmd:";

impl Dialect {
    /// The dialect of whoever sent the `launchRexec` parameter `v`
    /// (`{"method", "params"}`): a Map `params` is ours, anything else the journal's.
    pub fn of_launch(v: &RpcValue) -> Dialect {
        let Value::Map(m) = &v.value else {
            return Dialect::Shv;
        };
        match m.get("params").map(|p| &p.value) {
            Some(Value::Map(_)) => Dialect::Shv,
            _ => Dialect::Journal,
        }
    }

    /// The dialect of an agent, from the result of `dir` on its path: ours describes
    /// `launchRexec` with its Map form; an agent that has `launchRexec` but does not
    /// (the C++ shvagent) speaks the journal's. None: no `launchRexec` there at all.
    pub fn of_agent_dir(dir: &RpcValue) -> Option<Dialect> {
        let Value::List(methods) = &dir.value else {
            return None;
        };
        methods.iter().find_map(|m| {
            let (name, param) = match &m.value {
                // SHV 3: IMap {1: name, 3: param, …}; SHV 2: Map {"name", "signature"…}.
                Value::IMap(im) => (im.get(&1), im.get(&3)),
                Value::Map(mm) => (mm.get("name"), mm.get("param").or(mm.get("params"))),
                _ => return None,
            };
            let name = name.map(|n| n.as_str())?;
            (name == "launchRexec").then(|| match param.map(|p| &p.value) {
                Some(Value::String(s)) if s.contains(MAP_FORM_SIGNATURE) => Dialect::Shv,
                _ => Dialect::Journal,
            })
        })
    }
}

/// A login shell for an agent that runs the command it is given as it is (the C++
/// shvrexec has no notion of "the user's shell").
const LOGIN_SHELL: [&str; 3] = ["/bin/sh", "-c", "exec \"${SHELL:-/bin/sh}\" -l"];

impl LaunchParams {
    /// The launch in the journal's form, for a C++ agent: `runPtyCmd` with
    /// `[cmd, cols, rows]`, or `runCmd` with the command List. The environment and
    /// working directory, which that form cannot carry, become `/usr/bin/env K=V …` and
    /// a `/bin/sh` that changes directory first. Forwards and copies have no such form.
    pub fn to_journal_value(&self) -> Result<RpcValue, String> {
        if self.forward.is_some() || self.copy.is_some() {
            return Err(format!(
                "{} needs an agent of ours: this agent speaks the C++ shvapp's tunnels, \
                 which have only runPtyCmd and runCmd",
                self.method()
            ));
        }
        let mut words: Vec<String> = Vec::new();
        if let Some(cwd) = &self.cwd {
            words.extend(
                [
                    "/bin/sh",
                    "-c",
                    "cd -- \"$1\" || exit 1; shift; exec \"$@\"",
                    "sh",
                ]
                .map(String::from),
            );
            words.push(cwd.clone());
        }
        if !self.env.is_empty() {
            words.push("/usr/bin/env".into());
            words.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        }
        if self.cmd.is_empty() {
            words.extend(LOGIN_SHELL.map(String::from));
        } else {
            words.extend(self.cmd.iter().cloned());
        }
        let cmd = RpcValue::from(
            words
                .iter()
                .map(|w| RpcValue::from(w.as_str()))
                .collect::<Vec<_>>(),
        );
        let params = if self.pty {
            RpcValue::from(vec![
                cmd,
                RpcValue::from(i64::from(self.cols)),
                RpcValue::from(i64::from(self.rows)),
            ])
        } else {
            cmd
        };
        let mut m = Map::new();
        m.insert("method".into(), RpcValue::from(self.method()));
        m.insert("params".into(), params);
        Ok(RpcValue::from(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launch_form_names_the_dialect_and_the_journal_form_reads_back() {
        let journal =
            RpcValue::from_cpon(r#"{"method":"runPtyCmd","params":["/bin/bash",123,34]}"#).unwrap();
        assert_eq!(Dialect::of_launch(&journal), Dialect::Journal);
        let ours = LaunchParams {
            pty: true,
            cmd: vec!["ls".into(), "-l".into()],
            cols: 100,
            rows: 30,
            env: vec![("TERM".into(), "xterm".into())],
            cwd: Some("/tmp".into()),
            ..Default::default()
        };
        assert_eq!(Dialect::of_launch(&ours.to_value()), Dialect::Shv);
        let v = ours.to_journal_value().unwrap();
        assert_eq!(Dialect::of_launch(&v), Dialect::Journal);
        let back = LaunchParams::from_value(&v).unwrap();
        assert!(back.pty);
        assert_eq!((back.cols, back.rows), (100, 30));
        assert_eq!(
            back.cmd,
            [
                "/bin/sh",
                "-c",
                "cd -- \"$1\" || exit 1; shift; exec \"$@\"",
                "sh",
                "/tmp",
                "/usr/bin/env",
                "TERM=xterm",
                "ls",
                "-l"
            ]
        );
        let run = LaunchParams {
            cmd: vec!["cat".into()],
            ..Default::default()
        };
        let v = run.to_journal_value().unwrap();
        assert_eq!(v.to_cpon(), r#"{"method":"runCmd","params":["cat"]}"#);
        let fwd = LaunchParams {
            forward: Some(Forward::Connect {
                host: "h".into(),
                port: 1,
            }),
            ..Default::default()
        };
        assert!(fwd.to_journal_value().unwrap_err().contains("forwardTcp"));
    }

    #[test]
    fn an_agent_dir_names_its_dialect() {
        let ours = RpcValue::from_cpon(
            r#"[i{1:"dir"},i{1:"launchRexec",3:"{method:s,params:{cmd:[s],cols:i}}"}]"#,
        )
        .unwrap();
        assert_eq!(Dialect::of_agent_dir(&ours), Some(Dialect::Shv));
        let cpp = RpcValue::from_cpon(
            r#"[{"name":"dir"},{"name":"launchRexec","signature":3,"flags":0}]"#,
        )
        .unwrap();
        assert_eq!(Dialect::of_agent_dir(&cpp), Some(Dialect::Journal));
        let cpp3 = RpcValue::from_cpon(r#"[i{1:"launchRexec",3:"RpcValue"}]"#).unwrap();
        assert_eq!(Dialect::of_agent_dir(&cpp3), Some(Dialect::Journal));
        let none = RpcValue::from_cpon(r#"[i{1:"dir"}]"#).unwrap();
        assert_eq!(Dialect::of_agent_dir(&none), None);
    }
}
