//! Who is calling: the [`Caller`] of a request, from a client certificate, a JWT or an Interlock API
//! key. This module says WHO; it never decides what a caller MAY do (that is policy's job).
//!
//! - `mtls.rs`: the identity inside a verified client certificate.
//! - `jwt.rs`: JWKS-backed token verification.
//! - `apikey.rs`: Interlock-issued keys, stored as hashes.
//!
//! Precedence when a request carries several identities: the client certificate wins, and a JWT or
//! API key naming a *different* caller is refused (`identity-conflict`). Invalid credentials are
//! refused even on routes that allow anonymous callers.

pub mod apikey;
pub mod jwt;
pub mod mtls;

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, AUTHORIZATION};

use apikey::KeyTable;
use jwt::{IssuerKeys, JwtError, JwtIssuer};
use mtls::PeerCert;

/// The caller of a request, put in the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Caller id.
    pub id: Arc<str>,
    /// Groups (from `callers.yaml`, plus a JWT's groups claim).
    pub groups: Arc<[String]>,
    /// How the caller proved it.
    pub via: AuthMethod,
}

/// How a caller was authenticated, with details safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// Client certificate.
    Mtls(Arc<PeerCert>),
    /// JWT.
    Jwt {
        /// Issuer id from `callers.yaml`.
        issuer: String,
        /// Key id that verified it.
        key_id: Option<String>,
    },
    /// Interlock API key.
    ApiKey {
        /// Key id from `callers.yaml`.
        key_id: String,
    },
}

impl AuthMethod {
    /// `mtls`, `jwt` or `api_key`.
    pub fn name(&self) -> &'static str {
        match self {
            AuthMethod::Mtls(_) => "mtls",
            AuthMethod::Jwt { .. } => "jwt",
            AuthMethod::ApiKey { .. } => "api_key",
        }
    }
}

/// A caller defined in `callers.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerDef {
    /// Id.
    pub id: String,
    /// Groups.
    pub groups: Vec<String>,
}

/// The compiled `callers.yaml`.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Known callers.
    pub callers: Vec<CallerDef>,
    /// Certificate identity → caller index.
    pub by_mtls: HashMap<String, usize>,
    /// API key digests → caller index.
    pub keys: KeyTable,
    /// Header carrying API keys.
    pub api_key_header: HeaderName,
    /// Accepted JWT issuers.
    pub issuers: Vec<JwtIssuer>,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            callers: Vec::new(),
            by_mtls: HashMap::new(),
            keys: KeyTable::default(),
            api_key_header: HeaderName::from_static("x-api-key"),
            issuers: Vec::new(),
        }
    }
}

impl Identity {
    /// The `WWW-Authenticate` challenge for a 401, naming the schemes this gateway accepts.
    pub fn challenge(&self, error: Option<&str>) -> Option<String> {
        let mut parts = Vec::new();
        if !self.issuers.is_empty() {
            match error {
                Some(e) => parts
                    .push(format!("Bearer realm=\"interlock\", error=\"invalid_token\", error_description=\"{e}\"")),
                None => parts.push("Bearer realm=\"interlock\"".to_owned()),
            }
        }
        if !self.keys.is_empty() {
            parts.push(format!("ApiKey realm=\"interlock\", header=\"{}\"", self.api_key_header));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    fn caller(&self, idx: usize, via: AuthMethod, extra_groups: Vec<String>) -> Caller {
        let def = &self.callers[idx];
        let mut groups = def.groups.clone();
        for g in extra_groups {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        Caller { id: def.id.as_str().into(), groups: groups.into(), via }
    }
}

/// Runtime state of identity (JWKS caches), one entry per issuer in config order.
#[derive(Debug, Default)]
pub struct IdentityRuntime {
    /// Per-issuer keys.
    pub issuers: Vec<Arc<IssuerKeys>>,
}

impl IdentityRuntime {
    /// Builds the runtime for `id`, keeping the key caches of unchanged issuers from `previous`.
    pub fn build(
        id: &Identity,
        previous: Option<&IdentityRuntime>,
        fetches: &jwt::FetchCounter,
    ) -> Result<IdentityRuntime, String> {
        let mut issuers = Vec::with_capacity(id.issuers.len());
        for cfg in &id.issuers {
            match previous.and_then(|p| p.issuers.iter().find(|k| k.cfg == *cfg)) {
                Some(k) => issuers.push(k.clone()),
                None => issuers.push(
                    IssuerKeys::start(cfg.clone(), fetches.clone()).map_err(|e| format!("issuer `{}`: {e}", cfg.id))?,
                ),
            }
        }
        Ok(IdentityRuntime { issuers })
    }
}

/// The outcome of identification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identified {
    /// A known caller.
    Caller(Caller),
    /// No identity presented.
    Anonymous,
    /// A valid client certificate whose identity is not in `callers.yaml`.
    UnknownCertificate(String),
}

/// Why identification failed. Messages are safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A bearer token failed verification.
    #[error("{0}")]
    InvalidToken(JwtError),
    /// A bearer token from an issuer that is not configured.
    #[error("the token's issuer is not trusted")]
    UntrustedIssuer,
    /// An API key that matches no caller.
    #[error("the API key is not valid")]
    InvalidApiKey,
    /// Two credentials naming different callers.
    #[error("the request presents identities of two different callers ({first} and {second})")]
    Conflict {
        /// The winning identity.
        first: String,
        /// The conflicting one.
        second: String,
    },
    /// The identity provider's keys could not be obtained.
    #[error("the identity provider `{0}` is unreachable and its keys are unavailable")]
    ProviderUnavailable(String),
}

/// Identifies the caller from the connection's client certificate and the request headers.
pub async fn identify(
    id: &Identity,
    rt: &IdentityRuntime,
    peer: Option<&Arc<PeerCert>>,
    headers: &HeaderMap,
) -> Result<Identified, IdentityError> {
    let mut found: Option<Caller> = None;
    let mut unknown_cert = None;
    // 1. The client certificate (verified by rustls during the handshake).
    if let Some(p) = peer {
        match id.by_mtls.get(&p.identity) {
            Some(&i) => found = Some(id.caller(i, AuthMethod::Mtls(p.clone()), Vec::new())),
            None => unknown_cert = Some(p.identity.clone()),
        }
    }
    // 2. A bearer token, when issuers are configured (otherwise Authorization is not ours to read;
    //    it is stripped before forwarding either way).
    if !id.issuers.is_empty() {
        if let Some(token) = bearer(headers) {
            let iss = jwt::peek_issuer(token).ok_or(IdentityError::InvalidToken(JwtError::Malformed))?;
            let k = id
                .issuers
                .iter()
                .position(|i| i.issuer == iss)
                .and_then(|i| rt.issuers.get(i))
                .ok_or(IdentityError::UntrustedIssuer)?;
            let v = k.verify(token).await.map_err(|e| match e {
                JwtError::KeysUnavailable => IdentityError::ProviderUnavailable(k.cfg.id.clone()),
                other => IdentityError::InvalidToken(other),
            })?;
            let via = AuthMethod::Jwt { issuer: k.cfg.id.clone(), key_id: v.key_id };
            let caller = match id.callers.iter().position(|c| c.id == v.caller) {
                Some(i) => id.caller(i, via, v.groups),
                None => Caller { id: v.caller.as_str().into(), groups: v.groups.into(), via },
            };
            found = merge(found, caller)?;
        }
    }
    // 3. An Interlock API key.
    if let Some(key) = headers.get(&id.api_key_header) {
        let (i, key_id) = id.keys.find(key.as_bytes()).ok_or(IdentityError::InvalidApiKey)?;
        let caller = id.caller(i, AuthMethod::ApiKey { key_id: key_id.to_owned() }, Vec::new());
        found = merge(found, caller)?;
    }
    Ok(match (found, unknown_cert) {
        (Some(c), _) => Identified::Caller(c),
        (None, Some(cert)) => Identified::UnknownCertificate(cert),
        (None, None) => Identified::Anonymous,
    })
}

fn merge(found: Option<Caller>, next: Caller) -> Result<Option<Caller>, IdentityError> {
    match found {
        None => Ok(Some(next)),
        Some(f) if f.id == next.id => Ok(Some(f)),
        Some(f) => Err(IdentityError::Conflict { first: f.id.to_string(), second: next.id.to_string() }),
    }
}

fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
