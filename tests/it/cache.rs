//! The response cache through the real gateway: coalescing, isolation by credential scope and
//! caller, HTTP caching rules, negative and stale answers, client no-cache, purge.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::*;

const KEYS: [(&str, &str); 3] = [
    ("tenant-a-soar", "ilk_cache_tenant_a_000000000000000"),
    ("tenant-a-siem", "ilk_cache_tenant_a2_11111111111111"),
    ("tenant-b-soar", "ilk_cache_tenant_b_222222222222222"),
];

/// A vendor: `/slow/...` answers after 300 ms, `/cc/<value>` sends `Cache-Control: <value>`,
/// `/cookie` sets a cookie, `/missing` is 404, `/flaky` fails while `fail` is set. Counts calls
/// per path and remembers the credential each came with.
#[derive(Clone)]
struct Vendor {
    addr: SocketAddr,
    calls: Arc<Mutex<HashMap<String, Vec<String>>>>,
    fail: Arc<AtomicUsize>,
}

impl Vendor {
    async fn start() -> Vendor {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let v = Vendor { addr: tcp.local_addr().unwrap(), calls: Arc::default(), fail: Arc::default() };
        let vv = v.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = tcp.accept().await else { continue };
                let v = vv.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let v = v.clone();
                        async move { Ok::<_, std::convert::Infallible>(v.answer(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        v
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let cred = req.headers().get("x-vendor-key").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let n = {
            let mut c = self.calls.lock().unwrap();
            let list = c.entry(path.clone()).or_default();
            list.push(cred.clone());
            list.len()
        };
        if path.starts_with("/slow") {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let mut res =
            Response::new(Full::new(Bytes::from(format!("{{\"path\":\"{path}\",\"call\":{n},\"cred\":\"{cred}\"}}"))));
        res.headers_mut().insert("content-type", "application/json".parse().unwrap());
        if let Some(cc) = path.strip_prefix("/cc/") {
            res.headers_mut().insert("cache-control", cc.replace('_', " ").parse().unwrap());
        }
        if path == "/cookie" {
            res.headers_mut().insert("set-cookie", "session=1".parse().unwrap());
        }
        if path == "/missing" {
            *res.status_mut() = StatusCode::NOT_FOUND;
        }
        if path.starts_with("/flaky") && self.fail.load(Ordering::SeqCst) > 0 {
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        res
    }

    fn calls(&self, path: &str) -> Vec<String> {
        self.calls.lock().unwrap().get(path).cloned().unwrap_or_default()
    }
}

fn policies(v: &Vendor, route_cache: &str) -> Policies {
    let p = Policies::new("");
    p.callers_with_keys(&KEYS, "tools");
    p.write("a.key", "vendor-key-a");
    p.write("b.key", "vendor-key-b");
    p.upstream(
        "v",
        v.addr,
        "",
        "credentials:\n  - id: acct-a\n    header: x-vendor-key\n    value: file:a.key\n    callers: [tenant-a-soar, tenant-a-siem]\n  - id: acct-b\n    header: x-vendor-key\n    value: file:b.key\n    callers: [tenant-b-soar]\n",
    );
    p.write(
        "routes/r.yaml",
        &format!(
            "- id: lookups\n  match:\n    path: /**\n  upstream: v\n  allow: [group:tools]\n  cache:\n{route_cache}"
        ),
    );
    p
}

async fn as_caller(
    gw: &Running,
    who: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let key = KEYS.iter().find(|k| k.0 == who).unwrap().1;
    let mut b = Request::get(gw.url(path)).header("x-api-key", key);
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    call(&h1_client(), b.body(empty()).unwrap()).await
}

fn cache_header(h: &http::HeaderMap) -> &str {
    h.get("interlock-cache").map(|v| v.to_str().unwrap()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_cold_requests_make_one_vendor_call() {
    let v = Vendor::start().await;
    let gw = Arc::new(Running::start(policies(&v, "    ttl: 1m\n    shared: true\n")).await);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let gw = gw.clone();
            let who = KEYS[i % 2].0; // two callers of the same vendor account
            tokio::spawn(async move { as_caller(&gw, who, "/slow/files/abc", &[]).await })
        })
        .collect();
    let mut how = HashMap::new();
    for t in tasks {
        let (status, h, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, "{\"path\":\"/slow/files/abc\",\"call\":1,\"cred\":\"vendor-key-a\"}");
        *how.entry(cache_header(&h).to_owned()).or_insert(0) += 1;
    }
    assert_eq!(v.calls("/slow/files/abc").len(), 1, "one vendor call for 50 requests");
    assert_eq!(how.get("miss"), Some(&1), "{how:?}");
    assert_eq!(how.values().sum::<i32>(), 50);
    // The saved calls are counted against the vendor account.
    let (_, _, metrics) = get(&format!("http://{}/metrics", gw.admin)).await;
    let saved = metrics
        .lines()
        .find(|l| l.starts_with("interlock_cache_quota_saved_total{"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(saved.ends_with(" 49"), "{saved}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leading_client_that_leaves_still_fills_the_cache_for_those_waiting() {
    let v = Vendor::start().await;
    let gw = Arc::new(Running::start(policies(&v, "    ttl: 1m\n    shared: true\n")).await);
    // The first client leads the miss (the vendor takes 300 ms) and hangs up after 100 ms.
    let leaving = tokio::spawn({
        let addr = gw.addr;
        let head = format!("GET /slow/files/left HTTP/1.1\r\nHost: x\r\nx-api-key: {}\r\n\r\n", KEYS[0].1);
        async move { raw(addr, head.as_bytes(), Duration::from_millis(100)).await }
    });
    tokio::time::sleep(Duration::from_millis(40)).await;
    // The second waits on that same vendor call...
    let (status, h, body) = as_caller(&gw, "tenant-a-siem", "/slow/files/left", &[]).await;
    assert_eq!(leaving.await.unwrap(), "", "the first client left before any answer");
    // ...and gets its answer: no second vendor call.
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(cache_header(&h), "coalesced", "{body}");
    assert!(body.contains("\"call\":1"), "{body}");
    assert_eq!(v.calls("/slow/files/left").len(), 1);
    let (_, h, _) = as_caller(&gw, "tenant-a-soar", "/slow/files/left", &[]).await;
    assert_eq!(cache_header(&h), "hit", "the answer was stored");
    // The request that left is recorded once, as a client that went away (499).
    let (_, _, metrics) = get(&format!("http://{}/metrics", gw.admin)).await;
    let gone = "interlock_requests_total{route=\"lookups\",caller=\"tenant-a-soar\",upstream=\"v\",status=\"4xx\"} 1";
    assert!(metrics.lines().any(|l| l == gone), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_fill_gives_up_after_the_route_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A vendor that sends its head at once, then a byte every 50 ms of a 1,000-byte body, and
    // notes when the gateway hangs up on it.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (calls, hung_up) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    tokio::spawn({
        let (calls, hung_up) = (calls.clone(), hung_up.clone());
        async move {
            loop {
                let Ok((mut s, _)) = tcp.accept().await else { continue };
                let (calls, hung_up) = (calls.clone(), hung_up.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    calls.fetch_add(1, Ordering::SeqCst);
                    let head = "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\ncache-control: max-age=60\r\n\r\n";
                    let mut ok = s.write_all(head.as_bytes()).await.is_ok();
                    while ok {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        ok = s.write_all(b"x").await.is_ok() && s.flush().await.is_ok();
                    }
                    hung_up.fetch_add(1, Ordering::SeqCst);
                });
            }
        }
    });
    let p = Policies::new("");
    p.callers_with_keys(&KEYS, "tools");
    p.upstream("v", addr, "", "");
    p.write(
        "routes/r.yaml",
        "- id: trickle\n  match:\n    path: /**\n  upstream: v\n  allow: [group:tools]\n  timeout: 300ms\n  cache:\n    ttl: 1m\n    shared: true\n",
    );
    let gw = Running::start(p).await;
    let head = format!("GET /t HTTP/1.1\r\nHost: x\r\nx-api-key: {}\r\n\r\n", KEYS[0].1);
    // The leading client leaves after 100 ms; the fill goes on alone for the route's 300 ms, then
    // gives up and hangs up on the vendor (the body would take 50 s).
    assert_eq!(raw(gw.addr, head.as_bytes(), Duration::from_millis(100)).await, "");
    wait_until("the abandoned fill hangs up on the vendor", Duration::from_secs(3), || {
        hung_up.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Nothing was stored: the next request asks the vendor again.
    assert_eq!(raw(gw.addr, head.as_bytes(), Duration::from_millis(100)).await, "");
    wait_until("a second vendor call", Duration::from_secs(3), || calls.load(Ordering::SeqCst) == 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_never_cross_credential_scopes_or_unshared_callers() {
    let v = Vendor::start().await;
    // Shared between callers of one vendor account, never across accounts.
    let gw = Running::start(policies(&v, "    shared: true\n")).await;
    let (_, h1, a) = as_caller(&gw, "tenant-a-soar", "/files/x", &[]).await;
    let (_, h2, a2) = as_caller(&gw, "tenant-a-siem", "/files/x", &[]).await;
    let (_, _, b) = as_caller(&gw, "tenant-b-soar", "/files/x", &[]).await;
    assert_eq!((cache_header(&h1), cache_header(&h2)), ("miss", "hit"));
    assert_eq!(a, a2);
    assert!(b.contains("vendor-key-b") && a.contains("vendor-key-a"), "{a} / {b}");
    assert_eq!(v.calls("/files/x"), vec!["vendor-key-a", "vendor-key-b"]);

    // Not shared (the default): each caller has its own entries.
    let v = Vendor::start().await;
    let gw = Running::start(policies(&v, "    ttl: 1m\n")).await;
    as_caller(&gw, "tenant-a-soar", "/files/y", &[]).await;
    let (_, h, _) = as_caller(&gw, "tenant-a-siem", "/files/y", &[]).await;
    assert_eq!(cache_header(&h), "miss");
    let (_, h, _) = as_caller(&gw, "tenant-a-siem", "/files/y", &[]).await;
    assert_eq!(cache_header(&h), "hit");
    assert!(h.get("age").is_some());
    assert_eq!(v.calls("/files/y").len(), 2);

    // The admin API shows the cache and purges it by route.
    let (status, _, stats) = get(&format!("http://{}/cache", gw.admin)).await;
    assert_eq!(status, StatusCode::OK);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["entries"], 2, "{stats}");
    assert_eq!(stats["routes"][0]["route"], "lookups");
    let purge = |q: &'static str| {
        let url = format!("http://{}/cache{q}", gw.admin);
        async move { call(&h1_client(), Request::delete(url).body(empty()).unwrap()).await }
    };
    assert_eq!(purge("?route=nope").await.0, StatusCode::NOT_FOUND);
    let (status, _, body) = purge("?route=lookups").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, h, _) = as_caller(&gw, "tenant-a-siem", "/files/y", &[]).await;
    assert_eq!(cache_header(&h), "miss", "purged");
    assert_eq!(v.calls("/files/y").len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn vendor_cache_control_cookies_and_status_decide_what_is_stored() {
    let v = Vendor::start().await;
    let gw = Running::start(policies(&v, "    ttl: 1m\n")).await;
    let twice = |path: &'static str| {
        let gw = &gw;
        async move {
            as_caller(gw, "tenant-a-soar", path, &[]).await;
            cache_header(&as_caller(gw, "tenant-a-soar", path, &[]).await.1).to_owned()
        }
    };
    assert_eq!(twice("/cc/no-store").await, "miss");
    assert_eq!(twice("/cc/max-age=0").await, "miss");
    assert_eq!(twice("/cc/private,_max-age=60").await, "hit", "private is fine for a per-caller entry");
    assert_eq!(twice("/cookie").await, "miss");
    assert_eq!(twice("/missing").await, "miss", "no negative_ttl: 404s are not stored");
    assert_eq!(twice("/plain").await, "hit");
    assert_eq!(v.calls("/cc/no-store").len(), 2);
    assert_eq!(v.calls("/cookie").len(), 2);
    assert_eq!(v.calls("/plain").len(), 1);
    // The client's no-cache fetches anew (and refreshes the entry).
    let (_, h, body) = as_caller(&gw, "tenant-a-soar", "/plain", &[("cache-control", "no-cache")]).await;
    assert_eq!(cache_header(&h), "bypass");
    assert!(body.contains("\"call\":2"), "{body}");
    let (_, h, body) = as_caller(&gw, "tenant-a-soar", "/plain", &[]).await;
    assert_eq!(cache_header(&h), "hit");
    assert!(body.contains("\"call\":2"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn negative_answers_and_stale_if_error() {
    let v = Vendor::start().await;
    let gw =
        Running::start(policies(&v, "    ttl: 1s\n    negative_ttl: 1m\n    stale_if_error: 1m\n    shared: true\n"))
            .await;
    as_caller(&gw, "tenant-a-soar", "/missing", &[]).await;
    let (status, h, _) = as_caller(&gw, "tenant-a-soar", "/missing", &[]).await;
    assert_eq!((status, cache_header(&h)), (StatusCode::NOT_FOUND, "hit"));
    assert_eq!(v.calls("/missing").len(), 1);

    let (status, _, fresh) = as_caller(&gw, "tenant-a-soar", "/flaky", &[]).await;
    assert_eq!(status, StatusCode::OK);
    v.fail.store(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Expired, and the vendor fails: the stale answer stands in, said to be stale.
    let (status, h, body) = as_caller(&gw, "tenant-a-soar", "/flaky", &[]).await;
    assert_eq!((status, cache_header(&h)), (StatusCode::OK, "stale"));
    assert_eq!(body, fresh);
    assert!(h["age"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(v.calls("/flaky").len(), 2, "the vendor was asked, and failed");
    // The vendor recovers: a fresh answer replaces it.
    v.fail.store(0, Ordering::SeqCst);
    let (status, h, body) = as_caller(&gw, "tenant-a-soar", "/flaky", &[]).await;
    assert_eq!((status, cache_header(&h)), (StatusCode::OK, "miss"));
    assert!(body.contains("\"call\":3"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn post_lookups_are_keyed_by_their_canonical_body() {
    let v = Vendor::start().await;
    let gw = Running::start(policies(&v, "    ttl: 1m\n    shared: true\n    body_key: 64KiB\n")).await;
    let post = |body: &'static str| {
        let url = gw.url("/alerts/entities/alerts/v2");
        async move {
            let key = KEYS[0].1;
            let req = Request::post(url)
                .header("x-api-key", key)
                .header("content-type", "application/json")
                .body(crate::support::body(body))
                .unwrap();
            call(&h1_client(), req).await
        }
    };
    let (s1, h1, b1) = post(r#"{"composite_ids": ["a", "b"]}"#).await;
    let (s2, h2, b2) = post(r#"{ "composite_ids":["a","b"] }"#).await;
    let (_, h3, _) = post(r#"{"composite_ids": ["b", "a"]}"#).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!((cache_header(&h1), cache_header(&h2), cache_header(&h3)), ("miss", "hit", "miss"));
    assert_eq!(b1, b2);
    assert_eq!(v.calls("/alerts/entities/alerts/v2").len(), 2, "same ids in another order is another lookup");
    // GET still answers from the cache; other methods never do.
    let (_, h, _) = as_caller(&gw, "tenant-a-soar", "/files/z", &[]).await;
    assert_eq!(cache_header(&h), "miss");
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_answers_through_redis() {
    if std::net::TcpStream::connect_timeout(&"127.0.0.1:6379".parse().unwrap(), Duration::from_millis(300)).is_err() {
        skipped("replicas_share_answers_through_redis", "no Redis on 127.0.0.1:6379 (.ci/run starts one)");
        return;
    }
    let v = Vendor::start().await;
    let prefix = format!("itcache{}", fastrand::u64(..));
    let replica = || {
        let p = policies(&v, "    ttl: 1m\n    shared: true\n    redis: true\n");
        p.write(
            "gateway.yaml",
            &format!("listeners:\n  - bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\nlog:\n  level: warn\ncluster:\n  redis:\n    url: redis://127.0.0.1:6379/0\n    key_prefix: {prefix}\n    timeout: 2s\n"),
        );
        Running::start(p)
    };
    let (a, b) = (replica().await, replica().await);
    let (status, h, body_a) = as_caller(&a, "tenant-a-soar", "/files/shared", &[]).await;
    assert_eq!((status, cache_header(&h)), (StatusCode::OK, "miss"));
    // The write to Redis follows the answer.
    let mut body_b = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (status, h, body) = as_caller(&b, "tenant-a-siem", "/files/shared", &[]).await;
        assert_eq!(status, StatusCode::OK);
        if cache_header(&h) == "hit" {
            body_b = body;
            break;
        }
    }
    assert_eq!(body_b, body_a, "the other replica answered from Redis");
    // Not across credential scopes, even through Redis.
    let (_, h, body) = as_caller(&b, "tenant-b-soar", "/files/shared", &[]).await;
    assert_eq!(cache_header(&h), "miss");
    assert!(body.contains("vendor-key-b"));
}

#[test]
fn the_redis_tier_needs_cluster_redis_and_shared_answers() {
    let p = Policies::new("");
    p.write(
        "routes/r.yaml",
        "- id: a\n  match:\n    path: /a\n  upstream: u\n  anonymous: true\n  cache:\n    redis: true\n",
    );
    p.write("upstreams/u.yaml", "id: u\nendpoints: [\"http://127.0.0.1:9\"]\n");
    let out = std::process::Command::new(bin()).arg("check").arg(p.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("a.cache.redis") && text.contains("shared: true"), "{text}");
    assert!(text.contains("needs `cluster.redis`"), "{text}");
}

/// Memory: answers worth ten times the budget go through the cache; the gateway's resident memory
/// stays within the budget plus a fixed overhead. `cargo test --test it -- --ignored ten_times`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "memory measurement: run on its own"]
async fn ten_times_the_budget_stays_within_the_budget() {
    let up = Upstream::start().await;
    let (port, admin) = (free_port(), free_port());
    let p = Policies::new("");
    p.write(
        "gateway.yaml",
        &format!("listeners:\n  - bind: 127.0.0.1:{port}\nadmin:\n  bind: 127.0.0.1:{admin}\ncache:\n  max_bytes: 16MiB\nlog:\n  level: warn\n"),
    );
    p.upstream("u", up.addr, "", "");
    p.write("routes/r.yaml", "- id: big\n  match:\n    path: /**\n  upstream: u\n  anonymous: true\n  cache:\n    ttl: 1h\n    max_entry: 256KiB\n");
    let child = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(p.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _guard = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_until("gateway ready", Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
        .await;
    let rss = || -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    get(&format!("{base}/bytes?n=1000&i=warm")).await;
    let before = rss();
    // 3,200 answers of 100 KiB: 320 MiB through a 16 MiB cache (20 times the budget).
    let mut at_half = 0;
    for i in 0..3200 {
        let (status, h, _) = get(&format!("{base}/bytes?n=102400&i={i}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h["interlock-cache"], "miss");
        if i == 1599 {
            at_half = rss();
        }
    }
    let (_, _, stats) = get(&format!("http://127.0.0.1:{admin}/cache")).await;
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(stats["bytes"].as_u64().unwrap() <= 16 << 20, "{stats}");
    let after = rss();
    let grown = after.saturating_sub(before);
    println!(
        "RSS {} MiB -> {} MiB at 10x -> {} MiB at 20x (+{} MiB) with a 16 MiB budget; cache {stats}",
        before >> 20,
        at_half >> 20,
        after >> 20,
        grown >> 20
    );
    // A fixed overhead (allocator pools, connection buffers), not growing with traffic.
    assert!(grown < (16 << 20) + (64 << 20), "grew by {} MiB", grown >> 20);
    assert!(after.saturating_sub(at_half) < 8 << 20, "still growing: {} -> {} MiB", at_half >> 20, after >> 20);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
