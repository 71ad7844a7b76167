//! Compiling the `policies/` directory into a [`Config`], collecting every error at once.
//!
//! Layout read here:
//!
//! ```text
//! policies/
//!   gateway.yaml          listeners, admin, limits, logging        (required)
//!   upstreams/*.yaml      one upstream per file
//!   routes/*.yaml         a list of routes per file
//!   mappings/*.yaml       translation mappings (jq programs to OCSF, ECS or STIX)
//! ```
//!
//! Each file is parsed independently, so one broken file never hides the errors of another; then
//! cross-file checks (duplicate ids, missing upstreams, shadowed routes) run over whatever parsed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::HeaderName;
use http::uri::{Authority, Scheme};
use http::{Method, Uri};

use super::raw::{
    DurationText, RawCallers, RawGateway, RawListenerTls, RawRoute, RawUpstream, RawUpstreamTls, SizeText,
};
use super::units::{parse_duration, parse_size};
use super::yaml::{self, Sp};
use super::{
    Config, ConfigError, Endpoint, Gateway, IpNet, Limits, Listener, ListenerTls, LogSettings, Origin, Route,
    TlsClient, Upstream, UpstreamProtocol, UpstreamTlsInputs,
};
use crate::credentials::SecretRef;
use crate::identity::jwt::{parse_algorithm, parse_jwks, JwksSource, JwtIssuer};
use crate::identity::{CallerDef, Identity};
use crate::proxy::router::{HostPattern, Rewrite, RouterBuilder, Template, MAX_CAPTURES};
use crate::tls::{self, ClientAuth};

/// Default admin address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// What compiling collects besides errors.
#[derive(Default)]
struct Side {
    warnings: Vec<ConfigError>,
    external_files: Vec<PathBuf>,
}

impl Side {
    /// Resolves a path from config against the policies directory, remembering files outside it.
    fn file(&mut self, dir: &Path, rel: &str) -> PathBuf {
        let p = dir.join(rel);
        self.watch(dir, p.clone());
        p
    }
    /// Remembers a file the watcher must follow when it is outside the policies directory.
    fn watch(&mut self, dir: &Path, p: PathBuf) {
        if !p.starts_with(dir) && !self.external_files.contains(&p) {
            self.external_files.push(p);
        }
    }
}

/// Collects errors for one file.
struct Errs<'a> {
    file: &'a Path,
    out: &'a mut Vec<ConfigError>,
}

impl Errs<'_> {
    fn push<T>(&mut self, at: &Sp<T>, key: &str, msg: impl Into<String>) {
        self.out.push(ConfigError::at(self.file, Some(at.line), key, msg.into()));
    }
    fn push_line(&mut self, line: Option<usize>, key: &str, msg: impl Into<String>) {
        self.out.push(ConfigError::at(self.file, line, key, msg.into()));
    }
    fn duration(&mut self, v: &Option<Sp<DurationText>>, key: &str, default: Duration) -> Duration {
        match v {
            None => default,
            Some(sp) => parse_duration(&sp.value.0).unwrap_or_else(|e| {
                self.push(sp, key, e);
                default
            }),
        }
    }
    fn size(&mut self, v: &Option<Sp<SizeText>>, key: &str, default: u64) -> u64 {
        match v {
            None => default,
            Some(sp) => parse_size(&sp.value.0).unwrap_or_else(|e| {
                self.push(sp, key, e);
                default
            }),
        }
    }
}

/// Reads and compiles the policies directory. On failure, returns every error found.
pub fn load(dir: &Path) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    if !dir.is_dir() {
        errors.push(ConfigError::at(
            dir,
            None,
            "",
            "is not a directory: pass the policies directory (e.g. `--config policies/`)".to_owned(),
        ));
        return Err(errors);
    }
    check_layout(dir, &mut errors);
    let mut side = Side::default();

    let gw_path = dir.join("gateway.yaml");
    let gateway = match std::fs::read_to_string(&gw_path) {
        Ok(text) => {
            let parsed = yaml::parse::<RawGateway>(&gw_path, &text, &mut errors);
            parsed.map(|p| compile_gateway(dir, &gw_path, p.value, &mut side, &mut errors))
        }
        Err(e) => {
            errors.push(ConfigError::at(
                &gw_path,
                None,
                "",
                format!("cannot read: {e} (every policies directory needs a gateway.yaml)"),
            ));
            None
        }
    };

    let callers_path = dir.join("callers.yaml");
    let identity = if callers_path.is_file() {
        read(&callers_path, &mut errors)
            .and_then(|text| yaml::parse::<RawCallers>(&callers_path, &text, &mut errors))
            .map(|p| compile_callers(dir, &callers_path, p.value, &mut side, &mut errors))
            .unwrap_or_default()
    } else {
        Identity::default()
    };

    let mut upstreams: Vec<Upstream> = Vec::new();
    for path in yaml_files(&dir.join("upstreams"), &mut errors) {
        let Some(text) = read(&path, &mut errors) else { continue };
        let Some(parsed) = yaml::parse::<RawUpstream>(&path, &text, &mut errors) else { continue };
        if let Some(mut u) = compile_upstream(dir, &path, parsed.value, &mut side, &mut errors) {
            // The API key header is a caller credential: never forwarded (invariant 2).
            if !u.strip_headers.contains(&identity.api_key_header) {
                u.strip_headers.push(identity.api_key_header.clone());
            }
            if let Some(prev) = upstreams.iter().find(|p| p.id == u.id) {
                errors.push(ConfigError::at(
                    &path,
                    Some(u.origin.line),
                    "id",
                    format!("duplicate upstream id `{}` (first defined at {})", u.id, prev.origin),
                ));
            } else {
                upstreams.push(u);
            }
        }
    }

    let mappings = compile_mappings(&dir.join("mappings"), &mut errors);

    let mut routes: Vec<Route> = Vec::new();
    let default_limits = gateway.as_ref().map(|g| g.limits.clone()).unwrap_or_else(default_limits);
    for path in yaml_files(&dir.join("routes"), &mut errors) {
        let Some(text) = read(&path, &mut errors) else { continue };
        let Some(parsed) = yaml::parse::<Vec<RawRoute>>(&path, &text, &mut errors) else { continue };
        for (i, raw) in parsed.value.into_iter().enumerate() {
            let key = format!("[{i}]");
            if let Some(r) = compile_route(&path, &key, raw, &upstreams, &mappings, &default_limits, &mut errors) {
                if let Some(prev) = routes.iter().find(|p| p.id == r.id) {
                    errors.push(ConfigError::at(
                        &path,
                        Some(r.origin.line),
                        &format!("{key}.id"),
                        format!("duplicate route id `{}` (first defined at {})", r.id, prev.origin),
                    ));
                } else {
                    routes.push(r);
                }
            }
        }
    }
    check_overlaps(&routes, &mut errors);
    if gateway.as_ref().is_some_and(|g| g.cluster_redis.is_none()) {
        for r in routes.iter().filter(|r| r.cache.as_ref().is_some_and(|c| c.redis)) {
            errors.push(ConfigError::at(
                &r.origin.file,
                Some(r.origin.line),
                &format!("{}.cache.redis", r.id),
                "needs `cluster.redis` in gateway.yaml".to_owned(),
            ));
        }
    }

    let Some(gateway) = gateway else { return Err(errors) };
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut builder = RouterBuilder::default();
    for (i, r) in routes.iter().enumerate() {
        builder.add(i, r.template.clone(), r.host.clone(), r.methods.clone());
    }
    Ok(Config {
        dir: dir.to_path_buf(),
        gateway,
        upstreams,
        routes,
        mappings,
        router: builder.build(),
        identity,
        warnings: side.warnings,
        external_files: side.external_files,
    })
}

/// Compiles the mapping files of a `mappings/` directory (the translation CLI uses it alone).
pub fn load_mappings(dir: &Path) -> Result<Vec<std::sync::Arc<crate::translate::Mapping>>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    if !dir.is_dir() {
        errors.push(ConfigError::at(
            dir,
            None,
            "",
            "no such directory: give the policies directory or its mappings/".to_owned(),
        ));
        return Err(errors);
    }
    let mappings = compile_mappings(dir, &mut errors);
    if errors.is_empty() {
        Ok(mappings)
    } else {
        Err(errors)
    }
}

fn compile_mappings(dir: &Path, errors: &mut Vec<ConfigError>) -> Vec<std::sync::Arc<crate::translate::Mapping>> {
    let mut mappings: Vec<std::sync::Arc<crate::translate::Mapping>> = Vec::new();
    for path in yaml_files(dir, errors) {
        let Some(text) = read(&path, errors) else { continue };
        let Some(parsed) = yaml::parse::<super::raw::RawMapping>(&path, &text, errors) else { continue };
        if let Some(m) = super::mappings::compile(&path, &text, parsed.value, errors) {
            if let Some(prev) = mappings.iter().find(|p| p.id == m.id) {
                errors.push(ConfigError::at(
                    &path,
                    Some(m.origin.line),
                    "id",
                    format!("duplicate mapping id `{}` (first defined at {})", m.id, prev.origin),
                ));
            } else {
                mappings.push(std::sync::Arc::new(m));
            }
        }
    }
    mappings
}

/// Unknown entries in the directory are errors: a misspelt `gatway.yaml` must not be ignored.
fn check_layout(dir: &Path, errors: &mut Vec<ConfigError>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.path().is_dir();
        let known = match name.as_str() {
            "gateway.yaml" => !is_dir,
            "upstreams" | "routes" => is_dir,
            "callers.yaml" => !is_dir,
            "mappings" => is_dir,
            // Other directories (certs/, secrets/, demo/) may sit beside the config.
            _ => is_dir || name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")),
        };
        if !known {
            let msg = format!(
                "unexpected `{name}`: the policies directory holds gateway.yaml, callers.yaml, upstreams/, routes/ and mappings/"
            );
            errors.push(ConfigError::at(&e.path(), None, "", msg));
        }
    }
}

fn yaml_files(dir: &Path, errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.push(ConfigError::at(dir, None, "", format!("cannot list: {e}")));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            !n.starts_with('.') && (n.ends_with(".yaml") || n.ends_with(".yml"))
        })
        .collect();
    files.sort();
    files
}

fn read(path: &Path, errors: &mut Vec<ConfigError>) -> Option<String> {
    std::fs::read_to_string(path)
        .map_err(|e| errors.push(ConfigError::at(path, None, "", format!("cannot read: {e}"))))
        .ok()
}

fn default_limits() -> Limits {
    Limits {
        max_header_bytes: 32 * 1024,
        max_headers: 100,
        max_body: 10 * 1024 * 1024,
        header_read_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(60),
    }
}

fn compile_gateway(dir: &Path, file: &Path, raw: RawGateway, side: &mut Side, out: &mut Vec<ConfigError>) -> Gateway {
    let mut e = Errs { file, out };
    let mut listeners = Vec::new();
    for (i, l) in raw.listeners.iter().enumerate() {
        let key = format!("listeners[{i}]");
        let bind = match l.bind.value.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                e.push(
                    &l.bind,
                    &format!("{key}.bind"),
                    format!("`{}` is not an address like `0.0.0.0:8080`", l.bind.value),
                );
                continue;
            }
        };
        let (mut http1, mut h2c) = (true, true);
        if let Some(ps) = &l.protocols {
            http1 = false;
            h2c = false;
            for p in ps {
                match p.value.as_str() {
                    "http1" => http1 = true,
                    "h2c" => h2c = true,
                    other => e.push(
                        p,
                        &format!("{key}.protocols"),
                        format!("unknown protocol `{other}`: use `http1` or `h2c`"),
                    ),
                }
            }
            if !http1 && !h2c {
                e.push(&l.bind, &format!("{key}.protocols"), "a listener needs at least one protocol");
            }
        }
        if bind.port() != 0 && listeners.iter().any(|x: &Listener| x.bind == bind) {
            e.push(&l.bind, &format!("{key}.bind"), format!("`{bind}` is bound by another listener"));
        }
        let max_connections = match &l.max_connections {
            Some(m) if m.value == 0 => {
                e.push(m, &format!("{key}.max_connections"), "must be at least 1");
                1
            }
            Some(m) => usize::try_from(m.value).unwrap_or(usize::MAX),
            None => 10_000,
        };
        let tls = l.tls.as_ref().and_then(|t| compile_listener_tls(dir, &key, t, http1, h2c, side, &mut e));
        listeners.push(Listener {
            name: l.name.as_ref().map(|n| n.value.clone()).unwrap_or_else(|| format!("listener-{i}")),
            bind,
            max_connections,
            http1,
            h2c,
            tls,
        });
    }
    let admin_bind = match raw.admin.as_ref().and_then(|a| a.bind.as_ref()) {
        None => DEFAULT_ADMIN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9901))),
        Some(b) => match b.value.parse::<SocketAddr>() {
            Ok(a) => {
                if a.port() != 0 && listeners.iter().any(|l| l.bind == a) {
                    e.push(
                        b,
                        "admin.bind",
                        format!("`{a}` is also a data-plane listener; the admin API needs its own port"),
                    );
                }
                a
            }
            Err(_) => {
                e.push(b, "admin.bind", format!("`{}` is not an address like `127.0.0.1:9901`", b.value));
                SocketAddr::from(([127, 0, 0, 1], 9901))
            }
        },
    };
    let d = default_limits();
    let limits = match &raw.limits {
        None => d,
        Some(l) => Limits {
            max_header_bytes: usize::try_from(e.size(
                &l.max_header_bytes,
                "limits.max_header_bytes",
                d.max_header_bytes as u64,
            ))
            .unwrap_or(usize::MAX),
            max_headers: match &l.max_headers {
                Some(n) if n.value == 0 || n.value > 1000 => {
                    e.push(n, "limits.max_headers", "must be between 1 and 1000");
                    d.max_headers
                }
                Some(n) => n.value as usize,
                None => d.max_headers,
            },
            max_body: e.size(&l.max_body, "limits.max_body", d.max_body),
            header_read_timeout: e.duration(
                &l.header_read_timeout,
                "limits.header_read_timeout",
                d.header_read_timeout,
            ),
            request_timeout: e.duration(&l.request_timeout, "limits.request_timeout", d.request_timeout),
        },
    };
    if limits.max_header_bytes > 1024 * 1024 {
        e.push_line(None, "limits.max_header_bytes", "must be at most 1MiB");
    }
    if limits.header_read_timeout.is_zero() || limits.request_timeout.is_zero() {
        e.push_line(None, "limits", "timeouts must be greater than zero");
    }
    let mut trusted_proxies = Vec::new();
    if let Some(f) = &raw.forwarded {
        for (i, t) in f.trusted_proxies.iter().enumerate() {
            match IpNet::parse(&t.value) {
                Ok(n) => trusted_proxies.push(n),
                Err(m) => e.push(t, &format!("forwarded.trusted_proxies[{i}]"), m),
            }
        }
    }
    let request_id_header = match raw.request_id.as_ref().and_then(|r| r.header.as_ref()) {
        None => HeaderName::from_static("x-request-id"),
        Some(h) => HeaderName::from_bytes(h.value.to_ascii_lowercase().as_bytes()).unwrap_or_else(|_| {
            e.push(h, "request_id.header", format!("`{}` is not a valid header name", h.value));
            HeaderName::from_static("x-request-id")
        }),
    };
    let mut server_names = Vec::new();
    for (i, n) in raw.server_names.iter().enumerate() {
        match HostPattern::parse(&n.value) {
            Ok(HostPattern::Exact(h)) => server_names.push(h),
            _ => e.push(
                n,
                &format!("server_names[{i}]"),
                format!("`{}` must be a plain host name such as `interlock.corp`", n.value),
            ),
        }
    }
    let log = raw.log.as_ref();
    let json = match log.and_then(|l| l.format.as_ref()) {
        None => true,
        Some(f) => match f.value.as_str() {
            "json" => true,
            "pretty" => false,
            other => {
                e.push(f, "log.format", format!("unknown format `{other}`: use `json` or `pretty`"));
                true
            }
        },
    };
    let level = log.and_then(|l| l.level.as_ref()).map(|l| l.value.clone()).unwrap_or_else(|| "info".to_owned());
    let shutdown_grace =
        e.duration(&raw.shutdown.as_ref().and_then(|s| s.grace.clone()), "shutdown.grace", Duration::from_secs(30));
    let worker_threads =
        raw.runtime.as_ref().and_then(|r| r.worker_threads.as_ref()).map(|w| w.value as usize).unwrap_or(0);
    let watch = raw.reload.as_ref().and_then(|r| r.watch).unwrap_or(true);
    let watch_debounce = e.duration(
        &raw.reload.as_ref().and_then(|r| r.debounce.clone()),
        "reload.debounce",
        Duration::from_millis(250),
    );
    let telemetry = compile_telemetry(dir, raw.telemetry.as_ref(), side, &mut e);
    let admin_token = raw.admin.as_ref().and_then(|a| a.token.as_ref()).and_then(|t| {
        let r = SecretRef::parse(&t.value);
        if matches!(r, SecretRef::Inline(_)) {
            let m = r.unknown_scheme().unwrap_or_else(|| "inline secret: write `env:NAME` or `file:path`".to_owned());
            e.push(t, "admin.token", m);
            return None;
        }
        if let Some(p) = r.watch_path(dir) {
            side.watch(dir, p);
        }
        r.resolve(dir).map_err(|m| e.push(t, "admin.token", m)).ok()
    });
    let cluster_redis =
        raw.cluster.as_ref().and_then(|c| c.redis.as_ref()).map(|r| compile_redis(dir, r, side, &mut e));
    let cache_bytes = e.size(
        &raw.cache.as_ref().and_then(|c| c.max_bytes.clone()),
        "cache.max_bytes",
        crate::cache::DEFAULT_MAX_BYTES,
    );
    Gateway {
        cache_bytes,
        cluster_redis: cluster_redis.flatten(),
        telemetry,
        admin_token,
        listeners,
        admin_bind,
        server_names,
        limits,
        trusted_proxies,
        request_id_header,
        trust_incoming_request_id: raw.request_id.as_ref().and_then(|r| r.trust_incoming).unwrap_or(true),
        shutdown_grace,
        log: LogSettings { json, level },
        worker_threads,
        watch,
        watch_debounce,
    }
}

fn compile_redis(
    dir: &Path,
    r: &super::raw::RawRedis,
    side: &mut Side,
    e: &mut Errs<'_>,
) -> Option<crate::ratelimit::shared::Settings> {
    let url = r.url.value.trim().to_owned();
    let mut ok = true;
    match url.parse::<Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("redis" | "rediss")) && u.host().is_some() => {
            if u.authority().is_some_and(|a| a.as_str().contains('@')) {
                e.push(&r.url, "cluster.redis.url", "credentials in the URL: put the password in `password: env:NAME`");
                ok = false;
            }
        }
        _ => {
            e.push(&r.url, "cluster.redis.url", format!("`{url}` is not a URL like `redis://127.0.0.1:6379/0`"));
            ok = false;
        }
    }
    let password = r.password.as_ref().map(|p| secret(dir, p, "cluster.redis.password", false, side, e));
    let fail_open = match r.on_unavailable.as_ref().map(|v| (v, v.value.as_str())) {
        None | Some((_, "local")) => true,
        Some((_, "reject")) => false,
        Some((v, other)) => {
            e.push(v, "cluster.redis.on_unavailable", format!("`{other}`: use `local` or `reject`"));
            true
        }
    };
    let timeout = e.duration(&r.timeout, "cluster.redis.timeout", Duration::from_millis(100));
    if timeout.is_zero() {
        e.push_line(r.timeout.as_ref().map(|t| t.line), "cluster.redis.timeout", "must be greater than zero");
    }
    let key_prefix = r.key_prefix.as_ref().map_or_else(|| "interlock".to_owned(), |k| k.value.clone());
    if key_prefix.is_empty() || key_prefix.contains(['{', '}', ' ']) {
        e.push_line(
            r.key_prefix.as_ref().map(|k| k.line),
            "cluster.redis.key_prefix",
            "must be non-empty, without braces or spaces",
        );
    }
    let password = match password {
        Some(None) => return None,
        Some(Some(p)) => Some(p),
        None => None,
    };
    ok.then_some(crate::ratelimit::shared::Settings { url, password, key_prefix, timeout, fail_open })
}

/// `4/1m` or `{limit, per, burst}` windows.
fn compile_windows(list: &[Sp<super::raw::RawWindow>], key: &str, e: &mut Errs<'_>) -> Vec<crate::ratelimit::Window> {
    use super::raw::RawWindow;
    let mut out = Vec::new();
    for (i, w) in list.iter().enumerate() {
        let k = format!("{key}[{i}]");
        let parsed = match &w.value {
            RawWindow::Short(text) => match text.split_once('/') {
                Some((n, per)) => match (n.trim().parse::<u64>(), parse_duration(per.trim())) {
                    (Ok(n), Ok(per)) => Ok((n, per, n)),
                    (Err(_), _) => Err(format!("`{text}`: `{n}` is not a whole number of requests")),
                    (_, Err(m)) => Err(format!("`{text}`: {m}")),
                },
                None => Err(format!("`{text}` is not a window like `100/1m`")),
            },
            RawWindow::Full(f) => match parse_duration(&f.per.0) {
                Ok(per) => Ok((f.limit, per, f.burst.unwrap_or(f.limit))),
                Err(m) => Err(m),
            },
        };
        match parsed {
            Ok((limit, per, burst)) if limit == 0 || burst == 0 || per.is_zero() => {
                e.push(w, &k, "limit, burst and period must be greater than zero")
            }
            Ok(_) if out.len() == crate::ratelimit::MAX_WINDOWS => {
                e.push(w, &k, format!("at most {} windows per limit", crate::ratelimit::MAX_WINDOWS))
            }
            Ok((limit, per, burst)) => out.push(crate::ratelimit::Window { limit, per, burst }),
            Err(m) => e.push(w, &k, m),
        }
    }
    out
}

fn compile_exhausted(
    v: &Option<Sp<super::raw::RawExhausted>>,
    key: &str,
    e: &mut Errs<'_>,
) -> crate::ratelimit::Exhausted {
    use super::raw::RawExhausted;
    use crate::ratelimit::Exhausted;
    let Some(v) = v else { return Exhausted::Reject };
    match &v.value {
        RawExhausted::Word(w) if w == "reject" => Exhausted::Reject,
        RawExhausted::Word(w) => {
            e.push(v, key, format!("`{w}`: use `reject` or `{{ queue: 20s, max_queued: 100 }}`"));
            Exhausted::Reject
        }
        RawExhausted::Queue(q) => match parse_duration(&q.queue.0) {
            Ok(max_wait) if !max_wait.is_zero() => {
                Exhausted::Queue { max_wait, max_queued: q.max_queued.unwrap_or(100).min(1_000_000) as usize }
            }
            Ok(_) => {
                e.push(v, &format!("{key}.queue"), "the wait must be greater than zero (or use `reject`)");
                Exhausted::Reject
            }
            Err(m) => {
                e.push(v, &format!("{key}.queue"), m);
                Exhausted::Reject
            }
        },
    }
}

fn compile_quota(id: &str, q: &super::raw::RawQuota, e: &mut Errs<'_>) -> crate::ratelimit::Quota {
    use crate::ratelimit::{LimitSpec, Quota, Scope};
    let windows = compile_windows(&q.limits, "quota.limits", e);
    let on_exhausted = compile_exhausted(&q.on_exhausted, "quota.on_exhausted", e);
    let dialect = match &q.headers {
        None => crate::ratelimit::vendor::Dialect::None,
        Some(h) => crate::ratelimit::vendor::Dialect::parse(&h.value).unwrap_or_else(|| {
            e.push(
                h,
                "quota.headers",
                format!("`{}`: use `none`, `ietf`, `x-ratelimit`, `okta` or `crowdstrike`", h.value),
            );
            crate::ratelimit::vendor::Dialect::None
        }),
    };
    let spec = LimitSpec::new(
        &format!("upstream:{id}"),
        "account",
        Scope::Account,
        windows,
        on_exhausted,
        q.shared.unwrap_or(true),
    );
    Quota {
        limit: std::sync::Arc::new(spec),
        dialect,
        reserve: q.reserve.unwrap_or(0),
        pause_without_reset: e.duration(&q.pause_without_reset, "quota.pause_without_reset", Duration::from_secs(1)),
        max_pause: e.duration(&q.max_pause, "quota.max_pause", Duration::from_secs(15 * 60)),
    }
}

/// A retry policy; unspecified fields come from `base` (the upstream's policy, for a route).
fn compile_retry(
    r: &super::raw::RawRetry,
    key: &str,
    base: Option<&crate::upstream::resilience::RetryPolicy>,
    e: &mut Errs<'_>,
) -> crate::upstream::resilience::RetryPolicy {
    use crate::upstream::resilience::RetryPolicy;
    let d = base.cloned().unwrap_or(RetryPolicy {
        attempts: 2,
        on_connect: true,
        on_reset: true,
        on_timeout: false,
        statuses: vec![502, 503, 504, 429],
        backoff_base: Duration::from_millis(25),
        backoff_max: Duration::from_millis(250),
        per_try_timeout: None,
        max_retry_after: Duration::from_secs(5),
        replay_body: 64 * 1024,
        non_idempotent: false,
    });
    let attempts = match &r.attempts {
        None => d.attempts,
        Some(a) if a.value == 0 || a.value > 10 => {
            e.push(a, &format!("{key}.attempts"), "must be between 1 (no retries) and 10");
            d.attempts
        }
        Some(a) => a.value as u32,
    };
    let (mut on_connect, mut on_reset, mut on_timeout, mut statuses) =
        (d.on_connect, d.on_reset, d.on_timeout, d.statuses.clone());
    if let Some(list) = &r.on {
        (on_connect, on_reset, on_timeout) = (false, false, false);
        statuses.clear();
        for o in list {
            match &o.value {
                super::raw::RawRetryOn::Code(c) if (500..600).contains(c) || *c == 429 || *c == 408 => {
                    statuses.push(*c)
                }
                super::raw::RawRetryOn::Code(c) => {
                    e.push(o, &format!("{key}.on"), format!("{c}: only 408, 429 and 5xx answers can be retried"))
                }
                super::raw::RawRetryOn::Word(w) => match w.as_str() {
                    "connect" => on_connect = true,
                    "reset" => on_reset = true,
                    "timeout" => on_timeout = true,
                    other => e.push(
                        o,
                        &format!("{key}.on"),
                        format!("`{other}`: use `connect`, `reset`, `timeout` or a status code"),
                    ),
                },
            }
        }
    }
    let backoff_base =
        e.duration(&r.backoff.as_ref().and_then(|b| b.base.clone()), &format!("{key}.backoff.base"), d.backoff_base);
    let backoff_max =
        e.duration(&r.backoff.as_ref().and_then(|b| b.max.clone()), &format!("{key}.backoff.max"), d.backoff_max);
    if backoff_max < backoff_base {
        e.push_line(
            r.backoff.as_ref().and_then(|b| b.max.as_ref()).map(|m| m.line),
            &format!("{key}.backoff.max"),
            "must not be smaller than `base`",
        );
    }
    let per_try_timeout = match &r.per_try_timeout {
        None => d.per_try_timeout,
        Some(t) => Some(e.duration(&Some(t.clone()), &format!("{key}.per_try_timeout"), Duration::from_secs(5))),
    };
    if on_timeout && per_try_timeout.is_none() {
        e.push_line(
            r.on.as_ref().and_then(|l| l.first()).map(|o| o.line),
            &format!("{key}.on"),
            "`timeout` needs `per_try_timeout`",
        );
    }
    RetryPolicy {
        attempts,
        on_connect,
        on_reset,
        on_timeout,
        statuses,
        backoff_base,
        backoff_max,
        per_try_timeout,
        max_retry_after: e.duration(&r.max_retry_after, &format!("{key}.max_retry_after"), d.max_retry_after),
        replay_body: e.size(&r.replay_body, &format!("{key}.replay_body"), d.replay_body),
        non_idempotent: r.non_idempotent.unwrap_or(d.non_idempotent),
    }
}

fn compile_resilience(
    raw: &RawUpstream,
    e: &mut Errs<'_>,
) -> (
    Option<crate::upstream::resilience::RetryPolicy>,
    crate::upstream::resilience::BudgetSettings,
    Option<crate::upstream::resilience::CircuitSettings>,
    Option<crate::upstream::resilience::HealthCheck>,
    Option<usize>,
) {
    use crate::upstream::resilience::{BudgetSettings, CircuitSettings, HealthCheck};
    let retry = raw.retry.as_ref().map(|r| compile_retry(r, "retry", None, e));
    let mut budget = BudgetSettings::default();
    if let Some(b) = raw.retry.as_ref().and_then(|r| r.budget.as_ref()) {
        if let Some(r) = &b.ratio {
            if !(0.0..=10.0).contains(&r.value) {
                e.push(r, "retry.budget.ratio", "must be between 0 and 10");
            } else {
                budget.ratio = r.value;
            }
        }
        if let Some(m) = &b.min_per_second {
            if !(0.0..=100_000.0).contains(&m.value) {
                e.push(m, "retry.budget.min_per_second", "must be between 0 and 100000");
            } else {
                budget.min_per_second = m.value;
            }
        }
        budget.window = e.duration(&b.window, "retry.budget.window", budget.window);
        if budget.window < Duration::from_secs(1) {
            e.push_line(b.window.as_ref().map(|w| w.line), "retry.budget.window", "at least `1s`");
        }
    }
    let circuit = raw.circuit_breaker.as_ref().map(|c| {
        let n = match &c.consecutive_failures {
            Some(n) if n.value == 0 => {
                e.push(n, "circuit_breaker.consecutive_failures", "must be at least 1");
                5
            }
            Some(n) => n.value.min(u64::from(u32::MAX)) as u32,
            None => 5,
        };
        CircuitSettings {
            consecutive_failures: n,
            base_ejection: e.duration(&c.base_ejection, "circuit_breaker.base_ejection", Duration::from_secs(30)),
            max_ejection: e.duration(&c.max_ejection, "circuit_breaker.max_ejection", Duration::from_secs(300)),
        }
    });
    let health_check = raw.health_check.as_ref().map(|h| {
        if !h.path.value.starts_with('/') {
            e.push(&h.path, "health_check.path", "must start with `/`");
        }
        let threshold = |v: &Option<Sp<u64>>, k: &str, d: u32, e: &mut Errs<'_>| match v {
            Some(n) if n.value == 0 || n.value > 100 => {
                e.push(n, k, "must be between 1 and 100");
                d
            }
            Some(n) => n.value as u32,
            None => d,
        };
        let hc = HealthCheck {
            path: h.path.value.clone(),
            interval: e.duration(&h.interval, "health_check.interval", Duration::from_secs(10)),
            timeout: e.duration(&h.timeout, "health_check.timeout", Duration::from_secs(2)),
            healthy_threshold: threshold(&h.healthy_threshold, "health_check.healthy_threshold", 2, e),
            unhealthy_threshold: threshold(&h.unhealthy_threshold, "health_check.unhealthy_threshold", 3, e),
        };
        if hc.interval < Duration::from_millis(100) || hc.timeout.is_zero() {
            e.push(&h.path, "health_check.interval", "interval at least `100ms`, timeout greater than zero");
        }
        hc
    });
    let max_concurrent = raw.max_concurrent.as_ref().and_then(|m| {
        if m.value == 0 {
            e.push(m, "max_concurrent", "must be at least 1");
            None
        } else {
            Some(m.value as usize)
        }
    });
    (retry, budget, circuit, health_check, max_concurrent)
}

fn compile_telemetry(
    dir: &Path,
    raw: Option<&super::raw::RawTelemetry>,
    side: &mut Side,
    e: &mut Errs<'_>,
) -> crate::telemetry::TelemetrySettings {
    use crate::telemetry::audit::{AuditSettings, Fsync};
    use crate::telemetry::{AccessLogSettings, LogTarget, TelemetrySettings};
    let mut t = TelemetrySettings::default();
    let Some(raw) = raw else { return t };
    if let Some(a) = &raw.access_log {
        if a.enabled.unwrap_or(false) {
            let target = match a.output.as_ref().map(|o| o.value.as_str()) {
                None | Some("stdout") => LogTarget::Stdout,
                Some("stderr") => LogTarget::Stderr,
                Some(path) => LogTarget::File(side.file(dir, path)),
            };
            const FIELDS: [&str; 20] = [
                "time",
                "request_id",
                "trace_id",
                "method",
                "path",
                "caller",
                "auth",
                "route",
                "upstream",
                "credential",
                "decision",
                "rule",
                "shadow_deny",
                "status",
                "error",
                "bytes_in",
                "bytes_out",
                "duration_ms",
                "retries",
                "cache",
            ];
            let mut fields = Vec::new();
            for (i, f) in a.fields.iter().flatten().enumerate() {
                if FIELDS.contains(&f.value.as_str()) {
                    fields.push(f.value.clone());
                } else {
                    e.push(
                        f,
                        &format!("telemetry.access_log.fields[{i}]"),
                        format!("unknown field `{}`; known: {}", f.value, FIELDS.join(", ")),
                    );
                }
            }
            t.access_log = Some(AccessLogSettings { target, fields });
        }
    }
    if let Some(a) = &raw.audit {
        let mut s =
            AuditSettings { stdout: a.stdout.unwrap_or(false), ocsf: a.ocsf.unwrap_or(false), ..Default::default() };
        s.file = a.file.as_ref().map(|f| dir.join(&f.value));
        s.fsync = match a.fsync.as_ref().map(|f| (f, f.value.as_str())) {
            None => Fsync::Interval(Duration::from_secs(1)),
            Some((_, "always")) => Fsync::Always,
            Some((_, "never")) => Fsync::Never,
            Some((f, other)) => match parse_duration(other) {
                Ok(d) if !d.is_zero() => Fsync::Interval(d),
                _ => {
                    e.push(
                        f,
                        "telemetry.audit.fsync",
                        format!("`{other}`: use `always`, `never` or an interval such as `1s`"),
                    );
                    Fsync::Interval(Duration::from_secs(1))
                }
            },
        };
        s.rotate_size = e.size(&a.rotate_size, "telemetry.audit.rotate_size", 0);
        if s.rotate_size > 0 && s.rotate_size < 4096 {
            e.push_line(None, "telemetry.audit.rotate_size", "at least 4KiB");
        }
        t.audit = s;
    }
    if let Some(tr) = &raw.tracing {
        let endpoint = match tr.endpoint.value.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http") | Some("https")) && u.authority().is_some() => Some(u),
            _ => {
                e.push(
                    &tr.endpoint,
                    "telemetry.tracing.endpoint",
                    format!(
                        "`{}` must be an http(s) URL such as `http://otel-collector:4318/v1/traces`",
                        tr.endpoint.value
                    ),
                );
                None
            }
        };
        let mut headers = Vec::new();
        for (k, v) in &tr.headers {
            let r = SecretRef::parse(&v.value);
            if matches!(r, SecretRef::Inline(_)) {
                let m = r
                    .unknown_scheme()
                    .unwrap_or_else(|| "header values are secrets: write `env:NAME` or `file:path`".to_owned());
                e.push(v, &format!("telemetry.tracing.headers.{k}"), m);
                continue;
            }
            match r.resolve(dir) {
                Ok(secret) => headers.push((k.clone(), secret)),
                Err(m) => e.push(v, &format!("telemetry.tracing.headers.{k}"), m),
            }
        }
        let sampling = match &tr.sampling {
            None => 1.0,
            Some(sp) if (0.0..=1.0).contains(&sp.value) => sp.value,
            Some(sp) => {
                e.push(sp, "telemetry.tracing.sampling", "a fraction between 0.0 and 1.0");
                1.0
            }
        };
        if let Some(endpoint) = endpoint {
            t.tracing = Some(crate::telemetry::otel::TracingSettings {
                endpoint,
                headers,
                sampling,
                service_name: tr.service_name.as_ref().map_or_else(|| "interlock".to_owned(), |n| n.value.clone()),
                timeout: e.duration(&tr.timeout, "telemetry.tracing.timeout", Duration::from_secs(10)),
            });
        }
    }
    t
}

fn compile_listener_tls(
    dir: &Path,
    key: &str,
    t: &RawListenerTls,
    http1: bool,
    h2: bool,
    side: &mut Side,
    e: &mut Errs<'_>,
) -> Option<ListenerTls> {
    let key = format!("{key}.tls");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let mut keys = Vec::new();
    if t.certificates.is_empty() {
        e.push_line(None, &format!("{key}.certificates"), "list at least one certificate");
    }
    for (i, c) in t.certificates.iter().enumerate() {
        let ck = format!("{key}.certificates[{i}]");
        let cert_path = side.file(dir, &c.cert.value);
        let key_path = side.file(dir, &c.key.value);
        let chain = match tls::read_certs(&cert_path) {
            Ok(c) => c,
            Err(m) => {
                e.push(&c.cert, &format!("{ck}.cert"), m);
                continue;
            }
        };
        let private = match tls::read_key(&key_path) {
            Ok(k) => k,
            Err(m) => {
                e.push(&c.key, &format!("{ck}.key"), m);
                continue;
            }
        };
        let facts = match tls::cert_facts(&chain[0]) {
            Ok(f) => f,
            Err(m) => {
                e.push(&c.cert, &format!("{ck}.cert"), m);
                continue;
            }
        };
        let certified = match rustls::sign::CertifiedKey::from_der(chain, private, &tls::provider()) {
            Ok(k) => std::sync::Arc::new(k),
            Err(err) => {
                e.push(
                    &c.key,
                    &format!("{ck}.key"),
                    format!("`{}` does not match `{}`: {err}", key_path.display(), cert_path.display()),
                );
                continue;
            }
        };
        if facts.not_after < now {
            side.warnings.push(ConfigError::at(
                e.file,
                Some(c.cert.line),
                &format!("{ck}.cert"),
                format!("`{}` EXPIRED; clients will refuse it: replace it", cert_path.display()),
            ));
        } else if facts.not_after < now + 14 * 86_400 {
            side.warnings.push(ConfigError::at(
                e.file,
                Some(c.cert.line),
                &format!("{ck}.cert"),
                format!("`{}` expires in less than 14 days", cert_path.display()),
            ));
        }
        if facts.not_before > now {
            side.warnings.push(ConfigError::at(
                e.file,
                Some(c.cert.line),
                &format!("{ck}.cert"),
                format!("`{}` is not valid yet", cert_path.display()),
            ));
        }
        let names = match &c.names {
            Some(ns) => ns.iter().map(|n| n.value.to_ascii_lowercase()).collect(),
            None => facts.dns_names,
        };
        keys.push((names, certified));
    }
    let min_13 = match t.min_version.as_ref().map(|v| (v, v.value.as_str())) {
        None | Some((_, "1.2")) => false,
        Some((_, "1.3")) => true,
        Some((v, other)) => {
            e.push(v, &format!("{key}.min_version"), format!("`{other}` is not supported: use \"1.2\" or \"1.3\""));
            false
        }
    };
    let handshake_timeout =
        e.duration(&t.handshake_timeout, &format!("{key}.handshake_timeout"), Duration::from_secs(10));
    let client_auth = match t.client_auth.as_ref().map(|v| (v, v.value.as_str())) {
        None | Some((_, "off")) => ClientAuth::Off,
        Some((_, "optional")) => ClientAuth::Optional,
        Some((_, "required")) => ClientAuth::Required,
        Some((v, other)) => {
            e.push(v, &format!("{key}.client_auth"), format!("`{other}`: use `off`, `optional` or `required`"));
            ClientAuth::Off
        }
    };
    let mut client_roots = None;
    if let Some(ca) = &t.client_ca {
        let p = side.file(dir, &ca.value);
        match tls::read_certs(&p) {
            Ok(certs) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs {
                    if let Err(err) = roots.add(c) {
                        e.push(
                            ca,
                            &format!("{key}.client_ca"),
                            format!("`{}`: certificate rejected: {err}", p.display()),
                        );
                    }
                }
                client_roots = Some(roots);
            }
            Err(m) => e.push(ca, &format!("{key}.client_ca"), m),
        }
    } else if client_auth != ClientAuth::Off {
        e.push_line(
            t.client_auth.as_ref().map(|c| c.line),
            &format!("{key}.client_ca"),
            "`client_auth` needs `client_ca`: the CA bundle that issues client certificates",
        );
    }
    let mut crls = Vec::new();
    for (i, c) in t.crl.iter().enumerate() {
        let p = side.file(dir, &c.value);
        match tls::read_crls(&p) {
            Ok(mut v) => crls.append(&mut v),
            Err(m) => e.push(c, &format!("{key}.crl[{i}]"), m),
        }
    }
    let mut alpn = Vec::new();
    if h2 {
        alpn.push(b"h2".to_vec());
    }
    if http1 {
        alpn.push(b"http/1.1".to_vec());
    }
    let resolver = tls::SniResolver::new(keys)?;
    if client_auth != ClientAuth::Off && client_roots.is_none() {
        return None;
    }
    match tls::server_config(resolver, min_13, client_auth, client_roots, crls, alpn) {
        Ok(server) => Some(ListenerTls { server: std::sync::Arc::new(server), handshake_timeout, client_auth }),
        Err(m) => {
            e.push_line(None, &key, m);
            None
        }
    }
}

fn compile_callers(dir: &Path, file: &Path, raw: RawCallers, side: &mut Side, out: &mut Vec<ConfigError>) -> Identity {
    let mut e = Errs { file, out };
    let mut id = Identity::default();
    if let Some(h) = raw.api_keys.as_ref().and_then(|a| a.header.as_ref()) {
        match HeaderName::from_bytes(h.value.to_ascii_lowercase().as_bytes()) {
            Ok(n) => id.api_key_header = n,
            Err(_) => e.push(h, "api_keys.header", format!("`{}` is not a valid header name", h.value)),
        }
    }
    for (i, j) in raw.jwt.iter().enumerate() {
        let key = format!("jwt[{i}]");
        if id.issuers.iter().any(|x| x.id == j.id.value) {
            e.push(&j.id, &format!("{key}.id"), format!("duplicate issuer id `{}`", j.id.value));
        }
        let algorithms = match &j.algorithms {
            None => vec![jsonwebtoken::Algorithm::RS256, jsonwebtoken::Algorithm::ES256],
            Some(list) => list
                .iter()
                .filter_map(|a| parse_algorithm(&a.value).map_err(|m| e.push(a, &format!("{key}.algorithms"), m)).ok())
                .collect(),
        };
        let source = match (&j.jwks_url, &j.jwks_file) {
            (Some(u), None) => {
                let uri: Option<http::Uri> = u.value.parse().ok();
                let loopback = uri.as_ref().and_then(|x| x.host()).is_some_and(|h| {
                    h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
                });
                match uri {
                    Some(x) if x.scheme_str() == Some("https") || (x.scheme_str() == Some("http") && loopback) => {
                        let mut ca_certs = Vec::new();
                        if let Some(ca) = &j.ca {
                            match tls::read_certs(&side.file(dir, &ca.value)) {
                                Ok(c) => ca_certs = c,
                                Err(m) => e.push(ca, &format!("{key}.ca"), m),
                            }
                        }
                        Some(JwksSource::Url { uri: x, ca_certs })
                    }
                    _ => {
                        e.push(
                            u,
                            &format!("{key}.jwks_url"),
                            format!("`{}` must be an https URL (http only on loopback)", u.value),
                        );
                        None
                    }
                }
            }
            (None, Some(f)) => {
                let p = side.file(dir, &f.value);
                match std::fs::read_to_string(&p) {
                    Ok(text) => match parse_jwks(&text, &algorithms) {
                        Ok((set, skipped)) => {
                            for s in skipped {
                                side.warnings.push(ConfigError::at(
                                    file,
                                    Some(f.line),
                                    &format!("{key}.jwks_file"),
                                    format!("ignored: {s}"),
                                ));
                            }
                            if set.is_empty() {
                                e.push(
                                    f,
                                    &format!("{key}.jwks_file"),
                                    format!("`{}` has no usable key for the accepted algorithms", p.display()),
                                );
                            }
                            Some(JwksSource::File { path: p, text })
                        }
                        Err(m) => {
                            e.push(f, &format!("{key}.jwks_file"), format!("`{}`: {m}", p.display()));
                            None
                        }
                    },
                    Err(err) => {
                        e.push(f, &format!("{key}.jwks_file"), format!("cannot read `{}`: {err}", p.display()));
                        None
                    }
                }
            }
            _ => {
                e.push(&j.id, &key, "set exactly one of `jwks_url` and `jwks_file`");
                None
            }
        };
        let leeway = e.duration(&j.leeway, &format!("{key}.leeway"), Duration::from_secs(5));
        if leeway > Duration::from_secs(30) {
            e.push_line(
                Some(j.id.line),
                &format!("{key}.leeway"),
                "at most 30s: a larger leeway accepts expired tokens for too long",
            );
        }
        let issuer = JwtIssuer {
            id: j.id.value.clone(),
            issuer: j.issuer.value.clone(),
            audiences: j.audiences.iter().map(|a| a.value.clone()).collect(),
            source: match source {
                Some(s) => s,
                None => continue,
            },
            algorithms,
            leeway,
            refresh: e.duration(&j.refresh, &format!("{key}.refresh"), Duration::from_secs(600)),
            refetch_interval: e.duration(
                &j.refetch_interval,
                &format!("{key}.refetch_interval"),
                Duration::from_secs(30),
            ),
            max_stale: e.duration(&j.max_stale, &format!("{key}.max_stale"), Duration::from_secs(86_400)),
            caller_claim: j.caller_claim.as_ref().map_or_else(|| "sub".to_owned(), |c| c.value.clone()),
            groups_claim: j.groups_claim.as_ref().map_or_else(|| "groups".to_owned(), |c| c.value.clone()),
        };
        if issuer.algorithms.is_empty() {
            e.push(&j.id, &format!("{key}.algorithms"), "no accepted algorithm left");
        }
        if id.issuers.iter().any(|x| x.issuer == issuer.issuer) {
            e.push(&j.issuer, &format!("{key}.issuer"), format!("two issuers with `iss` = `{}`", issuer.issuer));
        }
        id.issuers.push(issuer);
    }
    for (i, c) in raw.callers.iter().enumerate() {
        let key = format!("callers[{i}]");
        if !valid_id(&c.id.value) {
            e.push(&c.id, &format!("{key}.id"), format!("`{}` must be letters, digits, `-`, `_` or `.`", c.id.value));
        }
        if id.callers.iter().any(|x| x.id == c.id.value) {
            e.push(&c.id, &format!("{key}.id"), format!("duplicate caller id `{}`", c.id.value));
            continue;
        }
        let idx = id.callers.len();
        for m in &c.mtls {
            if let Some(prev) = id.by_mtls.insert(m.value.clone(), idx) {
                e.push(
                    m,
                    &format!("{key}.mtls"),
                    format!("`{}` is already the identity of caller `{}`", m.value, id.callers[prev].id),
                );
            }
        }
        for (k, ak) in c.api_keys.iter().enumerate() {
            match crate::identity::apikey::parse_stored(&ak.hash.value) {
                Ok(d) => {
                    if !id.keys.insert(d, idx, ak.id.value.clone()) {
                        e.push(&ak.hash, &format!("{key}.api_keys[{k}].hash"), "this key is listed twice");
                    }
                }
                Err(m) => e.push(&ak.hash, &format!("{key}.api_keys[{k}].hash"), m),
            }
        }
        id.callers
            .push(CallerDef { id: c.id.value.clone(), groups: c.groups.iter().map(|g| g.value.clone()).collect() });
    }
    id
}

fn compile_upstream_tls(
    dir: &Path,
    tls_raw: &RawUpstreamTls,
    https: bool,
    side: &mut Side,
    e: &mut Errs<'_>,
) -> Option<(TlsClient, UpstreamTlsInputs)> {
    use std::sync::Arc;
    let mut inputs = UpstreamTlsInputs { system_roots: tls_raw.system_roots.unwrap_or(true), ..Default::default() };
    let mut ok = true;
    if let Some(ca) = &tls_raw.ca {
        match tls::read_certs(&side.file(dir, &ca.value)) {
            Ok(c) => inputs.ca_certs = c,
            Err(m) => {
                e.push(ca, "tls.ca", m);
                ok = false;
            }
        }
    }
    if !inputs.system_roots && inputs.ca_certs.is_empty() && https {
        e.push_line(None, "tls", "https endpoints need trusted roots: set `tls.ca` or keep `system_roots: true`");
        ok = false;
    }
    let mut client_key = None;
    match (&tls_raw.client_cert, &tls_raw.client_key) {
        (Some(c), Some(k)) => {
            match tls::read_certs(&side.file(dir, &c.value)) {
                Ok(chain) => inputs.client_cert = chain,
                Err(m) => {
                    e.push(c, "tls.client_cert", m);
                    ok = false;
                }
            }
            match tls::read_key(&side.file(dir, &k.value)) {
                Ok(key) => {
                    inputs.client_key_digest = Some(crate::identity::apikey::digest_bytes(key.secret_der()));
                    client_key = Some(key);
                }
                Err(m) => {
                    e.push(k, "tls.client_key", m);
                    ok = false;
                }
            }
        }
        (None, None) => {}
        (Some(c), None) => {
            e.push(c, "tls.client_key", "`client_cert` needs `client_key`");
            ok = false;
        }
        (None, Some(k)) => {
            e.push(k, "tls.client_cert", "`client_key` needs `client_cert`");
            ok = false;
        }
    }
    if let Some(n) = &tls_raw.server_name {
        if rustls_pki_types::ServerName::try_from(n.value.clone()).is_err() {
            e.push(n, "tls.server_name", format!("`{}` is not a DNS name or IP address", n.value));
            ok = false;
        }
        inputs.server_name = Some(n.value.clone());
    }
    inputs.min_13 = match tls_raw.min_version.as_ref().map(|v| (v, v.value.as_str())) {
        None | Some((_, "1.2")) => false,
        Some((_, "1.3")) => true,
        Some((v, other)) => {
            e.push(v, "tls.min_version", format!("`{other}` is not supported: use \"1.2\" or \"1.3\""));
            false
        }
    };
    for (i, p) in tls_raw.pins.iter().enumerate() {
        use base64::Engine as _;
        let valid = p
            .value
            .strip_prefix("sha256/")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .is_some_and(|d| d.len() == 32);
        if valid {
            inputs.pins.push(p.value.clone());
        } else {
            e.push(
                p,
                &format!("tls.pins[{i}]"),
                "a pin is `sha256/` + the base64 SHA-256 of the certificate's SubjectPublicKeyInfo",
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    let mut roots = rustls::RootCertStore::empty();
    if inputs.system_roots {
        let (_added, _ignored) = roots.add_parsable_certificates(crate::upstream::native_roots().iter().cloned());
    }
    for c in &inputs.ca_certs {
        if let Err(err) = roots.add(c.clone()) {
            e.push_line(None, "tls.ca", format!("CA certificate rejected: {err}"));
            return None;
        }
    }
    let builder = match rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(tls::versions(inputs.min_13))
    {
        Ok(b) => b,
        Err(err) => {
            e.push_line(None, "tls", format!("TLS setup failed: {err}"));
            return None;
        }
    };
    let builder = if inputs.pins.is_empty() {
        builder.with_root_certificates(roots)
    } else {
        let webpki = match rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), tls::provider())
            .build()
        {
            Ok(v) => v,
            Err(err) => {
                e.push_line(None, "tls", format!("TLS setup failed: {err}"));
                return None;
            }
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(tls::PinnedVerifier::new(webpki, inputs.pins.clone())))
    };
    let config = match client_key {
        Some(key) => match builder.with_client_auth_cert(inputs.client_cert.clone(), key) {
            Ok(c) => c,
            Err(err) => {
                e.push_line(None, "tls.client_key", format!("does not match `tls.client_cert`: {err}"));
                return None;
            }
        },
        None => builder.with_no_client_auth(),
    };
    Some((TlsClient(Arc::new(config)), inputs))
}

/// Resolves a secret reference (inline values only in dev fixtures); file secrets are watched.
fn secret(
    dir: &Path,
    v: &Sp<String>,
    key: &str,
    dev_fixture: bool,
    side: &mut Side,
    e: &mut Errs<'_>,
) -> Option<crate::credentials::Secret> {
    let r = SecretRef::parse(&v.value);
    if let Some(m) = r.unknown_scheme() {
        e.push(v, key, m);
        return None;
    }
    if matches!(r, SecretRef::Inline(_)) && !dev_fixture {
        e.push(
            v,
            key,
            "inline secret: write `env:NAME` or `file:path` (or mark this file `dev_fixture: true` for local testing)",
        );
        return None;
    }
    if let Some(p) = r.watch_path(dir) {
        // Rotation is a file write: the file is watched even outside the policies directory.
        side.watch(dir, p);
    }
    r.resolve(dir).map_err(|m| e.push(v, key, m)).ok()
}

#[allow(clippy::too_many_arguments)]
fn compile_credential(
    dir: &Path,
    key: &str,
    c: &super::raw::RawCredential,
    upstream_id: &str,
    dev_fixture: bool,
    several: bool,
    side: &mut Side,
    e: &mut Errs<'_>,
) -> Option<crate::credentials::Credential> {
    use crate::credentials::{encode_query_value, Credential, Injection, Secret};
    use base64::Engine as _;
    let header_value = |prefix: &str, s: &Secret| -> Result<http::HeaderValue, String> {
        let mut v = http::HeaderValue::try_from(format!("{prefix}{}", s.expose()))
            .map_err(|_| "the secret contains bytes that are not allowed in an HTTP header".to_owned())?;
        v.set_sensitive(true);
        Ok(v)
    };
    let kinds = [c.header.is_some(), c.basic.is_some(), c.query.is_some(), c.headers.is_some(), c.oauth2.is_some()]
        .iter()
        .filter(|k| **k)
        .count();
    let line = c.id.as_ref().map(|i| i.line).or(c.header.as_ref().map(|h| h.line)).or(c.query.as_ref().map(|q| q.line));
    if kinds != 1 {
        e.push_line(
            line,
            key,
            "set exactly one of `header` (+ `value`), `basic`, `query` (+ `value`), `headers` or `oauth2`",
        );
        return None;
    }
    let injection = if let Some(h) = &c.header {
        let name = HeaderName::from_bytes(h.value.to_ascii_lowercase().as_bytes())
            .map_err(|_| e.push(h, &format!("{key}.header"), format!("`{}` is not a valid header name", h.value)))
            .ok()?;
        let Some(v) = &c.value else {
            e.push(h, &format!("{key}.value"), "`header` needs `value` (a secret reference)");
            return None;
        };
        let s = secret(dir, v, &format!("{key}.value"), dev_fixture, side, e)?;
        let prefix = c.prefix.as_ref().map(|p| p.value.as_str()).unwrap_or("");
        Injection::Headers(vec![(
            name,
            header_value(prefix, &s).map_err(|m| e.push(v, &format!("{key}.value"), m)).ok()?,
        )])
    } else if let Some(b) = &c.basic {
        let user = match SecretRef::parse(&b.username.value) {
            SecretRef::Inline(u) => u,
            _ => secret(dir, &b.username, &format!("{key}.basic.username"), dev_fixture, side, e)?,
        };
        let pass = secret(dir, &b.password, &format!("{key}.basic.password"), dev_fixture, side, e)?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", user.expose(), pass.expose()));
        let v = header_value("Basic ", &Secret::new(token))
            .map_err(|m| e.push(&b.password, &format!("{key}.basic"), m))
            .ok()?;
        Injection::Headers(vec![(http::header::AUTHORIZATION, v)])
    } else if let Some(o) = &c.oauth2 {
        use crate::credentials::oauth2::{ClientAuth, OAuth2Settings, OnOutage, TokenSource};
        let k = format!("{key}.oauth2");
        let token_url = match o.token_url.value.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("https") | Some("http")) && u.authority().is_some() => u,
            _ => {
                e.push(
                    &o.token_url,
                    &format!("{k}.token_url"),
                    format!("`{}` must be an https URL", o.token_url.value),
                );
                return None;
            }
        };
        let client_id = match SecretRef::parse(&o.client_id.value) {
            SecretRef::Inline(v) => v,
            _ => secret(dir, &o.client_id, &format!("{k}.client_id"), dev_fixture, side, e)?,
        };
        let client_secret = secret(dir, &o.client_secret, &format!("{k}.client_secret"), dev_fixture, side, e)?;
        let client_auth = match o.client_auth.as_ref().map(|a| (a, a.value.as_str())) {
            None | Some((_, "basic")) => ClientAuth::Basic,
            Some((_, "body")) => ClientAuth::Body,
            Some((a, other)) => {
                e.push(a, &format!("{k}.client_auth"), format!("`{other}`: use `basic` or `body`"));
                ClientAuth::Basic
            }
        };
        let grace = e.duration(&o.use_expired_for, &format!("{k}.use_expired_for"), Duration::from_secs(300));
        let on_outage = match o.on_outage.as_ref().map(|a| (a, a.value.as_str())) {
            None | Some((_, "fail_closed")) => OnOutage::FailClosed,
            Some((_, "use_expired")) => OnOutage::UseExpired(grace),
            Some((a, other)) => {
                e.push(a, &format!("{k}.on_outage"), format!("`{other}`: use `fail_closed` or `use_expired`"));
                OnOutage::FailClosed
            }
        };
        let mut params = o.params.clone();
        if let Some(a) = &o.audience {
            params.insert("audience".to_owned(), a.clone());
        }
        if let Some(r) = &o.resource {
            params.insert("resource".to_owned(), r.clone());
        }
        let mut ca_certs = Vec::new();
        if let Some(ca) = &o.ca {
            match tls::read_certs(&side.file(dir, &ca.value)) {
                Ok(c) => ca_certs = c,
                Err(m) => e.push(ca, &format!("{k}.ca"), m),
            }
        }
        let settings = OAuth2Settings {
            token_url,
            client_id,
            client_secret,
            scopes: o.scopes.clone(),
            params,
            client_auth,
            refresh_before: e.duration(&o.refresh_before, &format!("{k}.refresh_before"), Duration::from_secs(60)),
            on_outage,
            ca_certs,
        };
        let id = c.id.as_ref().map(|i| i.value.clone()).unwrap_or_else(|| upstream_id.to_owned());
        match TokenSource::new(id, settings) {
            Ok(t) => Injection::OAuth2(std::sync::Arc::new(t)),
            Err(m) => {
                e.push(&o.token_url, &k, m);
                return None;
            }
        }
    } else if let Some(q) = &c.query {
        let Some(v) = &c.value else {
            e.push(q, &format!("{key}.value"), "`query` needs `value` (a secret reference)");
            return None;
        };
        let s = secret(dir, v, &format!("{key}.value"), dev_fixture, side, e)?;
        if q.value.is_empty() {
            e.push(q, &format!("{key}.query"), "the query parameter name is empty");
            return None;
        }
        Injection::Query { param: q.value.clone(), value: Secret::new(encode_query_value(s.expose())) }
    } else {
        let mut list = Vec::new();
        for (name, v) in c.headers.iter().flatten() {
            let k = format!("{key}.headers.{name}");
            let n = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| e.push(v, &k, format!("`{name}` is not a valid header name")))
                .ok()?;
            let s = secret(dir, v, &k, dev_fixture, side, e)?;
            list.push((n, header_value("", &s).map_err(|m| e.push(v, &k, m)).ok()?));
        }
        Injection::Headers(list)
    };
    if !several && (!c.callers.is_empty() || c.default) {
        e.push_line(
            line,
            key,
            "`callers` and `default` choose among several `credentials`; a single `credential` serves every caller",
        );
    }
    let id = c.id.as_ref().map(|i| i.value.clone()).unwrap_or_else(|| upstream_id.to_owned());
    Some(Credential {
        id_shared: id.as_str().into(),
        id,
        injection,
        callers: c.callers.iter().map(|x| x.value.clone()).collect(),
        default: c.default || !several,
    })
}

fn compile_upstream(
    dir: &Path,
    file: &Path,
    mut raw: RawUpstream,
    side: &mut Side,
    out: &mut Vec<ConfigError>,
) -> Option<Upstream> {
    let mut e = Errs { file, out };
    let id = raw.id.value.clone();
    if !valid_id(&id) {
        e.push(&raw.id, "id", format!("`{id}` must be letters, digits, `-`, `_` or `.`"));
    }
    if raw.endpoints.is_empty() {
        e.push(&raw.id, "endpoints", "an upstream needs at least one endpoint URL");
    }
    let mut endpoints = Vec::new();
    for (i, ep) in raw.endpoints.iter().enumerate() {
        match parse_endpoint(&ep.value) {
            Ok(x) => endpoints.push(x),
            Err(m) => e.push(ep, &format!("endpoints[{i}]"), m),
        }
    }
    let protocol = match raw.protocol.as_ref().map(|p| (p, p.value.as_str())) {
        None | Some((_, "auto")) => UpstreamProtocol::Auto,
        Some((_, "http1")) => UpstreamProtocol::Http1,
        Some((_, "http2")) => UpstreamProtocol::Http2,
        Some((p, other)) => {
            e.push(p, "protocol", format!("unknown protocol `{other}`: use `auto`, `http1` or `http2`"));
            UpstreamProtocol::Auto
        }
    };
    let tls_raw = raw.tls.take().unwrap_or_default();
    let https = endpoints.iter().any(|x: &Endpoint| x.scheme == Scheme::HTTPS);
    let tls_built = compile_upstream_tls(dir, &tls_raw, https, side, &mut e);
    let connect_timeout = e.duration(&raw.connect_timeout, "connect_timeout", Duration::from_secs(5));
    let timeout = raw.timeout.as_ref().map(|t| e.duration(&Some(t.clone()), "timeout", Duration::from_secs(60)));
    let pool = raw.pool.take().unwrap_or_default();
    let pool_idle_timeout = e.duration(&pool.idle_timeout, "pool.idle_timeout", Duration::from_secs(90));
    let pool_max_idle_per_host = pool.max_idle_per_host.as_ref().map(|m| m.value as usize).unwrap_or(256);

    let mut credentials = Vec::new();
    let several = !raw.credentials.is_empty();
    if raw.credential.is_some() && several {
        e.push(&raw.id, "credentials", "use either `credential` or `credentials`, not both");
    }
    let raw_creds: Vec<(String, &super::raw::RawCredential)> = match &raw.credential {
        Some(c) => vec![("credential".to_owned(), c)],
        None => raw.credentials.iter().enumerate().map(|(i, c)| (format!("credentials[{i}]"), c)).collect(),
    };
    for (key, c) in raw_creds {
        if let Some(cred) = compile_credential(dir, &key, c, &id, raw.dev_fixture, several, side, &mut e) {
            if credentials.iter().any(|x: &crate::credentials::Credential| x.id == cred.id) {
                e.push_line(
                    c.id.as_ref().map(|i| i.line),
                    &format!("{key}.id"),
                    format!("duplicate credential id `{}`", cred.id),
                );
            }
            credentials.push(cred);
        }
    }
    if several {
        let defaults = credentials.iter().filter(|c| c.default).count();
        if defaults > 1 {
            e.push(&raw.id, "credentials", "at most one credential may be `default: true`");
        }
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for c in &credentials {
            for caller in &c.callers {
                if let Some(prev) = seen.insert(caller, &c.id) {
                    e.push(
                        &raw.id,
                        "credentials",
                        format!("caller `{caller}` is listed on credentials `{prev}` and `{}`", c.id),
                    );
                }
            }
        }
    }
    let mut strip_headers = Vec::new();
    for (i, h) in raw.strip_headers.iter().enumerate() {
        match HeaderName::from_bytes(h.value.to_ascii_lowercase().as_bytes()) {
            Ok(n) => strip_headers.push(n),
            Err(_) => e.push(h, &format!("strip_headers[{i}]"), format!("`{}` is not a valid header name", h.value)),
        }
    }
    for c in &credentials {
        for n in c.header_names() {
            if !strip_headers.contains(&n) {
                strip_headers.push(n);
            }
        }
    }
    let quota = raw.quota.as_ref().map(|q| std::sync::Arc::new(compile_quota(&id, q, &mut e)));
    let (retry, retry_budget, circuit, health_check, max_concurrent) = compile_resilience(&raw, &mut e);
    let (tls, tls_inputs) = tls_built?;
    Some(Upstream {
        quota,
        retry: retry.map(std::sync::Arc::new),
        retry_budget,
        circuit,
        health_check,
        max_concurrent,
        id_shared: id.as_str().into(),
        id,
        origin: Origin { file: file.to_path_buf(), line: raw.id.line },
        endpoints,
        protocol,
        tls,
        tls_inputs,
        connect_timeout,
        timeout,
        pool_idle_timeout,
        pool_max_idle_per_host,
        credentials,
        strip_headers,
    })
}

fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let uri: Uri = text.parse().map_err(|_| format!("`{text}` is not a URL like `https://api.vendor.com/v3`"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(format!("`{text}` must start with `http://` or `https://`")),
    };
    let authority: Authority = uri.authority().cloned().ok_or_else(|| format!("`{text}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err("endpoint URLs may not carry user:password; use `credential` with a secret reference".to_owned());
    }
    if uri.query().is_some() {
        return Err(format!("`{text}` may not have a query string"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok(Endpoint { scheme, authority, base_path })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn compile_route(
    file: &Path,
    key: &str,
    raw: RawRoute,
    upstreams: &[Upstream],
    mappings: &[std::sync::Arc<crate::translate::Mapping>],
    limits: &Limits,
    out: &mut Vec<ConfigError>,
) -> Option<Route> {
    let mut e = Errs { file, out };
    let id = raw.id.value.clone();
    if !valid_id(&id) {
        e.push(&raw.id, &format!("{key}.id"), format!("`{id}` must be letters, digits, `-`, `_` or `.`"));
    }
    let template = match Template::parse(&raw.matcher.path.value) {
        Ok(t) if t.param_names().count() > MAX_CAPTURES => {
            e.push(
                &raw.matcher.path,
                &format!("{key}.match.path"),
                format!("at most {MAX_CAPTURES} captures per path"),
            );
            None
        }
        Ok(t) => Some(t),
        Err(m) => {
            e.push(&raw.matcher.path, &format!("{key}.match.path"), m);
            None
        }
    };
    let host = raw
        .matcher
        .host
        .as_ref()
        .and_then(|h| HostPattern::parse(&h.value).map_err(|m| e.push(h, &format!("{key}.match.host"), m)).ok());
    let methods = raw.matcher.methods.as_ref().map(|ms| {
        let mut v = Vec::new();
        for m in ms {
            match Method::from_bytes(m.value.to_ascii_uppercase().as_bytes()) {
                Ok(Method::CONNECT) => e.push(m, &format!("{key}.match.methods"), "CONNECT cannot be routed"),
                Ok(x) if !v.contains(&x) => v.push(x),
                Ok(_) => {}
                Err(_) => e.push(m, &format!("{key}.match.methods"), format!("`{}` is not an HTTP method", m.value)),
            }
        }
        v
    });
    if matches!(&methods, Some(v) if v.is_empty()) {
        e.push(
            &raw.matcher.path,
            &format!("{key}.match.methods"),
            "list at least one method, or leave `methods` out to accept any",
        );
    }
    let upstream = upstreams.iter().position(|u| u.id == raw.upstream.value);
    if upstream.is_none() {
        let known: Vec<&str> = upstreams.iter().map(|u| u.id.as_str()).collect();
        e.push(
            &raw.upstream,
            &format!("{key}.upstream"),
            format!(
                "no upstream `{}` (defined: {})",
                raw.upstream.value,
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            ),
        );
    }
    let rewrite = match (&raw.rewrite, &template) {
        (Some(rw), Some(t)) => match Rewrite::parse(&rw.value, t) {
            Ok(r) => Some(r),
            Err(m) => {
                e.push(rw, &format!("{key}.rewrite"), m);
                None
            }
        },
        _ => None,
    };
    let upstream_timeout = upstream.and_then(|u| upstreams[u].timeout);
    let timeout =
        e.duration(&raw.timeout, &format!("{key}.timeout"), upstream_timeout.unwrap_or(limits.request_timeout));
    let max_body = e.size(&raw.max_body, &format!("{key}.max_body"), limits.max_body);
    let policy = compile_policy(file, key, &raw, &mut e);
    let credential = match (&raw.credential, upstream) {
        (Some(c), Some(u)) => {
            let idx = upstreams[u].credentials.iter().position(|x| x.id == c.value);
            if idx.is_none() {
                let known: Vec<&str> = upstreams[u].credentials.iter().map(|x| x.id.as_str()).collect();
                e.push(
                    c,
                    &format!("{key}.credential"),
                    format!(
                        "upstream `{}` has no credential `{}` (it has: {})",
                        upstreams[u].id,
                        c.value,
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ),
                );
            }
            idx
        }
        _ => None,
    };
    let mut rate_limits = Vec::new();
    if let Some(rl) = &raw.rate_limit {
        use crate::ratelimit::{LimitSpec, Scope};
        let on = compile_exhausted(&rl.on_exhausted, &format!("{key}.rate_limit.on_exhausted"), &mut e);
        let shared = rl.shared.unwrap_or(false);
        let per_caller = compile_windows(&rl.per_caller, &format!("{key}.rate_limit.per_caller"), &mut e);
        let total = compile_windows(&rl.total, &format!("{key}.rate_limit.total"), &mut e);
        if !per_caller.is_empty() {
            let spec = LimitSpec::new(&format!("route:{id}:caller"), "caller", Scope::Caller, per_caller, on, shared);
            rate_limits.push(std::sync::Arc::new(spec));
        }
        if !total.is_empty() {
            let spec = LimitSpec::new(&format!("route:{id}:total"), "route", Scope::Route, total, on, shared);
            rate_limits.push(std::sync::Arc::new(spec));
        }
    }
    let base_retry = upstream.and_then(|u| upstreams[u].retry.as_deref());
    let retry = match &raw.retry {
        Some(r) => {
            if let Some(b) = &r.budget {
                e.push_line(
                    b.ratio.as_ref().or(b.min_per_second.as_ref()).map(|x| x.line),
                    &format!("{key}.retry.budget"),
                    "the retry budget is set on the upstream (it is shared by all its routes)",
                );
            }
            Some(std::sync::Arc::new(compile_retry(r, &format!("{key}.retry"), base_retry, &mut e)))
        }
        None => upstream.and_then(|u| upstreams[u].retry.clone()),
    };
    let translate = raw.translate.as_ref().and_then(|t| compile_translate(t, key, mappings, &mut e));
    let cache = raw.cache.as_ref().map(|c| std::sync::Arc::new(compile_cache(c, key, &mut e)));
    let template = template?;
    Some(Route {
        translate,
        cache,
        retry,
        rate_limits,
        credential,
        policy,
        template_text: template.to_string().into(),
        id_shared: id.as_str().into(),
        id,
        origin: Origin { file: file.to_path_buf(), line: raw.id.line },
        template,
        host,
        methods,
        upstream: upstream?,
        rewrite,
        upgrade: raw.upgrade,
        anonymous: raw.anonymous,
        audit_required: match raw.audit.as_ref().map(|a| (a, a.value.as_str())) {
            None | Some((_, "best_effort")) => false,
            Some((_, "required")) => true,
            Some((a, other)) => {
                e.push(a, &format!("{key}.audit"), format!("`{other}`: use `required` or `best_effort`"));
                false
            }
        },
        timeout,
        max_body,
    })
}

fn compile_cache(c: &super::raw::RawRouteCache, key: &str, e: &mut Errs<'_>) -> crate::cache::CachePolicy {
    use crate::cache::CachePolicy;
    let d = CachePolicy::default();
    let k = |f: &str| format!("{key}.cache.{f}");
    let ttl = e.duration(&c.ttl, &k("ttl"), d.ttl);
    let max_ttl = e.duration(&c.max_ttl, &k("max_ttl"), d.max_ttl.max(ttl));
    if max_ttl < ttl {
        e.push_line(c.max_ttl.as_ref().map(|v| v.line), &k("max_ttl"), "is shorter than `ttl`");
    }
    let negative_ttl = e.duration(&c.negative_ttl, &k("negative_ttl"), d.negative_ttl);
    let stale_if_error = e.duration(&c.stale_if_error, &k("stale_if_error"), d.stale_if_error);
    let max_entry = e.size(&c.max_entry, &k("max_entry"), d.max_entry);
    let body_key = c.body_key.as_ref().map(|_| e.size(&c.body_key, &k("body_key"), 64 * 1024));
    let mut methods = Vec::new();
    for m in c.methods.iter().flatten() {
        match m.value.to_ascii_uppercase().as_str() {
            "GET" => methods.push(http::Method::GET),
            "HEAD" => methods.push(http::Method::HEAD),
            "POST" if body_key.is_some() => methods.push(http::Method::POST),
            "POST" => {
                e.push(m, &k("methods"), "POST answers are cached only by their body: add `body_key` (e.g. `64KiB`)")
            }
            other => e.push(
                m,
                &k("methods"),
                format!("`{other}`: cacheable methods are GET, HEAD and POST (with `body_key`)"),
            ),
        }
    }
    if c.methods.is_none() {
        methods = d.methods.clone();
        if body_key.is_some() {
            methods.push(http::Method::POST);
        }
    }
    let mut statuses = Vec::new();
    for s in c.statuses.iter().flatten() {
        match http::StatusCode::from_u16(s.value) {
            Ok(st) if st.is_success() || st.is_client_error() => statuses.push(st),
            _ => e.push(s, &k("statuses"), format!("{}: only 2xx and 4xx answers can be stored", s.value)),
        }
    }
    if c.statuses.is_none() {
        statuses = d.statuses.clone();
    }
    let mut vary = Vec::new();
    for v in c.vary.iter().flatten() {
        match http::HeaderName::from_bytes(v.value.as_bytes()) {
            Ok(h) if h == http::header::AUTHORIZATION || h.as_str() == "x-api-key" => e.push(
                v,
                &k("vary"),
                "caller credentials are never part of a cache key (answers are per caller unless `shared`)",
            ),
            Ok(h) => vary.push(h),
            Err(_) => e.push(v, &k("vary"), format!("`{}` is not a header name", v.value)),
        }
    }
    let honour_client_no_cache = match c.client_no_cache.as_ref().map(|v| (v, v.value.as_str())) {
        None | Some((_, "bypass")) => true,
        Some((_, "ignore")) => false,
        Some((v, other)) => {
            e.push(v, &k("client_no_cache"), format!("`{other}`: use `bypass` or `ignore`"));
            true
        }
    };
    let override_reason = c.override_reason.as_ref().map(|r| {
        if r.value.trim().len() < 10 {
            e.push(
                r,
                &k("override"),
                "say why the vendor's Cache-Control is overridden (a sentence, for the next reader)",
            );
        }
        r.value.clone()
    });
    let shared = c.shared.unwrap_or(false);
    let redis = c.redis.as_ref().is_some_and(|r| r.value);
    if redis && !shared {
        e.push_line(
            c.redis.as_ref().map(|r| r.line),
            &k("redis"),
            "the Redis tier holds answers shared between callers: set `shared: true` (per-caller answers stay in memory)",
        );
    }
    CachePolicy {
        redis,
        ttl,
        max_ttl,
        negative_ttl,
        shared,
        methods,
        statuses,
        vary,
        body_key,
        stale_if_error,
        max_entry,
        honour_client_no_cache,
        override_reason,
    }
}

fn compile_translate(
    t: &super::raw::RawTranslate,
    key: &str,
    mappings: &[std::sync::Arc<crate::translate::Mapping>],
    e: &mut Errs<'_>,
) -> Option<crate::translate::RouteTranslate> {
    use crate::translate::{OnInvalid, RouteTranslate, When};
    let when = match t.when.as_ref() {
        None => When::Accept,
        Some(w) => match w.value.as_str() {
            "accept" => When::Accept,
            "always" => When::Always,
            other => {
                e.push(w, &format!("{key}.translate.when"), format!("`{other}`: use `accept` or `always`"));
                When::Accept
            }
        },
    };
    let on_invalid = match t.on_invalid.as_ref() {
        None => OnInvalid::Raw,
        Some(w) => match w.value.as_str() {
            "raw" => OnInvalid::Raw,
            "strict" => OnInvalid::Strict,
            other => {
                e.push(w, &format!("{key}.translate.on_invalid"), format!("`{other}`: use `raw` or `strict`"));
                OnInvalid::Raw
            }
        },
    };
    let max_body = e.size(&t.max_body, &format!("{key}.translate.max_body"), crate::translate::DEFAULT_MAX_BODY);
    let timeout = e.duration(&t.timeout, &format!("{key}.translate.timeout"), crate::translate::DEFAULT_TIMEOUT);
    match mappings.iter().find(|m| m.id == t.mapping.value) {
        Some(m) => Some(RouteTranslate { mapping: m.clone(), when, max_body, on_invalid, timeout }),
        None => {
            let known: Vec<&str> = mappings.iter().map(|m| m.id.as_str()).collect();
            e.push(
                &t.mapping,
                &format!("{key}.translate.mapping"),
                format!(
                    "no mapping `{}` in mappings/ (known: {}; a mapping with errors is reported in its own file)",
                    t.mapping.value,
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ),
            );
            None
        }
    }
}

fn compile_rules(
    file: &Path,
    key: &str,
    list: &[Sp<super::raw::RawRule>],
    prefix: &str,
    e: &mut Errs<'_>,
) -> Vec<crate::policy::Rule> {
    use super::raw::RawRule;
    let mut out = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let name = format!("{prefix}[{i}]");
        let k = format!("{key}.{name}");
        let mut rule = crate::policy::Rule {
            name: name.clone(),
            origin: Origin { file: file.to_path_buf(), line: r.line },
            callers: Vec::new(),
            groups: Vec::new(),
            anyone: false,
            methods: None,
            path: None,
        };
        match &r.value {
            RawRule::Short(s) => {
                if s == "anyone" {
                    rule.anyone = true;
                } else if let Some(c) = s.strip_prefix("caller:") {
                    rule.callers.push(c.to_owned());
                } else if let Some(g) = s.strip_prefix("group:") {
                    rule.groups.push(g.to_owned());
                } else {
                    e.push(r, &k, format!("`{s}`: write `caller:ID`, `group:NAME`, `anyone`, or a mapping with callers/groups/methods/path"));
                    continue;
                }
            }
            RawRule::Full(f) => {
                rule.callers = f.callers.clone();
                rule.groups = f.groups.clone();
                rule.anyone = f.anyone;
                if rule.callers.is_empty() && rule.groups.is_empty() && !rule.anyone {
                    e.push(r, &k, "a rule names `callers`, `groups` or `anyone: true`");
                    continue;
                }
                if let Some(ms) = &f.methods {
                    let mut v = Vec::new();
                    for m in ms {
                        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                            Ok(m) => v.push(m),
                            Err(_) => e.push(r, &format!("{k}.methods"), format!("`{m}` is not an HTTP method")),
                        }
                    }
                    rule.methods = Some(v);
                }
                if let Some(p) = &f.path {
                    match Template::parse(p) {
                        Ok(t) => rule.path = Some(t),
                        Err(m) => e.push(r, &format!("{k}.path"), m),
                    }
                }
            }
        }
        out.push(rule);
    }
    out
}

fn compile_policy(file: &Path, key: &str, raw: &RawRoute, e: &mut Errs<'_>) -> crate::policy::Policy {
    let mut allow = compile_rules(file, key, &raw.allow, "allow", e);
    if raw.anonymous && allow.is_empty() {
        // An anonymous route without rules serves everyone: that is what `anonymous` says.
        allow.push(crate::policy::Rule {
            name: "anonymous".to_owned(),
            origin: Origin { file: file.to_path_buf(), line: raw.id.line },
            callers: Vec::new(),
            groups: Vec::new(),
            anyone: true,
            methods: None,
            path: None,
        });
    }
    crate::policy::Policy {
        allow,
        deny: compile_rules(file, key, &raw.deny, "deny", e),
        shadow: raw.shadow.as_ref().map(|s| {
            Box::new(crate::policy::Policy {
                allow: compile_rules(file, key, &s.allow, "shadow.allow", e),
                deny: compile_rules(file, key, &s.deny, "shadow.deny", e),
                shadow: None,
            })
        }),
    }
}

/// Two routes with the same host, the same path shape and a common method: the later one can never
/// be chosen for that method.
fn check_overlaps(routes: &[Route], errors: &mut Vec<ConfigError>) {
    let mut seen: HashMap<(String, Option<crate::proxy::router::HostPattern>), Vec<usize>> = HashMap::new();
    for (i, r) in routes.iter().enumerate() {
        let k = (r.template.shape(), r.host.clone());
        let earlier = seen.entry(k).or_default();
        for &j in earlier.iter() {
            let p = &routes[j];
            let common: Vec<String> = match (&p.methods, &r.methods) {
                (None, _) | (_, None) => vec!["any method".to_owned()],
                (Some(a), Some(b)) => a.iter().filter(|m| b.contains(m)).map(|m| m.to_string()).collect(),
            };
            if !common.is_empty() {
                errors.push(ConfigError::at(
                    &r.origin.file,
                    Some(r.origin.line),
                    "match",
                    format!(
                        "route `{}` is unreachable for {}: route `{}` ({}) matches the same host and path first; narrow `methods` or change the path",
                        r.id,
                        common.join(", "),
                        p.id,
                        p.origin
                    ),
                ));
            }
        }
        earlier.push(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn base() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "gateway.yaml", "listeners:\n  - bind: 127.0.0.1:0\n");
        write(d.path(), "upstreams/vt.yaml", "id: vt\nendpoints: [http://127.0.0.1:1/api/v3/]\n");
        d
    }

    #[test]
    fn a_valid_directory_compiles() {
        let d = base();
        write(d.path(), "routes/r.yaml", "- id: vt-file\n  match: { path: \"/vt/files/{hash}\", methods: [get] }\n  upstream: vt\n  rewrite: /files/{hash}\n");
        let c = load(d.path()).unwrap();
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].methods, Some(vec![Method::GET]));
        assert_eq!(c.upstreams[0].endpoints[0].base_path, "/api/v3");
        assert_eq!(c.routes[0].timeout, Duration::from_secs(60));
    }

    #[test]
    fn every_error_is_reported_with_file_line_and_key() {
        let d = base();
        write(
            d.path(),
            "gateway.yaml",
            "listeners:\n  - bind: nope\nlimits:\n  max_body: 10 MiB\n  request_timeout: 5x\n",
        );
        write(
            d.path(),
            "upstreams/dup.yaml",
            "id: vt\nendpoints: [ftp://x]\ncredential: { header: x-apikey, value: s3cr3t-inline }\n",
        );
        write(
            d.path(),
            "routes/r.yaml",
            "- id: a\n  match: { path: \"/a/{id}\" }\n  upstream: missing\n  timeoutt: 1s\n- id: b\n  match: { path: \"/a/{other}\" }\n  upstream: vt\n",
        );
        let errs = load(d.path()).unwrap_err();
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let has = |needle: &str| shown.iter().any(|s| s.contains(needle));
        assert!(has("gateway.yaml:2: listeners[0].bind"), "{shown:#?}");
        assert!(has("gateway.yaml:4: limits.max_body"), "{shown:#?}");
        assert!(has("gateway.yaml:5: limits.request_timeout"), "{shown:#?}");
        assert!(has("dup.yaml:2: endpoints[0]"), "{shown:#?}");
        assert!(has("dup.yaml:3: credential.value: inline secret"), "{shown:#?}");
        assert!(has("vt.yaml:1: id: duplicate upstream id `vt` (first defined at"), "{shown:#?}");
        assert!(has("r.yaml:3: [0].upstream: no upstream `missing`"), "{shown:#?}");
        assert!(has("r.yaml:4: [0].timeoutt: unknown key"), "{shown:#?}");
        assert!(shown.iter().all(|s| !s.contains("s3cr3t-inline")), "secret leaked: {shown:#?}");
        assert!(errs.len() >= 8, "{shown:#?}");
    }

    #[test]
    fn shadowed_routes_are_errors_disjoint_methods_are_not() {
        let d = base();
        write(
            d.path(),
            "routes/r.yaml",
            "- id: a\n  match: { path: \"/a/{id}\", methods: [GET] }\n  upstream: vt\n- id: b\n  match: { path: \"/a/{x}\", methods: [POST] }\n  upstream: vt\n- id: c\n  match: { path: \"/a/{y}\", methods: [POST, PUT] }\n  upstream: vt\n",
        );
        let errs = load(d.path()).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].to_string().contains("route `c` is unreachable for POST: route `b`"), "{}", errs[0]);
        assert_eq!(errs[0].line, Some(7));
    }

    #[test]
    fn unknown_files_and_missing_gateway_are_reported() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "gatway.yaml", "{}\n");
        let errs = load(d.path()).unwrap_err();
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(shown.iter().any(|s| s.contains("unexpected `gatway.yaml`")), "{shown:#?}");
        assert!(shown.iter().any(|s| s.contains("gateway.yaml: cannot read")), "{shown:#?}");
    }

    #[test]
    fn file_secrets_and_dev_fixtures() {
        let d = base();
        write(d.path(), "secrets/vt.key", "k-123\n");
        write(
            d.path(),
            "upstreams/a.yaml",
            "id: a\nendpoints: [http://x]\ncredential: { header: x-apikey, value: file:secrets/vt.key }\n",
        );
        write(d.path(), "upstreams/b.yaml", "id: b\ndev_fixture: true\nendpoints: [http://x]\ncredential: { header: Authorization, prefix: 'Bearer ', value: inline }\n");
        // `secrets/` is a directory without YAML files: allowed beside the known entries.
        let c = load(d.path()).unwrap();
        let header = |u: &str| match &c.upstream(u).unwrap().credentials[0].injection {
            crate::credentials::Injection::Headers(h) => h[0].1.clone(),
            other => panic!("{:?}", matches!(other, crate::credentials::Injection::Query { .. })),
        };
        assert_eq!(header("a"), "k-123");
        assert!(c.upstream("a").unwrap().strip_headers.contains(&HeaderName::from_static("x-apikey")));
        assert_eq!(header("b"), "Bearer inline");
    }
}
