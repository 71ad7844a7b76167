//! The gateway's Prometheus metrics, served on admin `/metrics`.
//!
//! Labels are bounded: route ids, upstream ids and caller ids come from config (a JWT caller not in
//! `callers.yaml` is counted as `other`), status is a class (`2xx`), never raw paths or request ids.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::audit::AuditStats;

/// A label value shared by reference count: building the labels of a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Label(pub Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(&self.0)
    }
}

/// Label values used on every request, made once.
#[derive(Debug)]
pub struct CommonLabels {
    /// `none`.
    pub none: Label,
    /// `anonymous`.
    pub anonymous: Label,
    /// `other`.
    pub other: Label,
    /// `ok`.
    pub ok: Label,
    /// `error`.
    pub error: Label,
    classes: [Label; 5],
    outcomes: Vec<Label>,
}

impl CommonLabels {
    fn new() -> CommonLabels {
        let l = |s: &str| Label(s.into());
        CommonLabels {
            none: l("none"),
            anonymous: l("anonymous"),
            other: l("other"),
            ok: l("ok"),
            error: l("error"),
            classes: [l("1xx"), l("2xx"), l("3xx"), l("4xx"), l("5xx")],
            outcomes: OUTCOMES.iter().map(|s| l(s)).collect(),
        }
    }

    /// A shared label for one of the fixed outcome words (`admitted`, `queued`, `rejected`...).
    pub fn outcome(&self, word: &str) -> Label {
        match OUTCOMES.iter().position(|o| *o == word) {
            Some(i) => self.outcomes[i].clone(),
            None => Label(word.into()),
        }
    }

    /// The label of a status class.
    pub fn class(&self, status: u16) -> Label {
        let i = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        self.classes[i].clone()
    }
}

const OUTCOMES: &[&str] = &[
    "admitted",
    "queued",
    "rejected",
    "unavailable",
    "local",
    "reject",
    "connect",
    "reset",
    "timeout",
    "status",
    "open",
    "closed",
    "half_open",
];

/// Labels of a rate-limit decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Limit id (`route:ID:caller`, `route:ID:total`, `upstream:ID`).
    pub limit: Label,
    /// `admitted`, `queued`, `rejected` or `unavailable`.
    pub outcome: Label,
}

/// Labels of a shared-store failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    /// What happened instead: `local` (counted locally) or `reject` (503).
    pub fallback: Label,
}

/// Labels of a vendor account.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    /// Upstream id.
    pub upstream: Label,
    /// Credential id.
    pub credential: Label,
}

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route id, or `none`.
    pub route: Label,
    /// Caller id, `anonymous`, or `other`.
    pub caller: Label,
    /// Upstream id, or `none`.
    pub upstream: Label,
    /// `2xx`, `4xx`...
    pub status: Label,
}

/// Labels of a request duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route id, or `none`.
    pub route: Label,
    /// Status class.
    pub status: Label,
}

/// Labels of an upstream attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Upstream id.
    pub upstream: Label,
    /// `ok` (any status) or `error`.
    pub outcome: Label,
}

/// Labels of a problem answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProblemLabels {
    /// The problem type slug.
    pub r#type: String,
}

/// Labels of a token request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    /// Credential id.
    pub credential: String,
    /// `ok` or `failed`.
    pub result: String,
}

/// Labels of a translation outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TranslationLabels {
    /// Mapping id.
    pub mapping: String,
    /// `translated`, `invalid`, `program_error`, `not_json`, `too_large`, `timeout`, `skipped`.
    pub result: String,
}

/// Labels of a cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// Route id.
    pub route: Label,
    /// `hit`, `miss`, `coalesced`, `stale`, `bypass`.
    pub result: &'static str,
}

/// Labels with only a mapping.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MappingOnly {
    /// Mapping id.
    pub mapping: String,
}

/// Labels with only a route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnly {
    /// Route id.
    pub route: Label,
}

/// Labels of a reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `failed`.
    pub result: String,
}

/// Labels of a JWKS fetch.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerLabels {
    /// Issuer id.
    pub issuer: String,
    /// `ok` or `failed`.
    pub result: String,
}

/// The rate-limit metrics, cloned into the process-wide limiter (clones share the same series).
#[derive(Debug, Clone)]
pub struct RateLimitMetrics {
    /// Decisions by limit and outcome.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Time queued requests waited.
    pub queue_wait: Histogram,
    /// Shared-store (Redis) failures, by the fallback taken.
    pub backend_errors: Family<FallbackLabels, Counter>,
    /// The vendor's last reported remaining quota per account.
    pub vendor_remaining: Family<AccountLabels, Gauge>,
    /// Pauses imposed on vendor accounts by the vendor's signals.
    pub vendor_pauses: Family<AccountLabels, Counter>,
    /// Shared label values.
    pub labels: Arc<CommonLabels>,
}

/// Labels of an endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// Upstream id.
    pub upstream: Label,
    /// Endpoint URL from config.
    pub endpoint: Label,
}

/// Labels of a retry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// Upstream id.
    pub upstream: Label,
    /// `connect`, `reset`, `timeout` or `status`.
    pub reason: Label,
}

/// Labels with only an upstream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamOnly {
    /// Upstream id.
    pub upstream: Label,
}

/// Retry, circuit, health and shedding metrics, cloned into upstream clients.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    /// Retries by upstream and reason.
    pub retries: Family<RetryLabels, Counter>,
    /// Retries refused by the retry budget.
    pub budget_exhausted: Family<UpstreamOnly, Counter>,
    /// Circuit state per endpoint: 0 closed, 1 open, 2 half-open.
    pub circuit_state: Family<EndpointLabels, Gauge>,
    /// Times an endpoint was ejected.
    pub ejections: Family<EndpointLabels, Counter>,
    /// Health-check verdict per endpoint: 1 healthy, 0 unhealthy.
    pub endpoint_healthy: Family<EndpointLabels, Gauge>,
    /// Requests refused at once by `max_concurrent`.
    pub shed: Family<UpstreamOnly, Counter>,
    /// Shared label values.
    pub labels: Arc<CommonLabels>,
}

/// All metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Shared label values.
    pub labels: CommonLabels,
    /// Finished requests.
    pub requests: Family<RequestLabels, Counter>,
    /// Request duration (arrival to end of response).
    pub request_duration: Family<RouteLabels, Histogram>,
    /// Upstream attempt duration (to response head).
    pub upstream_duration: Family<UpstreamLabels, Histogram>,
    /// Requests being served.
    pub in_flight: Gauge,
    /// Gateway-made error answers by type.
    pub problems: Family<ProblemLabels, Counter>,
    /// Calls a route's shadow policy would have denied (served anyway).
    pub shadow_denials: Family<RouteOnly, Counter>,
    /// Config reloads.
    pub reloads: Family<ResultLabels, Counter>,
    /// Current config generation.
    pub generation: Gauge,
    /// JWKS fetches.
    pub jwks_fetches: Family<IssuerLabels, Counter>,
    /// OAuth2 token requests.
    pub token_requests: Family<CredentialLabels, Counter>,
    /// Retries, circuits, health checks, shedding (handles shared with upstream clients).
    pub upstream: UpstreamMetrics,
    /// Rate limits and vendor quotas (handles shared with the limiter).
    pub ratelimit: RateLimitMetrics,
    /// Request bytes received.
    pub bytes_in: Counter,
    /// Response bytes sent.
    pub bytes_out: Counter,
    /// Translation outcomes (responses) by mapping and result.
    pub translations: Family<TranslationLabels, Counter>,
    /// Cache lookups by route and result.
    pub cache_lookups: Family<CacheLabels, Counter>,
    /// Vendor calls the cache answered instead (hits, coalesced waits, stale answers), by upstream.
    pub cache_quota_saved: Family<UpstreamOnly, Counter>,
    /// Records translated, by mapping.
    pub translated_records: Family<MappingOnly, Counter>,
    /// Time spent translating and validating one response, by mapping.
    pub translation_duration: Family<MappingOnly, Histogram>,
    audit: Arc<AuditStats>,
    tap_lagged: Counter,
}

fn duration_histogram() -> Histogram {
    // 0.5 ms .. ~33 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

impl Metrics {
    /// Registers every metric.
    pub fn new(audit: Arc<AuditStats>) -> Metrics {
        let mut registry = Registry::with_prefix("interlock");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests served, by route, caller, upstream and status class", requests.clone());
        let request_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request arrival to the end of the response",
            request_duration.clone(),
        );
        let upstream_duration =
            Family::<UpstreamLabels, Histogram>::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register(
            "upstream_attempt_duration_seconds",
            "Time from sending an upstream attempt to its response head",
            upstream_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("requests_in_flight", "Requests being served", in_flight.clone());
        let problems = Family::<ProblemLabels, Counter>::default();
        registry.register("problems", "Gateway-made error answers, by problem type", problems.clone());
        let shadow_denials = Family::<RouteOnly, Counter>::default();
        registry.register(
            "policy_shadow_denials",
            "Calls the shadow policy would deny, by route (served anyway)",
            shadow_denials.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register("config_reloads", "Config reload attempts, by result", reloads.clone());
        let generation = Gauge::default();
        registry.register("config_generation", "Generation of the config being served", generation.clone());
        let jwks_fetches = Family::<IssuerLabels, Counter>::default();
        registry.register("jwks_fetches", "JWKS fetches by issuer and result", jwks_fetches.clone());
        let token_requests = Family::<CredentialLabels, Counter>::default();
        registry.register("token_requests", "OAuth2 token requests by credential and result", token_requests.clone());
        let translations = Family::<TranslationLabels, Counter>::default();
        registry.register(
            "translations",
            "Responses a route asked to translate, by mapping and result (translated, invalid, program_error, not_json, too_large, timeout, skipped)",
            translations.clone(),
        );
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Response cache lookups by route and result (hit, miss, coalesced, stale, bypass)",
            cache_lookups.clone(),
        );
        let cache_quota_saved = Family::<UpstreamOnly, Counter>::default();
        registry.register(
            "cache_quota_saved",
            "Vendor calls answered from the cache instead (vendor quota not spent), by upstream",
            cache_quota_saved.clone(),
        );
        let translated_records = Family::<MappingOnly, Counter>::default();
        registry.register(
            "translated_records",
            "Records translated and validated, by mapping",
            translated_records.clone(),
        );
        let translation_duration = Family::<MappingOnly, Histogram>::new_with_constructor(|| {
            // 10 µs .. ~0.65 s
            Histogram::new(exponential_buckets(0.00001, 2.0, 17))
        });
        registry.register(
            "translation_duration_seconds",
            "Time to translate and validate one response, by mapping",
            translation_duration.clone(),
        );
        let ratelimit_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "ratelimit_decisions",
            "Rate-limit decisions by limit and outcome (admitted, queued, rejected, unavailable)",
            ratelimit_decisions.clone(),
        );
        let ratelimit_queue_wait = duration_histogram();
        registry.register(
            "ratelimit_queue_wait_seconds",
            "Time queued requests waited for their rate limit",
            ratelimit_queue_wait.clone(),
        );
        let ratelimit_backend_errors = Family::<FallbackLabels, Counter>::default();
        registry.register(
            "ratelimit_backend_errors",
            "Shared rate-limit store (Redis) failures, by fallback (local or reject)",
            ratelimit_backend_errors.clone(),
        );
        let vendor_quota_remaining = Family::<AccountLabels, Gauge>::default();
        registry.register(
            "vendor_quota_remaining",
            "Remaining quota the vendor last reported, per upstream and credential",
            vendor_quota_remaining.clone(),
        );
        let vendor_quota_pauses = Family::<AccountLabels, Counter>::default();
        registry.register(
            "vendor_quota_pauses",
            "Times a vendor account was paused on the vendor's rate-limit signal",
            vendor_quota_pauses.clone(),
        );
        let upstream = UpstreamMetrics {
            retries: Family::default(),
            budget_exhausted: Family::default(),
            circuit_state: Family::default(),
            ejections: Family::default(),
            endpoint_healthy: Family::default(),
            shed: Family::default(),
            labels: Arc::new(CommonLabels::new()),
        };
        registry.register("upstream_retries", "Upstream retries by upstream and reason", upstream.retries.clone());
        registry.register(
            "upstream_retry_budget_exhausted",
            "Retries not made because the upstream's retry budget was spent",
            upstream.budget_exhausted.clone(),
        );
        registry.register(
            "upstream_circuit_state",
            "Circuit state per endpoint: 0 closed, 1 open (ejected), 2 half-open",
            upstream.circuit_state.clone(),
        );
        registry.register("upstream_ejections", "Times an endpoint's circuit opened", upstream.ejections.clone());
        registry.register(
            "upstream_endpoint_healthy",
            "Active health-check verdict per endpoint: 1 healthy, 0 unhealthy",
            upstream.endpoint_healthy.clone(),
        );
        registry.register(
            "upstream_shed",
            "Requests refused at once because the upstream's max_concurrent was reached",
            upstream.shed.clone(),
        );
        let bytes_in = Counter::default();
        registry.register("request_bytes", "Request body bytes received", bytes_in.clone());
        let bytes_out = Counter::default();
        registry.register("response_bytes", "Response body bytes sent", bytes_out.clone());
        let tap_lagged = Counter::default();
        registry.register("tap_dropped_lines", "Tap lines a slow reader missed", tap_lagged.clone());
        Metrics {
            registry,
            labels: CommonLabels::new(),
            requests,
            request_duration,
            upstream_duration,
            in_flight,
            problems,
            shadow_denials,
            reloads,
            generation,
            jwks_fetches,
            token_requests,
            upstream,
            ratelimit: RateLimitMetrics {
                decisions: ratelimit_decisions,
                queue_wait: ratelimit_queue_wait,
                backend_errors: ratelimit_backend_errors,
                vendor_remaining: vendor_quota_remaining,
                vendor_pauses: vendor_quota_pauses,
                labels: Arc::new(CommonLabels::new()),
            },
            bytes_in,
            bytes_out,
            translations,
            cache_lookups,
            cache_quota_saved,
            translated_records,
            translation_duration,
            audit,
            tap_lagged,
        }
    }

    /// Counts tap lines a reader missed.
    pub fn tap_lagged(&self, n: u64) {
        self.tap_lagged.inc_by(n);
    }

    /// The text exposition (Prometheus/OpenMetrics text format).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        // The audit counters live in the audit writer; exposed here as plain counters.
        let w = self.audit.written.load(Ordering::Relaxed);
        let d = self.audit.dropped.load(Ordering::Relaxed);
        out.push_str(&format!(
            "# HELP interlock_audit_records Audit records written.\n# TYPE interlock_audit_records counter\ninterlock_audit_records_total {w}\n\
             # HELP interlock_audit_records_dropped Audit records that could not be written (should stay 0).\n# TYPE interlock_audit_records_dropped counter\ninterlock_audit_records_dropped_total {d}\n"
        ));
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}

/// `2xx`, `3xx`, `4xx` or `5xx`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
