//! shvagent: an SHV device that gives operators a remote shell (tunnel.md steps 1-4)
//! and runs one-shot commands (`runCmd`).
//!
//! The agent itself never carries shell data: for `launchRexec` it asks the broker to
//! find a tunnel (a response with `13:null` and TunnelCtl FindTunnelRequest), waits for
//! the FindTunnelResponse, and hands it to a freshly spawned `shvrexec` on stdin.

mod nodes;
mod rexec;
mod run_cmd;

pub use rexec::{default_rexec_path, FIND_TUNNEL_TIMEOUT};
pub use run_cmd::run_cmd;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libshv::access::level;
use libshv::client::{Client, ClientConfig, RequestHandler};
use libshv::message::{RpcError, RpcMessage};
use libshv::meta::{self, tag};
use libshv::RpcValue;

use nodes::node_of;
use rexec::FindTunnel;

/// Access level needed for `launchRexec` and `runCmd`. A shell is full control of the
/// device's account, but operators are commonly given `cmd` on their devices, and the
/// broker's access rules are where finer policy belongs.
pub const COMMAND_ACCESS: i64 = level::COMMAND;

/// Longest command text in the log (longer ones end with `…(N bytes)`).
const LOGGED_COMMAND: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Client(#[from] libshv::ClientError),
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

impl Agent {
    pub fn new(rexec: PathBuf, tunnel_ca: Option<String>, allow_forward: bool) -> Self {
        Agent {
            rexec,
            find: Arc::new(FindTunnel::default()),
            tunnel_ca,
            allow_forward,
        }
    }
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
        let Some(node) = node_of(&path) else {
            return Some(Err(libshv::node::no_such_path(&path)));
        };
        let p = req.param();
        match node.resolve(&path, &method, libshv::access::granted(&req.meta), p) {
            Err(e) => return Some(Err(e)),
            Ok(libshv::node::Resolved::Answer(v)) => return Some(Ok(v)),
            Ok(libshv::node::Resolved::Call(_)) => {}
        }
        Some(match (path.as_str(), method.as_str()) {
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

/// Reconnect back-off cap: 1 s doubling up to this (about 0.5 s for a minute after a link that held).
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
