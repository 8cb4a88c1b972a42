//! `ws://`: WebSocket with the `shv3` subprotocol (one SHV message per binary message),
//! and without it (Block frames inside messages, as older peers send).

use futures::{SinkExt, StreamExt};
use tests::*;
use tokio_tungstenite::tungstenite::Message;

/// A broker listening on `ws://` (and TCP for the harness); returns it and the port.
fn ws_broker() -> (Broker, u16) {
    let broker = Broker::start_with_args(
        None,
        &[
            "--listen",
            "ws://127.0.0.1:0",
            "--listen",
            "tcp://127.0.0.1:0",
        ],
    );
    let port = broker.listen_port("ws");
    (broker, port)
}

#[tokio::test]
async fn shvcall_over_websocket() {
    let (_broker, port) = ws_broker();
    let url = format!("ws://admin@127.0.0.1:{port}/?password=admin");
    let out = shvcall(&url, ".app", "shvVersionMajor", None).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "3"), "{out:?}");
}

/// A client that offers no subprotocol sends and gets Block frames in binary messages.
#[tokio::test]
async fn websocket_without_subprotocol_carries_block_frames() {
    let (_broker, port) = ws_broker();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/"), tcp)
        .await
        .expect("WebSocket handshake");
    assert!(resp.headers().get("Sec-WebSocket-Protocol").is_none());
    let hello = libshv::RpcMessage::new_request(5, "", "hello", None).to_frame();
    ws.send(Message::binary(libshv::codec::encode_frame(&hello)))
        .await
        .unwrap();
    let bytes = next_binary(&mut ws).await;
    let mut codec = libshv::codec::BlockCodec::new(1 << 20);
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    use tokio_util::codec::Decoder;
    match codec.decode(&mut buf).unwrap() {
        Some(libshv::codec::Incoming::Frame(f)) => {
            let m = libshv::RpcMessage::from_frame(&f).unwrap();
            assert!(m.result().unwrap().get("nonce").is_some());
        }
        other => panic!("not a Block frame: {other:?}"),
    }
}

/// Plain SHV over TCP to a WebSocket port: the handshake fails, the connection is
/// closed, the broker serves on.
#[tokio::test]
async fn plain_tcp_to_a_websocket_port_is_closed() {
    let (mut broker, port) = ws_broker();
    assert_plain_hello_closed(port).await;
    broker.assert_running();
    let url = format!("ws://admin@127.0.0.1:{port}/?password=admin");
    assert_eq!(shvcall(&url, ".app", "ping", None).await.code, 0);
}

/// With `shv3` offered and accepted, a binary message is one SHV message (format byte
/// and ChainPack), without a length prefix.
#[tokio::test]
async fn websocket_shv3_carries_one_message_per_binary_message() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (_broker, port) = ws_broker();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut req = format!("ws://127.0.0.1:{port}/")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "shv3".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        resp.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "shv3"
    );
    let hello = libshv::RpcMessage::new_request(5, "", "hello", None).to_frame();
    let mut msg = vec![libshv::frame::FORMAT_CHAINPACK];
    msg.extend(hello.payload());
    ws.send(Message::binary(msg)).await.unwrap();
    let bytes = next_binary(&mut ws).await;
    assert_eq!(bytes[0], libshv::frame::FORMAT_CHAINPACK);
    let f = libshv::RpcFrame::parse(bytes.slice(1..)).expect("one ChainPack message");
    assert_eq!(f.request_id(), Some(5));
}

/// The next binary WebSocket message (within [`TIMEOUT`]).
async fn next_binary<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> bytes::Bytes
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let answer = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("an answer")
        .expect("a message")
        .expect("no error");
    match answer {
        Message::Binary(bytes) => bytes,
        other => panic!("not binary: {other:?}"),
    }
}
