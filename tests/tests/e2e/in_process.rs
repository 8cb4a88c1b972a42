//! The broker in process ([`Broker::in_process`]: bound on port 0 through `Server::bind`,
//! served with a shutdown token), exercised by libshv clients over loopback: routing,
//! access, subscriptions, mounts, the broker's API, tunnels' broker side, and parent
//! links.

use std::sync::Arc;

use libshv::client::SignalReceiver;
use libshv::message::code;
use libshv::meta::tag;
use libshv::tunnel::{TunnelCtl, TunnelState};
use libshv::{Client, RequestHandler, RpcError, RpcFrame, RpcMessage, RpcValue};
use tests::*;

// ---- routing ------------------------------------------------------------------

#[tokio::test]
async fn root_lists_the_broker_nodes_and_mounts() {
    let b = start().await;
    let (_dev, _) = device(&b, "test/dev").await;
    let (admin, _) = b.client("admin").await;
    let ls = admin.call("", "ls", None).await.unwrap();
    assert_eq!(string_list(&ls), [".app", ".broker", "test"]);
    let ls = admin.call(".broker", "ls", None).await.unwrap();
    assert_eq!(string_list(&ls), ["currentClient", "client"]);
}

#[tokio::test]
async fn requests_reach_the_mounted_device_with_the_prefix_stripped() {
    let b = start().await;
    let (_dev, _) = device(&b, "test/dev").await;
    let (admin, _) = b.client("admin").await;
    let who = admin.call("test/dev/a/b", "whoami", None).await.unwrap();
    assert_eq!(who.get("path").unwrap().as_str(), "a/b");
    let v = admin
        .call("test/dev", "echo", Some(RpcValue::from("hi")))
        .await
        .unwrap();
    assert_eq!(v.as_str(), "hi");
}

#[tokio::test]
async fn longest_mount_prefix_wins() {
    let b = start().await;
    let (_a, _) = device(&b, "test/a").await;
    let (_ab, _) = device(&b, "test/ab").await;
    let (admin, _) = b.client("admin").await;
    let who = admin.call("test/ab/x", "whoami", None).await.unwrap();
    assert_eq!(who.get("path").unwrap().as_str(), "x");
    let who = admin.call("test/a/b/x", "whoami", None).await.unwrap();
    assert_eq!(who.get("path").unwrap().as_str(), "b/x");
}

#[tokio::test]
async fn unknown_paths_and_methods_are_method_not_found() {
    let b = start().await;
    let (admin, _) = b.client("admin").await;
    for (path, method) in [("nothing", "ls"), (".app", "nope"), (".broker/foo", "ls")] {
        let r = admin.call(path, method, None).await;
        assert_eq!(rpc_error_code(r), code::METHOD_NOT_FOUND, "{path}:{method}");
    }
}

#[tokio::test]
async fn non_canonical_paths_are_refused() {
    let b = start().await;
    let (_dev, _) = device(&b, "test/dev").await;
    let (admin, _) = b.client("admin").await;
    for path in [
        "test/dev/",
        "test//dev",
        "test/./dev",
        "test/x/../dev",
        "/test/dev",
    ] {
        let r = admin.call(path, "whoami", None).await;
        assert_eq!(rpc_error_code(r), code::METHOD_NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn broker_client_path_reaches_a_client_by_id() {
    let b = start().await;
    let (dev, _) = device(&b, "test/dev").await;
    let id = client_id(&dev).await;
    let (admin, _) = b.client("admin").await;
    let who = admin
        .call(&format!(".broker/client/{id}/x"), "whoami", None)
        .await
        .unwrap();
    assert_eq!(who.get("path").unwrap().as_str(), "x");
}

// ---- access -------------------------------------------------------------------

#[tokio::test]
async fn access_level_is_lowered_to_the_grant_and_user_id_appended() {
    let b = start().await;
    let (_dev, _) = device(&b, "test/dev").await;
    let (viewer, _) = b.client("viewer").await;
    let who = viewer.call("test/dev", "whoami", None).await.unwrap();
    assert_eq!(who.get("accessLevel").unwrap().as_int(), 8);
    assert_eq!(who.get("userId").unwrap().as_str(), "viewer:inproc");
}

#[tokio::test]
async fn a_user_without_a_grant_is_refused() {
    let yaml = "users:\n  u: {password: u, roles: [r]}\n  device: {password: device, roles: [d]}\nroles:\n  r: {access: [{ri: 'other/**:*', grant: rd}]}\n  d: {access: [{ri: '**:*', grant: rd}], mount_points: ['test/**']}\n";
    let b = Broker::in_process(Some(yaml)).await;
    let (_dev, _) = device(&b, "test/dev").await;
    let (u, _) = b.client("u").await;
    let r = u.call("test/dev", "echo", None).await;
    assert_eq!(rpc_error_code(r), code::METHOD_NOT_FOUND);
    // …but every user may browse the broker's own nodes and learn the SHV version.
    let v = u.call(".app", "shvVersionMajor", None).await.unwrap();
    assert_eq!(v.as_int(), 3);
    assert!(u.call(".broker/currentClient", "info", None).await.is_ok());
    let r = u.call(".broker", "clients", None).await;
    assert_eq!(rpc_error_code(r), code::METHOD_NOT_FOUND);
}

#[tokio::test]
async fn broker_administration_needs_super_service() {
    let b = start().await;
    let (viewer, _) = b.client("viewer").await;
    let (admin, _) = b.client("admin").await;
    assert_eq!(
        rpc_error_code(viewer.call(".broker", "clients", None).await),
        code::METHOD_NOT_FOUND
    );
    let ids = admin.call(".broker", "clients", None).await.unwrap();
    assert_eq!(ids.to_cpon(), "[0,1]");
    let ls = viewer.call(".broker/client", "ls", None).await.unwrap();
    assert!(string_list(&ls).is_empty());
}

#[tokio::test]
async fn viewer_cannot_mount() {
    let b = start().await;
    let mut c = b.config("viewer", "viewer");
    c.login.mount_point = Some("test/x".into());
    assert!(b.try_connect(&c, None).await.is_err());
}

// ---- mounts ---------------------------------------------------------------------

#[tokio::test]
async fn mounts_cannot_nest_or_shadow() {
    let b = start().await;
    let (_dev, _) = device(&b, "test/dev").await;
    for mp in ["test/dev", "test/dev/x", "test", ".app", ".broker/x"] {
        let mut c = b.config("admin", "admin");
        c.login.mount_point = Some(mp.into());
        assert!(b.try_connect(&c, None).await.is_err(), "mounted at {mp}");
    }
}

#[tokio::test]
async fn lsmod_goes_on_the_parent_of_the_topmost_new_node() {
    let b = start().await;
    let (_dev, _) = device(&b, "test/device").await;
    let (admin, mut signals) = b.client("admin").await;
    admin.subscribe("**:*:lsmod", None).await.unwrap();
    let (well, _) = device(&b, "test/node/well").await;
    let s = signal_on(&mut signals, "test").await;
    assert_eq!(s.param().unwrap().to_cpon(), r#"{"node":true}"#);
    let id = client_id(&well).await;
    admin
        .call(".broker", "disconnectClient", Some(RpcValue::from(id)))
        .await
        .unwrap();
    let s = signal_on(&mut signals, "test").await;
    assert_eq!(s.param().unwrap().to_cpon(), r#"{"node":false}"#);
}

// ---- subscriptions --------------------------------------------------------------

#[tokio::test]
async fn signals_reach_matching_subscribers_under_the_mount_point() {
    let b = start().await;
    let (dev, _) = device(&b, "test/dev").await;
    let (viewer, mut signals) = b.client("viewer").await;
    assert!(viewer.subscribe("test/**:*:chng", None).await.unwrap());
    dev.emit("x", "other", "get", Some(RpcValue::from(1)))
        .await
        .unwrap();
    dev.emit("x", "chng", "get", Some(RpcValue::from(2)))
        .await
        .unwrap();
    let s = signal_on(&mut signals, "test/dev/x").await;
    assert_eq!(s.to_frame().method(), Some("chng"));
    assert_eq!(s.param().unwrap().as_int(), 2);
}

#[tokio::test]
async fn unsubscribe_stops_signals() {
    let b = start().await;
    let (dev, _) = device(&b, "test/dev").await;
    let (viewer, mut signals) = b.client("viewer").await;
    viewer.subscribe("test/**:*:*", None).await.unwrap();
    assert!(viewer.unsubscribe("test/**:*:*").await.unwrap());
    assert!(!viewer.unsubscribe("test/**:*:*").await.unwrap());
    dev.emit("x", "chng", "get", Some(RpcValue::from(1)))
        .await
        .unwrap();
    // A round trip later nothing has come.
    viewer.call(".app", "ping", None).await.unwrap();
    assert!(signals.try_recv().is_err());
}

/// A device that notes every request it gets (`path:method`) and answers `echo`;
/// `ls` it answers `false`, as a device that is not a broker does for `ls(".broker")`.
#[derive(Default)]
struct Noting(std::sync::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl libshv::client::RequestHandler for Noting {
    async fn handle(
        &self,
        _c: &libshv::client::Client,
        req: RpcMessage,
    ) -> Option<Result<RpcValue, libshv::message::RpcError>> {
        let f = req.to_frame();
        let method = f.method().unwrap_or("").to_string();
        self.0
            .lock()
            .unwrap()
            .push(format!("{}:{method}", f.shv_path()));
        Some(Ok(match method.as_str() {
            "ls" => RpcValue::from(false),
            _ => req.param().cloned().unwrap_or_else(RpcValue::null),
        }))
    }
}

impl Noting {
    fn taken(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[tokio::test]
async fn a_mount_is_asked_whether_it_is_a_broker_only_once_subscriptions_or_launches_reach_it() {
    let b = start().await;
    let mount = |m: &str| {
        let mut c = b.config("device", "device");
        c.login.mount_point = Some(m.into());
        let noted = std::sync::Arc::new(Noting::default());
        let b = &b;
        async move {
            let conn = b.try_connect(&c, Some(noted.clone())).await.unwrap();
            (conn, noted)
        }
    };
    let (_dev, noted) = mount("test/dev").await;
    let (_dev2, noted2) = mount("test/dev2").await;
    let (admin, _) = b.client("admin").await;
    // Tests run on one thread: a request the broker sent a device before routing the
    // next call to it is handled (and noted) before that call is.
    let echo = |m: &'static str| admin.call(m, "echo", None);
    echo("test/dev").await.unwrap();
    admin.subscribe("other/**:*:*", None).await.unwrap();
    echo("test/dev").await.unwrap();
    assert_eq!(
        noted.taken(),
        [":echo", ":echo"],
        "no subscription reaches it"
    );

    // A launch is preceded by the question (a host in its answer counts only from a
    // broker).
    admin.call("test/dev2", "launchRexec", None).await.unwrap();
    assert_eq!(noted2.taken(), [":ls", ":launchRexec"]);

    admin.subscribe("test/**:*:chng", None).await.unwrap();
    admin.subscribe("test/dev/**:*:*", None).await.unwrap();
    echo("test/dev").await.unwrap();
    echo("test/dev2").await.unwrap();
    assert_eq!(noted.taken(), [":ls", ":echo"], "asked once");
    assert_eq!(noted2.taken(), [":echo"], "asked before already");

    // Mounted where a subscription already reaches: asked at once.
    let (_dev3, noted3) = mount("test/dev3").await;
    echo("test/dev3").await.unwrap();
    assert_eq!(noted3.taken(), [":ls", ":echo"]);
}

#[tokio::test]
async fn subscriptions_are_listed_with_their_ttl() {
    let b = start().await;
    let (viewer, _) = b.client("viewer").await;
    viewer.subscribe("a/**:*:*", Some(100)).await.unwrap();
    viewer.subscribe("b/**:*:*", None).await.unwrap();
    let subs = viewer
        .call(".broker/currentClient", "subscriptions", None)
        .await
        .unwrap();
    assert!(subs.get("a/**:*:*").unwrap().as_int() > 90);
    assert!(subs.get("b/**:*:*").unwrap().is_null());
}

#[tokio::test]
async fn a_device_cannot_send_signals_outside_its_mount_point() {
    let b = start().await;
    let (dev, _) = device(&b, "test/dev").await;
    let (admin, mut signals) = b.client("admin").await;
    admin.subscribe("**:*:*", None).await.unwrap();
    // The path is taken relative to the mount point, whatever it says.
    dev.emit("../other", "chng", "get", None).await.unwrap();
    dev.emit("y", "chng", "get", None).await.unwrap();
    let s = signal_on(&mut signals, "test/dev/y").await;
    assert_eq!(s.to_frame().method(), Some("chng"));
}

// ---- the broker's API ---------------------------------------------------------

#[tokio::test]
async fn client_ids_start_at_zero_and_count_logins() {
    let b = start().await;
    let (admin, _) = b.client("admin").await;
    let info = admin
        .call(".broker/currentClient", "info", None)
        .await
        .unwrap();
    assert_eq!(info.get("clientId").unwrap().as_int(), 0);
    let (second, _) = b.client("viewer").await;
    let info = second
        .call(".broker/currentClient", "info", None)
        .await
        .unwrap();
    assert_eq!(info.get("clientId").unwrap().as_int(), 1);
}

#[tokio::test]
async fn client_info_has_the_keys_peers_expect() {
    let b = start().await;
    let (admin, _) = b.client("admin").await;
    let info = admin
        .call(".broker/currentClient", "info", None)
        .await
        .unwrap();
    let libshv::shvproto::Value::Map(m) = &info.value else {
        panic!("{}", info.to_cpon())
    };
    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "client",
            "clientId",
            "deviceId",
            "idleTime",
            "idleTimeMax",
            "mountPoint",
            "role",
            "subscriptions",
            "userName"
        ]
    );
    assert_eq!(info.get("role").unwrap().as_str(), "admin");
}

#[tokio::test]
async fn dir_uses_the_rpc_type_notation() {
    let b = start().await;
    let (admin, _) = b.client("admin").await;
    let dir = admin.call("", "dir", None).await.unwrap();
    assert_eq!(
        dir.to_cpon(),
        r#"[i{1:"dir",2:0,3:"n|b|s",4:"[!dir]|b",5:1},i{1:"ls",2:0,3:"s|n",4:"[s]|b",5:1,6:{"lsmod":"{b}"}}]"#
    );
    let has = admin
        .call(".app", "dir", Some(RpcValue::from("ping")))
        .await
        .unwrap();
    assert!(has.as_bool());
}

#[tokio::test]
async fn broker_methods_refuse_oversized_parameters() {
    let b = start().await;
    let (viewer, _) = b.client("viewer").await;
    let r = viewer
        .call(
            ".broker/currentClient",
            "subscribe",
            Some(RpcValue::from("x".repeat(100_000))),
        )
        .await;
    assert_eq!(rpc_error_code(r), code::INVALID_PARAM);
}

#[tokio::test]
async fn disconnect_client_unmounts_the_device() {
    let b = start().await;
    let (dev, _) = device(&b, "test/dev").await;
    let (admin, _) = b.client("admin").await;
    let id = client_id(&dev).await;
    admin
        .call(".broker", "disconnectClient", Some(RpcValue::from(id)))
        .await
        .unwrap();
    tokio::time::timeout(TIMEOUT, dev.closed()).await.unwrap();
    let mounts = admin.call(".broker", "mounts", None).await.unwrap();
    assert!(string_list(&mounts).is_empty());
}

// ---- responses and tunnels ------------------------------------------------------

#[tokio::test]
async fn unsolicited_responses_are_dropped() {
    let b = start().await;
    let (dev, _) = device(&b, "test/dev").await;
    let (admin, mut signals) = b.client("admin").await;
    let admin_id = client_id(&admin).await;
    // The device answers a request nobody sent.
    let mut forged = RpcMessage::new_request(77, "", "x", None);
    forged.meta.remove(tag::METHOD);
    forged
        .meta
        .insert(tag::CALLER_IDS, RpcValue::from(admin_id));
    let forged = forged.with_result(RpcValue::from("injected"));
    dev.send_frame(forged.into_frame()).await.unwrap();
    admin.call(".app", "ping", None).await.unwrap();
    assert!(signals.try_recv().is_err());
}

#[tokio::test]
async fn a_refused_launch_rexec_opens_nothing() {
    let b = start().await;
    let (_agent, _) = device(&b, "test/agent").await;
    let (admin, _) = b.client("admin").await;
    // Echo has no launchRexec: the error goes back, no tunnel is opened or kept.
    let r = admin.call("test/agent", "launchRexec", None).await;
    assert_eq!(rpc_error_code(r), code::METHOD_NOT_FOUND);
    let list = admin.call(".broker/tunnels", "list", None).await.unwrap();
    assert_eq!(list.to_cpon(), "[]");
}

/// A raw agent at `mount` that keeps `launchRexec` requests and answers nothing, and
/// an admin's `launchRexec` to it: (the agent, the request id, the request as the
/// agent got it).
async fn launch_to_silent_agent(
    b: &Broker,
    admin: &libshv::Client,
    mount: &str,
) -> (libshv::Client, i64, RpcMessage) {
    let silent = std::sync::Arc::new(Silent::default());
    let mut c = b.config("device", "device");
    c.login.mount_point = Some(mount.into());
    let (agent, _) = b.try_connect(&c, Some(silent.clone())).await.unwrap();
    let rid = admin.next_request_id();
    admin
        .send(RpcMessage::new_request(rid, mount, "launchRexec", None))
        .await
        .unwrap();
    let launch = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(m) = silent.take() {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the launch reaches the agent");
    (agent, rid, launch)
}

#[tokio::test]
async fn find_tunnel_request_for_a_launch_is_answered_with_a_secret() {
    let b = start().await;
    let (admin, _) = b.client("admin").await;
    let (agent, rid, launch) = launch_to_silent_agent(&b, &admin, "test/agent").await;
    let mut stream = agent.register_stream(rid, 4);
    let find = libshv::tunnel::find_tunnel_request(&launch.meta, Some("n-1"));
    agent.send_frame(find).await.unwrap();
    let resp: RpcFrame = tokio::time::timeout(TIMEOUT, stream.recv())
        .await
        .unwrap()
        .unwrap();
    let ctl = TunnelCtl::from_frame(&resp).unwrap().unwrap();
    assert_eq!(ctl.state, TunnelState::FindTunnelResponse);
    assert_eq!(ctl.nonce.as_deref(), Some("n-1"), "the nonce is echoed");
    assert_eq!(ctl.port, Some(b.port));
    assert!(ctl.secret.as_ref().is_some_and(|s| s.len() >= 32));
    let list = admin.call(".broker/tunnels", "list", None).await.unwrap();
    assert!(list.to_cpon().contains("test/agent"), "{}", list.to_cpon());
}

/// A handler that keeps `launchRexec` requests for the test and answers nothing.
#[derive(Default)]
struct Silent(std::sync::Mutex<Option<RpcMessage>>);

impl Silent {
    fn take(&self) -> Option<RpcMessage> {
        self.0.lock().unwrap().take()
    }
}

#[async_trait::async_trait]
impl libshv::RequestHandler for Silent {
    async fn handle(
        &self,
        _c: &libshv::Client,
        req: RpcMessage,
    ) -> Option<Result<RpcValue, libshv::RpcError>> {
        if req.to_frame().method() == Some("launchRexec") {
            *self.0.lock().unwrap() = Some(req);
            return None;
        }
        Some(Ok(RpcValue::null()))
    }
}

// ---- parent links ---------------------------------------------------------------

#[tokio::test]
async fn a_child_broker_links_up_and_its_devices_are_reachable() {
    let top = start().await;
    let child = Broker::in_process(Some(&child_config(top.port))).await;
    let (_dev, _) = device(&child, "test/dev").await;
    let (admin, _) = top.client("admin").await;
    wait_reachable(&admin, "site/test/dev").await;
    let who = admin.call("site/test/dev", "whoami", None).await.unwrap();
    assert_eq!(who.get("userId").unwrap().as_str(), "admin:inproc;inproc");
    let parents = child.client("admin").await.0;
    let p = parents.call(".broker", "parents", None).await.unwrap();
    assert!(
        p.to_cpon().contains("\"connected\":true"),
        "{}",
        p.to_cpon()
    );
}

#[tokio::test]
async fn subscriptions_are_forwarded_into_a_child_broker() {
    let top = start().await;
    let child = Broker::in_process(Some(&child_config(top.port))).await;
    let (dev, _) = device(&child, "test/dev").await;
    let (admin, mut signals) = top.client("admin").await;
    admin.subscribe("site/test/**:*:chng", None).await.unwrap();
    let got = tokio::time::timeout(TIMEOUT, async {
        loop {
            dev.emit("x", "chng", "get", Some(RpcValue::from(1)))
                .await
                .unwrap();
            if let Ok(Some(m)) =
                tokio::time::timeout(std::time::Duration::from_millis(100), signals.recv()).await
            {
                return m;
            }
        }
    })
    .await
    .expect("the signal comes up the tree");
    assert_eq!(got.to_frame().shv_path(), "site/test/dev/x");
}

/// A device whose `hang` is never answered; the rest as [`Echo`].
struct Hangs;

#[async_trait::async_trait]
impl libshv::client::RequestHandler for Hangs {
    async fn handle(
        &self,
        c: &libshv::client::Client,
        req: RpcMessage,
    ) -> Option<Result<RpcValue, libshv::message::RpcError>> {
        if req.to_frame().method() == Some("hang") {
            std::future::pending::<()>().await;
        }
        Echo.handle(c, req).await
    }
}

/// Through a parent link every user of the parent is counted on its own for
/// `max_pending`: a read-only user who keeps requests waiting on a silent device
/// under the child does not lock the other users out of the child.
#[tokio::test]
async fn one_user_up_the_tree_cannot_use_up_the_pending_budget_of_all() {
    const LIMITS: &str = "limits: {max_pending: 4}\n";
    let top = Broker::in_process(Some(&format!("{CONFIG}{LIMITS}"))).await;
    let child = Broker::in_process(Some(&format!("{}{LIMITS}", child_config(top.port)))).await;
    let mut c = child.config("device", "device");
    c.login.mount_point = Some("test/dev".into());
    let _dev = child
        .try_connect(&c, Some(std::sync::Arc::new(Hangs)))
        .await
        .unwrap();
    let (admin, _) = top.client("admin").await;
    wait_reachable(&admin, "site/test/dev").await;
    let (viewer, _) = top.client("viewer").await;
    let mut hanging = Vec::new();
    for _ in 0..4 {
        let v = viewer.clone();
        hanging.push(tokio::spawn(async move {
            v.call("site/test/dev", "hang", None).await
        }));
    }
    // One thread: the four are sent while this round trip is under way.
    viewer.call(".app", "ping", None).await.unwrap();
    // Its fifth is refused by its own broker: four wait already.
    let r = viewer.call("site/test/dev", "hang", None).await;
    assert_eq!(rpc_error_code(r), code::TRY_AGAIN_LATER);
    // The child still takes requests from other users of the same parent.
    let who = admin.call("site/test/dev", "whoami", None).await.unwrap();
    assert_eq!(who.get("path").unwrap().as_str(), "");
    for h in hanging {
        assert!(!h.is_finished(), "a hanging call was answered");
        h.abort();
    }
}

// ---- lifecycle -------------------------------------------------------------------

#[tokio::test]
async fn shutdown_closes_clients_and_ends_cleanly() {
    let mut b = start().await;
    let (admin, _) = b.client("admin").await;
    assert!(b.is_running());
    b.stop().await.expect("a clean stop");
    tokio::time::timeout(TIMEOUT, admin.closed())
        .await
        .expect("the client is disconnected");
}

#[tokio::test]
async fn a_bad_login_gets_invalid_login_and_the_broker_serves_on() {
    let b = start().await;
    let c = b.config("admin", "wrong");
    match b.try_connect(&c, None).await {
        Err(e) => assert!(e.to_string().contains("Invalid login"), "{e}"),
        Ok(_) => panic!("a wrong password logged in"),
    }
    let (admin, _) = b.client("admin").await;
    admin.call(".app", "ping", None).await.unwrap();
}

// ---- review findings ----------------------------------------------------------

fn child_config(parent_port: u16) -> String {
    format!(
        "{CONFIG}connections:\n  - url: 'tcp://admin@127.0.0.1:{parent_port}?password=admin'\n    mount_point: site\n    heartbeat: 1\n    reconnect_max: 1\n"
    )
}

async fn wait_reachable(client: &libshv::Client, path: &str) {
    tokio::time::timeout(TIMEOUT, async {
        while client.call(path, "whoami", None).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{path} never became reachable"));
}

/// A user's thousand subscriptions under a child broker's mount neither overflow the
/// child's queue (it stays linked) nor fill its subscription table.
#[tokio::test]
async fn many_subscriptions_into_a_child_broker_do_not_cut_it_off() {
    let top = start().await;
    let child = Broker::in_process(Some(&child_config(top.port))).await;
    let (_dev, _) = device(&child, "test/dev").await;
    let (viewer, _) = top.client("viewer").await;
    wait_reachable(&viewer, "site/test/dev").await;
    for i in 0..1000 {
        viewer
            .subscribe(&format!("site/test/n{i}/**:*:*"), None)
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    viewer.call("site/test/dev", "whoami", None).await.unwrap();
    let (admin, _) = child.client("admin").await;
    let ids = admin.call(".broker", "clients", None).await.unwrap();
    let mut most = 0;
    for id in strings_of_ints(&ids) {
        let info = admin
            .call(".broker", "clientInfo", Some(RpcValue::from(id)))
            .await
            .unwrap();
        if let libshv::shvproto::Value::Map(m) = &info.get("subscriptions").unwrap().value {
            most = most.max(m.len());
        }
    }
    assert!(
        most <= 64,
        "the parent holds {most} subscriptions in the child"
    );
}

fn strings_of_ints(v: &RpcValue) -> Vec<i64> {
    match &v.value {
        libshv::shvproto::Value::List(l) => l.iter().map(|x| x.as_int()).collect(),
        _ => panic!("{}", v.to_cpon()),
    }
}

/// `.broker/client/<id>` does not lead into the parent link (that would send requests
/// up the tree with this broker's credentials there).
#[tokio::test]
async fn broker_client_path_does_not_reach_the_parent_link() {
    let top = start().await;
    let child = Broker::in_process(Some(&child_config(top.port))).await;
    let (top_admin, _) = top.client("admin").await;
    let (_dev, _) = device(&child, "test/dev").await;
    wait_reachable(&top_admin, "site/test/dev").await;
    let (admin, _) = child.client("admin").await;
    let ids = admin.call(".broker", "clients", None).await.unwrap();
    let mut link = None;
    for id in strings_of_ints(&ids) {
        let info = admin
            .call(".broker", "clientInfo", Some(RpcValue::from(id)))
            .await
            .unwrap();
        if info
            .get("userName")
            .unwrap()
            .as_str()
            .starts_with("parent:")
        {
            link = Some(id);
        }
    }
    let link = link.expect("the parent link is a client");
    let r = admin
        .call(&format!(".broker/client/{link}/.app"), "ping", None)
        .await;
    assert_eq!(rpc_error_code(r), code::METHOD_NOT_FOUND);
}

/// A device that fills in a tunnel secret of its own gets ours: only a broker below may
/// host a tunnel for us.
#[tokio::test]
async fn a_device_cannot_supply_the_tunnel_secret() {
    let b = start().await;
    let (admin, _) = b.client("admin").await;
    let (agent, rid, launch) = launch_to_silent_agent(&b, &admin, "test/liar").await;
    let mut stream = agent.register_stream(rid, 4);
    let mut find = libshv::tunnel::find_tunnel_request(&launch.meta, None);
    let mut ctl = TunnelCtl::from_frame(&find).unwrap().unwrap();
    ctl.secret = Some("chosen-by-the-device".into());
    ctl.host = Some("evil.example".into());
    find.meta.insert(tag::TUNNEL_CTL, ctl.to_value());
    agent.send_frame(find).await.unwrap();
    let resp = tokio::time::timeout(TIMEOUT, stream.recv())
        .await
        .unwrap()
        .unwrap();
    let ctl = TunnelCtl::from_frame(&resp).unwrap().unwrap();
    assert_ne!(ctl.secret.as_deref(), Some("chosen-by-the-device"));
    assert_eq!(ctl.host.as_deref(), Some("127.0.0.1"));
}

/// A client application that never takes its signals still gets its responses: the
/// client's read loop drops signals beyond its queue instead of waiting.
#[tokio::test]
async fn undrained_signals_do_not_stall_responses() {
    let b = start().await;
    let (dev, _) = device(&b, "test/dev").await;
    let (viewer, _signals_never_read) = b.client("viewer").await;
    viewer.subscribe("test/**:*:*", None).await.unwrap();
    for i in 0..(libshv::client::SIGNAL_QUEUE as i64 + 500) {
        dev.emit("x", "chng", "get", Some(RpcValue::from(i)))
            .await
            .unwrap();
    }
    // Everything the device sent has reached the broker once its ping is answered.
    dev.call(".app", "ping", None).await.unwrap();
    tokio::time::timeout(TIMEOUT, viewer.call(".app", "ping", None))
        .await
        .expect("a response came despite the full signal queue")
        .unwrap();
}

// ---- support ------------------------------------------------------------------

/// Users admin (su), device (may mount under test/**), viewer (read everywhere).
const CONFIG: &str = "name: inproc
users:
  admin: {password: admin, roles: [admin]}
  device: {password: device, roles: [device]}
  viewer: {password: viewer, roles: [viewer]}
roles:
  admin: {access: [{ri: '**:*', grant: su}], mount_points: ['**']}
  device: {access: [{ri: '**:*', grant: rd}], mount_points: ['test/**']}
  viewer: {access: [{ri: '**:*', grant: rd}]}
";

async fn start() -> Broker {
    Broker::in_process(Some(CONFIG)).await
}

/// A device mounted at `mount` answering with [`Echo`].
async fn device(b: &Broker, mount: &str) -> (Client, SignalReceiver) {
    let mut c = b.config("device", "device");
    c.login.mount_point = Some(mount.into());
    b.try_connect(&c, Some(Arc::new(Echo)))
        .await
        .unwrap_or_else(|e| panic!("device at {mount}: {e}"))
}

/// A device: `echo` returns its parameter, `whoami` what the broker told it about the
/// caller (UserId, AccessLevel), `ls` lists `echo` and `whoami` under the root.
struct Echo;

#[async_trait::async_trait]
impl RequestHandler for Echo {
    async fn handle(&self, _c: &Client, req: RpcMessage) -> Option<Result<RpcValue, RpcError>> {
        let f = req.to_frame();
        let method = f.method().unwrap_or("").to_string();
        let path = f.shv_path().to_string();
        Some(match (path.as_str(), method.as_str()) {
            ("", "ls") => Ok(RpcValue::from(vec![RpcValue::from("node")])),
            (_, "echo") => Ok(req.param().cloned().unwrap_or_else(RpcValue::null)),
            (_, "whoami") => {
                let mut m = libshv::shvproto::Map::new();
                m.insert("path".into(), RpcValue::from(path.as_str()));
                m.insert("userId".into(), RpcValue::from(&*f.user_id()));
                m.insert(
                    "accessLevel".into(),
                    RpcValue::from(f.access_level().unwrap_or(-1)),
                );
                Ok(RpcValue::from(m))
            }
            _ => Err(RpcError::method_not_found(format!("{path}:{method}"))),
        })
    }
}

/// The next signal within [`TIMEOUT`] whose path is `path`.
async fn signal_on(rx: &mut SignalReceiver, path: &str) -> RpcMessage {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let m = rx.recv().await.expect("signal channel open");
            if m.to_frame().shv_path() == path {
                return m;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no signal on {path}"))
}

/// The client id the broker gave `client`.
async fn client_id(client: &Client) -> i64 {
    client
        .call(".broker/currentClient", "info", None)
        .await
        .expect("currentClient:info")
        .get("clientId")
        .expect("clientId")
        .as_int()
}
