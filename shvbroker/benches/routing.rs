//! Broker routing micro-benchmarks: signal delivery's RI matching against 1000
//! subscriptions, and the request route lookup (longest mount prefix) with 10 000 mounts,
//! done by the broker's own mount table (`Mounts::route`).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use libshv::ri::Ri;
use shvbroker::mounts::Mounts;

fn ri_match(c: &mut Criterion) {
    let mut g = c.benchmark_group("RI match, 1000 subscriptions");
    // A realistic mix: exact paths, per-device globs and a few catch-alls at the end.
    let mut subs: Vec<Ri> = (0..990)
        .map(|i| match i % 3 {
            0 => Ri::parse(&format!("site/area{}/dev{i}:get:chng", i / 100)),
            1 => Ri::parse(&format!("site/area{}/dev{i}/**:*:chng", i / 100)),
            _ => Ri::parse(&format!("site/area{}/*/status:*:*", i / 100)),
        })
        .collect();
    subs.extend((0..10).map(|i| Ri::parse(&format!("other{i}/**:*:*"))));
    // Like `deliver_signal`: every subscription is tested (no early exit on a miss).
    g.bench_function("scan all, one matches", |b| {
        b.iter(|| {
            subs.iter()
                .filter(|ri| ri.matches_signal(black_box("site/area9/dev985/temp"), "get", "chng"))
                .count()
        })
    });
    g.bench_function("scan all, none matches", |b| {
        b.iter(|| {
            subs.iter()
                .filter(|ri| ri.matches_signal(black_box("nowhere/a/b/c"), "get", "chng"))
                .count()
        })
    });
    g.finish();
}

fn route(c: &mut Criterion) {
    let mut g = c.benchmark_group("Mounts::route, 10000 mounts");
    let mut mounts = Mounts::default();
    for i in 0..10_000i64 {
        mounts.insert(&format!("site/area{}/dev{i}", i / 100), i);
    }
    for (name, path) in [
        ("deep hit", "site/area57/dev5712/status/temp/value"),
        ("exact hit", "site/area57/dev5712"),
        ("miss", "site/area57/nodev/a/b"),
    ] {
        g.bench_function(name, |b| b.iter(|| mounts.route(black_box(path))));
    }
    g.finish();
}

criterion_group!(benches, ri_match, route);
criterion_main!(benches);
