//! shvagent: an SHV device that gives operators a remote shell (tunnel.md steps 1-4)
//! and runs one-shot commands (`runCmd`).
//!
//! The agent itself never carries shell data: for `launchRexec` it asks the broker to
//! find a tunnel (a response with `13:null` and TunnelCtl FindTunnelRequest), waits for
//! the FindTunnelResponse, and hands it to a freshly spawned `shvrexec` on stdin.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libshv::access::level;
use libshv::client::{Client, ClientConfig, RequestHandler};
use libshv::logsafe::shown;
use libshv::message::{code, RpcError, RpcMessage};
use libshv::meta::{self, tag};
use libshv::node::{self, flag, MethodDesc};
use libshv::shvproto::Value;
use libshv::tunnel::{self, LaunchParams, RexecLine, TunnelCtl, TunnelState};
use libshv::RpcValue;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// Access level needed for `launchRexec` and `runCmd`. A shell is full control of the
/// device's account, but operators are commonly given `cmd` on their devices, and the
/// broker's access rules are where finer policy belongs.
pub const COMMAND_ACCESS: i64 = level::COMMAND;

/// Longest command text in the log (longer ones end with `…(N bytes)`).
const LOGGED_COMMAND: usize = 200;

/// How long the broker has to answer our FindTunnelRequest.
pub const FIND_TUNNEL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Client(#[from] libshv::ClientError),
}

/// Where to find shvrexec: next to our own binary, else by name on `$PATH`.
pub fn default_rexec_path() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join("shvrexec");
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from("shvrexec")
}

/// Resolves a bare program name against `$PATH`, as exec would.
fn resolve_program(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(p))
            .find(|c| c.is_file())
    })
}

struct Waiter {
    token: u64,
    /// Sent in our FindTunnelRequest; brokers echo it in the FindTunnelResponse.
    nonce: String,
    cids: Vec<i64>,
    tx: oneshot::Sender<TunnelCtl>,
}

struct Pending {
    client: Client,
    waiters: Vec<Waiter>,
}

/// Waits for FindTunnelResponses. They come as responses with rsh's request id R,
/// which is only unique per rsh: two operators may use the same R at the same time.
/// So one stream per R feeds every waiter with that R, and a response goes to the
/// waiter whose nonce it echoes. A response without a nonce (a broker that does not
/// copy it) goes to the waiter whose launch came by exactly the tctl's CallerIds, or to
/// the only waiter; anything else is dropped: an operator must never get another
/// operator's shell.
#[derive(Default)]
struct FindTunnel {
    pending: Mutex<HashMap<i64, Pending>>,
    next_token: AtomicU64,
}

impl FindTunnel {
    fn add(
        self: &Arc<Self>,
        client: &Client,
        rid: i64,
        cids: Vec<i64>,
    ) -> (u64, String, oneshot::Receiver<TunnelCtl>) {
        let (tx, rx) = oneshot::channel();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let nonce = format!("{:016x}", rand::random::<u64>());
        let mut pending = self.pending.lock().unwrap();
        let entry = pending.entry(rid).or_insert_with(|| {
            let mut stream = client.register_stream(rid, 16);
            let me = Arc::clone(self);
            tokio::spawn(async move {
                while let Some(frame) = stream.recv().await {
                    match TunnelCtl::from_frame(&frame) {
                        Some(Ok(ctl)) if ctl.state == TunnelState::FindTunnelResponse => {
                            me.deliver(rid, ctl)
                        }
                        Some(Ok(ctl)) => {
                            tracing::debug!("ignoring tunnel frame {:?} for {rid}", ctl.state)
                        }
                        Some(Err(e)) => tracing::warn!("bad TunnelCtl for {rid}: {e}"),
                        None => tracing::debug!("ignoring non-tunnel response {rid}"),
                    }
                }
            });
            Pending {
                client: client.clone(),
                waiters: Vec::new(),
            }
        });
        entry.waiters.push(Waiter {
            token,
            nonce: nonce.clone(),
            cids,
            tx,
        });
        (token, nonce, rx)
    }

    fn deliver(&self, rid: i64, ctl: TunnelCtl) {
        let mut pending = self.pending.lock().unwrap();
        let Some(entry) = pending.get_mut(&rid) else {
            return;
        };
        let idx = match &ctl.nonce {
            Some(n) => entry.waiters.iter().position(|w| w.nonce == *n),
            None => entry
                .waiters
                .iter()
                .position(|w| w.cids == ctl.caller_ids)
                .or((entry.waiters.len() == 1).then_some(0)),
        };
        match idx {
            Some(i) => {
                let w = entry.waiters.remove(i);
                let _ = w.tx.send(ctl);
            }
            None => {
                tracing::warn!("FindTunnelResponse for {rid} matches none of our launches; dropped")
            }
        }
        if entry.waiters.is_empty() {
            entry.client.unregister(rid);
            pending.remove(&rid);
        }
    }

    fn remove(&self, rid: i64, token: u64) {
        let mut pending = self.pending.lock().unwrap();
        if let Some(entry) = pending.get_mut(&rid) {
            entry.waiters.retain(|w| w.token != token);
            if entry.waiters.is_empty() {
                entry.client.unregister(rid);
                pending.remove(&rid);
            }
        }
    }
}

/// The agent's request handler.
pub struct Agent {
    rexec: PathBuf,
    find: Arc<FindTunnel>,
    /// The CA of our own `ssl://` URL: shvrexec trusts it for a tunnel host over TLS.
    tunnel_ca: Option<String>,
    /// Port forwarding (`forwardTcp`, `listenTcp`) is allowed (`--allow-forward`).
    allow_forward: bool,
}

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
fn node_of(path: &str) -> Option<(&'static [MethodDesc], &'static [&'static str])> {
    match path {
        "" => Some((ROOT_METHODS, &[".app"])),
        ".app" => Some((APP_METHODS, &[])),
        _ => None,
    }
}

fn dir(path: &str, param: Option<&RpcValue>) -> Result<RpcValue, RpcError> {
    let (methods, _) = node_of(path).ok_or_else(|| no_such_path(path))?;
    Ok(node::dir(methods, param))
}

fn ls(path: &str, param: Option<&RpcValue>) -> Result<RpcValue, RpcError> {
    let (_, children) = node_of(path).ok_or_else(|| no_such_path(path))?;
    Ok(node::ls(children, param))
}

fn no_such_path(path: &str) -> RpcError {
    RpcError::method_not_found(format!("no such path: '{path}'"))
}

/// The access level the broker granted this request; a request from a broker that
/// does not set one (SHV 2) is trusted, as the broker already checked it.
fn granted_level(meta: &libshv::shvproto::MetaMap) -> i64 {
    match meta.get(tag::ACCESS_LEVEL).and_then(libshv::value::as_i64) {
        Some(l) => l,
        None => match meta.get(tag::ACCESS).map(|v| &v.value) {
            Some(Value::String(s)) => libshv::access::level_from_access(s).unwrap_or(level::ADMIN),
            _ => level::ADMIN,
        },
    }
}

/// Output bytes as a String when they are UTF-8 (readable in Cpon), else a Blob.
fn text_or_blob(bytes: Vec<u8>) -> RpcValue {
    match String::from_utf8(bytes) {
        Ok(s) => RpcValue::from(s),
        Err(e) => RpcValue::from(e.into_bytes()),
    }
}

/// `runCmd`: runs `cmd` (String for `sh -c`, List, or Map `{cmd, cwd, env}`) to the end
/// and returns `[exitCode, stdout, stderr]` (exitCode 128+N when killed by signal N).
pub async fn run_cmd(param: Option<&RpcValue>, user: &str) -> Result<RpcValue, RpcError> {
    let p = LaunchParams::from_run_cmd(param)?;
    if p.cmd.is_empty() {
        return Err(RpcError::invalid_param("runCmd needs a command"));
    }
    tracing::info!(
        "runCmd for {}: {}",
        shown(user),
        shown(&p.describe(LOGGED_COMMAND))
    );
    let mut cmd = tokio::process::Command::new(&p.cmd[0]);
    cmd.args(&p.cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("SHV_PASSWORD")
        // A caller that gives up (agent disconnect) must not leave the job running.
        .kill_on_drop(true);
    if let Some(cwd) = &p.cwd {
        cmd.current_dir(cwd);
    }
    for (k, v) in &p.env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.map_err(|e| {
        RpcError::new(
            code::METHOD_CALL_EXCEPTION,
            format!("cannot run '{}': {e}", p.cmd[0]),
        )
    })?;
    use std::os::unix::process::ExitStatusExt;
    let status = out
        .status
        .code()
        .or_else(|| out.status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    Ok(RpcValue::from(vec![
        RpcValue::from(i64::from(status)),
        text_or_blob(out.stdout),
        text_or_blob(out.stderr),
    ]))
}

impl Agent {
    pub fn new(rexec: PathBuf, tunnel_ca: Option<String>, allow_forward: bool) -> Self {
        Agent {
            rexec,
            find: Arc::new(FindTunnel::default()),
            tunnel_ca,
            allow_forward,
        }
    }

    /// tunnel.md steps 1-4. Errors found before we answered with FindTunnelRequest go
    /// back as an ordinary RPC error; later ones as CloseTunnel `{"error"}` along the
    /// same CallerIds, which the broker forwards to rsh.
    async fn launch_rexec(
        &self,
        client: &Client,
        req: &RpcMessage,
    ) -> Option<Result<RpcValue, RpcError>> {
        let param = req.param().cloned().unwrap_or_else(RpcValue::null);
        let launch = match LaunchParams::from_value(&param) {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        if let Some(f) = &launch.forward {
            // A forward makes the device a hop into its network: the device's owner
            // decides (the broker already required command-level access).
            if !self.allow_forward {
                return Some(Err(RpcError::new(
                    code::METHOD_CALL_EXCEPTION,
                    "port forwarding is not allowed on this device (shvagent --allow-forward)",
                )));
            }
            let user = meta::verified_user(&req.meta);
            tracing::info!("forward for {}: {f:?}", shown(&user));
        }
        let Some(rexec) = resolve_program(&self.rexec) else {
            return Some(Err(RpcError::new(
                code::METHOD_CALL_EXCEPTION,
                format!("cannot find shvrexec at '{}'", self.rexec.display()),
            )));
        };
        let rid = req
            .meta
            .get(tag::REQUEST_ID)
            .map(|v| v.as_int())
            .unwrap_or_default();
        let cids = meta::stack_from_value(req.meta.get(tag::CALLER_IDS));
        let (token, nonce, rx) = self.find.add(client, rid, cids);
        if let Err(e) = client
            .send_frame(tunnel::find_tunnel_request(&req.meta, Some(&nonce)))
            .await
        {
            self.find.remove(rid, token);
            tracing::warn!("cannot answer launchRexec {rid}: {e}");
            return None;
        }
        let started = Instant::now();
        let mut ftr = match tokio::time::timeout(FIND_TUNNEL_TIMEOUT, rx).await {
            Ok(Ok(ftr)) => ftr,
            _ => {
                self.find.remove(rid, token);
                tracing::warn!(
                    "launchRexec {rid}: no FindTunnelResponse within {FIND_TUNNEL_TIMEOUT:?}"
                );
                let _ = client
                    .send_frame(tunnel::close_with_error(
                        &req.meta,
                        "the broker did not answer FindTunnelRequest",
                    ))
                    .await;
                return None;
            }
        };
        ftr.request_id = Some(rid);
        tracing::info!(
            "launchRexec {rid} for {}: {}, tunnel via {}:{:?} (found in {:?})",
            shown(&meta::verified_user(&req.meta)),
            shown(&launch.describe(LOGGED_COMMAND)),
            shown(ftr.host.as_deref().unwrap_or("")),
            ftr.port,
            started.elapsed()
        );
        if let Err(e) = spawn_rexec(
            &rexec,
            self.tunnel_ca.as_deref(),
            &ftr,
            &param,
            client.clone(),
            req.meta.clone(),
        )
        .await
        {
            tracing::warn!("launchRexec {rid}: {}", shown(&e));
            let _ = client
                .send_frame(tunnel::close_with_error(&req.meta, &e))
                .await;
        }
        None
    }
}

/// Starts shvrexec and writes the launch line to its stdin: the secret never appears
/// on a command line (visible in `ps`) or in a log. shvrexec's stderr is relayed into
/// our log; if it fails, its last line goes to rsh as CloseTunnel `{"error"}`, so the
/// operator sees why (cannot connect, secret refused, …) instead of a timeout.
async fn spawn_rexec(
    rexec: &Path,
    tunnel_ca: Option<&str>,
    ftr: &TunnelCtl,
    call: &RpcValue,
    client: Client,
    request_meta: libshv::shvproto::MetaMap,
) -> Result<(), String> {
    let mut child = tokio::process::Command::new(rexec)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // The agent's own broker password must not leak into remote shells.
        .env_remove("SHV_PASSWORD")
        // Its own process group: a ^C meant for the agent must not end live sessions.
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| format!("cannot start '{}': {e}", rexec.display()))?;
    let line = RexecLine {
        find_tunnel_response: ftr.clone(),
        on_connected_call: call.clone(),
        tunnel_ca: tunnel_ca.map(str::to_string),
    }
    .to_line();
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    let pid = child.id();
    let relay = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut last = String::new();
        while let Ok(Some(l)) = lines.next_line().await {
            // shvrexec's own log, which quotes what operators and brokers sent.
            let l = libshv::logsafe::shown(&l).to_string();
            eprintln!("{l}");
            last = l;
        }
        last
    });
    // EPIPE here means shvrexec died at once; the reaper below reports it.
    if let Err(e) = stdin.write_all(line.as_bytes()).await {
        tracing::debug!("writing to shvrexec {pid:?}: {e}");
    }
    drop(stdin);
    // Reap it when it ends, so no zombies pile up in a long-running agent.
    tokio::spawn(async move {
        let st = child.wait().await;
        let last = relay.await.unwrap_or_default();
        match st {
            Ok(st) if st.success() => tracing::debug!("shvrexec {pid:?} ended: {st}"),
            Ok(st) => {
                tracing::warn!("shvrexec {pid:?} failed: {st}");
                let reason = last
                    .strip_prefix("shvrexec: ")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("shvrexec failed ({st})"));
                let _ = client
                    .send_frame(tunnel::close_with_error(&request_meta, &reason))
                    .await;
            }
            Err(e) => tracing::warn!("shvrexec {pid:?}: {e}"),
        }
    });
    Ok(())
}

#[async_trait::async_trait]
impl RequestHandler for Agent {
    async fn handle(&self, client: &Client, req: RpcMessage) -> Option<Result<RpcValue, RpcError>> {
        let path = req
            .meta
            .get(tag::SHV_PATH)
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let method = req
            .meta
            .get(tag::METHOD)
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let Some((methods, _)) = node_of(&path) else {
            return Some(Err(no_such_path(&path)));
        };
        let Some(desc) = methods.iter().find(|m| m.name == method) else {
            return Some(Err(RpcError::method_not_found(format!(
                "no method '{}' on '{}'",
                shown(&method),
                shown(&path)
            ))));
        };
        if granted_level(&req.meta) < desc.access {
            // SHV 3 answers "no access" with MethodNotFound as well.
            return Some(Err(RpcError::method_not_found(format!(
                "access denied to {}",
                if path.is_empty() {
                    method.clone()
                } else {
                    format!("{path}:{method}")
                }
            ))));
        }
        let p = req.param();
        Some(match (path.as_str(), method.as_str()) {
            (_, "dir") => dir(&path, p),
            (_, "ls") => ls(&path, p),
            ("", "launchRexec") => return self.launch_rexec(client, &req).await,
            ("", "runCmd") => run_cmd(p, &meta::verified_user(&req.meta)).await,
            (".app", "shvVersionMajor") => Ok(RpcValue::from(3)),
            (".app", "shvVersionMinor") => Ok(RpcValue::from(0)),
            (".app", "name") => Ok(RpcValue::from("shvagent")),
            (".app", "version") => Ok(RpcValue::from(env!("CARGO_PKG_VERSION"))),
            (".app", "ping") => Ok(RpcValue::null()),
            _ => Err(RpcError::method_not_found(format!(
                "no method '{method}' on '{path}'"
            ))),
        })
    }
}

/// Reconnect back-off: 1 s doubling up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Runs the agent forever: connect, serve until the link drops, back off, reconnect.
/// Returns only on a login failure at the first attempt (a wrong password does not
/// fix itself); later failures are retried.
pub async fn run(
    config: ClientConfig,
    rexec: PathBuf,
    allow_forward: bool,
) -> Result<(), AgentError> {
    let ca = config
        .url
        .transport()
        .tls
        .as_ref()
        .and_then(|t| t.ca.clone());
    let handler: Arc<dyn RequestHandler> = Arc::new(Agent::new(rexec, ca, allow_forward));
    let serving = match (&config.login.mount_point, &config.login.device_id) {
        (Some(m), _) => format!("serving at {m}"),
        (None, Some(id)) => format!("serving as device {id} (the broker picks the mount point)"),
        (None, None) => "serving".to_string(),
    };
    let err = libshv::client::serve_reconnecting(&config, Some(handler), MAX_BACKOFF, |_| {
        tracing::info!("{serving}");
    })
    .await;
    Err(err.into())
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

    #[tokio::test]
    async fn run_cmd_result_shape() {
        let p = RpcValue::from_cpon(r#"["sh","-c","echo out; echo err >&2; exit 3"]"#).unwrap();
        let r = run_cmd(Some(&p), "test").await.unwrap();
        assert_eq!(r.to_cpon(), r#"[3,"out\n","err\n"]"#);
        let r = run_cmd(Some(&RpcValue::from("kill -9 $$")), "test")
            .await
            .unwrap();
        assert_eq!(r.as_list()[0].as_int(), 137);
        let e = run_cmd(
            Some(&RpcValue::from_cpon(r#"["/nonexistent/x"]"#).unwrap()),
            "test",
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, code::METHOD_CALL_EXCEPTION);
        assert!(run_cmd(None, "test").await.is_err());
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

    #[test]
    fn rexec_line_is_one_line() {
        let ftr = TunnelCtl {
            state: TunnelState::FindTunnelResponse,
            host: Some("localhost".into()),
            port: Some(3755),
            secret: Some("x\ny".into()),
            request_id: Some(5),
            caller_ids: vec![1],
            nonce: None,
        };
        let line = RexecLine {
            find_tunnel_response: ftr,
            on_connected_call: RpcValue::from_cpon(r#"{"method":"runCmd"}"#).unwrap(),
            tunnel_ca: None,
        }
        .to_line();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.starts_with(r#"{"findTunnelResponse":<1:3>i{1:2,"#));
    }
}
