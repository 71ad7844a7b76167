//! The response cache on the request path: look up before the vendor quota is drawn on, coalesce
//! concurrent misses, store what may be stored (see [`crate::cache`]).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{read_up_to, ResponseBody};
use crate::cache::store::{wait, Entry, Flight, Join, Shared};
use crate::cache::CachePolicy;
use crate::error::GatewayError;
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::{CacheLabels, Label, UpstreamOnly};
use crate::telemetry::record::RequestRecord;
use crate::telemetry::Telemetry;

/// The `Interlock-Cache` response header.
pub const INTERLOCK_CACHE: HeaderName = HeaderName::from_static("interlock-cache");

/// A cache miss this request is answering.
pub struct Caching {
    route: Arc<str>,
    upstream: Arc<str>,
    policy: Arc<CachePolicy>,
    key: String,
    flight: Option<Flight>,
    stale: Option<Arc<Entry>>,
}

impl Caching {
    /// Whether other requests wait on this one's answer (it leads the fetch of the miss).
    pub fn leads(&self) -> bool {
        self.flight.is_some()
    }
}

/// Either an answer from the cache, or what the request must do to fill it.
pub enum Lookup {
    /// Answered from the cache (or with the failure the coalesced fetch met).
    Answer(Result<Response<ResponseBody>, GatewayError>),
    /// Go to the vendor; then [`finish`].
    Fetch(Caching),
}

#[allow(clippy::too_many_arguments)] // the request's pieces, each borrowed differently
/// Looks the request up. Call only after the caller is authorised for the route.
pub async fn lookup(
    snap: &Snapshot,
    policy: &Arc<CachePolicy>,
    req: &Request<Incoming>,
    route: &crate::config::Route,
    upstream: &crate::config::Upstream,
    path: &str,
    caller: Option<&str>,
    credential_scope: &str,
    variant: &[u8],
    record: &mut RequestRecord,
    telemetry: &Telemetry,
) -> Lookup {
    let key = crate::cache::key(
        &crate::cache::KeyParts {
            route: &route.id,
            upstream: &upstream.id,
            credential_scope,
            method: req.method(),
            path,
            query: req.uri().query(),
            caller,
            headers: req.headers(),
            body: Some(variant),
        },
        policy,
    );
    // Every outcome is recorded (span, audit) and counted; all but a miss or bypass spared a
    // vendor call.
    let mut note = |how: &'static str| {
        record.facts.cache = Some(how);
        let labels = CacheLabels { route: Label(route.id_shared.clone()), result: how };
        telemetry.metrics.cache_lookups.get_or_create(&labels).inc();
        if how != "miss" && how != "bypass" {
            let labels = UpstreamOnly { upstream: Label(upstream.id_shared.clone()) };
            telemetry.metrics.cache_quota_saved.get_or_create(&labels).inc();
        }
    };
    let fetch = |key: String, flight: Option<Flight>, stale: Option<Arc<Entry>>| {
        Lookup::Fetch(Caching {
            route: route.id_shared.clone(),
            upstream: upstream.id_shared.clone(),
            policy: policy.clone(),
            key,
            flight,
            stale,
        })
    };
    if policy.honour_client_no_cache && crate::cache::client_bypass(req.headers()) {
        note("bypass");
        return fetch(key, None, None);
    }
    let mut stale = None;
    loop {
        if let Some(e) = snap.cache.get(&key).await {
            if e.fresh(Instant::now()) {
                note("hit");
                return Lookup::Answer(Ok(answer(&e, "hit")));
            }
            stale = Some(e);
        }
        match snap.cache.join(&key) {
            Join::Leader(flight) => {
                // The shared tier: another replica may hold the answer.
                if policy.redis {
                    if let Some(e) = from_redis(snap, &key, route, upstream).await {
                        if e.fresh(Instant::now()) {
                            snap.cache.insert(key, e.clone()).await;
                            flight.finish(Shared::Entry(e.clone()));
                            note("hit");
                            return Lookup::Answer(Ok(answer(&e, "hit")));
                        }
                        stale = Some(e);
                    }
                }
                note("miss");
                return fetch(key, Some(flight), stale);
            }
            Join::Follower(rx) => match wait(rx).await {
                Some(Shared::Entry(e)) => {
                    let how = if e.fresh(Instant::now()) { "coalesced" } else { "stale" };
                    note(how);
                    return Lookup::Answer(Ok(answer(&e, how)));
                }
                Some(Shared::Failed(err)) => {
                    if let Some(s) = stale.filter(|s| s.usable_stale(Instant::now())) {
                        note("stale");
                        return Lookup::Answer(Ok(answer(&s, "stale")));
                    }
                    note("coalesced");
                    return Lookup::Answer(Err(GatewayError::Shared(err)));
                }
                // The answer could not be shared: call the vendor for this request alone.
                Some(Shared::Pass) => {
                    note("miss");
                    return fetch(key, None, stale);
                }
                // The leading request went away before an answer: try again (perhaps leading).
                None => continue,
            },
        }
    }
}

/// The entry for `key` in Redis (`cluster.redis`), if any; an unreachable Redis is a miss.
async fn from_redis(
    snap: &Snapshot,
    key: &str,
    route: &crate::config::Route,
    upstream: &crate::config::Upstream,
) -> Option<Arc<Entry>> {
    let shared = snap.limiter.shared_store().filter(|s| s.up())?;
    match shared.cache_get(key).await {
        Ok(Some(bytes)) => Entry::decode(&bytes, route.id_shared.clone(), upstream.id_shared.clone()).map(Arc::new),
        Ok(None) => None,
        Err(e) => {
            shared.mark_down(&e);
            None
        }
    }
}

/// A response from a stored entry, with `Age` and `Interlock-Cache`.
fn answer(e: &Entry, how: &'static str) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::full(e.body.clone()));
    *res.status_mut() = e.status;
    *res.headers_mut() = e.headers.clone();
    res.headers_mut().insert(header::AGE, HeaderValue::from(e.age(Instant::now()).as_secs()));
    res.headers_mut().insert(INTERLOCK_CACHE, HeaderValue::from_static(how));
    res
}

/// Stores the vendor's answer when it may be, and ends the flight: waiters get the answer, the
/// failure, or are told to call on their own.
pub async fn finish(
    snap: &Snapshot,
    c: Caching,
    outcome: Result<Response<ResponseBody>, GatewayError>,
    record: &mut RequestRecord,
) -> Result<Response<ResponseBody>, GatewayError> {
    let Caching { route, upstream, policy, key, flight, stale } = c;
    let publish = |flight: Option<Flight>, outcome: Shared| {
        if let Some(f) = flight {
            f.finish(outcome);
        }
    };
    // A vendor in trouble (no answer, or a 5xx): an expired answer within `stale_if_error` stands in.
    let vendor_failed = match &outcome {
        Ok(res) => res.status().is_server_error(),
        Err(e) => e.is_upstream_failure(),
    };
    if vendor_failed {
        if let Some(s) = stale.filter(|s| s.usable_stale(Instant::now())) {
            record.facts.cache = Some("stale");
            publish(flight, Shared::Entry(s.clone()));
            return Ok(answer(&s, "stale"));
        }
    }
    let res = match outcome {
        Ok(res) => res,
        // Every waiter gets the same failure; nothing is stored.
        Err(e) if vendor_failed => {
            let shared = Arc::new(e);
            publish(flight, Shared::Failed(shared.clone()));
            return Err(GatewayError::Shared(shared));
        }
        // A refusal of this caller (its rate limit...): the waiters ask for themselves.
        Err(e) => {
            publish(flight, Shared::Pass);
            return Err(e);
        }
    };
    let how = if record.facts.cache == Some("bypass") { "bypass" } else { "miss" };
    let lifetime = match crate::cache::storable(&policy, res.status(), res.headers()) {
        Ok(l) => l,
        Err(_) => {
            publish(flight, Shared::Pass);
            return Ok(marked(res, how));
        }
    };
    let (mut parts, body) = res.into_parts();
    let bytes: Bytes = match read_up_to(body, policy.max_entry).await {
        Ok(Ok(b)) => b,
        Ok(Err(rest)) => {
            // Larger than `max_entry`: streamed on, not stored.
            publish(flight, Shared::Pass);
            return Ok(marked(Response::from_parts(parts, rest), how));
        }
        Err(e) => {
            let err = GatewayError::UpstreamBody { upstream: upstream.to_string(), why: e.to_string() };
            publish(flight, Shared::Pass);
            return Err(err);
        }
    };
    // Kept at its exact size: the buffer it was read into may be up to twice as large.
    let bytes = if bytes.len() < 4096 { bytes } else { Bytes::copy_from_slice(&bytes) };
    // The allowance headers were this caller's; a stored answer must not repeat them to others.
    let mut stored_headers = parts.headers.clone();
    stored_headers.remove(crate::ratelimit::RATELIMIT);
    stored_headers.remove(crate::ratelimit::RATELIMIT_POLICY);
    stored_headers.remove(header::CONTENT_LENGTH);
    let entry = Arc::new(Entry {
        route,
        upstream,
        status: parts.status,
        headers: stored_headers,
        body: bytes.clone(),
        stored: Instant::now(),
        fresh_for: lifetime,
        stale_for: policy.stale_if_error,
    });
    if policy.redis {
        if let Some(shared) = snap.limiter.shared_store().filter(|s| s.up()) {
            // Written behind the answer: the caller does not wait for Redis.
            let (k, bytes, ttl) = (key.clone(), entry.encode(), entry.fresh_for + entry.stale_for);
            tokio::spawn(async move {
                if let Err(e) = shared.cache_set(&k, &bytes, ttl).await {
                    shared.mark_down(&e);
                }
            });
        }
    }
    snap.cache.insert(key, entry.clone()).await;
    publish(flight, Shared::Entry(entry));
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(marked(Response::from_parts(parts, ResponseBody::full(bytes)), how))
}

fn marked(mut res: Response<ResponseBody>, how: &'static str) -> Response<ResponseBody> {
    res.headers_mut().insert(INTERLOCK_CACHE, HeaderValue::from_static(how));
    res
}
