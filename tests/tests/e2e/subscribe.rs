//! Subscriptions: subscribe / receive / unsubscribe, TTL expiry, lsmod on mount and
//! unmount. "Not delivered" is always shown by ordering: a marker signal that is still
//! subscribed is emitted after the one that must not arrive, and must come first.

use libshv::shvproto::Value;
use libshv::{Client, RpcValue};
use tests::*;

async fn emit(dev: &DeviceHandle, path: &str, signal: &str, v: i64) {
    dev.client
        .emit(path, signal, "get", Some(RpcValue::from(v)))
        .await
        .expect("emit");
}

async fn subscriptions_cpon(c: &Client) -> String {
    c.call(".broker/currentClient", "subscriptions", None)
        .await
        .expect("subscriptions")
        .to_cpon()
}

#[tokio::test]
async fn subscribe_receive_unsubscribe() {
    let broker = Broker::start(None);
    let dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let (c, mut sigs) = broker.connect("viewer", "viewer").await;

    let r = c
        .call(
            ".broker/currentClient",
            "subscribe",
            Some(RpcValue::from("test/dev1/**:*:chng")),
        )
        .await
        .expect("subscribe");
    assert_eq!(
        r.value,
        Value::Bool(true),
        "subscribe returns true: {}",
        r.to_cpon()
    );
    assert!(c
        .subscribe("test/dev1/**:*:marker", None)
        .await
        .expect("subscribe marker"));
    let subs = subscriptions_cpon(&c).await;
    assert!(subs.contains("test/dev1/**:*:chng"), "{subs}");

    emit(&dev, "number", "chng", 7).await;
    let s = next_signal(&mut sigs).await;
    let (path, name, source, param) = signal_parts(&s);
    assert_eq!(
        (path.as_str(), name.as_str(), source.as_str()),
        ("test/dev1/number", "chng", "get")
    );
    assert_eq!(param.as_int(), 7);

    // A signal emitted as a side effect of a method call (set → chng).
    let (admin, _) = broker.connect("admin", "admin").await;
    admin
        .call("test/dev1/number", "set", Some(RpcValue::from(11)))
        .await
        .unwrap();
    let s = next_signal(&mut sigs).await;
    assert_eq!(signal_parts(&s).0, "test/dev1/number");
    assert_eq!(signal_parts(&s).3.as_int(), 11);

    // Not matching the RI (other signal name): not delivered.
    emit(&dev, "number", "other", 1).await;
    emit(&dev, "number", "marker", 2).await;
    let s = next_signal(&mut sigs).await;
    assert_eq!(
        signal_parts(&s).1,
        "marker",
        "an unsubscribed signal was delivered"
    );

    let r = c
        .unsubscribe("test/dev1/**:*:chng")
        .await
        .expect("unsubscribe");
    assert!(r, "unsubscribe of an existing subscription returns true");
    let r = c
        .unsubscribe("test/dev1/**:*:chng")
        .await
        .expect("second unsubscribe");
    assert!(!r, "unsubscribe of a missing subscription returns false");
    let subs = subscriptions_cpon(&c).await;
    assert!(!subs.contains("test/dev1/**:*:chng"), "{subs}");

    emit(&dev, "number", "chng", 8).await;
    emit(&dev, "number", "marker", 3).await;
    let s = next_signal(&mut sigs).await;
    let (_, name, _, param) = signal_parts(&s);
    assert_eq!(
        (name.as_str(), param.as_int()),
        ("marker", 3),
        "chng delivered after unsubscribe"
    );
}

#[tokio::test]
async fn signals_need_read_access_and_matching_path() {
    let yaml = config_yaml(&[], "").replace(
        "  viewer:\n    access: [{ri: '**:*', grant: rd}]",
        "  viewer:\n    access: [{ri: 'test/open/**:*', grant: rd}, {ri: '.broker/**:*', grant: rd}, \
         {ri: '.app/**:*', grant: rd}, {ri: '**:*', grant: bws}]",
    );
    assert!(yaml.contains("test/open/**"), "{yaml}");
    let broker = Broker::start(Some(&yaml));
    let open = broker
        .mount_device("device", "device", "test/open", TestDevice::new())
        .await;
    let closed = broker
        .mount_device("device", "device", "test/closed", TestDevice::new())
        .await;
    let (c, mut sigs) = broker.connect("viewer", "viewer").await;
    assert!(c
        .subscribe("test/**:*:chng", None)
        .await
        .expect("subscribe"));
    // rd-level signal on a path where the viewer has only bws: not delivered.
    emit(&closed, "number", "chng", 1).await;
    // Once this ping is answered, the broker has routed the signal before it.
    closed.client.call(".app", "ping", None).await.unwrap();
    emit(&open, "number", "chng", 2).await;
    let s = next_signal(&mut sigs).await;
    assert_eq!(
        (signal_parts(&s).0.as_str(), signal_parts(&s).3.as_int()),
        ("test/open/number", 2),
        "a Read signal reached a client with only Browse access"
    );
}

#[tokio::test]
async fn subscription_ttl_expires() {
    let broker = Broker::start(None);
    let dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let (c, mut sigs) = broker.connect("admin", "admin").await;
    assert!(c
        .subscribe("test/dev1/**:*:marker", None)
        .await
        .expect("subscribe marker"));
    let r = c
        .call(
            ".broker/currentClient",
            "subscribe",
            Some(RpcValue::from(vec![
                RpcValue::from("test/dev1/**:*:chng"),
                RpcValue::from(1),
            ])),
        )
        .await
        .expect("subscribe with TTL");
    assert_eq!(r.value, Value::Bool(true), "{}", r.to_cpon());
    wait_for("the TTL subscription to expire", || async {
        let subs = subscriptions_cpon(&c).await;
        (!subs.contains("test/dev1/**:*:chng")).then_some(())
    })
    .await;
    emit(&dev, "number", "chng", 5).await;
    emit(&dev, "number", "marker", 6).await;
    let s = next_signal(&mut sigs).await;
    // Anything before the marker would be a chng from an expired subscription.
    let (_, name, _, param) = signal_parts(&s);
    assert_eq!(
        (name.as_str(), param.as_int()),
        ("marker", 6),
        "signal delivered after TTL expiry"
    );
}

#[tokio::test]
async fn lsmod_on_mount_and_unmount() {
    let broker = Broker::start(None);
    // Keep `test` present so that both mount and unmount change only `test`'s children.
    let _other = broker
        .mount_device("device", "device", "test/other", TestDevice::new())
        .await;
    let (c, mut sigs) = broker.connect("viewer", "viewer").await;
    assert!(c
        .subscribe("**:*:lsmod", None)
        .await
        .expect("subscribe lsmod"));

    let mut dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let s = next_signal(&mut sigs).await;
    let (path, name, _, param) = signal_parts(&s);
    assert_eq!(
        (path.as_str(), name.as_str()),
        ("test", "lsmod"),
        "{}",
        param.to_cpon()
    );
    assert_eq!(param.to_cpon(), r#"{"dev1":true}"#);

    dev.disconnect().await;
    let s = next_signal(&mut sigs).await;
    let (path, name, _, param) = signal_parts(&s);
    assert_eq!(
        (path.as_str(), name.as_str()),
        ("test", "lsmod"),
        "{}",
        param.to_cpon()
    );
    assert_eq!(param.to_cpon(), r#"{"dev1":false}"#);
}

#[tokio::test]
async fn lsmod_for_a_new_subtree() {
    // The first mount under `test` creates `test` itself: the signal is either on the
    // mount's parent (`test`, {"dev1": true}) or, as pyshv does, on the deepest existing
    // node ("", {"test": true}).
    let broker = Broker::start(None);
    let (c, mut sigs) = broker.connect("admin", "admin").await;
    assert!(c
        .subscribe("**:*:lsmod", None)
        .await
        .expect("subscribe lsmod"));
    let _dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let s = next_signal(&mut sigs).await;
    let (path, name, _, param) = signal_parts(&s);
    assert_eq!(name, "lsmod");
    let got = (path.as_str(), param.to_cpon());
    assert!(
        got == ("test", r#"{"dev1":true}"#.to_string())
            || got == ("", r#"{"test":true}"#.to_string()),
        "unexpected lsmod: {got:?}"
    );
}

#[tokio::test]
async fn signals_from_unmounted_clients_are_dropped() {
    let broker = Broker::start(None);
    let dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let (c, mut sigs) = broker.connect("admin", "admin").await;
    assert!(c.subscribe("**:*:*", None).await.expect("subscribe all"));
    let (plain, _) = broker.connect("viewer", "viewer").await;
    plain
        .emit("test/dev1/number", "chng", "get", Some(RpcValue::from(66)))
        .await
        .unwrap();
    // The plain client's ping is answered after its signal was processed.
    plain.call(".app", "ping", None).await.unwrap();
    emit(&dev, "number", "marker", 1).await;
    loop {
        let s = next_signal(&mut sigs).await;
        let (path, name, _, param) = signal_parts(&s);
        assert_ne!(
            param.as_int(),
            66,
            "a signal of an unmounted client was delivered at {path}"
        );
        if name == "marker" {
            break;
        }
    }
}
