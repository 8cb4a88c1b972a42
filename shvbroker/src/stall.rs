//! A peer that stops reading keeps what is queued for it (up to `client_queue_bytes`)
//! for as long as it stays connected, and a connection that sends a ping now and then
//! is never idle. [`StallGuard`] ends such a connection: a write that makes no progress
//! for `limits.write_stall_timeout` fails, and the connection is closed like any other
//! that failed, freeing its queue. A slow reader that takes any bytes at all is not
//! stalled.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub struct StallGuard<W> {
    inner: W,
    limit: Duration,
    /// Runs while a write or flush waits for the peer; dropped at every progress, so an
    /// idle connection holds no timer.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<W> StallGuard<W> {
    pub fn new(inner: W, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            stalled: None,
        }
    }

    /// What a pending write or flush becomes: still pending, or an error once the
    /// peer has taken nothing for `limit`.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the peer took no bytes for {} s", limit.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Reads pass through: only writes can stall on the peer.
impl<W: AsyncRead + Unpin> AsyncRead for StallGuard<W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for StallGuard<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                this.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_takes_nothing_fails_the_write_one_that_reads_slowly_does_not() {
        let limit = Duration::from_secs(60);
        // A slow reader: 1 KiB every 30 s keeps the writer going, never stalled.
        let (near, mut far) = tokio::io::duplex(1024);
        let mut w = StallGuard::new(near, limit);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut got = 0;
            while got < 8 * 1024 {
                tokio::time::sleep(Duration::from_secs(30)).await;
                got += far.read(&mut buf).await.unwrap();
            }
            far
        });
        w.write_all(&[1u8; 8 * 1024]).await.unwrap();
        let _far = reader.await.unwrap();
        // Now nobody reads: the write fails after `limit`, not before.
        let start = tokio::time::Instant::now();
        let e = w.write_all(&[2u8; 4 * 1024]).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), limit);
    }
}
