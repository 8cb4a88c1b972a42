//! Hot-path micro-benchmarks of the frame layer: meta-only parse and the CallerIds
//! stack a broker pushes on every request and pops on every response.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use libshv::meta::{self, tag};
use libshv::{RpcFrame, RpcValue};

fn chainpack(cpon: &str) -> Bytes {
    Bytes::from(
        RpcValue::from_cpon(cpon)
            .expect("valid cpon")
            .to_chainpack(),
    )
}

fn frame_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("RpcFrame::parse");
    // A request as a broker sees it after one hop.
    let request = chainpack(
        r#"<1:1,8:4242,9:"test/bench/some/node",10:"get",11:[3,5],16:"admin:shvbroker",17:63>i{1:42}"#,
    );
    // The body is not decoded: a 4 KiB result must cost the same as a small one.
    let big = format!(r#"<1:1,8:4242,11:7>i{{2:"{}"}}"#, "x".repeat(4096));
    let response = chainpack(&big);
    let signal = chainpack(r#"<1:1,9:"test/bench/x",10:"chng",19:"get">i{1:1234567890}"#);
    for (name, bytes) in [
        ("request", request),
        ("response 4KiB", response),
        ("signal", signal),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| RpcFrame::parse(black_box(bytes.clone())).expect("parses"))
        });
    }
    g.finish();
}

fn caller_ids(c: &mut Criterion) {
    let mut g = c.benchmark_group("CallerIds");
    for depth in [0usize, 1, 3] {
        let mut m = shvproto::MetaMap::new();
        m.insert(tag::META_TYPE_ID, RpcValue::from(1));
        m.insert(tag::REQUEST_ID, RpcValue::from(42));
        for i in 0..depth {
            meta::push_id(&mut m, tag::CALLER_IDS, i as i64 + 1);
        }
        g.bench_function(format!("push+pop on depth {depth}"), |b| {
            b.iter_batched_ref(
                || m.clone(),
                |m| {
                    meta::push_id(m, tag::CALLER_IDS, 99);
                    black_box(meta::pop_id(m, tag::CALLER_IDS))
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, frame_parse, caller_ids);
criterion_main!(benches);
