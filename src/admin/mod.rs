//! The admin listener: health, readiness, reload and config status, on its own port.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once listeners are bound and the config is loaded; 503 while draining |
//! | `POST /reload` | recompiles `policies/`; 200 with the new generation, or 422 listing every error |
//! | `GET /config/status` | generation, load time, reload counters and the last reload's outcome |
//! | `GET /config` | the effective config, every secret redacted |
//! | `GET /routes`, `GET /upstreams` | the route table; upstream endpoints and TLS settings |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /tap?route=&caller=&status=` | server-sent events, one line per finished request |
//!
//! With `admin.token` set, every endpoint but `/healthz` and `/readyz` needs
//! `Authorization: Bearer <token>`. Errors are problem+json like on the data plane. The admin port
//! must not be reachable from outside the platform: it can reload config and watch traffic.

pub mod views;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::reload::{Store, Trigger};
use crate::error::{render, Problem};
use crate::proxy::body::ResponseBody;

/// What the admin endpoints read.
#[derive(Debug)]
pub struct AdminState {
    /// The config store.
    pub store: Arc<Store>,
    /// Listeners bound and not draining.
    pub ready: AtomicBool,
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(serde_json::to_vec_pretty(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn problem(status: StatusCode, slug: &'static str, title: &'static str, detail: String) -> Response<ResponseBody> {
    render(&Problem { status, slug, title, detail }, "", "").map(ResponseBody::full)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn authorized(state: &AdminState, req: &Request<Incoming>) -> bool {
    let snap = state.store.load();
    let Some(token) = &snap.config.gateway.admin_token else { return true };
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare digests so the comparison time does not depend on how much of the token matched.
    let (a, b) = (crate::identity::apikey::digest(presented), crate::identity::apikey::digest(token.expose()));
    a.iter().zip(b.iter()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn json_value(v: &serde_json::Value) -> Response<ResponseBody> {
    json(StatusCode::OK, v)
}

/// Answers one admin request.
pub async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<ResponseBody> {
    let path = req.uri().path();
    if !matches!(path, "/healthz" | "/readyz") && !authorized(state, &req) {
        let mut res = problem(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Admin token required",
            "Send `Authorization: Bearer <admin token>`; the platform team holds it.".to_owned(),
        );
        res.headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"interlock-admin\""));
        return res;
    }
    match (req.method(), path) {
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(ResponseBody::full(state.store.telemetry.metrics.render()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            r
        }
        (&Method::GET, "/config") => json_value(&views::config(&state.store.load())),
        (&Method::GET, "/routes") => json_value(&views::routes(&state.store.load())),
        (&Method::GET, "/upstreams") => json_value(&views::upstreams(&state.store.load())),
        (&Method::GET, "/mappings") => json_value(&views::mappings(&state.store.load())),
        (&Method::GET, "/cache") => {
            let snap = state.store.load();
            let (entries, bytes) = snap.cache.stats().await;
            let routes: Vec<serde_json::Value> = snap
                .config
                .routes
                .iter()
                .filter_map(|r| r.cache.as_ref().map(|c| (r, c)))
                .map(|(r, c)| {
                    serde_json::json!({
                        "route": r.id,
                        "ttl_s": c.ttl.as_secs(),
                        "max_ttl_s": c.max_ttl.as_secs(),
                        "negative_ttl_s": c.negative_ttl.as_secs(),
                        "stale_if_error_s": c.stale_if_error.as_secs(),
                        "shared": c.shared,
                        "max_entry": c.max_entry,
                        "override": c.override_reason,
                    })
                })
                .collect();
            json_value(&serde_json::json!({
                "max_bytes": snap.cache.max_bytes,
                "bytes": bytes,
                "entries": entries,
                "routes": routes,
            }))
        }
        (&Method::DELETE, "/cache") => {
            let snap = state.store.load();
            let route = req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("route=")));
            if let Some(r) = route {
                if !snap.config.routes.iter().any(|x| x.id == r) {
                    return problem(
                        StatusCode::NOT_FOUND,
                        "no-route",
                        "No such route",
                        format!("No route `{r}`: see GET /routes for the ids."),
                    );
                }
            }
            let before = snap.cache.purge(route);
            tracing::info!(route = route.unwrap_or("*"), entries_before = before, "cache purged");
            json_value(&serde_json::json!({"purged": route.unwrap_or("*"), "entries_before": before}))
        }
        (&Method::GET, "/tap") => tap(state, req.uri().query()),
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        (&Method::GET, "/readyz") => {
            if state.ready.load(Ordering::Acquire) {
                json(
                    StatusCode::OK,
                    &serde_json::json!({"status": "ready", "generation": state.store.load().generation}),
                )
            } else {
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not-ready",
                    "Not ready",
                    "The gateway is starting or draining; send traffic to another instance.".to_owned(),
                )
            }
        }
        (&Method::POST, "/reload") => match state.store.reload(Trigger::Admin).await {
            Ok(generation) => {
                json(StatusCode::OK, &serde_json::json!({"status": "reloaded", "generation": generation}))
            }
            Err(errors) => {
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                let mut res = problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "config-invalid",
                    "Configuration rejected",
                    format!("The new configuration has {} error(s) and was not applied; the previous one keeps serving. Fix them and reload.", list.len()),
                );
                // Add the list to the problem body as an extension member.
                if let ResponseBody::Full(Some(b)) = res.body() {
                    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(b) {
                        v["errors"] = serde_json::json!(list);
                        *res.body_mut() =
                            ResponseBody::full(Bytes::from(serde_json::to_vec_pretty(&v).unwrap_or_default()));
                    }
                }
                res
            }
        },
        (&Method::GET, "/config/status") => {
            let snap = state.store.load();
            let (applied, rejected) = state.store.telemetry.reload_counts();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "generation": snap.generation,
                    "loaded_at_unix": unix(snap.loaded_at),
                    "dir": state.store.dir().display().to_string(),
                    "routes": snap.config.routes.len(),
                    "upstreams": snap.config.upstreams.len(),
                    "reloads": {"applied": applied, "rejected": rejected},
                    "last_reload": state.store.last_outcome(),
                }),
            )
        }
        (
            _,
            "/healthz" | "/readyz" | "/config/status" | "/reload" | "/config" | "/routes" | "/upstreams" | "/mappings"
            | "/metrics" | "/tap" | "/cache",
        ) => problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "Use POST for /reload, GET or DELETE for /cache and GET for the other admin endpoints.".to_owned(),
        ),
        _ => problem(
            StatusCode::NOT_FOUND,
            "no-route",
            "No such admin endpoint",
            "See docs/operations.md for the admin endpoints.".to_owned(),
        ),
    }
}

/// A tap filter from the query string: `route=`, `caller=`, `status=` (`404` or a class like `5xx`).
#[derive(Debug, Default)]
struct TapFilter {
    route: Option<String>,
    caller: Option<String>,
    status: Option<String>,
}

impl TapFilter {
    fn parse(q: Option<&str>) -> TapFilter {
        let mut f = TapFilter::default();
        for kv in q.unwrap_or("").split('&') {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let v = v.to_owned();
            match k {
                "route" => f.route = Some(v),
                "caller" => f.caller = Some(v),
                "status" => f.status = Some(v),
                _ => {}
            }
        }
        f
    }

    fn keeps(&self, l: &crate::telemetry::TapLine) -> bool {
        let status_ok = match self.status.as_deref() {
            None => true,
            Some(s) if s.ends_with("xx") => crate::telemetry::metrics::status_class(l.status) == s,
            Some(s) => s == l.status.to_string(),
        };
        status_ok
            && self.route.as_ref().is_none_or(|r| l.route.as_deref() == Some(r.as_str()))
            && self.caller.as_ref().is_none_or(|c| l.caller.as_deref() == Some(c.as_str()))
    }
}

/// `GET /tap`: server-sent events. Memory stays bounded for a slow reader: the broadcast ring keeps
/// the last 1024 lines and the per-reader queue 16; what a reader misses is announced and counted.
fn tap(state: &AdminState, query: Option<&str>) -> Response<ResponseBody> {
    let filter = TapFilter::parse(query);
    let tel = state.store.telemetry.clone();
    let mut lines = tel.subscribe_tap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        if tx.send(Bytes::from_static(b": interlock tap\n\n")).await.is_err() {
            return;
        }
        loop {
            let event = match lines.recv().await {
                Ok(l) if filter.keeps(&l) => format!("data: {}\n\n", serde_json::to_string(&*l).unwrap_or_default()),
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tel.metrics.tap_lagged(n);
                    format!(": {n} lines missed (reader too slow)\n\n")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(Bytes::from(event)).await.is_err() {
                return; // the reader went away
            }
        }
    });
    let mut r = Response::new(ResponseBody::Channel(rx));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Serves the admin API on `tcp` until `stop` turns true (after the data plane has drained, so
/// `/readyz` answers 503 during the drain).
pub async fn serve(tcp: TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            r = tcp.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let state = state.clone();
        let service = hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req).await) }
        });
        let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .http1_only()
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
