//! Brokers in a tree with the Python pyshv broker (`pyshvbroker`, PyPI pyshv 0.13.0) at
//! the other end of the link, both ways round: a call and a signal through each.

use std::time::Duration;

use libshv::{Client, RpcValue};
use tests::{free_port, signal_parts, wait_for_child, Broker, PyBroker, TestDevice, TIMEOUT};

/// A pyshvbroker with users admin and device; `connect`: an optional `[[connect]]` URL
/// to a parent broker.
fn start_pybroker(name: &str, connect: Option<&str>) -> PyBroker {
    let port = free_port();
    let mut toml = format!(
        r#"name = "{name}"
listen = ["tcp://127.0.0.1:{port}"]

[user.admin]
password = "admin"
role = "admin"

[user.device]
password = "device"
role = "device"

[role.admin]
mountPoints = "**"
access.su = "**:*"

[role.device]
mountPoints = "test/**"
access.rd = "**:*"
"#
    );
    if let Some(url) = connect {
        toml.push_str(&format!(
            "\n[[connect]]\nurl = \"{url}\"\nrole = \"admin\"\n"
        ));
    }
    PyBroker::start(&toml, port)
}

async fn connect(url: &str) -> (Client, libshv::client::SignalReceiver) {
    let mut c = libshv::ClientConfig::from_url(libshv::RpcUrl::parse(url).unwrap());
    c.timeout = TIMEOUT;
    c.heartbeat = None;
    tokio::time::timeout(TIMEOUT, Client::connect(&c, None))
        .await
        .expect("connect timeout")
        .expect("login")
}

/// Sets the device's number until the subscriber sees the `chng` signal at `path`.
async fn signal_arrives(top: &Client, signals: &mut libshv::client::SignalReceiver, path: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut n = 1000;
    loop {
        n += 1;
        top.call(path, "set", Some(RpcValue::from(n)))
            .await
            .expect("set through the tree");
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), signals.recv()).await
        {
            let (p, name, _, param) = signal_parts(&m);
            assert_eq!((p.as_str(), name.as_str()), (path, "chng"));
            assert!(param.as_int() > 1000);
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no signal from {path} reached the top"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_broker_as_child_of_pyshvbroker() {
    let top = start_pybroker("pytop", None);
    let child_cfg = format!(
        r#"name: rsite
users:
  device: {{password: device, roles: [device]}}
roles:
  device: {{access: [{{ri: "**:*", grant: rd}}], mount_points: ["test/**"]}}
connections:
  - url: "tcp://admin@127.0.0.1:{}?password=admin"
    mount_point: "rsite"
    heartbeat: 5
"#,
        top.port
    );
    let ours = Broker::start(Some(&child_cfg));
    let _dev = ours
        .mount_device("device", "device", "test/dev", TestDevice::new())
        .await;
    let (client, mut signals) = connect(&top.url("admin", "admin")).await;
    wait_for_child(&client, "rsite/test", "dev").await;
    let v = client
        .call("rsite/test/dev/number", "get", None)
        .await
        .unwrap();
    assert_eq!(v, RpcValue::from(42));
    assert!(client
        .subscribe("rsite/test/**:*:chng", None)
        .await
        .unwrap());
    signal_arrives(&client, &mut signals, "rsite/test/dev/number").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyshvbroker_as_child_of_our_broker() {
    let ours = Broker::start(None);
    let parent_url = format!("{}&devmount=pysite", ours.url("admin", "admin"));
    let py = start_pybroker("pysite", Some(&parent_url));
    let (dev_client, _dev_signals) = {
        let mut c = libshv::ClientConfig::from_url(
            libshv::RpcUrl::parse(&format!("{}&devmount=test/dev", py.url("device", "device")))
                .unwrap(),
        );
        c.timeout = TIMEOUT;
        c.heartbeat = None;
        let handler: std::sync::Arc<dyn libshv::RequestHandler> = TestDevice::new();
        tokio::time::timeout(TIMEOUT, Client::connect(&c, Some(handler)))
            .await
            .expect("device connect timeout")
            .expect("device login on pyshvbroker")
    };
    let (client, mut signals) = ours.connect("admin", "admin").await;
    wait_for_child(&client, "pysite/test", "dev").await;
    let v = client
        .call("pysite/test/dev/number", "get", None)
        .await
        .unwrap();
    assert_eq!(v, RpcValue::from(42));
    assert!(client
        .subscribe("pysite/test/**:*:chng", None)
        .await
        .unwrap());
    signal_arrives(&client, &mut signals, "pysite/test/dev/number").await;
    drop(dev_client);
}
