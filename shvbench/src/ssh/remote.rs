//! The two ways to reach the same machine's shell: ssh to the benchmark's own sshd,
//! and shvrsh/shvcp through our broker to shvagent. Each builds the command line of a
//! session, a port forward and a file copy, so every measurement runs the same code
//! for both.

use std::path::{Path, PathBuf};

use libshv::RpcUrl;
use tokio::process::Command;

use super::sshd::HOST;
use crate::tunnel::TunnelBins;

// Two values per run: their size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Remote {
    Ssh {
        ssh: PathBuf,
        scp: PathBuf,
        /// The client config (`-F`) that defines [`HOST`].
        config: PathBuf,
        /// `-c CIPHER`; none: ssh's default (chacha20-poly1305 in OpenSSH 9).
        cipher: Option<String>,
    },
    Shv {
        bins: TunnelBins,
        shvcp: PathBuf,
        url: RpcUrl,
        agent: String,
    },
}

impl Remote {
    fn ssh_base(prog: &Path, config: &Path, cipher: &Option<String>) -> Command {
        let mut c = Command::new(prog);
        c.arg("-F").arg(config);
        if let Some(cipher) = cipher {
            c.args(["-c", cipher]);
        }
        c
    }

    fn shv_base(prog: &Path, url: &RpcUrl) -> Command {
        let mut c = Command::new(prog);
        c.arg(url.without_secrets())
            .env("SHV_PASSWORD", url.password.clone().unwrap_or_default())
            .env("RUST_LOG", "warn");
        c
    }

    /// `script` run by a shell on the remote side (ssh: the user's login shell, as
    /// always; ours: `sh -c`), with a PTY if `pty`.
    pub fn session(&self, pty: bool, script: &str) -> Command {
        match self {
            Remote::Ssh {
                ssh,
                config,
                cipher,
                ..
            } => {
                let mut c = Self::ssh_base(ssh, config, cipher);
                c.arg(if pty { "-tt" } else { "-T" }).arg(HOST).arg(script);
                c
            }
            Remote::Shv {
                bins, url, agent, ..
            } => {
                let mut c = Command::new(&bins.rsh);
                if pty {
                    c.arg("-t");
                }
                c.arg("--no-escape")
                    .arg(url.without_secrets())
                    .arg(agent)
                    .args(["--", "sh", "-c", script])
                    .env("SHV_PASSWORD", url.password.clone().unwrap_or_default())
                    .env("RUST_LOG", "warn");
                c
            }
        }
    }

    /// `-N -L LPORT:127.0.0.1:TO`: a local port forward, no command.
    pub fn forward(&self, lport: u16, to: u16) -> Command {
        let spec = format!("{lport}:127.0.0.1:{to}");
        match self {
            Remote::Ssh {
                ssh,
                config,
                cipher,
                ..
            } => {
                let mut c = Self::ssh_base(ssh, config, cipher);
                c.args(["-N", "-L", &spec, HOST]);
                c
            }
            Remote::Shv {
                bins, url, agent, ..
            } => {
                let mut c = Self::shv_base(&bins.rsh, url);
                c.args([agent.as_str(), "-N", "-L", &spec]);
                c
            }
        }
    }

    /// A copy of `local` to the remote file `remote` (`up`), or back.
    pub fn copy(&self, up: bool, local: &Path, remote: &Path) -> Command {
        let local = local.display().to_string();
        let (mut c, remote) = match self {
            Remote::Ssh {
                scp,
                config,
                cipher,
                ..
            } => {
                let mut c = Self::ssh_base(scp, config, cipher);
                c.arg("-q");
                (c, format!("{HOST}:{}", remote.display()))
            }
            Remote::Shv {
                shvcp, url, agent, ..
            } => {
                let mut c = Self::shv_base(shvcp, url);
                c.arg("-q");
                (c, format!("{agent}:{}", remote.display()))
            }
        };
        if up {
            c.args([local, remote]);
        } else {
            c.args([remote, local]);
        }
        c
    }
}
