//! One measurement each, the same code for ssh and for ours: a session running
//! `true`, `cat` of a file down, `cat` into a file up (both checked byte for byte).

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cpu::Cpu;
use super::remote::Remote;
use crate::tunnel::{mb_per_s, Piped};
use crate::BenchError;

const TIMEOUT: Duration = Duration::from_secs(120);
const CHUNK: usize = 256 * 1024;

/// A session running `true`, from spawn to exit: (wall time, CPU of both ends).
pub async fn open_true(remote: &Remote, cpu: &Cpu) -> Result<(Duration, Duration), BenchError> {
    let before = cpu.total().await;
    let t0 = Instant::now();
    let p = Piped::start(remote.session(false, "true"), "session")?;
    p.finish().await?;
    let wall = t0.elapsed();
    Ok((wall, cpu.total().await.saturating_sub(before)))
}

/// `cat FILE` on the remote side, read here and compared with `payload`: MB/s from
/// the first byte to EOF, and the CPU of both ends over the whole session.
pub async fn download(
    remote: &Remote,
    file: &Path,
    payload: &[u8],
    cpu: &Cpu,
) -> Result<(f64, Duration), BenchError> {
    let before = cpu.total().await;
    let script = format!("cat '{}'", file.display());
    let mut p = Piped::start(remote.session(false, &script), "download")?;
    drop(p.child.stdin.take());
    let mut out = p.child.stdout.take().expect("piped stdout");
    let mut buf = vec![0u8; CHUNK];
    let read = async {
        let mut pos = 0usize;
        let mut t0 = None;
        loop {
            let n = out.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            t0.get_or_insert_with(Instant::now);
            if pos + n > payload.len() || buf[..n] != payload[pos..pos + n] {
                return Err(format!("data differ within bytes {pos}..{}", pos + n));
            }
            pos += n;
        }
        if pos != payload.len() {
            return Err(format!("EOF after {pos} of {} bytes", payload.len()));
        }
        Ok(t0.map(|t| t.elapsed()).unwrap_or_default())
    };
    let elapsed = match tokio::time::timeout(TIMEOUT, read).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return Err(p.fail(e).await),
        Err(_) => return Err(p.fail(format!("took over {TIMEOUT:?}")).await),
    };
    p.finish().await?;
    let used = cpu.total().await.saturating_sub(before);
    Ok((mb_per_s(payload.len() as u64, elapsed), used))
}

/// `payload` into `cat > FILE` on the remote side: MB/s from the first byte written
/// (once the remote shell said it is ready) until the session ended; the file is
/// compared with `payload` afterwards.
pub async fn upload(remote: &Remote, file: &Path, payload: &[u8]) -> Result<f64, BenchError> {
    let _ = std::fs::remove_file(file);
    let script = format!("echo R; exec cat > '{}'", file.display());
    let mut p = Piped::start(remote.session(false, &script), "upload")?;
    let mut stdin = p.child.stdin.take().expect("piped stdin");
    let mut out = p.child.stdout.take().expect("piped stdout");
    let mut ready = [0u8; 2];
    match tokio::time::timeout(TIMEOUT, out.read_exact(&mut ready)).await {
        Ok(Ok(_)) if &ready == b"R\n" => {}
        Ok(Ok(_)) => return Err(p.fail(format!("said {ready:?}, not R")).await),
        Ok(Err(e)) => return Err(p.fail(e.to_string()).await),
        Err(_) => return Err(p.fail("never ready".into()).await),
    }
    let t0 = Instant::now();
    let write = async {
        for chunk in payload.chunks(CHUNK) {
            stdin.write_all(chunk).await?;
        }
        stdin.shutdown().await
    };
    match tokio::time::timeout(TIMEOUT, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(p.fail(format!("write: {e}")).await),
        Err(_) => return Err(p.fail(format!("took over {TIMEOUT:?}")).await),
    }
    drop(stdin);
    p.finish().await?;
    let elapsed = t0.elapsed();
    let got = std::fs::read(file).map_err(|e| BenchError::Io(format!("uploaded file: {e}")))?;
    let _ = std::fs::remove_file(file);
    if got != payload {
        return Err(BenchError::Io(format!(
            "the uploaded file differs ({} of {} bytes)",
            got.len(),
            payload.len()
        )));
    }
    Ok(mb_per_s(payload.len() as u64, elapsed))
}
