//! Device autosetup (config `autosetup`): where devices that log in with a deviceId
//! are mounted, who may claim which deviceId, and the subscriptions made for them.

use libshv::RpcValue;
use tests::*;

const CONFIG: &str = "name: testbroker
users:
  admin: {password: admin, roles: [admin]}
  test: {password: test, roles: [test, browse]}
  nobody: {password: nobody, roles: [nobody]}
roles:
  admin: {access: [{ri: '**:*', grant: dev}], mount_points: ['**']}
  test: {access: [{ri: 'test/**:*', grant: cmd}], mount_points: ['test/**']}
  browse: {access: [{ri: '**:ls', grant: bws}]}
  nobody: {}
autosetup:
  - {device_id: history, roles: [admin], mount_point: .history, subscriptions: ['test/**:*:*']}
  - {device_id: '?*', roles: [admin, test], mount_point: 'test/%d%i'}
";

async fn device(broker: &Broker, user: &str, device_id: &str, mount: Option<&str>) -> DeviceHandle {
    let mut c = broker.config(user, user);
    c.login.device_id = Some(device_id.into());
    c.login.mount_point = mount.map(str::to_string);
    DeviceHandle::connect(c, Some(TestDevice::new()))
        .await
        .expect("device login")
}

async fn mount_of(d: &DeviceHandle) -> RpcValue {
    let info = d
        .client
        .call(".broker/currentClient", "info", None)
        .await
        .expect("info");
    info.get("mountPoint")
        .cloned()
        .unwrap_or_else(RpcValue::null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_placed_by_the_first_matching_rule() {
    let broker = Broker::start(Some(CONFIG));
    let a = device(&broker, "test", "foo", None).await;
    let b = device(&broker, "test", "foo", None).await;
    let c = device(&broker, "admin", "foo", None).await;
    assert_eq!(mount_of(&a).await.as_str(), "test/foo");
    assert_eq!(mount_of(&b).await.as_str(), "test/foo1");
    assert_eq!(mount_of(&c).await.as_str(), "test/foo2");
    // The history rule is for admins; its subscriptions are made for the device.
    let h = device(&broker, "admin", "history", None).await;
    assert_eq!(mount_of(&h).await.as_str(), ".history");
    let subs = h
        .client
        .call(".broker/currentClient", "subscriptions", None)
        .await
        .unwrap();
    assert!(subs.get("test/**:*:*").is_some(), "{}", subs.to_cpon());
    let t = device(&broker, "test", "history", None).await;
    assert_eq!(mount_of(&t).await.as_str(), "test/history");
    // No rule for this user: logged in, not mounted; an empty deviceId matches no `?*`.
    let n = device(&broker, "nobody", "foo", None).await;
    assert!(mount_of(&n).await.is_null());
    let e = device(&broker, "test", "", None).await;
    assert!(mount_of(&e).await.is_null());
    // A mount point the device asks for wins over the rule.
    let x = device(&broker, "test", "bar", Some("test/explicit")).await;
    assert_eq!(mount_of(&x).await.as_str(), "test/explicit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_device_gets_the_signals_of_its_subscription() {
    let broker = Broker::start(Some(CONFIG));
    let mut h = device(&broker, "admin", "history", None).await;
    let mut signals = h.take_signals();
    let dev = broker
        .mount_device("test", "test", "test/dev", TestDevice::new())
        .await;
    dev.client
        .emit("number", "chng", "get", Some(RpcValue::from(3)))
        .await
        .unwrap();
    loop {
        let s = next_signal(&mut signals).await;
        if signal_parts(&s).0 == "test/dev/number" {
            break;
        }
    }
}

#[tokio::test]
async fn autosetup_rules_are_checked_when_the_config_is_loaded() {
    for (bad, why) in [
        (
            "autosetup: [{device_id: x, roles: [nope], mount_point: a}]\n",
            "unknown role",
        ),
        (
            "roles: {r: {}}\nautosetup: [{device_id: x, roles: [r], mount_point: .app/%d}]\n",
            "shadow",
        ),
        (
            "roles: {r: {}}\nautosetup: [{device_id: x, roles: [r], mount_point: 'a/../%d'}]\n",
            "invalid mount point",
        ),
        (
            "autosetup: [{device_id: x, roles: [], mount_point: a}]\n",
            "at least one role",
        ),
    ] {
        let dir = TempDir::new("autosetup");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, bad).unwrap();
        let out = run_bin(
            "shvbroker",
            &["-c", path.to_str().unwrap(), "--print-config"],
        )
        .await;
        assert_ne!(out.code, 0, "{bad}");
        assert!(out.stderr.contains(why), "{bad}: {}", out.stderr);
    }
}
