//! What the tools that open tunnels (shvrsh, shvcp) share: their login options and
//! the one-line reason a launch failed.

use std::path::PathBuf;
use std::time::Duration;

use libshv::tunnel::TunnelError;
use libshv::{message::code, Client, ClientConfig, ClientError, RpcValue};

/// How to log in and how long to wait for the tunnel.
#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Read the password from this file (first line) instead of the URL
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Log in with PLAIN (password sent as is) instead of SHA1
    #[arg(long)]
    pub plain: bool,
    /// Seconds to wait for the tunnel to open
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
}

impl LoginArgs {
    /// The client config for `url`, a URL or a named host of the client config file
    /// (password from the URL, the host, SHV_PASSWORD or the file).
    pub fn config(&self, url: &str) -> anyhow::Result<ClientConfig> {
        crate::client_config(url, self.password_file.as_deref(), self.plain)
    }

    pub fn open_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout.max(0.1))
    }
}

/// Why a tunnel could not be launched, as the operator should read it.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("path not found: {0}")]
    PathNotFound(String),
    #[error("{0} is not an shvagent (it has no launchRexec method)")]
    NotAnAgent(String),
    #[error("access denied: {0}:launchRexec")]
    AccessDenied(String),
    #[error("tunnel failed: {0}")]
    Tunnel(String),
    #[error("connection to the broker lost")]
    Disconnected,
}

/// The one-line reason a launch at `agent_path` failed. A MethodNotFound is looked
/// into (`dir` of the path): no such path, not an agent, or no access to it.
pub async fn launch_error(client: &Client, agent_path: &str, e: TunnelError) -> LaunchError {
    match e {
        TunnelError::Rpc(e) if e.code == code::METHOD_NOT_FOUND => match client
            .call(agent_path, "dir", Some(RpcValue::from("launchRexec")))
            .await
        {
            Ok(v) if v.as_bool() => LaunchError::AccessDenied(agent_path.to_string()),
            Ok(_) => LaunchError::NotAnAgent(agent_path.to_string()),
            Err(_) => LaunchError::PathNotFound(agent_path.to_string()),
        },
        TunnelError::Rpc(e) => LaunchError::Tunnel(e.message),
        TunnelError::Client(ClientError::Disconnected) => LaunchError::Disconnected,
        TunnelError::Failed(m) => LaunchError::Tunnel(m),
        e => LaunchError::Tunnel(e.to_string()),
    }
}
