//! What `launchRexec` asks for: the command, PTY or pipes, size, environment.

use super::*;

/// The `launchRexec` parameter rsh sends (tunnel.md step 1, Map form of params).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LaunchParams {
    /// Use a PTY (`runPtyCmd`) rather than pipes (`runCmd`).
    pub pty: bool,
    /// Program and arguments; empty = the user's login shell.
    pub cmd: Vec<String>,
    pub cols: u16,
    pub rows: u16,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// **[ext]** A port forward instead of a command (then `cmd` and the rest are
    /// unused): the tunnel carries TCP connections as channels ([`super::mux`]).
    pub forward: Option<Forward>,
    /// **[ext]** A file copy instead of a command ([`super::copy`]).
    pub copy: Option<FileCopy>,
}

/// What a copying tunnel does on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCopy {
    /// `copyOut`: the device sends a tar stream of `paths`.
    Out { paths: Vec<String>, recursive: bool },
    /// `copyIn`: the device extracts the stream it receives into `dest`.
    In { dest: String, preserve: bool },
}

/// What a forwarding tunnel does on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// `forwardTcp` (ssh `-L`): every connection the operator's side accepts is
    /// connected to `host:port` as the device sees it.
    Connect { host: String, port: u16 },
    /// `listenTcp` (ssh `-R`): the device listens on `bind:port`; every connection it
    /// accepts is carried back to the operator's side.
    Listen { bind: String, port: u16 },
    /// `forwardDynamic` (ssh `-D`): the operator's side is a SOCKS5 proxy; each
    /// connection names its own destination (`connOpen` with host and port), connected
    /// as the device sees it.
    Dynamic,
}

pub const METHOD_RUN_PTY_CMD: &str = "runPtyCmd";
pub const METHOD_RUN_CMD: &str = "runCmd";
pub const METHOD_FORWARD_TCP: &str = "forwardTcp";
pub const METHOD_LISTEN_TCP: &str = "listenTcp";
pub const METHOD_FORWARD_DYNAMIC: &str = "forwardDynamic";
pub const METHOD_COPY_OUT: &str = "copyOut";
pub const METHOD_COPY_IN: &str = "copyIn";

impl LaunchParams {
    /// The kind of session, for audit trails: an interactive `shell` (a PTY with the
    /// login shell) or a `command`.
    pub fn kind(&self) -> &'static str {
        if self.forward.is_some() {
            "forward"
        } else if self.copy.is_some() {
            "copy"
        } else if self.pty && self.cmd.is_empty() {
            "shell"
        } else {
            "command"
        }
    }

    pub fn method(&self) -> &'static str {
        match self.forward {
            Some(Forward::Connect { .. }) => return METHOD_FORWARD_TCP,
            Some(Forward::Listen { .. }) => return METHOD_LISTEN_TCP,
            Some(Forward::Dynamic) => return METHOD_FORWARD_DYNAMIC,
            None => {}
        }
        match self.copy {
            Some(FileCopy::Out { .. }) => return METHOD_COPY_OUT,
            Some(FileCopy::In { .. }) => return METHOD_COPY_IN,
            None => {}
        }
        if self.pty {
            METHOD_RUN_PTY_CMD
        } else {
            METHOD_RUN_CMD
        }
    }

    /// `{"method": ..., "params": {"cmd": [...], "cols": c, "rows": r, "env": {...}}}`
    pub fn to_value(&self) -> RpcValue {
        let mut p = Map::new();
        if let Some(c) = &self.copy {
            match c {
                FileCopy::Out { paths, recursive } => {
                    let list: Vec<RpcValue> =
                        paths.iter().map(|s| RpcValue::from(s.as_str())).collect();
                    p.insert("paths".into(), RpcValue::from(list));
                    p.insert("recursive".into(), RpcValue::from(*recursive));
                }
                FileCopy::In { dest, preserve } => {
                    p.insert("dest".into(), RpcValue::from(dest.as_str()));
                    p.insert("preserve".into(), RpcValue::from(*preserve));
                }
            }
            let mut m = Map::new();
            m.insert("method".into(), RpcValue::from(self.method()));
            m.insert("params".into(), RpcValue::from(p));
            return RpcValue::from(m);
        }
        if let Some(f) = &self.forward {
            let target = match f {
                Forward::Connect { host, port } => Some(("host", host, port)),
                Forward::Listen { bind, port } => Some(("bind", bind, port)),
                Forward::Dynamic => None,
            };
            if let Some((k, host, port)) = target {
                p.insert(k.into(), RpcValue::from(host.as_str()));
                p.insert("port".into(), RpcValue::from(i64::from(*port)));
            }
            let mut m = Map::new();
            m.insert("method".into(), RpcValue::from(self.method()));
            m.insert("params".into(), RpcValue::from(p));
            return RpcValue::from(m);
        }
        p.insert(
            "cmd".into(),
            RpcValue::from(
                self.cmd
                    .iter()
                    .map(|s| RpcValue::from(s.as_str()))
                    .collect::<Vec<_>>(),
            ),
        );
        if self.pty {
            p.insert("cols".into(), RpcValue::from(i64::from(self.cols)));
            p.insert("rows".into(), RpcValue::from(i64::from(self.rows)));
        }
        if !self.env.is_empty() {
            let env: Map = self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), RpcValue::from(v.as_str())))
                .collect();
            p.insert("env".into(), RpcValue::from(env));
        }
        if let Some(cwd) = &self.cwd {
            p.insert("cwd".into(), RpcValue::from(cwd.as_str()));
        }
        let mut m = Map::new();
        m.insert("method".into(), RpcValue::from(self.method()));
        m.insert("params".into(), RpcValue::from(p));
        RpcValue::from(m)
    }

    /// The `runCmd` parameter (`cmd` String or List, or Map `{cmd, cwd, env}`) read as
    /// the agent runs it.
    pub fn from_run_cmd(param: Option<&RpcValue>) -> Result<Self, RpcError> {
        let mut m = Map::new();
        m.insert("method".into(), RpcValue::from(METHOD_RUN_CMD));
        m.insert(
            "params".into(),
            param.cloned().unwrap_or_else(RpcValue::null),
        );
        Self::from_value(&RpcValue::from(m))
    }

    /// What this launch does, as one line for audit trails and logs: the method, then
    /// the directory, environment and words of the command shell-quoted (or the copy's
    /// paths, the forward's address), exactly as the agent reads them. Longer than
    /// `max` bytes, it is cut and ends with `…(N bytes)`, N the whole text's length.
    pub fn describe(&self, max: usize) -> String {
        let mut words: Vec<String> = Vec::new();
        let mut word = |w: &str| words.push(shell_quoted(w).into_owned());
        match (&self.forward, &self.copy) {
            (Some(Forward::Connect { host, port }), _)
            | (Some(Forward::Listen { bind: host, port }), _) => {
                word(&format!("{host}:{port}"));
            }
            (Some(Forward::Dynamic), _) => word("SOCKS"),
            (None, Some(FileCopy::Out { paths, recursive })) => {
                if *recursive {
                    word("-r");
                }
                paths.iter().for_each(|p| word(p));
            }
            (None, Some(FileCopy::In { dest, preserve })) => {
                if *preserve {
                    word("-p");
                }
                word(dest);
            }
            (None, None) => {
                if let Some(cwd) = &self.cwd {
                    word("cd");
                    word(cwd);
                    word("&&");
                }
                for (k, v) in &self.env {
                    word(&format!("{k}={v}"));
                }
                self.cmd.iter().for_each(|w| word(w));
                if self.cmd.is_empty() {
                    words.push("(login shell)".into());
                }
            }
        }
        cut_with_marker(format!("{}: {}", self.method(), words.join(" ")), max)
    }
}

/// [`LaunchParams::describe`] of a `launchRexec` parameter, or why the agent will
/// refuse it.
pub fn describe_launch(param: &RpcValue, max: usize) -> String {
    match LaunchParams::from_value(param) {
        Ok(l) => l.describe(max),
        Err(e) => cut_with_marker(format!("(not a valid launch: {})", e.message), max),
    }
}

/// `s` whole, or its first bytes up to `max` in all with `…(N bytes)` at the end.
fn cut_with_marker(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let marker = format!("…({} bytes)", s.len());
    let mut end = max.saturating_sub(marker.len()).min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &s[..end])
}

/// `w` as a POSIX shell would need it to stay one word.
fn shell_quoted(w: &str) -> std::borrow::Cow<'_, str> {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain {
        w.into()
    } else {
        format!("'{}'", w.replace('\'', "'\\''")).into()
    }
}

impl LaunchParams {
    /// Parses `{"method": ..., "params": ...}` where params is the Map form, the List
    /// form `[cmd, cols, rows]`, or (for runCmd) `cmd` alone; cmd is a String (run by
    /// `/bin/sh -c`) or a List `[prog, arg…]`.
    pub fn from_value(v: &RpcValue) -> Result<Self, RpcError> {
        let bad = |m: &str| RpcError::invalid_param(m.to_string());
        let Value::Map(m) = &v.value else {
            return Err(bad("launchRexec param must be a Map {method, params}"));
        };
        let method = match m.get("method").map(|v| &v.value) {
            Some(Value::String(s)) => s.as_str(),
            _ => return Err(bad("launchRexec param has no 'method'")),
        };
        let pty = match method {
            METHOD_RUN_PTY_CMD => true,
            METHOD_RUN_CMD => false,
            METHOD_COPY_OUT | METHOD_COPY_IN => {
                return Ok(LaunchParams {
                    copy: Some(copy_from(method, m.get("params"))?),
                    ..Default::default()
                });
            }
            METHOD_FORWARD_DYNAMIC => {
                return Ok(LaunchParams {
                    forward: Some(Forward::Dynamic),
                    ..Default::default()
                });
            }
            METHOD_FORWARD_TCP | METHOD_LISTEN_TCP => {
                return Ok(LaunchParams {
                    forward: Some(forward_from(method, m.get("params"))?),
                    ..Default::default()
                });
            }
            other => return Err(bad(&format!("unknown launchRexec method '{other}'"))),
        };
        let mut out = LaunchParams {
            pty,
            cols: 80,
            rows: 24,
            ..Default::default()
        };
        let dim = |v: Option<&RpcValue>, default: u16| -> u16 {
            v.and_then(as_i64)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        let params = m.get("params").cloned().unwrap_or_else(RpcValue::null);
        match &params.value {
            Value::Map(p) => {
                out.cmd = cmd_from_value(p.get("cmd"))?;
                out.cols = dim(p.get("cols"), 80);
                out.rows = dim(p.get("rows"), 24);
                if let Some(Value::Map(env)) = p.get("env").map(|v| &v.value) {
                    for (k, v) in env.iter() {
                        if let Value::String(s) = &v.value {
                            out.env.push((k.clone(), s.to_string()));
                        }
                    }
                }
                if let Some(Value::String(s)) = p.get("cwd").map(|v| &v.value) {
                    out.cwd = Some(s.to_string());
                }
            }
            Value::List(l) if pty => {
                out.cmd = cmd_from_value(l.first())?;
                out.cols = dim(l.get(1), 80);
                out.rows = dim(l.get(2), 24);
            }
            _ => out.cmd = cmd_from_value(Some(&params))?,
        }
        Ok(out)
    }
}

/// The params of a copying method: `{"paths": [s], "recursive": b}` (copyOut) or
/// `{"dest": s, "preserve": b}` (copyIn).
fn copy_from(method: &str, params: Option<&RpcValue>) -> Result<FileCopy, RpcError> {
    let bad = |m: &str| RpcError::invalid_param(format!("{method}: {m}"));
    let Some(Value::Map(p)) = params.map(|v| &v.value) else {
        return Err(bad("params must be a Map"));
    };
    let flag = |k: &str| matches!(p.get(k).map(|v| &v.value), Some(Value::Bool(true)));
    if method == METHOD_COPY_OUT {
        let Some(Value::List(l)) = p.get("paths").map(|v| &v.value) else {
            return Err(bad("'paths' must be a List of Strings"));
        };
        let paths = l
            .iter()
            .map(|v| match &v.value {
                Value::String(s) if !s.is_empty() => Ok(s.to_string()),
                _ => Err(bad("'paths' must be a List of non-empty Strings")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if paths.is_empty() || paths.len() > 4096 {
            return Err(bad("'paths' must name 1..4096 files"));
        }
        return Ok(FileCopy::Out {
            paths,
            recursive: flag("recursive"),
        });
    }
    match p.get("dest").map(|v| &v.value) {
        Some(Value::String(s)) if !s.is_empty() => Ok(FileCopy::In {
            dest: s.to_string(),
            preserve: flag("preserve"),
        }),
        _ => Err(bad("'dest' must be a path")),
    }
}

/// The params `{"host"|"bind": s, "port": i}` of a forwarding method.
fn forward_from(method: &str, params: Option<&RpcValue>) -> Result<Forward, RpcError> {
    let bad = |m: &str| RpcError::invalid_param(format!("{method}: {m}"));
    let Some(Value::Map(p)) = params.map(|v| &v.value) else {
        return Err(bad("params must be a Map"));
    };
    let key = if method == METHOD_FORWARD_TCP {
        "host"
    } else {
        "bind"
    };
    let host = match p.get(key).map(|v| &v.value) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => s.to_string(),
        _ => return Err(bad(&format!("'{key}' must be a host name or address"))),
    };
    let port = p
        .get("port")
        .and_then(as_i64)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| bad("'port' must be 1..65535"))?;
    Ok(if method == METHOD_FORWARD_TCP {
        Forward::Connect { host, port }
    } else {
        Forward::Listen { bind: host, port }
    })
}

/// A command as String (`/bin/sh -c STRING`) or List of Strings; Null = login shell.
pub(super) fn cmd_from_value(v: Option<&RpcValue>) -> Result<Vec<String>, RpcError> {
    match v.map(|v| &v.value) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec!["/bin/sh".into(), "-c".into(), s.to_string()]),
        Some(Value::List(l)) => l
            .iter()
            .map(|a| match &a.value {
                Value::String(s) => Ok(s.to_string()),
                _ => Err(RpcError::invalid_param("cmd items must be Strings")),
            })
            .collect(),
        Some(_) => Err(RpcError::invalid_param(
            "cmd must be a String or a List of Strings",
        )),
    }
}

/// The one CPON line an agent writes to shvrexec's stdin (tunnel.md step 4):
/// `{"findTunnelResponse": <tctl>, "onConnectedCall": {...}, "tunnelCa": "PATH"}`.
/// **[ext]** `tunnelCa`: the CA file the agent itself trusts, for a tunnel host reached
/// over TLS. The line holds the secret: never put it in an error or a log.
#[derive(Debug, Clone, PartialEq)]
pub struct RexecLine {
    pub find_tunnel_response: super::TunnelCtl,
    pub on_connected_call: RpcValue,
    pub tunnel_ca: Option<String>,
}

impl RexecLine {
    pub fn to_line(&self) -> String {
        let mut m = shvproto::Map::new();
        m.insert(
            "findTunnelResponse".into(),
            self.find_tunnel_response.to_value(),
        );
        m.insert("onConnectedCall".into(), self.on_connected_call.clone());
        if let Some(ca) = &self.tunnel_ca {
            m.insert("tunnelCa".into(), RpcValue::from(ca.as_str()));
        }
        let mut s = RpcValue::from(m).to_cpon();
        s.push('\n');
        s
    }

    /// Parses the line; the error never echoes it.
    pub fn parse(line: &str) -> Result<RexecLine, String> {
        let v = crate::value::from_cpon(line.trim()).map_err(|e| format!("not CPON ({e})"))?;
        let ftr = v.get("findTunnelResponse").ok_or("no findTunnelResponse")?;
        let find_tunnel_response = super::TunnelCtl::parse(ftr).map_err(|e| e.to_string())?;
        let on_connected_call = v
            .get("onConnectedCall")
            .ok_or("no onConnectedCall")?
            .clone();
        let tunnel_ca = v
            .get("tunnelCa")
            .map(|c| c.as_str().to_string())
            .filter(|c| !c.is_empty());
        Ok(RexecLine {
            find_tunnel_response,
            on_connected_call,
            tunnel_ca,
        })
    }
}

#[cfg(test)]
mod describe_tests {
    use super::*;

    fn described(cpon: &str) -> String {
        describe_launch(&RpcValue::from_cpon(cpon).unwrap(), 256)
    }

    /// The reading the agent runs is the reading shown: other keys beside `cmd` (as
    /// the report's `dest`) do not change it.
    #[test]
    fn the_description_is_what_runs() {
        assert_eq!(
            described(
                r#"{"method":"runCmd","params":{"cmd":["sh","-c","touch M1"],"dest":"/var/empty/harmless"}}"#
            ),
            "runCmd: sh -c 'touch M1'"
        );
        assert_eq!(
            described(
                r#"{"method":"runPtyCmd","params":{"cmd":[],"cwd":"/tmp","env":{"A":"b c"}}}"#
            ),
            "runPtyCmd: cd /tmp '&&' 'A=b c' (login shell)"
        );
        assert_eq!(
            described(r#"{"method":"copyIn","params":{"dest":"/tmp/it's"}}"#),
            r#"copyIn: '/tmp/it'\''s'"#
        );
        assert_eq!(
            described(r#"{"method":"forwardTcp","params":{"host":"10.0.0.1","port":22}}"#),
            "forwardTcp: 10.0.0.1:22"
        );
        assert!(described(r#"{"method":"rm"}"#).starts_with("(not a valid launch"));
    }

    #[test]
    fn a_long_command_is_cut_with_a_marker() {
        let long = "x".repeat(1000);
        let l = LaunchParams {
            cmd: vec!["echo".into(), long],
            ..Default::default()
        };
        let d = l.describe(256);
        assert!(d.len() <= 256, "{}", d.len());
        assert!(d.ends_with("…(1013 bytes)"), "{d}");
        assert!(d.starts_with("runCmd: echo xxx"));
    }
}
