//! `launchRexec`: a remote shell. The agent asks the broker to find a tunnel, waits for
//! the FindTunnelResponse meant for this launch, and hands it to a freshly spawned
//! `shvrexec` on stdin.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libshv::client::Client;
use libshv::logsafe::shown;
use libshv::message::{code, RpcError, RpcMessage};
use libshv::meta::{self, tag};
use libshv::tunnel::{self, LaunchParams, RexecLine, TunnelCtl, TunnelState};
use libshv::RpcValue;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use crate::{Agent, LOGGED_COMMAND};

/// How long the broker has to answer our FindTunnelRequest.
pub const FIND_TUNNEL_TIMEOUT: Duration = Duration::from_secs(10);

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
pub(crate) struct FindTunnel {
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

impl Agent {
    /// tunnel.md steps 1-4. Errors found before we answered with FindTunnelRequest go
    /// back as an ordinary RPC error; later ones as CloseTunnel `{"error"}` along the
    /// same CallerIds, which the broker forwards to rsh.
    pub(crate) async fn launch_rexec(
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

#[cfg(test)]
mod tests {
    use super::*;

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
