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

impl Agent {
    /// shvagent logged in at `url`, mounted at test/agent.
    fn start(url: &str) -> Agent {
        Agent(
            Command::new(bin("shvagent"))
                .arg(url)
                .args(["--mount", "test/agent"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn shvagent"),
        )
    }
}

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
    let _agent = Agent::start(&edge.url("device", "device"));
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

/// Eight operators start a remote shell at the same moment on the top broker, for one
/// agent under the site broker: every one gets exactly its own command's output. (The
/// launches share a link and may share request ids; the agent binds each tunnel to
/// its launch by the nonce it sent, and the brokers keep relayed requests apart by
/// the CallerIds below the link.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_shells_through_a_tree_each_get_their_own_output() {
    let top = Broker::start(None);
    let site = Broker::start(Some(&child_broker_config("site", top.port, "site", "")));
    let _agent = Agent::start(&site.url("device", "device"));
    let (client, _) = top.connect("admin", "admin").await;
    wait_for_child(&client, "site/test", "agent").await;

    let runs: Vec<_> = (0..8)
        .map(|i| {
            tokio::process::Command::new(bin("shvrsh"))
                .arg(top.url("admin", "admin"))
                .arg("site/test/agent")
                .args(["--", "sh", "-c", &format!("sleep 0.2; echo me-{i}")])
                .stdin(Stdio::null())
                .env_remove("RUST_LOG")
                .kill_on_drop(true)
                .output()
        })
        .collect();
    let outputs = tokio::time::timeout(TIMEOUT * 2, futures::future::join_all(runs))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "some shvrsh hung\ntop: {}\nsite: {}",
                top.stderr(),
                site.stderr()
            )
        });
    for (i, out) in outputs.into_iter().enumerate() {
        let out = out.expect("run shvrsh");
        assert_eq!(
            (
                String::from_utf8_lossy(&out.stdout).to_string(),
                out.status.code()
            ),
            (format!("me-{i}\n"), Some(0)),
            "shell {i}: stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
