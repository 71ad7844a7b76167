//! Secrets by reference and the credential the gateway injects upstream.
//!
//! The compiler resolves a reference (`env:NAME`, `file:path`, or any installed [`SecretSource`])
//! into a [`Secret`] once per config snapshot; the proxy only ever sees the resolved header. A
//! [`Secret`] prints `[redacted]` in every `Debug`/`Display`, and injected header values are marked
//! sensitive so HTTP/2 never indexes them. Nothing in this module logs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};

pub mod oauth2;
pub mod source;

pub use source::{SecretSource, SecretSources};

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
    /// `scheme:reference` for an installed [`SecretSource`] (`env:NAME`, `file:path`, ...).
    Sourced {
        /// The source's scheme.
        scheme: String,
        /// The text after the colon.
        reference: String,
    },
    /// A literal value: allowed only in files marked `dev_fixture: true`.
    Inline(Secret),
}

impl SecretRef {
    /// Parses a reference against the installed sources; text without a known scheme is inline.
    pub fn parse(text: &str) -> SecretRef {
        Self::parse_with(text, SecretSources::get())
    }

    /// Parses a reference against the given sources.
    pub fn parse_with(text: &str, sources: &SecretSources) -> SecretRef {
        if let Some((scheme, reference)) = text.split_once(':') {
            if sources.find(scheme).is_some() {
                return SecretRef::Sourced { scheme: scheme.to_owned(), reference: reference.to_owned() };
            }
        }
        SecretRef::Inline(Secret::new(text))
    }

    /// For an inline value that looks like `scheme:...` with an unknown scheme, a sentence saying so.
    pub fn unknown_scheme(&self) -> Option<String> {
        let SecretRef::Inline(s) = self else { return None };
        let (scheme, _) = s.expose().split_once(':')?;
        let plausible = !scheme.is_empty()
            && scheme.len() <= 32
            && scheme.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        plausible.then(|| {
            format!("unknown secret source `{scheme}:` (installed sources: {})", SecretSources::get().schemes())
        })
    }

    /// Reads the secret now. Errors are sentences that never contain the value.
    pub fn resolve(&self, policies_dir: &Path) -> Result<Secret, String> {
        self.resolve_with(policies_dir, SecretSources::get())
    }

    /// Reads the secret now from the given sources.
    pub fn resolve_with(&self, policies_dir: &Path, sources: &SecretSources) -> Result<Secret, String> {
        match self {
            SecretRef::Sourced { scheme, reference } => match sources.find(scheme) {
                Some(source) => source.resolve(reference, policies_dir),
                None => Err(format!("unknown secret source `{scheme}:`")),
            },
            SecretRef::Inline(s) => Ok(s.clone()),
        }
    }

    /// The local file whose change means this secret changed, if any.
    pub fn watch_path(&self, policies_dir: &Path) -> Option<PathBuf> {
        match self {
            SecretRef::Sourced { scheme, reference } => {
                SecretSources::get().find(scheme)?.watch_path(reference, policies_dir)
            }
            SecretRef::Inline(_) => None,
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

    /// A stand-in for a vault backend: secrets by path from an in-memory map.
    struct MapSource(std::collections::HashMap<&'static str, &'static str>);

    impl SecretSource for MapSource {
        fn scheme(&self) -> &str {
            "vault"
        }
        fn resolve(&self, reference: &str, _: &Path) -> Result<Secret, String> {
            self.0.get(reference).map(|v| Secret::new(*v)).ok_or_else(|| format!("no secret at `{reference}`"))
        }
    }

    #[test]
    fn an_added_source_is_parsed_and_resolved_by_its_scheme() {
        let sources = SecretSources::default().with(MapSource([("kv/edr", "s3cr3t")].into_iter().collect()));
        let dir = Path::new("/nonexistent");
        let r = SecretRef::parse_with("vault:kv/edr", &sources);
        assert_eq!(r, SecretRef::Sourced { scheme: "vault".into(), reference: "kv/edr".into() });
        assert_eq!(r.resolve_with(dir, &sources).unwrap().expose(), "s3cr3t");
        let missing = SecretRef::parse_with("vault:kv/none", &sources).resolve_with(dir, &sources).unwrap_err();
        assert_eq!(missing, "no secret at `kv/none`");
        // Built-ins stay; the schemes list names all of them for error messages.
        assert!(matches!(SecretRef::parse_with("env:X", &sources), SecretRef::Sourced { .. }));
        assert_eq!(sources.schemes(), "`env:`, `file:`, `vault:`");
        // Without the source, the same text is an inline value that is reported as an unknown scheme.
        let plain = SecretRef::parse_with("vault:kv/edr", &SecretSources::default());
        assert!(plain.unknown_scheme().unwrap().contains("unknown secret source `vault:`"));
        assert_eq!(SecretRef::parse("Zm9vYmFy").unknown_scheme(), None);
    }
}
