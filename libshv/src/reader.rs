//! Reading Block frames from a byte stream with the memory of a frame being read
//! charged before it is used.
//!
//! A peer announces a frame's length up front and may then send all of it but the
//! last byte and wait: whatever buffers the frame until it is complete holds up to
//! `max_frame` bytes on the peer's word. [`FrameReader`] buffers at most [`FREE_WINDOW`]
//! bytes of a connection uncharged; beyond that it first takes the whole frame's size
//! from a [`ReadBudget`] (one for the user, one for the process), and reads no further
//! byte of the frame until it has it. A frame that holds a charge for longer than the
//! budget's deadline ends the stream with [`std::io::ErrorKind::TimedOut`], so a peer
//! cannot keep budget it does not use. Without a budget (a client reading its broker)
//! it reads as a plain `FramedRead` would, but still never reserves a frame's whole
//! length before its bytes arrive.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures::Stream;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::Decoder;
use tokio_util::sync::PollSemaphore;

use crate::codec::{BlockCodec, Incoming};
use crate::transport::stream::BoxRead;

/// Bytes of one connection buffered without a charge: small frames (nearly all of
/// them) and the start of the next frame never touch a budget.
pub const FREE_WINDOW: usize = 64 * 1024;
/// The most read from the socket at once.
const READ_CHUNK: usize = 256 * 1024;
/// Below this much free buffer a read reserves more first.
const MIN_SPARE: usize = 8 * 1024;

/// Where the memory of frames being read comes from: a budget of the connection's user
/// and one of the whole process, in bytes, and how long a frame may hold its charge.
#[derive(Clone)]
pub struct ReadBudget {
    pub user: Arc<Semaphore>,
    pub user_total: usize,
    pub global: Arc<Semaphore>,
    pub global_total: usize,
    /// How long one frame may take to arrive once it holds a charge.
    pub frame_timeout: Duration,
}

/// What a connection holds of its budgets: taken before the bytes it covers are read,
/// given back when they have been handed on.
#[derive(Default)]
struct Charge {
    held: usize,
    user: Option<OwnedSemaphorePermit>,
    global: Option<OwnedSemaphorePermit>,
    /// The size an acquisition under way is for, and its user part once taken.
    goal: usize,
    got_user: Option<OwnedSemaphorePermit>,
    /// Waiters, only while a budget is short: once waiting, only the waiter may take
    /// permits (they are handed to it as they come free; a second try beside it would
    /// take them twice).
    poll_user: Option<PollSemaphore>,
    poll_global: Option<PollSemaphore>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

fn closed() -> std::io::Error {
    std::io::Error::other("the broker is shutting down")
}

/// `n` permits of `sem`, through `waiter` once they are short.
fn poll_permits(
    cx: &mut Context<'_>,
    waiter: &mut Option<PollSemaphore>,
    sem: &Arc<Semaphore>,
    n: u32,
) -> Poll<std::io::Result<OwnedSemaphorePermit>> {
    if waiter.is_none() {
        match sem.clone().try_acquire_many_owned(n) {
            Ok(p) => return Poll::Ready(Ok(p)),
            Err(tokio::sync::TryAcquireError::Closed) => return Poll::Ready(Err(closed())),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                *waiter = Some(PollSemaphore::new(sem.clone()))
            }
        }
    }
    let Some(w) = waiter.as_mut() else {
        return Poll::Pending;
    };
    match w.poll_acquire_many(cx, n) {
        Poll::Ready(Some(p)) => {
            *waiter = None;
            Poll::Ready(Ok(p))
        }
        Poll::Ready(None) => Poll::Ready(Err(closed())),
        Poll::Pending => Poll::Pending,
    }
}

impl Charge {
    /// Holds at least `to` bytes of both budgets (at most a whole budget: the
    /// configuration checks that one holds a largest frame); Pending while short.
    fn poll_grow(
        &mut self,
        cx: &mut Context<'_>,
        b: &ReadBudget,
        to: usize,
    ) -> Poll<std::io::Result<()>> {
        let target = to.min(b.user_total).min(b.global_total);
        if self.held >= target {
            return Poll::Ready(Ok(()));
        }
        if self.goal != target {
            self.goal = target;
            self.got_user = None;
            self.poll_user = None;
            self.poll_global = None;
        }
        let delta = u32::try_from(target - self.held).unwrap_or(u32::MAX);
        if self.got_user.is_none() {
            let p = std::task::ready!(poll_permits(cx, &mut self.poll_user, &b.user, delta))?;
            self.got_user = Some(p);
        }
        let g = std::task::ready!(poll_permits(cx, &mut self.poll_global, &b.global, delta))?;
        let u = self.got_user.take();
        fn merge(into: &mut Option<OwnedSemaphorePermit>, p: Option<OwnedSemaphorePermit>) {
            match (into.as_mut(), p) {
                (Some(have), Some(p)) => have.merge(p),
                (None, p) => *into = p,
                (Some(_), None) => {}
            }
        }
        merge(&mut self.user, u);
        merge(&mut self.global, Some(g));
        self.held = target;
        self.goal = 0;
        Poll::Ready(Ok(()))
    }

    /// Pending until the deadline of what is held (armed at the first wait); then the
    /// error that ends the stream.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, b: &ReadBudget) -> Poll<std::io::Error> {
        let timeout = b.frame_timeout;
        let d = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match d.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("a frame did not arrive whole within {timeout:?}"),
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Gives everything back (dropping a waiter returns what was handed to it).
    fn release(&mut self) {
        *self = Charge::default();
    }
}

pub struct FrameReader {
    io: BoxRead,
    buf: BytesMut,
    codec: BlockCodec,
    budget: Option<ReadBudget>,
    charge: Charge,
    eof: bool,
}

impl FrameReader {
    pub fn new(io: BoxRead, codec: BlockCodec) -> FrameReader {
        FrameReader {
            io,
            buf: BytesMut::new(),
            codec,
            budget: None,
            charge: Charge::default(),
            eof: false,
        }
    }

    pub fn decoder_mut(&mut self) -> &mut BlockCodec {
        &mut self.codec
    }

    /// Bytes read and not yet cut into frames.
    pub fn read_buffer(&self) -> &BytesMut {
        &self.buf
    }

    /// Charges frames beyond [`FREE_WINDOW`] to `budget` from now on (None: uncharged).
    pub fn set_budget(&mut self, budget: Option<ReadBudget>) {
        self.charge.release();
        self.budget = budget;
    }

    /// Bytes this connection holds of its budgets now.
    pub fn charged(&self) -> usize {
        self.charge.held
    }

    /// The byte stream underneath; buffered bytes not yet cut into frames are dropped.
    pub fn into_inner(self) -> BoxRead {
        self.io
    }

    fn fail(&mut self, e: std::io::Error) -> Poll<Option<std::io::Result<Incoming>>> {
        self.eof = true;
        self.buf.clear();
        self.charge.release();
        Poll::Ready(Some(Err(e)))
    }

    /// Reads at most `max` more bytes into the buffer: Ready(n), 0 at the end.
    fn poll_fill(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<std::io::Result<usize>> {
        let n = max.min(READ_CHUNK);
        // Reserve only when little room is left, as FramedRead does: the frames cut
        // off the buffer share its allocation, so a reserve of `n` while any of them
        // lives allocates a fresh block, and doing that on every read put each small
        // frame in new memory (-20% calls/s with 64 RPC clients).
        if self.buf.capacity() - self.buf.len() < MIN_SPARE.min(n) {
            self.buf.reserve(n);
        }
        let n = n.min(self.buf.capacity() - self.buf.len());
        let spare = &mut self.buf.spare_capacity_mut()[..n];
        let mut rb = ReadBuf::uninit(spare);
        std::task::ready!(self.io.as_mut().poll_read(cx, &mut rb))?;
        let got = rb.filled().len();
        // SAFETY: `poll_read` initialized the first `got` bytes of the spare capacity
        // (ReadBuf's contract), and they are the ones added to the length.
        unsafe { self.buf.set_len(self.buf.len() + got) };
        Poll::Ready(Ok(got))
    }
}

impl Stream for FrameReader {
    type Item = std::io::Result<Incoming>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if !this.buf.is_empty() {
                match this.codec.decode(&mut this.buf) {
                    Ok(Some(item)) => {
                        if this.charge.held != 0 || this.charge.goal != 0 {
                            this.charge.release();
                        }
                        return Poll::Ready(Some(Ok(item)));
                    }
                    Ok(None) => {}
                    Err(e) => return this.fail(e),
                }
            }
            if this.eof {
                if this.buf.is_empty() {
                    return Poll::Ready(None);
                }
                return this.fail(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the connection closed inside a frame",
                ));
            }
            // What the frame at the front needs buffered whole; beyond the free window
            // it is charged first. (The slack holds the longest length header before
            // a window-sized frame.)
            let mut room = (FREE_WINDOW + 16).saturating_sub(this.buf.len());
            let big = this
                .codec
                .frame_in_progress(&this.buf)
                .filter(|t| *t > FREE_WINDOW);
            if let Some(total) = big {
                if let Some(b) = &this.budget {
                    match this.charge.poll_grow(cx, b, total) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => return this.fail(e),
                        Poll::Pending => {
                            return match this.charge.poll_deadline(cx, b) {
                                Poll::Ready(e) => this.fail(e),
                                Poll::Pending => Poll::Pending,
                            }
                        }
                    }
                }
                // The frame, and the start of the next one uncharged.
                room = (total + FREE_WINDOW).saturating_sub(this.buf.len());
            }
            match this.poll_fill(cx, room.max(1)) {
                Poll::Ready(Ok(0)) => this.eof = true,
                Poll::Ready(Ok(_)) => {}
                // A TLS peer that closes without close_notify (most clients do when their
                // process exits) between frames has sent every frame whole: a close, not
                // a stream error. Inside a frame it is still reported, as any early EOF.
                Poll::Ready(Err(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof && this.buf.is_empty() =>
                {
                    this.eof = true
                }
                Poll::Ready(Err(e)) => return this.fail(e),
                Poll::Pending => {
                    if let (Some(b), true) = (&this.budget, this.charge.held != 0) {
                        if let Poll::Ready(e) = this.charge.poll_deadline(cx, b) {
                            return this.fail(e);
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// A byte stream whose reads are charged to a [`ReadBudget`] beyond [`FREE_WINDOW`]
/// until its consumer says what it read has been handed on ([`Meter::settle`]): for
/// framings that gather a whole message below the Block reader (WebSocket, Serial),
/// whose partial messages would otherwise be uncharged memory on the peer's word.
pub struct Metered<S> {
    inner: S,
    meter: Meter,
}

/// The handle of a [`Metered`] stream: its budget is set once the connection's user is
/// known, and its consumer settles after each whole message.
#[derive(Clone, Default)]
pub struct Meter(Arc<std::sync::Mutex<MeterState>>);

#[derive(Default)]
struct MeterState {
    budget: Option<ReadBudget>,
    /// Bytes read since the last settle.
    unsettled: usize,
    charge: Charge,
}

/// How much more a metered stream charges at a time.
const METER_STEP: usize = 1024 * 1024;

impl Meter {
    pub fn wrap<S>(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            meter: self.clone(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MeterState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_budget(&self, budget: Option<ReadBudget>) {
        let mut s = self.state();
        s.charge.release();
        s.budget = budget;
    }

    /// Everything read so far has been handed on: its charge goes back.
    pub fn settle(&self) {
        let mut s = self.state();
        s.unsettled = 0;
        if s.charge.held != 0 || s.charge.goal != 0 {
            s.charge.release();
        }
    }

    /// Bytes held of the budgets now.
    pub fn charged(&self) -> usize {
        self.state().charge.held
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let mut guard = this.meter.state();
        let s = &mut *guard;
        let mut allowed = buf.remaining();
        if let Some(b) = &s.budget {
            let free = (FREE_WINDOW + s.charge.held).saturating_sub(s.unsettled);
            if free == 0 {
                let to = s.charge.held + METER_STEP;
                match s.charge.poll_grow(cx, b, to) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        return match s.charge.poll_deadline(cx, b) {
                            Poll::Ready(e) => Poll::Ready(Err(e)),
                            Poll::Pending => Poll::Pending,
                        }
                    }
                }
            }
            let free = (FREE_WINDOW + s.charge.held).saturating_sub(s.unsettled);
            if free == 0 {
                // A whole budget is held and still no message is complete.
                return Poll::Ready(Err(std::io::Error::other(
                    "a message larger than the read budget",
                )));
            }
            allowed = allowed.min(free);
        }
        let mut sub = buf.take(allowed);
        let r = Pin::new(&mut this.inner).poll_read(cx, &mut sub);
        let n = sub.filled().len();
        match r {
            Poll::Ready(Ok(())) => {
                // SAFETY: the inner read initialized these bytes of `buf`'s unfilled part.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                s.unsettled = s.unsettled.saturating_add(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let (Some(b), true) = (&s.budget, s.charge.held != 0) {
                    if let Poll::Ready(e) = s.charge.poll_deadline(cx, b) {
                        return Poll::Ready(Err(e));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Metered<S> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::RpcMessage;
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    fn budget(user: usize, global: usize, timeout: Duration) -> ReadBudget {
        ReadBudget {
            user: Arc::new(Semaphore::new(user)),
            user_total: user,
            global: Arc::new(Semaphore::new(global)),
            global_total: global,
            frame_timeout: timeout,
        }
    }

    fn big_frame(n: usize) -> Vec<u8> {
        let m = RpcMessage::new_request(1, "x", "echo", Some(vec![7u8; n].into()));
        crate::codec::encode_frame(&m.to_frame())
    }

    #[tokio::test]
    async fn small_frames_need_no_budget_and_big_ones_wait_for_it() {
        let b = budget(1 << 20, 1 << 20, Duration::from_secs(60));
        // Someone else holds all but 1000 bytes of the user's budget.
        let held = b.user.clone().acquire_many_owned((1 << 20) - 1000).await;
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(Box::pin(r), BlockCodec::default());
        reader.set_budget(Some(b.clone()));
        let small =
            crate::codec::encode_frame(&RpcMessage::new_request(2, "x", "ls", None).to_frame());
        w.write_all(&small).await.unwrap();
        let big = big_frame(300_000);
        w.write_all(&big).await.unwrap();
        assert!(matches!(reader.next().await, Some(Ok(Incoming::Frame(_)))));
        // The big frame is not read past the free window while the budget is spent.
        let r = tokio::time::timeout(Duration::from_millis(200), reader.next()).await;
        assert!(r.is_err(), "a frame was read without its charge");
        let n = reader.read_buffer().len();
        assert!(n <= FREE_WINDOW + 16, "{n} bytes buffered");
        drop(held);
        let Some(Ok(Incoming::Frame(f))) = reader.next().await else {
            panic!("no frame")
        };
        assert!(f.body.len() > 300_000);
        assert_eq!(
            b.user.available_permits(),
            1 << 20,
            "the charge is given back"
        );
        assert_eq!(reader.charged(), 0);
        assert_eq!(b.global.available_permits(), 1 << 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_that_does_not_complete_in_time_ends_the_stream() {
        let b = budget(1 << 24, 1 << 24, Duration::from_secs(5));
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(Box::pin(r), BlockCodec::default());
        reader.set_budget(Some(b.clone()));
        let big = big_frame(200_000);
        w.write_all(&big[..big.len() - 64]).await.unwrap();
        let e = reader.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert_eq!(b.user.available_permits(), 1 << 24);
    }

    #[tokio::test]
    async fn without_budget_frames_of_any_size_pass_in_any_chunking() {
        let (mut w, r) = tokio::io::duplex(4096);
        let mut reader = FrameReader::new(Box::pin(r), BlockCodec::default());
        let mut bytes = big_frame(1_000_000);
        bytes.extend(big_frame(10));
        tokio::spawn(async move {
            for c in bytes.chunks(777) {
                w.write_all(c).await.unwrap();
            }
        });
        let Some(Ok(Incoming::Frame(a))) = reader.next().await else {
            panic!()
        };
        let Some(Ok(Incoming::Frame(b))) = reader.next().await else {
            panic!()
        };
        assert!(a.body.len() > 1_000_000 && b.body.len() < 100);
        assert!(reader.next().await.is_none());
    }

    /// What a TLS stream reads when its peer closed without close_notify.
    struct AbruptEof(Vec<u8>);

    impl AsyncRead for AbruptEof {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.0.is_empty() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                )));
            }
            let n = buf.remaining().min(self.0.len());
            buf.put_slice(&self.0[..n]);
            self.0.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_close_without_close_notify_between_frames_is_a_close() {
        let mut reader =
            FrameReader::new(Box::pin(AbruptEof(big_frame(10))), BlockCodec::default());
        assert!(matches!(reader.next().await, Some(Ok(Incoming::Frame(_)))));
        assert!(reader.next().await.is_none(), "a clean end");
        // Inside a frame it is an error, as any early end.
        let half = big_frame(100)[..50].to_vec();
        let mut reader = FrameReader::new(Box::pin(AbruptEof(half)), BlockCodec::default());
        let e = reader.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn eof_inside_a_frame_is_an_error() {
        let (mut w, r) = tokio::io::duplex(4096);
        let mut reader = FrameReader::new(Box::pin(r), BlockCodec::default());
        w.write_all(&big_frame(100)[..50]).await.unwrap();
        drop(w);
        let e = reader.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(reader.next().await.is_none());
    }
}

#[cfg(test)]
mod meter_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_metered_stream_reads_its_budget_and_then_waits_until_settled() {
        let b = ReadBudget {
            user: Arc::new(Semaphore::new(2 * METER_STEP)),
            user_total: 2 * METER_STEP,
            global: Arc::new(Semaphore::new(1 << 30)),
            global_total: 1 << 30,
            frame_timeout: Duration::from_secs(5),
        };
        let (mut w, r) = tokio::io::duplex(8 << 20);
        let meter = Meter::default();
        meter.set_budget(Some(b.clone()));
        let mut m = meter.wrap(r);
        w.write_all(&vec![1u8; 4 << 20]).await.unwrap();
        let mut got = vec![0u8; 8 << 20];
        let mut total = 0;
        // Reads stop at the free window plus the whole budget: no message is larger.
        let e = loop {
            match m.read(&mut got[total..]).await {
                Ok(n) => total += n,
                Err(e) => break e,
            }
        };
        assert_eq!(total, FREE_WINDOW + 2 * METER_STEP);
        assert!(e.to_string().contains("larger than the read budget"), "{e}");
        meter.settle();
        assert_eq!(b.user.available_permits(), 2 * METER_STEP);
        // Another connection of the user holds the budget: this one waits, at most
        // the deadline.
        let other = b
            .user
            .clone()
            .acquire_many_owned(2 * METER_STEP as u32)
            .await
            .unwrap();
        let mut total = 0;
        let e = loop {
            match m.read(&mut got[total..]).await {
                Ok(n) => total += n,
                Err(e) => break e,
            }
        };
        assert_eq!(total, FREE_WINDOW);
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        drop(other);
        meter.settle();
        // Settled: it reads again.
        assert!(m.read(&mut got[..]).await.unwrap() > 0);
    }
}
