//! `interlock demo`: two simulated vendor APIs on loopback and the gateway in front of them.
//!
//! The vendors are small in-process HTTP servers with realistic payloads: a threat-intelligence
//! lookup API (files and domains, `x-apikey` auth, JSON:API-style envelopes) and an EDR alerts API
//! (query ids then fetch details, bearer auth, `meta`/`resources`/`errors` envelopes). They check the
//! credential the gateway injects, so a successful call proves the tool never needed the key.
//! The tests use [`vendors`] directly as realistic upstreams.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The key the simulated intel API expects (the demo's `secrets/intel.key`).
pub const INTEL_KEY: &str = "demo-intel-key-0f3a9c";
/// The token the simulated EDR API expects (the demo's `secrets/edr.token`).
pub const EDR_TOKEN: &str = "demo-edr-token-7b21e4";
/// Where the demo's simulated intel API listens (matches `policies/demo/upstreams/intel.yaml`).
pub const INTEL_ADDR: &str = "127.0.0.1:18901";
/// Where the demo's simulated EDR API listens (matches `policies/demo/upstreams/edr.yaml`).
pub const EDR_ADDR: &str = "127.0.0.1:18902";

/// The demo caller's API key (its hash is in `policies/demo/callers.yaml`). Not a secret.
pub const DEMO_API_KEY: &str = "ilk_demo_soar_key_not_secret_7fQ2xLw9";

/// A known-bad file hash in the intel fixture (the EICAR test file's MD5).
pub const BAD_HASH: &str = "44d88612fea8a8f36de82e1278abb02f";

/// The demo policies built into the binary, written out when `policies/demo` is not at hand.
const EMBEDDED: &[(&str, &str)] = &[
    ("gateway.yaml", include_str!("../../policies/demo/gateway.yaml")),
    ("callers.yaml", include_str!("../../policies/demo/callers.yaml")),
    ("upstreams/intel.yaml", include_str!("../../policies/demo/upstreams/intel.yaml")),
    ("upstreams/edr.yaml", include_str!("../../policies/demo/upstreams/edr.yaml")),
    ("routes/intel.yaml", include_str!("../../policies/demo/routes/intel.yaml")),
    ("routes/edr.yaml", include_str!("../../policies/demo/routes/edr.yaml")),
    (
        "mappings/crowdstrike-alerts-ocsf.yaml",
        include_str!("../../policies/demo/mappings/crowdstrike-alerts-ocsf.yaml"),
    ),
    ("mappings/crowdstrike-alerts-ocsf.jq", include_str!("../../policies/mappings/crowdstrike-alerts-ocsf.jq")),
    ("mappings/virustotal-file-stix.yaml", include_str!("../../policies/demo/mappings/virustotal-file-stix.yaml")),
    ("mappings/virustotal-stix.jq", include_str!("../../policies/mappings/virustotal-stix.jq")),
    ("secrets/intel.key", include_str!("../../policies/demo/secrets/intel.key")),
    ("secrets/edr.token", include_str!("../../policies/demo/secrets/edr.token")),
];

/// Which simulated vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// Threat-intelligence lookups.
    Intel,
    /// EDR alerts.
    Edr,
}

/// Serves `vendor` on `tcp` until the task is dropped.
pub async fn serve_vendor(tcp: TcpListener, vendor: Vendor) {
    loop {
        let Ok((stream, _)) = tcp.accept().await else { continue };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| async move {
                Ok::<_, Infallible>(match vendor {
                    Vendor::Intel => intel(req).await,
                    Vendor::Edr => edr(req).await,
                })
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Binds both vendors (on the given addresses, e.g. `127.0.0.1:0`) and returns where they listen.
pub async fn vendors(intel_addr: &str, edr_addr: &str) -> std::io::Result<(SocketAddr, SocketAddr)> {
    let i = TcpListener::bind(intel_addr).await?;
    let e = TcpListener::bind(edr_addr).await?;
    let addrs = (i.local_addr()?, e.local_addr()?);
    tokio::spawn(serve_vendor(i, Vendor::Intel));
    tokio::spawn(serve_vendor(e, Vendor::Edr));
    Ok(addrs)
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn intel(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let err = |status, code: &str, message: &str| {
        json(status, serde_json::json!({"error": {"code": code, "message": message}}))
    };
    match req.headers().get("x-apikey").map(|v| v.as_bytes()) {
        None => return err(StatusCode::UNAUTHORIZED, "AuthenticationRequiredError", "X-Apikey header is missing"),
        Some(k) if k != INTEL_KEY.as_bytes() => {
            return err(StatusCode::UNAUTHORIZED, "WrongCredentialsError", "Wrong API key")
        }
        Some(_) => {}
    }
    if req.method() != Method::GET {
        return err(StatusCode::METHOD_NOT_ALLOWED, "NotAllowedError", "Only GET is supported");
    }
    let path = req.uri().path();
    if let Some(hash) = path.strip_prefix("/api/v3/files/") {
        return match intel_file(hash) {
            Some(v) => json(StatusCode::OK, v),
            None => err(StatusCode::NOT_FOUND, "NotFoundError", &format!("File \"{hash}\" not found")),
        };
    }
    if let Some(domain) = path.strip_prefix("/api/v3/domains/") {
        return json(StatusCode::OK, intel_domain(domain));
    }
    err(StatusCode::NOT_FOUND, "NotFoundError", "Resource not found")
}

fn intel_file(hash: &str) -> Option<serde_json::Value> {
    let h = hash.to_ascii_lowercase();
    let (sha256, md5, names, stats, reputation, tags, kind) = match h.as_str() {
        BAD_HASH | "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f" => (
            "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f",
            BAD_HASH,
            vec!["eicar.com", "eicar_test_file.txt"],
            (0, 66, 2, 7),
            -1200,
            vec!["text", "known-distributor"],
            ("ASCII text", "text"),
        ),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" | "d41d8cd98f00b204e9800998ecf8427e" => (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "d41d8cd98f00b204e9800998ecf8427e",
            vec!["empty.txt"],
            (0, 0, 0, 74),
            0,
            vec!["empty"],
            ("Empty file", "empty"),
        ),
        _ => return None,
    };
    let (harmless, malicious, suspicious, undetected) = stats;
    Some(serde_json::json!({
        "data": {
            "id": sha256,
            "type": "file",
            "links": {"self": format!("https://intel.example/api/v3/files/{sha256}")},
            "attributes": {
                "md5": md5,
                "sha256": sha256,
                "names": names,
                "meaningful_name": names[0],
                "type_description": kind.0,
                "type_tag": kind.1,
                "size": if malicious > 0 { 68 } else { 0 },
                "first_submission_date": 1_148_301_722,
                "last_analysis_date": 1_764_633_600,
                "last_analysis_stats": {"harmless": harmless, "malicious": malicious, "suspicious": suspicious, "undetected": undetected, "timeout": 0},
                "reputation": reputation,
                "tags": tags,
                "total_votes": {"harmless": 3, "malicious": if malicious > 0 { 412 } else { 0 }},
            }
        }
    }))
}

fn intel_domain(domain: &str) -> serde_json::Value {
    let bad = domain.ends_with(".test") || domain.contains("malware");
    serde_json::json!({
        "data": {
            "id": domain,
            "type": "domain",
            "links": {"self": format!("https://intel.example/api/v3/domains/{domain}")},
            "attributes": {
                "registrar": "Example Registrar, Inc.",
                "creation_date": 808_372_800,
                "last_analysis_date": 1_764_547_200,
                "last_analysis_stats": {"harmless": if bad { 50 } else { 66 }, "malicious": if bad { 9 } else { 0 }, "suspicious": if bad { 3 } else { 0 }, "undetected": 12, "timeout": 0},
                "reputation": if bad { -35 } else { 12 },
                "categories": {"engine-a": if bad { "malicious" } else { "information technology" }},
                "tags": [],
            }
        }
    })
}

const ALERTS: [(&str, u32, &str, &str, &str, &str); 3] = [
    (
        "a1b2c3:ind:0f9e8d7c6b5a:41958-10-1764633600",
        70,
        "High",
        "Credential Access",
        "T1003",
        "lsass.exe memory read by unsigned process",
    ),
    (
        "a1b2c3:ind:0f9e8d7c6b5a:41977-10-1764634500",
        50,
        "Medium",
        "Execution",
        "T1059.001",
        "PowerShell with encoded command line",
    ),
    (
        "a1b2c3:ind:7c6b5a4d3e2f:42001-10-1764637200",
        90,
        "Critical",
        "Impact",
        "T1486",
        "Mass file renames consistent with ransomware",
    ),
];

async fn edr(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let envelope = |status, resources: serde_json::Value, errors: serde_json::Value| {
        let mut r = json(
            status,
            serde_json::json!({
                "meta": {"query_time": 0.004_213, "powered_by": "alerts-api", "trace_id": "5c1b7e52-demo"},
                "resources": resources,
                "errors": errors,
            }),
        );
        r.headers_mut().insert("x-ratelimit-limit", HeaderValue::from_static("300"));
        r.headers_mut().insert("x-ratelimit-remaining", HeaderValue::from_static("299"));
        r
    };
    let expected = format!("Bearer {EDR_TOKEN}");
    if req.headers().get("authorization").map(|v| v.as_bytes()) != Some(expected.as_bytes()) {
        return envelope(
            StatusCode::UNAUTHORIZED,
            serde_json::json!([]),
            serde_json::json!([{"code": 401, "message": "access denied, invalid bearer token"}]),
        );
    }
    match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/alerts/queries/alerts/v2") => {
            let limit = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(100)
                .min(ALERTS.len());
            let ids: Vec<&str> = ALERTS.iter().take(limit).map(|a| a.0).collect();
            envelope(StatusCode::OK, serde_json::json!(ids), serde_json::json!([]))
        }
        (Method::POST, "/alerts/entities/alerts/v2") => {
            let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return envelope(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!([]),
                        serde_json::json!([{"code": 400, "message": "body unreadable"}]),
                    )
                }
            };
            let ids: Vec<String> = match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(v) => v["composite_ids"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default(),
                Err(_) => {
                    return envelope(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!([]),
                        serde_json::json!([{"code": 400, "message": "invalid JSON body: expected {\"composite_ids\": [...]}"}]),
                    )
                }
            };
            let found: Vec<serde_json::Value> = ALERTS
                .iter()
                .filter(|a| ids.iter().any(|i| i == a.0))
                .map(|(id, sev, sev_name, tactic, technique, desc)| {
                    serde_json::json!({
                        "composite_id": id,
                        "cid": "a1b2c3",
                        "agent_id": id.split(':').nth(2).unwrap_or(""),
                        "product": "epp",
                        "type": "ldt",
                        "severity": sev,
                        "severity_name": sev_name,
                        "confidence": 80,
                        "status": "new",
                        "tactic": tactic,
                        "technique_id": technique,
                        "description": desc,
                        "created_timestamp": "2026-12-02T00:00:00.123456789Z",
                        "device": {"hostname": "WS-FIN-0042", "platform_name": "Windows", "local_ip": "10.20.30.42"},
                        "process_start_time": "1764633590",
                        "is_synthetic_quarantine_disposition": "false",
                    })
                })
                .collect();
            let missing: Vec<serde_json::Value> = ids
                .iter()
                .filter(|i| !ALERTS.iter().any(|a| a.0 == i.as_str()))
                .map(|i| serde_json::json!({"code": 404, "message": format!("alert {i} not found")}))
                .collect();
            envelope(StatusCode::OK, serde_json::json!(found), serde_json::json!(missing))
        }
        _ => envelope(
            StatusCode::NOT_FOUND,
            serde_json::json!([]),
            serde_json::json!([{"code": 404, "message": "no such endpoint"}]),
        ),
    }
}

/// Writes the built-in demo policies into `dir`.
pub fn write_embedded(dir: &Path) -> std::io::Result<()> {
    for (rel, text) in EMBEDDED {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, text)?;
    }
    Ok(())
}

/// The commands printed for a newcomer.
pub fn curl_commands(gateway: SocketAddr, admin: SocketAddr) -> Vec<(String, String)> {
    let g = format!("http://{gateway}");
    let k = format!("-H 'x-api-key: {DEMO_API_KEY}'");
    vec![
        (
            "Look up a known-bad file hash as the `soar` tool (its Interlock API key in; the vendor key added by the gateway):".into(),
            format!("curl -s {k} {g}/intel/files/{BAD_HASH}"),
        ),
        ("Without a key, the gateway does not know who is calling: 401 problem+json:".into(), format!("curl -si {g}/intel/files/{BAD_HASH}")),
        ("Look up a domain:".into(), format!("curl -s {k} {g}/intel/domains/malware-c2.test")),
        ("List EDR alert ids (the gateway adds the vendor's bearer token):".into(), format!("curl -s {k} '{g}/edr/alerts?limit=2'")),
        (
            "Fetch alert details by id:".into(),
            format!(
                "curl -s {k} -X POST {g}/edr/alerts/details -H 'content-type: application/json' -d '{{\"composite_ids\":[\"{}\"]}}'",
                ALERTS[0].0
            ),
        ),
        (
            "The same alert as an OCSF 1.8 Detection Finding, validated (the gateway translates when asked):".into(),
            format!(
                "curl -s {k} -X POST {g}/edr/alerts/details -H 'content-type: application/json' -H 'accept: application/ocsf+json' -d '{{\"composite_ids\":[\"{}\"]}}'",
                ALERTS[0].0
            ),
        ),
        (
            "The file report as a STIX 2.1 bundle:".into(),
            format!("curl -s {k} -H 'accept: application/stix+json;version=2.1' {g}/intel/files/{BAD_HASH}"),
        ),
        (
            "The same lookup again: answered from the gateway's cache, no vendor call (see interlock-cache and age):".into(),
            format!("curl -s -o /dev/null -D - {k} {g}/intel/files/{BAD_HASH}"),
        ),
        ("An unknown hash: the vendor's own 404 passes through:".into(), format!("curl -s {k} {g}/intel/files/0000000000000000000000000000dead")),
        ("A path no route serves: a problem+json answer from the gateway:".into(), format!("curl -si {k} {g}/nope")),
        ("A path trick the gateway refuses before routing:".into(), format!("curl -si {k} --path-as-is '{g}/intel/files/..%2f..%2fadmin'")),
        ("The gateway's config status (admin port):".into(), format!("curl -s http://{admin}/config/status")),
    ]
}

/// `interlock demo`.
pub fn main(config: Option<PathBuf>) -> ExitCode {
    let (dir, _tmp) = match config {
        Some(d) => (d, None),
        None if Path::new("policies/demo/gateway.yaml").is_file() => (PathBuf::from("policies/demo"), None),
        None => {
            let tmp = std::env::temp_dir().join(format!("interlock-demo-{}", std::process::id()));
            if let Err(e) = write_embedded(&tmp) {
                eprintln!("cannot write the demo policies to {}: {e}", tmp.display());
                return ExitCode::from(2);
            }
            (tmp.clone(), Some(TempDir(tmp)))
        }
    };
    let config = match crate::config::load(&dir) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{}: {} error(s):", dir.display(), errors.len());
            for e in errors {
                eprintln!("  {e}");
            }
            return ExitCode::from(1);
        }
    };
    crate::telemetry::init_logging(&config.gateway.log);
    let rt = match crate::cli::runtime(0) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        if let Err(e) = vendors(INTEL_ADDR, EDR_ADDR).await {
            eprintln!("cannot start the simulated vendors on {INTEL_ADDR} and {EDR_ADDR}: {e}\nIs another demo already running?");
            return ExitCode::from(2);
        }
        let gw = match crate::app::Gateway::start_with(&dir, config).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("interlock demo: {e}\nIs another demo already running? Stop it or free the port.");
                return ExitCode::from(2);
            }
        };
        let store = Arc::clone(&gw.store);
        let mut out = String::new();
        out.push_str("\nInterlock demo is running.\n");
        out.push_str(&format!("  gateway  http://{}   (policies: {})\n", gw.listen_addrs[0], dir.display()));
        out.push_str(&format!("  admin    http://{}\n", gw.admin_addr));
        out.push_str(&format!("  simulated vendors: threat intel on {INTEL_ADDR}, EDR on {EDR_ADDR}\n\n"));
        out.push_str("Paste these into another terminal:\n\n");
        for (what, cmd) in curl_commands(gw.listen_addrs[0], gw.admin_addr) {
            out.push_str(&format!("  # {what}\n  {cmd}\n\n"));
        }
        out.push_str("Edit a file under the policies directory and the gateway reloads it. Ctrl-C stops the demo.\n");
        println!("{out}");
        crate::app::wait_for_stop_signal(&store).await;
        gw.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Removes the written-out demo policies when the demo ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
