//! The whole tree's sessions on the top broker: a session hosted by a site broker is
//! listed by the central broker's `.broker/tunnels:list` (with `host`), closed from
//! there through the site's own `.broker/tunnels:close`, and the central audit log
//! (`tunnel.audit_below`) has its open and close lines.

use std::process::Stdio;
use std::time::{Duration, Instant};

use libshv::RpcValue;

use super::shell_rig::Agent;
use tests::{bin, child_broker_config, free_port, wait_for_child, Broker, TempDir, TIMEOUT};

/// The row of `list` for a session hosted at `host`, if any.
fn row_at(list: &RpcValue, host: &str) -> Option<RpcValue> {
    list.as_list()
        .iter()
        .find(|r| r.as_map().get("host").map(|h| h.as_str()) == Some(host))
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_top_broker_lists_audits_and_closes_a_session_hosted_below() {
    let dir = TempDir::new("tree-sessions");
    let audit = dir.path().join("central-audit.jsonl");
    let central = Broker::start(Some(&tests::config_yaml(
        &[],
        &format!(
            "tunnel:\n  audit_log: \"{}\"\n  audit_below: true\n",
            audit.display()
        ),
    )));
    let site_port = free_port();
    let site_addr = format!("127.0.0.1:{site_port}");
    // The site has a public tunnel address: it hosts the sessions of its agents.
    let site = Broker::start_with_args(
        Some(&child_broker_config(
            "site",
            central.port,
            "site",
            &format!("tunnel:\n  public_address: \"{site_addr}\"\n"),
        )),
        &["--listen", &format!("tcp://{site_addr}")],
    );
    let _agent = Agent::start(&site, "test/agent").await;
    let (admin, _) = central.connect("admin", "admin").await;
    wait_for_child(&admin, "site/test", "agent").await;

    let rsh = tokio::process::Command::new(bin("shvrsh"))
        .arg(central.url("admin", "admin"))
        .arg("site/test/agent")
        .args(["--", "sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shvrsh");

    // Listed on central with the host's path, as the site itself lists it.
    let deadline = Instant::now() + TIMEOUT;
    let row = loop {
        let list = admin.call(".broker/tunnels", "list", None).await.unwrap();
        if let Some(r) = row_at(&list, "site") {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "central never listed the site's session: {}",
            list.to_cpon()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let m = row.as_map();
    assert_eq!(m.get("agentPath").unwrap().as_str(), "test/agent");
    // The UserId chain starts with the operator as central authenticated them.
    let chain = m.get("user").unwrap().as_str();
    assert!(chain.starts_with("admin:"), "{chain}");
    assert_eq!(m.get("kind").unwrap().as_str(), "command");
    let id = m.get("id").unwrap().as_int();
    let on_site = admin
        .call("site/.broker/tunnels", "list", None)
        .await
        .unwrap();
    assert!(
        on_site
            .as_list()
            .iter()
            .any(|r| r.as_map().get("id").unwrap().as_int() == id),
        "{}",
        on_site.to_cpon()
    );

    // Closed from central: the session ends, the operator is told why.
    let closed = admin
        .call("site/.broker/tunnels", "close", Some(RpcValue::from(id)))
        .await
        .unwrap();
    assert!(closed.as_bool());
    let out = tokio::time::timeout(TIMEOUT, rsh.wait_with_output())
        .await
        .expect("shvrsh did not end when its session was closed")
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("closed by an administrator"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let list = admin.call(".broker/tunnels", "list", None).await.unwrap();
        if row_at(&list, "site").is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still listed: {}",
            list.to_cpon()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The central audit log has both ends of the session hosted below.
    let deadline = Instant::now() + TIMEOUT;
    let text = loop {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        if text.contains("\"event\":\"close\"") && text.contains("\"host\":\"site\"") {
            break text;
        }
        assert!(Instant::now() < deadline, "central audit: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let below: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"host\":\"site\""))
        .collect();
    assert_eq!(below.len(), 2, "{text}");
    assert!(below[0].contains("\"event\":\"open\"") && below[0].contains("test/agent"));
    assert!(
        below[1].contains("closed by an administrator"),
        "{}",
        below[1]
    );
}
