//! The admin API's read-only views of a config snapshot: `/config` (effective config, secrets
//! redacted), `/routes` and `/upstreams`. Built from compiled types, so nothing secret can leak:
//! credentials appear by id and header name, API keys by id, never values or hashes.

use serde_json::{json, Value};

use crate::config::units::{format_duration, format_size};
use crate::config::{Config, Route, Upstream, UpstreamProtocol};
use crate::identity::jwt::JwksSource;
use crate::snapshot::Snapshot;

fn route_view(c: &Config, r: &Route) -> Value {
    json!({
        "id": r.id,
        "defined_at": r.origin.to_string(),
        "match": {
            "path": r.template.to_string(),
            "methods": r.methods.as_ref().map(|m| m.iter().map(|m| m.as_str().to_owned()).collect::<Vec<_>>()),
            "host": r.host.as_ref().map(ToString::to_string),
        },
        "upstream": c.upstreams[r.upstream].id,
        "rewrite": r.rewrite.is_some(),
        "anonymous": r.anonymous,
        "audit": if r.audit_required { "required" } else { "best_effort" },
        "upgrade": r.upgrade,
        "timeout": format_duration(r.timeout),
        "max_body": format_size(r.max_body),
        "rate_limits": r.rate_limits.iter().map(|l| l.describe()).collect::<Vec<_>>(),
        "retry": r.retry.as_ref().map(|p| p.describe()),
        "translate": r.translate.as_ref().map(|t| json!({
            "mapping": t.mapping.id,
            "when": match t.when { crate::translate::When::Accept => "accept", crate::translate::When::Always => "always" },
            "media_type": t.mapping.target.media_type(),
            "max_body": format_size(t.max_body),
            "on_invalid": match t.on_invalid { crate::translate::OnInvalid::Raw => "raw", crate::translate::OnInvalid::Strict => "strict" },
            "timeout": format_duration(t.timeout),
        })),
    })
}

fn upstream_view(u: &Upstream) -> Value {
    let t = &u.tls_inputs;
    json!({
        "id": u.id,
        "defined_at": u.origin.to_string(),
        "endpoints": u.endpoints.iter().map(|e| format!("{}://{}{}", e.scheme, e.authority, e.base_path)).collect::<Vec<_>>(),
        "protocol": match u.protocol { UpstreamProtocol::Auto => "auto", UpstreamProtocol::Http1 => "http1", UpstreamProtocol::Http2 => "http2" },
        "connect_timeout": format_duration(u.connect_timeout),
        "timeout": u.timeout.map(format_duration),
        "credentials": u.credentials.iter().map(|c| json!({
            "id": c.id,
            "kind": c.describe(),
            "value": "[redacted]",
            "callers": c.callers,
            "default": c.default,
        })).collect::<Vec<_>>(),
        "strip_headers": u.strip_headers.iter().map(|h| h.as_str().to_owned()).collect::<Vec<_>>(),
        "retry": u.retry.as_ref().map(|r| r.describe()),
        "circuit_breaker": u.circuit.map(|c| json!({
            "consecutive_failures": c.consecutive_failures,
            "base_ejection": format_duration(c.base_ejection),
            "max_ejection": format_duration(c.max_ejection),
        })),
        "health_check": u.health_check.as_ref().map(|h| json!({
            "path": h.path,
            "interval": format_duration(h.interval),
            "timeout": format_duration(h.timeout),
            "healthy_threshold": h.healthy_threshold,
            "unhealthy_threshold": h.unhealthy_threshold,
        })),
        "max_concurrent": u.max_concurrent,
        "quota": u.quota.as_ref().map(|q| json!({
            "limit": q.limit.describe(),
            "headers": q.dialect.name(),
            "reserve": q.reserve,
            "pause_without_reset": format_duration(q.pause_without_reset),
            "max_pause": format_duration(q.max_pause),
        })),
        "tls": {
            "extra_ca_certificates": t.ca_certs.len(),
            "system_roots": t.system_roots,
            "client_certificate": !t.client_cert.is_empty(),
            "server_name": t.server_name,
            "min_version": if t.min_13 { "1.3" } else { "1.2" },
            "pins": t.pins,
        },
    })
}

/// `GET /routes`.
pub fn routes(s: &Snapshot) -> Value {
    json!({"generation": s.generation, "routes": s.config.routes.iter().map(|r| route_view(&s.config, r)).collect::<Vec<_>>()})
}

/// `GET /upstreams`: endpoints and live figures (health checks, circuits and quotas are reported
/// here once they exist).
pub fn upstreams(s: &Snapshot) -> Value {
    let list: Vec<Value> = s
        .config
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let mut v = upstream_view(u);
            if let Some(c) = s.clients.get(i) {
                v["endpoint_state"] = json!(c.endpoint_views());
            }
            if u.quota.is_some() {
                v["accounts"] = json!(s.limiter.accounts(&u.id));
            }
            v
        })
        .collect();
    json!({"generation": s.generation, "upstreams": list})
}

/// `GET /mappings`: each mapping, the routes using it, its outcome counters and the first failure
/// reasons (what a vendor changed, the day it changed).
pub fn mappings(s: &Snapshot) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let list: Vec<Value> = s
        .config
        .mappings
        .iter()
        .map(|m| {
            let stats = m.stats.load();
            json!({
                "id": m.id,
                "file": m.origin.to_string(),
                "source": m.source,
                "target": m.target.describe(),
                "media_type": m.target.media_type(),
                "each": m.each.as_ref().map(|p| if p.is_empty() { ".[]".to_owned() } else { format!(".{}[]", p.join(".")) }),
                "routes": s.config.routes.iter().filter(|r| r.translate.as_ref().is_some_and(|t| t.mapping.id == m.id)).map(|r| r.id.as_str()).collect::<Vec<_>>(),
                "samples": m.samples.len(),
                "switched_off": m.tripped.load(Relaxed),
                "translated_records": stats.translated.load(Relaxed),
                "failed_responses": stats.failed.load(Relaxed),
                "skipped_responses": stats.skipped.load(Relaxed),
                "failures": stats.failures().into_iter().map(|(at, reason)| json!({"at": at, "reason": reason})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"generation": s.generation, "mappings": list})
}

/// `GET /config`: the effective configuration with every secret redacted.
pub fn config(s: &Snapshot) -> Value {
    let c = &s.config;
    let g = &c.gateway;
    let id = &c.identity;
    json!({
        "generation": s.generation,
        "dir": c.dir.display().to_string(),
        "gateway": {
            "listeners": g.listeners.iter().map(|l| json!({
                "name": l.name,
                "bind": l.bind.to_string(),
                "http1": l.http1,
                "http2": l.h2c,
                "tls": l.tls.as_ref().map(|t| json!({
                    "client_auth": format!("{:?}", t.client_auth).to_lowercase(),
                    "handshake_timeout": format_duration(t.handshake_timeout),
                })),
                "max_connections": l.max_connections,
            })).collect::<Vec<_>>(),
            "admin": {"bind": g.admin_bind.to_string(), "token": g.admin_token.as_ref().map(|_| "[redacted]")},
            "server_names": g.server_names,
            "limits": {
                "max_header_bytes": g.limits.max_header_bytes,
                "max_headers": g.limits.max_headers,
                "max_body": format_size(g.limits.max_body),
                "header_read_timeout": format_duration(g.limits.header_read_timeout),
                "request_timeout": format_duration(g.limits.request_timeout),
            },
            "forwarded": {"trusted_proxies": g.trusted_proxies.len()},
            "request_id": {"header": g.request_id_header.as_str(), "trust_incoming": g.trust_incoming_request_id},
            "shutdown": {"grace": format_duration(g.shutdown_grace)},
            "cluster": g.cluster_redis.as_ref().map(|r| json!({
                "redis": {
                    "url": r.url,
                    "password": r.password.as_ref().map(|_| "[redacted]"),
                    "key_prefix": r.key_prefix,
                    "timeout": format_duration(r.timeout),
                    "on_unavailable": if r.fail_open { "local" } else { "reject" },
                }
            })),
            "telemetry": {
                "access_log": g.telemetry.access_log.is_some(),
                "audit_file": g.telemetry.audit.file.as_ref().map(|f| f.display().to_string()),
                "audit_stdout": g.telemetry.audit.stdout,
            },
        },
        "callers": {
            "api_key_header": id.api_key_header.as_str(),
            "callers": id.callers.iter().enumerate().map(|(i, cd)| json!({
                "id": cd.id,
                "groups": cd.groups,
                "mtls": id.by_mtls.iter().filter(|(_, v)| **v == i).map(|(k, _)| k.clone()).collect::<Vec<_>>(),
                "api_keys": id.keys.ids_for(i),
            })).collect::<Vec<_>>(),
            "jwt": id.issuers.iter().map(|j| json!({
                "id": j.id,
                "issuer": j.issuer,
                "audiences": j.audiences,
                "jwks": match &j.source { JwksSource::Url { uri, .. } => uri.to_string(), JwksSource::File { path, .. } => path.display().to_string() },
                "algorithms": j.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>(),
                "leeway": format_duration(j.leeway),
                "max_stale": format_duration(j.max_stale),
            })).collect::<Vec<_>>(),
        },
        "upstreams": c.upstreams.iter().map(upstream_view).collect::<Vec<_>>(),
        "routes": c.routes.iter().map(|r| route_view(c, r)).collect::<Vec<_>>(),
    })
}
