//! Connections that have not logged in yet, bounded in number: in all and per source
//! address. Before login a peer costs memory the broker cannot charge to any user (a
//! TLS session, a WebSocket's message buffer, a Serial bridge), and anyone who can reach
//! a listener can open such connections; past the bounds new ones are closed at once,
//! while logged-in users are not affected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes a connection may send before it logs in when it goes through a WebSocket or
/// Serial bridge (the HTTP upgrade, hello and login included: a few KiB in practice).
/// Those bridges gather a whole message before the login code sees it, so without this
/// cap each such connection could make the broker hold `max_frame_size` (16 MiB).
pub const PRE_LOGIN_BYTES: u64 = 128 * 1024;

pub struct Admission {
    limit: usize,
    per_address: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One connection's place among those not logged in; given back when dropped (at
/// login, or when the connection ends).
pub struct Ticket {
    admission: Arc<Admission>,
    address: Option<IpAddr>,
    /// Set when the ticket goes: lifts the caps of [`Ticket::cap`].
    done: Option<Arc<AtomicBool>>,
}

impl Admission {
    pub fn new(limit: usize, per_address: usize) -> Arc<Admission> {
        Arc::new(Admission {
            limit,
            per_address,
            state: Mutex::new(State::default()),
        })
    }

    /// A ticket for a new connection from `address` (None: a local socket), or None
    /// when the bounds are reached.
    pub fn admit(self: &Arc<Self>, address: Option<IpAddr>) -> Option<Ticket> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.total >= self.limit {
            return None;
        }
        if let Some(a) = address {
            let n = s.by_address.entry(a).or_insert(0);
            if *n >= self.per_address {
                return None;
            }
            *n += 1;
        }
        s.total += 1;
        Some(Ticket {
            admission: self.clone(),
            address,
            done: None,
        })
    }

    /// Connections not logged in now.
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Ticket {
    /// `stream`, which fails reads once it has read more than [`PRE_LOGIN_BYTES`] while
    /// this ticket is held (until login); `addr` names it in the log.
    pub fn cap<S>(&mut self, stream: S, addr: &str) -> Capped<S> {
        let done = self.done.get_or_insert_with(Default::default).clone();
        Capped {
            inner: stream,
            left: PRE_LOGIN_BYTES,
            done,
            addr: addr.to_string(),
        }
    }
}

/// A stream whose reads are capped in bytes until its connection logs in.
pub struct Capped<S> {
    inner: S,
    left: u64,
    done: Arc<AtomicBool>,
    addr: String,
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.done.load(Ordering::Acquire) {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.left == 0 {
            let why = format!("more than {} KiB before login", PRE_LOGIN_BYTES / 1024);
            tracing::info!(addr = %libshv::logsafe::shown(&this.addr), "{why}, disconnecting");
            return Poll::Ready(Err(std::io::Error::other(why)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let n = (buf.filled().len() - before) as u64;
        this.left = this.left.saturating_sub(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(done) = &self.done {
            done.store(true, Ordering::Release);
        }
        let mut s = self
            .admission
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(a) = self.address {
            if let Some(n) = s.by_address.get_mut(&a) {
                *n -= 1;
                if *n == 0 {
                    s.by_address.remove(&a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_in_all_and_per_address_and_tickets_come_back() {
        let a = Admission::new(3, 2);
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let y: IpAddr = "10.0.0.2".parse().unwrap();
        let t1 = a.admit(Some(x)).unwrap();
        let t2 = a.admit(Some(x)).unwrap();
        assert!(a.admit(Some(x)).is_none(), "per address");
        let t3 = a.admit(Some(y)).unwrap();
        assert!(a.admit(None).is_none(), "in all");
        drop(t1);
        assert!(a.admit(Some(x)).is_some());
        drop((t2, t3));
        assert_eq!(a.waiting(), 0);
        assert!(a.state.lock().unwrap().by_address.is_empty());
    }

    #[tokio::test]
    async fn reads_are_capped_until_the_ticket_goes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let a = Admission::new(2, 2);
        let cap = PRE_LOGIN_BYTES as usize;
        for log_in_at in [None, Some(cap / 2)] {
            let mut ticket = Some(a.admit(None).unwrap());
            let (near, mut far) = tokio::io::duplex(64 * 1024);
            let mut capped = ticket.as_mut().unwrap().cap(near, "test");
            let writer = tokio::spawn(async move {
                let _ = far.write_all(&vec![7u8; 4 * cap]).await;
                far
            });
            let mut got = 0;
            let mut buf = vec![0u8; 8192];
            let end = loop {
                if log_in_at.is_some_and(|at| got >= at) {
                    drop(ticket.take());
                }
                match capped.read(&mut buf).await {
                    Ok(0) => break Ok(()),
                    Ok(n) => got += n,
                    Err(e) => break Err(e),
                }
                if got == 4 * cap {
                    break Ok(());
                }
            };
            match log_in_at {
                None => {
                    let e = end.expect_err("cut off");
                    assert!(e.to_string().contains("before login"), "{e}");
                    assert!((cap..cap + 8192).contains(&got), "{got}");
                }
                Some(_) => {
                    end.unwrap();
                    assert_eq!(got, 4 * cap, "not capped after login");
                }
            }
            drop(capped);
            drop(writer.await);
        }
    }
}
