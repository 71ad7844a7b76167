//! Retries, retry budgets, circuit breaking, balancing, health checks and load shedding, through the
//! real gateway against vendors whose behaviour each test scripts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::support::*;

/// A vendor whose answers the test scripts: `fail_next` answers get `fail_status` (0 = reset the
/// connection), then `status`; `/health` answers `health`; every answer waits `delay_ms`.
#[derive(Clone)]
struct Vendor {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<(String, String)>>>,
    status: Arc<AtomicU16>,
    fail_next: Arc<AtomicU32>,
    fail_status: Arc<AtomicU16>,
    retry_after: Arc<AtomicU64>,
    health: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
}

impl Vendor {
    async fn start() -> Vendor {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let v = Vendor {
            addr: tcp.local_addr().unwrap(),
            log: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            fail_next: Arc::new(AtomicU32::new(0)),
            fail_status: Arc::new(AtomicU16::new(503)),
            retry_after: Arc::new(AtomicU64::new(0)),
            health: Arc::new(AtomicU16::new(200)),
            delay_ms: Arc::new(AtomicU64::new(0)),
        };
        let state = v.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let v = state.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            if path == "/health" {
                                let mut res = Response::new(Full::new(Bytes::new()));
                                *res.status_mut() = StatusCode::from_u16(v.health.load(Ordering::SeqCst)).unwrap();
                                return Ok(res);
                            }
                            let method = req.method().to_string();
                            let _ = req.into_body().collect().await;
                            v.log.lock().unwrap().push((method, path));
                            let delay = v.delay_ms.load(Ordering::SeqCst);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            let failing = v
                                .fail_next
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                                .is_ok();
                            let status = if failing {
                                v.fail_status.load(Ordering::SeqCst)
                            } else {
                                v.status.load(Ordering::SeqCst)
                            };
                            if status == 0 {
                                return Err(std::io::Error::other("reset"));
                            }
                            let mut res = Response::new(Full::new(Bytes::from(format!("vendor {}", v.addr.port()))));
                            *res.status_mut() = StatusCode::from_u16(status).unwrap();
                            let ra = v.retry_after.load(Ordering::SeqCst);
                            if failing && ra > 0 {
                                res.headers_mut().insert("retry-after", ra.into());
                            }
                            Ok::<_, std::io::Error>(res)
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

fn gateway_files(endpoints: &[String], upstream_extra: &str, route_extra: &str) -> Policies {
    let p = Policies::new("");
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    p.write("upstreams/v.yaml", &format!("id: v\nendpoints: [{}]\n{upstream_extra}", list.join(", ")));
    p.write(
        "routes/r.yaml",
        &format!("- id: r\n  match:\n    path: /r/**\n  upstream: v\n  rewrite: /**\n  anonymous: true\n  allow: [anyone]\n{route_extra}"),
    );
    p
}

async fn metrics(gw: &Running) -> String {
    get(&format!("http://{}/metrics", gw.admin)).await.2
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const RETRY: &str = "retry:\n  attempts: 3\n  backoff: { base: 5ms, max: 20ms }\n";

#[tokio::test(flavor = "multi_thread")]
async fn get_is_retried_on_503_and_on_a_refused_connection() {
    let v = Vendor::start().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = Running::start(gateway_files(&[format!("http://{}", v.addr)], RETRY, "")).await;
    v.fail_next.store(2, Ordering::SeqCst);
    let (s, _, b) = get(&gw.url("/r/x")).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, format!("vendor {}", v.addr.port()).as_str()));
    assert_eq!(v.count(), 3, "two 503s, then the answer");
    assert_eq!(metric(&metrics(&gw).await, "interlock_upstream_retries_total{upstream=\"v\",reason=\"status\"}"), 2.0);
    // Without attempts left, the vendor's own 503 is the answer.
    v.fail_next.store(3, Ordering::SeqCst);
    assert_eq!(get(&gw.url("/r/x")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v.count(), 6);

    // One endpoint refuses connections: every call still succeeds on the other.
    let gw = Running::start(gateway_files(&[dead, format!("http://{}", v.addr)], RETRY, "")).await;
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/r/y")).await.0, StatusCode::OK);
    }
    assert!(metric(&metrics(&gw).await, "interlock_upstream_retries_total{upstream=\"v\",reason=\"connect\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_is_never_resent_after_bytes_were_sent_unless_idempotent_by_key() {
    let v = Vendor::start().await;
    v.fail_status.store(0, Ordering::SeqCst); // reset the connection after reading the request
    let up = format!("http://{}", v.addr);
    let gw = Running::start(gateway_files(std::slice::from_ref(&up), RETRY, "")).await;
    v.fail_next.store(5, Ordering::SeqCst);
    let post = |gw: &Running, key: Option<&str>| {
        let mut b = Request::post(gw.url("/r/contain")).header("content-type", "application/json");
        if let Some(k) = key {
            b = b.header("idempotency-key", k);
        }
        b.body(body("{\"ids\":[\"h1\"]}")).unwrap()
    };
    let (s, h, b) = call(&h1_client(), post(&gw, None)).await;
    assert_problem(s, &h, &b, 502, "upstream-failed");
    assert_eq!(v.count(), 1, "exactly one POST reached the vendor");
    // A GET on the same failure is retried.
    let (s, _, _) = get(&gw.url("/r/x")).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert_eq!(v.count(), 4);

    // A route that opts in retries a POST carrying an Idempotency-Key, with its body, and only then.
    v.log.lock().unwrap().clear();
    v.fail_next.store(1, Ordering::SeqCst);
    let gw = Running::start(gateway_files(&[up], RETRY, "  retry:\n    non_idempotent: true\n")).await;
    let (s, _, _) = call(&h1_client(), post(&gw, Some("k-1"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.count(), 2);
    v.fail_next.store(1, Ordering::SeqCst);
    let (s, _, _) = call(&h1_client(), post(&gw, None)).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert_eq!(v.count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retry_budget_stops_a_retry_storm() {
    let v = Vendor::start().await;
    v.status.store(503, Ordering::SeqCst);
    let gw = Running::start(gateway_files(
        &[format!("http://{}", v.addr)],
        "retry:\n  attempts: 3\n  backoff: { base: 1ms, max: 2ms }\n  budget: { ratio: 0.1, min_per_second: 0.5, window: 10s }\n",
        "",
    ))
    .await;
    for _ in 0..40 {
        assert_eq!(get(&gw.url("/r/x")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
    // Unbudgeted: 120 attempts. Budget: 40 requests + 5 (floor: 0.5/s over 10 s) + 10% of 40.
    let n = v.count();
    assert!((45..=50).contains(&n), "{n} vendor calls");
    assert!(metric(&metrics(&gw).await, "interlock_upstream_retry_budget_exhausted_total{upstream=\"v\"}") >= 25.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_waited_for_or_passed_on_when_too_long() {
    let v = Vendor::start().await;
    let gw =
        Running::start(gateway_files(&[format!("http://{}", v.addr)], &format!("{RETRY}  max_retry_after: 3s\n"), ""))
            .await;
    v.retry_after.store(1, Ordering::SeqCst);
    v.fail_next.store(1, Ordering::SeqCst);
    let started = Instant::now();
    assert_eq!(get(&gw.url("/r/x")).await.0, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(950), "waited {:?}", started.elapsed());
    assert_eq!(v.count(), 2);
    v.retry_after.store(30, Ordering::SeqCst);
    v.fail_next.store(1, Ordering::SeqCst);
    let started = Instant::now();
    let (s, h, _) = get(&gw.url("/r/x")).await;
    assert_eq!((s, h["retry-after"].to_str().unwrap()), (StatusCode::SERVICE_UNAVAILABLE, "30"));
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(v.count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_circuit_opens_fails_fast_half_opens_and_closes() {
    let v = Vendor::start().await;
    v.status.store(500, Ordering::SeqCst);
    let gw = Running::start(gateway_files(
        &[format!("http://{}", v.addr)],
        "circuit_breaker:\n  consecutive_failures: 3\n  base_ejection: 1s\n  max_ejection: 10s\n",
        "",
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/r/x")).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let started = Instant::now();
    let (s, h, b) = get(&gw.url("/r/x")).await;
    assert_problem(s, &h, &b, 503, "circuit-open");
    assert_eq!(h["retry-after"], "1");
    assert!(started.elapsed() < Duration::from_millis(200), "fails fast");
    assert_eq!(v.count(), 3, "no attempt while open");
    let view: serde_json::Value =
        serde_json::from_str(&get(&format!("http://{}/upstreams", gw.admin)).await.2).unwrap();
    assert_eq!(view["upstreams"][0]["endpoint_state"][0]["circuit"]["state"], "open", "{view}");
    assert_eq!(metric(&metrics(&gw).await, "interlock_upstream_circuit_state{"), 1.0);
    // Half-open after the ejection: one probe; it fails, so the ejection doubles.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&gw.url("/r/x")).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    let (s, h, _) = get(&gw.url("/r/x")).await;
    assert_eq!((s, h["retry-after"].to_str().unwrap()), (StatusCode::SERVICE_UNAVAILABLE, "2"));
    assert_eq!(v.count(), 4);
    // The vendor recovers: the next probe closes the circuit.
    v.status.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/r/x")).await.0, StatusCode::OK);
    }
    assert_eq!(metric(&metrics(&gw).await, "interlock_upstream_circuit_state{"), 0.0);
    assert_eq!(metric(&metrics(&gw).await, "interlock_upstream_ejections_total{"), 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn balancing_moves_traffic_off_a_slow_endpoint() {
    let fast = Vendor::start().await;
    let slow = Vendor::start().await;
    slow.delay_ms.store(150, Ordering::SeqCst);
    let gw = Running::start(gateway_files(&[format!("http://{}", fast.addr), format!("http://{}", slow.addr)], "", ""))
        .await;
    // Concurrent load: the slow endpoint holds more calls in flight, so two choices avoid it.
    for _ in 0..4 {
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let url = gw.url("/r/x");
                tokio::spawn(async move { get(&url).await.0 })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), StatusCode::OK);
        }
    }
    // One at a time: the lower latency wins.
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/r/x")).await.0, StatusCode::OK);
    }
    let (f, s) = (fast.count(), slow.count());
    assert_eq!(f + s, 60);
    assert!(s <= 15, "slow endpoint got {s} of 60");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_failing_health_checks_gets_no_traffic_until_it_passes() {
    let a = Vendor::start().await;
    let b = Vendor::start().await;
    b.health.store(503, Ordering::SeqCst);
    let gw = Running::start(gateway_files(
        &[format!("http://{}", a.addr), format!("http://{}", b.addr)],
        "health_check:\n  path: /health\n  interval: 100ms\n  timeout: 1s\n  unhealthy_threshold: 2\n  healthy_threshold: 1\n",
        "",
    ))
    .await;
    let admin = format!("http://{}/upstreams", gw.admin);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let view: serde_json::Value = serde_json::from_str(&get(&admin).await.2).unwrap();
        if view["upstreams"][0]["endpoint_state"][1]["healthy"] == false {
            assert_eq!(view["upstreams"][0]["endpoint_state"][0]["healthy"], true);
            break;
        }
        assert!(Instant::now() < deadline, "endpoint never marked unhealthy: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = b.count();
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/r/x")).await.0, StatusCode::OK);
    }
    assert_eq!(b.count(), before, "no traffic to the unhealthy endpoint");
    assert!(metrics(&gw)
        .await
        .contains(&format!("interlock_upstream_endpoint_healthy{{upstream=\"v\",endpoint=\"http://{}\"}} 0", b.addr)));
    // Both failing: 503 at once, nothing sent.
    a.health.store(503, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (s, h, body) = get(&gw.url("/r/x")).await;
    assert_problem(s, &h, &body, 503, "no-healthy-endpoint");
    // Recovery.
    a.health.store(200, Ordering::SeqCst);
    b.health.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..10 {
        let url = gw.url("/r/x");
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn({
                    let url = url.clone();
                    async move { get(&url).await.0 }
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), StatusCode::OK);
        }
    }
    assert!(b.count() > before, "the recovered endpoint gets traffic again");
}

#[tokio::test(flavor = "multi_thread")]
async fn max_concurrent_sheds_load_at_once() {
    let v = Vendor::start().await;
    v.delay_ms.store(600, Ordering::SeqCst);
    let gw = Running::start(gateway_files(&[format!("http://{}", v.addr)], "max_concurrent: 2\n", "")).await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let url = gw.url("/r/x");
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(if i < 2 { 0 } else { 150 })).await;
                let (s, h, b) = get(&url).await;
                (s, h, b, started.elapsed())
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (s, h, b, at) = t.await.unwrap();
        if s == StatusCode::OK {
            ok += 1;
        } else {
            assert_problem(s, &h, &b, 503, "overloaded");
            assert!(at < Duration::from_millis(500), "shed at once, not queued: {at:?}");
        }
    }
    assert_eq!(ok, 2);
    assert_eq!(v.count(), 2);
    assert_eq!(metric(&metrics(&gw).await, "interlock_upstream_shed_total{upstream=\"v\"}"), 3.0);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_draw_on_the_vendor_account_quota() {
    let v = Vendor::start().await;
    v.status.store(503, Ordering::SeqCst);
    let gw = Running::start(gateway_files(
        &[format!("http://{}", v.addr)],
        &format!("{RETRY}quota:\n  limits: [4/1m]\n"),
        "",
    ))
    .await;
    // Three attempts spend three units of the account's four.
    assert_eq!(get(&gw.url("/r/x")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v.count(), 3);
    // The fourth unit goes to the next call's first attempt; its retries find no allowance.
    assert_eq!(get(&gw.url("/r/x")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v.count(), 4);
    let (s, h, b) = get(&gw.url("/r/x")).await;
    assert_problem(s, &h, &b, 429, "rate-limited");
    assert_eq!(v.count(), 4);
}
