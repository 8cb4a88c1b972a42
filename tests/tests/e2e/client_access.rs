//! `.broker/client/<id>/…` reaches into any client's own tree: administrators only.

use libshv::RpcValue;
use tests::{rpc_error_code, Broker, TestDevice};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_reach_into_client_trees() {
    let broker = Broker::start(None);
    let _dev = broker
        .mount_device("device", "device", "test/dev", TestDevice::new())
        .await;
    let (admin, _) = broker.connect("admin", "admin").await;
    let info = admin
        .call(
            ".broker",
            "mountedClientInfo",
            Some(RpcValue::from("test/dev")),
        )
        .await
        .unwrap();
    let id = info.get("clientId").expect("clientId").as_int();
    let path = format!(".broker/client/{id}/number");
    assert_eq!(
        admin.call(&path, "get", None).await.unwrap(),
        RpcValue::from(42)
    );
    // The viewer may read test/dev/number through its mount, but not via the client id.
    let (viewer, _) = broker.connect("viewer", "viewer").await;
    assert_eq!(
        viewer.call("test/dev/number", "get", None).await.unwrap(),
        RpcValue::from(42)
    );
    assert_eq!(rpc_error_code(viewer.call(&path, "get", None).await), 2);
}
