//! **[ext]** TCP connections carried over one tunnel (port forwarding, ssh's `-L`/`-R`).
//!
//! One side accepts connections (a local listener for `-L`, a listener on the device
//! for `-R`), the other connects each to a fixed target. Connection N's bytes travel
//! as data on channel [`FIRST_CONN_CHANNEL`] + N, both ways; channel-3 controls open it
//! (`connOpen`, from the accepting side), half-close it (`connEof`: the sender's read
//! side ended) and drop it (`connClose`: refused or broken). The tunnel's flow-control
//! window covers all connections together: a connection whose local peer stops reading
//! holds up the others once its queue is full (at most [`CONN_QUEUE`] chunks), instead
//! of buffering without bound — for at most [`CONN_STALL`], after which that one
//! connection is dropped and the others go on.

use std::collections::HashMap;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;

/// Data channel of connection 0; connection N uses this + N.
pub const FIRST_CONN_CHANNEL: i64 = 16;
/// Chunks queued towards one connection's socket.
pub const CONN_QUEUE: usize = 16;
/// Connections open at once over one tunnel; more are refused.
pub const MAX_CONNS: usize = 256;
const READ_CHUNK: usize = 64 * 1024;
/// How long one connection's socket may take to make room for the next chunk (up to
/// 64 KiB) while it holds up the whole forward: a local reader slower than about
/// 2 KiB/s is dropped, one that stopped reading certainly.
pub const CONN_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// A byte stream carried as one connection of a forward (a TCP socket, or stdin and
/// stdout joined for ssh's `-W`).
pub trait MuxStream: AsyncRead + AsyncWrite + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + 'static> MuxStream for T {}

/// This side's part in the forward.
pub enum MuxRole {
    /// Accepts connections and announces each (`connOpen`).
    Accept(TcpListener),
    /// Connects each announced connection to `host:port`.
    Connect { host: String, port: u16 },
    /// Carries this one stream as connection 0 and ends the forward when it ends
    /// (`shvrsh -W`, ssh's ProxyCommand).
    Stream(Box<dyn MuxStream + Unpin>),
    /// A SOCKS5 proxy (`shvrsh -D`): accepts connections, reads each one's destination
    /// from its handshake and announces it (`connOpen` with host and port).
    Socks(TcpListener),
    /// Connects each announced connection to the destination it names (the device's
    /// side of `-D`).
    Dynamic,
}

struct Conn {
    /// Bytes for the socket; None = the far side will send no more (shut down writing).
    to_socket: mpsc::Sender<Option<bytes::Bytes>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs the forward until the tunnel closes; returns how it closed. `label` names the
/// forward in logs.
pub async fn run_mux(
    sender: TunnelSender,
    mut receiver: TunnelReceiver,
    role: MuxRole,
    label: &str,
) -> CloseStatus {
    let mut conns: HashMap<u32, Conn> = HashMap::new();
    let mut next_id: u32 = 0;
    // Connections that ended on their own report here, to be forgotten.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<u32>();
    let (mut socks, mut dynamic, mut single) = (false, false, false);
    let (listener, target) = match role {
        MuxRole::Accept(l) => (Some(l), None),
        MuxRole::Socks(l) => {
            socks = true;
            (Some(l), None)
        }
        MuxRole::Connect { host, port } => (None, Some((host, port))),
        MuxRole::Dynamic => {
            dynamic = true;
            (None, None)
        }
        MuxRole::Stream(stream) => {
            if sender.send_control(Control::ConnOpen(0)).await.is_err() {
                return CloseStatus::Error("tunnel lost".into());
            }
            conns.insert(
                0,
                start_conn(0, tokio::io::split(stream), &sender, &done_tx),
            );
            next_id = 1;
            // With a single stream, the forward lasts as long as it.
            single = true;
            (None, None)
        }
    };
    // SOCKS handshakes run in tasks of their own (a slow client must not hold up the
    // forward) and hand the connection back here with its destination; at most
    // MAX_CONNS of them at once.
    let (ready_tx, mut ready_rx) = mpsc::channel::<(TcpStream, String, u16)>(16);
    let handshakes = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNS));
    loop {
        let accept = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = accept => match accepted {
                Ok((mut socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    if conns.len() >= MAX_CONNS {
                        tracing::warn!("{label}: {MAX_CONNS} connections open; refusing {peer}");
                        continue;
                    }
                    if socks {
                        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                            tracing::warn!("{label}: {MAX_CONNS} SOCKS handshakes at once; refusing {peer}");
                            continue;
                        };
                        let ready = ready_tx.clone();
                        let label = label.to_string();
                        tokio::spawn(async move {
                            let _permit = permit;
                            match super::socks::accept(&mut socket).await {
                                Ok((host, port)) => {
                                    // Optimistic: a destination the device cannot
                                    // reach closes the connection right after.
                                    super::socks::reply(&mut socket, super::socks::SUCCEEDED).await;
                                    let _ = ready.send((socket, host, port)).await;
                                }
                                Err(e) => tracing::info!("{label}: SOCKS client {peer}: {e}"),
                            }
                        });
                        continue;
                    }
                    let id = next_id;
                    next_id = next_id.wrapping_add(1);
                    tracing::info!("{label}: connection {id} from {peer}");
                    if sender.send_control(Control::ConnOpen(id)).await.is_err() {
                        return CloseStatus::Error("tunnel lost".into());
                    }
                    conns.insert(id, start_conn(id, socket.into_split(), &sender, &done_tx));
                }
                Err(e) => {
                    tracing::warn!("{label}: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some((socket, host, port)) = ready_rx.recv() => {
                if conns.len() >= MAX_CONNS {
                    tracing::warn!("{label}: {MAX_CONNS} connections open; refusing one to {host}:{port}");
                    continue;
                }
                let id = next_id;
                next_id = next_id.wrapping_add(1);
                tracing::info!("{label}: connection {id} to {host}:{port}");
                if sender.send_control(Control::ConnOpenTo { id, host, port }).await.is_err() {
                    return CloseStatus::Error("tunnel lost".into());
                }
                conns.insert(id, start_conn(id, socket.into_split(), &sender, &done_tx));
            }
            Some(id) = done_rx.recv() => {
                conns.remove(&id);
                if single && conns.is_empty() {
                    return CloseStatus::ExitCode(0);
                }
            }
            ev = receiver.recv() => match ev {
                None => return CloseStatus::Detached,
                Some(TunnelEvent::Closed(st)) => return st,
                Some(TunnelEvent::Data { channel, data }) => {
                    let Some(id) = conn_of(channel) else { continue };
                    if !deliver(&mut conns, id, Some(data)).await {
                        tracing::warn!("{label}: connection {id} took nothing for {CONN_STALL:?}; dropped");
                        let _ = sender.send_control(Control::ConnClose(id)).await;
                    }
                }
                Some(TunnelEvent::Control(open @ (Control::ConnOpen(_) | Control::ConnOpenTo { .. }))) => {
                    // A fixed target takes plain opens; a dynamic forward, opens that
                    // name their destination. Anything else is refused.
                    let (id, host, port) = match (open, &target) {
                        (Control::ConnOpen(id), Some((h, p))) => (id, h.clone(), *p),
                        (Control::ConnOpenTo { id, host, port }, None) if dynamic => (id, host, port),
                        (Control::ConnOpen(id) | Control::ConnOpenTo { id, .. }, _) => {
                            let _ = sender.send_control(Control::ConnClose(id)).await;
                            continue;
                        }
                        _ => continue,
                    };
                    if conns.len() >= MAX_CONNS || conns.contains_key(&id) {
                        let _ = sender.send_control(Control::ConnClose(id)).await;
                        continue;
                    }
                    // Connecting may take a while: in a task, announcing a failure.
                    let (tx, rx) = mpsc::channel(CONN_QUEUE);
                    let s = sender.clone();
                    let done = done_tx.clone();
                    let label = label.to_string();
                    let task = tokio::spawn(async move {
                        match TcpStream::connect((host.as_str(), port)).await {
                            Ok(socket) => {
                                let _ = socket.set_nodelay(true);
                                tracing::info!("{label}: connection {id} to {host}:{port}");
                                relay(id, socket.into_split(), rx, s, done).await;
                            }
                            Err(e) => {
                                tracing::info!("{label}: cannot connect to {host}:{port}: {e}");
                                let _ = s.send_control(Control::ConnClose(id)).await;
                                let _ = done.send(id);
                            }
                        }
                    });
                    conns.insert(id, Conn { to_socket: tx, tasks: vec![task] });
                }
                Some(TunnelEvent::Control(Control::Notice(text))) => {
                    tracing::warn!("{label}: {}", crate::logsafe::shown(&text));
                }
                Some(TunnelEvent::Control(Control::ConnEof(id))) => {
                    if !deliver(&mut conns, id, None).await {
                        let _ = sender.send_control(Control::ConnClose(id)).await;
                    }
                }
                Some(TunnelEvent::Control(Control::ConnClose(id))) => {
                    conns.remove(&id);
                    if single && conns.is_empty() {
                        return CloseStatus::Error(
                            "the device could not connect there, or the connection broke".into(),
                        );
                    }
                }
                Some(TunnelEvent::Control(_)) => {}
            },
        }
    }
}

/// Queues `chunk` towards connection `id`'s socket, waiting while it is slow (which
/// holds up the tunnel: see the module's notes) but at most [`CONN_STALL`]; a
/// connection that took nothing for that long is dropped (false).
async fn deliver(conns: &mut HashMap<u32, Conn>, id: u32, chunk: Option<bytes::Bytes>) -> bool {
    let Some(c) = conns.get(&id) else {
        return true;
    };
    match tokio::time::timeout(CONN_STALL, c.to_socket.send(chunk)).await {
        Ok(_) => true,
        Err(_) => {
            conns.remove(&id);
            false
        }
    }
}

fn conn_of(channel: i64) -> Option<u32> {
    channel
        .checked_sub(FIRST_CONN_CHANNEL)
        .and_then(|n| u32::try_from(n).ok())
}

fn start_conn<R, W>(
    id: u32,
    (r, w): (R, W),
    sender: &TunnelSender,
    done: &mpsc::UnboundedSender<u32>,
) -> Conn
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel(CONN_QUEUE);
    let task = tokio::spawn(relay(id, (r, w), rx, sender.clone(), done.clone()));
    Conn {
        to_socket: tx,
        tasks: vec![task],
    }
}

/// Both directions of one connection; reports `id` on `done` when both have ended.
/// (A TCP socket comes split with `into_split`, lock-free; any other stream with
/// `tokio::io::split`.)
async fn relay<R, W>(
    id: u32,
    (mut r, mut w): (R, W),
    mut from_tunnel: mpsc::Receiver<Option<bytes::Bytes>>,
    sender: TunnelSender,
    done: mpsc::UnboundedSender<u32>,
) where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let channel = FIRST_CONN_CHANNEL + i64::from(id);
    let s = sender.clone();
    let upstream = async move {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match r.read(&mut buf).await {
                Ok(0) => {
                    let _ = s.send_control(Control::ConnEof(id)).await;
                    return true;
                }
                Ok(n) => {
                    if s.send_data(channel, &buf[..n]).await.is_err() {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
    };
    let downstream = async move {
        while let Some(chunk) = from_tunnel.recv().await {
            match chunk {
                Some(data) => {
                    // A flush per chunk: free for a socket, and what makes a stream
                    // with a buffer (stdout under -W, line-buffered) pass bytes on.
                    if w.write_all(&data).await.is_err() || w.flush().await.is_err() {
                        return false;
                    }
                }
                None => {
                    let _ = w.shutdown().await;
                    return true;
                }
            }
        }
        false
    };
    let (up, down) = tokio::join!(upstream, downstream);
    if !(up && down) {
        let _ = sender.send_control(Control::ConnClose(id)).await;
    }
    let _ = done.send(id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_whose_socket_takes_nothing_is_dropped_after_the_stall() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut conns = HashMap::new();
        let conn = |to_socket| Conn {
            to_socket,
            tasks: Vec::new(),
        };
        conns.insert(5, conn(tx));
        assert!(
            deliver(&mut conns, 5, Some(bytes::Bytes::from(vec![1]))).await,
            "room for one"
        );
        // Taken within the stall: kept.
        let reader = tokio::spawn(async move {
            tokio::time::sleep(CONN_STALL / 2).await;
            rx.recv().await;
            rx
        });
        assert!(
            deliver(&mut conns, 5, Some(bytes::Bytes::from(vec![2]))).await,
            "read in time"
        );
        let _rx = reader.await.unwrap();
        // Nothing taken for CONN_STALL: dropped, and the caller goes on.
        let start = tokio::time::Instant::now();
        assert!(!deliver(&mut conns, 5, Some(bytes::Bytes::from(vec![3]))).await);
        assert!(start.elapsed() >= CONN_STALL);
        assert!(conns.is_empty());
        // A connection already gone is no reason to stop.
        assert!(deliver(&mut conns, 5, None).await);
    }
}
