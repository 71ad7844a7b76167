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

/// A credential injected as one request header.
#[derive(Clone)]
pub struct HeaderCredential {
    /// Id shown in logs, traces and audit.
    pub id: String,
    /// The id, shared cheaply with per-request records.
    pub id_shared: Arc<str>,
    /// Header name.
    pub name: HeaderName,
    /// Full header value (prefix + secret), marked sensitive.
    pub value: HeaderValue,
}

impl fmt::Debug for HeaderCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderCredential")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("value", &"[redacted]")
            .finish()
    }
}

impl HeaderCredential {
    /// Builds the header from a prefix and a secret.
    pub fn new(id: String, name: HeaderName, prefix: &str, secret: &Secret) -> Result<Self, String> {
        let mut v = HeaderValue::try_from(format!("{prefix}{}", secret.expose()))
            .map_err(|_| "the secret contains bytes that are not allowed in an HTTP header".to_owned())?;
        v.set_sensitive(true);
        Ok(HeaderCredential { id_shared: id.as_str().into(), id, name, value: v })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        let c = HeaderCredential::new("vt".into(), HeaderName::from_static("x-apikey"), "", &s).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(c.value.is_sensitive());
        assert!(!format!("{:?}", SecretRef::parse("hunter2")).contains("hunter2"));
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
