//! OAuth2 client credentials against a real in-process token endpoint.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::*;

/// A token endpoint: checks client credentials, issues numbered tokens, can fail on demand.
#[derive(Clone)]
struct Idp {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    expires_in: Arc<AtomicU64>,
    last_form: Arc<Mutex<String>>,
}

impl Idp {
    async fn start() -> Idp {
        let idp = Idp {
            addr: "127.0.0.1:0".parse().unwrap(),
            requests: Arc::default(),
            failing: Arc::default(),
            expires_in: Arc::new(AtomicU64::new(3600)),
            last_form: Arc::default(),
        };
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let me = idp.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = tcp.accept().await else { continue };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let me = me.clone();
                        async move {
                            let n = me.requests.fetch_add(1, Ordering::SeqCst) + 1;
                            let auth = req.headers().get("authorization").map(|v| v.to_str().unwrap().to_owned());
                            let form = String::from_utf8(req.into_body().collect().await.unwrap().to_bytes().to_vec())
                                .unwrap();
                            *me.last_form.lock().unwrap() = form;
                            // Slow enough that concurrent callers really overlap.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let (status, body) = if me.failing.load(Ordering::SeqCst) {
                                (500, r#"{"error":"temporarily_unavailable"}"#.to_owned())
                            } else if auth.as_deref() != Some("Basic Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ=") {
                                (401, r#"{"error":"invalid_client"}"#.to_owned())
                            } else {
                                (
                                    200,
                                    format!(
                                        r#"{{"access_token":"tok-{n}","token_type":"bearer","expires_in":{}}}"#,
                                        me.expires_in.load(Ordering::SeqCst)
                                    ),
                                )
                            };
                            let mut r = Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Idp { addr, ..idp }
    }
    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A vendor API that only accepts the tokens in `valid`.
async fn vendor(valid: Arc<Mutex<Vec<String>>>, seen: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = tcp.accept().await else { continue };
            let (valid, seen) = (valid.clone(), seen.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (valid, seen) = (valid.clone(), seen.clone());
                    async move {
                        let auth = req
                            .headers()
                            .get_all("authorization")
                            .iter()
                            .map(|v| v.to_str().unwrap().to_owned())
                            .collect::<Vec<_>>();
                        assert!(auth.len() <= 1, "more than one Authorization header: {auth:?}");
                        let token = auth.first().and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("").to_owned();
                        seen.lock().unwrap().push(token.clone());
                        let ok = valid.lock().unwrap().contains(&token);
                        let mut r =
                            Response::new(Full::new(Bytes::from(if ok { "vendor ok" } else { "invalid token" })));
                        *r.status_mut() = if ok { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

async fn gateway(idp: &Idp, vendor: SocketAddr, extra: &str) -> Running {
    let p = Policies::new("");
    p.write("cs.id", "client-id");
    p.write("cs.secret", "client-secret");
    p.upstream(
        "cs",
        vendor,
        "",
        &format!(
            "credential:\n  id: cs-main\n  oauth2:\n    token_url: http://{}/oauth2/token\n    client_id: file:cs.id\n    client_secret: file:cs.secret\n    scopes: [alerts:read, hosts:write]\n    audience: https://api.vendor.test\n    params: {{ member_cid: abc123 }}\n{extra}",
            idp.addr
        ),
    );
    p.write("routes/r.yaml", "- id: cs\n  match:\n    path: /cs/**\n  upstream: cs\n  anonymous: true\n");
    Running::start(p).await
}

fn valid_tokens(n: usize) -> Arc<Mutex<Vec<String>>> {
    Arc::new(Mutex::new((1..=n).map(|i| format!("tok-{i}")).collect()))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_mint_serves_many_calls_even_a_hundred_concurrent_cold_ones() {
    let idp = Idp::start().await;
    let seen = Arc::default();
    let v = vendor(valid_tokens(100), Arc::clone(&seen)).await;
    let gw = gateway(&idp, v, "").await;
    let client = h1_client();
    let calls = (0..100).map(|i| {
        let (client, url) = (client.clone(), gw.url(&format!("/cs/alerts/{i}")));
        tokio::spawn(async move {
            call(&client, Request::get(url).header("authorization", "Bearer caller-token").body(empty()).unwrap())
                .await
                .0
        })
    });
    for c in calls {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(idp.count(), 1, "100 concurrent cold calls must cause exactly one token request");
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/cs/again")).await.0, StatusCode::OK);
    }
    assert_eq!(idp.count(), 1, "later calls reuse the token");
    assert!(
        seen.lock().unwrap().iter().all(|t: &String| t == "tok-1"),
        "the caller's own token never reached the vendor"
    );
    let form = idp.last_form.lock().unwrap().clone();
    for part in [
        "grant_type=client_credentials",
        "scope=alerts%3Aread%20hosts%3Awrite",
        "audience=https%3A%2F%2Fapi.vendor.test",
        "member_cid=abc123",
    ] {
        assert!(form.contains(part), "{part} missing from {form}");
    }
    assert!(!form.contains("client-secret"), "client_auth basic keeps the secret out of the body");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_refreshed_before_expiry_and_a_401_purges_and_retries_once() {
    let idp = Idp::start().await;
    idp.expires_in.store(2, Ordering::SeqCst);
    let valid = valid_tokens(10);
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let v = vendor(valid.clone(), seen.clone()).await;
    let gw = gateway(&idp, v, "    refresh_before: 1500ms\n").await;
    assert_eq!(get(&gw.url("/cs/a")).await.0, StatusCode::OK);
    assert_eq!(idp.count(), 1);
    // Within 1.5 s of its 2 s lifetime the token is refreshed before use.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get(&gw.url("/cs/b")).await.0, StatusCode::OK);
    assert_eq!(idp.count(), 2);
    assert_eq!(seen.lock().unwrap().last().unwrap(), "tok-2");

    // The vendor revokes the current token: the gateway purges it, mints, and retries the GET once.
    idp.expires_in.store(3600, Ordering::SeqCst);
    valid.lock().unwrap().retain(|t| t != "tok-2");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let before = seen.lock().unwrap().len();
    let (s, _, b) = get(&gw.url("/cs/c")).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, "vendor ok"));
    assert_eq!(idp.count(), 3);
    assert_eq!(seen.lock().unwrap()[before..].to_vec(), vec!["tok-2".to_owned(), "tok-3".to_owned()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idp_outage_backs_off_and_fails_closed_with_a_clear_answer() {
    let idp = Idp::start().await;
    idp.failing.store(true, Ordering::SeqCst);
    let v = vendor(valid_tokens(10), Arc::default()).await;
    let gw = gateway(&idp, v, "").await;
    for _ in 0..20 {
        let (s, h, b) = get(&gw.url("/cs/x")).await;
        let p = assert_problem(s, &h, &b, 503, "credential-unavailable");
        assert!(p["detail"].as_str().unwrap().contains("cs-main"), "{p}");
        assert!(!b.contains("client-secret"));
    }
    assert_eq!(idp.count(), 1, "the back-off keeps 20 calls from becoming 20 token requests");
    let (_, _, m) = get(&format!("http://{}/metrics", gw.admin)).await;
    assert!(m.contains("interlock_token_requests_total{credential=\"cs-main\",result=\"failed\"} 1"), "{m}");
    // After the back-off (1 s) and with the IdP back, calls work again.
    idp.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&gw.url("/cs/y")).await.0, StatusCode::OK);
    assert_eq!(idp.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_request_is_a_span_in_the_trace_of_the_call_that_needed_it() {
    let (collector, spans) = crate::traces::receiver().await;
    let idp = Idp::start().await;
    let vendor = vendor(valid_tokens(1), Arc::default()).await;
    let p = Policies::new(&format!(
        "telemetry:\n  tracing:\n    endpoint: http://{collector}/v1/traces\n    sampling: 1.0\n    timeout: 2s\n"
    ));
    p.write("cs.id", "client-id");
    p.write("cs.secret", "client-secret");
    p.upstream(
        "cs",
        vendor,
        "",
        &format!("credential:\n  id: cs-main\n  oauth2:\n    token_url: http://{}/oauth2/token\n    client_id: file:cs.id\n    client_secret: file:cs.secret\n", idp.addr),
    );
    p.write("routes/r.yaml", "- id: cs\n  match:\n    path: /cs/**\n  upstream: cs\n  anonymous: true\n");
    let gw = Running::start(p).await;
    let (s, h, _) = get(&gw.url("/cs/x")).await;
    assert_eq!(s, StatusCode::OK);
    let trace = h["x-trace-id"].to_str().unwrap().to_owned();
    assert_eq!(get(&gw.url("/cs/y")).await.0, StatusCode::OK); // cached: no second token span
    assert!(gw.shutdown().await);
    let spans = spans.lock().unwrap().clone();
    let token: Vec<_> = spans.iter().filter(|s| s.name == "POST oauth2 token").collect();
    assert_eq!(token.len(), 1, "{spans:#?}");
    let t = token[0];
    assert_eq!(t.trace_id.iter().map(|b| format!("{b:02x}")).collect::<String>(), trace);
    let server = spans.iter().find(|s| s.kind == 2 && s.trace_id == t.trace_id).unwrap();
    assert_eq!(t.parent_span_id, server.span_id);
    assert_eq!(crate::traces::attr(t, "interlock.credential").as_deref(), Some("cs-main"));
    assert_eq!(crate::traces::attr(t, "interlock.token.result").as_deref(), Some("ok"));
}
