//! The one table that turns a failure into an `application/problem+json` answer (RFC 9457).
//!
//! Every stage of the request path returns a [`GatewayError`]; [`rescue`] at the edge is the only
//! place that picks a status, a stable `type` and the client-facing `detail`. Details say what the
//! client should do and never contain secrets, upstream addresses or internal error text (those go
//! to the log line for the request instead).

use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, Response, StatusCode};

use crate::identity::IdentityError;
use crate::proxy::normalize::PathError;
use crate::upstream::{TlsFailure, UpstreamError, UpstreamErrorKind};

/// Prefix of every problem `type`; the slug after it is stable and documented in `docs/errors.md`.
pub const PROBLEM_TYPE_BASE: &str = "urn:interlock:problem:";

/// Media type of gateway-made error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything the gateway itself can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The path failed normalisation.
    #[error("invalid path: {0}")]
    InvalidPath(#[from] PathError),
    /// The HTTP/1 message framing was ambiguous or unsupported.
    #[error("ambiguous framing: {0}")]
    AmbiguousFraming(&'static str),
    /// An HTTP/1.1 absolute-form target named a host this gateway does not serve.
    #[error("absolute-form target for foreign host {host}")]
    ForeignTarget {
        /// The host named in the target.
        host: String,
    },
    /// No `Host` (or `:authority`).
    #[error("missing host")]
    MissingHost,
    /// CONNECT is never proxied.
    #[error("CONNECT is not supported")]
    ConnectNotSupported,
    /// An `Upgrade` on a route that does not allow it.
    #[error("upgrade not allowed on route {route}")]
    UpgradeNotAllowed {
        /// The route id.
        route: String,
    },
    /// Too many header fields.
    #[error("too many headers ({count} > {limit})")]
    TooManyHeaders {
        /// Fields received.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Header section too large.
    #[error("headers too large ({bytes} > {limit} bytes)")]
    HeadersTooLarge {
        /// Bytes received.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Request body over the limit.
    #[error("body larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// No route for host and path.
    #[error("no route for {method} {path}")]
    NoRoute {
        /// The method.
        method: Method,
        /// The normalised path.
        path: String,
    },
    /// A route exists but not for this method.
    #[error("method {method} not allowed")]
    MethodNotAllowed {
        /// The method received.
        method: Method,
        /// Methods the path accepts.
        allowed: Vec<Method>,
    },
    /// The overall request deadline passed before the upstream answered.
    #[error("request timed out after {0:?}")]
    RequestTimeout(std::time::Duration),
    /// The upstream failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The failure of the vendor call this request waited on (coalesced cache misses all get it).
    #[error(transparent)]
    Shared(std::sync::Arc<GatewayError>),
    /// The gateway is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// No identity on a route that requires one.
    #[error("unauthenticated request on route {route}")]
    Unauthenticated {
        /// The route id.
        route: String,
        /// `WWW-Authenticate` value.
        challenge: Option<String>,
    },
    /// The policy refuses the call.
    #[error("{caller} may not {method} on route {route}: {why}")]
    Forbidden {
        /// The route id.
        route: String,
        /// `caller `x`` or `an unidentified caller`.
        caller: String,
        /// The method.
        method: Method,
        /// Why, in words (the deciding rule, never the whole policy).
        why: String,
    },
    /// The credential (an OAuth2 token) cannot be obtained.
    #[error("credential unavailable: {0}")]
    CredentialUnavailable(String),
    /// The upstream has per-caller credentials and none for this caller.
    #[error("no credential of upstream {upstream} for {caller}")]
    NoCredential {
        /// The upstream id.
        upstream: String,
        /// `caller `x``.
        caller: String,
    },
    /// Every endpoint of the upstream is ejected by its circuit breaker.
    #[error("circuit open for upstream {upstream}")]
    CircuitOpen {
        /// The upstream id.
        upstream: String,
        /// When the first endpoint comes back (half-open).
        retry_after: std::time::Duration,
    },
    /// Every endpoint fails its active health checks.
    #[error("no healthy endpoint for upstream {upstream}")]
    NoHealthyEndpoint {
        /// The upstream id.
        upstream: String,
    },
    /// The upstream's `max_concurrent` is reached.
    #[error("upstream {upstream} overloaded")]
    Overloaded {
        /// The upstream id.
        upstream: String,
    },
    /// A rate limit or vendor quota refused the call.
    #[error("rate limited by {} limit {}", .0.name, .0.limit)]
    RateLimited(Box<crate::ratelimit::Refused>),
    /// The route must be audited and the audit trail cannot be written.
    #[error("audit trail unavailable for route {route}")]
    AuditUnavailable {
        /// The route id.
        route: String,
    },
    /// The route translates strictly and the vendor payload did not translate validly.
    #[error("translation with mapping {mapping} failed ({kind}): {reasons:?}")]
    TranslationFailed {
        /// Mapping id.
        mapping: String,
        /// `invalid`, `program-error`, `not-json`, `timeout`.
        kind: &'static str,
        /// What failed, field by field.
        reasons: Vec<String>,
    },
    /// The upstream's response body failed while the gateway read it for translation.
    #[error("upstream {upstream} response body failed: {why}")]
    UpstreamBody {
        /// Upstream id.
        upstream: String,
        /// What failed.
        why: String,
    },
    /// A valid client certificate whose identity is not a known caller.
    #[error("unknown certificate identity {identity}")]
    UnknownCertificate {
        /// The certificate's identity.
        identity: String,
    },
    /// Identification failed (bad token or key, conflicting identities, IdP unavailable).
    #[error("identification failed: {err}")]
    Identity {
        /// What failed.
        err: IdentityError,
        /// `WWW-Authenticate` value.
        challenge: Option<String>,
    },
}

/// A problem answer before it is rendered: status, stable slug, title and client-safe detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable slug appended to [`PROBLEM_TYPE_BASE`].
    pub slug: &'static str,
    /// Short, stable summary.
    pub title: &'static str,
    /// What happened and what to do, safe to show the caller.
    pub detail: String,
}

impl GatewayError {
    /// Whether the vendor (or the way to it) failed, as opposed to a refusal of this caller: such
    /// a failure is shared with the callers waiting on the same cache miss.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            GatewayError::Upstream(_)
                | GatewayError::RequestTimeout(_)
                | GatewayError::CircuitOpen { .. }
                | GatewayError::NoHealthyEndpoint { .. }
                | GatewayError::Overloaded { .. }
                | GatewayError::UpstreamBody { .. }
                | GatewayError::Shared(_)
        )
    }

    /// The table: status, type and detail for each failure.
    pub fn problem(&self) -> Problem {
        use GatewayError as E;
        let p = |status, slug, title, detail: String| Problem { status, slug, title, detail };
        match self {
            E::InvalidPath(e) => p(
                StatusCode::BAD_REQUEST,
                "invalid-path",
                "Invalid request path",
                format!("{e}. Send the path without encoded slashes, backslashes, NUL bytes or `..;` segments."),
            ),
            E::AmbiguousFraming(why) => p(
                StatusCode::BAD_REQUEST,
                "ambiguous-framing",
                "Ambiguous request framing",
                format!("{why}. Send either one Content-Length or `Transfer-Encoding: chunked`, not both."),
            ),
            E::ForeignTarget { host } => p(
                StatusCode::BAD_REQUEST,
                "foreign-target",
                "Request target names another host",
                format!("The absolute-form target names `{host}`, which this gateway does not serve; it is not a forward proxy. Send an origin-form path such as `/route/...`."),
            ),
            E::MissingHost => p(
                StatusCode::BAD_REQUEST,
                "missing-host",
                "Missing Host header",
                "Send a Host header naming this gateway.".to_owned(),
            ),
            E::ConnectNotSupported => p(
                StatusCode::METHOD_NOT_ALLOWED,
                "connect-not-supported",
                "CONNECT is not supported",
                "This gateway does not tunnel. Call the route's URL directly.".to_owned(),
            ),
            E::UpgradeNotAllowed { route } => p(
                StatusCode::BAD_REQUEST,
                "upgrade-not-allowed",
                "Protocol upgrade not allowed",
                format!("Route `{route}` does not allow protocol upgrades. Send the request without `Upgrade`, or ask the platform team to set `upgrade: true` on the route."),
            ),
            E::TooManyHeaders { count, limit } => p(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                "Request headers too large",
                format!("The request has {count} header fields; at most {limit} are accepted. Remove unneeded headers."),
            ),
            E::HeadersTooLarge { bytes, limit } => p(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                "Request headers too large",
                format!("The request headers total {bytes} bytes; at most {limit} are accepted. Remove unneeded headers or shorten cookies and tokens."),
            ),
            E::BodyTooLarge { limit } => p(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
                format!("The request body exceeds this route's limit of {limit} bytes. Send a smaller body or split the request."),
            ),
            E::NoRoute { method, path } => p(
                StatusCode::NOT_FOUND,
                "no-route",
                "No route",
                format!("No route matches {method} {path} on this host. Check the URL against the routes your platform team publishes."),
            ),
            E::MethodNotAllowed { method, allowed } => {
                let mut list = String::new();
                for (i, m) in allowed.iter().enumerate() {
                    let _ = write!(list, "{}{m}", if i > 0 { ", " } else { "" });
                }
                p(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method-not-allowed",
                    "Method not allowed",
                    format!("{method} is not allowed on this path; use one of: {list}."),
                )
            }
            E::RequestTimeout(d) => p(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway-timeout",
                "Upstream did not answer in time",
                format!("The upstream did not answer within {} ms. Retry later; if it persists, the vendor API may be degraded.", d.as_millis()),
            ),
            E::Upstream(e) => upstream_problem(e),
            E::Shared(inner) => inner.problem(),
            E::TranslationFailed { mapping, kind, reasons } => {
                let shown: Vec<&str> = reasons.iter().take(10).map(String::as_str).collect();
                let more = if reasons.len() > shown.len() { format!(" (and {} more)", reasons.len() - shown.len()) } else { String::new() };
                p(
                    StatusCode::BAD_GATEWAY,
                    "translation-invalid",
                    "Vendor payload could not be translated",
                    format!(
                        "The vendor's answer did not translate validly with mapping `{mapping}` ({kind}): {}{more}. The vendor may have changed its payload; the platform team sees the same reasons on the admin /mappings endpoint. Ask for the raw payload (without the translated media type in Accept) meanwhile.",
                        shown.join("; ")
                    ),
                )
            }
            E::UpstreamBody { upstream, .. } => p(
                StatusCode::BAD_GATEWAY,
                "upstream-body-failed",
                "Upstream response failed",
                format!("Upstream `{upstream}` broke off its answer while the gateway was reading it. Retry the call."),
            ),
            E::Unauthenticated { route, .. } => p(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Caller not identified",
                format!("Route `{route}` needs to know who is calling. Present your client certificate, a bearer token from a trusted identity provider, or your Interlock API key."),
            ),
            E::Forbidden { route, caller, method, why } => p(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Not allowed",
                format!("Route `{route}` does not let {caller} {method} this path: {why}. Ask the platform team for access if the tool needs it."),
            ),
            E::CredentialUnavailable(why) => p(
                StatusCode::SERVICE_UNAVAILABLE,
                "credential-unavailable",
                "Vendor credential unavailable",
                format!("The gateway could not obtain the vendor credential: {why}. Nothing was sent to the vendor. Retry later; the platform team is alerted by the token metrics."),
            ),
            E::NoCredential { upstream, caller } => p(
                StatusCode::FORBIDDEN,
                "no-credential",
                "No vendor credential for this caller",
                format!("Upstream `{upstream}` holds one credential per vendor account, and none is assigned to {caller}. Ask the platform team to assign one."),
            ),
            E::CircuitOpen { upstream, retry_after } => p(
                StatusCode::SERVICE_UNAVAILABLE,
                "circuit-open",
                "Upstream circuit open",
                format!("Upstream `{upstream}` failed repeatedly and is not being called for now (circuit open). Nothing was sent. Retry after {} s (Retry-After).", retry_secs(*retry_after)),
            ),
            E::NoHealthyEndpoint { upstream } => p(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-healthy-endpoint",
                "No healthy upstream endpoint",
                format!("Every endpoint of upstream `{upstream}` fails its health checks. Nothing was sent. Retry later; the platform team is alerted by the health metrics."),
            ),
            E::Overloaded { upstream } => p(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Upstream at its concurrency limit",
                format!("Upstream `{upstream}` already has as many calls in flight as it is allowed. Nothing was sent. Retry shortly, with back-off."),
            ),
            E::RateLimited(r) => {
                use crate::ratelimit::RefusedKind as K;
                let secs = retry_secs(r.retry_after);
                let whose = match r.name {
                    "caller" => "your per-caller limit on this route",
                    "route" => "this route's total limit",
                    _ => "the vendor account's quota",
                };
                match r.kind {
                    K::Limited => p(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate-limited",
                        "Rate limit exceeded",
                        format!("This call exceeds {whose} ({}). Retry after {secs} s (Retry-After); the RateLimit headers show the allowance.", r.windows),
                    ),
                    K::QueueFull => p(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate-limit-queue-full",
                        "Rate limit queue full",
                        format!("This call exceeds {whose} ({}) and too many calls are already waiting for it. Retry after {secs} s (Retry-After), or send fewer calls at once.", r.windows),
                    ),
                    K::VendorPaused => p(
                        StatusCode::TOO_MANY_REQUESTS,
                        "vendor-quota-exhausted",
                        "Vendor quota exhausted",
                        format!("The vendor reported this account's quota as used up; calls are held for every tool until it resets. Retry after {secs} s (Retry-After)."),
                    ),
                    K::Unavailable => p(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "rate-limit-unavailable",
                        "Rate limit store unavailable",
                        "The shared rate-limit store cannot be reached and this limit is configured to refuse calls meanwhile. Retry shortly; the platform team is alerted by the rate-limit metrics.".to_owned(),
                    ),
                }
            }
            E::AuditUnavailable { route } => p(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit-unavailable",
                "Audit trail unavailable",
                format!("Route `{route}` may only be called while calls are audited, and the audit trail cannot be written right now. Retry later; the platform team is alerted by the audit metrics."),
            ),
            E::UnknownCertificate { identity } => p(
                StatusCode::UNAUTHORIZED,
                "unknown-certificate",
                "Unknown client certificate",
                format!("The client certificate identifies `{identity}`, which is not a known caller. Ask the platform team to add it to callers.yaml."),
            ),
            E::Identity { err, .. } => match err {
                IdentityError::InvalidToken(_) | IdentityError::UntrustedIssuer => p(
                    StatusCode::UNAUTHORIZED,
                    "invalid-token",
                    "Invalid bearer token",
                    format!("{}. Obtain a fresh token from your identity provider and retry.", capitalise(&err.to_string())),
                ),
                IdentityError::InvalidApiKey => p(
                    StatusCode::UNAUTHORIZED,
                    "invalid-api-key",
                    "Invalid API key",
                    "The API key is not valid. Check the key your tool is configured with, or ask the platform team for a new one.".to_owned(),
                ),
                IdentityError::Conflict { .. } => p(
                    StatusCode::UNAUTHORIZED,
                    "identity-conflict",
                    "Conflicting identities",
                    format!("{}. Send the credentials of one caller only.", capitalise(&err.to_string())),
                ),
                IdentityError::ProviderUnavailable(_) => p(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "identity-provider-unavailable",
                    "Identity provider unavailable",
                    format!("{}, so tokens cannot be verified. Retry later.", capitalise(&err.to_string())),
                ),
            },
            E::ShuttingDown => p(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "Gateway shutting down",
                "This gateway instance is shutting down. Retry; another instance will take the request.".to_owned(),
            ),
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn upstream_problem(e: &UpstreamError) -> Problem {
    let id = &e.upstream;
    match e.kind {
        UpstreamErrorKind::Connect => Problem {
            status: StatusCode::BAD_GATEWAY,
            slug: "upstream-unavailable",
            title: "Upstream unavailable",
            detail: format!("Could not connect to upstream `{id}`. Retry later; if it persists, tell the platform team."),
        },
        UpstreamErrorKind::Timeout => Problem {
            status: StatusCode::GATEWAY_TIMEOUT,
            slug: "upstream-timeout",
            title: "Upstream timed out",
            detail: format!("Upstream `{id}` did not answer in time. Retry later."),
        },
        UpstreamErrorKind::Reset | UpstreamErrorKind::Protocol => Problem {
            status: StatusCode::BAD_GATEWAY,
            slug: "upstream-failed",
            title: "Upstream failed",
            detail: format!("Upstream `{id}` closed the connection or sent an invalid response. Retry later; if it persists, tell the platform team."),
        },
        UpstreamErrorKind::Tls(t) => {
            let (slug, why) = match t {
                TlsFailure::PinMismatch => (
                    "upstream-pin-mismatch",
                    "its certificate's key matches none of the pinned keys (the vendor may have rotated it: the platform team must confirm and update `tls.pins`)",
                ),
                TlsFailure::Untrusted => (
                    "upstream-certificate-untrusted",
                    "its certificate is not trusted (unknown CA, expired or issued for another name)",
                ),
                TlsFailure::Handshake => ("upstream-tls-failed", "the TLS handshake failed (e.g. our client certificate was refused)"),
            };
            Problem {
                status: StatusCode::BAD_GATEWAY,
                slug,
                title: "Upstream TLS failed",
                detail: format!("Could not open a secure connection to upstream `{id}`: {why}. Nothing was sent. Tell the platform team."),
            }
        }
        UpstreamErrorKind::RequestBody => Problem {
            status: StatusCode::BAD_REQUEST,
            slug: "request-body-failed",
            title: "Request body could not be read",
            detail: "The request body ended early or was malformed. Send the complete body.".to_owned(),
        },
    }
}

/// Renders a problem as the response body and headers. `request_id` and `trace_id` are echoed in
/// the body; the caller adds the request-id header like on every other response.
pub fn render(problem: &Problem, request_id: &str, trace_id: &str) -> Response<Bytes> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        #[serde(rename = "type")]
        kind: String,
        title: &'a str,
        status: u16,
        detail: &'a str,
        request_id: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        trace_id: &'a str,
    }
    let body = Body {
        kind: format!("{PROBLEM_TYPE_BASE}{}", problem.slug),
        title: problem.title,
        status: problem.status.as_u16(),
        detail: &problem.detail,
        request_id,
        trace_id,
    };
    // Serialising plain strings and integers cannot fail.
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut res = Response::new(Bytes::from(bytes));
    *res.status_mut() = problem.status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    res
}

/// The W3C trace id of a `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`), if well-formed and
/// not all zeros.
pub fn trace_id_of(traceparent: Option<&HeaderValue>) -> Option<&str> {
    let v = traceparent?.to_str().ok()?;
    let mut parts = v.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let ok = hex(version, 2) && version != "ff" && hex(trace, 32) && hex(span, 16) && hex(flags, 2);
    (ok && trace.bytes().any(|b| b != b'0')).then_some(trace)
}

/// A new random trace id (32 lower-case hex digits) for requests that arrived without one.
pub fn new_trace_id() -> String {
    format!("{:032x}", fastrand::u128(1..))
}

/// Whole seconds to wait, rounded up, at least 1 (a `Retry-After` of 0 invites a busy loop).
pub fn retry_secs(d: std::time::Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// The rescue: renders `err` and adds the headers its status calls for (`Allow`, `Retry-After`).
pub fn rescue(err: &GatewayError, request_id: &str, trace_id: &str) -> Response<Bytes> {
    if let GatewayError::Shared(inner) = err {
        return rescue(inner, request_id, trace_id);
    }
    let problem = err.problem();
    let mut res = render(&problem, request_id, trace_id);
    match err {
        GatewayError::MethodNotAllowed { allowed, .. } => {
            let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                res.headers_mut().insert(ALLOW, v);
            }
        }
        GatewayError::ShuttingDown | GatewayError::AuditUnavailable { .. } | GatewayError::CredentialUnavailable(_) => {
            res.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        GatewayError::CircuitOpen { retry_after, .. } => {
            res.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_secs(*retry_after)));
        }
        GatewayError::Overloaded { .. } | GatewayError::NoHealthyEndpoint { .. } => {
            res.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        GatewayError::RateLimited(r) => {
            res.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_secs(r.retry_after)));
            for (n, v) in &r.headers {
                res.headers_mut().append(n.clone(), v.clone());
            }
        }
        GatewayError::Unauthenticated { challenge: Some(c), .. }
        | GatewayError::Identity { challenge: Some(c), .. } => {
            if let Ok(v) = HeaderValue::from_str(c) {
                res.headers_mut().insert(WWW_AUTHENTICATE, v);
            }
        }
        _ => {}
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_json_shape() {
        let e = GatewayError::MethodNotAllowed { method: Method::DELETE, allowed: vec![Method::GET, Method::HEAD] };
        let res = rescue(&e, "req-1", "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(res.headers()[CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(res.headers()[ALLOW], "GET, HEAD");
        let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(v["type"], "urn:interlock:problem:method-not-allowed");
        assert_eq!(v["status"], 405);
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(v["detail"].as_str().unwrap().contains("GET, HEAD"));
    }

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let tp = |s: &'static str| HeaderValue::from_static(s);
        let good = tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(trace_id_of(Some(&good)), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(trace_id_of(Some(&tp(bad))), None, "{bad}");
        }
        assert_eq!(new_trace_id().len(), 32);
    }

    #[test]
    fn every_variant_has_a_distinct_stable_slug_per_status() {
        let samples = vec![
            GatewayError::InvalidPath(PathError::Nul),
            GatewayError::AmbiguousFraming("x"),
            GatewayError::ForeignTarget { host: "h".into() },
            GatewayError::MissingHost,
            GatewayError::ConnectNotSupported,
            GatewayError::UpgradeNotAllowed { route: "r".into() },
            GatewayError::TooManyHeaders { count: 2, limit: 1 },
            GatewayError::BodyTooLarge { limit: 1 },
            GatewayError::NoRoute { method: Method::GET, path: "/".into() },
            GatewayError::RequestTimeout(std::time::Duration::from_secs(1)),
            GatewayError::ShuttingDown,
        ];
        for e in samples {
            let p = e.problem();
            assert!(p.status.is_client_error() || p.status.is_server_error());
            assert!(!p.detail.is_empty() && p.detail.ends_with('.'), "{p:?}");
        }
    }
}
