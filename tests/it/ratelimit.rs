//! Rate limits and vendor quotas through the real gateway: counting, isolation, the 429 answer and
//! its headers, queueing, pacing from the vendor's own headers, and Redis-shared quotas.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::support::*;

const KEYS: [(&str, &str); 3] = [
    ("edr-tool", "ilk_rl_edr_tool_00000000000000000"),
    ("soar", "ilk_rl_soar_1111111111111111111111"),
    ("siem", "ilk_rl_siem_2222222222222222222222"),
];

fn callers(p: &Policies) {
    p.callers_with_keys(&KEYS, "tools");
}

async fn as_caller(base: &str, who: &str, path: &str) -> (StatusCode, http::HeaderMap, String) {
    let key = KEYS.iter().find(|k| k.0 == who).unwrap().1;
    let req = Request::get(format!("{base}{path}")).header("x-api-key", key).body(empty()).unwrap();
    call(&h1_client(), req).await
}

fn route(id: &str, upstream: &str, extra: &str) -> String {
    format!("- id: {id}\n  match:\n    path: /{id}/**\n  upstream: {upstream}\n  rewrite: /**\n  allow: [group:tools]\n{extra}")
}

/// A vendor that enforces its own quota of `limit` calls per `window` and says so in
/// `X-RateLimit-*` headers (or, with `retry_after` set, answers 429 + Retry-After to everything).
#[derive(Clone)]
struct Vendor {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Instant>>>,
    retry_after: Arc<AtomicU64>,
}

impl Vendor {
    async fn start(limit: u64, window: Duration) -> Vendor {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let v =
            Vendor { addr: tcp.local_addr().unwrap(), log: Arc::default(), retry_after: Arc::new(AtomicU64::new(0)) };
        let state = v.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let now = Instant::now();
                            let since = now.duration_since(started);
                            let win = (since.as_nanos() / window.as_nanos()) as u32;
                            let window_end = window * (win + 1);
                            let used = {
                                let mut log = state.log.lock().unwrap();
                                log.push(now);
                                log.iter()
                                    .filter(|t| {
                                        (t.duration_since(started).as_nanos() / window.as_nanos()) as u32 == win
                                    })
                                    .count() as u64
                            };
                            let mut res = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                            let ra = state.retry_after.load(Ordering::SeqCst);
                            if ra > 0 {
                                *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                                res.headers_mut().insert("retry-after", ra.into());
                                return Ok::<_, std::convert::Infallible>(res);
                            }
                            let reset = (window_end - since).as_secs_f64().ceil() as u64;
                            let h = res.headers_mut();
                            h.insert("x-ratelimit-limit", limit.into());
                            h.insert("x-ratelimit-remaining", limit.saturating_sub(used).into());
                            h.insert("x-ratelimit-reset", reset.into());
                            if used > limit {
                                *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                            }
                            Ok(res)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        v
    }

    fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admitted_requests_match_the_limit_and_callers_are_isolated() {
    let up = Upstream::start().await;
    let p = Policies::new("");
    callers(&p);
    p.upstream("v", up.addr, "", "");
    p.write("routes/r.yaml", &route("lookup", "v", "  rate_limit:\n    per_caller: [10/1s]\n"));
    let gw = Running::start(p).await;
    let base = format!("http://{}", gw.addr);

    // The noisy caller offers 40 requests a second for 2 s against 10/s (burst 10).
    let started = Instant::now();
    let mut admitted = 0;
    let mut refused = 0;
    for i in 0..80u32 {
        let due = started + Duration::from_millis(25) * i;
        tokio::time::sleep_until(due).await;
        let (s, h, b) = as_caller(&base, "edr-tool", "/lookup/x").await;
        match s.as_u16() {
            200 => admitted += 1,
            429 => {
                refused += 1;
                assert_problem(s, &h, &b, 429, "rate-limited");
            }
            other => panic!("unexpected {other}: {b}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // GCRA admits the burst plus one per emission interval (100 ms) of elapsed time.
    let expected = 10.0 + elapsed * 10.0;
    assert!(
        (admitted as f64) <= expected + 1.0 && (admitted as f64) >= expected - 3.0,
        "admitted {admitted} in {elapsed:.2}s, expected about {expected:.0}"
    );
    assert_eq!(admitted + refused, 80);
    assert_eq!(up.count(), admitted, "refused calls never reach the vendor");
    // The quiet caller still has its whole allowance.
    for _ in 0..10 {
        let (s, _, b) = as_caller(&base, "soar", "/lookup/x").await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let m = get(&format!("http://{}/metrics", gw.admin)).await.2;
    assert!(
        m.contains("interlock_ratelimit_decisions_total{limit=\"route:lookup:caller\",outcome=\"rejected\"}"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_carry_retry_after_and_ratelimit_headers() {
    let up = Upstream::start().await;
    let p = Policies::new("");
    callers(&p);
    p.upstream("v", up.addr, "", "");
    p.write("routes/r.yaml", &route("lookup", "v", "  rate_limit:\n    per_caller: [2/1m, 100/1d]\n"));
    let gw = Running::start(p).await;
    let base = format!("http://{}", gw.addr);
    let (s, h, _) = as_caller(&base, "siem", "/lookup/a").await;
    assert_eq!(s, StatusCode::OK);
    let policy: Vec<&str> = h.get_all("ratelimit-policy").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(policy, ["\"caller-1m\";q=2;w=60, \"caller-1d\";q=100;w=86400"]);
    let rl = h["ratelimit"].to_str().unwrap();
    assert!(rl.starts_with("\"caller-1m\";r=1;t=30, \"caller-1d\";r=99;t="), "{rl}");
    as_caller(&base, "siem", "/lookup/a").await;
    let (s, h, b) = as_caller(&base, "siem", "/lookup/a").await;
    let v = assert_problem(s, &h, &b, 429, "rate-limited");
    assert!(v["detail"].as_str().unwrap().contains("2/1m and 100/1d"), "{v}");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((29..=30).contains(&retry), "Retry-After {retry}");
    assert_eq!(h["ratelimit-policy"], "\"caller-1m\";q=2;w=60, \"caller-1d\";q=100;w=86400");
    let rl = h["ratelimit"].to_str().unwrap();
    assert!(rl.starts_with("\"caller-1m\";r=0;t=60, \"caller-1d\";r=98;"), "{rl}");
    assert_eq!(up.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_requests_are_delayed_in_order_never_beyond_the_max_wait() {
    let up = Upstream::start().await;
    let p = Policies::new("");
    callers(&p);
    p.upstream("v", up.addr, "", "");
    let limits = "  rate_limit:\n    total: [{ limit: 2, per: 1s, burst: 1 }]\n";
    p.write(
        "routes/r.yaml",
        &(route("q", "v", &format!("{limits}    on_exhausted: {{ queue: 1200ms, max_queued: 10 }}\n"))
            + &route("small", "v", &format!("{limits}    on_exhausted: {{ queue: 5s, max_queued: 1 }}\n"))),
    );
    let gw = Running::start(p).await;
    let base = format!("http://{}", gw.addr);

    // One goes at once, then one every 500 ms; those that would wait more than 1.2 s get 429 at once.
    let started = Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move {
                let r = as_caller(&base, "soar", "/q/x").await;
                (r.0, started.elapsed())
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let mut ok: Vec<Duration> = results.iter().filter(|r| r.0 == StatusCode::OK).map(|r| r.1).collect();
    ok.sort();
    let refused: Vec<Duration> = results.iter().filter(|r| r.0 == StatusCode::TOO_MANY_REQUESTS).map(|r| r.1).collect();
    assert_eq!(ok.len(), 3, "{results:?}");
    assert_eq!(refused.len(), 2, "{results:?}");
    assert!(ok[0] < Duration::from_millis(300), "{ok:?}");
    assert!(ok[1] >= Duration::from_millis(450) && ok[1] < Duration::from_millis(900), "{ok:?}");
    assert!(ok[2] >= Duration::from_millis(950) && ok[2] < Duration::from_millis(1500), "{ok:?}");
    assert!(refused.iter().all(|d| *d < Duration::from_millis(400)), "refusals are immediate: {refused:?}");

    // A full queue refuses at once with its own type.
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let base = base.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50 * i)).await;
                as_caller(&base, "soar", "/small/x").await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let (s, h, b) = t.await.unwrap();
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert_problem(s, &h, &b, 429, "rate-limit-queue-full");
        }
        statuses.push(s.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_the_queue_gives_its_place_back() {
    let up = Upstream::start().await;
    let p = Policies::new("");
    callers(&p);
    p.upstream("v", up.addr, "", "");
    p.write(
        "routes/r.yaml",
        &route(
            "q",
            "v",
            "  rate_limit:\n    total: [{ limit: 1, per: 1s, burst: 1 }]\n    on_exhausted: { queue: 5s }\n",
        ),
    );
    let gw = Running::start(p).await;
    let base = format!("http://{}", gw.addr);
    assert_eq!(as_caller(&base, "soar", "/q/first").await.0, StatusCode::OK);
    // The second waits ~1 s; its client gives up after 200 ms.
    let b2 = base.clone();
    let gave_up =
        tokio::time::timeout(Duration::from_millis(200), async move { as_caller(&b2, "soar", "/q/left").await }).await;
    assert!(gave_up.is_err());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The third takes the second's place: ~1 s after the first, not ~2 s.
    let started = Instant::now();
    assert_eq!(as_caller(&base, "soar", "/q/third").await.0, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(1100), "waited {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let uris: Vec<String> = up.seen.lock().unwrap().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(uris, ["/first", "/third"], "the abandoned request was never sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_vendor_account_is_one_bucket_for_every_caller_and_route() {
    let up = Upstream::start().await;
    let p = Policies::new("");
    callers(&p);
    p.upstream("v", up.addr, "", "quota:\n  limits: [3/1m]\n");
    p.write("routes/r.yaml", &(route("a", "v", "") + &route("b", "v", "")));
    let gw = Running::start(p).await;
    let base = format!("http://{}", gw.addr);
    assert_eq!(as_caller(&base, "edr-tool", "/a/1").await.0, StatusCode::OK);
    assert_eq!(as_caller(&base, "soar", "/b/1").await.0, StatusCode::OK);
    assert_eq!(as_caller(&base, "siem", "/a/1").await.0, StatusCode::OK);
    for who in ["edr-tool", "soar", "siem"] {
        let (s, h, b) = as_caller(&base, who, "/b/2").await;
        let v = assert_problem(s, &h, &b, 429, "rate-limited");
        assert!(v["detail"].as_str().unwrap().contains("vendor account"), "{v}");
        assert_eq!(h["ratelimit-policy"], "\"account-1m\";q=3;w=60");
    }
    assert_eq!(up.count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn remaining_zero_from_the_vendor_pauses_every_caller_until_the_reset() {
    let vendor = Vendor::start(3, Duration::from_secs(2)).await;
    let p = Policies::new("");
    callers(&p);
    p.upstream("v", vendor.addr, "", "quota:\n  headers: x-ratelimit\n");
    p.write("routes/r.yaml", &route("a", "v", ""));
    let gw = Running::start(p).await;
    let base = format!("http://{}", gw.addr);
    // Align with the vendor's window so all three calls fall in one.
    let mut sent = 0;
    loop {
        let (s, h, _) = as_caller(&base, "edr-tool", "/a/x").await;
        assert_eq!(s, StatusCode::OK);
        sent += 1;
        if h["x-ratelimit-remaining"] == "0" {
            break;
        }
        assert!(sent < 10);
    }
    let at_vendor = vendor.count();
    // Every caller is now held back without the vendor seeing a call.
    for who in ["soar", "siem", "edr-tool"] {
        let (s, h, b) = as_caller(&base, who, "/a/x").await;
        assert_problem(s, &h, &b, 429, "vendor-quota-exhausted");
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "Retry-After {retry}");
    }
    assert_eq!(vendor.count(), at_vendor);
    let view: serde_json::Value =
        serde_json::from_str(&get(&format!("http://{}/upstreams", gw.admin)).await.2).unwrap();
    let acct = &view["upstreams"][0]["accounts"][0];
    assert_eq!(acct["remaining"], 0, "{view}");
    assert_eq!(acct["limit"], 3);
    assert!(acct["paused_until"].is_string(), "{view}");
    // After the reset, calls flow again.
    let (s, h, _) = as_caller(&base, "soar", "/a/x").await;
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(100)).await;
    assert_eq!(as_caller(&base, "soar", "/a/x").await.0, StatusCode::OK);
    assert_eq!(vendor.count(), at_vendor + 1);
    // No vendor 429 was ever collected.
    let m = get(&format!("http://{}/metrics", gw.admin)).await.2;
    assert!(m.contains("interlock_vendor_quota_pauses_total{upstream=\"v\",credential=\"-\"} 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_with_retry_after_holds_calls_and_queued_ones_resume_after_it() {
    let vendor = Vendor::start(1000, Duration::from_secs(60)).await;
    let p = Policies::new("");
    callers(&p);
    p.upstream("v", vendor.addr, "", "quota:\n  headers: none\n  on_exhausted: { queue: 3s }\n");
    p.write("routes/r.yaml", &route("a", "v", ""));
    let gw = Running::start(p).await;
    let base = format!("http://{}", gw.addr);
    vendor.retry_after.store(2, Ordering::SeqCst);
    let (s, h, _) = as_caller(&base, "edr-tool", "/a/x").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "the vendor's own 429 passes through");
    assert_eq!(h["retry-after"], "2");
    vendor.retry_after.store(0, Ordering::SeqCst);
    // Queued, not sent, until the vendor's Retry-After has passed.
    let started = Instant::now();
    let (s, _, b) = as_caller(&base, "soar", "/a/x").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1700) && waited < Duration::from_millis(2800), "waited {waited:?}");
    assert_eq!(vendor.count(), 2);
}

fn redis_available() -> bool {
    std::net::TcpStream::connect_timeout(&"127.0.0.1:6379".parse().unwrap(), Duration::from_millis(300)).is_ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateway_processes_share_one_vendor_quota_through_redis() {
    if !redis_available() {
        skipped(
            "two_gateway_processes_share_one_vendor_quota_through_redis",
            "no Redis on 127.0.0.1:6379 (.ci/run starts one)",
        );
        return;
    }
    let up = Upstream::start().await;
    let prefix = format!("it{}", fastrand::u64(..));
    let mut procs = Vec::new();
    let mut bases = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let (port, admin) = (free_port(), free_port());
        let p = Policies::new("");
        p.write(
            "gateway.yaml",
            // A generous Redis timeout: on a loaded CI machine the default 100 ms can pass, and
            // fail-open would then admit locally (this test is about sharing, not about that).
            &format!("listeners:\n  - bind: 127.0.0.1:{port}\nadmin:\n  bind: 127.0.0.1:{admin}\ncluster:\n  redis:\n    url: redis://127.0.0.1:6379/0\n    key_prefix: {prefix}\n    timeout: 2s\n"),
        );
        callers(&p);
        p.upstream("v", up.addr, "", "quota:\n  limits: [20/1m]\n");
        p.write("routes/r.yaml", &route("a", "v", ""));
        let child = std::process::Command::new(bin())
            .args(["run", "--config"])
            .arg(p.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        procs.push(KillOnDrop(child));
        bases.push(format!("http://127.0.0.1:{port}"));
        dirs.push(p);
        let ready = format!("http://127.0.0.1:{admin}/readyz");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = tokio::time::timeout(Duration::from_millis(500), h1_client().get(ready.parse().unwrap())).await;
            if matches!(ok, Ok(Ok(r)) if r.status() == StatusCode::OK) {
                break;
            }
            assert!(Instant::now() < deadline, "gateway did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // One call through each replica first (each has its Redis connection up and draws on the
    // quota), then 58 more spread over both, concurrently: together they stay within 20.
    let mut admitted = [0; 2];
    for (i, base) in bases.iter().enumerate() {
        assert_eq!(as_caller(base, KEYS[0].0, "/a/x").await.0, StatusCode::OK);
        admitted[i] += 1;
    }
    let tasks: Vec<_> = (2..60)
        .map(|i| {
            let base = bases[i % 2].clone();
            let who = KEYS[i % 3].0;
            tokio::spawn(async move { as_caller(&base, who, "/a/x").await.0 })
        })
        .collect();
    for (i, t) in (2..).zip(tasks) {
        if t.await.unwrap() == StatusCode::OK {
            admitted[i % 2] += 1;
        }
    }
    assert_eq!(admitted[0] + admitted[1], 20, "{admitted:?}");
    assert!(admitted[0] > 0 && admitted[1] > 0, "both replicas drew on the quota: {admitted:?}");
    assert_eq!(up.count(), 20);
}

/// A private redis-server this test can stop and start.
struct PrivateRedis {
    child: Option<KillOnDrop>,
}

impl PrivateRedis {
    fn start(port: u16) -> Option<PrivateRedis> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(PrivateRedis { child: Some(KillOnDrop(child)) })
    }

    fn stop(&mut self) {
        self.child = None;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_fails_open_or_closed_as_configured_and_recovers() {
    let port = free_port();
    let Some(mut redis) = PrivateRedis::start(port) else {
        skipped(
            "redis_outage_fails_open_or_closed_as_configured_and_recovers",
            "redis-server is not installed (apt install redis-server)",
        );
        return;
    };
    let up = Upstream::start().await;
    let p = Policies::new(&format!(
        "cluster:\n  redis:\n    url: redis://127.0.0.1:{port}/0\n    timeout: 200ms\n    on_unavailable: local\n"
    ));
    callers(&p);
    p.upstream("open", up.addr, "", "quota:\n  limits: [5/1m]\n");
    p.write("routes/r.yaml", &route("open", "open", ""));
    let gw = Running::start(p).await;
    let base = format!("http://{}", gw.addr);
    for _ in 0..2 {
        assert_eq!(as_caller(&base, "soar", "/open/x").await.0, StatusCode::OK);
    }
    // The shared state is in Redis.
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("interlock:*").query_async(&mut conn).await.unwrap();
    assert!(keys.iter().any(|k| k.contains("upstream:open")), "{keys:?}");

    redis.stop();
    // Fail open: the local limiter takes over (it still limits), nothing panics, errors are counted.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(as_caller(&base, "soar", "/open/x").await.0.as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    let m = get(&format!("http://{}/metrics", gw.admin)).await.2;
    assert!(m.contains("interlock_ratelimit_backend_errors_total{fallback=\"local\"}"), "{m}");

    // Fail closed: the same outage answers 503 with its own type.
    gw.policies.write(
        "gateway.yaml",
        &std::fs::read_to_string(gw.policies.path().join("gateway.yaml"))
            .unwrap()
            .replace("on_unavailable: local", "on_unavailable: reject"),
    );
    let reload =
        h1_client().request(Request::post(format!("http://{}/reload", gw.admin)).body(empty()).unwrap()).await.unwrap();
    assert_eq!(reload.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, h, b) = as_caller(&base, "siem", "/open/x").await;
    assert_problem(s, &h, &b, 503, "rate-limit-unavailable");
    assert!(h.contains_key("retry-after"));

    // Redis returns: shared counting resumes (the restarted, empty Redis has the whole quota).
    let _redis = PrivateRedis::start(port).expect("redis restarts");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _, _) = as_caller(&base, "siem", "/open/x").await;
        if s == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "did not recover after Redis came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("interlock:*").query_async(&mut conn).await.unwrap();
    assert!(!keys.is_empty(), "counting is shared again");
}

#[tokio::test]
async fn limit_config_errors_name_file_line_and_key() {
    let p = Policies::new("cluster:\n  redis:\n    url: redis://:hunter2@127.0.0.1:6379\n    on_unavailable: maybe\n");
    p.upstream(
        "v",
        "127.0.0.1:1".parse().unwrap(),
        "",
        "quota:\n  limits: [4/1m, five/1d, 0/1s]\n  headers: kong\n  on_exhausted: wait\n",
    );
    p.write(
        "routes/r.yaml",
        "- id: a\n  match: { path: /a }\n  upstream: v\n  allow: [anyone]\n  anonymous: true\n  rate_limit:\n    per_caller: [10/1x]\n    on_exhausted: { queue: 0s }\n",
    );
    let errs = interlock::config::load(p.path()).unwrap_err();
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let has = |s: &str| shown.iter().any(|e| e.contains(s));
    assert!(has("gateway.yaml:10: cluster.redis.url: credentials in the URL"), "{shown:#?}");
    assert!(has("gateway.yaml:11: cluster.redis.on_unavailable"), "{shown:#?}");
    assert!(has("v.yaml:4: quota.limits[1]"), "{shown:#?}");
    assert!(has("v.yaml:4: quota.limits[2]"), "{shown:#?}");
    assert!(has("v.yaml:5: quota.headers: `kong`"), "{shown:#?}");
    assert!(has("v.yaml:6: quota.on_exhausted"), "{shown:#?}");
    assert!(has("r.yaml:7: [0].rate_limit.per_caller[0]"), "{shown:#?}");
    assert!(has("r.yaml:8: [0].rate_limit.on_exhausted.queue"), "{shown:#?}");
    assert!(!shown.iter().any(|e| e.contains("hunter2")), "{shown:#?}");
}
