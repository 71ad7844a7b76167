//! Response caching for lookup APIs: what may be stored, under which key, for how long.
//!
//! This module holds the decisions, independent of the request path: the route's [`CachePolicy`],
//! the [`key`] a response is stored under (never shared across credential scopes), and
//! [`storable`], which reads the vendor's `Cache-Control` and the route's rules. The store and the
//! coalescing of concurrent misses build on them.

pub mod store;

use std::time::Duration;

use http::{header, HeaderMap, Method, StatusCode};

/// Default `cache.max_bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// A route's `cache` block, compiled.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    /// Lifetime when the vendor says nothing (`ttl`).
    pub ttl: Duration,
    /// Upper bound on any lifetime, the vendor's included (`max_ttl`).
    pub max_ttl: Duration,
    /// Lifetime of negative answers (404 and the like), when cached (`negative_ttl`).
    pub negative_ttl: Duration,
    /// Whether callers sharing a credential scope share entries (`shared`; default false: one
    /// entry per caller).
    pub shared: bool,
    /// Methods answered from the cache (`GET`, `HEAD`; `POST` with `body_key`).
    pub methods: Vec<Method>,
    /// Statuses stored (default 200, 203, 404).
    pub statuses: Vec<StatusCode>,
    /// Request headers whose values are part of the key (`vary`).
    pub vary: Vec<header::HeaderName>,
    /// Whether the request body is part of the key (POST lookups), read up to this many bytes.
    pub body_key: Option<u64>,
    /// How long past expiry an entry may still answer when the vendor fails (`stale_if_error`).
    pub stale_if_error: Duration,
    /// Largest response stored (`max_entry`); larger ones stream through, uncached.
    pub max_entry: u64,
    /// Whether a client's `Cache-Control: no-cache` skips the cache (`client_no_cache: bypass`).
    pub honour_client_no_cache: bool,
    /// Set when the route overrides the vendor's `Cache-Control` (`override: "<reason>"`).
    pub override_reason: Option<String>,
    /// Also keep answers in Redis (`cluster.redis`) for every replica (`redis: true`; shared routes).
    pub redis: bool,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::ZERO,
            shared: false,
            methods: vec![Method::GET, Method::HEAD],
            statuses: vec![StatusCode::OK, StatusCode::NON_AUTHORITATIVE_INFORMATION, StatusCode::NOT_FOUND],
            vary: Vec::new(),
            body_key: None,
            stale_if_error: Duration::ZERO,
            max_entry: 1 << 20,
            honour_client_no_cache: true,
            override_reason: None,
            redis: false,
        }
    }
}

/// What identifies a stored response. Secrets never enter it: the credential scope is the
/// credential's id and vendor account, not its value.
#[derive(Debug, Clone, Copy)]
pub struct KeyParts<'a> {
    /// Route id.
    pub route: &'a str,
    /// Upstream id.
    pub upstream: &'a str,
    /// Credential id and vendor account (`""` without a credential).
    pub credential_scope: &'a str,
    /// Method.
    pub method: &'a Method,
    /// The normalised upstream path.
    pub path: &'a str,
    /// The query string as received.
    pub query: Option<&'a str>,
    /// The caller id, when entries are not shared.
    pub caller: Option<&'a str>,
    /// The request headers (for `vary`).
    pub headers: &'a HeaderMap,
    /// The canonical request body, for body-keyed routes.
    pub body: Option<&'a [u8]>,
}

/// The cache key: a SHA-256 over every part, length-prefixed so parts cannot run into each other;
/// the query's parameters sorted, so `?a=1&b=2` and `?b=2&a=1` are one entry.
pub fn key(p: &KeyParts<'_>, policy: &CachePolicy) -> String {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let mut part = |b: &[u8]| {
        h.update(&(b.len() as u64).to_be_bytes());
        h.update(b);
    };
    part(p.route.as_bytes());
    part(p.upstream.as_bytes());
    part(p.credential_scope.as_bytes());
    part(p.method.as_str().as_bytes());
    part(p.path.as_bytes());
    let mut params: Vec<&str> = p.query.unwrap_or("").split('&').filter(|s| !s.is_empty()).collect();
    params.sort_unstable();
    part(params.join("&").as_bytes());
    part(if policy.shared { b"" } else { p.caller.unwrap_or("-anonymous-").as_bytes() });
    for name in &policy.vary {
        part(name.as_str().as_bytes());
        let mut values: Vec<&[u8]> = p.headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
        values.sort_unstable();
        part(&values.concat());
    }
    part(p.body.unwrap_or(b""));
    let digest = h.finish();
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A JSON body in canonical form (object keys sorted, no insignificant space), for body keys:
/// `{"ids": [1], "x": 2}` and `{"x":2,"ids":[1]}` are one lookup. Not JSON: the bytes as they are.
pub fn canonical_body(body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        // Keys sorted explicitly: correct whether or not serde_json's `preserve_order` is on.
        Ok(v) => serde_json::to_vec(&sorted(v)).unwrap_or_else(|_| body.to_vec()),
        Err(_) => body.to_vec(),
    }
}

fn sorted(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut pairs: Vec<(String, Value)> = m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(pairs.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Directives of a `Cache-Control` header that caching decisions use.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (requests: revalidate, here: bypass; responses: treated as not storable).
    pub no_cache: bool,
    /// `private`.
    pub private: bool,
    /// `max-age`.
    pub max_age: Option<Duration>,
    /// `s-maxage` (shared caches).
    pub s_maxage: Option<Duration>,
}

/// Parses every `Cache-Control` field of `headers` (RFC 9111 §5.2); unknown directives are ignored,
/// a malformed age makes the response not storable (`no_store`).
pub fn directives(headers: &HeaderMap) -> Directives {
    let mut d = Directives::default();
    for v in headers.get_all(header::CACHE_CONTROL) {
        let Ok(text) = v.to_str() else {
            d.no_store = true;
            continue;
        };
        for item in text.split(',') {
            let (name, arg) = match item.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (item.trim(), None),
            };
            let age = || arg.and_then(|a| a.parse::<u64>().ok()).map(Duration::from_secs);
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "private" => d.private = true,
                "max-age" => match age() {
                    Some(a) => d.max_age = Some(a),
                    None => d.no_store = true,
                },
                "s-maxage" => match age() {
                    Some(a) => d.s_maxage = Some(a),
                    None => d.no_store = true,
                },
                _ => {}
            }
        }
    }
    d
}

/// Whether and how long a vendor response may be stored: `Ok(lifetime)`, or `Err(reason)` (for
/// the `Interlock-Cache` header and logs).
pub fn storable(policy: &CachePolicy, status: StatusCode, headers: &HeaderMap) -> Result<Duration, &'static str> {
    if !policy.statuses.contains(&status) {
        return Err("status");
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err("set-cookie");
    }
    let negative = status.is_client_error();
    if negative && policy.negative_ttl.is_zero() {
        return Err("negative");
    }
    let d = directives(headers);
    let lifetime = if policy.override_reason.is_some() {
        if negative {
            policy.negative_ttl
        } else {
            policy.ttl
        }
    } else {
        if d.no_store {
            return Err("no-store");
        }
        if d.no_cache {
            return Err("no-cache");
        }
        // `private` answers are for one user: only a per-caller cache may keep them.
        if d.private && policy.shared {
            return Err("private");
        }
        let vendor = if policy.shared { d.s_maxage.or(d.max_age) } else { d.max_age };
        match (vendor, negative) {
            (Some(age), _) => age,
            (None, true) => policy.negative_ttl,
            (None, false) => policy.ttl,
        }
    };
    let lifetime = lifetime.min(policy.max_ttl);
    if lifetime.is_zero() {
        return Err("max-age=0");
    }
    Ok(lifetime)
}

/// Whether the client asks to skip stored answers (`Cache-Control: no-cache` or `no-store`, or
/// `Pragma: no-cache`).
pub fn client_bypass(headers: &HeaderMap) -> bool {
    let d = directives(headers);
    d.no_cache
        || d.no_store
        || headers.get_all(header::PRAGMA).iter().any(|v| v.to_str().is_ok_and(|s| s.eq_ignore_ascii_case("no-cache")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    fn parts<'a>(
        headers: &'a HeaderMap,
        scope: &'a str,
        caller: Option<&'a str>,
        query: Option<&'a str>,
    ) -> KeyParts<'a> {
        KeyParts {
            route: "vt-file",
            upstream: "virustotal",
            credential_scope: scope,
            method: &Method::GET,
            path: "/api/v3/files/abc",
            query,
            caller,
            headers,
            body: None,
        }
    }

    #[test]
    fn keys_separate_credential_scopes_and_callers_unless_shared() {
        let none = HeaderMap::new();
        let p = CachePolicy::default();
        let a = key(&parts(&none, "vt-key:acct-1", Some("soar"), None), &p);
        assert_eq!(a.len(), 64);
        assert_ne!(a, key(&parts(&none, "vt-key:acct-2", Some("soar"), None), &p), "another vendor account");
        assert_ne!(a, key(&parts(&none, "vt-key:acct-1", Some("siem"), None), &p), "another caller, not shared");
        let shared = CachePolicy { shared: true, ..CachePolicy::default() };
        assert_eq!(
            key(&parts(&none, "vt-key:acct-1", Some("soar"), None), &shared),
            key(&parts(&none, "vt-key:acct-1", Some("siem"), None), &shared)
        );
        assert_ne!(
            key(&parts(&none, "vt-key:acct-1", Some("soar"), None), &shared),
            key(&parts(&none, "vt-key:acct-2", Some("soar"), None), &shared),
            "sharing never crosses credential scopes"
        );
        // Sorted query; parts cannot run into each other.
        assert_eq!(
            key(&parts(&none, "s", None, Some("a=1&b=2")), &p),
            key(&parts(&none, "s", None, Some("b=2&a=1")), &p)
        );
        assert_ne!(key(&parts(&none, "s", None, Some("a=1")), &p), key(&parts(&none, "s", None, Some("a=2")), &p));
        // Vary headers count only when configured.
        let en = h(&[("accept-language", "en")]);
        let de = h(&[("accept-language", "de")]);
        assert_eq!(key(&parts(&en, "s", None, None), &p), key(&parts(&de, "s", None, None), &p));
        let vary = CachePolicy { vary: vec![header::ACCEPT_LANGUAGE], ..CachePolicy::default() };
        assert_ne!(key(&parts(&en, "s", None, None), &vary), key(&parts(&de, "s", None, None), &vary));
    }

    #[test]
    fn canonical_bodies_ignore_key_order_and_spacing() {
        assert_eq!(
            canonical_body(br#"{"x": 2, "ids": [{"b":1,"a":2}]}"#),
            canonical_body(br#"{"ids":[{"a":2,"b":1}],"x":2}"#)
        );
        assert_ne!(canonical_body(br#"{"ids":[1,2]}"#), canonical_body(br#"{"ids":[2,1]}"#), "list order matters");
        assert_eq!(canonical_body(b"not json"), b"not json".to_vec());
    }

    #[test]
    fn cache_control_decides_what_is_stored_and_for_how_long() {
        let p = CachePolicy::default();
        let ok = StatusCode::OK;
        assert_eq!(storable(&p, ok, &h(&[])), Ok(Duration::from_secs(300)));
        assert_eq!(storable(&p, ok, &h(&[("cache-control", "max-age=60")])), Ok(Duration::from_secs(60)));
        assert_eq!(
            storable(&p, ok, &h(&[("cache-control", "max-age=86400")])),
            Ok(Duration::from_secs(3600)),
            "max_ttl caps"
        );
        assert_eq!(storable(&p, ok, &h(&[("cache-control", "no-store")])), Err("no-store"));
        assert_eq!(storable(&p, ok, &h(&[("cache-control", "public, max-age=0")])), Err("max-age=0"));
        assert_eq!(storable(&p, ok, &h(&[("cache-control", "max-age=abc")])), Err("no-store"));
        assert_eq!(storable(&p, ok, &h(&[("set-cookie", "s=1")])), Err("set-cookie"));
        assert_eq!(storable(&p, StatusCode::INTERNAL_SERVER_ERROR, &h(&[])), Err("status"));
        assert_eq!(storable(&p, StatusCode::NOT_FOUND, &h(&[])), Err("negative"), "no negative_ttl: not cached");
        let neg = CachePolicy { negative_ttl: Duration::from_secs(30), ..CachePolicy::default() };
        assert_eq!(storable(&neg, StatusCode::NOT_FOUND, &h(&[])), Ok(Duration::from_secs(30)));
        // private: per-caller caches only; s-maxage for shared ones.
        assert_eq!(storable(&p, ok, &h(&[("cache-control", "private, max-age=10")])), Ok(Duration::from_secs(10)));
        let shared = CachePolicy { shared: true, ..CachePolicy::default() };
        assert_eq!(storable(&shared, ok, &h(&[("cache-control", "private")])), Err("private"));
        assert_eq!(
            storable(&shared, ok, &h(&[("cache-control", "max-age=10"), ("cache-control", "s-maxage=20")])),
            Ok(Duration::from_secs(20))
        );
        // An override with a stated reason ignores the vendor's directives, not Set-Cookie.
        let over = CachePolicy {
            override_reason: Some("vendor sends no-store on static data".into()),
            ..CachePolicy::default()
        };
        assert_eq!(storable(&over, ok, &h(&[("cache-control", "no-store")])), Ok(Duration::from_secs(300)));
        assert_eq!(storable(&over, ok, &h(&[("set-cookie", "s=1")])), Err("set-cookie"));
    }

    #[test]
    fn clients_bypass_with_no_cache() {
        assert!(client_bypass(&h(&[("cache-control", "no-cache")])));
        assert!(client_bypass(&h(&[("pragma", "no-cache")])));
        assert!(!client_bypass(&h(&[("cache-control", "max-age=0, only-if-cached")])));
        assert!(!client_bypass(&h(&[])));
    }
}
