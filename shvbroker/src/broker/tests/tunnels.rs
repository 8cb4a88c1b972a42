//! Tunnels through the seam (spec/tunnel.md): a launch with `cmd` is hosted here, its
//! end logs in once with the secret, data pass both ways only along the tunnel and are
//! counted, and either end leaving closes it for the other.

use libshv::message::code::METHOD_NOT_FOUND;
use libshv::tunnel::{TunnelCtl, TunnelState};

use super::Out::*;
use super::Send::*;
use super::*;

/// The agent's answer to the launch it received: "find me a tunnel".
fn find_tunnel(w: &World) -> RpcFrame {
    let req = &w.last_request[&w.id("dev")];
    let mut f = RpcMessage::response_to(&req.meta).into_frame();
    f.meta.insert(
        tag::TUNNEL_CTL,
        TunnelCtl::new(TunnelState::FindTunnelRequest).to_value(),
    );
    f.meta.insert(tag::REV_CALLER_IDS, RpcValue::null());
    f
}

/// `caller` launches on the agent `dev`, which asks for a tunnel; returns what the
/// agent got back.
fn launch(w: &mut World, caller: &str) -> Vec<RpcFrame> {
    let f = w.build(&Req("test/dev", "launchRexec", Some("[\"sh\"]")));
    w.frame_from(caller, f);
    w.drain_all();
    let f = find_tunnel(w);
    w.frame_from("dev", f);
    w.drain("dev")
}

/// A hosted tunnel with its end (`rexec`) logged in and the tunnel created; returns the
/// launch's request id and the rexec end's request id for data towards it.
fn open(w: &mut World) -> (i64, i64) {
    let got = launch(w, "op");
    let ctl = TunnelCtl::from_frame(&got[0]).unwrap().unwrap();
    w.login(
        "rexec",
        Login::Tunnel(Box::leak(ctl.secret.unwrap().into_boxed_str())),
    )
    .expect("the secret logs in");
    let rid = w.last_request[&w.id("dev")].request_id().unwrap();
    // rexec → rsh: CreateTunnelRequest, naming the request id rsh is to answer to.
    let mut m = RpcMessage::response_to(&caller_meta(rid, w.id("op"))).into_frame();
    let mut ctl = TunnelCtl::new(TunnelState::CreateTunnelRequest);
    ctl.request_id = Some(9);
    m.meta.insert(tag::TUNNEL_CTL, ctl.to_value());
    m.meta.insert(tag::REV_CALLER_IDS, RpcValue::null());
    w.frame_from("rexec", m);
    assert_eq!(w.drain("op").len(), 1, "CreateTunnelRequest reaches rsh");
    (rid, 9)
}

fn caller_meta(rid: i64, caller: PeerId) -> shvproto::MetaMap {
    let mut meta = shvproto::MetaMap::new();
    meta.insert(tag::REQUEST_ID, RpcValue::from(rid));
    meta::push_id(&mut meta, tag::CALLER_IDS, caller);
    meta
}

fn data(rid: i64, to: PeerId) -> RpcFrame {
    RpcMessage::response_to(&caller_meta(rid, to))
        .with_result(RpcValue::from(bytes::Bytes::from_static(b"hello").to_vec()))
        .into_frame()
}

#[test]
fn a_launch_with_command_access_is_hosted_here() {
    let mut w = World::new("");
    let got = launch(&mut w, "op");
    assert_eq!(got.len(), 1);
    let ctl = TunnelCtl::from_frame(&got[0]).unwrap().unwrap();
    assert_eq!(ctl.state, TunnelState::FindTunnelResponse);
    assert!(ctl.secret.is_some_and(|s| s.len() >= 32));
    assert_eq!(ctl.caller_ids, vec![w.id("op")]);
    assert_eq!(w.broker.tunnels.iter().count(), 1);
}

#[test]
fn a_launch_at_read_level_gets_no_tunnel() {
    let mut w = World::new("");
    let got = launch(&mut w, "viewer");
    assert!(got.is_empty(), "the agent learns nothing");
    let to_viewer = w.drain("viewer");
    assert_eq!(to_viewer.len(), 1);
    let ctl = TunnelCtl::from_frame(&to_viewer[0]).unwrap().unwrap();
    assert_eq!(ctl.state, TunnelState::CloseTunnel);
    assert_eq!(w.broker.tunnels.iter().count(), 0);
}

#[test]
fn a_find_tunnel_request_answering_no_launch_is_dropped() {
    let mut w = World::new("");
    let f = w.build(&Req("test/dev/x", "get", None));
    w.frame_from("op", f);
    w.drain_all();
    let f = find_tunnel(&w);
    w.frame_from("dev", f);
    assert!(w.drain("dev").is_empty() && w.drain("op").is_empty());
    assert_eq!(w.broker.dropped_responses, 1);
}

#[test]
fn a_secret_logs_in_once() {
    let mut w = World::new("");
    let got = launch(&mut w, "op");
    let secret = TunnelCtl::from_frame(&got[0])
        .unwrap()
        .unwrap()
        .secret
        .unwrap();
    let secret: &'static str = Box::leak(secret.into_boxed_str());
    assert!(w.login("rexec", Login::Tunnel(secret)).is_ok());
    let again = w.login("rexec2", Login::Tunnel(secret)).unwrap_err();
    assert!(again.message.contains("not valid"));
}

#[test]
fn data_pass_both_ways_along_the_tunnel_and_are_counted() {
    let mut w = World::new("");
    let (rid, w_rid) = open(&mut w);
    let (op, rexec) = (w.id("op"), w.id("rexec"));
    let d = w.broker.decide(rexec, data(rid, op));
    assert_eq!(kind(&d), "forward/tunnel");
    w.frame_from("rexec", data(rid, op));
    assert_eq!(w.drain("op").len(), 1);
    w.frame_from("op", data(w_rid, rexec));
    assert_eq!(w.drain("rexec").len(), 1);
    let t = w.broker.tunnels.iter().next().unwrap();
    assert!(t.bytes_to_rsh > 0 && t.bytes_to_rexec > 0);
}

#[test]
fn nobody_else_can_send_into_a_tunnel() {
    let mut w = World::new("");
    let (rid, w_rid) = open(&mut w);
    let (op, rexec) = (w.id("op"), w.id("rexec"));
    let d = w.broker.decide(w.id("dev2"), data(rid, op));
    assert_eq!(kind(&d), "drop/Unsolicited");
    w.frame_from("dev2", data(rid, op));
    w.frame_from("viewer", data(w_rid, rexec));
    assert!(w.drain("op").is_empty() && w.drain("rexec").is_empty());
}

#[test]
fn a_tunnel_end_may_only_ping() {
    let mut w = World::new("");
    open(&mut w);
    run_from(
        &mut w,
        "rexec",
        Req(".app", "ping", None),
        &[Answer("null")],
    );
    run_from(
        &mut w,
        "rexec",
        Req("test/dev2/x", "get", None),
        &[Error(METHOD_NOT_FOUND, "a tunnel connection may only ping")],
    );
    assert!(w.drain("dev2").is_empty());
}

#[test]
fn the_operator_leaving_closes_the_tunnel_for_the_device() {
    let mut w = World::new("");
    open(&mut w);
    w.gone("op");
    let got = w.drain("rexec");
    assert_eq!(got.len(), 1);
    let ctl = TunnelCtl::from_frame(&got[0]).unwrap().unwrap();
    assert_eq!(ctl.state, TunnelState::CloseTunnel);
    assert_eq!(w.broker.tunnels.iter().count(), 0);
}

#[test]
fn the_device_closing_the_tunnel_tells_the_operator() {
    let mut w = World::new("");
    let (rid, _) = open(&mut w);
    let mut f = data(rid, w.id("op"));
    f.meta.insert(
        tag::TUNNEL_CTL,
        TunnelCtl::new(TunnelState::CloseTunnel).to_value(),
    );
    w.frame_from("rexec", f);
    let got = w.drain("op");
    assert_eq!(got.len(), 1);
    assert_eq!(w.broker.tunnels.iter().count(), 0);
}

/// Sends one frame and checks what the sender got back.
fn run_from(w: &mut World, alias: &str, send: Send, want: &[Out]) {
    let f = w.build(&send);
    w.frame_from(alias, f);
    let got = w.drain(alias);
    assert_eq!(got.len(), want.len());
    for (f, o) in got.iter().zip(want) {
        o.check(f).unwrap();
    }
}
