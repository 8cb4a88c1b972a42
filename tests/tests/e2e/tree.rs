//! Brokers federated in a tree (top ← site ← edge), all real shvbroker processes on
//! 127.0.0.1: routing down the tree, signals up it, subscription forwarding and replay
//! after a link drops, and access that can only be lowered on the way down.

use std::time::Duration;

use libshv::RpcValue;
use tests::{
    child_broker_config, free_port, next_signal, rpc_error_code, signal_parts, wait_for_child,
    Broker, TestDevice, TIMEOUT,
};

struct Tree {
    top: Broker,
    site: Option<Broker>,
    _edge: Broker,
    site_port: u16,
}

fn start_tree() -> Tree {
    let top = Broker::start(None);
    let site_port = free_port();
    let site_listen = format!("tcp://127.0.0.1:{site_port}");
    let site = Broker::start_with_args(
        Some(&child_broker_config("site", top.port, "site", "")),
        &["--listen", &site_listen],
    );
    let edge = Broker::start(Some(&child_broker_config("edge", site_port, "edge", "")));
    Tree {
        top,
        site: Some(site),
        _edge: edge,
        site_port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_levels_call_signal_and_replay_after_restart() {
    let mut tree = start_tree();
    let device = TestDevice::new();
    let dev = tree
        ._edge
        .mount_device("device", "device", "test/dev", device.clone())
        .await;
    let (top, mut signals) = tree.top.connect("admin", "admin").await;
    wait_for_child(&top, "site", "edge").await;
    wait_for_child(&top, "site/edge/test", "dev").await;

    // A call from the top reaches the device two brokers down, CallerIds intact.
    let v = top
        .call("site/edge/test/dev/number", "get", None)
        .await
        .unwrap();
    assert_eq!(v, RpcValue::from(42));
    let uid = top
        .call("site/edge/test/dev", "userId", None)
        .await
        .unwrap();
    assert_eq!(uid.as_str(), "admin:shvbroker;site;edge", "UserId chain");

    // A signal from the device reaches a top-level subscriber.
    assert!(top
        .subscribe("site/edge/test/**:get:chng", None)
        .await
        .unwrap());
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut n = 100;
    let got = loop {
        // Forwarding to the sub-brokers is asynchronous: poke until a signal arrives.
        n += 1;
        dev.client.call("", "ls", None).await.ok();
        top.call("site/edge/test/dev/number", "set", Some(RpcValue::from(n)))
            .await
            .unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), signals.recv()).await
        {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no signal reached the top"
        );
    };
    let (path, name, _, param) = signal_parts(&got);
    assert_eq!(
        (path.as_str(), name.as_str()),
        ("site/edge/test/dev/number", "chng")
    );
    assert!(param.as_int() > 100);

    // Unsubscribe: no more signals.
    assert!(top.unsubscribe("site/edge/test/**:get:chng").await.unwrap());
    while tokio::time::timeout(Duration::from_millis(300), signals.recv())
        .await
        .is_ok()
    {}
    top.call("site/edge/test/dev/number", "set", Some(RpcValue::from(7)))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), signals.recv())
            .await
            .is_err(),
        "signal delivered after unsubscribe"
    );

    // Restart the site broker: links come back, the subscription is replayed.
    assert!(top
        .subscribe("site/edge/test/**:get:chng", None)
        .await
        .unwrap());
    drop(tree.site.take());
    tree.site = Some(Broker::start_with_args(
        Some(&child_broker_config("site", tree.top.port, "site", "")),
        &["--listen", &format!("tcp://127.0.0.1:{}", tree.site_port)],
    ));
    wait_for_child(&top, "site/edge/test", "dev").await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let got = loop {
        n += 1;
        top.call("site/edge/test/dev/number", "set", Some(RpcValue::from(n)))
            .await
            .unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), signals.recv()).await
        {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "signals did not flow again after the restart"
        );
    };
    assert_eq!(signal_parts(&got).0, "site/edge/test/dev/number");
    let parents = top
        .call("site/edge/.broker", "parents", None)
        .await
        .unwrap();
    assert!(
        parents.to_cpon().contains("\"connected\":true"),
        "{}",
        parents.to_cpon()
    );
    assert!(
        parents.to_cpon().contains("\"reconnects\":1"),
        "{}",
        parents.to_cpon()
    );
    let _ = next_signal; // (kept for symmetry with other tests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_access_level_is_never_raised() {
    let tree = start_tree();
    let _dev = tree
        ._edge
        .mount_device("device", "device", "test/dev", TestDevice::new())
        .await;
    let (viewer, _) = tree.top.connect("viewer", "viewer").await;
    wait_for_child(&viewer, "site/edge/test", "dev").await;
    // Read works, and the device saw Read (8) after two more brokers.
    assert_eq!(
        viewer
            .call("site/edge/test/dev/number", "get", None)
            .await
            .unwrap(),
        RpcValue::from(42)
    );
    let level = viewer
        .call("site/edge/test/dev", "accessLevel", None)
        .await
        .unwrap();
    assert_eq!(level.as_int(), 8);
    // Write is refused although the links log in as admin.
    let code = rpc_error_code(
        viewer
            .call("site/edge/test/dev/number", "set", Some(RpcValue::from(1)))
            .await,
    );
    assert_eq!(code, 2);
    let _ = &tree.site;
}
