//! Responses: let back along CallerIds only when something authorizes them (a pending
//! request, exactly once; a tunnel), else dropped and counted.

use super::Out::*;
use super::Send::*;
use super::*;
use libshv::message::code::METHOD_NOT_FOUND;

const ASKED: &[(&str, Send)] = &[("admin", Req("test/dev/x", "get", None))];

const fn answer(
    setup: &'static [(&'static str, Send)],
    from: &'static str,
    send: Send,
    decision: &'static str,
    expect: &'static [(&'static str, Out)],
) -> Case {
    Case::new(setup, from, send, decision, expect)
}

table! {
    an_answer_goes_back_to_the_caller:
        answer(ASKED, "dev", Reply("dev", "42"), "forward/answer", &[("admin", Answer("42"))]);
    an_error_answer_goes_back_to_the_caller:
        answer(ASKED, "dev", ReplyError("dev", "nope"), "forward/answer", &[("admin", Error(METHOD_NOT_FOUND, "nope"))]);
    a_second_answer_is_dropped:
        answer(&[("admin", Req("test/dev/x", "get", None)), ("dev", Reply("dev", "1"))], "dev", Reply("dev", "2"), "drop/Unsolicited", &[]);
    an_answer_from_another_device_is_dropped:
        answer(&[("admin", Req("test/dev/x", "get", None)), ("viewer", Req("test/dev2/x", "get", None))], "dev2", Reply("dev", "1"), "drop/Unsolicited", &[]);
    an_answer_nobody_asked_for_is_dropped:
        answer(&[], "dev", Response(5, Some("admin")), "drop/Unsolicited", &[]);
    an_answer_to_a_caller_that_left_is_dropped:
        answer(&[("admin", Req("test/dev/x", "get", None)), ("admin", Gone)], "dev", Reply("dev", "1"), "drop/Unsolicited", &[]);
    a_caller_cannot_answer_its_own_request:
        answer(ASKED, "admin", Reply("dev", "1"), "drop/Unsolicited", &[]);
    an_answer_without_caller_ids_is_dropped:
        answer(&[], "dev", Response(5, None), "drop/NoCallerIds", &[]);
    a_parents_heartbeat_answer_is_quietly_dropped:
        answer(&[], "parent", Response(5, None), "drop/HeartbeatAnswer", &[]);
    the_answer_to_a_parent_goes_back_up:
        answer(&[("parent", Req("test/dev/x", "get", None))], "dev", Reply("dev", "7"), "forward/answer", &[("parent", Answer("7"))]);
    a_device_answering_a_broker_request_to_it:
        answer(&[("dev2", Req("test/dev/x", "get", None))], "dev", Reply("dev", "true"), "forward/answer", &[("dev2", Answer("true"))]);
}

/// Every dropped response is counted (the broker's API shows it); a heartbeat answer
/// is not a fault.
#[test]
fn dropped_responses_are_counted() {
    let mut w = World::new("");
    let f = w.build(&Response(5, Some("admin")));
    w.frame_from("dev", f);
    let f = w.build(&Response(6, None));
    w.frame_from("dev", f);
    let f = w.build(&Response(7, None));
    w.frame_from("parent", f);
    assert_eq!(w.broker.dropped_responses, 2);
}

/// A relayed answer keeps the CallerIds below the parent (the clients up the tree).
#[test]
fn a_relayed_answer_keeps_the_callers_below() {
    let mut w = World::new("");
    let mut f = w.build(&Req("test/dev/x", "get", None));
    meta::push_id(&mut f.meta, tag::CALLER_IDS, 77);
    w.frame_from("parent", f);
    w.drain_all();
    let f = w.build(&Reply("dev", "1"));
    w.frame_from("dev", f);
    let got = w.drain("parent");
    assert_eq!(got.len(), 1);
    assert_eq!(
        meta::stack_from_value(got[0].meta.get(tag::CALLER_IDS)),
        vec![77]
    );
}

/// A pending request whose device goes away is forgotten: the caller's place is free.
#[test]
fn a_device_that_leaves_frees_the_callers_places() {
    let mut w = World::new("limits: {max_pending: 1}\n");
    let f = w.build(&Req("test/dev/x", "get", None));
    w.frame_from("viewer", f);
    w.gone("dev");
    w.drain_all();
    let f = w.build(&Req("test/dev2/x", "get", None));
    w.frame_from("viewer", f);
    assert_eq!(w.drain("dev2").len(), 1);
}
