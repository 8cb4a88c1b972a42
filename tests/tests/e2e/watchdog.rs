//! The idle watchdog: a client that asked for a short idleWatchDogTimeOut and then
//! stays silent is disconnected; others are not.

use tests::*;

#[tokio::test]
async fn silent_client_is_disconnected_by_its_idle_watchdog() {
    let broker = Broker::start(None);
    let (observer, _) = broker.connect("admin", "admin").await;

    let mut cfg = broker.config("viewer", "viewer");
    cfg.login.idle_timeout = Some(2);
    cfg.heartbeat = None; // silence
    let (silent, _) = broker
        .try_connect(&cfg, None)
        .await
        .expect("login with idleWatchDogTimeOut");
    assert_served(&silent).await;
    tokio::time::timeout(TIMEOUT, silent.closed())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "a silent client with idleWatchDogTimeOut 2 s was not disconnected in {TIMEOUT:?}"
            )
        });

    // The observer (default 180 s watchdog) is still there.
    assert!(!observer.is_closed());
    assert_served(&observer).await;
}

#[tokio::test]
async fn talking_client_survives_its_idle_watchdog() {
    let broker = Broker::start(None);
    let mut cfg = broker.config("viewer", "viewer");
    cfg.login.idle_timeout = Some(6);
    cfg.heartbeat = None;
    let (client, _) = broker.try_connect(&cfg, None).await.expect("login");
    // Keep talking (every 500 ms) for longer than the 6 s watchdog; each call must work.
    for _ in 0..16 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        client
            .call(".app", "ping", None)
            .await
            .expect("a client that keeps sending frames must not be cut off");
    }
    assert!(!client.is_closed());
}

#[tokio::test]
async fn device_with_short_watchdog_is_unmounted() {
    let broker = Broker::start(None);
    let (observer, _) = broker.connect("admin", "admin").await;
    let mut cfg = broker.config("device", "device");
    cfg.login.idle_timeout = Some(2);
    cfg.heartbeat = None;
    cfg.login.mount_point = Some("test/sleepy".into());
    let dev = DeviceHandle::connect(cfg, Some(TestDevice::new()))
        .await
        .expect("device login");
    assert_eq!(
        observer
            .call("test/sleepy/number", "get", None)
            .await
            .unwrap()
            .as_int(),
        42
    );
    tokio::time::timeout(TIMEOUT, dev.client.closed())
        .await
        .expect("silent device not disconnected");
    wait_for("the mount to disappear", || async {
        let r = observer.call("test/sleepy/number", "get", None).await;
        r.is_err().then_some(())
    })
    .await;
    assert_served(&observer).await;
}
