//! Which new connections the broker takes. Connections in all are bounded
//! (`max_connections`, below the open-files limit so that the broker keeps descriptors
//! for its own files and links), and so are those that have not logged in yet: in all
//! and per source address (an IPv6 source counts by its /64: one host gets a whole
//! /64 to choose from). Before login a peer costs memory the broker cannot charge
//! to any user (a TLS session, a WebSocket's message buffer, a Serial bridge), and
//! anyone who can reach a listener can open such connections. Past the bounds the
//! broker makes room by evicting the oldest connection not logged in of the address
//! that holds the most (of the newcomer's own address when that one is full): one
//! who fills the pool with idle sockets then only evicts their own, while a real
//! client, which logs in within milliseconds, gets in. Logged-in users are not
//! affected.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

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
    /// The tickets held per source (see [`source`]), oldest first.
    by_address: HashMap<IpAddr, VecDeque<Held>>,
    /// Tickets given out so far: orders them by age.
    issued: u64,
    /// Evictions, logged once per burst (the log must not grow with an attack).
    evictions: libshv::logsafe::Burst,
}

/// One ticket as the pool sees it.
struct Held {
    seq: u64,
    evict: CancellationToken,
}

/// What counts as one source: an IPv4 address (an IPv4-mapped IPv6 one too), or the
/// /64 of an IPv6 address.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl State {
    /// Evicts the oldest ticket of `source`: its count goes at once (the connection
    /// closes when its task sees the token).
    fn evict_oldest_of(&mut self, source: IpAddr) -> bool {
        let Some(q) = self.by_address.get_mut(&source) else {
            return false;
        };
        let Some(oldest) = q.pop_front() else {
            return false;
        };
        if q.is_empty() {
            self.by_address.remove(&source);
        }
        oldest.evict.cancel();
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.evictions.note() {
            tracing::warn!(
                "{}: {n} connection(s) not logged in evicted to make room, the last from \
                 {source}",
                Refusal::TooManyUnauthenticated.describe()
            );
        }
        true
    }

    /// The source holding the most tickets (of those, the one with the oldest).
    fn heaviest(&self) -> Option<IpAddr> {
        self.by_address
            .iter()
            .filter_map(|(a, q)| q.front().map(|h| (*a, q.len(), h.seq)))
            .max_by(|x, y| x.1.cmp(&y.1).then(y.2.cmp(&x.2)))
            .map(|(a, _, _)| a)
    }
}

/// One connection's place among those not logged in; given back when dropped (at
/// login, or when the connection ends).
pub struct Ticket {
    admission: Arc<Admission>,
    /// Its source and place in the pool; None for a local socket.
    held: Option<(IpAddr, u64)>,
    /// Cancelled when the pool evicts it to make room.
    evict: CancellationToken,
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
        let source = address.map(source);
        if let Some(a) = source {
            let mine = s.by_address.get(&a).map_or(0, VecDeque::len);
            if mine >= self.per_address && !s.evict_oldest_of(a) {
                return Err(Refusal::TooManyUnauthenticated);
            }
        }
        if s.total >= self.limit {
            // Local sockets are not evicted (they hold no address; whoever can reach
            // one is on this machine), so with only those the pool stays full.
            let evicted = s.heaviest().is_some_and(|a| s.evict_oldest_of(a));
            if !evicted {
                return Err(Refusal::TooManyUnauthenticated);
            }
        }
        s.total += 1;
        let evict = CancellationToken::new();
        let held = source.map(|a| {
            s.issued += 1;
            let seq = s.issued;
            s.by_address.entry(a).or_default().push_back(Held {
                seq,
                evict: evict.clone(),
            });
            (a, seq)
        });
        Ok(Ticket {
            admission: self.clone(),
            held,
            evict,
            budget: None,
        })
    }

    /// Connections not logged in now.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Ticket {
    /// Cancelled when the pool evicts this connection to make room for a newer one:
    /// whoever holds the ticket must then close the connection.
    pub fn eviction(&self) -> CancellationToken {
        self.evict.clone()
    }

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
            address: self.held.map(|(a, _)| a),
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
        if self.evict.is_cancelled() {
            // Evicted: the pool let it go already.
            return;
        }
        s.total = s.total.saturating_sub(1);
        if let Some((a, seq)) = self.held {
            if let Some(q) = s.by_address.get_mut(&a) {
                q.retain(|h| h.seq != seq);
                if q.is_empty() {
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
    fn a_full_pool_evicts_the_oldest_of_the_heaviest_source_and_tickets_come_back() {
        let a = Admission::new(3, 2, 100);
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let y: IpAddr = "10.0.0.2".parse().unwrap();
        let (_, t1) = a.admit(Some(x)).unwrap();
        let (_, t2) = a.admit(Some(x)).unwrap();
        // Its own address is full: its own oldest goes.
        let (_, t3) = a.admit(Some(x)).unwrap();
        assert!(t1.eviction().is_cancelled());
        assert!(!t2.eviction().is_cancelled());
        assert_eq!(a.waiting(), 2);
        drop(t1); // (counted out already: no double give-back)
        assert_eq!(a.waiting(), 2);
        let (_, t4) = a.admit(Some(y)).unwrap();
        // In all full: x holds the most, its oldest (t2) goes, not y's one.
        let (_, t5) = a.admit(Some(y)).unwrap();
        assert!(t2.eviction().is_cancelled());
        assert!(!t4.eviction().is_cancelled() && !t3.eviction().is_cancelled());
        // x and y hold one and two: y's oldest goes for a local socket.
        let (_, local) = a.admit(None).unwrap();
        assert!(t4.eviction().is_cancelled());
        assert_eq!(a.waiting(), 3);
        drop((t2, t3, t4, t5, local));
        assert_eq!(a.waiting(), 0);
        assert!(a.state.lock().unwrap().by_address.is_empty());
    }

    #[test]
    fn local_sockets_are_never_evicted_so_a_pool_of_them_refuses() {
        let a = Admission::new(2, 2, 100);
        let (_, l1) = a.admit(None).unwrap();
        let (_, l2) = a.admit(None).unwrap();
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            a.admit(Some(x)).err(),
            Some(Refusal::TooManyUnauthenticated)
        );
        assert_eq!(a.admit(None).err(), Some(Refusal::TooManyUnauthenticated));
        assert!(!l1.eviction().is_cancelled() && !l2.eviction().is_cancelled());
    }

    #[test]
    fn an_ipv6_source_is_its_64_and_a_mapped_ipv4_is_the_ipv4() {
        let a = Admission::new(100, 2, 100);
        let p: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let q: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let (_, t1) = a.admit(Some(p)).unwrap();
        let (_, _t2) = a.admit(Some(q)).unwrap();
        let (_, _t3) = a.admit(Some("2001:db8:1:2:1::".parse().unwrap())).unwrap();
        assert!(t1.eviction().is_cancelled(), "one /64, bound 2");
        let (_, m) = a.admit(Some("::ffff:10.0.0.1".parse().unwrap())).unwrap();
        let (_, _v4) = a.admit(Some("10.0.0.1".parse().unwrap())).unwrap();
        let (_, _v4b) = a.admit(Some("10.0.0.1".parse().unwrap())).unwrap();
        assert!(
            m.eviction().is_cancelled(),
            "the mapped address is the IPv4 one"
        );
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
        // ResetSession: counted again, so the address (bound 1) is full and its
        // oldest waiting connection makes room...
        let again = readmission.again().unwrap();
        assert!(second.eviction().is_cancelled());
        drop(second);
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
