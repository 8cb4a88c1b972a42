//! `ls` / `dir` on the broker's own tree, `.app` and `.broker` methods.

use libshv::shvproto::Value;
use libshv::RpcValue;
use tests::*;

fn has(list: &[String], name: &str) -> bool {
    list.iter().any(|n| n == name)
}

#[tokio::test]
async fn ls_root_app_broker_current_client() {
    let broker = Broker::start(None);
    let (c, _) = broker.connect("admin", "admin").await;

    let root = string_list(&c.call("", "ls", None).await.expect("ls root"));
    assert!(
        has(&root, ".app") && has(&root, ".broker"),
        "root: {root:?}"
    );

    let app = string_list(&c.call(".app", "ls", None).await.expect("ls .app"));
    assert!(app.is_empty(), ".app has no children: {app:?}");

    let b = string_list(&c.call(".broker", "ls", None).await.expect("ls .broker"));
    assert!(has(&b, "currentClient"), ".broker: {b:?}");
    assert!(has(&b, "client"), ".broker: {b:?}");
    assert!(
        !has(&b, "clients"),
        ".broker must not have 'clients' (SHV 2 marker): {b:?}"
    );

    let cc = string_list(
        &c.call(".broker/currentClient", "ls", None)
            .await
            .expect("ls currentClient"),
    );
    assert!(cc.is_empty(), "currentClient has no children: {cc:?}");
}

#[tokio::test]
async fn ls_with_name_param_returns_bool() {
    let broker = Broker::start(None);
    let (c, _) = broker.connect("viewer", "viewer").await;
    let yes = c
        .call("", "ls", Some(RpcValue::from(".broker")))
        .await
        .unwrap();
    assert_eq!(yes.value, Value::Bool(true), "{}", yes.to_cpon());
    let no = c
        .call("", "ls", Some(RpcValue::from("nosuchnode")))
        .await
        .unwrap();
    assert_eq!(no.value, Value::Bool(false), "{}", no.to_cpon());
    let yes = c
        .call(".broker", "ls", Some(RpcValue::from("currentClient")))
        .await
        .unwrap();
    assert_eq!(yes.value, Value::Bool(true), "{}", yes.to_cpon());
}

#[tokio::test]
async fn dir_at_several_levels() {
    let broker = Broker::start(None);
    let (c, _) = broker.connect("admin", "admin").await;

    let root = dir_names(&c.call("", "dir", None).await.expect("dir root"));
    assert!(has(&root, "ls") && has(&root, "dir"), "root dir: {root:?}");

    let app = dir_names(&c.call(".app", "dir", None).await.expect("dir .app"));
    for m in [
        "ls",
        "dir",
        "shvVersionMajor",
        "shvVersionMinor",
        "name",
        "version",
        "ping",
        "date",
    ] {
        assert!(has(&app, m), ".app dir lacks {m}: {app:?}");
    }

    let b = dir_names(&c.call(".broker", "dir", None).await.expect("dir .broker"));
    for m in [
        "ls",
        "dir",
        "name",
        "clientInfo",
        "mountedClientInfo",
        "clients",
        "mounts",
        "disconnectClient",
    ] {
        assert!(has(&b, m), ".broker dir lacks {m}: {b:?}");
    }

    let cc = dir_names(
        &c.call(".broker/currentClient", "dir", None)
            .await
            .expect("dir currentClient"),
    );
    for m in [
        "ls",
        "dir",
        "info",
        "subscribe",
        "unsubscribe",
        "subscriptions",
    ] {
        assert!(has(&cc, m), "currentClient dir lacks {m}: {cc:?}");
    }

    let yes = c
        .call(".app", "dir", Some(RpcValue::from("ping")))
        .await
        .unwrap();
    assert_eq!(yes.value, Value::Bool(true), "{}", yes.to_cpon());
    let no = c
        .call(".app", "dir", Some(RpcValue::from("nosuchmethod")))
        .await
        .unwrap();
    assert_eq!(no.value, Value::Bool(false), "{}", no.to_cpon());
}

#[tokio::test]
async fn dir_entries_are_imaps_with_flags_and_access() {
    let broker = Broker::start(None);
    let (c, _) = broker.connect("admin", "admin").await;
    let d = c.call(".app", "dir", None).await.unwrap();
    let Value::List(entries) = &d.value else {
        panic!("{}", d.to_cpon())
    };
    for e in entries.iter() {
        let Value::IMap(m) = &e.value else {
            panic!("entry not IMap: {}", e.to_cpon())
        };
        assert!(
            matches!(m.get(&1).map(|v| &v.value), Some(Value::String(_))),
            "name: {}",
            e.to_cpon()
        );
        assert!(
            matches!(m.get(&5).map(|v| &v.value), Some(Value::Int(1..=63))),
            "access level 1..63: {}",
            e.to_cpon()
        );
    }
}

#[tokio::test]
async fn app_methods() {
    let broker = Broker::start(None);
    let (c, _) = broker.connect("viewer", "viewer").await;
    assert_eq!(
        c.call(".app", "shvVersionMajor", None)
            .await
            .unwrap()
            .as_int(),
        3
    );
    let minor = c.call(".app", "shvVersionMinor", None).await.unwrap();
    assert!(
        matches!(minor.value, Value::Int(n) if n >= 0),
        "{}",
        minor.to_cpon()
    );
    let name = c.call(".app", "name", None).await.unwrap();
    assert!(
        matches!(&name.value, Value::String(s) if !s.is_empty()),
        "{}",
        name.to_cpon()
    );
    let version = c.call(".app", "version", None).await.unwrap();
    assert!(
        matches!(&version.value, Value::String(s) if !s.is_empty()),
        "{}",
        version.to_cpon()
    );
    let ping = c.call(".app", "ping", None).await.unwrap();
    assert!(ping.is_null(), "{}", ping.to_cpon());
    let date = c.call(".app", "date", None).await.unwrap();
    assert!(
        matches!(date.value, Value::DateTime(_)),
        "date is a DateTime: {}",
        date.to_cpon()
    );
}

#[tokio::test]
async fn broker_name_from_config() {
    let broker = Broker::start(Some(&config_yaml(&[], "")));
    let (c, _) = broker.connect("admin", "admin").await;
    let name = c.call(".broker", "name", None).await.unwrap();
    assert_eq!(name.as_str(), "testbroker");
}

#[tokio::test]
async fn current_client_info() {
    let broker = Broker::start(None);
    let (c, _) = broker.connect("viewer", "viewer").await;
    let info = c
        .call(".broker/currentClient", "info", None)
        .await
        .expect("info");
    let Value::Map(m) = &info.value else {
        panic!("info is not a Map: {}", info.to_cpon())
    };
    assert!(
        matches!(m.get("clientId").map(|v| &v.value), Some(Value::Int(_))),
        "{}",
        info.to_cpon()
    );
    assert_eq!(
        m.get("userName").map(|v| v.as_str().to_string()).as_deref(),
        Some("viewer"),
        "{}",
        info.to_cpon()
    );
    // clientInfo(own id) agrees.
    let id = m.get("clientId").unwrap().as_int();
    let (admin, _) = broker.connect("admin", "admin").await;
    let other = admin
        .call(".broker", "clientInfo", Some(RpcValue::from(id)))
        .await
        .expect("clientInfo");
    let Value::Map(o) = &other.value else {
        panic!("clientInfo is not a Map: {}", other.to_cpon())
    };
    assert_eq!(
        o.get("userName").map(|v| v.as_str().to_string()).as_deref(),
        Some("viewer")
    );
    let clients = admin
        .call(".broker", "clients", None)
        .await
        .expect("clients");
    let Value::List(l) = &clients.value else {
        panic!("clients: {}", clients.to_cpon())
    };
    assert!(
        l.iter().any(|v| v.as_int() == id),
        "clients {} lacks {id}",
        clients.to_cpon()
    );
}

#[tokio::test]
async fn unknown_method_and_path_are_method_not_found() {
    let broker = Broker::start(None);
    let (c, _) = broker.connect("admin", "admin").await;
    assert_eq!(
        rpc_error_code(c.call(".app", "noSuchMethod", None).await),
        METHOD_NOT_FOUND
    );
    assert_eq!(
        rpc_error_code(c.call("no/such/path", "get", None).await),
        METHOD_NOT_FOUND
    );
    assert_eq!(
        rpc_error_code(c.call("no/such/path", "ls", None).await),
        METHOD_NOT_FOUND
    );
    assert_eq!(
        rpc_error_code(c.call(".broker", "noSuchMethod", None).await),
        METHOD_NOT_FOUND
    );
    assert_served(&c).await;
}
