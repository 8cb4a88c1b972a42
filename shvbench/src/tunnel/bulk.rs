//! Bulk bytes: through `shvrsh -- cat` both ways, a one-way download, and the raw relay
//! baseline; the periodic pattern they carry is checked byte for byte.

use std::time::{Duration, Instant};

use libshv::RpcUrl;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::processes::{Rsh, TunnelBins};
use super::{mb_per_s, BulkResult, CHUNK, OPEN_TIMEOUT, PERIOD, TRANSFER_TIMEOUT};
use crate::BenchError;
/// `PERIOD`-periodic data, long enough to slice any chunk at any phase.
fn pattern() -> Vec<u8> {
    (0..CHUNK + PERIOD).map(|i| (i % PERIOD) as u8).collect()
}

/// Reads and checks `total` bytes of the pattern (starting at phase 0).
async fn read_pattern<R: AsyncRead + Unpin>(
    r: &mut R,
    total: u64,
    pat: &[u8],
) -> Result<(), String> {
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < total {
        let want = CHUNK.min((total - pos) as usize);
        let n = r
            .read(&mut buf[..want])
            .await
            .map_err(|e| format!("read after {pos} bytes: {e}"))?;
        if n == 0 {
            return Err(format!("EOF after {pos} of {total} bytes"));
        }
        let off = (pos % PERIOD as u64) as usize;
        if buf[..n] != pat[off..off + n] {
            return Err(format!(
                "data differs within bytes {pos}..{}",
                pos + n as u64
            ));
        }
        pos += n as u64;
    }
    Ok(())
}

/// Writes `total` bytes of the pattern (starting at phase 0).
async fn write_pattern<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    total: u64,
    pat: &[u8],
) -> std::io::Result<()> {
    let mut pos = 0u64;
    while pos < total {
        let n = CHUNK.min((total - pos) as usize);
        let off = (pos % PERIOD as u64) as usize;
        w.write_all(&pat[off..off + n]).await?;
        pos += n as u64;
    }
    w.flush().await
}

/// `shvrsh URL AGENT -- cat`: `bytes` piped in and read back.
pub async fn bulk_cat(
    bins: &TunnelBins,
    url: &RpcUrl,
    agent: &str,
    bytes: u64,
) -> Result<BulkResult, BenchError> {
    let pat = pattern();
    let spawned = Instant::now();
    let mut rsh = Rsh::spawn(bins, url, agent, false, &["cat"])?;
    let mut stdin = rsh.child.stdin.take().expect("piped stdin");
    let mut stdout = rsh.child.stdout.take().expect("piped stdout");
    // The probe: its return marks the open tunnel, so the rate excludes the setup.
    let probe = async {
        stdin.write_all(b"P").await.map_err(|e| e.to_string())?;
        stdin.flush().await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        stdout.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        if b[0] != b'P' {
            return Err(format!("probe came back as {:?}", b[0]));
        }
        Ok(())
    };
    match tokio::time::timeout(OPEN_TIMEOUT, probe).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(rsh.fail(format!("probe: {e}")).await),
        Err(_) => {
            return Err(rsh
                .fail(format!("no probe echo within {OPEN_TIMEOUT:?}"))
                .await)
        }
    }
    let setup = spawned.elapsed();
    let t0 = Instant::now();
    let write = async {
        let r = write_pattern(&mut stdin, bytes, &pat).await;
        // EOF for cat, so that the session ends after the data.
        drop(stdin);
        r.map_err(|e| format!("write: {e}"))
    };
    let read = read_pattern(&mut stdout, bytes, &pat);
    let res = tokio::time::timeout(TRANSFER_TIMEOUT, async { tokio::try_join!(write, read) }).await;
    let elapsed = t0.elapsed();
    match res {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(rsh.fail(e).await),
        Err(_) => {
            return Err(rsh
                .fail(format!("transfer took over {TRANSFER_TIMEOUT:?}"))
                .await)
        }
    }
    drop(stdout);
    rsh.finish().await?;
    Ok(BulkResult {
        bytes,
        setup,
        elapsed,
        mb_per_s: mb_per_s(bytes, elapsed),
    })
}

/// `shvrsh URL AGENT -- head -c BYTES /dev/zero`: one way, timed from the first
/// received byte to EOF (the bytes of the first read are not counted).
pub(crate) async fn download(
    bins: &TunnelBins,
    url: &RpcUrl,
    agent: &str,
    bytes: u64,
) -> Result<BulkResult, BenchError> {
    let spawned = Instant::now();
    let n = bytes.to_string();
    let mut rsh = Rsh::spawn(bins, url, agent, false, &["head", "-c", &n, "/dev/zero"])?;
    drop(rsh.child.stdin.take());
    let mut stdout = rsh.child.stdout.take().expect("piped stdout");
    let mut buf = vec![0u8; CHUNK];
    let first = match tokio::time::timeout(OPEN_TIMEOUT, stdout.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => n as u64,
        Ok(Ok(_)) => return Err(rsh.fail("no output".into()).await),
        Ok(Err(e)) => return Err(rsh.fail(format!("read: {e}")).await),
        Err(_) => return Err(rsh.fail(format!("no output within {OPEN_TIMEOUT:?}")).await),
    };
    let setup = spawned.elapsed();
    let t0 = Instant::now();
    let read = async {
        let mut got = first;
        loop {
            let n = stdout.read(&mut buf).await?;
            if n == 0 {
                return Ok::<u64, std::io::Error>(got);
            }
            if buf[..n].iter().any(|b| *b != 0) {
                return Err(std::io::Error::other("non-zero byte from /dev/zero"));
            }
            got += n as u64;
        }
    };
    let got = match tokio::time::timeout(TRANSFER_TIMEOUT, read).await {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return Err(rsh.fail(format!("read: {e}")).await),
        Err(_) => {
            return Err(rsh
                .fail(format!("transfer took over {TRANSFER_TIMEOUT:?}"))
                .await)
        }
    };
    let elapsed = t0.elapsed();
    if got != bytes {
        return Err(rsh.fail(format!("got {got} of {bytes} bytes")).await);
    }
    rsh.finish().await?;
    Ok(BulkResult {
        bytes,
        setup,
        elapsed,
        mb_per_s: mb_per_s(bytes - first, elapsed),
    })
}

/// The baseline: `bytes` as Block frames of 64 KiB payload from one socket through the
/// raw relay to another (one way).
pub async fn relay_bulk(bytes: u64) -> Result<BulkResult, BenchError> {
    let io = |e: std::io::Error| BenchError::Io(format!("relay bulk: {e}"));
    let relay = crate::relay::start().await?;
    let w = tokio::net::TcpStream::connect(relay.client_addr)
        .await
        .map_err(io)?;
    let r = tokio::net::TcpStream::connect(relay.device_addr)
        .await
        .map_err(io)?;
    w.set_nodelay(true).map_err(io)?;
    r.set_nodelay(true).map_err(io)?;
    let (_wr, mut w) = w.into_split();
    let (mut r, _rw) = r.into_split();
    // One frame as the probe: the relay has paired the sockets once it is through.
    let mut probe = Vec::new();
    libshv::value::write_uint(&mut probe, 1);
    probe.push(b'P');
    w.write_all(&probe).await.map_err(io)?;
    let mut back = vec![0u8; probe.len()];
    tokio::time::timeout(OPEN_TIMEOUT, r.read_exact(&mut back))
        .await
        .map_err(|_| BenchError::Timeout("relay probe".into()))?
        .map_err(io)?;
    let mut frame = Vec::with_capacity(CHUNK + 8);
    libshv::value::write_uint(&mut frame, CHUNK as u64);
    let header = frame.len();
    frame.extend((0..CHUNK).map(|i| (i % PERIOD) as u8));
    let frames = bytes.div_ceil(CHUNK as u64);
    let wire = frames * frame.len() as u64;
    let t0 = Instant::now();
    let write = async {
        for _ in 0..frames {
            w.write_all(&frame).await?;
        }
        w.flush().await
    };
    let read = async {
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        while got < wire {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::other(format!(
                    "EOF after {got} of {wire} bytes"
                )));
            }
            got += n as u64;
        }
        Ok(())
    };
    tokio::time::timeout(TRANSFER_TIMEOUT, async { tokio::try_join!(write, read) })
        .await
        .map_err(|_| BenchError::Timeout("relay bulk transfer".into()))?
        .map_err(io)?;
    let elapsed = t0.elapsed();
    let payload = frames * (frame.len() - header) as u64;
    Ok(BulkResult {
        bytes: payload,
        setup: Duration::ZERO,
        elapsed,
        mb_per_s: mb_per_s(payload, elapsed),
    })
}
