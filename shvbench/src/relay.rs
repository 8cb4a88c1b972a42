//! The "physical limit" baseline: a raw TCP relay that copies whole Block frames between
//! two sockets, with no login, no meta decoding and no routing.
//!
//! It listens on two ports. Connections on the device port queue up; each connection on
//! the client port is paired with the next device connection, and two pumps copy frames
//! in each direction. Driven by the same `rpc` load (one device connection per client),
//! it shows what one extra loopback hop with frame-sized writes costs on this machine:
//! no broker can beat it.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::BenchError;

pub struct Relay {
    pub client_addr: SocketAddr,
    pub device_addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts the relay on two ephemeral loopback ports; it stops when dropped.
pub async fn start() -> Result<Relay, BenchError> {
    let io = |e: std::io::Error| BenchError::Io(format!("relay: {e}"));
    let clients = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
    let devices = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
    let relay = Relay {
        client_addr: clients.local_addr().map_err(io)?,
        device_addr: devices.local_addr().map_err(io)?,
        stop: CancellationToken::new(),
    };
    let stop = relay.stop.clone();
    tokio::spawn(async move {
        loop {
            let pair = tokio::select! {
                _ = stop.cancelled() => break,
                p = async {
                    let (c, _) = clients.accept().await?;
                    let (d, _) = devices.accept().await?;
                    Ok::<_, std::io::Error>((c, d))
                } => p,
            };
            let Ok((c, d)) = pair else { break };
            let _ = c.set_nodelay(true);
            let _ = d.set_nodelay(true);
            let (cr, cw) = c.into_split();
            let (dr, dw) = d.into_split();
            tokio::spawn(pump(cr, dw, stop.clone()));
            tokio::spawn(pump(dr, cw, stop.clone()));
        }
    });
    Ok(relay)
}

/// Copies Block frames (`[ChainPack UInt length][length bytes]`) from `r` to `w`,
/// flushing when no further input is already buffered.
async fn pump(
    r: tokio::net::tcp::OwnedReadHalf,
    w: tokio::net::tcp::OwnedWriteHalf,
    stop: CancellationToken,
) {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    let mut frame = Vec::with_capacity(4096);
    loop {
        let res = tokio::select! {
            _ = stop.cancelled() => break,
            res = read_frame(&mut r, &mut frame) => res,
        };
        if res.is_err() || w.write_all(&frame).await.is_err() {
            break;
        }
        if r.buffer().is_empty() && w.flush().await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// Reads one whole frame (header included) into `out`.
async fn read_frame(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    out.clear();
    let head = r.read_u8().await?;
    // Extra length bytes after the first, per the ChainPack UInt encoding.
    let extra = if head & 0x80 == 0 {
        0
    } else if head & 0x40 == 0 {
        1
    } else if head & 0x20 == 0 {
        2
    } else if head & 0x10 == 0 {
        3
    } else {
        usize::from(head & 0x0f) + 4
    };
    out.push(head);
    out.resize(1 + extra, 0);
    r.read_exact(&mut out[1..]).await?;
    let (len, hdr) = libshv::value::read_uint(out, 0)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    if len > libshv::codec::DEFAULT_MAX_FRAME as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    out.resize(hdr + len as usize, 0);
    r.read_exact(&mut out[hdr..]).await?;
    Ok(())
}
