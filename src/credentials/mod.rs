//! Secrets by reference and the credential the gateway injects upstream.
//!
//! The compiler resolves a reference (`env:NAME`, `file:path`) into a [`Secret`] once per config
//! snapshot; the proxy only ever sees the resolved header. A [`Secret`] prints `[redacted]` in every
//! `Debug`/`Display`, and injected header values are marked sensitive so HTTP/2 never indexes them.
//! Nothing in this module logs.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};

pub mod oauth2;

/// A secret value. Its `Debug` and `Display` print `[redacted]`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<Arc<str>>) -> Secret {
        Secret(value.into())
    }
    /// The value. Call only where it is written to the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret comes from, as written in config.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretRef {
    /// `env:NAME`: an environment variable of the gateway process.
    Env(String),
    /// `file:path`: a file (relative paths are relative to the policies directory); one trailing
    /// newline is removed.
    File(String),
    /// A literal value: allowed only in files marked `dev_fixture: true`.
    Inline(Secret),
}

impl SecretRef {
    /// Parses a reference; anything without a known scheme is an inline value.
    pub fn parse(text: &str) -> SecretRef {
        if let Some(name) = text.strip_prefix("env:") {
            SecretRef::Env(name.to_owned())
        } else if let Some(path) = text.strip_prefix("file:") {
            SecretRef::File(path.to_owned())
        } else {
            SecretRef::Inline(Secret::new(text))
        }
    }

    /// Reads the secret now. Errors are sentences that never contain the value.
    pub fn resolve(&self, base_dir: &Path) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
                Ok(_) => Err(format!("environment variable `{name}` is empty")),
                Err(_) => Err(format!("environment variable `{name}` is not set (or not UTF-8)")),
            },
            SecretRef::File(path) => {
                let p = base_dir.join(path);
                match std::fs::read_to_string(&p) {
                    Ok(v) => {
                        let v = v.strip_suffix('\n').unwrap_or(&v);
                        let v = v.strip_suffix('\r').unwrap_or(v);
                        if v.is_empty() {
                            Err(format!("secret file `{}` is empty", p.display()))
                        } else {
                            Ok(Secret::new(v))
                        }
                    }
                    Err(e) => Err(format!("cannot read secret file `{}`: {e}", p.display())),
                }
            }
            SecretRef::Inline(s) => Ok(s.clone()),
        }
    }
}

/// How a credential is put on the request.
#[derive(Clone)]
#[non_exhaustive]
pub enum Injection {
    /// One or more headers (a key header, `Authorization: Basic ...`, key id + secret pairs).
    Headers(Vec<(HeaderName, HeaderValue)>),
    /// A query parameter, value already percent-encoded. The rewritten URL is never logged.
    Query {
        /// Parameter name.
        param: String,
        /// Encoded value.
        value: Secret,
    },
    /// `Authorization: Bearer` with an OAuth2 client-credentials token.
    OAuth2(Arc<oauth2::TokenSource>),
}

/// A credential of an upstream: what is injected, and which callers use it.
#[derive(Clone)]
pub struct Credential {
    /// Id shown in logs, traces and audit.
    pub id: String,
    /// The id, shared cheaply with per-request records.
    pub id_shared: Arc<str>,
    /// What is injected.
    pub injection: Injection,
    /// Callers that use this credential (several-credential upstreams).
    pub callers: Vec<String>,
    /// Used by callers not listed on any credential.
    pub default: bool,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("kind", &self.describe())
            .field("callers", &self.callers)
            .field("default", &self.default)
            .finish()
    }
}

impl Credential {
    /// What kind of credential, in words (never the value): `header x-apikey`, `query parameter apikey`.
    pub fn describe(&self) -> String {
        match &self.injection {
            Injection::Headers(h) => {
                let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
                format!("header {}", names.join(" + "))
            }
            Injection::Query { param, .. } => format!("query parameter {param}"),
            Injection::OAuth2(t) => format!("oauth2 client credentials from {}", t.settings.token_url),
        }
    }

    /// Header names this credential sets (callers' copies are removed before injection).
    pub fn header_names(&self) -> Vec<HeaderName> {
        match &self.injection {
            Injection::Headers(h) => h.iter().map(|(n, _)| n.clone()).collect(),
            Injection::Query { .. } => Vec::new(),
            Injection::OAuth2(_) => vec![http::header::AUTHORIZATION],
        }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass through).
pub fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Removes every `param=` from a query string and appends `param=value` (so the upstream sees
/// exactly one, the injected one).
pub fn inject_query(query: Option<&str>, param: &str, value: &str) -> String {
    let mut out = String::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let name = pair.split('=').next().unwrap_or("");
        if name.eq_ignore_ascii_case(param) || name.eq_ignore_ascii_case(&encode_query_value(param)) {
            continue;
        }
        out.push_str(pair);
        out.push('&');
    }
    out.push_str(&encode_query_value(param));
    out.push('=');
    out.push_str(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        let c = Credential {
            id: "vt".into(),
            id_shared: "vt".into(),
            injection: Injection::Query { param: "k".into(), value: s.clone() },
            callers: vec![],
            default: true,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", SecretRef::parse("hunter2")).contains("hunter2"));
    }

    #[test]
    fn query_injection_replaces_caller_copies() {
        assert_eq!(inject_query(Some("q=1&apikey=caller&x=2"), "apikey", "s3%20cr"), "q=1&x=2&apikey=s3%20cr");
        assert_eq!(inject_query(Some("APIKEY=a"), "apikey", "v"), "apikey=v");
        assert_eq!(inject_query(None, "key", "v"), "key=v");
        assert_eq!(encode_query_value("a b/c+d"), "a%20b%2Fc%2Bd");
    }

    #[test]
    fn file_refs_are_relative_to_the_policies_dir_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), "abc\n").unwrap();
        assert_eq!(SecretRef::parse("file:k").resolve(dir.path()).unwrap().expose(), "abc");
        let err = SecretRef::parse("file:missing").resolve(dir.path()).unwrap_err();
        assert!(err.contains("cannot read secret file"));
        assert!(SecretRef::parse("env:INTERLOCK_TEST_SURELY_UNSET").resolve(dir.path()).is_err());
    }
}
