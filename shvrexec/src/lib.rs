//! shvrexec: the device-side end of an SHV remote-shell tunnel (tunnel.md steps 4-10).
//!
//! Started by `shvagent`, it reads one CPON line on stdin
//! (`{"findTunnelResponse": <tctl>, "onConnectedCall": {"method", "params"}}`), logs in to
//! the tunnel broker with the one-time secret, opens the tunnel with rsh and runs the
//! command in a PTY (`runPtyCmd`) or with pipes (`runCmd`), relaying bytes both ways.
//!
//! PTY and process control use `nix` rather than `portable-pty`: we need exactly
//! openpty + setsid + TIOCSCTTY + TIOCSWINSZ + killpg, all thin, well-reviewed libc
//! wrappers in `nix`, and we spawn through `tokio::process` (async wait, pipes) which
//! `portable-pty`'s own child abstraction would not give us; `nix` also serves shvrsh's
//! termios handling, so the workspace carries one low-level crate instead of two.

pub mod process;

use std::time::Duration;

use libshv::client::{Client, ClientConfig};
use libshv::login::{Credentials, LoginParams};
use libshv::tunnel::{CloseStatus, LaunchParams, TunnelCtl, TunnelEnd, TunnelState};
use libshv::url::{RpcUrl, Transport, DEFAULT_PORT};
use libshv::RpcValue;

/// What the agent hands over on stdin.
pub struct Launch {
    /// The FindTunnelResponse with RequestId (5) = rsh's request id R.
    pub find_tunnel_response: TunnelCtl,
    pub call: LaunchParams,
}

#[derive(Debug, thiserror::Error)]
pub enum RexecError {
    #[error("bad launch line: {0}")]
    BadLine(String),
    #[error("{0}")]
    Client(#[from] libshv::ClientError),
    #[error("{0}")]
    Tunnel(#[from] libshv::tunnel::TunnelError),
}

impl Launch {
    /// Parses the stdin line. Never echoes the line in errors: it holds the secret.
    pub fn parse(line: &str) -> Result<Launch, RexecError> {
        let v = libshv::value::from_cpon(line.trim())
            .map_err(|e| RexecError::BadLine(format!("not CPON ({e})")))?;
        let ftr = v
            .get("findTunnelResponse")
            .ok_or_else(|| RexecError::BadLine("no findTunnelResponse".into()))?;
        let ftr = TunnelCtl::parse(ftr).map_err(|e| RexecError::BadLine(e.to_string()))?;
        if ftr.state != TunnelState::FindTunnelResponse {
            return Err(RexecError::BadLine(format!(
                "findTunnelResponse has state {:?}",
                ftr.state
            )));
        }
        if ftr.request_id.is_none() {
            return Err(RexecError::BadLine(
                "findTunnelResponse has no RequestId".into(),
            ));
        }
        if ftr.secret.is_none() {
            return Err(RexecError::BadLine(
                "findTunnelResponse has no Secret".into(),
            ));
        }
        let call = v
            .get("onConnectedCall")
            .ok_or_else(|| RexecError::BadLine("no onConnectedCall".into()))?;
        let call = LaunchParams::from_value(call).map_err(|e| RexecError::BadLine(e.message))?;
        Ok(Launch {
            find_tunnel_response: ftr,
            call,
        })
    }

    /// Builds the launch line (used by shvagent).
    pub fn to_line(ftr: &TunnelCtl, call: &RpcValue) -> String {
        let mut m = libshv::shvproto::Map::new();
        m.insert("findTunnelResponse".into(), ftr.to_value());
        m.insert("onConnectedCall".into(), call.clone());
        let mut s = RpcValue::from(m).to_cpon();
        s.push('\n');
        s
    }

    /// Client configuration for the tunnel broker: Host:Port from the tctl (default
    /// port when absent), empty user, the secret, no idle watchdog.
    pub fn client_config(&self) -> ClientConfig {
        let ftr = &self.find_tunnel_response;
        let url = RpcUrl {
            transport: Some(Transport::Tcp {
                host: ftr
                    .host
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "localhost".into()),
                port: ftr.port.unwrap_or(DEFAULT_PORT),
            }),
            ..Default::default()
        };
        let mut cfg = ClientConfig::from_url(url);
        cfg.login = LoginParams {
            user: String::new(),
            credentials: Credentials::TunnelSecret(ftr.secret.clone().unwrap_or_default()),
            use_sha1: false,
            device_id: None,
            mount_point: None,
            // The command may be silent for hours; liveness is the broker's job.
            idle_timeout: Some(0),
            user_agent: Some(format!("shvrexec/{}", env!("CARGO_PKG_VERSION"))),
        };
        cfg
    }
}

/// How long rsh has to answer the CreateTunnelRequest.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects, opens the tunnel, runs the command and closes the tunnel with its status.
/// Returns the status that was sent.
pub async fn run(launch: Launch) -> Result<CloseStatus, RexecError> {
    // The session belongs to the agent that started us: if it dies (even by SIGKILL),
    // we get SIGHUP and end the session instead of running on unsupervised.
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGHUP) {
        tracing::warn!("cannot ask for SIGHUP when the agent dies: {e}");
    }
    let cfg = launch.client_config();
    tracing::info!(
        "connecting to tunnel broker {} for request {:?}",
        cfg.url.transport(),
        launch.find_tunnel_response.request_id
    );
    let (client, _signals) = Client::connect(&cfg, None).await?;
    let end = TunnelEnd::create(&client, &launch.find_tunnel_response, OPEN_TIMEOUT).await?;
    tracing::info!(
        "tunnel open, running {} {:?}",
        launch.call.method(),
        launch.call.cmd
    );
    let (sender, receiver) = end.split();
    let status = process::run(&launch.call, sender.clone(), receiver).await;
    if let Some(status) = &status {
        tracing::info!("command ended: {status:?}");
        sender.close(status).await?;
    }
    // A ping is answered only after the broker read everything we sent before it, so
    // the output and the CloseTunnel are on their way before we exit.
    let _ = client
        .call_timeout(".app", "ping", None, Duration::from_secs(5))
        .await;
    Ok(status.unwrap_or(CloseStatus::Detached))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_line_round_trip() {
        let ftr = TunnelCtl {
            state: TunnelState::FindTunnelResponse,
            host: Some("127.0.0.1".into()),
            port: Some(4567),
            secret: Some("abc".into()),
            request_id: Some(12),
            caller_ids: vec![3],
            nonce: None,
        };
        let call = LaunchParams {
            pty: false,
            cmd: vec!["echo".into(), "hi".into()],
            ..Default::default()
        };
        let line = Launch::to_line(&ftr, &call.to_value());
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let l = Launch::parse(&line).unwrap();
        assert_eq!(l.find_tunnel_response, ftr);
        assert_eq!(l.call.cmd, call.cmd);
        let cfg = l.client_config();
        assert_eq!(
            cfg.url.transport(),
            &Transport::Tcp {
                host: "127.0.0.1".into(),
                port: 4567
            }
        );
        let login = cfg.login.to_value("nonce");
        assert_eq!(
            login.get("options").unwrap().to_cpon(),
            r#"{"idleWatchDogTimeOut":0,"tunnel":{"secret":"abc"},"userAgent":"shvrexec/0.1.0"}"#
        );
        assert_eq!(
            login.get("login").unwrap().get("user").unwrap().as_str(),
            ""
        );
    }

    #[test]
    fn bad_lines_do_not_leak_secret() {
        for line in [
            "garbage \"topsecret\"",
            r#"{"findTunnelResponse":<1:3>i{1:2,4:"topsecret"}}"#,
            r#"{"findTunnelResponse":i{1:1,4:"topsecret",5:1},"onConnectedCall":{}}"#,
        ] {
            let e = Launch::parse(line).err().unwrap().to_string();
            assert!(!e.contains("topsecret"), "{e}");
        }
    }
}
