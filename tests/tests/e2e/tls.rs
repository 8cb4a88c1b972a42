//! `ssl://`: Block framing over TLS, for the broker's listeners and every client, with a
//! test CA made by rcgen: verified connections, a client without the CA refused with a
//! clear message, plain TCP to a TLS port, client certificates with `verify=true`, and
//! pySHV over TLS.

use tests::pki::Pki;
use tests::*;

/// A broker listening on TLS (and TCP for the harness); returns it and the TLS port.
fn tls_broker(pki: &Pki, extra: &str) -> (Broker, u16) {
    let listen = pki.listen(extra);
    let broker = Broker::start_with_args(
        None,
        &["--listen", &listen, "--listen", "tcp://127.0.0.1:0"],
    );
    let port = broker.listen_port("ssl");
    (broker, port)
}

fn ssl_url(port: u16, user: &str, options: &str) -> String {
    format!("ssl://{user}@127.0.0.1:{port}?password={user}{options}")
}

#[tokio::test]
async fn shvcall_over_tls_with_the_ca() {
    let pki = Pki::new();
    let (broker, port) = tls_broker(&pki, "");
    let url = ssl_url(port, "admin", &format!("&ca={}", pki.file("ca.pem")));
    let out = shvcall(&url, ".app", "shvVersionMajor", None).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "3"), "{out:?}");
    // shvcall exits without a TLS close_notify, as most clients do: a close between
    // frames, not a stream error in the broker's log.
    broker.wait_log("disconnected");
    assert!(
        !broker.stderr().contains("stream error"),
        "{}",
        broker.stderr()
    );
}

#[tokio::test]
async fn a_client_without_the_ca_is_refused_clearly() {
    let pki = Pki::new();
    let (mut broker, port) = tls_broker(&pki, "");
    let out = shvcall(&ssl_url(port, "admin", ""), ".app", "ping", None).await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("certificate") && out.stderr.contains("UnknownIssuer"),
        "{out:?}"
    );
    broker.assert_running();
}

/// Plain TCP (an SHV hello) to the TLS port: the handshake fails, the connection is
/// closed, the broker serves on.
#[tokio::test]
async fn plain_tcp_to_a_tls_port_is_closed() {
    let pki = Pki::new();
    let (mut broker, port) = tls_broker(&pki, "");
    assert_plain_hello_closed(port).await;
    broker.assert_running();
    let url = ssl_url(port, "admin", &format!("&ca={}", pki.file("ca.pem")));
    let out = shvcall(&url, ".app", "ping", None).await;
    assert_eq!(out.code, 0, "{out:?}");
    broker.wait_log("TLS handshake failed");
}

/// `verify=true` on the listener: a client without a certificate signed by the CA is
/// refused; one with it logs in.
#[tokio::test]
async fn verify_true_requires_a_client_certificate() {
    let pki = Pki::new();
    let (_broker, port) = tls_broker(&pki, &format!("&ca={}&verify=true", pki.file("ca.pem")));
    let ca = format!("&ca={}", pki.file("ca.pem"));
    let out = shvcall(&ssl_url(port, "admin", &ca), ".app", "ping", None).await;
    assert_ne!(
        out.code, 0,
        "a client without a certificate got in: {out:?}"
    );
    let with_cert = format!(
        "{ca}&cert={}&key={}",
        pki.file("client.pem"),
        pki.file("client.key")
    );
    let out = shvcall(&ssl_url(port, "admin", &with_cert), ".app", "ping", None).await;
    assert_eq!(out.code, 0, "{out:?}");
}

/// pySHV logs in to our broker over `ssl://` with `ca`.
#[tokio::test]
async fn pyshv_client_over_tls() {
    let pki = Pki::new();
    let (_broker, port) = tls_broker(&pki, "");
    let url = format!(
        "ssl://127.0.0.1:{port}?user=admin&password=admin&ca={}",
        pki.file("ca.pem")
    );
    let mut py = PyProc::spawn("py_call.py", &[&url, ".app", "shvVersionMajor"]);
    assert_eq!(py.line().await, "RESULT 3", "{}", py.stderr());
    assert_eq!(py.line().await, "DONE");
    assert_eq!(py.wait().await, 0, "{}", py.stderr());
}

/// Our shvcall talks to pySHV's broker listening on `ssl://`.
#[tokio::test]
async fn shvcall_to_pyshv_broker_over_tls() {
    let pki = Pki::new();
    let port = free_port();
    let listen = format!(
        "ssl://127.0.0.1:{port}?ca={}&cert={}&key={}",
        pki.file("ca.pem"),
        pki.file("server.pem"),
        pki.file("server.key")
    );
    let _py = PyBroker::start(&pyshv_admin_config("pytls", &listen), port);
    let url = ssl_url(port, "admin", &format!("&ca={}", pki.file("ca.pem")));
    let out = shvcall(&url, ".app", "shvVersionMajor", None).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "3"), "{out:?}");
}
