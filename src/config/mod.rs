//! Configuration: the `policies/` directory compiled into one immutable [`Config`].
//!
//! - `raw.rs`: serde shapes of the YAML files, also the source of the published JSON Schema.
//! - `yaml.rs`: reading a file while keeping locations and collecting unknown keys.
//! - `compile.rs`: raw → typed, collecting **every** error with file, line and key.
//! - `units.rs`: durations and sizes.
//! - `reload.rs`: the store holding the live snapshot and the reload loop.
//!
//! Layers never read this module's types wholesale at runtime: the proxy takes the compiled
//! router, routes and upstreams of one snapshot; the listener takes its limits.

pub mod compile;
pub mod mappings;
pub mod raw;
pub mod reload;
pub mod units;
pub mod yaml;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::HeaderName;
use http::uri::{Authority, Scheme};
use http::Method;

use crate::identity::Identity;
use crate::proxy::router::{HostPattern, Rewrite, Router, Template};
use crate::tls::ClientAuth;

pub use compile::{load, load_mappings};

/// One configuration problem, located as precisely as the source allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given (relative to where the gateway was started when the dir was relative).
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key path inside the file (`routes[1].match.path`), empty for whole-file problems.
    pub key: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl ConfigError {
    /// An error at a line (if known) and key.
    pub fn at(file: &Path, line: Option<usize>, key: &str, message: String) -> ConfigError {
        ConfigError { file: file.to_path_buf(), line: line.filter(|l| *l > 0), key: key.to_owned(), message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// Where an item was defined, for `check` output and `/config/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Source file.
    pub file: PathBuf,
    /// Line of the item.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A compiled configuration snapshot. Immutable; reload builds a new one.
#[derive(Debug)]
pub struct Config {
    /// The policies directory it was read from.
    pub dir: PathBuf,
    /// Process-wide settings.
    pub gateway: Gateway,
    /// Upstreams, indexed by [`Route::upstream`].
    pub upstreams: Vec<Upstream>,
    /// Routes, indexed by the router's matches.
    pub routes: Vec<Route>,
    /// Translation mappings (`mappings/*.yaml`).
    pub mappings: Vec<std::sync::Arc<crate::translate::Mapping>>,
    /// The route table.
    pub router: Router,
    /// Callers and how they authenticate (`callers.yaml`).
    pub identity: Identity,
    /// Problems that do not stop the config from loading (e.g. a certificate about to expire).
    pub warnings: Vec<ConfigError>,
    /// Files outside the policies directory that the config reads (certificates, keys, JWKS):
    /// watched too, so replacing one reloads the config.
    pub external_files: Vec<PathBuf>,
}

impl Config {
    /// The upstream with this id.
    pub fn upstream(&self, id: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.id == id)
    }
}

/// Settings from `gateway.yaml`.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Data-plane listeners.
    pub listeners: Vec<Listener>,
    /// Admin listener address.
    pub admin_bind: SocketAddr,
    /// Hosts accepted in HTTP/1.1 absolute-form targets (lower case).
    pub server_names: Vec<String>,
    /// Request limits.
    pub limits: Limits,
    /// Peers whose forwarding headers are trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Request id header.
    pub request_id_header: HeaderName,
    /// Keep well-formed incoming request ids.
    pub trust_incoming_request_id: bool,
    /// Drain period on shutdown.
    pub shutdown_grace: Duration,
    /// Log format and filter.
    pub log: LogSettings,
    /// Worker threads (0 = per core).
    pub worker_threads: usize,
    /// Watch the directory for changes.
    pub watch: bool,
    /// Quiet period before a watched change is applied.
    pub watch_debounce: Duration,
    /// Access log and audit settings (start-up only).
    pub telemetry: crate::telemetry::TelemetrySettings,
    /// Bearer token for the admin API.
    pub admin_token: Option<crate::credentials::Secret>,
    /// `cluster.redis`: where shared limits are counted.
    pub cluster_redis: Option<crate::ratelimit::shared::Settings>,
    /// Response cache budget in bytes (`cache.max_bytes`).
    pub cache_bytes: u64,
}

/// One data-plane listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Name for logs.
    pub name: String,
    /// Bound address.
    pub bind: SocketAddr,
    /// Concurrent connection cap.
    pub max_connections: usize,
    /// Serve HTTP/1.1.
    pub http1: bool,
    /// Serve HTTP/2 (prior knowledge on plain listeners, ALPN `h2` on TLS listeners).
    pub h2c: bool,
    /// TLS termination.
    pub tls: Option<ListenerTls>,
}

impl Listener {
    /// Same socket and protocols (what a reload cannot change without a restart).
    pub fn same_socket(&self, other: &Listener) -> bool {
        self.name == other.name
            && self.bind == other.bind
            && self.max_connections == other.max_connections
            && self.http1 == other.http1
            && self.h2c == other.h2c
            && self.tls.is_some() == other.tls.is_some()
    }
}

/// TLS termination on a listener. The certificates can change on reload; new handshakes use them.
#[derive(Clone)]
pub struct ListenerTls {
    /// The rustls server configuration (certificates by SNI, client verification, ALPN).
    pub server: std::sync::Arc<rustls::ServerConfig>,
    /// Time allowed for the handshake.
    pub handshake_timeout: Duration,
    /// Client certificate mode.
    pub client_auth: ClientAuth,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

/// Request limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Total header bytes.
    pub max_header_bytes: usize,
    /// Header field count.
    pub max_headers: usize,
    /// Default body limit.
    pub max_body: u64,
    /// Time to receive a request head (and idle keep-alive time).
    pub header_read_timeout: Duration,
    /// Time from request arrival to the upstream's response head.
    pub request_timeout: Duration,
}

/// Log output settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// JSON lines (true) or human-readable.
    pub json: bool,
    /// `tracing_subscriber::EnvFilter` directive.
    pub level: String,
}

/// An IPv4/IPv6 network (`10.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `a.b.c.d`, `a.b.c.d/n`, or the IPv6 forms.
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let (a, p) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: std::net::IpAddr = a.parse().map_err(|_| format!("`{text}` is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}` has an invalid prefix length"))?,
        };
        Ok(IpNet { addr, prefix })
    }

    /// True when `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map(V4).unwrap_or(V6(v6)),
            v4 => v4,
        };
        match (self.addr, ip) {
            (V4(n), V4(i)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (V6(n), V6(i)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// A compiled upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Id.
    pub id: String,
    /// The id, shared cheaply with per-request records.
    pub id_shared: std::sync::Arc<str>,
    /// Where it was defined.
    pub origin: Origin,
    /// Base URLs.
    pub endpoints: Vec<Endpoint>,
    /// Protocol towards it.
    pub protocol: UpstreamProtocol,
    /// TLS client configuration (roots, client certificate, pins).
    pub tls: TlsClient,
    /// What `tls` was built from, to decide whether a reload may keep the connection pool.
    pub tls_inputs: UpstreamTlsInputs,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time to response head, if set on the upstream.
    pub timeout: Option<Duration>,
    /// Idle pooled connection lifetime.
    pub pool_idle_timeout: Duration,
    /// Idle connections per endpoint.
    pub pool_max_idle_per_host: usize,
    /// The credentials it can inject (one, or one per vendor tenant chosen by caller).
    pub credentials: Vec<crate::credentials::Credential>,
    /// Request headers removed before forwarding, in addition to the standard ones.
    pub strip_headers: Vec<HeaderName>,
    /// The vendor-account quota and pacing (absent: the vendor's signals are not read).
    pub quota: Option<std::sync::Arc<crate::ratelimit::Quota>>,
    /// Retries (absent: none).
    pub retry: Option<std::sync::Arc<crate::upstream::resilience::RetryPolicy>>,
    /// The retry budget.
    pub retry_budget: crate::upstream::resilience::BudgetSettings,
    /// Circuit breaking per endpoint (absent: off).
    pub circuit: Option<crate::upstream::resilience::CircuitSettings>,
    /// Active health checks (absent: off).
    pub health_check: Option<crate::upstream::resilience::HealthCheck>,
    /// Requests in flight beyond which new ones are shed (503).
    pub max_concurrent: Option<usize>,
}

impl Upstream {
    /// The credential for `caller` on `route`: the route's choice, else the caller's own, else the
    /// default. `Err` when the upstream has credentials but none for this caller.
    pub fn credential_for(
        &self,
        route: &Route,
        caller: Option<&str>,
    ) -> Result<Option<&crate::credentials::Credential>, NoCredentialFor> {
        if self.credentials.is_empty() {
            return Ok(None);
        }
        if let Some(i) = route.credential {
            return Ok(self.credentials.get(i));
        }
        if let Some(c) = caller {
            if let Some(cred) = self.credentials.iter().find(|x| x.callers.iter().any(|y| y == c)) {
                return Ok(Some(cred));
            }
        }
        self.credentials.iter().find(|x| x.default).map(Some).ok_or(NoCredentialFor)
    }

    /// True when the connection pool built for `self` can serve `other` unchanged.
    pub fn same_transport(&self, other: &Upstream) -> bool {
        self.protocol == other.protocol
            && self.tls_inputs == other.tls_inputs
            && self.connect_timeout == other.connect_timeout
            && self.pool_idle_timeout == other.pool_idle_timeout
            && self.pool_max_idle_per_host == other.pool_max_idle_per_host
    }
}

/// The upstream has per-caller credentials and none for this caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoCredentialFor;

/// A ready rustls client configuration (its Debug output is short and stable).
#[derive(Clone)]
pub struct TlsClient(pub std::sync::Arc<rustls::ClientConfig>);

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsClient")
    }
}

/// The inputs of an upstream's TLS client configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTlsInputs {
    /// Extra trusted CA certificates (DER).
    pub ca_certs: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Trust the OS roots.
    pub system_roots: bool,
    /// Client certificate chain for upstream mTLS.
    pub client_cert: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// SHA-256 of the client key (the key itself is not kept here).
    pub client_key_digest: Option<[u8; 32]>,
    /// SNI / verification name override.
    pub server_name: Option<String>,
    /// TLS 1.3 only.
    pub min_13: bool,
    /// Accepted SPKI pins.
    pub pins: Vec<String>,
}

/// One base URL of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and port.
    pub authority: Authority,
    /// Path prefix without a trailing slash (`/api/v3`, or empty).
    pub base_path: String,
}

/// Protocol towards an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// ALPN on https (h2 preferred), HTTP/1.1 on http.
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (ALPN h2 on https, prior knowledge on http).
    Http2,
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Id.
    pub id: String,
    /// The id, shared cheaply with per-request records.
    pub id_shared: std::sync::Arc<str>,
    /// The path template as written (`/vt/files/{hash}`), for the `http.route` span attribute.
    pub template_text: std::sync::Arc<str>,
    /// Where it was defined.
    pub origin: Origin,
    /// Path template.
    pub template: Template,
    /// Host pattern.
    pub host: Option<HostPattern>,
    /// Methods (None = any but CONNECT).
    pub methods: Option<Vec<Method>>,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Path rewrite.
    pub rewrite: Option<Rewrite>,
    /// Upgrades allowed.
    pub upgrade: bool,
    /// Callers without an identity are served.
    pub anonymous: bool,
    /// Refuse calls while the audit trail cannot be written.
    pub audit_required: bool,
    /// Who may call.
    pub policy: crate::policy::Policy,
    /// Credential (index into the upstream's) used for every caller of this route.
    pub credential: Option<usize>,
    /// Time to response head (route, else upstream, else gateway).
    pub timeout: Duration,
    /// Body limit.
    pub max_body: u64,
    /// The route's own rate limits (per caller, total), checked before the vendor-account quota.
    pub rate_limits: Vec<std::sync::Arc<crate::ratelimit::LimitSpec>>,
    /// The retry policy in force (the route's over the upstream's), if any.
    pub retry: Option<std::sync::Arc<crate::upstream::resilience::RetryPolicy>>,
    /// Response translation.
    pub translate: Option<crate::translate::RouteTranslate>,
    /// Response caching.
    pub cache: Option<std::sync::Arc<crate::cache::CachePolicy>>,
}
