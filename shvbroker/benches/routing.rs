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

/// One client's maximum of subscriptions (`max_subscriptions`, 1024), each as long as
/// `max_ri_len` allows (1 KiB) and shaped to make the matcher work hardest: what one
/// read-only session can make the broker test against every signal.
fn ri_match_adversarial(c: &mut Criterion) {
    let mut g = c.benchmark_group("RI match, 1024 adversarial subscriptions of 1 KiB");
    type Shape = (&'static str, fn(usize) -> String);
    let shapes: [Shape; 3] = [
        ("many ** segments", |i| {
            format!("{}x{i}:*:*", "**/".repeat(338))
        }),
        ("stars in one segment", |i| {
            format!("**/{}b{i}:*:*", "*a".repeat(508))
        }),
        ("stars in the signal name", |i| {
            format!("**:*:{}b{i}", "*c".repeat(508))
        }),
    ];
    let path = black_box("site/area9/dev985/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/temp");
    for (name, make) in shapes {
        let subs: Vec<Ri> = (0..1024).map(|i| Ri::parse(&make(i))).collect();
        g.bench_function(name, |b| {
            b.iter(|| {
                subs.iter()
                    .filter(|ri| ri.matches_signal(path, "get", "chngchngchngchngchng"))
                    .count()
            })
        });
    }
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

criterion_group!(benches, ri_match, ri_match_adversarial, route);
criterion_main!(benches);
