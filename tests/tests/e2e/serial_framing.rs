//! `tcps://`: the Serial framing (STX/ETX, escapes) over TCP, as pySHV speaks it, for
//! the broker's listeners and our clients.

use tests::*;

/// A broker listening on `tcps://` (and TCP for the harness); returns it and the port.
fn tcps_broker() -> (Broker, u16) {
    let broker = Broker::start_with_args(
        None,
        &[
            "--listen",
            "tcps://127.0.0.1:0",
            "--listen",
            "tcp://127.0.0.1:0",
        ],
    );
    let port = broker.listen_port("tcps");
    (broker, port)
}

#[tokio::test]
async fn shvcall_over_tcps() {
    let (_broker, port) = tcps_broker();
    let url = format!("tcps://admin@127.0.0.1:{port}?password=admin");
    let out = shvcall(&url, ".app", "shvVersionMajor", None).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "3"), "{out:?}");
    // A larger parameter, with every byte the framing escapes, comes back intact.
    let param = format!("b\"{}\"", "\\a2\\a3\\a4\\aa".repeat(5000));
    let out = shvcall(&url, ".app", "ping", Some(&param)).await;
    assert_eq!(out.code, 0, "{out:?}");
}

#[tokio::test]
async fn pyshv_client_over_tcps() {
    let (_broker, port) = tcps_broker();
    let url = format!("tcps://127.0.0.1:{port}?user=admin&password=admin");
    let mut py = PyProc::spawn("py_call.py", &[&url, ".app", "shvVersionMajor"]);
    assert_eq!(py.line().await, "RESULT 3", "{}", py.stderr());
    assert_eq!(py.line().await, "DONE");
    assert_eq!(py.wait().await, 0, "{}", py.stderr());
}

/// Garbage, an aborted message and a Block frame on a `tcps://` port are skipped; the
/// connection then logs in normally and the broker serves others.
#[tokio::test]
async fn serial_garbage_is_skipped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut broker, port) = tcps_broker();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let hello = RpcMessageBytes::hello();
    let mut junk = vec![0x00, 0x41, 0xff];
    junk.extend([
        libshv::transport::serial::STX,
        1,
        2,
        libshv::transport::serial::ATX,
    ]);
    junk.extend(frame_bytes(1, &hello));
    junk.extend(libshv::transport::serial::encode(
        &[&[1u8][..], &hello].concat(),
        false,
    ));
    s.write_all(&junk).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
        .await
        .expect("an answer to the hello")
        .unwrap();
    assert!(
        n > 0 && buf[0] == libshv::transport::serial::STX,
        "{:x?}",
        &buf[..n]
    );
    broker.assert_running();
    let url = format!("tcps://admin@127.0.0.1:{port}?password=admin");
    assert_eq!(shvcall(&url, ".app", "ping", None).await.code, 0);
}

/// A ChainPack `hello` request (meta and body), without any framing.
struct RpcMessageBytes;

impl RpcMessageBytes {
    fn hello() -> Vec<u8> {
        let f = libshv::RpcMessage::new_request(1, "", "hello", None).to_frame();
        f.payload()
    }
}
