//! The writer task: drains a peer's bounded queue onto its socket in batches.

use std::time::Duration;

use futures::SinkExt;
use libshv::logsafe::shown;
use libshv::writer::{write_batch, OutgoingWriter};
use tokio_util::sync::CancellationToken;

use crate::queue::QueueReceiver;

/// Connections closed for stalling, for their log line. (Process-wide: the line is
/// about the process's log.)
static STALLS: std::sync::Mutex<libshv::logsafe::Burst> =
    std::sync::Mutex::new(libshv::logsafe::Burst::new());

/// Drains a peer's queue onto its socket until the queue ends or the peer is cancelled.
/// `addr` names the peer in the log.
pub(crate) async fn write_loop(
    mut writer: OutgoingWriter,
    mut rx: QueueReceiver,
    cancel: CancellationToken,
    addr: String,
) {
    {
        let work = async {
            while let Some(first) = rx.recv().await {
                // Batch what is already queued into one flush.
                write_batch(&mut writer, first, || rx.try_recv()).await?;
            }
            Ok::<(), std::io::Error>(())
        };
        // A peer that stops reading blocks `flush`; cancellation must still win.
        tokio::select! {
            r = work => match r {
                // A stalled peer (crate::stall) is the broker's decision: say so, once
                // per burst (a user can stall thousands of connections at once).
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    let due = STALLS.lock().unwrap_or_else(|e| e.into_inner()).note();
                    if let Some(n) = due {
                        tracing::warn!(addr = %shown(&addr), "disconnecting: {e} ({n} such connection(s) since the last line)");
                    }
                }
                Err(e) => tracing::debug!(addr = %shown(&addr), "write failed: {e}"),
                Ok(()) => {}
            },
            _ = cancel.cancelled() => {}
        }
    }
    // Best effort: deliver what is already queued (e.g. a last error), then close.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(f) = rx.try_recv() {
            writer.feed(f).await?;
        }
        writer.close().await
    })
    .await;
    cancel.cancel();
}
