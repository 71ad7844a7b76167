//! Hot reload: under load, with in-flight requests, with broken files, from the file watcher.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};

use crate::support::*;

fn routes(version: usize) -> String {
    format!(
        "- id: api\n  match:\n    path: /api/**\n  upstream: up\n  anonymous: true\n  rewrite: /v{version}/**\n- id: extra-{version}\n  match:\n    path: /extra{version}\n  upstream: up\n  anonymous: true\n"
    )
}

async fn admin_post(admin: std::net::SocketAddr, path: &str) -> (StatusCode, http::HeaderMap, String) {
    call(&h1_client(), Request::post(format!("http://{admin}{path}")).body(empty()).unwrap()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn reloads_under_load_fail_no_request() {
    let up = Upstream::start().await;
    let p = Policies::new("reload:\n  watch: false\n");
    p.upstream("up", up.addr, "", "");
    p.write("routes/r.yaml", &routes(0));
    let gw = Running::start(p).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), gw.url(&format!("/api/w{w}")));
        workers.push(tokio::spawn(async move {
            // Half the workers reuse connections, half open new ones each time.
            let shared = h1_client();
            while !stop.load(Ordering::Relaxed) {
                let client = if w % 2 == 0 { shared.clone() } else { h1_client() };
                match client.request(Request::get(url.as_str()).body(empty()).unwrap()).await {
                    Ok(r) if r.status() == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for v in 1..=20 {
        gw.policies.write("routes/r.yaml", &routes(v));
        let (s, _, b) = admin_post(gw.admin, "/reload").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests during reloads");
    assert!(ok.load(Ordering::Relaxed) > 100, "too little load: {}", ok.load(Ordering::Relaxed));
    assert_eq!(gw.gw.as_ref().unwrap().store.load().generation, 21);
    // The last config is the one serving.
    get(&gw.url("/api/final")).await;
    assert_eq!(up.last().uri, "/v20/final");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_requests_finish_on_the_config_they_started_with() {
    let up = Upstream::start().await;
    let p = Policies::new("reload:\n  watch: false\n");
    p.upstream("up", up.addr, "", "");
    p.write("routes/r.yaml", &routes(1));
    let gw = Running::start(p).await;
    let url = gw.url("/api/slow?sleep_ms=600");
    let slow = tokio::spawn(async move { get(&url).await });
    wait_until("the slow request to arrive", Duration::from_secs(5), || up.count() == 1).await;
    // Remove the route while the request is in flight.
    gw.policies.write("routes/r.yaml", "- id: other\n  match:\n    path: /other\n  upstream: up\n  anonymous: true\n");
    let (s, _, _) = admin_post(gw.admin, "/reload").await;
    assert_eq!(s, StatusCode::OK);
    let (s, h, b) = get(&gw.url("/api/slow")).await;
    assert_problem(s, &h, &b, 404, "no-route");
    let (s, _, _) = slow.await.unwrap();
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_config_is_rejected_with_every_error_and_the_old_one_keeps_serving() {
    let up = Upstream::start().await;
    let p = Policies::new("reload:\n  watch: false\n");
    p.upstream("up", up.addr, "", "");
    p.write("routes/r.yaml", &routes(1));
    let gw = Running::start(p).await;
    gw.policies.write(
        "routes/r.yaml",
        "- id: api\n  match:\n    path: /api/**\n    methodz: [GET]\n  upstream: nowhere\n  anonymous: true\n",
    );
    gw.policies.write("upstreams/bad.yaml", "id: bad\nendpoints: [\"http://x\"]\ntimeout: soon\n");
    let (s, h, b) = admin_post(gw.admin, "/reload").await;
    let v = assert_problem_admin(s, &h, &b);
    let errors: Vec<String> = v["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_owned()).collect();
    let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
    assert!(has("routes/r.yaml:4: [0].match.methodz: unknown key"), "{errors:#?}");
    assert!(has("routes/r.yaml:5: [0].upstream: no upstream `nowhere`"), "{errors:#?}");
    assert!(has("upstreams/bad.yaml:3: timeout:"), "{errors:#?}");
    // Still serving generation 1.
    let (s, _, _) = get(&gw.url("/api/still")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(up.last().uri, "/v1/still");
    let (_, _, status) = get(&format!("http://{}/config/status", gw.admin)).await;
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(st["generation"], 1);
    assert_eq!(st["last_reload"]["ok"], false);
    assert_eq!(st["last_reload"]["errors"].as_array().unwrap().len(), errors.len());
}

fn assert_problem_admin(s: StatusCode, h: &http::HeaderMap, b: &str) -> serde_json::Value {
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(h["content-type"], "application/problem+json");
    let v: serde_json::Value = serde_json::from_str(b).unwrap();
    assert_eq!(v["type"], "urn:interlock:problem:config-invalid");
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn file_changes_are_picked_up_by_the_watcher() {
    let up = Upstream::start().await;
    let p = Policies::new("reload:\n  debounce: 50ms\n");
    p.upstream("up", up.addr, "", "");
    p.write("routes/r.yaml", &routes(1));
    let gw = Running::start(p).await;
    let (s, _, _) = get(&gw.url("/extra2")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    gw.policies.write("routes/r.yaml", &routes(2));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _, _) = get(&gw.url("/extra2")).await;
        if s == StatusCode::OK {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the watcher never applied the change");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A broken write is rejected by the watcher too, and the last good config keeps serving.
    gw.policies.write("routes/r.yaml", "- id: [broken\n");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (s, _, _) = get(&gw.url("/extra2")).await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, status) = get(&format!("http://{}/config/status", gw.admin)).await;
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(st["last_reload"]["ok"], false, "{st}");
    assert_eq!(st["last_reload"]["trigger"], "file_change");
}
