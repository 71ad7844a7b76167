//! The admin listener: health, readiness, reload and config status, on its own port.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once listeners are bound and the config is loaded; 503 while draining |
//! | `POST /reload` | recompiles `policies/`; 200 with the new generation, or 422 listing every error |
//! | `GET /config/status` | generation, load time, reload counters and the last reload's outcome |
//!
//! Errors are problem+json like on the data plane. It never serves data-plane routes.

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

/// Answers one admin request.
pub async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<ResponseBody> {
    let path = req.uri().path();
    match (req.method(), path) {
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
            let (applied, rejected) = crate::telemetry::reload_counts();
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
        (_, "/healthz" | "/readyz" | "/config/status" | "/reload") => problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "Use POST for /reload and GET for the other admin endpoints.".to_owned(),
        ),
        _ => problem(
            StatusCode::NOT_FOUND,
            "no-route",
            "No such admin endpoint",
            "See docs/operations.md for the admin endpoints.".to_owned(),
        ),
    }
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
