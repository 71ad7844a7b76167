//! The real binary: start-up, SIGHUP reload, SIGTERM drain, `check` and `schema`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;

use crate::support::*;

/// Starts `interlock run` and returns the child and its data-plane and admin addresses (read from
/// its JSON log lines).
fn spawn_run(dir: &std::path::Path) -> (KillOnDrop, SocketAddr, SocketAddr, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(dir)
        .env("INTERLOCK_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut listen, mut admin) = (None, None);
    while listen.is_none() || admin.is_none() {
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("gateway did not log its addresses");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        match v["message"].as_str() {
            Some("listening") => listen = v["addr"].as_str().map(|a| a.parse().unwrap()),
            Some("admin listening") => admin = v["addr"].as_str().map(|a| a.parse().unwrap()),
            _ => {}
        }
    }
    (KillOnDrop(child), listen.unwrap(), admin.unwrap(), rx)
}

pub(crate) fn signal(child: &KillOnDrop, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.0.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} failed");
}

pub(crate) fn wait_exit(child: &mut KillOnDrop, within: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            return s;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.0.kill();
            panic!("the gateway did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_a_slow_request_then_exits_zero() {
    let up = Upstream::start().await;
    let p = Policies::new("shutdown:\n  grace: 10s\n");
    p.upstream("up", up.addr, "", "");
    p.write("routes/r.yaml", "- id: all\n  match:\n    path: /**\n  upstream: up\n  anonymous: true\n");
    let (mut child, addr, admin, _logs) = spawn_run(p.path());
    let slow = tokio::spawn(async move { get(&format!("http://{addr}/slow?sleep_ms=1500")).await });
    wait_until("the slow request to reach the upstream", Duration::from_secs(5), || up.count() == 1).await;
    signal(&child, "-TERM");
    // While draining: not ready, and no new connections are accepted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, _, _) = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let refused = tokio::net::TcpStream::connect(addr).await.is_err();
    assert!(refused, "the listener still accepts during the drain");
    let (s, _, b) = slow.await.unwrap();
    assert_eq!(s, StatusCode::OK, "{b}");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10))).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_health_endpoints_answer() {
    let up = Upstream::start().await;
    let p = Policies::new("reload:\n  watch: false\n");
    p.upstream("up", up.addr, "", "");
    p.write("routes/r.yaml", "- id: a\n  match:\n    path: /a\n  upstream: up\n  anonymous: true\n");
    let (mut child, addr, admin, _logs) = spawn_run(p.path());
    let (s, _, _) = get(&format!("http://{admin}/healthz")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, b) = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, _) = get(&format!("http://{addr}/b")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    p.write("routes/r.yaml", "- id: b\n  match:\n    path: /b\n  upstream: up\n  anonymous: true\n");
    signal(&child, "-HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get(&format!("http://{addr}/b")).await.0 != StatusCode::OK {
        assert!(tokio::time::Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, st) = get(&format!("http://{admin}/config/status")).await;
    let st: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(st["last_reload"]["trigger"], "signal");
    assert_eq!(st["generation"], 2);
    signal(&child, "-INT");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10))).await.unwrap();
    assert!(status.success());
}

#[test]
fn check_prints_a_summary_or_every_error() {
    let p = Policies::new("");
    p.upstream("up", "127.0.0.1:1".parse().unwrap(), "/v1", "");
    p.write(
        "routes/r.yaml",
        "- id: a\n  match:\n    path: /a/{id}\n    methods: [GET]\n  upstream: up\n  anonymous: true\n  rewrite: /x/{id}\n",
    );
    let out = Command::new(bin()).arg("check").arg(p.path()).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("OK") && text.contains("/a/{id}") && text.contains("http://127.0.0.1:1/v1"), "{text}");

    p.write("routes/r.yaml", "- id: a\n  match:\n    path: a\n  upstream: nope\n  bogus: 1\n");
    let out = Command::new(bin()).arg("check").arg(p.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 error(s)"), "{err}");
    assert!(err.contains("r.yaml:3: [0].match.path"), "{err}");
    assert!(err.contains("r.yaml:4: [0].upstream"), "{err}");
    assert!(err.contains("r.yaml:5: [0].bogus: unknown key"), "{err}");
}

#[test]
fn published_schemas_are_current_and_reject_unknown_keys() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for kind in ["gateway", "callers", "upstream", "routes"] {
        let out = Command::new(bin()).args(["schema", kind]).output().unwrap();
        assert!(out.status.success());
        let generated = String::from_utf8(out.stdout).unwrap();
        let committed =
            std::fs::read_to_string(root.join(format!("docs/schema/{kind}.schema.json"))).unwrap_or_default();
        assert_eq!(
            generated, committed,
            "docs/schema/{kind}.schema.json is stale: run `interlock schema --out docs/schema`"
        );
        let v: serde_json::Value = serde_json::from_str(&generated).unwrap();
        assert!(
            generated.contains("\"additionalProperties\": false"),
            "{kind}: unknown keys must be rejected by editors too"
        );
        assert!(v["$schema"].as_str().is_some());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_threaded_gateway_with_trace_export_and_audit_still_exits_promptly() {
    let up = Upstream::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let audit = tempfile::tempdir().unwrap();
    let p = Policies::new(&format!(
        "runtime:\n  worker_threads: 1\ntelemetry:\n  audit:\n    file: {}/a.log\n  tracing:\n    endpoint: http://{dead}/v1/traces\n    timeout: 1s\n",
        audit.path().display()
    ));
    p.upstream("up", up.addr, "", "");
    p.write("routes/r.yaml", "- id: all\n  match:\n    path: /**\n  upstream: up\n  anonymous: true\n");
    let (mut child, addr, _admin, _logs) = spawn_run(p.path());
    for _ in 0..5 {
        let req = http::Request::get(format!("http://{addr}/x"))
            .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .body(empty())
            .unwrap();
        assert_eq!(call(&h1_client(), req).await.0, StatusCode::OK);
    }
    signal(&child, "-TERM");
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(15))).await.unwrap();
    assert!(status.success());
    assert_eq!(interlock::telemetry::audit::verify(&[audit.path().join("a.log")]), Ok(5));
}
