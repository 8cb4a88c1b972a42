//! Devices mounted on the broker (by mount point and by device id), called through it
//! by our client and by the `shvcall` binary; access levels; `.broker` client API.

use libshv::shvproto::Value;
use libshv::RpcValue;
use tests::*;

#[tokio::test]
async fn device_by_mount_point_is_called_through_broker() {
    let broker = Broker::start(None);
    let _dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let (c, _) = broker.connect("admin", "admin").await;

    let test = string_list(&c.call("test", "ls", None).await.expect("ls test"));
    assert_eq!(test, vec!["dev1".to_string()]);
    let dev_ls = string_list(&c.call("test/dev1", "ls", None).await.expect("ls test/dev1"));
    assert_eq!(
        dev_ls,
        vec![".app".to_string(), "number".to_string()],
        "ls is forwarded to the device"
    );
    let root = string_list(&c.call("", "ls", None).await.unwrap());
    assert!(
        root.iter().any(|n| n == "test"),
        "root lists the mount's first segment: {root:?}"
    );

    assert_eq!(
        c.call("test/dev1/number", "get", None)
            .await
            .unwrap()
            .as_int(),
        42
    );
    assert_eq!(
        c.call("test/dev1/.app", "name", None)
            .await
            .unwrap()
            .as_str(),
        "testdevice"
    );
    let echo = RpcValue::from_cpon(r#"{"a":[1,2,"x"],"b":i{3:true}}"#).unwrap();
    assert_eq!(
        c.call("test/dev1", "echo", Some(echo.clone()))
            .await
            .unwrap(),
        echo
    );
    assert!(c
        .call("test/dev1/number", "set", Some(RpcValue::from(7)))
        .await
        .unwrap()
        .as_bool());
    assert_eq!(
        c.call("test/dev1/number", "get", None)
            .await
            .unwrap()
            .as_int(),
        7
    );
    // dir is forwarded too.
    let d = dir_names(&c.call("test/dev1/number", "dir", None).await.unwrap());
    assert!(d.iter().any(|n| n == "set"), "{d:?}");
}

#[tokio::test]
async fn device_by_device_id_from_config_mounts() {
    let broker = Broker::start(Some(&config_yaml(&[("dev-abc", "test/byid")], "")));
    let _dev = broker
        .mount_device_id("device", "device", "dev-abc", TestDevice::with_number(5))
        .await;
    let (c, _) = broker.connect("viewer", "viewer").await;
    assert_eq!(
        c.call("test/byid/number", "get", None)
            .await
            .expect("get via deviceId mount")
            .as_int(),
        5
    );
    let test = string_list(&c.call("test", "ls", None).await.unwrap());
    assert_eq!(test, vec!["byid".to_string()]);
}

#[tokio::test]
async fn shvcall_binary_calls_the_device() {
    let broker = Broker::start(None);
    let _dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let admin = broker.url("admin", "admin");

    let out = shvcall(&admin, "test/dev1/number", "get", None).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "42"), "{out:?}");

    let out = shvcall(&admin, "test/dev1/number", "set", Some("13")).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "true"), "{out:?}");
    let out = shvcall(&admin, "test/dev1/number", "get", None).await;
    assert_eq!(out.stdout.trim(), "13", "{out:?}");

    let out = shvcall(&admin, "test/dev1", "echo", Some(r#"[1,"two",{"3":3}]"#)).await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, r#"[1,"two",{"3":3}]"#),
        "{out:?}"
    );

    // An RPC error: exit status 1, message on stderr, nothing on stdout.
    let out = shvcall(
        &broker.url("viewer", "viewer"),
        "test/dev1/number",
        "set",
        Some("1"),
    )
    .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(!out.stderr.is_empty(), "{out:?}");

    // Bad password: a non-zero exit too.
    let out = shvcall(&broker.url("admin", "nope"), ".app", "ping", None).await;
    assert_ne!(out.code, 0, "{out:?}");
}

#[tokio::test]
async fn viewer_cannot_call_write_method() {
    let broker = Broker::start(None);
    let dev = TestDevice::new();
    let _d = broker
        .mount_device("device", "device", "test/dev1", dev.clone())
        .await;
    let (viewer, _) = broker.connect("viewer", "viewer").await;
    assert_eq!(
        viewer
            .call("test/dev1/number", "get", None)
            .await
            .unwrap()
            .as_int(),
        42
    );
    assert_eq!(
        rpc_error_code(
            viewer
                .call("test/dev1/number", "set", Some(RpcValue::from(1)))
                .await
        ),
        METHOD_NOT_FOUND
    );
    assert_eq!(
        *dev.number.lock().unwrap(),
        42,
        "the write must not have happened"
    );
    // The broker tells the device the granted level.
    assert_eq!(
        viewer
            .call("test/dev1", "accessLevel", None)
            .await
            .unwrap()
            .as_int(),
        8
    );
    let (admin, _) = broker.connect("admin", "admin").await;
    assert_eq!(
        admin
            .call("test/dev1", "accessLevel", None)
            .await
            .unwrap()
            .as_int(),
        63
    );
}

#[tokio::test]
async fn access_level_in_request_can_only_be_lowered() {
    let broker = Broker::start(None);
    let _d = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let mut raw = broker.raw().await;
    raw.login("viewer", "viewer", true).await.expect("login");
    // A viewer claiming su gets rd.
    let id = raw.next_id();
    let mut req = libshv::RpcMessage::new_request(id, "test/dev1", "accessLevel", None);
    req.meta.insert(17, RpcValue::from(63));
    req.meta.insert(14, RpcValue::from("su"));
    raw.send(&req).await.unwrap();
    assert_eq!(raw.response(id).await.result().unwrap().as_int(), 8);
    // An admin asking for bws gets bws.
    let mut raw = broker.raw().await;
    raw.login("admin", "admin", true).await.expect("login");
    let id = raw.next_id();
    let mut req = libshv::RpcMessage::new_request(id, "test/dev1", "accessLevel", None);
    req.meta.insert(17, RpcValue::from(1));
    req.meta.insert(14, RpcValue::from("bws"));
    raw.send(&req).await.unwrap();
    assert_eq!(raw.response(id).await.result().unwrap().as_int(), 1);
}

#[tokio::test]
async fn viewer_cannot_disconnect_clients_admin_can() {
    let broker = Broker::start(None);
    let dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let info = dev
        .client
        .call(".broker/currentClient", "info", None)
        .await
        .expect("device info");
    let dev_id = info.get("clientId").expect("clientId in info").as_int();

    let (viewer, _) = broker.connect("viewer", "viewer").await;
    assert_eq!(
        rpc_error_code(
            viewer
                .call(".broker", "disconnectClient", Some(RpcValue::from(dev_id)))
                .await
        ),
        METHOD_NOT_FOUND
    );
    assert!(!dev.client.is_closed());
    let (admin, _) = broker.connect("admin", "admin").await;
    admin
        .call(".broker", "disconnectClient", Some(RpcValue::from(dev_id)))
        .await
        .expect("admin may disconnect a client");
    tokio::time::timeout(TIMEOUT, dev.client.closed())
        .await
        .expect("the device connection must be closed by disconnectClient");
    wait_for("the mount to disappear", || async {
        let r = admin.call("test", "ls", None).await;
        (!matches!(&r, Ok(v) if string_list(v).iter().any(|n| n == "dev1"))).then_some(())
    })
    .await;
    assert_served(&admin).await;
}

#[tokio::test]
async fn broker_client_api_reaches_the_device() {
    let broker = Broker::start(None);
    let dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let info = dev
        .client
        .call(".broker/currentClient", "info", None)
        .await
        .expect("device info");
    let dev_id = info.get("clientId").expect("clientId").as_int();
    let (admin, _) = broker.connect("admin", "admin").await;

    let mounts = admin.call(".broker", "mounts", None).await.expect("mounts");
    assert!(
        string_list(&mounts).iter().any(|m| m == "test/dev1"),
        "{}",
        mounts.to_cpon()
    );

    let mci = admin
        .call(
            ".broker",
            "mountedClientInfo",
            Some(RpcValue::from("test/dev1")),
        )
        .await
        .expect("mountedClientInfo");
    assert_eq!(
        mci.get("clientId").map(|v| v.as_int()),
        Some(dev_id),
        "{}",
        mci.to_cpon()
    );

    let ci = admin
        .call(".broker", "clientInfo", Some(RpcValue::from(dev_id)))
        .await
        .expect("clientInfo");
    assert_eq!(
        ci.get("userName")
            .map(|v| v.as_str().to_string())
            .as_deref(),
        Some("device"),
        "{}",
        ci.to_cpon()
    );

    let client_ls = string_list(
        &admin
            .call(".broker/client", "ls", None)
            .await
            .expect("ls .broker/client"),
    );
    assert!(
        client_ls.iter().any(|n| *n == dev_id.to_string()),
        "{client_ls:?}"
    );

    let path = format!(".broker/client/{dev_id}/.app");
    assert_eq!(
        admin
            .call(&path, "name", None)
            .await
            .expect("via .broker/client")
            .as_str(),
        "testdevice"
    );
    let path = format!(".broker/client/{dev_id}/number");
    assert_eq!(admin.call(&path, "get", None).await.unwrap().as_int(), 42);
}

#[tokio::test]
async fn device_cannot_mount_outside_its_role() {
    let broker = Broker::start(None);
    let mut c = broker.config("device", "device");
    c.login.mount_point = Some("forbidden/x".into());
    let r = DeviceHandle::connect(c, Some(TestDevice::new())).await;
    let (admin, _) = broker.connect("admin", "admin").await;
    let root = string_list(&admin.call("", "ls", None).await.unwrap());
    assert!(
        !root.iter().any(|n| n == "forbidden"),
        "device user mounted outside test/**: {root:?}"
    );
    assert_ne!(
        admin
            .call("forbidden/x/number", "get", None)
            .await
            .ok()
            .map(|v| v.as_int()),
        Some(42),
        "the forbidden mount is reachable"
    );
    drop(r);
}

#[tokio::test]
async fn mount_points_may_not_nest_or_shadow() {
    let broker = Broker::start(None);
    let _a = broker
        .mount_device("admin", "admin", "test/dev1", TestDevice::with_number(1))
        .await;
    // Nested under an existing mount: must not become reachable.
    let mut c = broker.config("admin", "admin");
    c.login.mount_point = Some("test/dev1/sub".into());
    let nested = DeviceHandle::connect(c, Some(TestDevice::with_number(99))).await;
    // Shadowing .broker: must not become reachable either.
    let mut c = broker.config("admin", "admin");
    c.login.mount_point = Some(".broker/x".into());
    let shadow = DeviceHandle::connect(c, Some(TestDevice::with_number(98))).await;

    let (admin, _) = broker.connect("admin", "admin").await;
    assert_eq!(
        admin
            .call("test/dev1/number", "get", None)
            .await
            .unwrap()
            .as_int(),
        1
    );
    assert_ne!(
        admin
            .call("test/dev1/sub/number", "get", None)
            .await
            .ok()
            .map(|v| v.as_int()),
        Some(99),
        "a mount nested in another one was accepted"
    );
    assert_ne!(
        admin
            .call(".broker/x/number", "get", None)
            .await
            .ok()
            .map(|v| v.as_int()),
        Some(98),
        "a mount shadowing .broker was accepted"
    );
    let b = string_list(&admin.call(".broker", "ls", None).await.unwrap());
    assert!(!b.iter().any(|n| n == "x"), "{b:?}");
    drop((nested, shadow));
}

#[tokio::test]
async fn concurrent_callers_get_their_own_responses() {
    // Two callers in parallel get their own answers (response routing by CallerIds).
    let broker = Broker::start(None);
    let _d = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let (a, _) = broker.connect("admin", "admin").await;
    let (b, _) = broker.connect("viewer", "viewer").await;
    let mut tasks = Vec::new();
    for i in 0..50i64 {
        let (a, b) = (a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            let x = a
                .call("test/dev1", "echo", Some(RpcValue::from(i)))
                .await
                .unwrap();
            let y = b
                .call("test/dev1", "echo", Some(RpcValue::from(1000 + i)))
                .await
                .unwrap();
            assert_eq!((x.as_int(), y.as_int()), (i, 1000 + i));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let cids = a.call("test/dev1", "callerIds", None).await.unwrap();
    assert!(
        matches!(cids.value, Value::Int(_))
            || matches!(&cids.value, Value::List(l) if l.len() == 1),
        "one broker hop pushes exactly one caller id: {}",
        cids.to_cpon()
    );
}
