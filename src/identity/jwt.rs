//! JWT callers: tokens verified against an identity provider's JWKS.
//!
//! Per issuer, [`IssuerKeys`] holds the last fetched key set. It is fetched at start, refreshed in
//! the background, refetched when a token names an unknown `kid` (at most once per
//! `refetch_interval`, single-flight, so a flood of random kids costs the IdP one request per
//! interval), and kept as last-known-good while the IdP is down, up to `max_stale`.
//!
//! Hardening, beyond what the token library checks by default:
//! - each key is pinned to the algorithms its JWK allows (its `alg`, else its key type and curve,
//!   intersected with the issuer's list); HMAC and `none` are never accepted;
//! - `exp` is required, `nbf` is checked, `iss` always and `aud` when audiences are configured;
//! - leeway is the configured one (default 5 s, at most 30 s), not the library's 60 s;
//! - `jku`, `x5u`, `x5c` and embedded `jwk` headers are never used; keys come only from the
//!   configured JWKS;
//! - tokens over 8 KiB and `kid`s with unusual characters are refused before any parsing work.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls_pki_types::CertificateDer;
use tokio::time::Instant;

/// Tokens larger than this are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A compiled issuer from `callers.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtIssuer {
    /// Name in logs and caller records.
    pub id: String,
    /// Required `iss`.
    pub issuer: String,
    /// Accepted `aud` values (empty: `aud` not checked).
    pub audiences: Vec<String>,
    /// Where the keys come from.
    pub source: JwksSource,
    /// Accepted algorithms (never HMAC).
    pub algorithms: Vec<Algorithm>,
    /// Clock skew.
    pub leeway: Duration,
    /// Background refresh interval.
    pub refresh: Duration,
    /// Minimum time between unknown-`kid` refetches.
    pub refetch_interval: Duration,
    /// Last-known-good lifetime.
    pub max_stale: Duration,
    /// Claim with the caller id.
    pub caller_claim: String,
    /// Claim with the groups.
    pub groups_claim: String,
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum JwksSource {
    /// Fetched over HTTP(S).
    Url {
        /// The URL.
        uri: Uri,
        /// Extra trusted CAs.
        ca_certs: Vec<CertificateDer<'static>>,
    },
    /// Read from a file when the config is compiled.
    File {
        /// The file.
        path: PathBuf,
        /// Its content at compile time.
        text: String,
    },
}

/// Why a token was refused. Messages are safe to show the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Over 8 KiB.
    #[error("the token is larger than 8 KiB")]
    TooLarge,
    /// Not a JWS compact token, or unparsable parts.
    #[error("the token is malformed")]
    Malformed,
    /// `alg` not accepted for this issuer or key.
    #[error("the token's algorithm is not accepted")]
    AlgorithmNotAllowed,
    /// `kid` with characters a key id never has.
    #[error("the token's key id is invalid")]
    BadKeyId,
    /// No key with this `kid`, even after a refetch.
    #[error("the token was signed with an unknown key")]
    UnknownKey,
    /// Signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// A required claim is missing.
    #[error("the token lacks a required claim (exp, iss or aud)")]
    MissingClaim,
    /// `aud` does not match.
    #[error("the token is not meant for this gateway (audience)")]
    WrongAudience,
    /// `iss` does not match.
    #[error("the token's issuer is not trusted")]
    WrongIssuer,
    /// No caller claim.
    #[error("the token does not name a caller")]
    NoCaller,
    /// Keys could not be fetched (or are older than `max_stale`).
    #[error("the identity provider's keys are unavailable")]
    KeysUnavailable,
}

/// A verified token's caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Caller id from the caller claim.
    pub caller: String,
    /// Groups from the groups claim.
    pub groups: Vec<String>,
    /// The `kid` that verified it.
    pub key_id: Option<String>,
}

struct KeyEntry {
    kid: Option<String>,
    algs: Vec<Algorithm>,
    key: DecodingKey,
}

/// One fetched key set.
pub struct KeySet {
    keys: Vec<KeyEntry>,
    fetched_at: Instant,
}

impl KeySet {
    /// True when no key was usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| (&k.kid, &k.algs)).collect();
        f.debug_struct("KeySet").field("keys", &kids).finish()
    }
}

fn is_asymmetric(a: Algorithm) -> bool {
    !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Parses an algorithm name from config (`RS256`, `ES256`, `PS256`, `EdDSA`, ...). HMAC and `none`
/// are refused: a gateway verifying third-party tokens never shares a secret with the IdP.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    let a: Algorithm = name.parse().map_err(|_| format!("unknown algorithm `{name}`"))?;
    if !is_asymmetric(a) {
        return Err(format!("`{name}` is a shared-secret algorithm; only public-key algorithms are accepted"));
    }
    Ok(a)
}

/// Parses a JWKS document into pinned keys; unusable keys are skipped and reported.
pub fn parse_jwks(text: &str, allowed: &[Algorithm]) -> Result<(KeySet, Vec<String>), String> {
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    let list = doc.get("keys").and_then(|k| k.as_array()).ok_or("the JWKS has no `keys` array")?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, raw) in list.iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(raw.clone()) {
            Ok(j) => j,
            Err(e) => {
                skipped.push(format!("key {i}: {e}"));
                continue;
            }
        };
        let by_type: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => vec![],
            },
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            // Symmetric keys in a JWKS are never trusted.
            _ => vec![],
        };
        let declared: Option<Algorithm> = jwk.common.key_algorithm.and_then(|ka| match ka {
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::PS384 => Some(Algorithm::PS384),
            KeyAlgorithm::PS512 => Some(Algorithm::PS512),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            _ => None,
        });
        let algs: Vec<Algorithm> =
            by_type.into_iter().filter(|a| allowed.contains(a)).filter(|a| declared.is_none_or(|d| d == *a)).collect();
        if algs.is_empty() {
            skipped.push(format!("key {i}: no accepted algorithm for its type"));
            continue;
        }
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => keys.push(KeyEntry { kid: jwk.common.key_id.clone(), algs, key }),
            Err(e) => skipped.push(format!("key {i}: {e}")),
        }
    }
    Ok((KeySet { keys, fetched_at: Instant::now() }, skipped))
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= 256 && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.=+:~".contains(&b))
}

/// The `iss` claim of an unverified token (used only to choose which issuer verifies it).
pub fn peek_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

type FetchClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Counts JWKS fetches by issuer and result (exported on `/metrics`).
pub type FetchCounter = prometheus_client::metrics::family::Family<
    crate::telemetry::metrics::IssuerLabels,
    prometheus_client::metrics::counter::Counter,
>;

/// An issuer's keys at runtime. Survives reloads while the issuer's config is unchanged.
pub struct IssuerKeys {
    /// The issuer config this was built for.
    pub cfg: JwtIssuer,
    keys: ArcSwapOption<KeySet>,
    last_refetch: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
    client: Option<FetchClient>,
    validations: HashMap<Algorithm, Validation>,
    refresher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    fetches: FetchCounter,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys").field("issuer", &self.cfg.id).field("keys", &self.keys.load()).finish()
    }
}

impl Drop for IssuerKeys {
    fn drop(&mut self) {
        if let Ok(mut g) = self.refresher.lock() {
            if let Some(h) = g.take() {
                h.abort();
            }
        }
    }
}

impl IssuerKeys {
    /// Builds the runtime for `cfg`; for URL sources, starts the background refresh (which also
    /// makes the first fetch). Must run inside the tokio runtime.
    pub fn start(cfg: JwtIssuer, fetches: FetchCounter) -> Result<Arc<IssuerKeys>, String> {
        let mut validations = HashMap::new();
        for &alg in &cfg.algorithms {
            let mut v = Validation::new(alg);
            v.leeway = cfg.leeway.as_secs();
            v.validate_nbf = true;
            v.validate_exp = true;
            v.set_issuer(&[&cfg.issuer]);
            let mut required = vec!["exp", "iss"];
            if cfg.audiences.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(&cfg.audiences);
                required.push("aud");
            }
            v.set_required_spec_claims(&required);
            validations.insert(alg, v);
        }
        let (client, initial) = match &cfg.source {
            JwksSource::File { text, .. } => (None, Some(Arc::new(parse_jwks(text, &cfg.algorithms)?.0))),
            JwksSource::Url { ca_certs, .. } => (Some(fetch_client(ca_certs)?), None),
        };
        let is_url = client.is_some();
        let me = Arc::new(IssuerKeys {
            keys: ArcSwapOption::new(initial),
            last_refetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            client,
            validations,
            refresher: Mutex::new(None),
            fetches,
            cfg,
        });
        if is_url {
            let weak = Arc::downgrade(&me);
            let every = me.cfg.refresh;
            let handle = tokio::spawn(async move {
                loop {
                    let Some(me) = weak.upgrade() else { return };
                    me.fetch_and_store("background refresh").await;
                    drop(me);
                    tokio::time::sleep(every).await;
                }
            });
            if let Ok(mut g) = me.refresher.lock() {
                *g = Some(handle);
            }
        }
        Ok(me)
    }

    async fn fetch_and_store(&self, why: &str) -> bool {
        let _one = self.fetching.lock().await;
        let result = self.fetch().await;
        let labels = crate::telemetry::metrics::IssuerLabels {
            issuer: self.cfg.id.clone(),
            result: if result.is_ok() { "ok" } else { "failed" }.to_owned(),
        };
        self.fetches.get_or_create(&labels).inc();
        match result {
            Ok(set) => {
                tracing::debug!(issuer = %self.cfg.id, keys = set.keys.len(), why, "JWKS fetched");
                self.keys.store(Some(Arc::new(set)));
                true
            }
            Err(e) => {
                tracing::warn!(issuer = %self.cfg.id, error = %e, why, "JWKS fetch failed; keeping the last good keys");
                false
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let (JwksSource::Url { uri, .. }, Some(client)) = (&self.cfg.source, &self.client) else {
            return Err("this issuer's keys come from a file".to_owned());
        };
        let req = http::Request::get(uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let res = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| format!("request failed: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("status {}", res.status()));
        }
        let body =
            Limited::new(res.into_body(), 1024 * 1024).collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        let text = std::str::from_utf8(&body).map_err(|_| "the JWKS is not UTF-8".to_owned())?;
        let (set, skipped) = parse_jwks(text, &self.cfg.algorithms)?;
        for s in skipped {
            tracing::warn!(issuer = %self.cfg.id, skipped = %s, "JWKS key ignored");
        }
        Ok(set)
    }

    /// Refetches because of an unknown `kid`, unless one was made within `refetch_interval`.
    async fn refetch_for_unknown_kid(&self) -> bool {
        {
            let Ok(mut last) = self.last_refetch.lock() else { return false };
            if last.is_some_and(|t| t.elapsed() < self.cfg.refetch_interval) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.fetch_and_store("unknown key id").await
    }

    fn usable(&self) -> Option<Arc<KeySet>> {
        let set = self.keys.load_full()?;
        if matches!(self.cfg.source, JwksSource::Url { .. }) && set.fetched_at.elapsed() > self.cfg.max_stale {
            return None;
        }
        Some(set)
    }

    /// Verifies `token` and returns its caller.
    pub async fn verify(&self, token: &str) -> Result<Verified, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if !self.cfg.algorithms.contains(&header.alg) {
            return Err(JwtError::AlgorithmNotAllowed);
        }
        if let Some(kid) = &header.kid {
            if !valid_kid(kid) {
                return Err(JwtError::BadKeyId);
            }
        }
        let mut set = match self.usable() {
            Some(s) => s,
            None => {
                // First use before the background fetch finished, or keys too old: try once now.
                if self.client.is_some() {
                    self.fetch_and_store("no usable keys").await;
                }
                self.usable().ok_or(JwtError::KeysUnavailable)?
            }
        };
        let pick = |set: &KeySet| -> Option<usize> {
            match &header.kid {
                Some(kid) => set.keys.iter().position(|k| k.kid.as_deref() == Some(kid)),
                // Without a kid, only an unambiguous single key is used.
                None => (set.keys.len() == 1).then_some(0),
            }
        };
        let idx = match pick(&set) {
            Some(i) => i,
            None if header.kid.is_some() && self.client.is_some() => {
                if self.refetch_for_unknown_kid().await {
                    set = self.usable().ok_or(JwtError::KeysUnavailable)?;
                }
                pick(&set).ok_or(JwtError::UnknownKey)?
            }
            None => return Err(JwtError::UnknownKey),
        };
        let entry = &set.keys[idx];
        if !entry.algs.contains(&header.alg) {
            return Err(JwtError::AlgorithmNotAllowed);
        }
        let validation = self.validations.get(&header.alg).ok_or(JwtError::AlgorithmNotAllowed)?;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &entry.key, validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::ExpiredSignature => JwtError::Expired,
                    K::ImmatureSignature => JwtError::NotYetValid,
                    K::InvalidAudience => JwtError::WrongAudience,
                    K::InvalidIssuer => JwtError::WrongIssuer,
                    K::MissingRequiredClaim(_) => JwtError::MissingClaim,
                    K::InvalidSignature => JwtError::BadSignature,
                    K::InvalidAlgorithm => JwtError::AlgorithmNotAllowed,
                    _ => JwtError::Malformed,
                }
            })?;
        let claims = data.claims;
        let caller = claims
            .get(&self.cfg.caller_claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or(JwtError::NoCaller)?
            .to_owned();
        let groups = match claims.get(&self.cfg.groups_claim) {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|g| g.as_str().map(str::to_owned)).collect(),
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(Verified { caller, groups, key_id: entry.kid.clone() })
    }
}

fn fetch_client(ca_certs: &[CertificateDer<'static>]) -> Result<FetchClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(crate::upstream::native_roots().iter().cloned());
    for c in ca_certs {
        roots.add(c.clone()).map_err(|e| format!("JWKS CA certificate rejected: {e}"))?;
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
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_and_none_are_never_configurable() {
        assert!(parse_algorithm("HS256").is_err());
        assert!(parse_algorithm("none").is_err());
        assert_eq!(parse_algorithm("RS256"), Ok(Algorithm::RS256));
    }

    #[test]
    fn jwks_keys_are_pinned_by_declared_alg_and_type() {
        let jwks = r#"{"keys":[
            {"kty":"RSA","kid":"r1","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},
            {"kty":"RSA","kid":"r2","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},
            {"kty":"oct","kid":"h1","k":"c2VjcmV0"},
            {"kty":"weird"}
        ]}"#;
        let (set, skipped) = parse_jwks(jwks, &[Algorithm::RS256, Algorithm::ES256]).unwrap();
        assert_eq!(set.keys.len(), 2, "{set:?}");
        assert_eq!(set.keys[0].algs, vec![Algorithm::RS256]);
        assert_eq!(set.keys[1].algs, vec![Algorithm::RS256], "undeclared RSA key: the issuer's RSA algorithms");
        assert_eq!(skipped.len(), 2, "{skipped:?}");
    }

    #[test]
    fn kids_and_issuer_peeking() {
        assert!(valid_kid("2024-05_key.1"));
        assert!(!valid_kid("../../etc/passwd"));
        assert!(!valid_kid("a/b"));
        assert!(!valid_kid(""));
        // {"iss":"https://idp"} as the payload
        assert_eq!(peek_issuer("e30.eyJpc3MiOiJodHRwczovL2lkcCJ9.sig").as_deref(), Some("https://idp"));
        assert_eq!(peek_issuer("garbage"), None);
    }
}
