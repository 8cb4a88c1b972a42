//! The `tunnel` scenario: bytes and keystrokes through a remote shell (shvrsh →
//! broker tunnel → shvrexec started by shvagent), and the same bulk bytes through the
//! raw relay as the baseline.
//!
//! - bulk: `shvrsh URL AGENT -- cat`, N MiB piped in and all read back (checked byte
//!   for byte); MB/s = bytes each way / transfer time. The tunnel opening is timed
//!   separately (spawn until a 1-byte probe came back), so the rate is the steady state.
//! - download: `shvrsh URL AGENT -- head -c N /dev/zero`, one way, from the first
//!   received byte to EOF.
//! - echo: `shvrsh -t URL AGENT -- cat` (remote PTY, canonical mode): one printable
//!   byte written, read until the PTY's echo of it arrived; p50/p99 round trip.
//! - relay: N MiB as Block frames of 64 KiB from one socket through [`crate::relay`]
//!   to another, one way.
//!
//! Only our broker implements tunnels (`.broker/tunnels`, TunnelCtl). Every wait has a
//! timeout, and the child processes are killed when dropped.

mod bulk;
mod echo;
mod processes;

use std::time::Duration;

use libshv::RpcUrl;

use bulk::download;
pub use bulk::{bulk_cat, relay_bulk};
use echo::echo;
pub(crate) use echo::echo_on;
pub(crate) use processes::Piped;
pub use processes::{Agent, TunnelBins};

use crate::BenchError;

/// Chunk size for writes and reads, and the relay's frame payload.
pub const CHUNK: usize = 64 * 1024;
/// The data pattern repeats every 251 bytes (a prime, so it never lines up with chunks).
const PERIOD: usize = 251;
/// How long the tunnel may take to open (spawn of shvrsh until the probe is back).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one bulk transfer (a broken tunnel fails instead of hanging).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long shvrsh may take to exit once the command's output is complete.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The keystroke of the echo test: printable, so no CR/LF translation applies.
const KEY: u8 = b'x';

#[derive(Debug, Clone)]
pub struct BulkResult {
    /// Payload bytes moved (each way for `cat`, one way for download and relay).
    pub bytes: u64,
    /// From spawning shvrsh until the first byte came back (tunnel open); zero for the relay.
    pub setup: Duration,
    /// The transfer itself.
    pub elapsed: Duration,
    pub mb_per_s: f64,
}

#[derive(Debug, Clone)]
pub struct EchoResult {
    pub keystrokes: usize,
    pub setup: Duration,
    pub p50_us: f64,
    pub p99_us: f64,
}

pub fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9) / 1e6
}

/// What one tunnel round measured against one broker.
#[derive(Debug, Clone)]
pub struct TunnelRound {
    pub cat: BulkResult,
    pub download: Option<BulkResult>,
    pub echo: EchoResult,
}

/// Sizes of one tunnel round.
#[derive(Debug, Clone)]
pub struct TunnelSizes {
    pub bytes: u64,
    pub keystrokes: usize,
    pub download: bool,
}

/// One round against a running broker with the agent already mounted at `agent`.
pub async fn round(
    bins: &TunnelBins,
    url: &RpcUrl,
    agent: &str,
    sizes: &TunnelSizes,
) -> Result<TunnelRound, BenchError> {
    let cat = bulk_cat(bins, url, agent, sizes.bytes).await?;
    let download = if sizes.download {
        Some(download(bins, url, agent, sizes.bytes).await?)
    } else {
        None
    };
    let echo = echo(bins, url, agent, sizes.keystrokes).await?;
    Ok(TunnelRound {
        cat,
        download,
        echo,
    })
}
