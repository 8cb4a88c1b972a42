//! The broker as a server: [`Server::bind`] binds every listen URL (so a caller, a test
//! among them, learns the chosen ports before anything runs), [`Server::serve`] runs
//! the broker task, the accept loops and the parent links until shutdown, then waits
//! (bounded) for the connections to flush and close.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libshv::connection::{BoxRead, BoxWrite};
use libshv::logsafe::shown;
use libshv::url::{RpcUrl, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::Config;
use crate::peer::{self, PeerContext};

/// Capacity of the channel from all peers to the broker task.
const EVENT_QUEUE: usize = 1024;
/// How long shutdown waits for connections to deliver what is queued and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

enum Listener {
    Tcp(tokio::net::TcpListener),
    /// TCP whose connections do a TLS handshake first (in their own task).
    Ssl(tokio::net::TcpListener, tokio_rustls::TlsAcceptor),
    Unix(tokio::net::UnixListener, PathBuf),
    /// TCP with the Serial framing (`tcps://`), turned into Block framing per connection.
    Tcps(tokio::net::TcpListener),
    /// A Unix socket with the Serial framing (`unixs:`).
    Unixs(tokio::net::UnixListener, PathBuf),
    /// TCP whose connections do a WebSocket handshake first (`ws://`).
    Ws(tokio::net::TcpListener),
}

/// An accepted connection, ready or still to shake hands.
enum Accepted {
    Ready(BoxRead, BoxWrite, String),
    Tls(tokio::net::TcpStream, tokio_rustls::TlsAcceptor, String),
    Ws(tokio::net::TcpStream, String),
}

/// A broker whose listeners are bound and which is not serving yet.
pub struct Server {
    config: Arc<Config>,
    listeners: Vec<Listener>,
    /// What clients can connect to: `tcp://IP:PORT` (the port chosen, for port 0) and
    /// `unix:PATH`, in the order of the config's `listen`.
    addresses: Vec<String>,
    tcp_address: Option<(String, u16)>,
}

impl Server {
    /// Binds every `listen` URL of `config`.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let mut listeners = Vec::new();
        let mut addresses = Vec::new();
        let mut tcp_address = None;
        for url in &config.listen {
            let parsed = RpcUrl::parse(url).map_err(|e| anyhow::anyhow!("listen: {e}"))?;
            match parsed.transport() {
                Transport::Tcp { host, port } => {
                    let l = tokio::net::TcpListener::bind((host.as_str(), *port))
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot listen on {url}: {e}"))?;
                    let local = l.local_addr()?;
                    tcp_address.get_or_insert((local.ip().to_string(), local.port()));
                    addresses.push(format!("tcp://{local}"));
                    listeners.push(Listener::Tcp(l));
                }
                Transport::Ssl { host, port, tls } => {
                    let config = libshv::tls::server_config(tls)
                        .map_err(|e| anyhow::anyhow!("listen {}: {e}", libshv::url::redact(url)))?;
                    let l = tokio::net::TcpListener::bind((host.as_str(), *port))
                        .await
                        .map_err(|e| {
                            anyhow::anyhow!("cannot listen on {}: {e}", libshv::url::redact(url))
                        })?;
                    let local = l.local_addr()?;
                    addresses.push(format!("ssl://{local}"));
                    listeners.push(Listener::Ssl(l, tokio_rustls::TlsAcceptor::from(config)));
                }
                Transport::Unix { path } => {
                    let l = bind_unix(url, path)?;
                    addresses.push(format!("unix:{path}"));
                    listeners.push(Listener::Unix(l, PathBuf::from(path)));
                }
                Transport::Ws { host, port, .. } => {
                    let l = tokio::net::TcpListener::bind((host.as_str(), *port))
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot listen on {url}: {e}"))?;
                    addresses.push(format!("ws://{}", l.local_addr()?));
                    listeners.push(Listener::Ws(l));
                }
                Transport::Tcps { host, port } => {
                    let l = tokio::net::TcpListener::bind((host.as_str(), *port))
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot listen on {url}: {e}"))?;
                    addresses.push(format!("tcps://{}", l.local_addr()?));
                    listeners.push(Listener::Tcps(l));
                }
                Transport::Unixs { path } => {
                    let l = bind_unix(url, path)?;
                    addresses.push(format!("unixs:{path}"));
                    listeners.push(Listener::Unixs(l, PathBuf::from(path)));
                }
            }
        }
        if listeners.is_empty() {
            anyhow::bail!("no listen address configured");
        }
        Ok(Server {
            config: Arc::new(config),
            listeners,
            addresses,
            tcp_address,
        })
    }

    /// The bound addresses (`tcp://127.0.0.1:PORT`, `unix:PATH`).
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The port of the first TCP listener.
    pub fn tcp_port(&self) -> Option<u16> {
        self.tcp_address.as_ref().map(|(_, p)| *p)
    }

    /// Serves until `shutdown` is cancelled. An `Err` is an internal failure (the broker
    /// task stopped on its own); the caller should exit.
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Server {
            config,
            listeners,
            addresses,
            tcp_address,
        } = self;
        for a in &addresses {
            tracing::info!("listening on {a}");
        }
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let broker = Broker::new(config.clone(), tcp_address);
        let mut broker_task = tokio::spawn(broker.run(events_rx, shutdown.clone()));
        let ctx = Arc::new(PeerContext::new(
            config.clone(),
            events_tx,
            shutdown.clone(),
        ));
        let connections = TaskTracker::new();
        let mut tasks = Vec::new();
        for l in listeners {
            let accept = accept_loop(l, ctx.clone(), shutdown.clone(), connections.clone());
            tasks.push(tokio::spawn(accept));
        }
        for (i, c) in config.connections.iter().enumerate() {
            tasks.push(tokio::spawn(crate::link::run(i, c.clone(), ctx.clone())));
        }
        drop(ctx);
        // The broker task ends only on shutdown. If it ends otherwise (a panic: a bug),
        // the whole process goes, loudly: a broker that accepts connections and answers
        // every login with "shutting down" is worse than none.
        let stopped = tokio::select! {
            _ = shutdown.cancelled() => None,
            r = &mut broker_task => Some(r),
        };
        // The broker task also watches `shutdown` and may have seen it first.
        let broker_done = stopped.is_some();
        if let Some(r) = stopped.filter(|r| !(r.is_ok() && shutdown.is_cancelled())) {
            shutdown.cancel();
            let why = match r {
                Err(e) if e.is_panic() => panic_message(e.into_panic()),
                Err(e) => e.to_string(),
                Ok(()) => "it returned".into(),
            };
            tracing::error!("the broker task stopped unexpectedly ({why}); exiting");
            anyhow::bail!("internal error: the broker task stopped unexpectedly: {why}");
        }
        tracing::info!("shutting down");
        for t in tasks {
            let _ = t.await;
        }
        if !broker_done {
            let _ = broker_task.await;
        }
        // Every connection has been told to stop; give them a moment to flush.
        connections.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "{} connections still closing after {SHUTDOWN_GRACE:?}; leaving them",
                connections.len()
            );
        }
        Ok(())
    }
}

/// Binds and serves until `shutdown` (what `main` does).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Server::bind(config).await?.serve(shutdown).await
}

fn bind_unix(url: &str, path: &str) -> anyhow::Result<tokio::net::UnixListener> {
    let p = std::path::Path::new(path);
    // A socket left by a broker that died; refuse to steal a live one.
    if p.exists() && std::os::unix::net::UnixStream::connect(p).is_err() {
        let _ = std::fs::remove_file(p);
    }
    let l = tokio::net::UnixListener::bind(p)
        .map_err(|e| anyhow::anyhow!("cannot listen on {url}: {e}"))?;
    // Owner only: whoever can connect can try passwords and reach the login phase.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| anyhow::anyhow!("cannot restrict {url} to its owner: {e}"))?;
    Ok(l)
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

async fn accept_loop(
    l: Listener,
    ctx: Arc<PeerContext>,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = accept(&l) => a,
        };
        match accepted {
            Ok(Accepted::Ready(r, w, addr)) => {
                connections.spawn(peer::run(r, w, addr, ctx.clone()));
            }
            Ok(Accepted::Tls(stream, acceptor, addr)) => {
                connections.spawn(tls_then_run(stream, acceptor, addr, ctx.clone()));
            }
            Ok(Accepted::Ws(stream, addr)) => {
                connections.spawn(ws_then_run(stream, addr, ctx.clone()));
            }
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if let Listener::Unix(_, path) | Listener::Unixs(_, path) = &l {
        let _ = std::fs::remove_file(path);
    }
}

async fn accept(l: &Listener) -> std::io::Result<Accepted> {
    match l {
        Listener::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            s.set_nodelay(true)?;
            let (r, w) = s.into_split();
            Ok(Accepted::Ready(
                Box::pin(r),
                Box::pin(w),
                format!("tcp:{addr}"),
            ))
        }
        Listener::Ssl(l, acceptor) => {
            let (s, addr) = l.accept().await?;
            s.set_nodelay(true)?;
            Ok(Accepted::Tls(s, acceptor.clone(), format!("ssl:{addr}")))
        }
        Listener::Unix(l, path) => {
            let (s, _) = l.accept().await?;
            let (r, w) = s.into_split();
            let addr = format!("unix:{}", path.display());
            Ok(Accepted::Ready(Box::pin(r), Box::pin(w), addr))
        }
        Listener::Ws(l) => {
            let (s, addr) = l.accept().await?;
            s.set_nodelay(true)?;
            Ok(Accepted::Ws(s, format!("ws:{addr}")))
        }
        Listener::Tcps(l) => {
            let (s, addr) = l.accept().await?;
            s.set_nodelay(true)?;
            let (r, w) = libshv::serial::bridge(s, false, libshv::codec::DEFAULT_MAX_FRAME);
            Ok(Accepted::Ready(r, w, format!("tcps:{addr}")))
        }
        Listener::Unixs(l, path) => {
            let (s, _) = l.accept().await?;
            let (r, w) = libshv::serial::bridge(s, false, libshv::codec::DEFAULT_MAX_FRAME);
            Ok(Accepted::Ready(r, w, format!("unixs:{}", path.display())))
        }
    }
}

/// The WebSocket handshake, bounded by `login_timeout`, then the connection as usual.
async fn ws_then_run(stream: tokio::net::TcpStream, addr: String, ctx: Arc<PeerContext>) {
    let limit = Duration::from_secs(ctx.config.limits.login_timeout);
    let max = ctx.config.limits.max_frame_size;
    let ws = tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        r = tokio::time::timeout(limit, libshv::ws::accept(stream, max)) => r,
    };
    match ws {
        Ok(Ok((r, w))) => peer::run(r, w, addr, ctx).await,
        Ok(Err(e)) => {
            tracing::info!(addr = %shown(&addr), "{}", shown(&e.to_string()));
        }
        Err(_) => tracing::info!(addr = %shown(&addr), "no WebSocket handshake within {limit:?}"),
    }
}

/// The TLS handshake, bounded by `login_timeout` (a client that never finishes it is
/// dropped like one that never logs in), then the connection as usual.
async fn tls_then_run(
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    addr: String,
    ctx: Arc<PeerContext>,
) {
    let limit = Duration::from_secs(ctx.config.limits.login_timeout);
    let tls = tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        r = tokio::time::timeout(limit, acceptor.accept(stream)) => r,
    };
    match tls {
        Ok(Ok(tls)) => {
            let (r, w) = tokio::io::split(tls);
            peer::run(Box::pin(r), Box::pin(w), addr, ctx).await;
        }
        Ok(Err(e)) => {
            tracing::info!(addr = %shown(&addr), "TLS handshake failed: {}", shown(&e.to_string()));
        }
        Err(_) => tracing::info!(addr = %shown(&addr), "no TLS handshake within {limit:?}"),
    }
}
