//! Signals: put under the sender's mount point and delivered to the subscribers whose
//! RI matches and whose grant on the path reaches the signal's level.

use super::Out::*;
use super::Send::*;
use super::*;

const fn sig(
    setup: &'static [(&'static str, Send)],
    send: Send,
    decision: &'static str,
    expect: &'static [(&'static str, Out)],
) -> Case {
    Case::new(setup, "dev", send, decision, expect)
}

const VIEWER_ALL: &[(&str, Send)] = &[(
    "viewer",
    Req(
        ".broker/currentClient",
        "subscribe",
        Some("\"test/**:*:chng\""),
    ),
)];
const BROWSER_ALL: &[(&str, Send)] = &[(
    "browser",
    Req(
        ".broker/currentClient",
        "subscribe",
        Some("\"test/**:*:chng\""),
    ),
)];

table! {
    a_signal_reaches_a_subscriber_under_the_mount:
        sig(VIEWER_ALL, Signal("x", "chng", None), "publish", &[("viewer", Sig("test/dev/x", "chng"))]);
    a_signal_at_the_mount_point_itself:
        sig(VIEWER_ALL, Signal("", "chng", None), "publish", &[("viewer", Sig("test/dev", "chng"))]);
    a_signal_nobody_subscribed_goes_nowhere:
        sig(&[], Signal("x", "chng", None), "publish", &[]);
    another_signal_name_does_not_match:
        sig(VIEWER_ALL, Signal("x", "other", None), "publish", &[]);
    another_path_does_not_match:
        sig(&[("viewer", Req(".broker/currentClient", "subscribe", Some("\"test/dev2/**:*:*\"")))], Signal("x", "chng", None), "publish", &[]);
    a_read_signal_is_not_for_browsers:
        sig(BROWSER_ALL, Signal("x", "chng", None), "publish", &[]);
    a_signal_lowered_to_browse_reaches_browsers:
        sig(BROWSER_ALL, Signal("x", "chng", Some(BWS)), "publish", &[("browser", Sig("test/dev/x", "chng"))]);
    a_signal_below_browse_needs_browse:
        sig(BROWSER_ALL, Signal("x", "chng", Some(0)), "publish", &[("browser", Sig("test/dev/x", "chng"))]);
    a_signal_raised_to_write_is_not_for_readers:
        sig(VIEWER_ALL, Signal("x", "chng", Some(WR)), "publish", &[]);
    a_subscription_beyond_the_grant_gets_nothing:
        sig(&[("limited", Req(".broker/currentClient", "subscribe", Some("\"test/**:*:*\"")))], Signal("x", "chng", None), "publish", &[]);
    every_matching_subscriber_gets_it:
        sig(&[("viewer", Req(".broker/currentClient", "subscribe", Some("\"**:*:*\""))), ("admin", Req(".broker/currentClient", "subscribe", Some("\"test/dev/**:*:chng\"")))], Signal("x", "chng", None), "publish", &[("viewer", Sig("test/dev/x", "chng")), ("admin", Sig("test/dev/x", "chng"))]);
    an_unsubscribed_signal_is_not_delivered:
        sig(&[("viewer", Req(".broker/currentClient", "subscribe", Some("\"test/**:*:chng\""))), ("viewer", Req(".broker/currentClient", "unsubscribe", Some("\"test/**:*:chng\"")))], Signal("x", "chng", None), "publish", &[]);
    an_shv2_subscription_is_delivered:
        sig(&[("viewer", Req(".broker/app", "subscribe", Some("{\"method\":\"chng\",\"path\":\"test/dev\"}")))], Signal("x", "chng", None), "publish", &[("viewer", Sig("test/dev/x", "chng"))]);
    a_signal_with_a_bad_path_is_dropped:
        sig(VIEWER_ALL, Signal("x//y", "chng", None), "drop/BadSignalPath", &[]);
    a_signal_from_an_unmounted_client_is_dropped:
        Case { config: "", setup: VIEWER_ALL, from: "admin", send: Signal("test/dev/x", "chng", None), decision: "drop/UnmountedSignal", expect: &[] };
    a_subscriber_that_left_gets_nothing:
        sig(&[("viewer", Req(".broker/currentClient", "subscribe", Some("\"test/**:*:chng\""))), ("viewer", Gone)], Signal("x", "chng", None), "publish", &[]);
}

/// A device's CallerIds on a signal mean nothing to its subscribers: removed.
#[test]
fn a_signal_carries_no_caller_ids_on() {
    let mut w = World::new("");
    let f = w.build(&VIEWER_ALL[0].1);
    w.frame_from("viewer", f);
    w.drain_all();
    let mut f = w.build(&Signal("x", "chng", None));
    meta::push_id(&mut f.meta, tag::CALLER_IDS, 3);
    w.frame_from("dev", f);
    let got = w.drain("viewer");
    assert_eq!(got.len(), 1);
    assert!(got[0].meta.get(tag::CALLER_IDS).is_none());
}

/// A mount and an unmount are announced with `lsmod` on the parent node, to the
/// subscribers that may browse there.
#[test]
fn mounts_and_unmounts_are_announced() {
    let mut w = World::new("");
    let f = w.build(&Req(
        ".broker/currentClient",
        "subscribe",
        Some("\"test:*:lsmod\""),
    ));
    w.frame_from("browser", f);
    w.drain_all();
    w.login("dev3", Login::User("device", Some("test/dev3")))
        .unwrap();
    let got = w.drain("browser");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method(), Some("lsmod"));
    let m = RpcMessage::from_frame(&got[0]).unwrap();
    assert_eq!(m.param(), Some(&cpon("{\"dev3\":true}")));
    w.gone("dev3");
    let got = w.drain("browser");
    let m = RpcMessage::from_frame(&got[0]).unwrap();
    assert_eq!(m.param(), Some(&cpon("{\"dev3\":false}")));
}
