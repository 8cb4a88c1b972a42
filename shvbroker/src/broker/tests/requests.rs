//! Requests: access checked and lowered, paths canonical, routed by the longest mount
//! prefix or answered from the broker's own tree, and the limits on what is forwarded.

use super::Out::*;
use super::Send::*;
use super::*;
use libshv::message::code::{INVALID_PARAM, METHOD_NOT_FOUND, TRY_AGAIN_LATER};
use libshv::meta::tag;

const NONE: &[(&str, Send)] = &[];

const fn req(
    from: &'static str,
    send: Send,
    decision: &'static str,
    expect: &'static [(&'static str, Out)],
) -> Case {
    Case::new(NONE, from, send, decision, expect)
}

table! {
    admin_reaches_a_device_with_its_level:
        req("admin", Req("test/dev/x", "get", None), "forward/expect", &[("dev", Call("x", "get", SU))]);
    viewer_reaches_a_device_with_read:
        req("viewer", Req("test/dev/x", "get", None), "forward/expect", &[("dev", Call("x", "get", RD))]);
    browser_reaches_a_device_with_browse:
        req("browser", Req("test/dev/x", "ls", None), "forward/expect", &[("dev", Call("x", "ls", BWS))]);
    the_mount_point_itself_is_the_device_root:
        req("viewer", Req("test/dev", "ls", None), "forward/expect", &[("dev", Call("", "ls", RD))]);
    the_longest_mount_prefix_wins:
        req("viewer", Req("test/dev2/a/b", "get", None), "forward/expect", &[("dev2", Call("a/b", "get", RD))]);
    a_role_per_subtree_gives_its_level:
        req("op", Req("test/dev/x", "run", None), "forward/expect", &[("dev", Call("x", "run", CMD))]);
    a_stated_lower_level_is_kept:
        req("admin", ReqMeta("test/dev/x", "get", tag::ACCESS_LEVEL, "8"), "forward/expect", &[("dev", Call("x", "get", RD))]);
    a_stated_higher_level_is_lowered_to_the_grant:
        req("viewer", ReqMeta("test/dev/x", "set", tag::ACCESS_LEVEL, "63"), "forward/expect", &[("dev", Call("x", "set", RD))]);
    a_level_between_names_is_floored_to_a_named_one:
        req("admin", ReqMeta("test/dev/x", "get", tag::ACCESS_LEVEL, "20"), "forward/expect", &[("dev", Call("x", "get", WR))]);
    a_parent_states_its_level:
        req("parent", ReqMeta("test/dev/x", "get", tag::ACCESS_LEVEL, "24"), "forward/expect", &[("dev", Call("x", "get", CMD))]);
    a_parent_with_an_access_string_only:
        req("parent", ReqMeta("test/dev/x", "get", tag::ACCESS, "\"wr\""), "forward/expect", &[("dev", Call("x", "get", WR))]);
    a_parent_that_states_nothing_gets_browse:
        req("parent", Req("test/dev/x", "get", None), "forward/expect", &[("dev", Call("x", "get", BWS))]);
    no_grant_is_refused:
        req("limited", Req("test/dev/x", "get", None), "refuse", &[("limited", Error(METHOD_NOT_FOUND, "access denied: no grant"))]);
    a_grant_elsewhere_does_not_reach_the_broker_nodes:
        req("limited", Req(".broker/client", "ls", None), "refuse", &[("limited", Error(METHOD_NOT_FOUND, "access denied"))]);
    a_double_slash_is_refused:
        req("admin", Req("test//dev/x", "get", None), "refuse", &[("admin", Error(METHOD_NOT_FOUND, "invalid path"))]);
    a_dot_segment_is_refused:
        req("admin", Req("test/./dev", "get", None), "refuse", &[("admin", Error(METHOD_NOT_FOUND, "invalid path"))]);
    a_dot_dot_segment_is_refused:
        req("admin", Req("test/dev2/../dev", "get", None), "refuse", &[("admin", Error(METHOD_NOT_FOUND, "invalid path"))]);
    a_trailing_slash_is_refused:
        req("admin", Req("test/dev/", "get", None), "refuse", &[("admin", Error(METHOD_NOT_FOUND, "invalid path"))]);
    a_path_longer_than_the_bound_is_refused:
        req("admin", Frame(|_| RpcMessage::new_request(1, &"a/".repeat(3000), "get", None).into_frame()), "refuse", &[("admin", Error(METHOD_NOT_FOUND, "path longer than"))]);
    a_path_nothing_serves_is_answered_here:
        req("admin", Req("nothing/here", "get", None), "local", &[("admin", Error(METHOD_NOT_FOUND, "no such path"))]);
    a_node_above_mounts_lists_them:
        req("viewer", Req("test", "ls", None), "local", &[("viewer", Answer("[\"dev\",\"dev2\"]"))]);
    the_root_lists_the_broker_nodes_and_mounts:
        req("viewer", Req("", "ls", None), "local", &[("viewer", Answer("[\".app\",\".broker\",\"test\"]"))]);
    app_name:
        req("viewer", Req(".app", "name", None), "local", &[("viewer", Answer("\"shvbroker\""))]);
    app_shv_version_major:
        req("browser", Req(".app", "shvVersionMajor", None), "local", &[("browser", Answer("3"))]);
    app_ping_for_anyone_logged_in:
        req("limited", Req(".app", "ping", None), "local", &[("limited", Answer("null"))]);
    broker_name_is_the_configured_one:
        req("admin", Req(".broker", "name", None), "local", &[("admin", Answer("\"core\""))]);
    a_method_the_node_lacks:
        req("admin", Req(".app", "nosuch", None), "local", &[("admin", Error(METHOD_NOT_FOUND, "no method 'nosuch'"))]);
    a_method_above_the_callers_level:
        req("browser", Req(".broker", "clients", None), "local", &[("browser", Error(METHOD_NOT_FOUND, "needs 'ssrv', you have 'bws'"))]);
    a_reader_does_not_list_the_clients:
        req("viewer", Req(".broker", "clients", None), "local", &[("viewer", Error(METHOD_NOT_FOUND, "needs 'ssrv', you have 'rd'"))]);
    mounts_are_listed_for_admins:
        req("admin", Req(".broker", "mounts", None), "local", &[("admin", Answer("[\"test/dev\",\"test/dev2\"]"))]);
    tunnels_are_listed_for_admins:
        req("admin", Req(".broker/tunnels", "list", None), "local", &[("admin", Answer("[]"))]);
    tunnels_are_not_listed_for_readers:
        req("viewer", Req(".broker/tunnels", "list", None), "local", &[("viewer", Error(METHOD_NOT_FOUND, "needs"))]);
    the_current_client_is_for_everyone_logged_in:
        req("limited", Req(".broker/currentClient", "info", None), "local", &[("limited", AnyAnswer)]);
    dir_of_a_broker_node:
        req("viewer", Req(".app", "dir", None), "local", &[("viewer", AnyAnswer)]);
    mounted_client_info_names_the_device:
        req("admin", Req(".broker", "mountedClientInfo", Some("\"test/dev\"")), "local", &[("admin", AnyAnswer)]);
    a_bad_parameter_to_a_broker_method:
        req("admin", Req(".broker", "clientInfo", Some("\"six\"")), "local", &[("admin", Error(INVALID_PARAM, ""))]);
    a_broker_method_parameter_that_does_not_decode:
        req("admin", ReqRaw(".broker", "clientInfo", &[0x8a, 0x41, 0x42]), "refuse", &[("admin", Error(INVALID_PARAM, "cannot decode request"))]);
    a_too_large_parameter_to_the_broker_itself:
        req("admin", ReqBody(".broker", "clientInfo", 100_000), "refuse", &[("admin", Error(INVALID_PARAM, "at most"))]);
    a_too_large_launch_is_not_forwarded:
        req("op", ReqBody("test/dev", "launchRexec", 70_000), "refuse", &[("op", Error(INVALID_PARAM, "launchRexec parameters of more than"))]);
    a_too_large_run_cmd_is_not_forwarded:
        req("op", ReqBody("test/dev", "runCmd", 70_000), "refuse", &[("op", Error(INVALID_PARAM, "runCmd parameters of more than"))]);
    a_client_tree_through_the_broker_for_admins:
        req("admin", Frame(|w| RpcMessage::new_request(1, &format!(".broker/client/{}/x", w.id("dev")), "get", None).into_frame()), "forward/expect", &[("dev", Call("x", "get", SU))]);
    a_client_tree_is_not_for_readers:
        req("viewer", Frame(|w| RpcMessage::new_request(1, &format!(".broker/client/{}/x", w.id("dev")), "get", None).into_frame()), "refuse", &[("viewer", Error(METHOD_NOT_FOUND, "needs 'ssrv'"))]);
    the_parent_link_is_no_client_tree:
        req("admin", Frame(|w| RpcMessage::new_request(1, &format!(".broker/client/{}/x", w.id("parent")), "get", None).into_frame()), "local", &[("admin", Error(METHOD_NOT_FOUND, "no such path"))]);
    clients_are_listed_for_admins:
        req("admin", Req(".broker/client", "ls", None), "local", &[("admin", Answer("[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\"]"))]);
    a_second_request_over_the_pending_bound:
        Case { config: "limits: {max_pending: 1}\n", setup: &[("viewer", Req("test/dev/x", "get", None))], from: "viewer", send: Req("test/dev/y", "get", None), decision: "refuse", expect: &[("viewer", Error(TRY_AGAIN_LATER, "too many requests waiting"))] };
    the_pending_bound_is_per_user_over_connections:
        Case { config: "limits: {max_pending_per_user: 1}\n", setup: &[("dev", Req("test/dev2/x", "get", None))], from: "dev2", send: Req("test/dev/y", "get", None), decision: "refuse", expect: &[("dev2", Error(TRY_AGAIN_LATER, "too many requests waiting"))] };
    an_answered_request_frees_its_place:
        Case { config: "limits: {max_pending: 1}\n", setup: &[("viewer", Req("test/dev/x", "get", None)), ("dev", Reply("dev", "1"))], from: "viewer", send: Req("test/dev/y", "get", None), decision: "forward/expect", expect: &[("dev", Call("y", "get", RD))] };
}

/// What a forwarded request carries besides path and level: the caller pushed on
/// CallerIds and the user chain extended, the body untouched.
#[test]
fn a_forwarded_request_names_its_caller_and_user() {
    let mut w = World::new("");
    let f = w.build(&Req("test/dev/x", "get", Some("[1,2,3]")));
    let body = f.body.clone();
    w.frame_from("op", f);
    let got = w.drain("dev");
    assert_eq!(got.len(), 1);
    let f = &got[0];
    assert_eq!(
        meta::stack_from_value(f.meta.get(tag::CALLER_IDS)),
        vec![w.id("op")]
    );
    assert_eq!(f.user_id(), "op:core");
    assert_eq!(f.meta.get(tag::ACCESS).map(|v| v.as_str()), Some("cmd"));
    assert_eq!(f.body, body, "bodies are forwarded untouched");
}

/// A parent relays for clients up the tree: their CallerIds stay below ours, and the
/// parent's user chain is extended with our name only.
#[test]
fn a_relayed_request_keeps_the_callers_below() {
    let mut w = World::new("");
    let mut f = w.build(&ReqMeta("test/dev/x", "get", tag::ACCESS_LEVEL, "8"));
    meta::push_id(&mut f.meta, tag::CALLER_IDS, 77);
    f.meta.insert(tag::USER_ID, RpcValue::from("alice:central"));
    w.frame_from("parent", f);
    let got = w.drain("dev");
    assert_eq!(
        meta::stack_from_value(got[0].meta.get(tag::CALLER_IDS)),
        vec![77, w.id("parent")]
    );
    assert_eq!(got[0].user_id(), "alice:central;core");
}

/// A device whose queue is half full gets no more requests: callers are told to try
/// later, and the device is never cut off for what they send it.
#[test]
fn a_busy_device_is_spared() {
    let mut w = World::empty("");
    w.login("viewer", Login::User("viewer", None)).unwrap();
    w.login_with_queue("dev", Login::User("device", Some("test/dev")), 4)
        .unwrap();
    w.drain_all();
    let mut refused = 0;
    for _ in 0..6 {
        let f = w.build(&Req("test/dev/x", "get", None));
        w.frame_from("viewer", f);
        refused += w
            .drain("viewer")
            .iter()
            .filter(|f| Error(TRY_AGAIN_LATER, "busy").check(f).is_ok())
            .count();
    }
    assert!(refused > 0, "no request was refused");
    assert!(
        w.broker.peers.contains_key(&w.id("dev")),
        "the device stays"
    );
    assert!(w.drain("dev").len() <= 4);
}

/// A frame still on its way from a peer that is gone is dropped, not routed: its
/// sender's grants and mount are gone with it.
#[test]
fn a_request_from_a_gone_peer_is_dropped() {
    let mut w = World::new("");
    let f = w.build(&Req("test/dev/x", "get", None));
    let gone: PeerId = i64::MAX;
    assert_eq!(kind(&w.broker.decide(gone, f.clone())), "drop/GoneSender");
    w.frame_from_id(gone, f);
    assert!(w.drain("dev").is_empty());
}
