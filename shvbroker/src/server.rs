//! The broker as a server: [`Server::bind`] binds every listen URL (so a caller, a test
//! among them, learns the chosen ports before anything runs), [`Server::serve`] runs
//! the broker task, the accept loops and the parent links until shutdown, then waits
//! (bounded) for the connections to flush and close.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libshv::logsafe::shown;
use libshv::reader::Meter;
use libshv::transport::stream::{self, BoxRead, BoxStream, BoxWrite, RawStream};
use libshv::transport::{AcceptHooks, Acceptor};
use libshv::url::{Endpoint, Framing, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::peer::{self, PeerContext};
use crate::settings::Settings;

/// Capacity of the channel from all peers to the broker task.
const EVENT_QUEUE: usize = 1024;
/// How long shutdown waits for connections to deliver what is queued and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A bound listener: where connections come from, and what each one does before it
/// speaks SHV (a TLS handshake, the framing's bridge, a WebSocket handshake).
struct Listener {
    socket: Socket,
    tls: Option<tokio_rustls::TlsAcceptor>,
    framing: Framing,
}

enum Socket {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
    /// A serial line: one peer at a time, reopened when it goes away.
    Tty {
        path: String,
        baudrate: u32,
    },
}

/// A broker whose listeners are bound and which is not serving yet.
pub struct Server {
    settings: Arc<Settings>,
    listeners: Vec<Listener>,
    /// What clients can connect to (`tcp://IP:PORT` with the port chosen for port 0,
    /// `unix:PATH`, …), in the order of the config's `listen`.
    addresses: Vec<Transport>,
    /// Where a tunnel end reaches us: `tunnel.public_address`, else our first network
    /// listener.
    tunnel_address: Option<Transport>,
    audit: crate::audit::AuditLog,
    recorder: Option<crate::recording::Recorder>,
}

impl Server {
    /// Binds every `listen` URL of `settings`.
    pub async fn bind(settings: Settings) -> anyhow::Result<Server> {
        let mut listeners = Vec::new();
        let mut addresses = Vec::new();
        for url in &settings.listen {
            let shown_url = url.to_string();
            let t = url.transport();
            let tls = match &t.tls {
                Some(o) => {
                    let c = libshv::transport::tls::server_config(o)
                        .map_err(|e| anyhow::anyhow!("listen {shown_url}: {e}"))?;
                    Some(tokio_rustls::TlsAcceptor::from(c))
                }
                None => None,
            };
            let (socket, address) = match &t.endpoint {
                Endpoint::Tcp { host, port } => {
                    let l = tokio::net::TcpListener::bind((host.as_str(), *port))
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot listen on {shown_url}: {e}"))?;
                    let local = l.local_addr()?;
                    let address = t.with_host_port(&local.ip().to_string(), local.port());
                    (Socket::Tcp(l), address)
                }
                Endpoint::Unix { path } => {
                    let l = bind_unix(&shown_url, path)?;
                    (Socket::Unix(l, PathBuf::from(path)), t.clone())
                }
                Endpoint::Tty { path, baudrate } => {
                    let socket = Socket::Tty {
                        path: path.clone(),
                        baudrate: *baudrate,
                    };
                    (socket, t.clone())
                }
            };
            addresses.push(address);
            listeners.push(Listener {
                socket,
                tls,
                framing: t.framing.clone(),
            });
        }
        if listeners.is_empty() {
            anyhow::bail!("no listen address configured");
        }
        if let Some(root) = &settings.web_root {
            if !root.is_dir() {
                anyhow::bail!("web_root {} is not a directory", root.display());
            }
            if !listeners
                .iter()
                .any(|l| matches!(l.framing, Framing::WebSocket { .. }))
            {
                tracing::warn!("web_root is set but no ws:// or wss:// listener serves it");
            }
        }
        let tunnel_address = match &settings.tunnel_address {
            Some(a) => Some(a.clone()),
            None => addresses
                .iter()
                .find(|a| matches!(a.endpoint, Endpoint::Tcp { .. }))
                .cloned(),
        };
        let audit = match &settings.tunnel.audit_log {
            Some(p) => crate::audit::AuditLog::open(p)
                .map_err(|e| anyhow::anyhow!("tunnel.audit_log {}: {e}", p.display()))?,
            None => crate::audit::AuditLog::disabled(),
        };
        let recorder = match &settings.tunnel.record_dir {
            Some(d) => Some(
                crate::recording::Recorder::open(
                    d,
                    settings.tunnel.record_input,
                    settings.tunnel.record_limits(),
                )
                .map_err(|e| anyhow::anyhow!("tunnel.record_dir {}: {e}", d.display()))?,
            ),
            None => None,
        };
        Ok(Server {
            settings: Arc::new(settings),
            listeners,
            addresses,
            tunnel_address,
            audit,
            recorder,
        })
    }

    /// The bound addresses (`tcp://127.0.0.1:PORT`, `unix:PATH`, …).
    pub fn addresses(&self) -> &[Transport] {
        &self.addresses
    }

    /// The port of the first plain TCP listener.
    pub fn tcp_port(&self) -> Option<u16> {
        self.addresses
            .iter()
            .find(|a| a.scheme() == "tcp")
            .and_then(|a| a.host_port())
            .map(|(_, p)| p)
    }

    /// Serves until `shutdown` is cancelled. An `Err` is an internal failure (the broker
    /// task stopped on its own); the caller should exit.
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Server {
            settings,
            listeners,
            addresses,
            tunnel_address,
            audit,
            recorder,
        } = self;
        for a in &addresses {
            tracing::info!("listening on {a}");
        }
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let outgoing = crate::queue::Total::new(settings.limits.outgoing_bytes);
        let broker = Broker::new(
            settings.clone(),
            tunnel_address,
            audit,
            recorder,
            outgoing.clone(),
        );
        let mut broker_task = tokio::spawn(broker.run(events_rx, shutdown.clone()));
        let ctx = Arc::new(PeerContext::new(
            settings.clone(),
            events_tx,
            shutdown.clone(),
            outgoing,
        ));
        let connections = TaskTracker::new();
        let mut tasks = Vec::new();
        for l in listeners {
            let accept = accept_loop(l, ctx.clone(), shutdown.clone(), connections.clone());
            tasks.push(tokio::spawn(accept));
        }
        for (i, c) in settings.parents.iter().enumerate() {
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

/// Binds and serves until `shutdown`: `main` without its ready file and signals.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    Server::bind(settings).await?.serve(shutdown).await
}

fn bind_unix(shown_url: &str, path: &str) -> anyhow::Result<tokio::net::UnixListener> {
    let p = std::path::Path::new(path);
    // A socket left by a broker that died; refuse to steal a live one.
    if p.exists() && std::os::unix::net::UnixStream::connect(p).is_err() {
        let _ = std::fs::remove_file(p);
    }
    let l = tokio::net::UnixListener::bind(p)
        .map_err(|e| anyhow::anyhow!("cannot listen on {shown_url}: {e}"))?;
    // Owner only: whoever can connect can try passwords and reach the login phase.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| anyhow::anyhow!("cannot restrict {shown_url} to its owner: {e}"))?;
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
    let Listener {
        socket,
        tls,
        framing,
    } = l;
    let handshake = Arc::new(Acceptor {
        tls,
        framing,
        max_frame: ctx.settings.limits.max_frame_size,
    });
    if let Socket::Tty { path, baudrate } = &socket {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = serve_tty(path, *baudrate, handshake, &ctx) => {}
        }
        return;
    }
    let mut refused = Refused::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = accept(&socket) => a,
        };
        match accepted {
            Ok((stream, addr, ip)) => {
                let (place, ticket) = match ctx.admission.admit(ip) {
                    Ok(admitted) => admitted,
                    Err(why) => {
                        refused.note(&addr, why);
                        continue;
                    }
                };
                let ctx = ctx.clone();
                if handshake.tls.is_none() && handshake.framing == Framing::Block {
                    // Nothing to shake hands about: straight to SHV. (Through
                    // handshake_then_run every idle connection cost 3.5 KiB more.)
                    let (r, w) = stream.into_halves();
                    connections.spawn(async move {
                        peer::run(r, w, addr, ctx, ticket, None).await;
                        drop(place);
                    });
                    continue;
                }
                let h = handshake.clone();
                connections.spawn(handshake_then_run(stream, addr, h, ctx, ticket, place));
            }
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning, and log
                // it once per burst.
                refused.accept_failed(&e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if let Socket::Unix(_, path) = &socket {
        let _ = std::fs::remove_file(path);
    }
}

/// Connections closed at accept, and accepts that failed: logged once per burst and
/// reason, not once per connection (the log must not grow with an attack).
#[derive(Default)]
struct Refused {
    connections: libshv::logsafe::Burst,
    unauthenticated: libshv::logsafe::Burst,
    failed: libshv::logsafe::Burst,
}

impl Refused {
    fn note(&mut self, addr: &str, why: crate::admission::Refusal) {
        use crate::admission::Refusal;
        let burst = match why {
            Refusal::TooManyConnections => &mut self.connections,
            Refusal::TooManyUnauthenticated => &mut self.unauthenticated,
        };
        if let Some(n) = burst.note() {
            tracing::warn!(addr = %shown(addr), "{}: {n} connection(s) closed at accept", why.describe());
        }
    }

    fn accept_failed(&mut self, e: &std::io::Error) {
        if let Some(n) = self.failed.note() {
            tracing::warn!("accept failed ({n} time(s) since the last such line): {e}");
        }
    }
}

/// An accepted stream, its address for logs, and its source IP (None: local socket).
async fn accept(socket: &Socket) -> std::io::Result<(RawStream, String, Option<std::net::IpAddr>)> {
    match socket {
        Socket::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            s.set_nodelay(true)?;
            Ok((RawStream::Tcp(s), format!("tcp:{addr}"), Some(addr.ip())))
        }
        Socket::Unix(l, path) => {
            let (s, _) = l.accept().await?;
            Ok((RawStream::Unix(s), format!("unix:{}", path.display()), None))
        }
        Socket::Tty { .. } => unreachable!("serial lines are served by serve_tty"),
    }
}

/// A serial line carries one peer at a time: open it (waiting for the device to
/// appear), serve the peer until the line fails or it logs out, then open it again.
async fn serve_tty(path: &str, baudrate: u32, handshake: Arc<Acceptor>, ctx: &Arc<PeerContext>) {
    let addr = format!("serial:{path}");
    let mut logged = false;
    loop {
        match stream::open_tty(path, baudrate) {
            Ok(s) => {
                logged = false;
                tracing::info!("serial line {} open", shown(path));
                // One peer at a time on a line: it always has its place.
                let Ok((place, ticket)) = crate::admission::Admission::new(1, 1, 1).admit(None)
                else {
                    continue;
                };
                let (h, c) = (handshake.clone(), ctx.clone());
                handshake_then_run(RawStream::Tty(s), addr.clone(), h, c, ticket, place).await;
            }
            Err(e) if !logged => {
                tracing::warn!(
                    "cannot open {}: {}; retrying",
                    shown(path),
                    shown(&e.to_string())
                );
                logged = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The TLS handshake and the framing's setup (a WebSocket handshake, or an HTTP GET of
/// the web root on a WebSocket port), bounded by `login_timeout` — a client that never
/// finishes them is dropped like one that never logs in — then the connection as usual.
async fn handshake_then_run(
    stream: RawStream,
    addr: String,
    handshake: Arc<Acceptor>,
    ctx: Arc<PeerContext>,
    mut ticket: crate::admission::Ticket,
    place: crate::admission::Place,
) {
    let limit = ctx.settings.limits.login_timeout;
    // A bridge takes the place along with the socket (see `shake`); otherwise it is
    // given back when this returns.
    let mut place = Some(place);
    let evicted = ticket.eviction();
    let shaken = tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        _ = evicted.cancelled() => return,
        r = tokio::time::timeout(
            limit,
            shake(stream, &handshake, &ctx, &mut ticket, &mut place, &addr),
        ) => r,
    };
    match shaken {
        Ok(Ok(Some((r, w, meter)))) => peer::run(r, w, addr, ctx, ticket, meter).await,
        Ok(Ok(None)) => {}
        Ok(Err(e)) => {
            tracing::info!(addr = %shown(&addr), "{}", shown(&e.to_string()));
        }
        Err(_) => tracing::info!(addr = %shown(&addr), "no handshake within {limit:?}"),
    }
}

/// Returns the Block-framed halves (and the meter of a bridge's reads, charged to the
/// user once logged in), or None when the connection was an HTTP request that has
/// been answered.
async fn shake(
    raw: RawStream,
    acceptor: &Acceptor,
    ctx: &PeerContext,
    ticket: &mut crate::admission::Ticket,
    place: &mut Option<crate::admission::Place>,
    addr: &str,
) -> std::io::Result<Option<(BoxRead, BoxWrite, Option<Meter>)>> {
    let mut guards = Guards {
        ctx,
        ticket,
        place,
        addr,
    };
    let accepted = libshv::transport::accept(raw, acceptor, &mut guards).await?;
    Ok(accepted.map(|a| (a.read, a.write, a.meter)))
}

/// The broker's own steps between the transport layers of a connection it accepts.
struct Guards<'a> {
    ctx: &'a PeerContext,
    ticket: &'a mut crate::admission::Ticket,
    place: &'a mut Option<crate::admission::Place>,
    addr: &'a str,
}

impl AcceptHooks for Guards<'_> {
    fn accepted(&mut self, stream: BoxStream) -> BoxStream {
        match self.ctx.settings.limits.write_stall_timeout {
            // On the socket itself: a bridge's task writes to it after the connection
            // above has given up, and TLS writes more than the connection asked for.
            d if d.is_zero() => stream,
            d => Box::new(crate::stall::StallGuard::new(stream, d)),
        }
    }

    fn before_bridge(&mut self, stream: BoxStream) -> BoxStream {
        // The bridges gather whole messages of up to `max_frame_size` before login could
        // refuse them; the cap keeps that to PRE_LOGIN_BYTES. (Block frames before login
        // are drained over 64 KiB by the login code itself.) The bridge's tasks hold the
        // socket, and may outlive the connection above for a while: the place goes with
        // the socket, so that `max_connections` counts open sockets.
        Box::new(self.ticket.cap(stream, self.addr, self.place.take()))
    }

    async fn before_upgrade(&mut self, stream: BoxStream) -> std::io::Result<Option<BoxStream>> {
        match &self.ctx.settings.web_root {
            Some(root) => crate::web::serve_or_upgrade(stream, root).await,
            None => Ok(Some(stream)),
        }
    }

    fn admit(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), String> {
        crate::web::check_origin(origin, host, &self.ctx.settings.web_hosts)
    }
}
