//! A peer's outgoing queue, bounded in frames *and* bytes. The broker task never waits
//! on a peer: it pushes without blocking and learns at once when the peer has fallen
//! too far behind. Counting frames alone is not enough: 4096 queued 16 MiB frames are
//! 64 GiB.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

pub use libshv::writer::Outgoing;

/// What a queued frame is charged besides its body: its meta and the queue slot. A
/// meta is at most `libshv::frame::MAX_META_BYTES` encoded (a few dozen values), so a
/// queue holds at most `client_queue_bytes` + `client_queue` × that.
pub const FRAME_OVERHEAD: usize = 256;

/// The bytes an item holds while queued (a shared signal counts whole for every
/// subscriber: the bound stays conservative).
fn cost(item: &Outgoing) -> usize {
    match item {
        Outgoing::Frame(f) => f.body.len() + FRAME_OVERHEAD,
        Outgoing::Encoded(b) => b.len() + FRAME_OVERHEAD,
    }
}

/// Why an item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The peer has too many frames or bytes queued: it does not read fast enough.
    Full,
    /// The peer's writer is gone.
    Closed,
}

/// The sending half, held by the broker task (and by the peer task for its login
/// phase answers).
#[derive(Clone)]
pub struct QueueSender {
    tx: mpsc::Sender<Outgoing>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The receiving half, drained by the peer's writer task.
pub struct QueueReceiver {
    rx: mpsc::Receiver<Outgoing>,
    bytes: Arc<AtomicUsize>,
}

/// A queue of at most `frames` items and `max_bytes` bytes. One item is always
/// accepted into an empty queue, however large (frames are capped elsewhere).
pub fn channel(frames: usize, max_bytes: usize) -> (QueueSender, QueueReceiver) {
    let (tx, rx) = mpsc::channel(frames.max(1));
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        QueueSender {
            tx,
            bytes: bytes.clone(),
            max_bytes,
        },
        QueueReceiver { rx, bytes },
    )
}

impl QueueSender {
    /// Queues without waiting.
    pub fn push(&self, item: impl Into<Outgoing>) -> Result<(), Full> {
        let item = item.into();
        let cost = cost(&item);
        let queued = self.bytes.load(Ordering::Acquire);
        if queued > 0 && queued.saturating_add(cost) > self.max_bytes {
            return Err(Full::Full);
        }
        self.bytes.fetch_add(cost, Ordering::AcqRel);
        self.tx.try_send(item).map_err(|e| {
            self.bytes.fetch_sub(cost, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => Full::Full,
                mpsc::error::TrySendError::Closed(_) => Full::Closed,
            }
        })
    }

    /// Queues, waiting for a free slot (peer tasks only, never the broker task). The
    /// byte bound is not waited for: what a peer task sends itself is small.
    pub async fn send(&self, item: impl Into<Outgoing>) -> Result<(), Full> {
        let item = item.into();
        let cost = cost(&item);
        // Counted before the item can be received (the receiver subtracts it), and
        // given back if the send fails or is cancelled while waiting for a slot.
        self.bytes.fetch_add(cost, Ordering::AcqRel);
        let mut charge = Charge {
            bytes: &self.bytes,
            cost,
        };
        let r = self.tx.send(item).await.map_err(|_| Full::Closed);
        if r.is_ok() {
            charge.cost = 0;
        }
        r
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
    bytes: &'a AtomicUsize,
    cost: usize,
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        if self.cost > 0 {
            self.bytes.fetch_sub(self.cost, Ordering::AcqRel);
        }
    }
}

impl QueueReceiver {
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let item = self.rx.recv().await?;
        self.bytes.fetch_sub(cost(&item), Ordering::AcqRel);
        Some(item)
    }

    pub fn try_recv(&mut self) -> Option<Outgoing> {
        let item = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(cost(&item), Ordering::AcqRel);
        Some(item)
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
        let (tx, mut rx) = channel(100, 10_000);
        // One large item always fits an empty queue.
        tx.push(frame(50_000)).unwrap();
        assert_eq!(tx.push(frame(10)), Err(Full::Full));
        rx.recv().await.unwrap();
        assert_eq!(tx.queued_bytes(), 0);
        for _ in 0..20 {
            tx.push(frame(100)).unwrap();
        }
        assert!(tx.queued_bytes() <= 10_000);
        assert_eq!(tx.push(frame(5_000)), Err(Full::Full));
        while rx.try_recv().is_some() {}
        assert_eq!(tx.queued_bytes(), 0);
        let (tx, _rx) = channel(2, 1 << 20);
        tx.push(frame(1)).unwrap();
        tx.push(frame(1)).unwrap();
        assert_eq!(tx.push(frame(1)), Err(Full::Full));
        assert!(tx.is_busy());
    }

    #[tokio::test]
    async fn closed_queue() {
        let (tx, rx) = channel(2, 1000);
        drop(rx);
        assert_eq!(tx.push(frame(1)), Err(Full::Closed));
        assert_eq!(tx.queued_bytes(), 0);
    }
}
