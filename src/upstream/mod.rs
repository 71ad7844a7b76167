//! The pooled upstream client and the error type that says who failed and whether a retry is safe.
//!
//! One [`UpstreamClient`] per upstream holds a hyper-util pooled client over rustls (ring provider,
//! TLS 1.2/1.3, system roots plus the upstream's CA file) and spreads requests over the upstream's
//! endpoints in turn. Clients survive reloads when the transport settings are unchanged, so a reload
//! keeps warm connections. This module never builds HTTP answers: the proxy's rescue does.

pub mod resilience;

use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};

use crate::telemetry::metrics::{EndpointLabels, Label, UpstreamMetrics};

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Endpoint, Upstream, UpstreamProtocol};
use crate::proxy::body::{BodyLimitExceeded, RequestBody};

/// Which side caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The vendor API or the network to it.
    Upstream,
    /// The calling tool (e.g. its body stream broke).
    Downstream,
}

/// What went wrong talking to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamErrorKind {
    /// No connection could be made; nothing was sent.
    Connect,
    /// The upstream did not answer in time.
    Timeout,
    /// The connection was closed or reset mid-exchange.
    Reset,
    /// The upstream spoke invalid HTTP.
    Protocol,
    /// The caller's request body failed while being forwarded.
    RequestBody,
    /// The TLS handshake with the upstream failed (nothing was sent).
    Tls(TlsFailure),
}

/// Why a TLS handshake with an upstream failed, in words for the problem detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The certificate's key matches none of the configured pins.
    PinMismatch,
    /// The certificate chain is not trusted (unknown CA, expired, wrong name...).
    Untrusted,
    /// The upstream refused our client certificate or the handshake otherwise.
    Handshake,
}

/// A failed upstream exchange.
#[derive(Debug, thiserror::Error)]
pub struct UpstreamError {
    /// Upstream id.
    pub upstream: String,
    /// What failed.
    pub kind: UpstreamErrorKind,
    /// Who was at fault.
    pub fault: Fault,
    /// True when no request byte can have reached the upstream, so any method may be retried.
    pub retryable: bool,
    /// The underlying error, for the log line (never sent to the client).
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream `{}`: {:?}", self.upstream, self.kind)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
            let mut cur = s.source();
            while let Some(c) = cur {
                write!(f, ": {c}")?;
                cur = c.source();
            }
        }
        Ok(())
    }
}

/// The outcome of classifying a client error.
pub enum Failure {
    /// The request body exceeded its limit while streaming.
    BodyTooLarge(u64),
    /// Anything else.
    Upstream(UpstreamError),
}

impl UpstreamError {
    /// A timeout (the caller decides the deadline).
    pub fn timeout(upstream: &str) -> UpstreamError {
        UpstreamError {
            upstream: upstream.to_owned(),
            kind: UpstreamErrorKind::Timeout,
            fault: Fault::Upstream,
            retryable: false,
            source: None,
        }
    }

    /// Classifies a hyper-util client error by walking its source chain.
    pub fn classify(upstream: &str, err: hyper_util::client::legacy::Error) -> Failure {
        let connect = err.is_connect();
        let mut kind = if connect { UpstreamErrorKind::Connect } else { UpstreamErrorKind::Reset };
        let mut fault = Fault::Upstream;
        let mut tls = None;
        {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
            while let Some(e) = cur {
                if let Some(l) = e.downcast_ref::<BodyLimitExceeded>() {
                    return Failure::BodyTooLarge(l.limit);
                }
                // tokio-rustls reports handshake failures as io::Error carrying the rustls error, and
                // connectors may wrap that io::Error in another; io::Error::source skips the payload.
                let mut inner: &(dyn std::error::Error + 'static) = e;
                while let Some(payload) = inner.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
                    inner = payload;
                }
                if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                    tls = Some(match r {
                        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))
                            if o.0.downcast_ref::<crate::tls::PinMismatch>().is_some() =>
                        {
                            TlsFailure::PinMismatch
                        }
                        rustls::Error::InvalidCertificate(_) => TlsFailure::Untrusted,
                        _ => TlsFailure::Handshake,
                    });
                }
                if let Some(h) = e.downcast_ref::<hyper::Error>() {
                    if h.is_parse() || h.is_parse_status() {
                        kind = UpstreamErrorKind::Protocol;
                    } else if h.is_user() || h.is_body_write_aborted() {
                        kind = UpstreamErrorKind::RequestBody;
                        fault = Fault::Downstream;
                    } else if h.is_timeout() {
                        kind = UpstreamErrorKind::Timeout;
                    }
                }
                cur = e.source();
            }
        }
        if connect {
            kind = match tls {
                Some(t) => UpstreamErrorKind::Tls(t),
                None => UpstreamErrorKind::Connect,
            };
        }
        Failure::Upstream(UpstreamError {
            upstream: upstream.to_owned(),
            kind,
            fault,
            retryable: connect,
            source: Some(Box::new(err)),
        })
    }
}

type HyperClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// The pooled client of one upstream, its endpoints' live state and its retry budget.
pub struct UpstreamClient {
    client: HyperClient,
    endpoints: Vec<Endpoint>,
    states: Vec<Arc<resilience::EndpointState>>,
    in_flight: Arc<AtomicUsize>,
    /// Retries may be at most a share of requests (per upstream).
    pub budget: Arc<resilience::Budget>,
    metrics: Option<UpstreamMetrics>,
    label: Label,
    health_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The upstream this client was built for (to decide reuse on reload).
    pub built_for: Upstream,
}

impl Drop for UpstreamClient {
    fn drop(&mut self) {
        for t in &self.health_tasks {
            t.abort();
        }
    }
}

/// An endpoint chosen for one attempt.
#[derive(Debug)]
pub struct Picked<'a> {
    /// Its index (to report the outcome).
    pub index: usize,
    /// The endpoint.
    pub endpoint: &'a Endpoint,
    /// Counts the request in flight until dropped.
    pub guard: resilience::InFlight,
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient").field("upstream", &self.built_for.id).finish()
    }
}

/// `scheme://authority/base`, the endpoint's identity for state and metrics.
pub fn endpoint_url(e: &Endpoint) -> String {
    format!("{}://{}{}", e.scheme, e.authority, e.base_path)
}

/// The operating system's trusted roots, loaded once.
pub fn native_roots() -> &'static [rustls_pki_types::CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<rustls_pki_types::CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let res = rustls_native_certs::load_native_certs();
        for e in &res.errors {
            tracing::warn!(error = %e, "could not load some system CA certificates");
        }
        res.certs
    })
}

impl UpstreamClient {
    /// Builds the client for `u` (its TLS configuration was built by the config compiler).
    pub fn new(u: &Upstream, metrics: Option<UpstreamMetrics>) -> UpstreamClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(u.connect_timeout));
        let tls = (*u.tls.0).clone();
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
        let builder =
            match u.tls_inputs.server_name.clone().and_then(|n| rustls_pki_types::ServerName::try_from(n).ok()) {
                Some(name) => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name)),
                None => builder,
            };
        let connector = match u.protocol {
            UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(http),
            UpstreamProtocol::Http2 => builder.enable_http2().wrap_connector(http),
            UpstreamProtocol::Auto => builder.enable_all_versions().wrap_connector(http),
        };
        let mut cb = Client::builder(TokioExecutor::new());
        cb.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(u.pool_idle_timeout)
            .pool_max_idle_per_host(u.pool_max_idle_per_host)
            .http2_only(u.protocol == UpstreamProtocol::Http2);
        UpstreamClient::assemble(cb.build(connector), u, None, metrics)
    }

    fn assemble(
        client: HyperClient,
        u: &Upstream,
        previous: Option<&UpstreamClient>,
        metrics: Option<UpstreamMetrics>,
    ) -> UpstreamClient {
        // Endpoint state (circuits, health, load) carries over by URL.
        let states: Vec<_> = u
            .endpoints
            .iter()
            .map(|e| {
                let url = endpoint_url(e);
                previous
                    .and_then(|p| p.states.iter().find(|s| s.url == url).cloned())
                    .unwrap_or_else(|| Arc::new(resilience::EndpointState::new(url)))
            })
            .collect();
        let budget = match previous {
            Some(p) if p.budget.settings() == u.retry_budget => p.budget.clone(),
            _ => Arc::new(resilience::Budget::new(u.retry_budget)),
        };
        let in_flight = previous.map_or_else(Arc::default, |p| p.in_flight.clone());
        let label = Label(u.id_shared.clone());
        let mut c = UpstreamClient {
            client,
            endpoints: u.endpoints.clone(),
            states,
            in_flight,
            budget,
            metrics,
            label,
            health_tasks: Vec::new(),
            built_for: u.clone(),
        };
        c.start_health_checks();
        c
    }

    /// A client for `u` sharing this one's connection pool and endpoint state (same transport, maybe
    /// new endpoints or resilience settings).
    pub fn with_endpoints(&self, u: &Upstream) -> UpstreamClient {
        UpstreamClient::assemble(self.client.clone(), u, Some(self), self.metrics.clone())
    }

    /// The endpoint for the next attempt: power of two choices over the endpoints that are not
    /// ejected or unhealthy (avoiding `avoid`, the one that just failed, when there is another).
    pub fn pick(&self, avoid: Option<usize>) -> Result<Picked<'_>, resilience::PickError> {
        let r = resilience::pick(&self.states, &self.in_flight, self.built_for.max_concurrent, avoid);
        if let (Err(resilience::PickError::Overloaded), Some(m)) = (&r, &self.metrics) {
            m.shed.get_or_create(&crate::telemetry::metrics::UpstreamOnly { upstream: self.label.clone() }).inc();
        }
        let (index, guard) = r?;
        Ok(Picked { index, endpoint: &self.endpoints[index], guard })
    }

    /// Reports an attempt's outcome on endpoint `index` (feeds the circuit and the latency EWMA).
    pub fn record(&self, index: usize, ok: bool, latency: Option<std::time::Duration>) {
        if let Some(s) = self.states.get(index) {
            s.record(ok, latency, self.built_for.circuit.as_ref(), self.metrics.as_ref(), &self.label);
        }
    }

    /// Counts a retry.
    pub fn count_retry(&self, reason: &'static str) {
        if let Some(m) = &self.metrics {
            m.retries
                .get_or_create(&crate::telemetry::metrics::RetryLabels {
                    upstream: self.label.clone(),
                    reason: m.labels.outcome(reason),
                })
                .inc();
        }
    }

    /// Counts a retry the budget refused.
    pub fn count_budget_exhausted(&self) {
        if let Some(m) = &self.metrics {
            m.budget_exhausted
                .get_or_create(&crate::telemetry::metrics::UpstreamOnly { upstream: self.label.clone() })
                .inc();
        }
    }

    /// Each endpoint's live state, for the admin API.
    pub fn endpoint_views(&self) -> Vec<serde_json::Value> {
        self.states.iter().map(|s| s.view()).collect()
    }

    /// Starts one health-check task per endpoint (when configured and a runtime is running); they
    /// stop when this client is dropped.
    fn start_health_checks(&mut self) {
        let Some(hc) = self.built_for.health_check.clone() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        for (ep, state) in self.endpoints.iter().zip(&self.states) {
            let uri = format!("{}://{}{}{}", ep.scheme, ep.authority, ep.base_path, hc.path);
            let Ok(uri) = uri.parse::<http::Uri>() else { continue };
            let (client, state, hc, metrics, label) =
                (self.client.clone(), state.clone(), hc.clone(), self.metrics.clone(), self.label.clone());
            if let Some(m) = &metrics {
                let l = EndpointLabels { upstream: label.clone(), endpoint: Label(state.url.as_str().into()) };
                m.endpoint_healthy.get_or_create(&l).set(i64::from(state.healthy()));
            }
            self.health_tasks.push(rt.spawn(async move {
                let mut tick = tokio::time::interval(hc.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let mut req = http::Request::new(RequestBody::empty());
                    *req.uri_mut() = uri.clone();
                    req.headers_mut().insert(http::header::USER_AGENT, http::HeaderValue::from_static("interlock-health-check"));
                    let pass = match tokio::time::timeout(hc.timeout, client.request(req)).await {
                        Ok(Ok(res)) => res.status().is_success() || res.status().is_redirection(),
                        _ => false,
                    };
                    if let Some(now_healthy) = state.record_check(pass, &hc) {
                        if now_healthy {
                            tracing::info!(upstream = %label.0, endpoint = %state.url, "endpoint passes its health checks again");
                        } else {
                            tracing::warn!(upstream = %label.0, endpoint = %state.url, "endpoint fails its health checks: no traffic until it passes");
                        }
                        if let Some(m) = &metrics {
                            let l = EndpointLabels { upstream: label.clone(), endpoint: Label(state.url.as_str().into()) };
                            m.endpoint_healthy.get_or_create(&l).set(i64::from(now_healthy));
                        }
                    }
                }
            }));
        }
    }

    /// Sends a request whose URI is already absolute.
    pub fn send(&self, req: http::Request<RequestBody>) -> hyper_util::client::legacy::ResponseFuture {
        self.client.request(req)
    }
}
