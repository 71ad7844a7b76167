//! Pluggable secret sources: where `scheme:reference` values in config are read from.
//!
//! Two sources are built in: `env:` (an environment variable of the gateway process) and `file:`
//! (a file, watched so that rotation is a file write). A deployment that keeps secrets elsewhere
//! (a vault, a cloud secret manager) implements [`SecretSource`] and installs it with
//! [`SecretSources::install`] before the first config load; config then accepts `scheme:reference`
//! for that scheme everywhere a secret is accepted.
//!
//! Resolution happens while a config snapshot is compiled, on a blocking thread, so a source may do
//! blocking I/O. A source whose secrets rotate without a file changing asks for a reload through
//! `POST /reload` (or the `SIGHUP` handler) when it notices the change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::Secret;

/// One place secrets are read from, named by the scheme written before the colon in config.
pub trait SecretSource: Send + Sync + 'static {
    /// The scheme, without the colon: `env`, `file`, `vault`. Lowercase ASCII letters, digits and `-`.
    fn scheme(&self) -> &str;

    /// Reads the secret named by `reference` (the text after `scheme:`). `policies_dir` is the
    /// directory relative paths are resolved against. The error is a sentence shown to the operator
    /// next to the config file, line and key: it must never contain the secret.
    fn resolve(&self, reference: &str, policies_dir: &Path) -> Result<Secret, String>;

    /// A local file whose change means the secret changed, so the config watcher reloads on it.
    fn watch_path(&self, reference: &str, policies_dir: &Path) -> Option<PathBuf> {
        let _ = (reference, policies_dir);
        None
    }
}

/// `env:NAME`: an environment variable; empty counts as unset.
#[derive(Debug, Default)]
pub struct EnvSource;

impl SecretSource for EnvSource {
    fn scheme(&self) -> &str {
        "env"
    }

    fn resolve(&self, name: &str, _: &Path) -> Result<Secret, String> {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
            Ok(_) => Err(format!("environment variable `{name}` is empty")),
            Err(_) => Err(format!("environment variable `{name}` is not set (or not UTF-8)")),
        }
    }
}

/// `file:path`: a file, relative to the policies directory; one trailing newline is removed.
#[derive(Debug, Default)]
pub struct FileSource;

impl SecretSource for FileSource {
    fn scheme(&self) -> &str {
        "file"
    }

    fn resolve(&self, path: &str, policies_dir: &Path) -> Result<Secret, String> {
        let p = policies_dir.join(path);
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

    fn watch_path(&self, path: &str, policies_dir: &Path) -> Option<PathBuf> {
        Some(policies_dir.join(path))
    }
}

/// The set of secret sources config may name.
#[derive(Clone)]
pub struct SecretSources {
    sources: Vec<Arc<dyn SecretSource>>,
}

impl Default for SecretSources {
    fn default() -> Self {
        SecretSources { sources: vec![Arc::new(EnvSource), Arc::new(FileSource)] }
    }
}

static INSTALLED: OnceLock<SecretSources> = OnceLock::new();

impl SecretSources {
    /// Adds a source, replacing a built-in one with the same scheme.
    pub fn with(mut self, source: impl SecretSource) -> Self {
        let scheme = source.scheme().to_owned();
        self.sources.retain(|s| s.scheme() != scheme);
        self.sources.push(Arc::new(source));
        self
    }

    /// Makes these the sources every config load uses. Call once, before the gateway starts;
    /// returns the set back if sources were already installed (or already used).
    pub fn install(self) -> Result<(), SecretSources> {
        INSTALLED.set(self)
    }

    /// The installed sources (the built-in `env` and `file` unless [`SecretSources::install`] ran).
    pub fn get() -> &'static SecretSources {
        INSTALLED.get_or_init(SecretSources::default)
    }

    /// The source for a scheme.
    pub fn find(&self, scheme: &str) -> Option<&dyn SecretSource> {
        self.sources.iter().find(|s| s.scheme() == scheme).map(|s| s.as_ref())
    }

    /// The schemes, for messages: `env:, file:`.
    pub fn schemes(&self) -> String {
        self.sources.iter().map(|s| format!("`{}:`", s.scheme())).collect::<Vec<_>>().join(", ")
    }
}

impl std::fmt::Debug for SecretSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.sources.iter().map(|s| s.scheme().to_owned())).finish()
    }
}
