//! Command-line options shared by the tools that open tunnels (shvrsh, shvcp).

use std::path::PathBuf;
use std::time::Duration;

use libshv::ClientConfig;

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
        shvtool::client_config(url, self.password_file.as_deref(), self.plain)
    }

    pub fn open_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout.max(0.1))
    }
}
