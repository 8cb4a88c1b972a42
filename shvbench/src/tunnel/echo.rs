//! Keystroke echo: single bytes through a remote PTY, each timed until its echo is back.

use std::time::{Duration, Instant};

use libshv::RpcUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::processes::{Piped, Rsh, TunnelBins};
use super::{EchoResult, EXIT_TIMEOUT, KEY, OPEN_TIMEOUT};
use crate::stats::Samples;
use crate::BenchError;
/// `shvrsh -t URL AGENT -- cat`: `keystrokes` single bytes, each timed until the
/// remote PTY's echo of it is read back. The PTY stays in canonical mode, so cat sees
/// nothing before the final newline and the echo is the only output meanwhile.
pub(crate) async fn echo(
    bins: &TunnelBins,
    url: &RpcUrl,
    agent: &str,
    keystrokes: usize,
) -> Result<EchoResult, BenchError> {
    let spawned = Instant::now();
    let rsh = Rsh::spawn(bins, url, agent, true, &["cat"])?;
    echo_on(rsh, spawned, keystrokes).await
}

/// The echo measurement on any remote PTY running `cat` (shvrsh -t, ssh -tt), spawned
/// at `spawned`.
pub(crate) async fn echo_on(
    mut rsh: Piped,
    spawned: Instant,
    keystrokes: usize,
) -> Result<EchoResult, BenchError> {
    let mut stdin = rsh.child.stdin.take().expect("piped stdin");
    let mut stdout = rsh.child.stdout.take().expect("piped stdout");
    let mut samples = Samples::with_capacity(keystrokes);
    let mut setup = Duration::ZERO;
    // Keystroke 0 opens the tunnel and is not sampled.
    let run = async {
        let mut buf = [0u8; 4096];
        let mut seen = 0usize;
        for i in 0..=keystrokes {
            let t = Instant::now();
            stdin
                .write_all(&[KEY])
                .await
                .map_err(|e| format!("write: {e}"))?;
            stdin.flush().await.map_err(|e| format!("write: {e}"))?;
            let limit = if i == 0 {
                OPEN_TIMEOUT
            } else {
                Duration::from_secs(5)
            };
            while seen <= i {
                let n = tokio::time::timeout(limit, stdout.read(&mut buf))
                    .await
                    .map_err(|_| format!("keystroke {i}: no echo within {limit:?}"))?
                    .map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err(format!("EOF after {seen} echoed keystrokes"));
                }
                seen += buf[..n].iter().filter(|b| **b == KEY).count();
            }
            if i == 0 {
                setup = spawned.elapsed();
            } else {
                samples.push_nanos(t.elapsed().as_nanos() as i64);
            }
        }
        // End the line (cat prints it back) and end cat's input with ^D, as a user
        // would: ssh -tt does not turn a closed stdin into one (shvrsh would).
        stdin
            .write_all(b"\n\x04")
            .await
            .map_err(|e| format!("write: {e}"))?;
        drop(stdin);
        let mut rest = Vec::new();
        tokio::time::timeout(EXIT_TIMEOUT, stdout.read_to_end(&mut rest))
            .await
            .map_err(|_| "no EOF after the last keystroke".to_string())?
            .map_err(|e| format!("read: {e}"))?;
        Ok::<(), String>(())
    };
    if let Err(e) = run.await {
        return Err(rsh.fail(e).await);
    }
    rsh.finish().await?;
    Ok(EchoResult {
        keystrokes,
        setup,
        p50_us: samples.percentile(50.0),
        p99_us: samples.percentile(99.0),
    })
}
