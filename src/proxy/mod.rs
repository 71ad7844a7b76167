//! The request path: from a request hyper has parsed to the response sent back.
//!
//! [`handle`] is the whole data-plane path in order; each step is a plain function below it or in a
//! sibling module. See `docs/architecture.md` for the life-of-a-request diagram.
//!
//! - `normalize`: the one path normalisation.
//! - `router`: host/path/method matching and rewrites.
//! - `headers`: hop-by-hop, caller credentials, forwarding headers, request ids.
//! - `body`: streamed request and response bodies with limits.

pub mod body;
pub mod caching;
pub mod headers;
pub mod normalize;
pub mod router;
pub mod translate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::credentials::Injection;
use crate::error::{new_trace_id, rescue, trace_id_of, GatewayError};
use crate::identity::mtls::PeerCert;
use crate::identity::{identify, Identified, IdentityError};
use crate::listener::sniff::{Framing, FramingLog};
use crate::snapshot::Snapshot;
use crate::telemetry::record::{ObservedBody, RequestRecord};
use crate::telemetry::Telemetry;
use crate::upstream::{Failure, UpstreamError};
use body::{RequestBody, ResponseBody};
use router::Lookup;

const TRACEPARENT: http::header::HeaderName = http::header::HeaderName::from_static("traceparent");
/// Response header carrying the trace id of the request.
pub const TRACE_ID: http::header::HeaderName = http::header::HeaderName::from_static("x-trace-id");

/// Facts about the connection a request arrived on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// HTTP/1 framing verdicts from the connection's sniffer.
    pub framing: Option<Arc<FramingLog>>,
    /// The verified client certificate's identity (TLS listeners with client auth).
    pub peer_cert: Option<Arc<PeerCert>>,
    /// Where the request's record goes.
    pub telemetry: Arc<Telemetry>,
}

/// Serves one request on `snap` (loaded by the caller for this request only).
pub async fn handle(snap: Arc<Snapshot>, conn: &Arc<ConnInfo>, req: Request<Incoming>) -> Response<ObservedBody> {
    let gw = &snap.config.gateway;
    // The id is settled first so that every answer, including errors, carries it.
    let request_id = match req.headers().get(&gw.request_id_header) {
        Some(v) if gw.trust_incoming_request_id && headers::valid_request_id(v) => v.clone(),
        _ => headers::new_request_id(),
    };
    // The caller's trace continues here; without one, a new trace starts. With export on, the
    // server span decides the trace id (and the sampling, parent-based).
    let span = conn.telemetry.tracing.as_ref().map(|t| t.server_span(req.method(), req.headers()));
    let trace_id = match (&span, trace_id_of(req.headers().get(TRACEPARENT))) {
        (Some(cx), _) => crate::telemetry::otel::trace_id(cx),
        (None, Some(t)) => t.to_owned(),
        (None, None) => new_trace_id(),
    };
    // The record exists from now on: dropped with this future if the client goes away (499; for a
    // cache fill other requests wait on, when that fill ends), otherwise finished when the
    // response body has been sent.
    let id = request_id.to_str().unwrap_or("").to_owned();
    let mut record = RequestRecord::start(conn.telemetry.clone(), &req, conn.scheme, id, trace_id, span);
    record.facts.client_ip = Some(conn.peer.ip().to_canonical());
    let method = req.method().clone();
    let outcome = match forward(&snap, conn, req, &request_id, &mut record).await {
        Forwarded::Done(outcome) => outcome,
        // A cache miss other requests wait on: the vendor call and the cache fill run on their own
        // task, so that this client going away costs the waiting ones nothing.
        Forwarded::Leading(sending, caching) => {
            let (out, back) = lead_fill(snap.clone(), conn.clone(), sending, caching, request_id.clone(), record).await;
            record = back;
            out
        }
    };
    let mut res = match outcome {
        Ok(res) => res,
        Err(err) => {
            let problem = err.problem();
            if problem.status.is_server_error() {
                tracing::warn!(request_id = %record.request_id, %method, status = problem.status.as_u16(), error = %err, "request failed");
            } else {
                tracing::debug!(request_id = %record.request_id, %method, status = problem.status.as_u16(), error = %err, "request refused");
            }
            record.facts.error = Some(problem.slug);
            if record.facts.decision.is_none() {
                record.facts.decision = Some("deny");
                record.facts.rule = Some(problem.slug.to_owned());
            }
            rescue(&err, &record.request_id, &record.trace_id).map(ResponseBody::full)
        }
    };
    res.headers_mut().insert(gw.request_id_header.clone(), request_id);
    if let Ok(v) = HeaderValue::from_str(&record.trace_id) {
        res.headers_mut().insert(TRACE_ID, v);
    }
    record.status = res.status().as_u16();
    res.map(|b| ObservedBody::new(b, record))
}

/// What [`forward`] leaves to its caller.
enum Forwarded {
    /// The answer (or the failure) for this request.
    Done(Result<Response<ResponseBody>, GatewayError>),
    /// This request leads the fetch of a cache miss: the caller runs it with [`lead_fill`].
    Leading(Box<Sending>, caching::Caching),
}

/// A request that has passed every check, ready for the vendor.
struct Sending {
    req: Request<Incoming>,
    /// Index of the route in the snapshot.
    route: usize,
    caller: Option<crate::identity::Caller>,
    /// Index of the upstream credential the caller uses.
    credential: Option<usize>,
    host: String,
    upgrading: bool,
    /// The body, when a body-keyed cache lookup has read it.
    body_read: Option<bytes::Bytes>,
    /// The upstream path (rewritten when the route says so), before the endpoint's base path.
    rest: String,
}

/// Runs the vendor call of a cache miss other requests wait on, and stores its answer, on a task of
/// its own. If this request's client goes away meanwhile, the task carries on for up to the
/// route's `timeout`, so the waiting requests still get the answer (and the record of this request,
/// 499, is written when the task ends); past that, it gives up and the waiting requests try again.
async fn lead_fill(
    snap: Arc<Snapshot>,
    conn: Arc<ConnInfo>,
    sending: Box<Sending>,
    caching: caching::Caching,
    request_id: HeaderValue,
    mut record: RequestRecord,
) -> (Result<Response<ResponseBody>, GatewayError>, RequestRecord) {
    let grace = snap.config.routes[sending.route].timeout;
    // Never sent on: the receiver learns of the client going away when this future is dropped.
    let (_present, gone) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let work = async {
            let out = send(&snap, &conn, *sending, &request_id, &mut record).await;
            caching::finish(&snap, caching, out, &mut record).await
        };
        let abandoned = async {
            let _ = gone.await;
            tokio::time::sleep(grace).await;
        };
        let out = tokio::select! {
            out = work => out,
            () = abandoned => Err(GatewayError::RequestTimeout(grace)),
        };
        (out, record)
    });
    match task.await {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime is shutting down, and this future with it.
        Err(_) => std::future::pending().await,
    }
}

/// Checks, routes and forwards one request. Every refusal happens before the upstream is contacted.
async fn forward(
    snap: &Snapshot,
    conn: &ConnInfo,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    record: &mut RequestRecord,
) -> Forwarded {
    let (sending, fill) = match check(snap, conn, req, record).await {
        Ok(Checked::Answer(res)) => return Forwarded::Done(Ok(res)),
        Ok(Checked::Send(sending, fill)) => (sending, fill),
        Err(e) => return Forwarded::Done(Err(e)),
    };
    match fill {
        Some(c) if c.leads() => Forwarded::Leading(Box::new(sending), c),
        // A miss no other request waits on (a bypass, or an answer that could not be shared).
        Some(c) => {
            let out = send(snap, conn, sending, request_id, record).await;
            Forwarded::Done(caching::finish(snap, c, out, record).await)
        }
        None => Forwarded::Done(send(snap, conn, sending, request_id, record).await),
    }
}

/// What the checks decided.
#[allow(clippy::large_enum_variant)] // made once per request and moved once: boxing would allocate
enum Checked {
    /// Answered without the vendor (from the cache).
    Answer(Response<ResponseBody>),
    /// To be sent, filling the cache when a miss is given.
    Send(Sending, Option<caching::Caching>),
}

/// Steps 1 to 10a: every check of the request, routing and the cache lookup. Every refusal
/// happens here, before the upstream is contacted.
async fn check(
    snap: &Snapshot,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    record: &mut RequestRecord,
) -> Result<Checked, GatewayError> {
    let gw = &snap.config.gateway;
    // 1. Framing the sniffer saw on the wire (HTTP/1 only; HTTP/2 frames are unambiguous).
    if req.version() < Version::HTTP_2 {
        match conn.framing.as_ref().map(|f| f.take()) {
            None | Some(Some(Framing::Clean)) => {}
            Some(Some(Framing::Ambiguous(why))) => return Err(GatewayError::AmbiguousFraming(why)),
            Some(None) => return Err(GatewayError::AmbiguousFraming("the request head could not be verified")),
        }
    }
    // 2. Tunnels are never offered.
    if req.method() == Method::CONNECT {
        return Err(GatewayError::ConnectNotSupported);
    }
    // 3. Header limits.
    let (count, bytes) = headers::header_size(req.headers());
    if count > gw.limits.max_headers {
        return Err(GatewayError::TooManyHeaders { count, limit: gw.limits.max_headers });
    }
    if bytes > gw.limits.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge { bytes, limit: gw.limits.max_header_bytes });
    }
    // 4. The host the request is for.
    let host = request_host(&req, conn, &gw.server_names)?;
    record.facts.host = Some(host.clone());
    // 5. One normalised path for routing and forwarding.
    // (The URI is shared, not copied: the request itself stays free to be read.)
    let uri = req.uri().clone();
    let path = normalize::normalize(uri.path())?;
    record.set_path(&path);
    // 6. Who is calling (says who, never may). Invalid credentials are refused on every route.
    let id = &snap.config.identity;
    let identified = identify(id, &snap.identity, conn.peer_cert.as_ref(), req.headers()).await.map_err(|err| {
        let challenge = match &err {
            IdentityError::InvalidToken(_) | IdentityError::UntrustedIssuer => id.challenge(Some(&err.to_string())),
            _ => id.challenge(None),
        };
        GatewayError::Identity { err, challenge }
    })?;
    if let Identified::Caller(c) = &identified {
        record.facts.caller = Some(c.id.clone());
        record.facts.caller_known = id.callers.iter().any(|d| *d.id == *c.id);
        record.facts.auth = Some(c.via.name());
    }
    // 7. Route.
    let m = match snap.config.router.lookup(&host, req.method(), &path) {
        Lookup::Found(m) => m,
        Lookup::MethodNotAllowed(allowed) => {
            return Err(GatewayError::MethodNotAllowed { method: req.method().clone(), allowed })
        }
        Lookup::NotFound => {
            return Err(GatewayError::NoRoute { method: req.method().clone(), path: path.into_owned() })
        }
    };
    let route = &snap.config.routes[m.route];
    let upstream = &snap.config.upstreams[route.upstream];
    record.facts.route = Some(route.id_shared.clone());
    record.facts.route_template = Some(route.template_text.clone());
    record.facts.upstream = Some(upstream.id_shared.clone());
    // 8. Routes serve anonymous callers only when they say so.
    let caller = match identified {
        Identified::Caller(c) => Some(c),
        _ if route.anonymous => None,
        Identified::UnknownCertificate(identity) => return Err(GatewayError::UnknownCertificate { identity }),
        Identified::Anonymous => {
            return Err(GatewayError::Unauthenticated { route: route.id.clone(), challenge: id.challenge(None) })
        }
    };
    // 8b. May this caller make this call? (pure decision; deny by default, deny rules win)
    let decision = crate::policy::decide(&route.policy, caller.as_ref(), req.method(), &path);
    if let Some(shadow @ crate::policy::Decision::Deny(_)) =
        crate::policy::shadow(&route.policy, caller.as_ref(), req.method(), &path)
    {
        if matches!(decision, crate::policy::Decision::Allow(_)) {
            tracing::info!(request_id = %record.request_id, route = %route.id, caller = caller.as_ref().map(|c| &*c.id), rule = shadow.rule(), "shadow policy would deny");
            record.facts.shadow_deny = Some(shadow.rule().to_owned());
            conn.telemetry
                .metrics
                .shadow_denials
                .get_or_create(&crate::telemetry::metrics::RouteOnly {
                    route: crate::telemetry::metrics::Label(route.id_shared.clone()),
                })
                .inc();
        }
    }
    record.facts.decision = Some(decision.verdict());
    record.facts.rule = Some(decision.rule().to_owned());
    if let crate::policy::Decision::Deny(rule) = &decision {
        let why = match rule {
            Some(name) => {
                let r = route.policy.deny.iter().find(|r| &r.name == name);
                format!("a deny rule ({name}: {}) refuses it", r.map(|r| r.describe()).unwrap_or_default())
            }
            None => "no allow rule covers it".to_owned(),
        };
        return Err(GatewayError::Forbidden {
            route: route.id.clone(),
            caller: caller
                .as_ref()
                .map_or_else(|| "an unidentified caller".to_owned(), |c| format!("caller `{}`", c.id)),
            method: req.method().clone(),
            why,
        });
    }
    // 8c. Which of the upstream's credentials this caller uses (per-tenant credentials).
    let credential =
        upstream.credential_for(route, caller.as_ref().map(|c| &*c.id)).map_err(|_| GatewayError::NoCredential {
            upstream: upstream.id.clone(),
            caller: caller
                .as_ref()
                .map_or_else(|| "an unidentified caller".to_owned(), |c| format!("caller `{}`", c.id)),
        })?;
    // 9. Routes that must be audited refuse calls while the audit trail cannot be written.
    if route.audit_required && !conn.telemetry.audit.healthy() {
        return Err(GatewayError::AuditUnavailable { route: route.id.clone() });
    }
    // 9b. Upgrades only where the route allows them.
    let upgrading = req.headers().contains_key(header::UPGRADE);
    if upgrading && !route.upgrade {
        return Err(GatewayError::UpgradeNotAllowed { route: route.id.clone() });
    }
    // 10. Body limit, up front when the length is declared; streamed bodies are counted in `RequestBody`.
    if let Some(len) = content_length(req.headers()) {
        if len > route.max_body {
            return Err(GatewayError::BodyTooLarge { limit: route.max_body });
        }
    }
    // 10a. The response cache: after every decision about this caller (an answer stored for one
    //      caller never reaches another who may not call the route), before the vendor quota is
    //      drawn on (a hit spends none). Concurrent misses wait for one vendor call.
    // A body-keyed lookup (POST) reads the body here: it is part of the key, then sent as read.
    let mut body_read: Option<bytes::Bytes> = None;
    let mut fill = None;
    let cache_policy = route
        .cache
        .as_ref()
        .filter(|p| p.methods.contains(req.method()) && !req.headers().contains_key(header::UPGRADE));
    let cache_policy = match cache_policy {
        Some(p) if body_keyed(p, req.method()) => match content_length(req.headers()) {
            // Keyed only by a whole body of a declared, bounded length.
            Some(len) if len <= p.body_key.unwrap_or(0) && len <= route.max_body => {
                body_read = Some(read_body(&mut req, len, &upstream.id).await?);
                Some(p)
            }
            _ => None,
        },
        other => other,
    };
    if let Some(policy) = cache_policy {
        // The credential scope: its id names the vendor account (never its value).
        let scope = credential.map_or("", |c| c.id.as_str());
        // The answer differs when translation is asked for, and with the body of a POST lookup.
        let mut variant = match &route.translate {
            Some(t) if translate::wanted(t, req.headers().get(header::ACCEPT)) => b"translated\n".to_vec(),
            _ => b"raw\n".to_vec(),
        };
        if let Some(b) = &body_read {
            variant.extend_from_slice(&crate::cache::canonical_body(b));
        }
        match caching::lookup(
            snap,
            policy,
            &req,
            route,
            upstream,
            &path,
            caller.as_ref().map(|c| &*c.id),
            scope,
            &variant,
            record,
            &conn.telemetry,
        )
        .await
        {
            caching::Lookup::Answer(a) => return a.map(Checked::Answer),
            caching::Lookup::Fetch(c) => fill = Some(c),
        }
    }
    let sending = Sending {
        rest: target_rest(route, &m, &path),
        route: m.route,
        credential: credential.and_then(|c| upstream.credentials.iter().position(|x| std::ptr::eq(x, c))),
        caller,
        host,
        upgrading,
        body_read,
        req,
    };
    Ok(Checked::Send(sending, fill))
}

/// Steps 10b to 16: rate limits and quotas, the upstream request, its attempts, and the response.
async fn send(
    snap: &Snapshot,
    conn: &ConnInfo,
    sending: Sending,
    request_id: &HeaderValue,
    record: &mut RequestRecord,
) -> Result<Response<ResponseBody>, GatewayError> {
    let Sending { mut req, route, caller, credential, host, upgrading, body_read, rest } = sending;
    let gw = &snap.config.gateway;
    let route = &snap.config.routes[route];
    let upstream = &snap.config.upstreams[route.upstream];
    let credential = credential.and_then(|i| upstream.credentials.get(i));
    // 10b. Rate limits: the route's own (per caller, total), then the vendor account's quota. A
    //      queued request waits here; if the client goes away meanwhile, its place is given back.
    let admitted = limit(snap, route, upstream, caller.as_ref(), credential, conn).await?;
    if let Some(a) = &admitted {
        record.facts.ratelimit_remaining = a.remaining();
        let d = a.delay();
        if !d.is_zero() {
            record.facts.queued = Some(d);
        }
    }
    let admitted = match admitted {
        Some(a) => Some(a.wait().await),
        None => None,
    };
    // 11. The target: each attempt's endpoint + its base path, then the (rewritten) path and the
    //     original query, with a query-parameter credential added.
    let mut query = req.uri().query().map(str::to_owned);
    if let Some(Injection::Query { param, value }) = credential.map(|c| &c.injection) {
        query = Some(crate::credentials::inject_query(query.as_deref(), param, value.expose()));
    }
    // 12. Headers: connection-scoped ones, caller credentials, our Host and forwarding headers, the
    //     request id, then the injected credential last so nothing can overwrite it.
    let client_upgrade = if upgrading { Some(hyper::upgrade::on(&mut req)) } else { None };
    let (mut parts, incoming) = req.into_parts();
    // Translation is decided on the caller's Accept; the vendor is then asked for plain JSON.
    let translate = route.translate.as_ref().map(|t| (t, translate::wanted(t, parts.headers.get(header::ACCEPT))));
    if let Some((_, true)) = translate {
        parts.headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        parts.headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    let h = &mut parts.headers;
    headers::strip_request(h, upgrading, &upstream.strip_headers);
    headers::set_forwarded(h, conn.peer, conn.scheme, Some(&host), &gw.trusted_proxies);
    h.insert(gw.request_id_header.clone(), request_id.clone());
    if let Some(c) = credential {
        if let Injection::Headers(list) = &c.injection {
            for (n, v) in list {
                h.insert(n.clone(), v.clone());
            }
        }
        // An OAuth2 token is added per attempt, just before sending; a query credential is in `query`.
        record.facts.credential = Some(c.id_shared.clone());
    }
    // Without trace export: the caller's traceparent passes on, or a new one carries our trace id.
    if conn.telemetry.tracing.is_none() && !parts.headers.contains_key(TRACEPARENT) {
        let tp = format!("00-{}-{:016x}-00", record.trace_id, fastrand::u64(1..));
        if let Ok(v) = HeaderValue::from_str(&tp) {
            parts.headers.insert(TRACEPARENT, v);
        }
    }
    let token_source = credential.and_then(|c| match &c.injection {
        Injection::OAuth2(t) => Some(t.clone()),
        _ => None,
    });
    // 13. The body: streamed; or, when the call may be sent again (retries, an OAuth2 re-mint), kept
    //     in memory up to the retry policy's `replay_body` (a larger body is never resent).
    let policy = route.retry.as_deref();
    let max_attempts = policy.map_or(1, |p| p.attempts);
    let may_resend = policy.is_some_and(|p| p.may_resend(&parts.method, &parts.headers));
    let mut body = match body_read {
        Some(b) => RequestBody::replay(b),
        None => RequestBody::new(incoming, route.max_body),
    };
    record.facts.bytes_in = Some(body.counter());
    let replay: Option<bytes::Bytes> = if upgrading {
        None
    } else if http_body::Body::is_end_stream(&body) {
        Some(bytes::Bytes::new())
    } else if let Some(p) = policy.filter(|p| p.attempts > 1) {
        match content_length(&parts.headers) {
            Some(len) if len <= p.replay_body => {
                use http_body_util::BodyExt as _;
                let collected = std::mem::replace(&mut body, RequestBody::empty()).collect().await;
                match collected {
                    Ok(c) => Some(c.to_bytes()),
                    Err(e) => {
                        return Err(match e.downcast::<body::BodyLimitExceeded>() {
                            Ok(l) => GatewayError::BodyTooLarge { limit: l.limit },
                            Err(e) => GatewayError::Upstream(UpstreamError {
                                upstream: upstream.id.clone(),
                                kind: crate::upstream::UpstreamErrorKind::RequestBody,
                                fault: crate::upstream::Fault::Downstream,
                                retryable: false,
                                source: Some(e),
                            }),
                        })
                    }
                }
            }
            _ => None,
        }
    } else {
        None
    };
    let mut first_body = Some(body);
    let client = &snap.clients[route.upstream];
    if policy.is_some() {
        client.budget.request();
    }
    // 14. Attempts, bounded together by the route's deadline to the response head; each is timed,
    //     feeds its endpoint's circuit and, with trace export on, is a client span.
    let deadline = tokio::time::Instant::now() + route.timeout;
    let mut avoid = None;
    let mut made = 0u32;
    let mut token_retried = false;
    let (res, guard) = loop {
        made += 1;
        let picked = client.pick(avoid).map_err(|e| pick_error(upstream, e))?;
        let pq = {
            let mut pq = String::with_capacity(picked.endpoint.base_path.len() + rest.len() + 1);
            pq.push_str(&picked.endpoint.base_path);
            pq.push_str(&rest);
            if pq.is_empty() {
                pq.push('/');
            }
            if let Some(q) = &query {
                pq.push('?');
                pq.push_str(q);
            }
            PathAndQuery::try_from(pq).map_err(|_| GatewayError::InvalidPath(normalize::PathError::BadEscape))?
        };
        let uri = Uri::builder()
            .scheme(picked.endpoint.scheme.clone())
            .authority(picked.endpoint.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| GatewayError::InvalidPath(normalize::PathError::BadEscape))?;
        let out_body = match &replay {
            Some(b) if made > 1 || first_body.is_none() => RequestBody::replay(b.clone()),
            Some(b) if !b.is_empty() => {
                first_body = None;
                RequestBody::replay(b.clone())
            }
            _ => first_body.take().unwrap_or_else(RequestBody::empty),
        };
        let mut out = Request::new(out_body);
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri;
        // Kept for another attempt only when one may follow (a retry policy, an OAuth2 re-mint).
        *out.headers_mut() = if max_attempts > 1 || token_source.is_some() {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        *out.version_mut() = Version::HTTP_11; // the pool picks the wire version
        if let Some(c) = &caller {
            out.extensions_mut().insert(c.clone()); // typed request fact, never an internal header
        }
        let mut sent_token = None;
        if let Some(t) = &token_source {
            let trace = conn.telemetry.tracing.as_ref().zip(record.span.as_ref());
            let v = t.header_traced(trace).await.map_err(|e| GatewayError::CredentialUnavailable(e.0))?;
            out.headers_mut().insert(http::header::AUTHORIZATION, v.clone());
            sent_token = Some(v);
        }
        let now = tokio::time::Instant::now();
        let remaining = deadline.saturating_duration_since(now);
        if remaining.is_zero() {
            return Err(GatewayError::RequestTimeout(route.timeout));
        }
        let per_try = policy.and_then(|p| p.per_try_timeout).map_or(remaining, |p| p.min(remaining));
        let sent = attempt(conn, record, client, upstream, picked.endpoint, per_try, made - 1, out).await;
        let latency = now.elapsed();
        // What happened, and may it be tried again?
        let (outcome, retry): (Result<Response<Incoming>, GatewayError>, Option<RetryReason>) = match sent {
            Ok(Ok(res)) => {
                client.record(picked.index, res.status().as_u16() < 500, Some(latency));
                if let Some(q) = &upstream.quota {
                    snap.limiter.observe(q, &upstream.id_shared, &account_of(credential), res.status(), res.headers());
                }
                let status = res.status();
                if let (Some(t), Some(token), true) = (&token_source, &sent_token, status == StatusCode::UNAUTHORIZED) {
                    // The vendor refused the token: forget it, mint a new one, and send once more if safe.
                    t.purge(token);
                    if !token_retried
                        && replay.is_some()
                        && matches!(
                            parts.method,
                            Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::PUT
                        )
                    {
                        token_retried = true;
                        record.facts.retries += 1;
                        made -= 1;
                        avoid = None;
                        continue;
                    }
                }
                let retry = policy.filter(|p| may_resend && p.statuses.contains(&status.as_u16())).and_then(|p| {
                    let ra = crate::ratelimit::vendor::retry_after(res.headers(), std::time::SystemTime::now())
                        .map(|t| t.duration_since(std::time::SystemTime::now()).unwrap_or_default());
                    match ra {
                        Some(d) if d > p.max_retry_after => None,
                        ra => Some(("status", ra)),
                    }
                });
                (Ok(res), retry)
            }
            Ok(Err(e)) => match UpstreamError::classify(&upstream.id, e) {
                Failure::BodyTooLarge(limit) => (Err(GatewayError::BodyTooLarge { limit }), None),
                Failure::Upstream(u) => {
                    use crate::upstream::UpstreamErrorKind as K;
                    if u.fault == crate::upstream::Fault::Upstream {
                        client.record(picked.index, false, None);
                    }
                    let retry = match (u.kind, policy) {
                        (K::Connect, Some(p)) if p.on_connect => Some(("connect", None)),
                        (K::Reset | K::Protocol, Some(p)) if p.on_reset && may_resend => Some(("reset", None)),
                        (K::Timeout, Some(p)) if p.on_timeout && may_resend => Some(("timeout", None)),
                        _ => None,
                    };
                    (Err(GatewayError::Upstream(u)), retry)
                }
            },
            Err(_) => {
                client.record(picked.index, false, None);
                let per_try_fired = per_try < remaining;
                let retry = policy.filter(|p| per_try_fired && p.on_timeout && may_resend).map(|_| ("timeout", None));
                let limit = if per_try_fired { per_try } else { route.timeout };
                (Err(GatewayError::RequestTimeout(limit)), retry)
            }
        };
        if let (Some((reason, after)), Some(p)) = (retry, policy) {
            let resendable = replay.is_some() || (reason == "connect" && first_body.is_some());
            if made < p.attempts && resendable {
                let delay = p.backoff(made).max(after.unwrap_or_default());
                if tokio::time::Instant::now() + delay >= deadline {
                    // No time left for another attempt: this answer stands.
                } else if !client.budget.try_retry() {
                    client.count_budget_exhausted();
                    tracing::debug!(request_id = %record.request_id, upstream = %upstream.id, "retry budget spent: not retrying");
                } else if !retry_quota(snap, upstream, credential).await {
                    tracing::debug!(request_id = %record.request_id, upstream = %upstream.id, "vendor quota spent: not retrying");
                } else {
                    tracing::debug!(request_id = %record.request_id, upstream = %upstream.id, reason, attempt = made, "retrying");
                    record.facts.retries += 1;
                    client.count_retry(reason);
                    avoid = Some(picked.index);
                    drop(outcome);
                    drop(picked);
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
        }
        break (outcome?, picked.guard);
    };
    // 15. A granted upgrade becomes a byte tunnel between the two connections.
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            if let Some(f) = &conn.framing {
                f.stop(); // what follows the 101 is not HTTP/1
            }
            return Ok(tunnel(res, client_upgrade, upstream.id.clone()));
        }
    }
    let (mut parts, body) = res.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    if let Some(a) = &admitted {
        if a.has_policy() {
            // The tool's allowance is the gateway's: the vendor's own fields would contradict it.
            parts.headers.remove(crate::ratelimit::RATELIMIT_POLICY);
            parts.headers.remove(crate::ratelimit::RATELIMIT);
            a.add_headers(&mut parts.headers);
        }
    }
    parts.version = Version::HTTP_11;
    // 16. Translation, when the route and the caller ask for it.
    let body = match translate {
        Some((t, asked)) => {
            translate::respond(t, asked, &mut parts, body, guard, &upstream.id, record, &conn.telemetry).await?
        }
        None => ResponseBody::Guarded(body, guard),
    };
    Ok(Response::from_parts(parts, body))
}

/// Reads a request body of declared length `len` whole (a body-keyed cache lookup).
async fn read_body(req: &mut Request<Incoming>, len: u64, upstream: &str) -> Result<bytes::Bytes, GatewayError> {
    use http_body_util::BodyExt as _;
    let limit = usize::try_from(len).unwrap_or(usize::MAX);
    match http_body_util::Limited::new(req.body_mut(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(GatewayError::BodyTooLarge { limit: len }),
        Err(e) => Err(GatewayError::Upstream(UpstreamError {
            upstream: upstream.to_owned(),
            kind: crate::upstream::UpstreamErrorKind::RequestBody,
            fault: crate::upstream::Fault::Downstream,
            retryable: false,
            source: Some(e),
        })),
    }
}

/// Whether `method` is answered from the cache by its body (POST lookups with `body_key`).
fn body_keyed(p: &crate::cache::CachePolicy, method: &Method) -> bool {
    p.body_key.is_some() && method == Method::POST
}

/// A retry is another vendor call: it draws on the vendor-account quota like the first (without
/// queueing: when the account has no allowance now, the last answer stands).
async fn retry_quota(
    snap: &Snapshot,
    upstream: &crate::config::Upstream,
    credential: Option<&crate::credentials::Credential>,
) -> bool {
    let Some(q) = upstream.quota.as_ref().filter(|q| !q.limit.windows.is_empty()) else { return true };
    let account = account_of(credential);
    let check = crate::ratelimit::Check {
        spec: q.limit.clone(),
        subject: account.clone(),
        account: Some((upstream.id_shared.clone(), account)),
    };
    match snap.limiter.acquire_now(std::slice::from_ref(&check)).await {
        Ok(a) => {
            a.wait().await;
            true
        }
        Err(_) => false,
    }
}

/// Why an attempt may be retried, and the vendor's `Retry-After` if it gave one.
type RetryReason = (&'static str, Option<Duration>);

/// The answer when no endpoint can take the call.
fn pick_error(upstream: &crate::config::Upstream, e: crate::upstream::resilience::PickError) -> GatewayError {
    use crate::upstream::resilience::PickError as P;
    match e {
        P::CircuitOpen(retry_after) => GatewayError::CircuitOpen { upstream: upstream.id.clone(), retry_after },
        P::NoHealthy => GatewayError::NoHealthyEndpoint { upstream: upstream.id.clone() },
        P::Overloaded => GatewayError::Overloaded { upstream: upstream.id.clone() },
    }
}

/// The vendor account a call draws on: its credential id (`-` for an upstream without one).
fn account_of(credential: Option<&crate::credentials::Credential>) -> Arc<str> {
    credential.map_or_else(|| Arc::from("-"), |c| c.id_shared.clone())
}

/// The rate limits that apply to this call, passed in order (see [`crate::ratelimit`]).
async fn limit(
    snap: &Snapshot,
    route: &crate::config::Route,
    upstream: &crate::config::Upstream,
    caller: Option<&crate::identity::Caller>,
    credential: Option<&crate::credentials::Credential>,
    conn: &ConnInfo,
) -> Result<Option<crate::ratelimit::Admitted>, GatewayError> {
    use crate::ratelimit::{Check, Scope};
    if route.rate_limits.is_empty() && upstream.quota.is_none() {
        return Ok(None);
    }
    let mut checks = Vec::with_capacity(route.rate_limits.len() + 1);
    for spec in &route.rate_limits {
        let subject: Arc<str> = match spec.scope {
            Scope::Caller => match caller {
                Some(c) => c.id.clone(),
                None => Arc::from(format!("ip:{}", conn.peer.ip().to_canonical())),
            },
            _ => Arc::from(""),
        };
        checks.push(Check { spec: spec.clone(), subject, account: None });
    }
    if let Some(q) = &upstream.quota {
        let account = account_of(credential);
        checks.push(Check {
            spec: q.limit.clone(),
            subject: account.clone(),
            account: Some((upstream.id_shared.clone(), account)),
        });
    }
    match snap.limiter.acquire(&checks).await {
        Ok(a) => Ok(Some(a)),
        Err(r) => Err(GatewayError::RateLimited(Box::new(r))),
    }
}

type Sent = Result<Result<Response<Incoming>, hyper_util::client::legacy::Error>, tokio::time::error::Elapsed>;

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the list
/// One upstream attempt: the client span (with trace export on, injecting its `traceparent`),
/// the deadline, and the attempt's duration metric.
async fn attempt(
    conn: &ConnInfo,
    record: &RequestRecord,
    client: &crate::upstream::UpstreamClient,
    upstream: &crate::config::Upstream,
    ep: &crate::config::Endpoint,
    timeout: Duration,
    resend: u32,
    mut out: Request<RequestBody>,
) -> Sent {
    let client_span = match (&conn.telemetry.tracing, &record.span) {
        (Some(t), Some(server)) => {
            let method = out.method().clone();
            Some(t.client_span(server, &method, out.headers_mut()))
        }
        _ => None,
    };
    let method = out.method().clone();
    let started = tokio::time::Instant::now();
    let sent = tokio::time::timeout(timeout, client.send(out)).await;
    let outcome = match &sent {
        Ok(Ok(r)) => Ok(r.status().as_u16()),
        Ok(Err(_)) => Err("upstream_error"),
        Err(_) => Err("timeout"),
    };
    let m = &conn.telemetry.metrics;
    let outcome_label = if outcome.is_ok() { m.labels.ok.clone() } else { m.labels.error.clone() };
    m.upstream_duration
        .get_or_create(&crate::telemetry::metrics::UpstreamLabels {
            upstream: crate::telemetry::metrics::Label(upstream.id_shared.clone()),
            outcome: outcome_label,
        })
        .observe(started.elapsed().as_secs_f64());
    if let Some(cx) = client_span.filter(|cx| {
        use opentelemetry::trace::TraceContextExt as _;
        cx.span().is_recording() || {
            cx.span().end();
            false
        }
    }) {
        use opentelemetry::KeyValue;
        let mut a = vec![
            KeyValue::new("http.request.method", method.as_str().to_owned()),
            KeyValue::new("server.address", ep.authority.host().to_owned()),
            KeyValue::new("interlock.upstream", upstream.id.clone()),
        ];
        if resend > 0 {
            a.push(KeyValue::new("http.request.resend_count", i64::from(resend)));
        }
        match outcome {
            Ok(status) => a.push(KeyValue::new("http.response.status_code", i64::from(status))),
            Err(e) => a.push(KeyValue::new("error.type", e)),
        }
        let failed = !matches!(outcome, Ok(s) if s < 500);
        crate::telemetry::otel::end(&cx, a, failed);
    }
    sent
}

/// The path sent upstream: the endpoint's base path, then the route's rewrite (or the normalised
/// path unchanged). Shared by the proxy and `interlock explain`.
pub fn target_path(
    ep: &crate::config::Endpoint,
    route: &crate::config::Route,
    m: &router::RouteMatch<'_>,
    path: &str,
) -> String {
    let mut pq = String::with_capacity(ep.base_path.len() + path.len() + 32);
    pq.push_str(&ep.base_path);
    pq.push_str(&target_rest(route, m, path));
    if pq.is_empty() {
        pq.push('/');
    }
    pq
}

/// The part of the upstream path after the endpoint's base path: the route's rewrite, or the
/// normalised path unchanged.
fn target_rest(route: &crate::config::Route, m: &router::RouteMatch<'_>, path: &str) -> String {
    match &route.rewrite {
        Some(rw) => {
            let mut out = String::with_capacity(path.len() + 32);
            rw.apply(m, &mut out);
            out
        }
        None => path.to_owned(),
    }
}

/// The host a request is addressed to, lower-cased without the port.
fn request_host(req: &Request<Incoming>, conn: &ConnInfo, server_names: &[String]) -> Result<String, GatewayError> {
    let host_header = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
    let authority = req.uri().authority().map(|a| a.as_str());
    let raw = if req.version() >= Version::HTTP_2 {
        authority.or(host_header)
    } else if let Some(target) = authority {
        // HTTP/1 absolute-form: allowed only for our own names, and it must agree with Host.
        let target_host = strip_port(target);
        let ours = server_names.iter().any(|n| n.eq_ignore_ascii_case(target_host))
            || target_host.eq_ignore_ascii_case("localhost")
            || target_host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok() == Some(conn.local.ip());
        if !ours {
            return Err(GatewayError::ForeignTarget { host: target_host.chars().take(255).collect() });
        }
        if let Some(h) = host_header {
            if !strip_port(h).eq_ignore_ascii_case(target_host) {
                return Err(GatewayError::ForeignTarget { host: target_host.chars().take(255).collect() });
            }
        }
        Some(target)
    } else {
        host_header
    };
    match raw {
        Some(h) => Ok(strip_port(h).to_ascii_lowercase()),
        None if req.version() == Version::HTTP_10 => Ok(String::new()),
        None => Err(GatewayError::MissingHost),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Answers 101 to the caller and splices the two upgraded connections together.
fn tunnel(
    mut res: Response<Incoming>,
    client_upgrade: hyper::upgrade::OnUpgrade,
    upstream: String,
) -> Response<ResponseBody> {
    let upstream_upgrade = hyper::upgrade::on(&mut res);
    tokio::spawn(async move {
        let (client_io, upstream_io) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(%upstream, error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut a = hyper_util::rt::TokioIo::new(client_io);
        let mut b = hyper_util::rt::TokioIo::new(upstream_io);
        if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
            tracing::debug!(%upstream, error = %e, "upgraded connection ended with an error");
        }
    });
    let (mut parts, _empty) = res.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, true);
    parts.extensions = http::Extensions::new();
    Response::from_parts(parts, ResponseBody::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.b:8080"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
