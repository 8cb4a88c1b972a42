//! A site broker linked to two central brokers at once (two `connections` entries),
//! mounted in each: every device answers through either central, a central that dies
//! costs no call made through the other, a subscriber gets each signal once, and a
//! remote shell runs through the surviving central.

use std::process::Stdio;
use std::time::Duration;

use libshv::RpcValue;

use super::shell_rig::Agent;
use tests::{bin, free_port, signal_parts, wait_for_child, Broker, TestDevice, TIMEOUT};

/// The site's config: the users of the test brokers and a link to each central.
fn site_config(a: u16, b: u16) -> String {
    format!(
        r#"name: site
users:
  admin: {{password: admin, roles: [admin]}}
  device: {{password: device, roles: [device]}}
roles:
  admin: {{access: [{{ri: "**:*", grant: su}}], mount_points: ["**"]}}
  device: {{access: [{{ri: "**:*", grant: rd}}], mount_points: ["test/**"]}}
connections:
  - url: "tcp://admin@127.0.0.1:{a}?password=admin"
    mount_point: "site"
    heartbeat: 1
    reconnect_max: 1
  - url: "tcp://admin@127.0.0.1:{b}?password=admin"
    mount_point: "site"
    heartbeat: 1
    reconnect_max: 1
"#
    )
}

/// Signals received within `wait`.
async fn count_signals(
    rx: &mut libshv::client::SignalReceiver,
    wait: Duration,
) -> Vec<libshv::RpcMessage> {
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(wait, rx.recv()).await {
        got.push(m);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_under_two_centrals_survives_either() {
    let a_port = free_port();
    let a_listen = format!("tcp://127.0.0.1:{a_port}");
    let mut central_a = Some(Broker::start_with_args(None, &["--listen", &a_listen]));
    let central_b = Broker::start(None);
    let site = Broker::start(Some(&site_config(a_port, central_b.port)));
    let device = TestDevice::new();
    let _dev = site
        .mount_device("device", "device", "test/dev", device.clone())
        .await;
    let _agent = Agent::start(&site, "test/agent").await;
    let (a, mut a_signals) = central_a.as_ref().unwrap().connect("admin", "admin").await;
    let (b, mut b_signals) = central_b.connect("admin", "admin").await;
    for c in [&a, &b] {
        wait_for_child(c, "site/test", "dev").await;
        wait_for_child(c, "site/test", "agent").await;
        let v = c.call("site/test/dev/number", "get", None).await.unwrap();
        assert_eq!(v, RpcValue::from(42));
    }
    let parents = site.connect("admin", "admin").await.0;
    let p = parents
        .call(".broker", "parents", None)
        .await
        .unwrap()
        .to_cpon();
    assert_eq!(p.matches("\"connected\":true").count(), 2, "{p}");

    // One subscriber on each central: each change reaches each of them exactly once.
    let ri = "site/test/**:get:chng";
    assert!(a.subscribe(ri, None).await.unwrap());
    assert!(b.subscribe(ri, None).await.unwrap());
    // Subscriptions reach the site asynchronously: poke until both see a signal.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut n = 100;
    loop {
        n += 1;
        a.call("site/test/dev/number", "set", Some(RpcValue::from(n)))
            .await
            .unwrap();
        let got_a = count_signals(&mut a_signals, Duration::from_millis(300)).await;
        let got_b = count_signals(&mut b_signals, Duration::from_millis(50)).await;
        if !got_a.is_empty() && !got_b.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no signal on both");
    }
    for i in 0..5 {
        a.call(
            "site/test/dev/number",
            "set",
            Some(RpcValue::from(1000 + i)),
        )
        .await
        .unwrap();
    }
    let got_a = count_signals(&mut a_signals, Duration::from_millis(700)).await;
    let got_b = count_signals(&mut b_signals, Duration::from_millis(100)).await;
    for (name, got) in [("A", &got_a), ("B", &got_b)] {
        let params: Vec<i64> = got.iter().map(|m| signal_parts(m).3.as_int()).collect();
        assert_eq!(params, [1000, 1001, 1002, 1003, 1004], "central {name}");
        assert!(got
            .iter()
            .all(|m| signal_parts(m).0 == "site/test/dev/number"));
    }

    // Central A dies: not one call through B fails, before, during or after.
    let calls = tokio::spawn({
        let b = b.clone();
        async move {
            let mut failed = 0;
            for _ in 0..200 {
                if b.call("site/test/dev/number", "get", None).await.is_err() {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failed
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(central_a.take());
    assert_eq!(
        calls.await.unwrap(),
        0,
        "calls through B failed while A died"
    );

    // A remote shell through the surviving central (B hosts the tunnel).
    let rsh = tokio::process::Command::new(bin("shvrsh"))
        .arg(central_b.url("admin", "admin"))
        .arg("site/test/agent")
        .args(["--", "sh", "-c", "echo $((6*7))"])
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(TIMEOUT, rsh)
        .await
        .expect("shvrsh hung")
        .expect("run shvrsh");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "42\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));

    // A comes back on its port: the site is mounted there again.
    let central_a = Broker::start_with_args(None, &["--listen", &a_listen]);
    let (a, _) = central_a.connect("admin", "admin").await;
    wait_for_child(&a, "site/test", "dev").await;
    let v = a.call("site/test/dev/number", "get", None).await.unwrap();
    assert_eq!(v, RpcValue::from(1004));
}
