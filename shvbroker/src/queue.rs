//! A peer's outgoing queue, bounded in frames *and* bytes. The broker task never waits
//! on a peer: it pushes without blocking and learns at once when the peer has fallen
//! too far behind. Counting frames alone is not enough: 4096 queued 16 MiB frames are
//! 64 GiB. And bounding each queue is not enough either: thousands of connections that
//! each read just enough to stay below their bound would multiply it, so all queues
//! together are bounded too ([`Total`]), and past that bound the longest queues are the
//! ones cut off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

pub use libshv::writer::Outgoing;

/// What a queued frame is charged besides its body: its meta and the queue slot. A
/// meta is at most `libshv::frame::MAX_META_BYTES` encoded (a few dozen values), so a
/// queue holds at most `client_queue_bytes` + `client_queue` × that.
pub const FRAME_OVERHEAD: usize = 256;

/// The bytes an item holds while queued, for its queue's own bound (a shared signal
/// counts whole for every subscriber: the bound stays conservative).
fn cost(item: &Outgoing) -> usize {
    match item {
        Outgoing::Frame(f) => f.body.len() + FRAME_OVERHEAD,
        Outgoing::Encoded(b) => b.len() + FRAME_OVERHEAD,
    }
}

/// What an item adds to [`Total`]: a shared encoding's body is counted there once, by
/// [`Total::shared`], however many queues hold it.
fn total_cost(item: &Outgoing) -> usize {
    match item {
        Outgoing::Frame(f) => f.body.len() + FRAME_OVERHEAD,
        Outgoing::Encoded(_) => FRAME_OVERHEAD,
    }
}

/// Why an item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The peer has too many frames or bytes queued: it does not read fast enough.
    Overflow,
    /// All queues together hold [`Total`]'s bound, and this one is among the long ones.
    Pressure,
    /// The peer's writer is gone.
    Closed,
}

/// Bytes queued to all peers together, and their bound (`limits.outgoing_bytes`).
pub struct Total {
    used: AtomicUsize,
    max: usize,
    /// Live queues: a queue's fair share of `max` is `max / queues`.
    queues: AtomicUsize,
}

impl Total {
    pub fn new(max: usize) -> Arc<Total> {
        Arc::new(Total {
            used: AtomicUsize::new(0),
            max,
            queues: AtomicUsize::new(0),
        })
    }

    /// Bytes queued to all peers now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// `data` as one encoding to be queued to many peers: counted here once, for as
    /// long as any queue (or writer) still holds it.
    pub fn shared(self: &Arc<Self>, data: Vec<u8>) -> bytes::Bytes {
        self.used.fetch_add(data.len(), Ordering::AcqRel);
        bytes::Bytes::from_owner(SharedBody {
            data,
            total: self.clone(),
        })
    }

    /// Past the bound, a queue longer than its fair share is the one to give way. (So
    /// all queues together hold at most about twice `max`, however many there are.)
    fn over(&self, queued: usize, cost: usize) -> bool {
        // Most pushes go to a short queue: decided without touching the shared counters.
        if queued <= MIN_SHARE {
            return false;
        }
        let share = self.max / self.queues.load(Ordering::Acquire).max(1);
        queued > share && self.used().saturating_add(cost) > self.max
    }
}

/// A queue this short is never cut off for the total: a peer that keeps up.
const MIN_SHARE: usize = 64 * 1024;

/// The body behind [`Total::shared`]'s bytes; gives its count back when the last copy
/// goes.
struct SharedBody {
    data: Vec<u8>,
    total: Arc<Total>,
}

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for SharedBody {
    fn drop(&mut self) {
        self.total.used.fetch_sub(self.data.len(), Ordering::AcqRel);
    }
}

/// The sending half, held by the broker task (and by the peer task for its login
/// phase answers).
#[derive(Clone)]
pub struct QueueSender {
    tx: mpsc::Sender<Outgoing>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    total: Arc<Total>,
}

/// The receiving half, drained by the peer's writer task.
pub struct QueueReceiver {
    rx: mpsc::Receiver<Outgoing>,
    bytes: Arc<AtomicUsize>,
    total: Arc<Total>,
}

/// A queue of at most `frames` items and `max_bytes` bytes, counted in `total` too.
/// One item is always accepted into an empty queue, however large (frames are capped
/// elsewhere).
pub fn channel(frames: usize, max_bytes: usize, total: Arc<Total>) -> (QueueSender, QueueReceiver) {
    let (tx, rx) = mpsc::channel(frames.max(1));
    let bytes = Arc::new(AtomicUsize::new(0));
    total.queues.fetch_add(1, Ordering::AcqRel);
    (
        QueueSender {
            tx,
            bytes: bytes.clone(),
            max_bytes,
            total: total.clone(),
        },
        QueueReceiver { rx, bytes, total },
    )
}

impl QueueSender {
    /// Queues without waiting.
    pub fn push(&self, item: impl Into<Outgoing>) -> Result<(), Full> {
        let item = item.into();
        let cost = cost(&item);
        let queued = self.bytes.load(Ordering::Acquire);
        if queued > 0 && queued.saturating_add(cost) > self.max_bytes {
            return Err(Full::Overflow);
        }
        let in_total = total_cost(&item);
        if self.total.over(queued, in_total) {
            return Err(Full::Pressure);
        }
        self.charge(cost, in_total);
        self.tx.try_send(item).map_err(|e| {
            self.refund(cost, in_total);
            match e {
                mpsc::error::TrySendError::Full(_) => Full::Overflow,
                mpsc::error::TrySendError::Closed(_) => Full::Closed,
            }
        })
    }

    /// Queues, waiting for a free slot (peer tasks only, never the broker task). The
    /// byte bound is not waited for: what a peer task sends itself is small.
    pub async fn send(&self, item: impl Into<Outgoing>) -> Result<(), Full> {
        let item = item.into();
        let cost = cost(&item);
        let in_total = total_cost(&item);
        // Counted before the item can be received (the receiver subtracts it), and
        // given back if the send fails or is cancelled while waiting for a slot.
        self.charge(cost, in_total);
        let mut charge = Charge {
            queue: self,
            cost,
            in_total,
        };
        let r = self.tx.send(item).await.map_err(|_| Full::Closed);
        if r.is_ok() {
            charge.cost = 0;
            charge.in_total = 0;
        }
        r
    }

    fn charge(&self, cost: usize, in_total: usize) {
        self.bytes.fetch_add(cost, Ordering::AcqRel);
        self.total.used.fetch_add(in_total, Ordering::AcqRel);
    }

    fn refund(&self, cost: usize, in_total: usize) {
        self.bytes.fetch_sub(cost, Ordering::AcqRel);
        self.total.used.fetch_sub(in_total, Ordering::AcqRel);
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Is the queue more than half full, in frames or in bytes? Requests are refused
    /// then, so that callers cannot push a device into disconnection.
    pub fn is_busy(&self) -> bool {
        self.tx.capacity() < self.tx.max_capacity() / 2 || self.queued_bytes() > self.max_bytes / 2
    }
}

/// Gives a charge back unless the item was queued.
struct Charge<'a> {
    queue: &'a QueueSender,
    cost: usize,
    in_total: usize,
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        if self.cost > 0 {
            self.queue.refund(self.cost, self.in_total);
        }
    }
}

impl QueueReceiver {
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let item = self.rx.recv().await?;
        self.taken(&item);
        Some(item)
    }

    pub fn try_recv(&mut self) -> Option<Outgoing> {
        let item = self.rx.try_recv().ok()?;
        self.taken(&item);
        Some(item)
    }

    fn taken(&self, item: &Outgoing) {
        self.bytes.fetch_sub(cost(item), Ordering::AcqRel);
        self.total
            .used
            .fetch_sub(total_cost(item), Ordering::AcqRel);
    }
}

/// What is still queued when the receiver goes (its peer is gone) is given back to the
/// total: those items are freed with the channel.
impl Drop for QueueReceiver {
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            self.taken(&item);
        }
        self.total.queues.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: usize) -> Outgoing {
        Outgoing::Encoded(bytes::Bytes::from(vec![0u8; body]))
    }

    #[tokio::test]
    async fn bounded_in_bytes_and_frames() {
        let (tx, mut rx) = channel(100, 10_000, Total::new(usize::MAX));
        // One large item always fits an empty queue.
        tx.push(frame(50_000)).unwrap();
        assert_eq!(tx.push(frame(10)), Err(Full::Overflow));
        rx.recv().await.unwrap();
        assert_eq!(tx.queued_bytes(), 0);
        for _ in 0..20 {
            tx.push(frame(100)).unwrap();
        }
        assert!(tx.queued_bytes() <= 10_000);
        assert_eq!(tx.push(frame(5_000)), Err(Full::Overflow));
        while rx.try_recv().is_some() {}
        assert_eq!(tx.queued_bytes(), 0);
        let (tx, _rx) = channel(2, 1 << 20, Total::new(usize::MAX));
        tx.push(frame(1)).unwrap();
        tx.push(frame(1)).unwrap();
        assert_eq!(tx.push(frame(1)), Err(Full::Overflow));
        assert!(tx.is_busy());
    }

    /// Unshared items of 64 KiB, as a response would be.
    fn response(kib: usize) -> Outgoing {
        let f = libshv::RpcFrame {
            meta: Default::default(),
            body: vec![0u8; kib * 1024 - FRAME_OVERHEAD].into(),
        };
        Outgoing::Frame(f)
    }

    #[tokio::test]
    async fn all_queues_together_are_bounded_and_the_long_ones_give_way() {
        const KIB: usize = 1024;
        let total = Total::new(1024 * KIB);
        // Each queue's own bound is above the total's: only the total stops them.
        let (long, mut long_rx) = channel(1000, 8192 * KIB, total.clone());
        let (short, mut short_rx) = channel(1000, 8192 * KIB, total.clone());
        // The long queue takes items until all queues together reach the bound...
        let mut n = 0;
        while long.push(response(64)).is_ok() {
            n += 1;
        }
        assert_eq!(long.push(response(64)), Err(Full::Pressure));
        assert_eq!(n, 16);
        assert_eq!(total.used(), 1024 * KIB);
        // ...while a short one (a peer that keeps up) still takes its share.
        short.push(response(64)).unwrap();
        short_rx.recv().await.unwrap();
        // What the writers take, and what a gone peer left queued, is given back.
        long_rx.recv().await.unwrap();
        assert_eq!(total.used(), (n - 1) * 64 * KIB);
        drop(long_rx);
        assert_eq!(total.used(), 0);
        drop(short_rx);
        assert_eq!(short.push(response(64)), Err(Full::Closed));
        assert_eq!(total.used(), 0);
    }

    #[tokio::test]
    async fn a_shared_encoding_counts_once_in_the_total() {
        let total = Total::new(usize::MAX);
        let body = total.shared(vec![7u8; 100_000]);
        let queues: Vec<_> = (0..10)
            .map(|_| channel(10, 1 << 20, total.clone()))
            .collect();
        for (tx, _) in &queues {
            tx.push(Outgoing::Encoded(body.clone())).unwrap();
        }
        drop(body);
        assert_eq!(total.used(), 100_000 + 10 * FRAME_OVERHEAD);
        // Each queue still counts it whole against its own bound.
        assert_eq!(queues[0].0.queued_bytes(), 100_000 + FRAME_OVERHEAD);
        drop(queues);
        assert_eq!(total.used(), 0);
    }

    #[tokio::test]
    async fn closed_queue() {
        let (tx, rx) = channel(2, 1000, Total::new(usize::MAX));
        drop(rx);
        assert_eq!(tx.push(frame(1)), Err(Full::Closed));
        assert_eq!(tx.queued_bytes(), 0);
    }
}
