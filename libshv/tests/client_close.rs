//! `Client::close`: the connection ends from the client's side and nothing of it keeps
//! running, seen from a plain TcpListener that plays the broker (hello and login, then
//! whatever the test needs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use libshv::client::{Client, ClientConfig, RequestHandler};
use libshv::codec::Incoming;
use libshv::transport::{framed, FrameReader, FrameWriter};
use libshv::{ClientError, RpcError, RpcFrame, RpcMessage, RpcUrl, RpcValue};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Long enough for a loaded CI machine, short enough for a hang to fail the test.
const WAIT: Duration = Duration::from_secs(10);

/// The broker's side of one connection.
struct Broker {
    reader: FrameReader,
    writer: FrameWriter,
}

impl Broker {
    async fn next(&mut self) -> Option<RpcFrame> {
        match tokio::time::timeout(WAIT, self.reader.next()).await {
            Ok(Some(Ok(Incoming::Frame(f)))) => Some(f),
            Ok(None) => None,
            Ok(Some(other)) => panic!("not a frame: {other:?}"),
            Err(_) => panic!("nothing from the client within {WAIT:?}"),
        }
    }

    async fn answer(&mut self, request: &RpcFrame, result: RpcValue) {
        let resp = RpcMessage::response_to(&request.meta).with_result(result);
        self.writer.send(resp.into_frame()).await.unwrap();
    }
}

/// A listener, and a client logged in to it (the broker's side answers hello and login).
async fn connect(handler: Option<Arc<dyn RequestHandler>>) -> (Client, Broker) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let broker = async {
        let (socket, _) = listener.accept().await.unwrap();
        let (r, w) = socket.into_split();
        let (reader, writer) = framed(Box::pin(r), Box::pin(w), 1 << 20);
        let mut b = Broker { reader, writer };
        let hello = b.next().await.expect("hello");
        assert_eq!(hello.method(), Some("hello"));
        let mut nonce = libshv::shvproto::Map::new();
        nonce.insert("nonce".into(), RpcValue::from("123"));
        b.answer(&hello, RpcValue::from(nonce)).await;
        let login = b.next().await.expect("login");
        assert_eq!(login.method(), Some("login"));
        b.answer(&login, RpcValue::null()).await;
        b
    };
    let url = RpcUrl::parse(&format!("tcp://test@127.0.0.1:{port}?password=test")).unwrap();
    let config = ClientConfig::from_url(url);
    let (client, broker) = tokio::join!(Client::connect(&config, handler), broker);
    let (client, _signals) = client.unwrap();
    (client, broker)
}

/// Closes `client`; a hang fails the test.
async fn close(client: &Client) {
    tokio::time::timeout(WAIT, client.close())
        .await
        .expect("close returns");
}

/// After `close` the broker reads EOF, and the client's socket is gone, not only shut
/// down for writing: what the broker writes then is refused (RST, then EPIPE), where a
/// half-closed socket would take it in.
#[tokio::test]
async fn close_closes_the_socket() {
    let (client, mut broker) = connect(None).await;
    close(&client).await;
    assert!(client.is_closed());
    assert!(broker.next().await.is_none(), "EOF after close");
    let mut raw = broker.writer.into_inner();
    let refused = async {
        loop {
            if raw.write_all(b"\x01\x00").await.is_err() || raw.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, refused)
        .await
        .expect("the client's socket refuses data after close");
    // Closed for every clone, and again harmlessly.
    close(&client.clone()).await;
    let e = client.call("", "ls", None).await.unwrap_err();
    assert!(matches!(e, ClientError::Disconnected), "{e}");
}

/// Frames sent before `close` still go out, ahead of the EOF.
#[tokio::test]
async fn what_was_sent_before_close_is_written() {
    let (client, mut broker) = connect(None).await;
    let msg = RpcMessage::new_signal("x", "chng", "get", Some(RpcValue::from(7)));
    client.send(msg).await.unwrap();
    close(&client).await;
    let f = broker.next().await.expect("the signal");
    assert!(f.is_signal(), "{f:?}");
    assert!(broker.next().await.is_none(), "then EOF");
}

/// A call waiting for an answer that never comes fails at once when the client closes.
#[tokio::test]
async fn a_waiting_call_fails_on_close() {
    let (client, mut broker) = connect(None).await;
    let caller = client.clone();
    let call = tokio::spawn(async move { caller.call("", "ls", None).await });
    let request = broker.next().await.expect("the call");
    assert_eq!(request.method(), Some("ls"));
    close(&client).await;
    let r = tokio::time::timeout(WAIT, call)
        .await
        .expect("the call ends");
    assert!(matches!(r.unwrap(), Err(ClientError::Disconnected)));
}

/// A handler that never returns is no reason for the connection to stay: `close` ends
/// its task too.
#[tokio::test]
async fn close_aborts_the_requests_being_served() {
    struct Hangs(Arc<AtomicBool>);
    /// Dropped with the handler's future, i.e. when its task is aborted.
    struct Gone(Arc<AtomicBool>);
    impl Drop for Gone {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    #[async_trait::async_trait]
    impl RequestHandler for Hangs {
        async fn handle(
            &self,
            _: &Client,
            request: RpcMessage,
        ) -> Option<Result<RpcValue, RpcError>> {
            let method = request.meta.get(libshv::meta::tag::METHOD);
            if method.map(|m| m.as_str()) != Some("hang") {
                return Some(Ok(RpcValue::null()));
            }
            let _gone = Gone(self.0.clone());
            std::future::pending::<()>().await;
            None
        }
    }
    let gone = Arc::new(AtomicBool::new(false));
    let (client, mut broker) = connect(Some(Arc::new(Hangs(gone.clone())))).await;
    let request = RpcMessage::new_request(5, "", "hang", None).into_frame();
    broker.writer.send(request).await.unwrap();
    // The request is being served once the client answers a later one (the reader
    // spawns the handlers in order).
    broker
        .writer
        .send(RpcMessage::new_request(6, "", "dir", None).into_frame())
        .await
        .unwrap();
    let _ = broker.next().await;
    close(&client).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !gone.load(Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handler still runs"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(broker.next().await.is_none());
}
