//! WebSocket (`ws://HOST:PORT[/PATH]`): with the `shv3` subprotocol one SHV message
//! (format byte and ChainPack) per binary WebSocket message; without it, Block frames
//! inside binary messages, as older peers send. [`connect`] and [`accept`] turn a
//! WebSocket into a Block-framed byte stream (direct `AsyncRead`/`AsyncWrite` layers),
//! so that everything above the framing stays as it is.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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

/// Bytes of whole frames a writer holds for a sink that is not ready before it stops
/// accepting more (back-pressure to the connection above).
const WRITE_HIGH: usize = 256 * 1024;

/// The two halves, as direct layers over the WebSocket: no tasks and no pipe, so a frame
/// crosses with no wake-up of its own and no copy into a pipe.
fn bridge<S>(
    ws: WebSocketStream<S>,
    shv3: bool,
    meter: Option<crate::reader::Meter>,
) -> (BoxRead, BoxWrite)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let read = WsRead {
        stream,
        shv3,
        meter,
        head: Bytes::new(),
        body: Bytes::new(),
        done: false,
    };
    let write = WsWrite {
        sink,
        shv3,
        buf: BytesMut::with_capacity(64 * 1024),
        closing: None,
    };
    (Box::pin(read), Box::pin(write))
}

/// WebSocket messages in, Block bytes out: with `shv3` each message gets its length
/// prefix, else a message already holds Block frames.
struct WsRead<S> {
    stream: SplitStream<WebSocketStream<S>>,
    shv3: bool,
    meter: Option<crate::reader::Meter>,
    /// What is left of the current message's length prefix, then of its bytes.
    head: Bytes,
    body: Bytes,
    /// The peer closed (or the socket failed): EOF from now on.
    done: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsRead<S> {
    fn settle(&self) {
        if let Some(m) = &self.meter {
            m.settle();
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsRead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.head.is_empty() || !this.body.is_empty() {
                for part in [&mut this.head, &mut this.body] {
                    let n = part.len().min(out.remaining());
                    out.put_slice(&part[..n]);
                    part.advance(n);
                }
                // Handed on whole: what gathering it held goes back.
                if this.head.is_empty() && this.body.is_empty() {
                    this.settle();
                }
                return Poll::Ready(Ok(()));
            }
            if this.done {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.stream.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(b))) => {
                    if this.shv3 {
                        let (hdr, n) = crate::value::uint_bytes(b.len() as u64);
                        this.head = Bytes::copy_from_slice(&hdr[..n]);
                    }
                    this.body = b;
                    if this.head.is_empty() && this.body.is_empty() {
                        this.settle();
                    }
                }
                // A close, or a broken socket: the end of the stream, as for TCP.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => this.done = true,
                // Text, ping, pong: nothing for us (pongs are answered by the library).
                Some(Ok(_)) => this.settle(),
            }
        }
    }
}

/// Block bytes in, one WebSocket message per frame out (with `shv3` without the length
/// prefix). Bytes are gathered until a frame is whole.
struct WsWrite<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
    shv3: bool,
    buf: BytesMut,
    /// Set by the first `poll_shutdown`: how long the close may still take.
    closing: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsWrite<S> {
    /// Hands every whole frame in `buf` to the sink; Pending while the sink is not ready.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((pos, end)) = crate::codec::next_block(&self.buf) {
            ready!(self.sink.poll_ready_unpin(cx)).map_err(io_err)?;
            let mut frame = self.buf.split_to(end);
            if self.shv3 {
                frame.advance(pos);
            }
            self.sink
                .start_send_unpin(Message::binary(frame.freeze()))
                .map_err(io_err)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsWrite<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match this.poll_drain(cx) {
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            // Whole frames wait for the sink: take no more until it moves. (An
            // incomplete frame alone never blocks: it needs these very bytes.)
            Poll::Pending if this.buf.len() >= WRITE_HIGH => return Poll::Pending,
            _ => {}
        }
        this.buf.extend_from_slice(data);
        // Start sending what is now whole; an error shows at the next call.
        let _ = this.poll_drain(cx);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        this.sink.poll_flush_unpin(cx).map_err(io_err)
    }

    /// Sends what is whole and a Close; a peer that does not read gets [`CLOSE_GRACE`].
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let grace = this
            .closing
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_GRACE)));
        if grace.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        this.sink.poll_close_unpin(cx).map_err(io_err)
    }
}
