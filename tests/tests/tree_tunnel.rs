//! A remote shell across two broker levels: shvrsh on the top broker, the agent under
//! the edge broker. The tunnel is hosted by the nearest broker to the operator that has
//! `tunnel.public_address` (the site broker here), else by the operator's own broker.

use std::process::{Child, Command, Stdio};

use tests::{bin, child_broker_config, free_port, wait_for_child, Broker, TIMEOUT};

fn tunnel_section(public_address: Option<&str>) -> String {
    public_address
        .map(|a| format!("tunnel:\n  public_address: \"{a}\"\n"))
        .unwrap_or_default()
}

struct Agent(Child);
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the tree, a command through it, and returns (top stderr, site stderr).
async fn run_across_tree(site_public: bool) -> (String, String) {
    let top = Broker::start(None);
    let site_port = free_port();
    let site_addr = format!("127.0.0.1:{site_port}");
    let public = site_public.then_some(site_addr.as_str());
    let site = Broker::start_with_args(
        Some(&child_broker_config(
            "site",
            top.port,
            "site",
            &tunnel_section(public),
        )),
        &["--listen", &format!("tcp://{site_addr}")],
    );
    let edge = Broker::start(Some(&child_broker_config("edge", site_port, "edge", "")));
    let _agent = Agent(
        Command::new(bin("shvagent"))
            .arg(edge.url("device", "device"))
            .args(["--mount", "test/agent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn shvagent"),
    );
    let (client, _) = top.connect("admin", "admin").await;
    wait_for_child(&client, "site/edge/test", "agent").await;

    let rsh = tokio::process::Command::new(bin("shvrsh"))
        .arg(top.url("admin", "admin"))
        .arg("site/edge/test/agent")
        .args(["--", "sh", "-c", "echo out; echo err >&2; exit 3"])
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(TIMEOUT, rsh)
        .await
        .expect("shvrsh hung")
        .expect("run shvrsh");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "out\n",
        "stderr: {}\ntop: {}\nsite: {}",
        String::from_utf8_lossy(&out.stderr),
        top.stderr(),
        site.stderr()
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(3));
    (top.stderr(), site.stderr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_across_two_levels_hosted_by_operators_broker() {
    let (top, site) = run_across_tree(false).await;
    assert!(
        top.contains("tunnel requested"),
        "top broker should host:\n{top}"
    );
    assert!(
        !site.contains("tunnel requested"),
        "site broker should not host:\n{site}"
    );
    assert!(
        top.contains("user=tunnel#"),
        "rexec should log in to the top broker:\n{top}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_hosted_by_site_broker_with_public_address() {
    let (top, site) = run_across_tree(true).await;
    assert!(
        site.contains("tunnel requested"),
        "site broker should host:\n{site}"
    );
    assert!(
        site.contains("user=tunnel#"),
        "rexec should log in to the site broker:\n{site}"
    );
    assert!(
        !top.contains("user=tunnel#"),
        "rexec should not log in to the top broker:\n{top}"
    );
}
