//! Command-line interface: argument parsing and exit codes only.
//!
//! | command | does |
//! |---|---|
//! | `interlock run --config DIR` | serve until SIGTERM/SIGINT |
//! | `interlock check [DIR]` | compile the config; print a summary or every error (exit 1) |
//! | `interlock schema KIND` / `--out DIR` | JSON Schema of the config files for editors |
//! | `interlock translate --mapping ID [FILE]` | run a mapping over a payload, print it and its validation |
//! | `interlock test [DIR]` | run every mapping over its samples; diff with expected outputs (exit 1) |
//! | `interlock demo` | simulated vendor APIs + the gateway in front of them |

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, units};

/// Interlock: an API gateway for the traffic between security tools.
#[derive(Debug, Parser)]
#[command(name = "interlock", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The policies directory.
        #[arg(long, short, env = "INTERLOCK_CONFIG", default_value = "policies")]
        config: PathBuf,
    },
    /// Compile the policies directory and report every error, or a summary.
    Check {
        /// The policies directory.
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Print the JSON Schema of a config file kind (for editor validation).
    Schema {
        /// Which file kind.
        #[arg(value_enum, required_unless_present = "out")]
        kind: Option<SchemaKind>,
        /// Write every kind as `<kind>.schema.json` into this directory instead.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Explain how the gateway would treat a call: route, upstream URL, rules, decision.
    Explain {
        /// The policies directory.
        #[arg(long, short, default_value = "policies")]
        config: PathBuf,
        /// The caller id (omit for an unidentified caller).
        #[arg(long)]
        caller: Option<String>,
        /// Extra groups of the caller (e.g. from a JWT groups claim).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The host the call is addressed to.
        #[arg(long, default_value = "")]
        host: String,
        /// HTTP method.
        method: String,
        /// Path (and query).
        path: String,
    },
    /// Interlock API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print the live request lines of a running gateway (admin `/tap`).
    Tap {
        /// Admin base URL.
        #[arg(long, default_value = "http://127.0.0.1:9901")]
        admin: String,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Only this caller.
        #[arg(long)]
        caller: Option<String>,
        /// Only this status (`404`) or class (`5xx`).
        #[arg(long)]
        status: Option<String>,
        /// Admin token (or INTERLOCK_ADMIN_TOKEN).
        #[arg(long, env = "INTERLOCK_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Run a mapping over a vendor payload: print the translation, and the validation report on stderr.
    Translate {
        /// The policies directory (or its `mappings/`).
        #[arg(long, short, default_value = "policies")]
        config: PathBuf,
        /// The mapping id.
        #[arg(long, short)]
        mapping: String,
        /// The vendor payload (`-` or nothing: standard input).
        file: Option<PathBuf>,
    },
    /// Run every mapping over its samples, compare with the expected outputs and validate them.
    Test {
        /// The policies directory (or its `mappings/`).
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// Only this mapping (repeatable).
        #[arg(long = "mapping")]
        only: Vec<String>,
        /// Write each sample's translation as its expected output (when it validates).
        #[arg(long)]
        update: bool,
    },
    /// OCSF schema data.
    Ocsf {
        #[command(subcommand)]
        command: OcsfCommand,
    },
    /// Start simulated vendor APIs and the gateway in front of them, and print commands to try.
    Demo {
        /// Policies to use; default `policies/demo` if present, else the copy built into the binary.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate a key for a caller: prints the key once, and the entry to paste into callers.yaml.
    New {
        /// The caller the key belongs to.
        #[arg(long)]
        caller: String,
        /// A name for the key in logs and audit (default: `<caller>-<date>`).
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum OcsfCommand {
    /// Compile event classes of an OCSF schema directory (a checkout of ocsf-schema) into the
    /// compact validation data Interlock embeds (`src/translate/data/ocsf-<version>.json`).
    Compile {
        /// The schema directory (holds `version.json`, `dictionary.json`, `events/`, `objects/`).
        dir: PathBuf,
        /// Event classes by name (repeatable); default: the classes the shipped mappings produce.
        #[arg(long = "class")]
        classes: Vec<String>,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain of audit files (all segments of a trail, in any order).
    Verify {
        /// Audit files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Generate a development PKI: CA, a localhost server certificate, client certificates.
    Dev {
        /// Output directory.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// A caller to issue a client certificate for (repeatable).
        #[arg(long = "caller")]
        callers: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
}

/// Config file kinds with a schema.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SchemaKind {
    /// `gateway.yaml`.
    Gateway,
    /// `callers.yaml`.
    Callers,
    /// `upstreams/*.yaml`.
    Upstream,
    /// `routes/*.yaml`.
    Routes,
}

impl SchemaKind {
    const ALL: [SchemaKind; 4] = [SchemaKind::Gateway, SchemaKind::Callers, SchemaKind::Upstream, SchemaKind::Routes];

    fn name(self) -> &'static str {
        match self {
            SchemaKind::Gateway => "gateway",
            SchemaKind::Callers => "callers",
            SchemaKind::Upstream => "upstream",
            SchemaKind::Routes => "routes",
        }
    }
}

/// The JSON Schema text of one config file kind.
pub fn schema_json(kind: SchemaKind) -> String {
    use crate::config::raw::{RawCallers, RawGateway, RawRoute, RawUpstream};
    let mut schema = match kind {
        SchemaKind::Gateway => schemars::schema_for!(RawGateway),
        SchemaKind::Callers => schemars::schema_for!(RawCallers),
        SchemaKind::Upstream => schemars::schema_for!(RawUpstream),
        SchemaKind::Routes => schemars::schema_for!(Vec<RawRoute>),
    };
    schema.insert("title".to_owned(), format!("Interlock {} file", kind.name()).into());
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

/// Parses arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { dir } => check(&dir),
        Command::Schema { kind: Some(k), out: None } => {
            print!("{}", schema_json(k));
            ExitCode::SUCCESS
        }
        Command::Schema { out, .. } => {
            let Some(out) = out else { return ExitCode::from(2) };
            for k in SchemaKind::ALL {
                let p = out.join(format!("{}.schema.json", k.name()));
                if let Err(e) = std::fs::create_dir_all(&out).and_then(|_| std::fs::write(&p, schema_json(k))) {
                    eprintln!("cannot write {}: {e}", p.display());
                    return ExitCode::from(2);
                }
                println!("wrote {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Command::Run { config } => run(&config),
        Command::Explain { config, caller, groups, host, method, path } => {
            let (code, text) = explain(&config, caller.as_deref(), &groups, &host, &method, &path);
            print!("{text}");
            ExitCode::from(code)
        }
        Command::Keys { command: KeysCommand::New { caller, id } } => keys_new(&caller, id),
        Command::Certs { command: CertsCommand::Dev { out, callers, days } } => certs_dev(&out, &callers, days),
        Command::Audit { command: AuditCommand::Verify { files } } => match crate::telemetry::audit::verify(&files) {
            Ok(n) => {
                println!("OK: {n} records, chain intact");
                ExitCode::SUCCESS
            }
            Err(b) => {
                eprintln!("BROKEN: {b}");
                ExitCode::from(1)
            }
        },
        Command::Tap { admin, route, caller, status, token } => tap(&admin, route, caller, status, token),
        Command::Translate { config, mapping, file } => translate(&config, &mapping, file.as_deref()),
        Command::Test { dir, only, update } => test_mappings(&dir, &only, update),
        Command::Ocsf { command: OcsfCommand::Compile { dir, classes, out } } => {
            ocsf_compile(&dir, &classes, out.as_deref())
        }
        Command::Demo { config } => crate::demo::main(config),
    }
}

/// The mappings of a policies directory (or of a `mappings/` directory), or exit code 1 with the errors printed.
fn mappings_of(dir: &Path) -> Result<Vec<std::sync::Arc<crate::translate::Mapping>>, ExitCode> {
    let m = dir.join("mappings");
    let dir = if m.is_dir() { m } else { dir.to_path_buf() };
    config::load_mappings(&dir).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        eprintln!("{}: {} error(s)", dir.display(), errors.len());
        ExitCode::from(1)
    })
}

/// `interlock translate`: exit 0 when the translation validates, 1 when it does not, 2 on bad input.
fn translate(dir: &Path, id: &str, file: Option<&Path>) -> ExitCode {
    let mappings = match mappings_of(dir) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let Some(m) = mappings.iter().find(|m| m.id == id) else {
        let known: Vec<&str> = mappings.iter().map(|m| m.id.as_str()).collect();
        eprintln!("no mapping `{id}` (known: {})", known.join(", "));
        return ExitCode::from(2);
    };
    let text = match file {
        Some(p) if p != Path::new("-") => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())),
        _ => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .map(|_| buf)
                .map_err(|e| format!("cannot read standard input: {e}"))
        }
    };
    let input = match text.and_then(|t| serde_json::from_slice(&t).map_err(|e| format!("the payload is not JSON: {e}")))
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let out = m.translate(&input);
    // One write (stdout is line-buffered: a pretty-printed page would be a write per line).
    let mut text = serde_json::to_string_pretty(&out.output).unwrap_or_default();
    text.push('\n');
    if let Err(e) = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
        eprintln!("error: cannot write the output: {e}");
        return ExitCode::from(2);
    }
    if out.reasons.is_empty() {
        eprintln!("valid: {} record(s) of {}", out.records, m.target.describe());
        ExitCode::SUCCESS
    } else {
        let what = if out.program_failed { "program error" } else { "invalid" };
        eprintln!("{what}: {} problem(s) against {}:", out.reasons.len(), m.target.describe());
        for r in &out.reasons {
            eprintln!("  - {r}");
        }
        ExitCode::from(1)
    }
}

/// `interlock test`: exit 0 when every sample of every mapping translates, validates and matches.
fn test_mappings(dir: &Path, only: &[String], update: bool) -> ExitCode {
    let mappings = match mappings_of(dir) {
        Ok(m) => m,
        Err(code) => return code,
    };
    for id in only {
        if !mappings.iter().any(|m| &m.id == id) {
            eprintln!("no mapping `{id}`");
            return ExitCode::from(2);
        }
    }
    let (mut samples, mut failed, mut tested) = (0, 0, 0);
    for m in mappings.iter().filter(|m| only.is_empty() || only.contains(&m.id)) {
        tested += 1;
        if let Some(why) = m.program.not_fast() {
            println!("note  {}: runs on jaq only, not the fast path ({why}); see docs/translation.md", m.id);
        }
        if m.samples.is_empty() {
            println!("warn  {}: no samples (add `samples:` to {})", m.id, m.origin.file.display());
            continue;
        }
        for r in crate::translate::samples::run(m) {
            samples += 1;
            let name = r.input.display();
            if r.passed() {
                println!("ok    {}  {name}  ({} record(s))", m.id, r.records);
                continue;
            }
            if update && r.problems.is_empty() {
                let Some(s) = m.samples.iter().find(|s| s.input == r.input) else { continue };
                let text = serde_json::to_string_pretty(&r.output).unwrap_or_default() + "\n";
                if let Err(e) = std::fs::write(&s.expected, text) {
                    eprintln!("cannot write {}: {e}", s.expected.display());
                    return ExitCode::from(2);
                }
                println!("wrote {}  {}", m.id, s.expected.display());
                continue;
            }
            failed += 1;
            println!("FAIL  {}  {name}", m.id);
            for p in &r.problems {
                println!("      {p}");
            }
            if !r.diff.is_empty() {
                println!("      differs from the expected output:");
                for d in &r.diff {
                    println!("        {d}");
                }
            }
        }
    }
    println!("{tested} mapping(s), {samples} sample(s), {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn ocsf_compile(dir: &Path, classes: &[String], out: Option<&Path>) -> ExitCode {
    let names: Vec<&str> = if classes.is_empty() {
        crate::translate::ocsf::DEFAULT_CLASSES.to_vec()
    } else {
        classes.iter().map(String::as_str).collect()
    };
    let schema = match crate::translate::ocsf::compile(dir, &names) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let text = serde_json::to_string(&schema).unwrap_or_default() + "\n";
    match out {
        None => print!("{text}"),
        Some(p) => {
            if let Err(e) = std::fs::write(p, &text) {
                eprintln!("cannot write {}: {e}", p.display());
                return ExitCode::from(2);
            }
            eprintln!(
                "wrote {} (OCSF {}: {} classes, {} objects, {} bytes)",
                p.display(),
                schema.version,
                schema.classes.len(),
                schema.objects.len(),
                text.len()
            );
        }
    }
    ExitCode::SUCCESS
}

/// `interlock explain`: the same engine as the proxy, offline. Returns (exit code, report):
/// 0 allowed, 3 denied, 4 no route, 1 invalid config, 2 bad arguments.
pub fn explain(
    dir: &Path,
    caller: Option<&str>,
    groups: &[String],
    host: &str,
    method: &str,
    target: &str,
) -> (u8, String) {
    use std::fmt::Write as _;
    let mut out = String::new();
    let config = match config::load(dir) {
        Ok(c) => c,
        Err(errors) => {
            let _ = writeln!(out, "{}: {} config error(s); run `interlock check`", dir.display(), errors.len());
            return (1, out);
        }
    };
    let Ok(method) = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        return (2, format!("`{method}` is not an HTTP method\n"));
    };
    let (raw_path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
    let path = match crate::proxy::normalize::normalize(raw_path) {
        Ok(p) => p.into_owned(),
        Err(e) => return (4, format!("request:    {method} {target}\ndecision:   400 invalid-path: {e}\n")),
    };
    let q = query.map(|q| format!("?{q}")).unwrap_or_default();
    let h = if host.is_empty() { String::new() } else { format!(" (host {host})") };
    let _ = writeln!(out, "request:    {method} {path}{q}{h}");
    let id = &config.identity;
    let caller = caller.map(|c| {
        let known = id.callers.iter().find(|d| d.id == c);
        let mut g: Vec<String> = known.map(|d| d.groups.clone()).unwrap_or_default();
        for x in groups {
            if !g.contains(x) {
                g.push(x.clone());
            }
        }
        let gs = if g.is_empty() { "none".to_owned() } else { g.join(", ") };
        let note = if known.is_some() { "" } else { " [not in callers.yaml]" };
        let _ = writeln!(out, "caller:     {c} (groups: {gs}){note}");
        crate::identity::Caller {
            id: c.into(),
            groups: g.into(),
            via: crate::identity::AuthMethod::ApiKey { key_id: "explain".into() },
        }
    });
    if caller.is_none() {
        let _ = writeln!(out, "caller:     unidentified");
    }
    let m = match config.router.lookup(&host.to_ascii_lowercase(), &method, &path) {
        crate::proxy::router::Lookup::Found(m) => m,
        crate::proxy::router::Lookup::MethodNotAllowed(allowed) => {
            let a: Vec<&str> = allowed.iter().map(http::Method::as_str).collect();
            let _ = writeln!(out, "route:      none for {method}; the path accepts {}", a.join(", "));
            let _ = writeln!(out, "decision:   405 method-not-allowed");
            return (4, out);
        }
        crate::proxy::router::Lookup::NotFound => {
            let _ = writeln!(out, "route:      none");
            let _ = writeln!(out, "decision:   404 no-route");
            return (4, out);
        }
    };
    let route = &config.routes[m.route];
    let upstream = &config.upstreams[route.upstream];
    let _ = writeln!(out, "route:      {} matches {} ({})", route.id, route.template, route.origin);
    for (i, ep) in upstream.endpoints.iter().enumerate() {
        let p = crate::proxy::target_path(ep, route, &m, &path);
        let lead = if i == 0 { "upstream:   " } else { "            " };
        let _ = writeln!(out, "{lead}{} -> {}://{}{p}{q}", upstream.id, ep.scheme, ep.authority);
    }
    let caller_id = caller.as_ref().map(|c| c.id.to_string());
    match upstream.credential_for(route, caller_id.as_deref()) {
        Ok(Some(c)) => {
            let _ = writeln!(out, "credential: {} ({}; value never shown)", c.id, c.describe());
        }
        Ok(None) => {
            let _ = writeln!(out, "credential: none");
        }
        Err(_) => {
            let _ = writeln!(out, "credential: none assigned to this caller (403 no-credential)");
        }
    }
    let ident = if route.anonymous { "not required (anonymous route)" } else { "required" };
    let _ = writeln!(out, "identity:   {ident}");
    let _ = writeln!(out, "rules:");
    let considered = crate::policy::explain(&route.policy, caller.as_ref(), &method, &path);
    if considered.is_empty() {
        let _ = writeln!(out, "  (none: deny by default)");
    }
    for c in &considered {
        let verdict = if c.matched { "MATCHES" } else { "no match" };
        let _ = writeln!(out, "  {:<16} {:<44} {verdict:<8} {}", c.rule, c.description, c.origin);
    }
    let decision = crate::policy::decide(&route.policy, caller.as_ref(), &method, &path);
    let needs_identity = !route.anonymous && caller.is_none();
    let verdict = if needs_identity {
        "DENY: 401 unauthenticated (the route needs an identified caller)".to_owned()
    } else {
        match &decision {
            crate::policy::Decision::Allow(r) => format!("ALLOW by {r}"),
            crate::policy::Decision::Deny(Some(r)) => format!("DENY by {r}: 403 forbidden"),
            crate::policy::Decision::Deny(None) => {
                "DENY: no allow rule matches (deny by default): 403 forbidden".to_owned()
            }
        }
    };
    let _ = writeln!(out, "decision:   {verdict}");
    if let Some(s) = crate::policy::shadow(&route.policy, caller.as_ref(), &method, &path) {
        let _ = writeln!(out, "shadow:     {s} (reported only, never enforced)");
    }
    let upstream = &config.upstreams[route.upstream];
    let mut rates: Vec<String> = route.rate_limits.iter().map(|l| l.describe()).collect();
    if let Some(q) = &upstream.quota {
        let mut d = q.limit.describe();
        if q.dialect != crate::ratelimit::vendor::Dialect::None {
            d.push_str(&format!(", paced by `{}` headers", q.dialect.name()));
        }
        rates.push(d);
    }
    let _ = writeln!(
        out,
        "limits:     timeout {}, max body {}; {}",
        units::format_duration(route.timeout),
        units::format_size(route.max_body),
        if rates.is_empty() {
            "no rate limits configured".to_owned()
        } else {
            format!("rate limits: {}", rates.join("; "))
        }
    );
    let allowed = !needs_identity && matches!(decision, crate::policy::Decision::Allow(_));
    (if allowed { 0 } else { 3 }, out)
}

fn tap(
    admin: &str,
    route: Option<String>,
    caller: Option<String>,
    status: Option<String>,
    token: Option<String>,
) -> ExitCode {
    use http_body_util::BodyExt as _;
    let mut q = Vec::new();
    for (k, v) in [("route", route), ("caller", caller), ("status", status)] {
        if let Some(v) = v {
            q.push(format!("{k}={v}"));
        }
    }
    let url = format!("{}/tap?{}", admin.trim_end_matches('/'), q.join("&"));
    let rt = match runtime(1) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("interlock: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let mut req = match http::Request::get(&url).body(http_body_util::Empty::new()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("interlock: bad admin URL `{url}`: {e}");
                return ExitCode::from(2);
            }
        };
        if let Some(t) = token.and_then(|t| http::HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
            req.headers_mut().insert(http::header::AUTHORIZATION, t);
        }
        let res = match client.request(req).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("interlock: cannot reach {url}: {e}");
                return ExitCode::from(2);
            }
        };
        if !res.status().is_success() {
            eprintln!("interlock: {url} answered {}", res.status());
            return ExitCode::from(2);
        }
        let mut body = res.into_body();
        let mut pending = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Some(d) = frame.data_ref() else { continue };
            pending.push_str(&String::from_utf8_lossy(d));
            while let Some(end) = pending.find("\n\n") {
                let event: String = pending.drain(..end + 2).collect();
                for line in event.lines() {
                    if let Some(json) = line.strip_prefix("data: ") {
                        if let Ok(v) = serde_json::from_str::<serde_json::Value>(json) {
                            println!(
                                "{} {} {} {} route={} caller={} {}ms{}",
                                v["time"].as_str().unwrap_or(""),
                                v["status"],
                                v["method"].as_str().unwrap_or(""),
                                v["path"].as_str().unwrap_or(""),
                                v["route"].as_str().unwrap_or("-"),
                                v["caller"].as_str().unwrap_or("-"),
                                v["duration_ms"],
                                v["error"].as_str().map(|e| format!(" {e}")).unwrap_or_default(),
                            );
                        }
                    } else if let Some(comment) = line.strip_prefix(": ") {
                        eprintln!("# {comment}");
                    }
                }
            }
        }
        ExitCode::SUCCESS
    })
}

fn keys_new(caller: &str, id: Option<String>) -> ExitCode {
    let (key, stored) = match crate::identity::apikey::generate() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("interlock: {e}");
            return ExitCode::from(2);
        }
    };
    let today = time::OffsetDateTime::now_utc().date();
    let id = id.unwrap_or_else(|| format!("{caller}-{today}"));
    println!("API key for caller `{caller}` (shown once; give it to the tool, store it in its secret store):\n");
    println!("    {key}\n");
    println!("Add to callers.yaml under the caller `{caller}` (only the hash is stored):\n");
    println!("  - id: {caller}\n    api_keys:\n      - id: {id}\n        hash: {stored}\n");
    println!("The tool sends it in the configured header (default `x-api-key: <key>`).");
    ExitCode::SUCCESS
}

fn certs_dev(out: &Path, callers: &[String], days: u32) -> ExitCode {
    match crate::certs::write_dev_pki(out, callers, days) {
        Ok(files) => {
            for f in files {
                println!("wrote {f}");
            }
            let d = out.display();
            println!("\nA TLS listener with client certificates (gateway.yaml):\n");
            println!("  listeners:\n    - bind: 127.0.0.1:8443\n      tls:\n        certificates:\n          - cert: {d}/server.pem\n            key: {d}/server.key\n        client_auth: required\n        client_ca: {d}/ca.pem\n");
            if !callers.is_empty() {
                println!("The callers (callers.yaml):\n\n  callers:");
                for c in callers {
                    println!("    - id: {c}\n      mtls: [spiffe://{}/{c}]", crate::certs::DEV_TRUST_DOMAIN);
                }
                let c = &callers[0];
                println!("\nThen: curl --cacert {d}/ca.pem --cert {d}/client-{c}.pem --key {d}/client-{c}.key https://localhost:8443/...");
            }
            println!("\nThese are for development only: paths in the config are relative to the policies directory.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("interlock: {e}");
            ExitCode::from(2)
        }
    }
}

fn print_errors(dir: &Path, errors: &[config::ConfigError]) {
    eprintln!("{}: {} error(s):", dir.display(), errors.len());
    for e in errors {
        eprintln!("  {e}");
    }
}

fn check(dir: &Path) -> ExitCode {
    match config::load(dir) {
        Err(errors) => {
            print_errors(dir, &errors);
            ExitCode::from(1)
        }
        Ok(c) => {
            println!("{}: OK", dir.display());
            for w in &c.warnings {
                println!("warning: {w}");
            }
            println!("listeners:");
            for l in &c.gateway.listeners {
                let h2 = if l.tls.is_some() { "h2" } else { "h2c" };
                let protos = match (l.http1, l.h2c) {
                    (true, true) => format!("http1+{h2}"),
                    (true, false) => "http1".to_owned(),
                    _ => h2.to_owned(),
                };
                let tls = match &l.tls {
                    Some(t) => format!(", TLS, client certificates {:?}", t.client_auth).to_lowercase(),
                    None => String::new(),
                };
                println!("  {:<20} {} ({protos}{tls}, max {} connections)", l.name, l.bind, l.max_connections);
            }
            println!("  {:<20} {}", "admin", c.gateway.admin_bind);
            println!("upstreams:");
            for u in &c.upstreams {
                let eps: Vec<String> =
                    u.endpoints.iter().map(|e| format!("{}://{}{}", e.scheme, e.authority, e.base_path)).collect();
                let cred = u
                    .credentials
                    .iter()
                    .map(|c| format!(", credential `{}` ({})", c.id, c.describe()))
                    .collect::<String>();
                println!("  {:<20} {}{cred}", u.id, eps.join(" "));
            }
            let id = &c.identity;
            println!(
                "callers: {} known, {} API key(s) in header `{}`, {} JWT issuer(s)",
                id.callers.len(),
                id.keys.len(),
                id.api_key_header,
                id.issuers.len()
            );
            println!("routes:");
            for r in &c.routes {
                let methods = r
                    .methods
                    .as_ref()
                    .map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","))
                    .unwrap_or_else(|| "*".to_owned());
                let host = r.host.as_ref().map(|h| format!(" host {h}")).unwrap_or_default();
                let anon = if r.anonymous { ", anonymous" } else { "" };
                println!(
                    "  {:<20} {methods} {}{host} -> {} (timeout {}, max body {}{anon})",
                    r.id,
                    r.template,
                    c.upstreams[r.upstream].id,
                    units::format_duration(r.timeout),
                    units::format_size(r.max_body)
                );
            }
            ExitCode::SUCCESS
        }
    }
}

/// Builds the runtime the config asks for: one worker thread means a single-threaded scheduler
/// (no work stealing to pay for), more means the multi-threaded one.
pub fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = if worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if worker_threads > 1 {
            b.worker_threads(worker_threads);
        }
        b
    };
    b.enable_all().thread_name("interlock").build()
}

fn run(dir: &Path) -> ExitCode {
    let config = match config::load(dir) {
        Ok(c) => c,
        Err(errors) => {
            print_errors(dir, &errors);
            return ExitCode::from(1);
        }
    };
    crate::telemetry::init_logging(&config.gateway.log);
    let rt = match runtime(config.gateway.worker_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(crate::app::run(dir, config));
    // A translation abandoned at its deadline may still run on a blocking thread: do not wait
    // for it to exit (dropping the runtime would).
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("interlock: {e}");
            ExitCode::from(2)
        }
    }
}
