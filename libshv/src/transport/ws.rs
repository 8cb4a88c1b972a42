//! WebSocket (`ws://HOST:PORT[/PATH]`): with the `shv3` subprotocol one SHV message
//! (format byte and ChainPack) per binary WebSocket message; without it, Block frames
//! inside binary messages, as older peers send. [`connect`] and [`accept`] turn a
//! WebSocket into a Block-framed byte stream (a pipe and two tasks), so that everything
//! above the framing stays as it is.

use bytes::{Buf, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::stream::{BoxRead, BoxWrite};

/// The subprotocol of one SHV message per WebSocket message.
pub const SUBPROTOCOL: &str = "shv3";
const PROTOCOL_HEADER: &str = "Sec-WebSocket-Protocol";

fn config(max_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_frame.saturating_add(16)))
        .max_frame_size(Some(max_frame.saturating_add(16)))
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("WebSocket: {e}"))
}

/// The client side: offers `shv3`, falls back to Block frames if the server declines.
pub async fn connect<S>(
    stream: S,
    url: &str,
    max_frame: usize,
) -> std::io::Result<(BoxRead, BoxWrite)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut request = url.into_client_request().map_err(io_err)?;
    request
        .headers_mut()
        .insert(PROTOCOL_HEADER, HeaderValue::from_static(SUBPROTOCOL));
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config(max_frame)))
            .await
            .map_err(io_err)?;
    let shv3 = response
        .headers()
        .get(PROTOCOL_HEADER)
        .is_some_and(|v| v.as_bytes() == SUBPROTOCOL.as_bytes());
    Ok(bridge(ws, shv3, None))
}

/// A listener's origin policy: `(Origin, Host)` of an upgrade request → admitted, or
/// refused with a reason.
pub type Admit<'a> = dyn Fn(Option<&str>, Option<&str>) -> Result<(), String> + Sync + 'a;

/// The server side: accepts `shv3` when offered, else Block frames in messages.
/// `admit` sees the upgrade request's `Origin` and `Host` headers (when present) and
/// may refuse it with a reason (answered with 403): the listener's origin policy.
/// `meter`, if given, meters `stream`'s reads (crate::reader::Metered): it is settled
/// once each message has been handed on, so a message being gathered is charged.
pub async fn accept<S>(
    stream: S,
    max_frame: usize,
    admit: &Admit<'_>,
    meter: Option<crate::reader::Meter>,
) -> std::io::Result<(BoxRead, BoxWrite)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut shv3 = false;
    let mut refused = None;
    // The callback's signature (and its large error type) is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        if let Err(why) = admit(header("Origin"), header("Host")) {
            let mut r = tokio_tungstenite::tungstenite::handshake::server::ErrorResponse::new(
                Some(format!("{why}\n")),
            );
            *r.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
            refused = Some(why);
            return Err(r);
        }
        let offered = req
            .headers()
            .get_all(PROTOCOL_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == SUBPROTOCOL);
        if offered {
            shv3 = true;
            resp.headers_mut()
                .insert(PROTOCOL_HEADER, HeaderValue::from_static(SUBPROTOCOL));
        }
        Ok(resp)
    };
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config(max_frame)))
            .await;
    if let Some(why) = refused {
        return Err(io_err(format!("upgrade refused: {why}")));
    }
    Ok(bridge(ws.map_err(io_err)?, shv3, meter))
}

/// How long closing a WebSocket may wait for a peer that does not read.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn bridge<S>(
    ws: WebSocketStream<S>,
    shv3: bool,
    meter: Option<crate::reader::Meter>,
) -> (BoxRead, BoxWrite)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut pipe_r, mut pipe_w) = tokio::io::split(theirs);
    let (mut sink, mut stream) = ws.split();
    // WebSocket messages in → Block bytes out.
    let reader = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let data = match msg {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Close(_)) | Err(_) => break,
                // Text, ping, pong: nothing for us (pongs are answered by the library).
                Ok(_) => {
                    if let Some(m) = &meter {
                        m.settle();
                    }
                    continue;
                }
            };
            let ok = if shv3 {
                let (hdr, n) = crate::value::uint_bytes(data.len() as u64);
                pipe_w.write_all(&hdr[..n]).await.is_ok() && pipe_w.write_all(&data).await.is_ok()
            } else {
                pipe_w.write_all(&data).await.is_ok()
            };
            if !ok {
                break;
            }
            // Handed on whole: what gathering it held goes back.
            if let Some(m) = &meter {
                m.settle();
            }
        }
        let _ = pipe_w.shutdown().await;
    });
    // Block bytes in → one WebSocket message per frame. This side ends when the
    // connection above is done with the stream (it dropped its halves); it then closes
    // the socket, bounded, and stops the reader, which would otherwise hold the socket
    // for as long as the peer stays silent.
    tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        'pipe: loop {
            while let Some((pos, end)) = crate::codec::next_block(&buf) {
                let frame = if shv3 {
                    buf[pos..end].to_vec()
                } else {
                    buf[..end].to_vec()
                };
                buf.advance(end);
                if sink.send(Message::binary(frame)).await.is_err() {
                    break 'pipe;
                }
            }
            match pipe_r.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
        reader.abort();
    });
    let (r, w) = tokio::io::split(ours);
    (Box::pin(r), Box::pin(w))
}
