//! Every refusal: its status, its problem+json body, and that the upstream received nothing.

use std::time::Duration;

use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const ROUTES: &str = r#"
- id: api
  match:
    path: /api/**
    methods: [GET, POST]
  upstream: up
  anonymous: true
  max_body: 1KiB
- id: slow
  match:
    path: /slow/**
  upstream: up
  anonymous: true
  timeout: 300ms
- id: dead
  match:
    path: /dead/**
  upstream: dead
  anonymous: true
"#;

async fn gateway() -> (Running, Upstream) {
    let up = Upstream::start().await;
    // A port that was just free: connections to it are refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let p = Policies::new("limits:\n  max_headers: 20\n  max_header_bytes: 2KiB\n  header_read_timeout: 400ms\n");
    p.upstream("up", up.addr, "", "");
    p.upstream("dead", dead, "", "connect_timeout: 1s\n");
    p.write("routes/r.yaml", ROUTES);
    (Running::start(p).await, up)
}

async fn raw_req(gw: &Running, req: &str) -> (u16, String, String) {
    split_raw(&raw(gw.addr, req.as_bytes(), Duration::from_millis(700)).await)
}

fn problem_from_raw(status: u16, head: &str, body: &str, want: u16, slug: &str) {
    assert_eq!(status, want, "head: {head}\nbody: {body}");
    assert!(head.contains("content-type: application/problem+json"), "{head}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["type"], format!("urn:interlock:problem:{slug}"));
    let rid = head.lines().find_map(|l| l.strip_prefix("x-request-id: ")).expect("request id header");
    assert_eq!(v["request_id"], rid.trim());
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_headers_is_431() {
    let (gw, up) = gateway().await;
    let mut req = Request::get(gw.url("/api/x"));
    for i in 0..30 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let (s, h, b) = call(&h1_client(), req.body(empty()).unwrap()).await;
    assert_problem(s, &h, &b, 431, "headers-too-large");
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_are_431() {
    let (gw, up) = gateway().await;
    let req = Request::get(gw.url("/api/x")).header("x-big", "a".repeat(3000)).body(empty()).unwrap();
    let (s, h, b) = call(&h1_client(), req).await;
    assert_problem(s, &h, &b, 431, "headers-too-large");
    // Same over h2c.
    let req = Request::get(gw.url("/api/x")).header("x-big", "a".repeat(3000)).body(empty()).unwrap();
    let (s, h, b) = call(&h2c_client(), req).await;
    assert_problem(s, &h, &b, 431, "headers-too-large");
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_body_over_the_limit_is_413_before_forwarding() {
    let (gw, up) = gateway().await;
    let req = Request::post(gw.url("/api/count")).body(body(vec![b'a'; 4096])).unwrap();
    let (s, h, b) = call(&h1_client(), req).await;
    assert_problem(s, &h, &b, 413, "body-too-large");
    assert_eq!(up.count(), 0);
    // At the limit it goes through.
    let req = Request::post(gw.url("/api/count")).body(body(vec![b'a'; 1024])).unwrap();
    let (s, _, b) = call(&h1_client(), req).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, "1024"));
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_body_over_the_limit_is_413() {
    let (gw, up) = gateway().await;
    let mut chunked = String::from("POST /api/count HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..4 {
        chunked.push_str(&format!("400\r\n{}\r\n", "b".repeat(1024)));
    }
    chunked.push_str("0\r\n\r\n");
    let (s, head, body) = raw_req(&gw, &chunked).await;
    problem_from_raw(s, &head, &body, 413, "body-too-large");
    // The upstream may have seen the head, but never a complete request: it answered nothing.
    assert!(up.count() <= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_header_senders_are_disconnected() {
    let (gw, up) = gateway().await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /api/x HTTP/1.1\r\nHost: gw\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    // The gateway closes the connection once the header read timeout (400ms) passes.
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("connection was not closed")
        .unwrap_or(0);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "closed too early: {elapsed:?}");
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_stalled_preface_connections_are_disconnected() {
    let (gw, _up) = gateway().await;
    for first in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(first).await.unwrap();
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(closed.is_ok(), "a connection that sent {first:?} was kept open");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_is_504() {
    let (gw, _up) = gateway().await;
    let (s, h, b) = get(&gw.url("/slow/x?sleep_ms=3000")).await;
    let v = assert_problem(s, &h, &b, 504, "gateway-timeout");
    assert!(v["detail"].as_str().unwrap().contains("300 ms"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_and_reset_upstreams_are_502() {
    let (gw, _up) = gateway().await;
    let (s, h, b) = get(&gw.url("/dead/x")).await;
    let v = assert_problem(s, &h, &b, 502, "upstream-unavailable");
    // The detail names the upstream id, never its address.
    assert!(v["detail"].as_str().unwrap().contains("`dead`"));
    assert!(!b.contains("127.0.0.1"), "{b}");
    let (s, h, b) = get(&gw.url("/api/reset")).await;
    assert_problem(s, &h, &b, 502, "upstream-failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_is_404_and_wrong_method_is_405() {
    let (gw, up) = gateway().await;
    let (s, h, b) = get(&gw.url("/nothing/here")).await;
    assert_problem(s, &h, &b, 404, "no-route");
    let req = Request::delete(gw.url("/api/x")).body(empty()).unwrap();
    let (s, h, b) = call(&h1_client(), req).await;
    assert_problem(s, &h, &b, 405, "method-not-allowed");
    assert_eq!(h["allow"], "GET, POST");
    let req = Request::get(gw.url("/nothing")).body(empty()).unwrap();
    let (s, h, b) = call(&h2c_client(), req).await;
    assert_problem(s, &h, &b, 404, "no-route");
    // A caller's W3C trace id comes back in the problem, so it can find the call in its traces.
    let req = Request::get(gw.url("/nothing"))
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .body(empty())
        .unwrap();
    let (s, h, b) = call(&h1_client(), req).await;
    let v = assert_problem(s, &h, &b, 404, "no-route");
    assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_shapes_and_tunnels_are_refused_before_any_upstream_byte() {
    let (gw, up) = gateway().await;
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("POST /api/count HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, Some("ambiguous-framing")),
        ("POST /api/count HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, Some("ambiguous-framing")),
        ("POST /api/count HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400, Some("ambiguous-framing")),
        ("POST /api/count HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400, Some("ambiguous-framing")),
        ("POST /api/count HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, Some("ambiguous-framing")),
        // Framings hyper itself refuses (its plain 400) also never reach the upstream.
        ("POST /api/count HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, None),
        ("POST /api/count HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400, None),
        ("GET /api/x HTTP/1.1\r\nHost: gw\r\nX-Bad: a\x01b\r\n\r\n", 400, None),
        ("CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n", 405, Some("connect-not-supported")),
        ("GET http://evil.example/api/x HTTP/1.1\r\nHost: evil.example\r\n\r\n", 400, Some("foreign-target")),
        ("GET /api/x HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 400, Some("upgrade-not-allowed")),
        ("GET /api/a%2f..%2fb HTTP/1.1\r\nHost: gw\r\n\r\n", 400, Some("invalid-path")),
        ("GET /api/a%5cb HTTP/1.1\r\nHost: gw\r\n\r\n", 400, Some("invalid-path")),
        ("GET /api/a\\b HTTP/1.1\r\nHost: gw\r\n\r\n", 400, None),
        ("GET /api/a%00 HTTP/1.1\r\nHost: gw\r\n\r\n", 400, Some("invalid-path")),
        ("GET /api/..;/admin HTTP/1.1\r\nHost: gw\r\n\r\n", 400, Some("invalid-path")),
        ("GET /api/x HTTP/1.1\r\n\r\n", 400, Some("missing-host")),
    ];
    for (req, want, slug) in cases {
        let (s, head, body) = raw_req(&gw, req).await;
        match slug {
            Some(slug) => problem_from_raw(s, &head, &body, *want, slug),
            None => assert_eq!(s, *want, "{req:?} -> {head}"),
        }
        assert_eq!(up.count(), 0, "{req:?} reached the upstream");
    }
    // Absolute-form naming this gateway itself is fine.
    let own = format!("GET http://{}/api/x HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr, gw.addr);
    let (s, _, body) = raw_req(&gw, &own).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(up.last().uri, "/api/x");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_request_does_not_poison_the_next_on_the_connection() {
    let (gw, up) = gateway().await;
    // Pipelined: a clean request, then a valid one with a body containing header-like text.
    let two = "POST /api/count HTTP/1.1\r\nHost: gw\r\nContent-Length: 39\r\n\r\nX\r\nContent-Length: 5\r\nTransfer-Enc: x\r\nGET /api/second HTTP/1.1\r\nHost: gw\r\n\r\n";
    let out = raw(gw.addr, two.as_bytes(), Duration::from_millis(700)).await;
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    assert_eq!(up.count(), 2);
    // A refused upgrade leaves the connection speaking HTTP/1: the next request is served.
    let two = "GET /api/x HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /api/after HTTP/1.1\r\nHost: gw\r\n\r\n";
    let out = raw(gw.addr, two.as_bytes(), Duration::from_millis(700)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(out.matches("HTTP/1.1 200").count(), 1, "{out}");
    assert_eq!(up.last().uri, "/api/after");
}
