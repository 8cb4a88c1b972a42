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

pub(crate) mod process;

use std::time::Duration;

use libshv::client::{Client, ClientConfig};
use libshv::login::{Credentials, LoginParams};
use libshv::tunnel::mux::{run_mux, MuxRole};
use libshv::tunnel::{
    parse_tunnel_address, CloseStatus, Dialect, FileCopy, Forward, LaunchParams, RexecLine,
    TunnelCtl, TunnelEnd, TunnelReceiver, TunnelSender, TunnelState,
};
use libshv::url::RpcUrl;

/// What the agent hands over on stdin.
pub struct Launch {
    /// The FindTunnelResponse with RequestId (5) = rsh's request id R.
    pub find_tunnel_response: TunnelCtl,
    pub call: LaunchParams,
    /// How the operator's end speaks: the launch's form says (a C++ shvrsh sends the
    /// journal's List form and reads only Strings).
    pub dialect: Dialect,
    /// The CA the agent trusts, for a tunnel host reached over TLS.
    pub tunnel_ca: Option<String>,
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
        let l = RexecLine::parse(line).map_err(RexecError::BadLine)?;
        let ftr = l.find_tunnel_response;
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
        let call = LaunchParams::from_value(&l.on_connected_call)
            .map_err(|e| RexecError::BadLine(e.message))?;
        Ok(Launch {
            find_tunnel_response: ftr,
            call,
            dialect: Dialect::of_launch(&l.on_connected_call),
            tunnel_ca: l.tunnel_ca,
        })
    }

    /// Client configuration for the tunnel broker: the transport from the tctl's Host
    /// and Port (a host name means plain TCP), empty user, the secret, no idle
    /// watchdog.
    pub fn client_config(&self) -> Result<ClientConfig, RexecError> {
        let ftr = &self.find_tunnel_response;
        let mut transport = parse_tunnel_address(ftr.host.as_deref().unwrap_or(""), ftr.port)
            .map_err(|e| RexecError::BadLine(e.to_string()))?;
        if let Some(tls) = &mut transport.tls {
            tls.ca = self.tunnel_ca.clone();
        }
        let url = RpcUrl {
            transport: Some(transport),
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
            broker: false,
        };
        Ok(cfg)
    }
}

/// A port forward on the device (tunnel.md [ext], `libshv::tunnel::mux`): connect each
/// of the operator's connections to the target (`-L`), or listen and carry each
/// connection back (`-R`). Ends when the operator's side goes.
async fn forward(f: &Forward, sender: TunnelSender, receiver: TunnelReceiver) -> CloseStatus {
    match f {
        Forward::Connect { host, port } => {
            let label = format!("forward to {host}:{port}");
            let role = MuxRole::Connect {
                host: host.clone(),
                port: *port,
            };
            run_mux(sender, receiver, role, &label).await
        }
        Forward::Dynamic => {
            run_mux(
                sender,
                receiver,
                MuxRole::Dynamic,
                "dynamic forward (SOCKS)",
            )
            .await
        }
        Forward::Listen { bind, port } => {
            match tokio::net::TcpListener::bind((bind.as_str(), *port)).await {
                Ok(l) => {
                    let label = format!("listener on {bind}:{port}");
                    tracing::info!("{label}: open");
                    run_mux(sender, receiver, MuxRole::Accept(l), &label).await
                }
                Err(e) => {
                    CloseStatus::Error(format!("cannot listen on {bind}:{port} on the device: {e}"))
                }
            }
        }
    }
}

/// A file copy on the device (`libshv::tunnel::copy`, shvcp): send a tar stream of the
/// paths (`copyOut`), or extract the one received into `dest` (`copyIn`). The status
/// is exit code 0 or the one-line error (a missing file, a full disk).
async fn copy_files(
    c: &FileCopy,
    sender: TunnelSender,
    mut receiver: TunnelReceiver,
) -> CloseStatus {
    use libshv::tunnel::copy::{archive, extract, ChannelReader, ChannelWriter};
    use libshv::tunnel::{Control, TunnelEvent};
    match c.clone() {
        FileCopy::Out { paths, recursive } => {
            let paths = match paths
                .iter()
                .map(|p| libshv::tunnel::copy::device_path(p))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(p) => p,
                Err(e) => return CloseStatus::Error(e.to_string()),
            };
            tracing::info!("copy out: {paths:?}");
            // Missing sources fail before anything is sent; the total is for the
            // operator's progress bar.
            match libshv::tunnel::copy::check_sources(&paths, recursive) {
                Ok(total) => {
                    if sender.send_control(Control::Total(total)).await.is_err() {
                        return CloseStatus::Detached;
                    }
                }
                Err(e) => return CloseStatus::Error(e.to_string()),
            }
            let (tx, mut rx) = tokio::sync::mpsc::channel(8);
            let job = tokio::task::spawn_blocking(move || {
                archive(&paths, recursive, ChannelWriter::new(tx))
            });
            loop {
                tokio::select! {
                    chunk = rx.recv() => match chunk {
                        Some(data) => {
                            if sender.send_data(1, &data).await.is_err() {
                                return CloseStatus::Detached;
                            }
                        }
                        None => break,
                    },
                    ev = receiver.recv() => if matches!(ev, Some(TunnelEvent::Closed(_)) | None) {
                        return CloseStatus::Detached;
                    },
                }
            }
            match job.await {
                Ok(Ok(_)) => CloseStatus::ExitCode(0),
                Ok(Err(e)) => CloseStatus::Error(e.to_string()),
                Err(e) => CloseStatus::Error(format!("copy failed: {e}")),
            }
        }
        FileCopy::In { dest, preserve } => {
            let dest_path = match libshv::tunnel::copy::device_path(&dest) {
                Ok(p) => p,
                Err(e) => return CloseStatus::Error(e.to_string()),
            };
            tracing::info!("copy in: {}", dest_path.display());
            let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
            let job = tokio::task::spawn_blocking(move || {
                extract(ChannelReader::new(rx), &dest_path, preserve)
            });
            let mut tx = Some(tx);
            while let Some(t) = &tx {
                match receiver.recv().await {
                    Some(TunnelEvent::Data { channel: 0, data }) => {
                        // The extractor stopped (an error): it has the reason.
                        if t.send(data).await.is_err() {
                            tx = None;
                        }
                    }
                    Some(TunnelEvent::Control(Control::Eof)) => tx = None,
                    // The operator went: the extractor, cut short, removes what it had
                    // half written.
                    Some(TunnelEvent::Closed(_)) | None => {
                        drop(tx.take());
                        let _ = job.await;
                        return CloseStatus::Detached;
                    }
                    Some(_) => {}
                }
            }
            match job.await {
                Ok(Ok(_)) => CloseStatus::ExitCode(0),
                Ok(Err(e)) => CloseStatus::Error(e.to_string()),
                Err(e) => CloseStatus::Error(format!("copy failed: {e}")),
            }
        }
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
    let cfg = launch.client_config()?;
    tracing::info!(
        "connecting to tunnel broker {} for request {:?}",
        libshv::logsafe::shown(&cfg.url.transport().to_string()),
        launch.find_tunnel_response.request_id
    );
    let (client, _signals) = Client::connect(&cfg, None).await?;
    let end = TunnelEnd::create(&client, &launch.find_tunnel_response, OPEN_TIMEOUT)
        .await?
        .with_dialect(launch.dialect);
    tracing::info!(
        "tunnel open ({:?} dialect), running {} {:?}",
        launch.dialect,
        launch.call.method(),
        launch.call.cmd
    );
    let (sender, receiver) = end.split();
    let status = match (&launch.call.forward, &launch.call.copy) {
        (Some(f), _) => Some(forward(f, sender.clone(), receiver).await),
        (None, Some(c)) => Some(copy_files(c, sender.clone(), receiver).await),
        (None, None) => process::run(&launch.call, sender.clone(), receiver).await,
    };
    if let Some(status) = &status {
        tracing::info!("command ended: {status}");
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
        let line = RexecLine {
            find_tunnel_response: ftr.clone(),
            on_connected_call: call.to_value(),
            tunnel_ca: None,
        }
        .to_line();
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let l = Launch::parse(&line).unwrap();
        assert_eq!(l.find_tunnel_response, ftr);
        assert_eq!(l.call.cmd, call.cmd);
        let cfg = l.client_config().unwrap();
        assert_eq!(
            cfg.url.transport(),
            &libshv::url::Transport::tcp("127.0.0.1", 4567)
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
