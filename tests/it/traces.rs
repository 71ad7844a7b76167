//! OpenTelemetry export, checked by a real OTLP/HTTP receiver that decodes the protobuf.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::support::*;

/// An OTLP/HTTP receiver: decodes every POST body as `ExportTraceServiceRequest`.
pub(crate) async fn receiver() -> (SocketAddr, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let s = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((c, _)) = tcp.accept().await else { continue };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                        for rs in export.resource_spans {
                            for ss in rs.scope_spans {
                                s.lock().unwrap().extend(ss.spans);
                            }
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(c), svc)
                    .await;
            });
        }
    });
    (addr, spans)
}

pub(crate) fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()).and_then(|v| v.value.as_ref()).map(
        |v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        },
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn gateway(collector: SocketAddr, up: &Upstream) -> Running {
    let p = Policies::new(&format!(
        "telemetry:\n  tracing:\n    endpoint: http://{collector}/v1/traces\n    sampling: 0.0\n    timeout: 2s\n"
    ));
    p.upstream("up", up.addr, "/base", "");
    p.write("routes/r.yaml", "- id: files\n  match:\n    path: /vt/files/{hash}\n  upstream: up\n  anonymous: true\n  rewrite: /files/{hash}\n");
    Running::start(p).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxied_call_exports_a_server_and_a_client_span_in_the_callers_trace() {
    let (collector, spans) = receiver().await;
    let up = Upstream::start().await;
    let gw = gateway(collector, &up).await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let req = Request::get(gw.url("/vt/files/abc"))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .body(empty())
        .unwrap();
    let (s, h, _) = call(&h1_client(), req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-trace-id"], caller_trace);
    // The upstream continues the same trace, as a child of the gateway's client span.
    let tp = up.last().headers["traceparent"].to_str().unwrap().to_owned();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", caller_trace, "01"), "{tp}");
    // An unsampled new trace (sampling 0.0, no traceparent) still answers with a trace id.
    let (s, h, _) = get(&gw.url("/vt/files/def")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-trace-id"].len(), 32);

    assert!(gw.shutdown().await); // flushes the batch
    let spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 2, "only the sampled (caller-sampled) request is exported: {spans:#?}");
    let server = spans.iter().find(|s| s.kind == 2).expect("server span");
    let client = spans.iter().find(|s| s.kind == 3).expect("client span");
    assert_eq!(hex(&server.trace_id), caller_trace);
    assert_eq!(hex(&client.trace_id), caller_trace);
    assert_eq!(hex(&server.parent_span_id), caller_span);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(parts[2], hex(&client.span_id), "the upstream's parent is the client span");
    assert_eq!(server.name, "GET /vt/files/{hash}");
    for (k, v) in [
        ("http.request.method", "GET"),
        ("url.path", "/vt/files/abc"),
        ("http.route", "/vt/files/{hash}"),
        ("http.response.status_code", "200"),
        ("network.protocol.version", "1.1"),
        ("interlock.route", "files"),
        ("interlock.upstream", "up"),
        ("interlock.decision", "allow"),
    ] {
        assert_eq!(attr(server, k).as_deref(), Some(v), "server span {k}: {server:#?}");
    }
    assert!(attr(server, "server.address").is_some());
    assert_eq!(attr(client, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(client, "interlock.upstream").as_deref(), Some("up"));
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_spans_too_and_a_dead_collector_never_hurts_requests() {
    let (collector, spans) = receiver().await;
    let up = Upstream::start().await;
    let gw = gateway(collector, &up).await;
    let req = Request::get(gw.url("/nope"))
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .body(empty())
        .unwrap();
    let (s, h, b) = call(&h1_client(), req).await;
    let v = assert_problem(s, &h, &b, 404, "no-route");
    assert_eq!(v["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert!(gw.shutdown().await);
    let spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(attr(&spans[0], "error.type").as_deref(), Some("no-route"));
    assert_eq!(attr(&spans[0], "http.response.status_code").as_deref(), Some("404"));

    // Collector down: requests are served as usual and quickly.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw = gateway(dead, &up).await;
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        let req = Request::get(gw.url("/vt/files/x"))
            .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .body(empty())
            .unwrap();
        assert_eq!(call(&h1_client(), req).await.0, StatusCode::OK);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "export failures slowed requests: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_call_shows_one_client_span_per_attempt() {
    let (collector, spans) = receiver().await;
    let up = Upstream::start().await;
    let p = Policies::new(&format!(
        "telemetry:\n  tracing:\n    endpoint: http://{collector}/v1/traces\n    sampling: 1.0\n    timeout: 2s\n"
    ));
    p.upstream("up", up.addr, "", "retry:\n  attempts: 2\n  backoff: { base: 1ms, max: 1ms }\n");
    p.write(
        "routes/r.yaml",
        "- id: flaky\n  match:\n    path: /flaky\n  upstream: up\n  anonymous: true\n  rewrite: /status-503\n",
    );
    let gw = Running::start(p).await;
    let (s, h, _) = get(&gw.url("/flaky")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "the vendor's answer after the last attempt");
    let trace = h["x-trace-id"].to_str().unwrap().to_owned();
    assert_eq!(up.count(), 2);
    assert!(gw.shutdown().await);
    let spans = spans.lock().unwrap().clone();
    let server = spans.iter().find(|s| s.kind == 2).expect("server span");
    let clients: Vec<&Span> = spans.iter().filter(|s| s.kind == 3).collect();
    assert_eq!(clients.len(), 2, "{spans:#?}");
    for c in &clients {
        assert_eq!(hex(&c.trace_id), trace);
        assert_eq!(c.parent_span_id, server.span_id, "attempts are siblings under the server span");
        assert_eq!(attr(c, "http.response.status_code").as_deref(), Some("503"));
    }
    assert_eq!(clients.iter().filter(|c| attr(c, "http.request.resend_count").as_deref() == Some("1")).count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn translation_and_cache_show_on_the_request_span_and_as_a_translate_span() {
    let (collector, spans) = receiver().await;
    let page = crate::translate::fixture("samples/crowdstrike/alerts-v2.json");
    let v = crate::translate::vendor(std::collections::HashMap::from([("/alerts", page)])).await;
    let p = Policies::new(&format!(
        "telemetry:\n  tracing:\n    endpoint: http://{collector}/v1/traces\n    sampling: 1.0\n    timeout: 2s\n"
    ));
    crate::translate::copy_dir(std::path::Path::new(crate::translate::MAPPINGS), &p.path().join("mappings"));
    p.upstream("v", v.addr, "", "");
    p.write(
        "routes/r.yaml",
        "- id: cs\n  match:\n    path: /alerts\n  upstream: v\n  anonymous: true\n  translate:\n    mapping: crowdstrike-alerts-ocsf\n  cache:\n    ttl: 1m\n",
    );
    let gw = Running::start(p).await;
    for _ in 0..2 {
        let req = Request::get(gw.url("/alerts")).header("accept", "application/ocsf+json").body(empty()).unwrap();
        let (s, h, _) = call(&h1_client(), req).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["content-type"], "application/ocsf+json");
    }
    assert_eq!(v.hits.load(std::sync::atomic::Ordering::SeqCst), 1, "the second answer came from the cache");
    assert!(gw.shutdown().await);
    let spans = spans.lock().unwrap().clone();
    let servers: Vec<&Span> = spans.iter().filter(|s| s.kind == 2).collect();
    assert_eq!(servers.len(), 2, "{spans:#?}");
    let first = servers.iter().find(|s| attr(s, "interlock.cache").as_deref() == Some("miss")).expect("a miss");
    let second = servers.iter().find(|s| attr(s, "interlock.cache").as_deref() == Some("hit")).expect("a hit");
    assert_eq!(attr(first, "interlock.mapping").as_deref(), Some("crowdstrike-alerts-ocsf"));
    assert_eq!(attr(first, "interlock.translation").as_deref(), Some("translated"));
    let translate = spans.iter().find(|s| s.name == "translate").expect("a translate span");
    assert_eq!(translate.trace_id, first.trace_id);
    assert_eq!(translate.parent_span_id, first.span_id);
    assert_eq!(attr(translate, "interlock.translation.records").as_deref(), Some("4"));
    assert_eq!(attr(translate, "interlock.translation.result").as_deref(), Some("translated"));
    // The hit made no client span and no translation.
    assert!(!spans.iter().any(|s| s.trace_id == second.trace_id && s.span_id != second.span_id), "{spans:#?}");
}
