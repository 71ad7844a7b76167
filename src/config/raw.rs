//! The serde shapes of the YAML files in `policies/`, exactly as written.
//!
//! Nothing here is checked beyond YAML types: the compiler (`compile.rs`) turns these into the typed
//! [`Config`](super::Config). Values that can be wrong in ways serde cannot see (durations, sizes,
//! URLs, ids that must exist) are [`Sp`] so their errors can name a line. The JSON Schema published by
//! `interlock schema` is derived from these types.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;

use super::yaml::Sp;

/// A duration written as `250ms`, `15s`, `1m`, `1h` or `1d`.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct DurationText(pub String);

impl JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(0|[0-9]+(ms|s|m|h|d))$",
            "description": "A duration: a whole number and a unit (ms, s, m, h, d), e.g. `250ms`, `15s`, `1m`."
        })
    }
}

/// A size written as `512B`, `32KiB`, `10MiB`, `1GiB` (or decimal `KB`, `MB`, `GB`).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct SizeText(pub String);

impl JsonSchema for SizeText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(B|KiB|MiB|GiB|KB|MB|GB)?$",
            "description": "A size in bytes with an optional unit, e.g. `32KiB`, `10MiB`."
        })
    }
}

/// `gateway.yaml`: listeners, admin, limits and process-wide settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawGateway {
    /// Plain-HTTP (HTTP/1.1 and h2c) listeners for tool traffic.
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    /// The admin listener (health, readiness, reload, config status). Never shares a data-plane port.
    pub admin: Option<RawAdmin>,
    /// Host names this gateway answers for; an HTTP/1.1 absolute-form target naming any other host is rejected.
    #[serde(default)]
    pub server_names: Vec<Sp<String>>,
    /// Request limits applied before anything is forwarded.
    pub limits: Option<RawLimits>,
    /// `Forwarded` / `X-Forwarded-*` handling.
    pub forwarded: Option<RawForwarded>,
    /// Request id generation and propagation.
    pub request_id: Option<RawRequestId>,
    /// Graceful shutdown.
    pub shutdown: Option<RawShutdown>,
    /// Process log output.
    pub log: Option<RawLog>,
    /// Tokio runtime sizing (read at start-up only).
    pub runtime: Option<RawRuntime>,
    /// Hot reload behaviour.
    pub reload: Option<RawReload>,
    /// Access log and audit trail (read at start-up).
    pub telemetry: Option<RawTelemetry>,
    /// State shared between replicas (rate limits and vendor quotas in Redis).
    pub cluster: Option<RawCluster>,
    /// The response cache (routes opt in with their own `cache`).
    pub cache: Option<RawGatewayCache>,
}

/// `cache` in gateway.yaml.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawGatewayCache {
    /// Memory for cached responses, all routes together (default `64MiB`; read at start-up).
    pub max_bytes: Option<Sp<SizeText>>,
}

/// `cluster`: what replicas share.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawCluster {
    /// Count shared limits (vendor-account quotas by default) in Redis.
    pub redis: Option<RawRedis>,
}

/// `cluster.redis`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://host:6379/0` or `rediss://...` (TLS); no password in the URL.
    pub url: Sp<String>,
    /// The password: `env:NAME` or `file:path`.
    pub password: Option<Sp<String>>,
    /// Prefix of every key. Default `interlock`.
    pub key_prefix: Option<Sp<String>>,
    /// Time allowed per command and per connection attempt. Default `100ms`.
    pub timeout: Option<Sp<DurationText>>,
    /// While Redis is unreachable: `local` (count on this replica; default) or `reject` (503).
    pub on_unavailable: Option<Sp<String>>,
}

/// A window of a limit: `4/1m`, or `{ limit: 4, per: 1m, burst: 2 }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawWindow {
    /// `LIMIT/PERIOD`, e.g. `100/1s`, `500/1d`.
    Short(String),
    /// The full form.
    Full(RawWindowFull),
}

/// A window in full.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct RawWindowFull {
    /// Requests per period.
    pub limit: u64,
    /// The period.
    pub per: DurationText,
    /// Requests that may go at once after a quiet period. Default: `limit`.
    pub burst: Option<u64>,
}

/// What happens when a limit is exhausted: `reject` (429 at once; default) or
/// `{ queue: 20s, max_queued: 100 }` (wait up to 20 s, in order; at most 100 waiting).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawExhausted {
    /// `reject`.
    Word(String),
    /// Queue.
    Queue(RawQueue),
}

/// Queueing.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    /// The longest a request waits.
    pub queue: DurationText,
    /// Requests waiting per key on one replica; more are refused at once. Default 100.
    pub max_queued: Option<u64>,
}

/// A route's `rate_limit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Windows applied to each caller separately (anonymous callers: per client address).
    #[serde(default)]
    pub per_caller: Vec<Sp<RawWindow>>,
    /// Windows applied to all calls of the route together.
    #[serde(default)]
    pub total: Vec<Sp<RawWindow>>,
    /// `reject` (default) or `{ queue: 20s, max_queued: 100 }`.
    pub on_exhausted: Option<Sp<RawExhausted>>,
    /// Count in `cluster.redis` (across replicas). Default false.
    pub shared: Option<bool>,
}

/// An upstream's `quota`: the vendor account's limits and how the vendor signals its own.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawQuota {
    /// Windows per vendor account (per credential), shared by every route and caller using it.
    #[serde(default)]
    pub limits: Vec<Sp<RawWindow>>,
    /// `reject` (default) or `{ queue: 20s, max_queued: 100 }`.
    pub on_exhausted: Option<Sp<RawExhausted>>,
    /// The vendor's rate-limit headers: `none` (default; `Retry-After` only), `ietf`, `x-ratelimit`,
    /// `okta`, `crowdstrike`.
    pub headers: Option<Sp<String>>,
    /// Stop sending while the vendor reports this many or fewer requests remaining. Default 0.
    pub reserve: Option<u64>,
    /// Pause after a 429 without `Retry-After`, or "remaining 0" without a reset. Default `1s`.
    pub pause_without_reset: Option<Sp<DurationText>>,
    /// The longest pause a vendor signal can impose. Default `15m`.
    pub max_pause: Option<Sp<DurationText>>,
    /// Count in `cluster.redis` (across replicas) when configured. Default true.
    pub shared: Option<bool>,
}

/// Access log and audit trail.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawTelemetry {
    /// One JSON line per request.
    pub access_log: Option<RawAccessLog>,
    /// The hash-chained audit trail.
    pub audit: Option<RawAudit>,
    /// OpenTelemetry traces over OTLP/HTTP.
    pub tracing: Option<RawTracing>,
}

/// Trace export.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawTracing {
    /// OTLP/HTTP traces endpoint, e.g. `http://otel-collector:4318/v1/traces`.
    pub endpoint: Sp<String>,
    /// Extra headers for the collector; values are secret references (`env:`/`file:`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Sp<String>>,
    /// Fraction of new traces to sample, 0.0..=1.0 (a caller's sampled flag is kept). Default 1.0.
    pub sampling: Option<Sp<f64>>,
    /// `service.name`. Default `interlock`.
    pub service_name: Option<Sp<String>>,
    /// Export timeout. Default `10s`.
    pub timeout: Option<Sp<DurationText>>,
}

/// Access log.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawAccessLog {
    /// Default false.
    pub enabled: Option<bool>,
    /// `stdout` (default), `stderr`, or a file path.
    pub output: Option<Sp<String>>,
    /// Fields to include (default: all), e.g. `[time, request_id, caller, route, status, duration_ms]`.
    pub fields: Option<Vec<Sp<String>>>,
}

/// Audit trail.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawAudit {
    /// File to append records to (rotated segments sit beside it).
    pub file: Option<Sp<String>>,
    /// Also write records to stdout. Default false.
    pub stdout: Option<bool>,
    /// `always`, `never`, or an interval such as `1s` (default).
    pub fsync: Option<Sp<String>>,
    /// Start a new, linked segment when the file passes this size. Default: never.
    pub rotate_size: Option<Sp<SizeText>>,
    /// Add each call as an OCSF 1.8 API Activity (6003) event to its record. Default false.
    pub ocsf: Option<bool>,
}

/// One data-plane listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawListener {
    /// Name used in logs and metrics.
    pub name: Option<Sp<String>>,
    /// Socket address to bind, e.g. `0.0.0.0:8080` or `127.0.0.1:8080`.
    pub bind: Sp<String>,
    /// Maximum concurrent connections; further clients wait in the kernel backlog.
    pub max_connections: Option<Sp<u64>>,
    /// Protocols served: `http1` and `h2c` (HTTP/2 prior knowledge) on plain listeners, `http1` and
    /// `h2` (by ALPN) on TLS listeners. Default both.
    pub protocols: Option<Vec<Sp<String>>>,
    /// TLS termination; absent = plain HTTP.
    pub tls: Option<RawListenerTls>,
}

/// TLS on a listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawListenerTls {
    /// Server certificates; the first is the default, the others are chosen by SNI.
    pub certificates: Vec<RawServerCert>,
    /// Lowest TLS version: `"1.2"` (default) or `"1.3"`.
    pub min_version: Option<Sp<String>>,
    /// Time a client has to complete the handshake. Default `10s`.
    pub handshake_timeout: Option<Sp<DurationText>>,
    /// Client certificates: `off` (default), `optional` or `required`.
    pub client_auth: Option<Sp<String>>,
    /// PEM bundle of CAs that issue client certificates (needed unless `client_auth: off`).
    pub client_ca: Option<Sp<String>>,
    /// PEM files of certificate revocation lists for client certificates.
    #[serde(default)]
    pub crl: Vec<Sp<String>>,
}

/// One server certificate and its key.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawServerCert {
    /// PEM certificate chain (leaf first), relative to the policies directory.
    pub cert: Sp<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Sp<String>,
    /// SNI names this certificate answers for; default: the DNS names in the certificate.
    pub names: Option<Vec<Sp<String>>>,
}

/// `callers.yaml`: who the callers are and how they prove it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawCallers {
    /// Interlock-issued API keys.
    pub api_keys: Option<RawApiKeys>,
    /// Identity providers whose JWTs are accepted.
    #[serde(default)]
    pub jwt: Vec<RawJwtIssuer>,
    /// Known callers.
    #[serde(default)]
    pub callers: Vec<RawCaller>,
}

/// API key settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawApiKeys {
    /// Request header carrying the key. Default `x-api-key`.
    pub header: Option<Sp<String>>,
}

/// One JWT issuer (identity provider).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawJwtIssuer {
    /// Name used in logs and caller records.
    pub id: Sp<String>,
    /// Required `iss` claim.
    pub issuer: Sp<String>,
    /// Accepted `aud` values; when set, tokens must carry one of them.
    #[serde(default)]
    pub audiences: Vec<Sp<String>>,
    /// JWKS URL (https, or http on loopback).
    pub jwks_url: Option<Sp<String>>,
    /// JWKS file, relative to the policies directory (re-read on reload).
    pub jwks_file: Option<Sp<String>>,
    /// Extra CA bundle for the JWKS URL.
    pub ca: Option<Sp<String>>,
    /// Accepted algorithms. Default `[RS256, ES256]`. `none` and HMAC are never accepted.
    pub algorithms: Option<Vec<Sp<String>>>,
    /// Clock skew allowed for `exp`/`nbf`. Default `5s`, at most `30s`.
    pub leeway: Option<Sp<DurationText>>,
    /// Background JWKS refresh interval. Default `10m`.
    pub refresh: Option<Sp<DurationText>>,
    /// Minimum time between refetches caused by an unknown `kid`. Default `30s`.
    pub refetch_interval: Option<Sp<DurationText>>,
    /// How long the last fetched JWKS keeps working while the IdP is unreachable. Default `24h`.
    pub max_stale: Option<Sp<DurationText>>,
    /// Claim holding the caller id. Default `sub`.
    pub caller_claim: Option<Sp<String>>,
    /// Claim holding the caller's groups (array, or space-separated string). Default `groups`.
    pub groups_claim: Option<Sp<String>>,
}

/// One caller.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawCaller {
    /// Caller id, used by policies, logs and audit.
    pub id: Sp<String>,
    /// Groups the caller belongs to.
    #[serde(default)]
    pub groups: Vec<Sp<String>>,
    /// Client-certificate identities (SPIFFE URI, DNS name or CN) that are this caller.
    #[serde(default)]
    pub mtls: Vec<Sp<String>>,
    /// API keys of this caller, stored as hashes.
    #[serde(default)]
    pub api_keys: Vec<RawApiKey>,
}

/// A stored API key (only its hash).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawApiKey {
    /// Key id for logs and audit (never the key).
    pub id: Sp<String>,
    /// `sha256:<64 hex>` of the key, as printed by `interlock keys new`.
    pub hash: Sp<String>,
}

/// The admin listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawAdmin {
    /// Socket address; default `127.0.0.1:9901`.
    pub bind: Option<Sp<String>>,
    /// Bearer token required on every admin endpoint except `/healthz` and `/readyz`:
    /// `env:NAME` or `file:path`.
    pub token: Option<Sp<String>>,
}

/// Limits on what a client may send.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawLimits {
    /// Total bytes of request header names and values; more → 431. Default `32KiB`.
    pub max_header_bytes: Option<Sp<SizeText>>,
    /// Number of request header fields; more → 431. Default `100`.
    pub max_headers: Option<Sp<u64>>,
    /// Request body size; more → 413. Default `10MiB`. Routes may lower or raise it.
    pub max_body: Option<Sp<SizeText>>,
    /// Time a client has to send the whole request head; slower → connection closed. Default `10s`.
    pub header_read_timeout: Option<Sp<DurationText>>,
    /// Time from request arrival to the upstream's response head; longer → 504. Default `60s`.
    pub request_timeout: Option<Sp<DurationText>>,
}

/// Trust of incoming forwarding headers.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawForwarded {
    /// Peers (IP or CIDR) whose `Forwarded`/`X-Forwarded-*` headers are kept and appended to.
    /// From any other peer they are removed and rebuilt. Default: trust no one.
    #[serde(default)]
    pub trusted_proxies: Vec<Sp<String>>,
}

/// Request id handling.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawRequestId {
    /// Header carrying the id in and out. Default `x-request-id`.
    pub header: Option<Sp<String>>,
    /// Keep a well-formed id sent by the client (≤128 chars of `A-Za-z0-9._:-`). Default true.
    pub trust_incoming: Option<bool>,
}

/// Graceful shutdown.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawShutdown {
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT. Default `30s`.
    pub grace: Option<Sp<DurationText>>,
}

/// Process logs.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawLog {
    /// `json` (default) or `pretty`.
    pub format: Option<Sp<String>>,
    /// Filter such as `info` or `interlock=debug,hyper=warn`. `INTERLOCK_LOG` overrides it.
    pub level: Option<Sp<String>>,
}

/// Runtime sizing.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawRuntime {
    /// Worker threads; 0 or absent = one per CPU core.
    pub worker_threads: Option<Sp<u64>>,
}

/// Hot reload.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawReload {
    /// Watch the policies directory and reload on change. Default true.
    pub watch: Option<bool>,
    /// Quiet period after the last file change before reloading. Default `250ms`.
    pub debounce: Option<Sp<DurationText>>,
}

/// `upstreams/<id>.yaml`: one vendor API.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawUpstream {
    /// Unique id, referenced by routes.
    pub id: Sp<String>,
    /// Marks the file as a development fixture: inline secrets are then allowed.
    #[serde(default)]
    pub dev_fixture: bool,
    /// Base URLs (`https://api.vendor.com/v3`); requests are balanced over them (power of two choices).
    pub endpoints: Vec<Sp<String>>,
    /// Upstream protocol: `auto` (ALPN on https, HTTP/1.1 on http; default), `http1`, `http2`.
    pub protocol: Option<Sp<String>>,
    /// TLS to the upstream.
    pub tls: Option<RawUpstreamTls>,
    /// TCP connect timeout. Default `5s`.
    pub connect_timeout: Option<Sp<DurationText>>,
    /// Time to the upstream's response head, overriding the gateway's `request_timeout`.
    pub timeout: Option<Sp<DurationText>>,
    /// Connection pool.
    pub pool: Option<RawPool>,
    /// The credential the gateway injects (callers never hold it).
    pub credential: Option<RawCredential>,
    /// Several credentials (one per vendor tenant/account), chosen per caller.
    #[serde(default)]
    pub credentials: Vec<RawCredential>,
    /// Extra request headers removed before forwarding (e.g. a vendor key header a tool might still send).
    #[serde(default)]
    pub strip_headers: Vec<Sp<String>>,
    /// The vendor account quota (per credential) and pacing from the vendor's rate-limit headers.
    pub quota: Option<RawQuota>,
    /// Retries (routes may override any field). Absent: no retries.
    pub retry: Option<RawRetry>,
    /// Ejecting endpoints after consecutive failures. Absent: off.
    pub circuit_breaker: Option<RawCircuitBreaker>,
    /// Active health checks of each endpoint. Absent: off.
    pub health_check: Option<RawHealthCheck>,
    /// Requests in flight to this upstream (all endpoints) beyond which new ones get 503 at once.
    pub max_concurrent: Option<Sp<u64>>,
}

/// `retry`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts in total, the first included. Default 2.
    pub attempts: Option<Sp<u64>>,
    /// What is retried: `connect`, `reset`, `timeout` and status codes. Default
    /// `[connect, reset, 502, 503, 504, 429]`.
    pub on: Option<Vec<Sp<RawRetryOn>>>,
    /// Exponential back-off with full jitter.
    pub backoff: Option<RawBackoff>,
    /// Deadline of one attempt, within the route's `timeout`. Default: none (only the route's).
    pub per_try_timeout: Option<Sp<DurationText>>,
    /// 429/503 answers whose `Retry-After` is longer are not retried. Default `5s`.
    pub max_retry_after: Option<Sp<DurationText>>,
    /// Request bodies up to this size are kept to be sent again; larger are never retried. Default `64KiB`.
    pub replay_body: Option<Sp<SizeText>>,
    /// Retry POST/PATCH too when the request carries an `Idempotency-Key`. Default false.
    pub non_idempotent: Option<bool>,
    /// The upstream's retry budget (upstream only).
    pub budget: Option<RawBudget>,
}

/// A retry condition: `connect`, `reset`, `timeout` or a status code.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawRetryOn {
    /// A status code, e.g. 503.
    Code(u16),
    /// `connect`, `reset` or `timeout`.
    Word(String),
}

/// `retry.backoff`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawBackoff {
    /// First back-off cap. Default `25ms`.
    pub base: Option<Sp<DurationText>>,
    /// Largest back-off. Default `250ms`.
    pub max: Option<Sp<DurationText>>,
}

/// `retry.budget`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawBudget {
    /// Retries per request allowed. Default 0.2.
    pub ratio: Option<Sp<f64>>,
    /// Retries per second always allowed. Default 10.
    pub min_per_second: Option<Sp<f64>>,
    /// Counting window. Default `10s`.
    pub window: Option<Sp<DurationText>>,
}

/// `circuit_breaker`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawCircuitBreaker {
    /// Consecutive failures (5xx, connect errors, timeouts) that eject an endpoint. Default 5.
    pub consecutive_failures: Option<Sp<u64>>,
    /// First ejection; doubles with each ejection in a row. Default `30s`.
    pub base_ejection: Option<Sp<DurationText>>,
    /// Longest ejection. Default `5m`.
    pub max_ejection: Option<Sp<DurationText>>,
}

/// `health_check`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// Path after the endpoint's base path, e.g. `/health`.
    pub path: Sp<String>,
    /// Time between checks. Default `10s`.
    pub interval: Option<Sp<DurationText>>,
    /// Deadline of one check. Default `2s`.
    pub timeout: Option<Sp<DurationText>>,
    /// Consecutive passes that make an endpoint healthy again. Default 2.
    pub healthy_threshold: Option<Sp<u64>>,
    /// Consecutive failures that make an endpoint unhealthy. Default 3.
    pub unhealthy_threshold: Option<Sp<u64>>,
}

/// Upstream TLS.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// PEM file of extra CA certificates to trust (path relative to the policies directory).
    pub ca: Option<Sp<String>>,
    /// Also trust the operating system's roots. Default true.
    pub system_roots: Option<bool>,
    /// Client certificate (PEM chain) for upstream mTLS.
    pub client_cert: Option<Sp<String>>,
    /// Key of the client certificate.
    pub client_key: Option<Sp<String>>,
    /// Server name to send (SNI) and verify, instead of the endpoint's host.
    pub server_name: Option<Sp<String>>,
    /// Lowest TLS version: `"1.2"` (default) or `"1.3"`.
    pub min_version: Option<Sp<String>>,
    /// Accepted SPKI pins, `sha256/<base64>` of the server certificate's public key (opt-in).
    #[serde(default)]
    pub pins: Vec<Sp<String>>,
}

/// Upstream connection pool.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawPool {
    /// Idle connections are closed after this. Default `90s`.
    pub idle_timeout: Option<Sp<DurationText>>,
    /// Idle connections kept per endpoint. Default 256.
    pub max_idle_per_host: Option<Sp<u64>>,
}

/// A static credential injected as a header.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawCredential {
    /// Credential id shown in logs and audit (never the value). Default: the upstream id.
    pub id: Option<Sp<String>>,
    /// Header kind: the header to set, e.g. `x-apikey` or `authorization` (with `value`).
    pub header: Option<Sp<String>>,
    /// Header or query kind: secret reference `env:NAME` or `file:path` (inline only in dev fixtures).
    pub value: Option<Sp<String>>,
    /// Header kind: text put before the secret, e.g. `"Bearer "`, `"Token "`.
    pub prefix: Option<Sp<String>>,
    /// HTTP Basic: `{ username: ..., password: env:... }` (the username may be literal).
    pub basic: Option<RawBasic>,
    /// Query parameter kind: the parameter name (with `value`), e.g. `apikey`.
    pub query: Option<Sp<String>>,
    /// Several headers at once (vendors wanting a key id and a secret): name → secret reference.
    pub headers: Option<std::collections::BTreeMap<String, Sp<String>>>,
    /// OAuth2 client credentials: the gateway mints, caches and refreshes the bearer token.
    pub oauth2: Option<RawOAuth2>,
    /// With several `credentials`: the callers that use this one.
    #[serde(default)]
    pub callers: Vec<Sp<String>>,
    /// With several `credentials`: used by callers not listed anywhere. Default false.
    #[serde(default)]
    pub default: bool,
}

/// OAuth2 client-credentials settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawOAuth2 {
    /// Token endpoint, e.g. `https://api.crowdstrike.com/oauth2/token`.
    pub token_url: Sp<String>,
    /// Client id (literal, or a secret reference).
    pub client_id: Sp<String>,
    /// Client secret: a secret reference.
    pub client_secret: Sp<String>,
    /// Scopes (sent space-separated).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `audience` parameter (Auth0, Okta custom authorization servers).
    pub audience: Option<String>,
    /// `resource` parameter (Azure AD v1, RFC 8707).
    pub resource: Option<String>,
    /// Extra form parameters (e.g. CrowdStrike `member_cid`).
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// `basic` (default) or `body`: how the client authenticates at the token endpoint.
    pub client_auth: Option<Sp<String>>,
    /// Refresh this long before the token expires. Default `60s`.
    pub refresh_before: Option<Sp<DurationText>>,
    /// `fail_closed` (default) or `use_expired` when the token expired and no new one can be had.
    pub on_outage: Option<Sp<String>>,
    /// With `on_outage: use_expired`: for how long past expiry. Default `5m`.
    pub use_expired_for: Option<Sp<DurationText>>,
    /// Extra CA bundle for the token endpoint.
    pub ca: Option<Sp<String>>,
}

/// HTTP Basic credential.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawBasic {
    /// User name (literal, or a secret reference).
    pub username: Sp<String>,
    /// Password: a secret reference.
    pub password: Sp<String>,
}

/// One route of a `routes/*.yaml` file (each file holds a list).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique id, used in logs, metrics and errors.
    pub id: Sp<String>,
    /// What requests this route takes.
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    /// Upstream id to forward to.
    pub upstream: Sp<String>,
    /// Path on the upstream, appended to its base path: `{name}` inserts a captured segment, `**` the
    /// rest of a prefix match. Absent: the request path unchanged.
    pub rewrite: Option<Sp<String>>,
    /// Allow `Upgrade` (e.g. WebSocket) on this route. Default false.
    #[serde(default)]
    pub upgrade: bool,
    /// Serve callers that present no identity. Default false: such requests get 401.
    #[serde(default)]
    pub anonymous: bool,
    /// `required`: refuse calls (503) while the audit trail cannot be written. Default `best_effort`.
    pub audit: Option<Sp<String>>,
    /// Who may call: any matching rule allows (deny by default).
    #[serde(default)]
    pub allow: Vec<Sp<RawRule>>,
    /// Who may not: a matching rule denies, whatever `allow` says.
    #[serde(default)]
    pub deny: Vec<Sp<RawRule>>,
    /// A stricter policy being rolled out: evaluated and reported ("would deny"), never enforced.
    pub shadow: Option<RawShadow>,
    /// Use this credential of the upstream for every caller of the route (overrides caller selection).
    pub credential: Option<Sp<String>>,
    /// Time to the upstream's response head; overrides the upstream and gateway.
    pub timeout: Option<Sp<DurationText>>,
    /// Request body limit for this route.
    pub max_body: Option<Sp<SizeText>>,
    /// Rate limits of this route (per caller and in total).
    pub rate_limit: Option<RawRateLimit>,
    /// Retry settings overriding the upstream's, field by field.
    pub retry: Option<RawRetry>,
    /// Translate successful JSON responses with a mapping (`policies/mappings/`).
    pub translate: Option<RawTranslate>,
    /// Answer repeated lookups from the response cache.
    pub cache: Option<RawRouteCache>,
}

/// A route's `cache`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawRouteCache {
    /// Lifetime of a stored answer when the vendor gives none (default `5m`).
    pub ttl: Option<Sp<DurationText>>,
    /// Longest lifetime, the vendor's `max-age` included (default `1h`).
    pub max_ttl: Option<Sp<DurationText>>,
    /// Share answers between callers using the same vendor credential (default `false`: per caller).
    pub shared: Option<bool>,
    /// Methods answered from the cache (default `[GET, HEAD]`; `POST` needs `body_key`).
    pub methods: Option<Vec<Sp<String>>>,
    /// Statuses stored (default `[200, 203, 404]`; 404 only with `negative_ttl`).
    pub statuses: Option<Vec<Sp<u16>>>,
    /// Request headers that select different answers (part of the key).
    pub vary: Option<Vec<Sp<String>>>,
    /// Key POST lookups by their JSON body (canonicalised), read up to this size (e.g. `64KiB`).
    pub body_key: Option<Sp<SizeText>>,
    /// Lifetime of negative answers (404); default `0`: not stored.
    pub negative_ttl: Option<Sp<DurationText>>,
    /// How long past its lifetime an answer may stand in when the vendor fails (default `0`).
    pub stale_if_error: Option<Sp<DurationText>>,
    /// Largest answer stored (default `1MiB`); larger ones stream through.
    pub max_entry: Option<Sp<SizeText>>,
    /// A caller's `Cache-Control: no-cache`: `bypass` (default: fetch anew) or `ignore`.
    pub client_no_cache: Option<Sp<String>>,
    /// Store regardless of the vendor's `Cache-Control`, with the reason why (`Set-Cookie` still prevents it).
    #[serde(rename = "override")]
    pub override_reason: Option<Sp<String>>,
    /// Also keep answers in Redis (`cluster.redis`), for every replica; `shared` routes only.
    pub redis: Option<Sp<bool>>,
}

/// A route's `translate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawTranslate {
    /// The mapping id.
    pub mapping: Sp<String>,
    /// `accept` (default: only when the client's `Accept` asks for the target media type) or `always`.
    pub when: Option<Sp<String>>,
    /// Largest vendor body read for translation; larger bodies pass untranslated. Default `16MiB`.
    pub max_body: Option<Sp<SizeText>>,
    /// `raw` (default: the vendor payload with `Interlock-Translation: invalid; ...`) or `strict` (502).
    pub on_invalid: Option<Sp<String>>,
    /// Longest a translation may run; past it the response is treated as invalid and the mapping is
    /// switched off until the next reload (a program that loops). Default `2s`.
    pub timeout: Option<Sp<DurationText>>,
}

/// A `mappings/*.yaml` file: one mapping from a vendor payload to a common schema.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawMapping {
    /// Unique id, named by routes.
    pub id: Sp<String>,
    /// The payload it reads.
    pub source: RawMappingSource,
    /// What it produces.
    pub target: Sp<RawMappingTarget>,
    /// Path to the list of records in the response (`.resources[]`, `.value[]`, `.[]` for a bare array).
    /// Absent: the whole response is one record.
    pub each: Option<Sp<String>>,
    /// With `each`: `keep` (default) the response around the list, or `drop` it and answer the bare list.
    pub envelope: Option<Sp<String>>,
    /// The jq program, run once per record; it must produce exactly one value.
    pub program: Option<Sp<String>>,
    /// Or a file holding the program (relative to the mapping file).
    pub program_file: Option<Sp<String>>,
    /// Sample vendor payloads and the expected translations (`interlock test`).
    #[serde(default)]
    pub samples: Vec<Sp<RawSample>>,
}

/// A mapping's `source`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawMappingSource {
    /// `crowdstrike`.
    pub vendor: Sp<String>,
    /// `alerts`.
    pub api: Sp<String>,
    /// `v2`.
    pub version: Option<Sp<String>>,
}

/// A mapping's `target`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawMappingTarget {
    /// `ocsf`, `ecs` or `stix`.
    pub schema: Sp<String>,
    /// `1.8.0` (OCSF), `8.17` (ECS), `2.1` (STIX).
    pub version: Option<Sp<String>>,
    /// OCSF event class name (`detection_finding`), or a list when the program picks the class per
    /// record (`[authentication, account_change]`).
    pub class: Option<RawClasses>,
}

/// One OCSF class name or several.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawClasses {
    /// `detection_finding`.
    One(Sp<String>),
    /// `[authentication, account_change]`.
    Many(Vec<Sp<String>>),
}

/// One sample.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawSample {
    /// A vendor response body (relative to the mapping file).
    pub input: String,
    /// The expected translation.
    pub expected: String,
}

/// A policy rule: `caller:ID`, `group:NAME`, `anyone`, or a mapping that can also narrow methods
/// and paths.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawRule {
    /// `caller:soar`, `group:enrichment` or `anyone`.
    Short(String),
    /// The full form.
    Full(RawRuleFull),
}

/// A rule in full.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct RawRuleFull {
    /// Caller ids.
    #[serde(default)]
    pub callers: Vec<String>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Anyone, including unidentified callers (on `anonymous` routes).
    #[serde(default)]
    pub anyone: bool,
    /// Only these methods.
    pub methods: Option<Vec<String>>,
    /// Only paths matching this template (e.g. `/edr/hosts/{id}/contain`).
    pub path: Option<String>,
}

/// A shadow policy.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawShadow {
    /// Candidate allow rules.
    #[serde(default)]
    pub allow: Vec<Sp<RawRule>>,
    /// Candidate deny rules.
    #[serde(default)]
    pub deny: Vec<Sp<RawRule>>,
}

/// Route match.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawMatch {
    /// Path template: literal segments, `{name}` captures one segment, a final `**` matches the rest.
    pub path: Sp<String>,
    /// Methods; absent = any except CONNECT.
    pub methods: Option<Vec<Sp<String>>>,
    /// Host (`api.example.com` or `*.example.com`); absent = any host.
    pub host: Option<Sp<String>>,
}
