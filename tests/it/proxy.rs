//! Forwarding: routing, rewrite, query, header rules, request ids, h1 and h2c, upgrades.

use std::time::Duration;

use http::{Method, Request, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const ROUTES: &str = r#"
- id: vt-file
  match:
    path: /vt/files/{hash}
    methods: [GET, HEAD]
  upstream: vt
  anonymous: true
  rewrite: /files/{hash}
- id: vt-any
  match:
    path: /vt/**
  upstream: vt
  anonymous: true
  rewrite: /**
- id: host-only
  match:
    path: /hosted/**
    host: api.example.test
  upstream: vt
  anonymous: true
- id: ws
  match:
    path: /ws/upgrade
  upstream: vt
  anonymous: true
  upgrade: true
"#;

async fn gateway(extra_gateway: &str) -> (Running, Upstream) {
    let up = Upstream::start().await;
    let p = Policies::new(extra_gateway);
    p.upstream("vt", up.addr, "/api/v3", "credential:\n  header: x-apikey\n  value: file:vt.key\n");
    p.write("vt.key", "vendor-secret-123\n");
    p.write("routes/vt.yaml", ROUTES);
    (Running::start(p).await, up)
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrite_query_and_injected_credential_reach_the_upstream() {
    let (gw, up) = gateway("").await;
    let req = Request::get(gw.url("/vt/files/abc123?x=1&y=%20z"))
        .header("authorization", "Bearer caller-token")
        .header("x-apikey", "caller-held-key")
        .header("cookie", "session=1")
        .header("x-custom", "kept")
        .body(empty())
        .unwrap();
    let (status, headers, body) = call(&h1_client(), req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = up.last();
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.uri, "/api/v3/files/abc123?x=1&y=%20z");
    // Exactly one credential: the injected one (invariant 2).
    assert_eq!(seen.headers.get_all("x-apikey").iter().collect::<Vec<_>>(), vec!["vendor-secret-123"]);
    assert!(seen.headers.get("authorization").is_none());
    assert!(seen.headers.get("cookie").is_none());
    assert_eq!(seen.headers["x-custom"], "kept");
    assert_eq!(seen.headers["host"], up.addr.to_string());
    // The request id goes upstream and comes back.
    let rid = headers["x-request-id"].to_str().unwrap();
    assert_eq!(seen.headers["x-request-id"], rid);
    assert_eq!(rid.len(), 36);
    // Response hop-by-hop headers from the upstream are removed.
    assert!(headers.get("x-upstream-hop").is_none());
    assert!(headers.get("keep-alive").is_none());
    assert!(body.contains("/api/v3/files/abc123"));
}

#[tokio::test(flavor = "multi_thread")]
async fn prefix_routes_and_normalised_paths_are_forwarded_as_routed() {
    let (gw, up) = gateway("").await;
    let (status, _, _) = get(&gw.url("/vt/a/./b/../c//d?q")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.last().uri, "/api/v3/a/c/d?q");
    // Dot segments cannot climb out of the route: `/vt/../x` normalises to `/x`, which no route serves.
    let (status, _, _) = raw_status(&gw, "GET /vt/../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 404);
    assert_eq!(up.count(), 1);
}

async fn raw_status(gw: &Running, req: &str) -> (u16, String, String) {
    split_raw(&raw(gw.addr, req.as_bytes(), Duration::from_millis(500)).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_and_connection_named_headers_never_reach_the_upstream() {
    let (gw, up) = gateway("").await;
    let (status, _, _) = raw_status(
        &gw,
        "GET /vt/files/x HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive, X-Named-Hop\r\nX-Named-Hop: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\nX-End: 1\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let h = up.last().headers;
    for name in ["x-named-hop", "keep-alive", "te", "proxy-authorization", "proxy-connection", "trailer", "upgrade"] {
        assert!(h.get(name).is_none(), "{name} reached the upstream: {h:?}");
    }
    // hyper's client adds its own `connection` handling; whatever it says, not our client's token.
    assert!(h.get_all("connection").iter().all(|v| !v.to_str().unwrap().to_ascii_lowercase().contains("x-named-hop")));
    assert_eq!(h["x-end"], "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_are_rebuilt_for_untrusted_peers() {
    let (gw, up) = gateway("").await;
    let req = Request::get(gw.url("/vt/files/x"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .body(empty())
        .unwrap();
    call(&h1_client(), req).await;
    let h = up.last().headers;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    let host = gw.addr.ip().to_string();
    assert_eq!(h["x-forwarded-host"], host.as_str());
    assert_eq!(h["forwarded"], format!("for=127.0.0.1;proto=http;host={host}").as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_are_appended_for_trusted_proxies() {
    let (gw, up) = gateway("forwarded:\n  trusted_proxies: [127.0.0.0/8]\n").await;
    let req = Request::get(gw.url("/vt/files/x")).header("x-forwarded-for", "203.0.113.9").body(empty()).unwrap();
    call(&h1_client(), req).await;
    assert_eq!(up.last().headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_propagated_when_valid_and_replaced_otherwise() {
    let (gw, up) = gateway("").await;
    let req = Request::get(gw.url("/vt/files/x")).header("x-request-id", "tool-abc-123").body(empty()).unwrap();
    let (_, h, _) = call(&h1_client(), req).await;
    assert_eq!(h["x-request-id"], "tool-abc-123");
    assert_eq!(up.last().headers["x-request-id"], "tool-abc-123");
    let req = Request::get(gw.url("/vt/files/x")).header("x-request-id", "bad id with spaces").body(empty()).unwrap();
    let (_, h, _) = call(&h1_client(), req).await;
    assert_ne!(h["x-request-id"], "bad id with spaces");
    assert_eq!(up.last().headers["x-request-id"], h["x-request-id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_prior_knowledge_is_proxied_to_an_http1_upstream() {
    let (gw, up) = gateway("").await;
    let client = h2c_client();
    let req = Request::post(gw.url("/vt/x/echo?q=1"))
        .header("authorization", "Bearer no")
        .body(body("hello over h2"))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().contains_key("x-request-id"));
    let got = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    assert_eq!(&got[..], b"hello over h2");
    let seen = up.last();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.uri, "/api/v3/x/echo?q=1");
    assert!(seen.headers.get("authorization").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_select_routes() {
    let (gw, up) = gateway("").await;
    let (status, _, body) = raw_status(&gw, "GET /hosted/a HTTP/1.1\r\nHost: API.example.test:8080\r\n\r\n").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(up.last().uri, "/api/v3/hosted/a");
    let (status, _, _) = raw_status(&gw, "GET /hosted/a HTTP/1.1\r\nHost: other.test\r\n\r\n").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrades_are_tunnelled_on_routes_that_allow_them() {
    let (gw, up) = gateway("").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /ws/upgrade HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    s.write_all(b"ping-through-tunnel").await.unwrap();
    let mut got = vec![0u8; 19];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got, b"ping-through-tunnel");
    assert_eq!(up.last().headers["upgrade"], "echo");
}

#[tokio::test(flavor = "multi_thread")]
async fn head_and_status_codes_pass_through_unchanged() {
    let (gw, _up) = gateway("").await;
    let (status, _, body) = get(&gw.url("/vt/x/status-418")).await;
    assert_eq!(status.as_u16(), 418);
    assert_eq!(body, "status 418");
    let (status, _, body) = get(&gw.url("/vt/x/status-503")).await;
    // A vendor's own 503 is the vendor's answer, not a gateway problem.
    assert_eq!(status.as_u16(), 503);
    assert_eq!(body, "status 503");
    let req = Request::head(gw.url("/vt/files/abc")).body(empty()).unwrap();
    let (status, _, body) = call(&h1_client(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_secret_file_is_used_by_the_next_request_without_restart() {
    let up = Upstream::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let key = secrets.path().join("vt.key");
    std::fs::write(&key, "first-secret\n").unwrap();
    let p = Policies::new("reload:\n  debounce: 50ms\n");
    p.upstream("vt", up.addr, "", &format!("credential:\n  header: x-apikey\n  value: file:{}\n", key.display()));
    p.write("routes/r.yaml", "- id: all\n  match:\n    path: /**\n  upstream: vt\n  anonymous: true\n");
    let gw = Running::start(p).await;
    get(&gw.url("/a")).await;
    assert_eq!(up.last().headers["x-apikey"], "first-secret");
    std::fs::write(&key, "second-secret\n").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        get(&gw.url("/b")).await;
        if up.last().headers["x-apikey"] == "second-secret" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the rotated secret was never used");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
