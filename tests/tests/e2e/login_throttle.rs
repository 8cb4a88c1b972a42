//! Failed logins are throttled per source address too: a new connection per guess does
//! not reset the delay.

use std::time::{Duration, Instant};

use tests::Broker;

#[tokio::test]
async fn new_connections_do_not_reset_the_login_delay() {
    let broker = Broker::start(None);
    let mut took = Vec::new();
    for _ in 0..12 {
        let mut raw = broker.raw().await;
        let started = Instant::now();
        let r = raw.login("admin", "wrong", true).await;
        took.push(started.elapsed());
        assert_eq!(r.expect_err("wrong password").code, 8);
    }
    // Ordering only: the 12th guess from this address waits clearly longer than the first.
    assert!(
        took[11] > took[0] + Duration::from_millis(500),
        "delays did not grow across connections: {took:?}"
    );
    // A right password still gets in (after its own delay-free check).
    let (client, _) = broker.connect("admin", "admin").await;
    client.call(".app", "ping", None).await.unwrap();
}
