//! Micro-benchmarks of the per-request hot pieces: path normalisation, route lookup, and the rate
//! limiter's check (per-caller limit + vendor-account quota, admitted, and vendor header reading).
//!
//! And translation: a page of CrowdStrike alerts to OCSF Detection Findings with validation, in
//! events per second on one core (`benches/translate.sh` sets it beside the `jq` command).
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

fn limiter(c: &mut Criterion) {
    use interlock::ratelimit::{Check, Exhausted, LimitSpec, Limiter, Quota, Scope, Window};
    use std::sync::Arc;
    use std::time::Duration;
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let l = Arc::new(Limiter::new(None));
    let w = |limit| vec![Window { limit, per: Duration::from_secs(1), burst: limit }];
    let caller =
        Arc::new(LimitSpec::new("route:r:caller", "caller", Scope::Caller, w(u64::MAX / 4), Exhausted::Reject, false));
    let quota = Quota {
        limit: Arc::new(LimitSpec::new(
            "upstream:u",
            "account",
            Scope::Account,
            w(u64::MAX / 4),
            Exhausted::Reject,
            false,
        )),
        dialect: interlock::ratelimit::vendor::Dialect::CrowdStrike,
        reserve: 0,
        pause_without_reset: Duration::from_secs(1),
        max_pause: Duration::from_secs(60),
    };
    let (u, cred): (Arc<str>, Arc<str>) = ("u".into(), "main".into());
    let checks = [
        Check { spec: caller.clone(), subject: "soar".into(), account: None },
        Check { spec: quota.limit.clone(), subject: cred.clone(), account: Some((u.clone(), cred.clone())) },
    ];
    let mut g = c.benchmark_group("ratelimit");
    g.bench_function("caller_and_account_admitted", |b| {
        b.iter(|| rt.block_on(async { l.acquire(black_box(&checks)).await.map(|a| a.delay()).ok() }))
    });
    g.bench_function("caller_and_account_with_headers", |b| {
        b.iter(|| {
            rt.block_on(async {
                let a = l.acquire(black_box(&checks)).await.ok()?;
                let mut h = http::HeaderMap::new();
                a.add_headers(&mut h);
                Some(h.len())
            })
        })
    });
    let mut vendor_headers = http::HeaderMap::new();
    vendor_headers.insert("x-ratelimit-limit", http::HeaderValue::from_static("6000"));
    vendor_headers.insert("x-ratelimit-remaining", http::HeaderValue::from_static("5123"));
    g.bench_function("observe_vendor_headers", |b| {
        b.iter(|| l.observe(&quota, &u, &cred, http::StatusCode::OK, black_box(&vendor_headers)))
    });
    g.finish();
}

/// A page of `n` CrowdStrike alerts built from the shipped fixture (ids varied per record).
pub fn crowdstrike_page(n: usize) -> Vec<u8> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/mappings/samples/crowdstrike/alerts-v2.json");
    let sample: serde_json::Value = serde_json::from_slice(&std::fs::read(root).unwrap()).unwrap();
    let records = sample["resources"].as_array().unwrap();
    let list: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut r = records[i % records.len()].clone();
            r["composite_id"] = format!("cid:ind:{i:08}").into();
            r["id"] = format!("ind:{i:08}").into();
            r
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"meta": sample["meta"], "resources": list, "errors": []})).unwrap()
}

fn translation(c: &mut Criterion) {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/mappings"));
    let mappings = interlock::config::load_mappings(dir).unwrap();
    let m = mappings.iter().find(|m| m.id == "crowdstrike-alerts-ocsf").unwrap();
    let page = crowdstrike_page(100);
    let mut g = c.benchmark_group("translate");
    g.throughput(criterion::Throughput::Elements(100));
    g.bench_function("crowdstrike_alerts_to_ocsf_validated_page_of_100", |b| {
        b.iter(|| m.apply(black_box(&page)).map(|(out, n)| (out.len(), n)).unwrap())
    });
    // Its parts, per alert: the jq program alone, and validation alone.
    let one: serde_json::Value = serde_json::from_slice::<serde_json::Value>(&page).unwrap()["resources"][0].clone();
    let out = m.program.run(&one).unwrap().remove(0);
    g.throughput(criterion::Throughput::Elements(1));
    g.bench_function("program_only", |b| b.iter(|| m.program.run(black_box(&one)).unwrap().len()));
    // The same program on jaq alone (what runs when the fast path hands over).
    g.bench_function("program_only_on_jaq", |b| b.iter(|| m.program.run_jaq(black_box(&one)).unwrap().len()));
    g.bench_function("validate_only", |b| b.iter(|| m.target.validate(black_box(&out)).len()));
    g.finish();
}

criterion_group!(benches, normalisation, routing, limiter, translation);
criterion_main!(benches);
