//! Listeners: accept TCP and Unix connections and start a peer task for each; start the
//! broker task; shut everything down on request.

use std::sync::Arc;

use libshv::url::{RpcUrl, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::peer::{self, PeerContext};
use crate::state::Broker;

/// Capacity of the channel from all peers to the broker task.
const EVENT_QUEUE: usize = 1024;

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

/// Binds every `listen` URL, then serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let mut listeners = Vec::new();
    let mut tcp_address = None;
    for url in &config.listen {
        let parsed = RpcUrl::parse(url).map_err(|e| anyhow::anyhow!("listen: {e}"))?;
        match parsed.transport() {
            Transport::Tcp { host, port } => {
                let l = tokio::net::TcpListener::bind((host.as_str(), *port))
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {url}: {e}"))?;
                let local = l.local_addr()?;
                tracing::info!("listening on tcp://{local}");
                tcp_address.get_or_insert((local.ip().to_string(), local.port()));
                listeners.push(Listener::Tcp(l));
            }
            Transport::Unix { path } => {
                let p = std::path::PathBuf::from(path);
                // A socket left by a broker that died; refuse to steal a live one.
                if p.exists() && std::os::unix::net::UnixStream::connect(&p).is_err() {
                    let _ = std::fs::remove_file(&p);
                }
                let l = tokio::net::UnixListener::bind(&p)
                    .map_err(|e| anyhow::anyhow!("cannot listen on {url}: {e}"))?;
                // Owner only: whoever can connect can try passwords and reach the
                // broker's login phase.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| anyhow::anyhow!("cannot restrict {url} to its owner: {e}"))?;
                tracing::info!("listening on unix:{path}");
                listeners.push(Listener::Unix(l, p));
            }
        }
    }
    if listeners.is_empty() {
        anyhow::bail!("no listen address configured");
    }
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let broker = Broker::new(config.clone(), tcp_address);
    let mut broker_task = tokio::spawn(broker.run(events_rx, shutdown.clone()));
    let ctx = Arc::new(PeerContext::new(
        config.clone(),
        events_tx,
        shutdown.clone(),
    ));
    let mut accept_tasks = Vec::new();
    for l in listeners {
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        accept_tasks.push(tokio::spawn(accept_loop(l, ctx, shutdown)));
    }
    for (i, c) in config.connections.iter().enumerate() {
        accept_tasks.push(tokio::spawn(crate::link::run(i, c.clone(), ctx.clone())));
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
    let stopped = stopped.filter(|r| !(r.is_ok() && shutdown.is_cancelled()));
    if let Some(r) = stopped {
        shutdown.cancel();
        let why = match r {
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into())
            }
            Err(e) => e.to_string(),
            Ok(()) => "it returned".into(),
        };
        tracing::error!("the broker task stopped unexpectedly ({why}); exiting");
        anyhow::bail!("internal error: the broker task stopped unexpectedly: {why}");
    }
    tracing::info!("shutting down");
    for t in accept_tasks {
        let _ = t.await;
    }
    if !broker_done {
        let _ = broker_task.await;
    }
    Ok(())
}

async fn accept_loop(l: Listener, ctx: Arc<PeerContext>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = accept(&l) => a,
        };
        match accepted {
            Ok((r, w, addr)) => {
                tokio::spawn(peer::run(r, w, addr, ctx.clone()));
            }
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    if let Listener::Unix(_, path) = &l {
        let _ = std::fs::remove_file(path);
    }
}

async fn accept(
    l: &Listener,
) -> std::io::Result<(
    libshv::connection::BoxRead,
    libshv::connection::BoxWrite,
    String,
)> {
    match l {
        Listener::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            s.set_nodelay(true)?;
            let (r, w) = s.into_split();
            Ok((Box::pin(r), Box::pin(w), format!("tcp:{addr}")))
        }
        Listener::Unix(l, path) => {
            let (s, _) = l.accept().await?;
            let (r, w) = s.into_split();
            Ok((Box::pin(r), Box::pin(w), format!("unix:{}", path.display())))
        }
    }
}
