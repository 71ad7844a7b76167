//! Micro-benchmarks of the per-request hot pieces: path normalisation and route lookup.
//!
//! `cargo bench --bench hot_paths`

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use interlock::proxy::normalize::normalize;
use interlock::proxy::router::{HostPattern, Lookup, RouterBuilder, Template};

fn normalisation(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize");
    g.bench_function("clean", |b| b.iter(|| normalize(black_box("/vt/api/v3/files/275a021bbfb6489e54d471899f7db9d1"))));
    g.bench_function("dirty", |b| b.iter(|| normalize(black_box("/vt//api/./v3/x/../files/%32%37%35a021bb%7e"))));
    g.finish();
}

/// 200 routes over 40 vendors, the shape of a large deployment.
fn router() -> interlock::proxy::router::Router {
    let mut b = RouterBuilder::default();
    let mut i = 0;
    for v in 0..40 {
        for (path, methods) in [
            (format!("/v{v}/files/{{hash}}"), Some(vec![Method::GET])),
            (format!("/v{v}/files/upload"), Some(vec![Method::POST])),
            (format!("/v{v}/alerts/{{id}}/comments"), None),
            (format!("/v{v}/users/{{id}}"), Some(vec![Method::GET, Method::DELETE])),
            (format!("/v{v}/**"), None),
        ] {
            let host = (v % 4 == 0).then(|| HostPattern::parse("api.corp.example").unwrap());
            b.add(i, Template::parse(&path).unwrap(), host, methods);
            i += 1;
        }
    }
    b.build()
}

fn routing(c: &mut Criterion) {
    let r = router();
    let mut g = c.benchmark_group("router_200_routes");
    g.bench_function("param_hit", |b| {
        b.iter(|| match r.lookup(black_box("gw"), &Method::GET, black_box("/v37/files/275a021bbfb6489e")) {
            Lookup::Found(m) => m.route,
            _ => usize::MAX,
        })
    });
    g.bench_function("prefix_fallback", |b| {
        b.iter(|| match r.lookup(black_box("gw"), &Method::GET, black_box("/v21/some/deep/path/x")) {
            Lookup::Found(m) => m.route,
            _ => usize::MAX,
        })
    });
    g.bench_function("miss", |b| {
        b.iter(|| matches!(r.lookup(black_box("gw"), &Method::GET, black_box("/nope/x")), Lookup::NotFound))
    });
    g.finish();
}

criterion_group!(benches, normalisation, routing);
criterion_main!(benches);
