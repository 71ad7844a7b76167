//! OAuth2 client-credentials tokens (CrowdStrike, Microsoft Graph, Okta service apps, Duo...).
//!
//! One [`TokenSource`] per credential caches the current token and refreshes it `refresh_before`
//! its expiry. Minting is single-flight: however many requests find the token cold or expiring,
//! one token request is made and the others wait for it. Failures back off exponentially (1 s, 2 s,
//! 4 s ... 60 s) and during the back-off nobody calls the token endpoint, so an IdP outage does not
//! turn into a storm. When the token has expired and no new one can be had, the request fails
//! closed (`503 credential-unavailable`) unless `on_outage: use_expired` allows the old token for a
//! while. An upstream `401` purges the token it was sent with, so the next use mints a new one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::Uri;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use tokio::time::Instant;

use super::{encode_query_value, Secret};

/// Client authentication at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` with the client id and secret (the default).
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

/// What to do when the token has expired and no new one can be minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOutage {
    /// Refuse the call (503).
    FailClosed,
    /// Keep sending the expired token for up to this long past its expiry.
    UseExpired(Duration),
}

/// A compiled OAuth2 client-credentials credential.
#[derive(Clone, PartialEq)]
pub struct OAuth2Settings {
    /// Token endpoint.
    pub token_url: Uri,
    /// Client id (may be a secret).
    pub client_id: Secret,
    /// Client secret.
    pub client_secret: Secret,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Extra form parameters (`audience`, `resource`, vendor-specific ones).
    pub params: BTreeMap<String, String>,
    /// Client authentication.
    pub client_auth: ClientAuth,
    /// Refresh this long before expiry.
    pub refresh_before: Duration,
    /// Expired-token policy during an IdP outage.
    pub on_outage: OnOutage,
    /// Extra CA certificates for the token endpoint.
    pub ca_certs: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for OAuth2Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Settings")
            .field("token_url", &self.token_url)
            .field("scopes", &self.scopes)
            .field("params", &self.params.keys().collect::<Vec<_>>())
            .field("client_auth", &self.client_auth)
            .field("refresh_before", &self.refresh_before)
            .field("on_outage", &self.on_outage)
            .finish_non_exhaustive()
    }
}

/// Why no token could be had; safe to show callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenUnavailable(pub String);

struct Token {
    header: HeaderValue,
    expires_at: Instant,
}

#[derive(Default)]
struct MintState {
    failures: u32,
    retry_at: Option<Instant>,
}

type TokenClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Counts token requests by credential and result (exported on `/metrics`).
pub type MintCounter = prometheus_client::metrics::family::Family<
    crate::telemetry::metrics::CredentialLabels,
    prometheus_client::metrics::counter::Counter,
>;

/// The token cache of one OAuth2 credential.
pub struct TokenSource {
    /// The credential id (metrics, logs).
    pub id: String,
    /// The settings this source was built for (to decide reuse on reload).
    pub settings: OAuth2Settings,
    client: TokenClient,
    token: ArcSwapOption<Token>,
    mint: tokio::sync::Mutex<MintState>,
    counter: std::sync::OnceLock<MintCounter>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource").field("id", &self.id).field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A source with an empty cache.
    pub fn new(id: String, settings: OAuth2Settings) -> Result<TokenSource, String> {
        let mut roots = rustls::RootCertStore::empty();
        let (_added, _ignored) = roots.add_parsable_certificates(crate::upstream::native_roots().iter().cloned());
        for c in &settings.ca_certs {
            roots.add(c.clone()).map_err(|e| format!("token endpoint CA rejected: {e}"))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(TokenSource {
            id,
            settings,
            client: Client::builder(TokioExecutor::new()).build(connector),
            token: ArcSwapOption::empty(),
            mint: tokio::sync::Mutex::new(MintState::default()),
            counter: std::sync::OnceLock::new(),
        })
    }

    /// Counts token requests into `c` (set once, when the snapshot is built).
    pub fn count_into(&self, c: &MintCounter) {
        let _ = self.counter.set(c.clone());
    }

    fn fresh(&self, now: Instant) -> Option<HeaderValue> {
        let t = self.token.load();
        let t = t.as_ref()?;
        (now + self.settings.refresh_before < t.expires_at).then(|| t.header.clone())
    }

    /// The `Authorization` value to send now: cached, or minted (once, for every waiter).
    pub async fn header(&self) -> Result<HeaderValue, TokenUnavailable> {
        self.header_traced(None).await
    }

    /// Like [`TokenSource::header`]; a token request made for it is a span under `trace`'s context.
    pub async fn header_traced(
        &self,
        trace: Option<(&crate::telemetry::otel::Tracing, &opentelemetry::Context)>,
    ) -> Result<HeaderValue, TokenUnavailable> {
        if let Some(h) = self.fresh(Instant::now()) {
            return Ok(h);
        }
        let mut st = self.mint.lock().await;
        let now = Instant::now();
        // Another request may have minted while this one waited.
        if let Some(h) = self.fresh(now) {
            return Ok(h);
        }
        let in_backoff = st.retry_at.is_some_and(|r| now < r);
        if !in_backoff {
            let span = trace.map(|(t, parent)| t.side_call_span(parent, "POST oauth2 token"));
            let minted = self.mint_now().await;
            if let Some(cx) = &span {
                use opentelemetry::KeyValue;
                let attrs = vec![
                    KeyValue::new("http.request.method", "POST"),
                    KeyValue::new("server.address", self.settings.token_url.host().unwrap_or("").to_owned()),
                    KeyValue::new("interlock.credential", self.id.clone()),
                    KeyValue::new("interlock.token.result", if minted.is_ok() { "ok" } else { "failed" }),
                ];
                crate::telemetry::otel::end(cx, attrs, minted.is_err());
            }
            match minted {
                Ok(t) => {
                    st.failures = 0;
                    st.retry_at = None;
                    let h = t.header.clone();
                    self.token.store(Some(Arc::new(t)));
                    self.count("ok");
                    return Ok(h);
                }
                Err(e) => {
                    self.count("failed");
                    st.failures += 1;
                    let wait =
                        Duration::from_secs(1u64 << st.failures.min(6).saturating_sub(1)).min(Duration::from_secs(60));
                    st.retry_at = Some(Instant::now() + wait);
                    tracing::warn!(credential = %self.id, error = %e.0, retry_in_s = wait.as_secs(), "OAuth2 token request failed");
                }
            }
        }
        // No new token: the old one may still do.
        let old = self.token.load_full();
        match old {
            Some(t) if Instant::now() < t.expires_at => Ok(t.header.clone()),
            Some(t) => match self.settings.on_outage {
                OnOutage::UseExpired(grace) if Instant::now() < t.expires_at + grace => Ok(t.header.clone()),
                _ => Err(self.unavailable()),
            },
            None => Err(self.unavailable()),
        }
    }

    fn unavailable(&self) -> TokenUnavailable {
        TokenUnavailable(format!(
            "no access token could be obtained for credential `{}` (its token endpoint is failing)",
            self.id
        ))
    }

    fn count(&self, result: &str) {
        if let Some(c) = self.counter.get() {
            c.get_or_create(&crate::telemetry::metrics::CredentialLabels {
                credential: self.id.clone(),
                result: result.to_owned(),
            })
            .inc();
        }
    }

    /// Forgets the token if it is the one that was sent (called after an upstream 401).
    pub fn purge(&self, sent: &HeaderValue) {
        let t = self.token.load();
        if t.as_ref().is_some_and(|t| t.header == *sent) {
            self.token.store(None);
        }
    }

    async fn mint_now(&self) -> Result<Token, TokenUnavailable> {
        use base64::Engine as _;
        let s = &self.settings;
        let mut form = vec![("grant_type".to_owned(), "client_credentials".to_owned())];
        if !s.scopes.is_empty() {
            form.push(("scope".to_owned(), s.scopes.join(" ")));
        }
        for (k, v) in &s.params {
            form.push((k.clone(), v.clone()));
        }
        let mut req = http::Request::post(s.token_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json");
        match s.client_auth {
            ClientAuth::Basic => {
                let pair = format!(
                    "{}:{}",
                    encode_query_value(s.client_id.expose()),
                    encode_query_value(s.client_secret.expose())
                );
                let mut v =
                    HeaderValue::try_from(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
                        .map_err(|_| TokenUnavailable("the client credentials cannot be sent in a header".into()))?;
                v.set_sensitive(true);
                req = req.header(AUTHORIZATION, v);
            }
            ClientAuth::Body => {
                form.push(("client_id".to_owned(), s.client_id.expose().to_owned()));
                form.push(("client_secret".to_owned(), s.client_secret.expose().to_owned()));
            }
        }
        let body: Vec<String> =
            form.iter().map(|(k, v)| format!("{}={}", encode_query_value(k), encode_query_value(v))).collect();
        let req = req
            .body(Full::new(Bytes::from(body.join("&"))))
            .map_err(|e| TokenUnavailable(format!("bad token request: {e}")))?;
        let res = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| TokenUnavailable("the token endpoint timed out".into()))?
            .map_err(|e| TokenUnavailable(format!("the token endpoint is unreachable: {e}")))?;
        let status = res.status();
        let bytes = Limited::new(res.into_body(), 256 * 1024)
            .collect()
            .await
            .map_err(|_| TokenUnavailable("the token response could not be read".into()))?
            .to_bytes();
        if !status.is_success() {
            // The error body is the IdP's (error, error_description): safe, and useful in logs.
            let why: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(TokenUnavailable(format!(
                "the token endpoint answered {status}{}",
                why["error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default()
            )));
        }
        #[derive(serde::Deserialize)]
        struct Resp {
            access_token: String,
            token_type: Option<String>,
            expires_in: Option<serde_json::Value>,
        }
        let r: Resp = serde_json::from_slice(&bytes)
            .map_err(|_| TokenUnavailable("the token response is not valid JSON with an access_token".into()))?;
        if r.token_type.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("bearer")) {
            return Err(TokenUnavailable("the token endpoint did not issue a bearer token".into()));
        }
        // expires_in is a number, but some IdPs send a string.
        let secs = match r.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(3600),
            Some(serde_json::Value::String(s)) => s.parse().unwrap_or(3600),
            _ => 3600,
        };
        let mut header = HeaderValue::try_from(format!("Bearer {}", r.access_token))
            .map_err(|_| TokenUnavailable("the access token has bytes not allowed in a header".into()))?;
        header.set_sensitive(true);
        Ok(Token { header, expires_at: Instant::now() + Duration::from_secs(secs) })
    }
}
