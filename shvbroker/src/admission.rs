//! Which new connections the broker takes. Connections in all are bounded
//! (`max_connections`, below the open-files limit so that the broker keeps descriptors
//! for its own files and links), and so are those that have not logged in yet: in all
//! and per source address. Before login a peer costs memory the broker cannot charge
//! to any user (a TLS session, a WebSocket's message buffer, a Serial bridge), and
//! anyone who can reach a listener can open such connections; past the bounds new ones
//! are closed at once, while logged-in users are not affected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes a connection may send before it logs in when it goes through a WebSocket or
/// Serial bridge (the HTTP upgrade, hello and login included: a few KiB in practice).
/// Those bridges gather a whole message before the login code sees it, so without this
/// cap each such connection could make the broker hold `max_frame_size` (16 MiB).
pub const PRE_LOGIN_BYTES: u64 = 128 * 1024;

/// Open files kept for the broker itself (log, audit log, recordings, parent links,
/// the listeners): connections may use the rest of the open-files limit.
pub const RESERVED_FILES: u64 = 256;

pub struct Admission {
    limit: usize,
    per_address: usize,
    state: Mutex<State>,
    /// One permit per connection, logged in or not.
    connections: Arc<Semaphore>,
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections` connections are open.
    TooManyConnections,
    /// Too many connections have not logged in, in all or from its address.
    TooManyUnauthenticated,
}

impl Refusal {
    /// The log's words for it, naming the setting.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::TooManyConnections => "too many connections (limits.max_connections)",
            Refusal::TooManyUnauthenticated => {
                "too many connections not logged in (limits.max_unauthenticated*)"
            }
        }
    }
}

/// A connection's place among all connections; given back when dropped, when the
/// connection's socket closes.
pub struct Place(#[allow(dead_code)] OwnedSemaphorePermit);

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
    /// Bytes the streams of [`Ticket::cap`] may still read; [`UNCAPPED`] once the
    /// ticket goes.
    budget: Option<Arc<AtomicU64>>,
}

/// A budget without a cap (the connection has logged in).
const UNCAPPED: u64 = u64::MAX;

/// What a logged-in connection keeps of its ticket, to be counted again among the
/// connections not logged in (and capped again) after a ResetSession.
pub struct Readmission {
    admission: Arc<Admission>,
    address: Option<IpAddr>,
    budget: Option<Arc<AtomicU64>>,
}

impl Admission {
    /// At most `connections` connections, of which at most `limit` not logged in, and
    /// `per_address` from one address.
    pub fn new(limit: usize, per_address: usize, connections: usize) -> Arc<Admission> {
        Arc::new(Admission {
            limit,
            per_address,
            state: Mutex::new(State::default()),
            connections: Arc::new(Semaphore::new(connections)),
        })
    }

    /// A place for a new connection from `address` (None: a local socket), and its
    /// ticket for the time until it logs in; or why not.
    pub fn admit(self: &Arc<Self>, address: Option<IpAddr>) -> Result<(Place, Ticket), Refusal> {
        let place = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::TooManyConnections)?;
        Ok((Place(place), self.ticket(address)?))
    }

    fn ticket(self: &Arc<Self>, address: Option<IpAddr>) -> Result<Ticket, Refusal> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.total >= self.limit {
            return Err(Refusal::TooManyUnauthenticated);
        }
        if let Some(a) = address {
            let n = s.by_address.entry(a).or_insert(0);
            if *n >= self.per_address {
                return Err(Refusal::TooManyUnauthenticated);
            }
            *n += 1;
        }
        s.total += 1;
        Ok(Ticket {
            admission: self.clone(),
            address,
            budget: None,
        })
    }

    /// Connections not logged in now.
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Ticket {
    /// `stream`, which fails reads once it has read more than [`PRE_LOGIN_BYTES`] while
    /// this ticket is held (until login); `addr` names it in the log. The connection's
    /// `place`, if given, is given back when the stream is dropped.
    pub fn cap<S>(&mut self, stream: S, addr: &str, place: Option<Place>) -> Capped<S> {
        let budget = self
            .budget
            .get_or_insert_with(|| Arc::new(AtomicU64::new(PRE_LOGIN_BYTES)))
            .clone();
        Capped {
            inner: stream,
            budget,
            addr: addr.to_string(),
            _place: place,
        }
    }

    /// The connection has logged in: its place among those not logged in is given
    /// back and its streams uncapped; what is returned can take them again.
    pub fn logged_in(self) -> Readmission {
        Readmission {
            admission: self.admission.clone(),
            address: self.address,
            budget: self.budget.clone(),
        }
    }
}

impl Readmission {
    /// After a ResetSession: the connection is not logged in again, counted and capped
    /// as a new one would be (a fresh [`PRE_LOGIN_BYTES`]); or why it must close.
    pub fn again(&self) -> Result<Ticket, Refusal> {
        let mut ticket = self.admission.ticket(self.address)?;
        if let Some(b) = &self.budget {
            b.store(PRE_LOGIN_BYTES, Ordering::Release);
            ticket.budget = Some(b.clone());
        }
        Ok(ticket)
    }
}

/// A stream whose reads are capped in bytes until its connection logs in.
pub struct Capped<S> {
    inner: S,
    budget: Arc<AtomicU64>,
    addr: String,
    _place: Option<Place>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match this.budget.load(Ordering::Acquire) {
            UNCAPPED => return Pin::new(&mut this.inner).poll_read(cx, buf),
            0 => {
                let why = format!("more than {} KiB before login", PRE_LOGIN_BYTES / 1024);
                tracing::info!(addr = %libshv::logsafe::shown(&this.addr), "{why}, disconnecting");
                return Poll::Ready(Err(std::io::Error::other(why)));
            }
            _ => {}
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let n = (buf.filled().len() - before) as u64;
        // (A login in the meantime uncapped it: leave it so.)
        let _ = this
            .budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                (left != UNCAPPED).then(|| left.saturating_sub(n))
            });
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
        if let Some(b) = &self.budget {
            b.store(UNCAPPED, Ordering::Release);
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

/// How many connections the broker takes: `configured` (0: as many as the open-files
/// limit allows), never more than that limit minus [`RESERVED_FILES`]. Raises the
/// process's soft open-files limit to its hard limit first, as servers do.
pub fn connection_cap(configured: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let files = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard))
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() =>
        {
            hard
        }
        Ok((soft, _)) => soft,
        Err(_) => u64::MAX,
    };
    let room = usize::try_from(files.saturating_sub(RESERVED_FILES))
        .unwrap_or(usize::MAX)
        .clamp(1, Semaphore::MAX_PERMITS);
    if room < 1024 {
        tracing::warn!(
            "the open-files limit is {files}: with {RESERVED_FILES} kept for the broker, it \
             takes at most {room} connections (raise the limit, e.g. `ulimit -n`)"
        );
    }
    match configured {
        0 => room,
        n if n > room => {
            tracing::warn!(
                "limits.max_connections {n} is above the open-files limit {files} less \
                 {RESERVED_FILES} kept for the broker: taking at most {room} connections"
            );
            room
        }
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_in_all_and_per_address_and_tickets_come_back() {
        let a = Admission::new(3, 2, 100);
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let y: IpAddr = "10.0.0.2".parse().unwrap();
        let (_, t1) = a.admit(Some(x)).unwrap();
        let (_, t2) = a.admit(Some(x)).unwrap();
        let per_address = a.admit(Some(x)).err();
        assert_eq!(per_address, Some(Refusal::TooManyUnauthenticated));
        let (_, t3) = a.admit(Some(y)).unwrap();
        assert!(a.admit(None).is_err(), "in all");
        drop(t1);
        assert!(a.admit(Some(x)).is_ok());
        drop((t2, t3));
        assert_eq!(a.waiting(), 0);
        assert!(a.state.lock().unwrap().by_address.is_empty());
    }

    #[tokio::test]
    async fn after_a_reset_session_a_connection_is_counted_and_capped_again() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let a = Admission::new(10, 1, 10);
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let (_place, mut ticket) = a.admit(Some(x)).unwrap();
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut capped = ticket.cap(near, "test", None);
        let readmission = ticket.logged_in();
        assert_eq!(a.waiting(), 0);
        // Logged in: uncapped, and the address has room for another connection.
        let cap = PRE_LOGIN_BYTES as usize;
        let big = vec![1u8; 2 * cap];
        far.write_all(&big).await.unwrap();
        let mut got = vec![0u8; big.len()];
        capped.read_exact(&mut got).await.unwrap();
        let (_p2, second) = a.admit(Some(x)).unwrap();
        // ResetSession: counted again, so the address (bound 1) is full...
        assert_eq!(
            readmission.again().err(),
            Some(Refusal::TooManyUnauthenticated)
        );
        drop(second);
        let again = readmission.again().unwrap();
        assert_eq!(a.waiting(), 1);
        // ...and capped again, from a fresh budget.
        far.write_all(&big).await.unwrap();
        let (mut n, mut buf) = (0, [0u8; 8192]);
        let e = loop {
            match capped.read(&mut buf).await {
                Ok(k) => n += k,
                Err(e) => break e,
            }
        };
        assert!(e.to_string().contains("before login"), "{e}");
        assert!((cap..cap + 8192).contains(&n), "{n}");
        drop(again);
        assert_eq!(a.waiting(), 0);
    }

    #[test]
    fn connections_in_all_are_bounded_logged_in_or_not() {
        let a = Admission::new(10, 10, 2);
        let (p1, t1) = a.admit(None).unwrap();
        let (p2, t2) = a.admit(None).unwrap();
        // Logging in gives the ticket back, not the place.
        drop((t1, t2));
        assert_eq!(a.admit(None).err(), Some(Refusal::TooManyConnections));
        drop(p1);
        let (_p3, _t3) = a.admit(None).unwrap();
        assert_eq!(a.admit(None).err(), Some(Refusal::TooManyConnections));
        drop(p2);
        assert!(a.admit(None).is_ok());
    }

    #[test]
    fn the_cap_stays_below_the_open_files_limit() {
        let (soft, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        let room = usize::try_from(soft.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
        // (connection_cap raised the soft limit to the hard one on the first call.)
        let cap = connection_cap(0);
        let (soft, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        let room_now = usize::try_from(soft.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
        assert!(
            cap >= room.max(1) && cap <= room_now.max(1),
            "{cap} {room} {room_now}"
        );
        assert_eq!(connection_cap(5), 5);
        assert_eq!(connection_cap(usize::MAX), cap);
    }

    #[tokio::test]
    async fn reads_are_capped_until_the_ticket_goes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let a = Admission::new(2, 2, 2);
        let cap = PRE_LOGIN_BYTES as usize;
        for log_in_at in [None, Some(cap / 2)] {
            let mut ticket = Some(a.admit(None).unwrap().1);
            let (near, mut far) = tokio::io::duplex(64 * 1024);
            let mut capped = ticket.as_mut().unwrap().cap(near, "test", None);
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
