//! Audit trail, metrics, access log, admin views and the live tap, through a running gateway.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;

use crate::support::*;

const KEY: &str = "ilk_observability_test_key_abcdefghijkl";
const SECRET: &str = "vendor-secret-never-shown-42";

fn policies(extra_gateway: &str) -> (Policies, String) {
    let p = Policies::new(extra_gateway);
    let hash = format!(
        "sha256:{}",
        interlock::identity::apikey::digest(KEY).iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    p.write(
        "callers.yaml",
        &format!("callers:\n  - id: soar\n    api_keys:\n      - id: soar-key-1\n        hash: {hash}\n"),
    );
    p.write("vendor.key", SECRET);
    (p, hash)
}

fn routes(p: &Policies, up: std::net::SocketAddr) {
    p.upstream("up", up, "", "credential:\n  id: vendor-cred\n  header: x-vendor-key\n  value: file:vendor.key\n");
    p.upstream("dead", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(), "", "");
    p.write(
        "routes/r.yaml",
        "- id: api\n  match:\n    path: /api/**\n  upstream: up\n  max_body: 1KiB\n  allow: [caller:soar]\n- id: must-audit\n  match:\n    path: /audited/**\n  upstream: up\n  audit: required\n  allow: [caller:soar]\n- id: dead\n  match:\n    path: /dead/**\n  upstream: dead\n  allow: [caller:soar]\n",
    );
}

async fn req(gw: &Running, method: &str, path: &str, key: bool, body: &str) -> StatusCode {
    let mut b = Request::builder().method(method).uri(gw.url(path));
    if key {
        b = b.header("x-api-key", KEY);
    }
    call(&h1_client(), b.body(crate::support::body(body.to_owned())).unwrap()).await.0
}

fn audit_lines(p: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_leaves_one_chained_audit_record_and_metrics_move() {
    let up = Upstream::start().await;
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.log");
    let (p, _) = policies(&format!("telemetry:\n  audit:\n    file: {}\n    fsync: never\n", audit.display()));
    routes(&p, up.addr);
    let gw = Running::start(p).await;
    let expected = [
        ("GET", "/api/a", true, "", 200),
        ("GET", "/api/b", false, "", 401),
        ("GET", "/nope", true, "", 404),
        ("POST", "/api/c", true, &"x".repeat(2000)[..], 413),
        ("GET", "/dead/x", true, "", 502),
        ("GET", "/api/status-503", true, "", 503),
    ];
    for (m, path, key, body, want) in expected {
        assert_eq!(req(&gw, m, path, key, body).await.as_u16(), want, "{m} {path}");
    }
    // A client that gives up before the answer is still recorded (499).
    let slow = tokio::spawn({
        let url = gw.url("/api/slow?sleep_ms=2000");
        async move {
            let r = Request::get(url).header("x-api-key", KEY).body(empty()).unwrap();
            let _ = tokio::time::timeout(Duration::from_millis(200), h1_client().request(r)).await;
        }
    });
    slow.await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (_, _, metrics) = get(&format!("http://{}/metrics", gw.admin)).await;
    let sample = |needle: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        sample("interlock_requests_total{route=\"api\",caller=\"soar\",upstream=\"up\",status=\"2xx\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample("interlock_requests_total{route=\"none\",caller=\"soar\",upstream=\"none\",status=\"4xx\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(sample("interlock_problems_total{type=\"body-too-large\"}"), 1.0, "{metrics}");
    assert_eq!(sample("interlock_config_generation"), 1.0, "{metrics}");
    assert!(metrics.contains("# TYPE interlock_request_duration_seconds histogram"), "{metrics}");
    assert!(metrics.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    for line in metrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "unparsable sample line: {line}");
    }

    assert!(gw.shutdown().await);
    let records = audit_lines(&audit);
    assert_eq!(records.len(), 7, "{records:#?}");
    let statuses: Vec<u64> = records.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    for want in [200, 401, 404, 413, 502, 503, 499] {
        assert!(statuses.contains(&want), "no record with status {want}: {statuses:?}");
    }
    let ok = records.iter().find(|r| r["status"] == 200).unwrap();
    assert_eq!(ok["caller"], "soar");
    assert_eq!(ok["auth"], "api_key");
    assert_eq!(ok["route"], "api");
    assert_eq!(ok["credential"], "vendor-cred");
    assert_eq!(ok["decision"], "allow");
    assert_eq!(ok["trace_id"].as_str().unwrap().len(), 32);
    let denied = records.iter().find(|r| r["status"] == 401).unwrap();
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["error"], "unauthenticated");
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains(SECRET) && !text.contains(KEY), "a secret reached the audit trail");

    // The CLI verifies the chain and finds a tampered record.
    let out = std::process::Command::new(bin()).args(["audit", "verify"]).arg(&audit).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("7 records"));
    std::fs::write(&audit, text.replacen("\"status\":404", "\"status\":200", 1)).unwrap();
    let out = std::process::Command::new(bin()).args(["audit", "verify"]).arg(&audit).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("modified"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_audit_sink_closes_audited_routes_and_counts_drops() {
    let up = Upstream::start().await;
    let (p, _) = policies("telemetry:\n  audit:\n    file: /dev/full\n    fsync: always\n");
    routes(&p, up.addr);
    let gw = Running::start(p).await;
    assert_eq!(req(&gw, "GET", "/api/a", true, "").await, StatusCode::OK, "best-effort routes keep serving");
    let metrics_url = format!("http://{}/metrics", gw.admin);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, _, m) = get(&metrics_url).await;
        if m.contains("interlock_audit_records_dropped_total 1") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the failed write was not counted: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = Request::get(gw.url("/audited/x")).header("x-api-key", KEY).body(empty()).unwrap();
    let (s, h, b) = call(&h1_client(), r).await;
    assert_problem(s, &h, &b, 503, "audit-unavailable");
    assert_eq!(req(&gw, "GET", "/api/b", true, "").await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_lines_and_admin_views_carry_no_secrets() {
    let up = Upstream::start().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let (p, hash) = policies(&format!(
        "telemetry:\n  access_log:\n    enabled: true\n    output: {}\n    fields: [request_id, caller, route, status, duration_ms]\n",
        log.path().display()
    ));
    p.write("admin.token", "admin-token-xyz");
    let gw_yaml = std::fs::read_to_string(p.path().join("gateway.yaml"))
        .unwrap()
        .replace("admin:\n  bind: 127.0.0.1:0\n", "admin:\n  bind: 127.0.0.1:0\n  token: file:admin.token\n");
    p.write("gateway.yaml", &gw_yaml);
    routes(&p, up.addr);
    let gw = Running::start(p).await;
    let r = Request::get(gw.url("/api/x"))
        .header("x-api-key", KEY)
        .header("authorization", "Bearer caller-token-999")
        .body(empty())
        .unwrap();
    assert_eq!(call(&h1_client(), r).await.0, StatusCode::OK);
    assert_eq!(up.last().headers["x-vendor-key"], SECRET);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let line = loop {
        let text = std::fs::read_to_string(log.path()).unwrap();
        if let Some(l) = text.lines().next() {
            break l.to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no access log line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5, "{line}");
    assert_eq!(
        (v["caller"].as_str(), v["route"].as_str(), v["status"].as_u64()),
        (Some("soar"), Some("api"), Some(200))
    );
    for secret in [SECRET, KEY, "caller-token-999"] {
        assert!(!line.contains(secret), "{secret} in {line}");
    }

    // Admin: token required (except health), and no view shows a secret.
    let (s, _, _) = get(&format!("http://{}/config", gw.admin)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&format!("http://{}/healthz", gw.admin)).await.0, StatusCode::OK);
    let admin_get = |path: &str| {
        let url = format!("http://{}{path}", gw.admin);
        async move {
            call(
                &h1_client(),
                Request::get(url).header("authorization", "Bearer admin-token-xyz").body(empty()).unwrap(),
            )
            .await
        }
    };
    for path in ["/config", "/routes", "/upstreams", "/config/status", "/metrics"] {
        let (s, _, body) = admin_get(path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
        for secret in [SECRET, KEY, "admin-token-xyz", &hash[7..], "caller-token-999"] {
            assert!(!body.contains(secret), "{path} shows a secret ({secret})");
        }
    }
    let (_, _, config) = admin_get("/config").await;
    let c: serde_json::Value = serde_json::from_str(&config).unwrap();
    let upc = c["upstreams"].as_array().unwrap().iter().find(|u| u["id"] == "up").unwrap();
    assert_eq!(upc["credentials"][0]["id"], "vendor-cred");
    assert_eq!(upc["credentials"][0]["kind"], "header x-vendor-key");
    assert_eq!(upc["credentials"][0]["value"], "[redacted]");
    assert_eq!(c["callers"]["callers"][0]["api_keys"][0], "soar-key-1");
    let (_, _, routes) = admin_get("/routes").await;
    assert!(routes.contains("\"must-audit\"") && routes.contains("\"required\""), "{routes}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tap_streams_filtered_lines_and_slow_readers_miss_lines_instead_of_holding_memory() {
    let up = Upstream::start().await;
    let (p, _) = policies("");
    routes(&p, up.addr);
    let gw = Running::start(p).await;
    let tap = h1_client()
        .request(Request::get(format!("http://{}/tap?status=2xx&route=api", gw.admin)).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(tap.headers()["content-type"], "text/event-stream");
    let mut body = tap.into_body();
    // The hello comment proves the subscription is live before requests are sent.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with(": interlock tap"));
    req(&gw, "GET", "/nope", true, "").await; // filtered out (404)
    req(&gw, "GET", "/api/tapped", true, "").await;
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.unwrap().unwrap().unwrap();
    let text = String::from_utf8_lossy(frame.data_ref().unwrap()).to_string();
    let v: serde_json::Value = serde_json::from_str(text.trim().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(
        (v["path"].as_str(), v["status"].as_u64(), v["caller"].as_str()),
        (Some("/api/tapped"), Some(200), Some("soar"))
    );

    // A reader that stops reading (tiny receive window, never reads): the gateway keeps serving and
    // counts what the reader missed instead of queueing it.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stalled = sock.connect(gw.admin).await.unwrap();
    use tokio::io::AsyncWriteExt as _;
    stalled.write_all(b"GET /tap HTTP/1.1\r\nHost: admin\r\n\r\n").await.unwrap();
    let mut lagging = gw.gw.as_ref().unwrap().store.telemetry.subscribe_tap();
    let client = h1_client();
    for i in 0..2500 {
        let r = Request::get(gw.url(&format!("/api/n{i}"))).header("x-api-key", KEY).body(empty()).unwrap();
        assert_eq!(call(&client, r).await.0, StatusCode::OK);
    }
    // The bound itself: a subscriber that has not read for 2500 lines finds only the newest 1024
    // kept for it (the ring overwrote the rest) and is told how many it missed.
    match lagging.try_recv() {
        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => assert!(n >= 2500 - 1024, "missed {n}"),
        other => panic!("the subscriber should have lagged: {other:?}"),
    }
    let (_, _, m) = get(&format!("http://{}/metrics", gw.admin)).await;
    let missed: f64 = m
        .lines()
        .find(|l| l.starts_with("interlock_tap_dropped_lines_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0);
    assert!(missed >= 0.0, "the missed-lines counter is exported: {m}");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_records_can_carry_ocsf_api_activity_events() {
    let up = Upstream::start().await;
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.log");
    let (p, _) = policies(&format!("telemetry:\n  audit:\n    file: {}\n    ocsf: true\n", audit.display()));
    routes(&p, up.addr);
    let gw = Running::start(p).await;
    assert_eq!(req(&gw, "POST", "/api/thing", true, "{}").await, StatusCode::OK);
    assert_eq!(req(&gw, "DELETE", "/api/thing", false, "").await.as_u16(), 401);
    assert!(gw.shutdown().await);
    let records = audit_lines(&audit);
    assert_eq!(records.len(), 2);
    let ok = &records[0]["ocsf"];
    // Required by OCSF 1.8 (base event + API Activity): class, category, activity, type, time,
    // severity, metadata.product and version, actor, api.operation, src_endpoint.
    assert_eq!((ok["class_uid"].as_u64(), ok["category_uid"].as_u64()), (Some(6003), Some(6)));
    assert_eq!((ok["activity_id"].as_u64(), ok["type_uid"].as_u64()), (Some(1), Some(600_301)), "POST is Create");
    assert!(ok["time"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(ok["severity_id"], 1);
    assert_eq!(ok["metadata"]["version"], "1.8.0");
    assert_eq!(ok["metadata"]["product"]["name"], "Interlock");
    assert_eq!(ok["actor"]["user"]["uid"], "soar");
    assert_eq!(ok["api"]["operation"], "POST /api/thing");
    assert_eq!(ok["api"]["service"]["name"], "up");
    assert_eq!(ok["src_endpoint"]["ip"], "127.0.0.1");
    assert_eq!(ok["status_id"], 1);
    let denied = &records[1]["ocsf"];
    assert_eq!((denied["activity_id"].as_u64(), denied["status_id"].as_u64()), (Some(4), Some(2)));
    assert_eq!(denied["api"]["response"]["error"], "unauthenticated");
    // The OCSF events are inside the chain.
    assert_eq!(interlock::telemetry::audit::verify(&[audit]), Ok(2));
}
