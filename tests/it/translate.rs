//! Translation on the wire: negotiation, list mapping, drift in raw and strict modes, bad programs,
//! the body cap, and the `interlock translate` / `interlock test` commands. Uses the shipped
//! CrowdStrike mapping and fixtures from `policies/mappings/`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::*;

pub(crate) const MAPPINGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/mappings");

pub(crate) fn fixture(rel: &str) -> Bytes {
    Bytes::from(std::fs::read(Path::new(MAPPINGS).join(rel)).unwrap())
}

/// A vendor answering fixed JSON bodies by path, counting requests.
pub(crate) struct Vendor {
    pub(crate) addr: SocketAddr,
    pub(crate) hits: Arc<AtomicUsize>,
}

pub(crate) async fn vendor(bodies: HashMap<&'static str, Bytes>) -> Vendor {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let (bodies, h) = (Arc::new(bodies), hits.clone());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = tcp.accept().await else { continue };
            let (bodies, h) = (bodies.clone(), h.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = bodies.get(req.uri().path()).cloned();
                    async move {
                        let mut res = Response::new(Full::new(body.clone().unwrap_or_default()));
                        if body.is_none() {
                            *res.status_mut() = StatusCode::NOT_FOUND;
                        }
                        res.headers_mut().insert("content-type", "application/json".parse().unwrap());
                        res.headers_mut().insert("etag", "\"vendor-etag\"".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Vendor { addr, hits }
}

/// Policies with the shipped mappings copied in, one upstream `v` and the given routes
/// (anonymous callers allowed).
fn policies(v: SocketAddr, routes: &str) -> Policies {
    let p = Policies::new("");
    copy_dir(Path::new(MAPPINGS), &p.path().join("mappings"));
    p.upstream("v", v, "", "");
    p.write("routes/r.yaml", routes);
    p
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn route(id: &str, path: &str, translate: &str) -> String {
    format!("- id: {id}\n  match:\n    path: {path}\n  upstream: v\n  anonymous: true\n  translate:\n{translate}")
}

async fn get_with(url: &str, accept: Option<&str>) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut req = Request::builder().uri(url);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let res = h1_client().request(req.body(empty()).unwrap()).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> &'a str {
    h.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

/// The CrowdStrike fixture with `composite_id` renamed in its second record: the vendor "renamed a field".
fn drifted() -> Bytes {
    let mut v: serde_json::Value = serde_json::from_slice(&fixture("samples/crowdstrike/alerts-v2.json")).unwrap();
    let rec = v["resources"][1].as_object_mut().unwrap();
    let id = rec.remove("composite_id").unwrap();
    rec.insert("compositeId".to_owned(), id);
    Bytes::from(serde_json::to_vec_pretty(&v).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn same_route_answers_raw_without_accept_and_ocsf_with_it_record_by_record() {
    let raw = fixture("samples/crowdstrike/alerts-v2.json");
    let v = vendor(HashMap::from([("/alerts/entities/alerts/v2", raw.clone())])).await;
    let gw =
        Running::start(policies(v.addr, &route("cs", "/alerts/**", "    mapping: crowdstrike-alerts-ocsf\n"))).await;
    let url = gw.url("/alerts/entities/alerts/v2");

    // Without the media type in Accept: the vendor's bytes, untouched.
    let (status, h, body) = get_with(&url, Some("application/json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, raw, "the raw answer must be byte-identical to the vendor's");
    assert_eq!(header(&h, "content-type"), "application/json");
    assert_eq!(header(&h, "etag"), "\"vendor-etag\"");
    assert!(header(&h, "vary").contains("accept"), "{h:?}");
    assert!(h.get("interlock-translation").is_none());

    // With it: OCSF, each record mapped, equal to the shipped expected output.
    let (status, h, body) = get_with(&url, Some("application/ocsf+json")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&h, "content-type"), "application/ocsf+json");
    assert_eq!(header(&h, "interlock-translation"), "translated; mapping=crowdstrike-alerts-ocsf; records=4");
    assert_eq!(header(&h, "content-length"), body.len().to_string());
    assert!(h.get("etag").is_none(), "the vendor's validator does not describe the translation");
    let got: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let want: serde_json::Value = serde_json::from_slice(&fixture("samples/crowdstrike/alerts-v2.ocsf.json")).unwrap();
    assert_eq!(got, want);
    let records = got["resources"].as_array().unwrap();
    assert_eq!(records.len(), 4);
    for (r, vendor_rec) in
        records.iter().zip(serde_json::from_slice::<serde_json::Value>(&raw).unwrap()["resources"].as_array().unwrap())
    {
        assert_eq!(r["class_uid"], 2004);
        assert_eq!(r["finding_info"]["uid"], vendor_rec["composite_id"]);
    }
    assert_eq!(got["meta"]["powered_by"], "detectsapi", "the envelope is kept");
    assert_eq!(v.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_is_named_on_the_header_metric_and_admin_in_raw_and_strict_modes() {
    let bad = drifted();
    let v = vendor(HashMap::from([("/raw/alerts", bad.clone()), ("/strict/alerts", bad.clone())])).await;
    let routes = route("raw", "/raw/**", "    mapping: crowdstrike-alerts-ocsf\n    when: always\n")
        + &route(
            "strict",
            "/strict/**",
            "    mapping: crowdstrike-alerts-ocsf\n    when: always\n    on_invalid: strict\n",
        );
    let gw = Running::start(policies(v.addr, &routes)).await;

    // raw: the vendor payload as it came, and the reason on the header.
    let (status, h, body) = get_with(&gw.url("/raw/alerts"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, bad);
    let mark = header(&h, "interlock-translation");
    assert!(mark.starts_with("invalid; mapping=crowdstrike-alerts-ocsf; invalid; reasons="), "{mark}");
    assert!(mark.contains("record 1: finding_info.uid"), "the renamed field shows: {mark}");

    // strict: 502 problem+json listing the failing field.
    let (status, h, body) = get_with(&gw.url("/strict/alerts"), None).await;
    let p = assert_problem(status, &h, &String::from_utf8_lossy(&body), 502, "translation-invalid");
    assert!(p["detail"].as_str().unwrap().contains("finding_info.uid"), "{p}");

    // The metric counts both, by mapping and result.
    let (_, _, metrics) = get(&format!("http://{}/metrics", gw.admin)).await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("interlock_translations_total{") && l.contains("result=\"invalid\""))
        .unwrap_or_else(|| panic!("no invalid translations counted:\n{metrics}"));
    assert!(line.contains("mapping=\"crowdstrike-alerts-ocsf\"") && line.ends_with(" 2"), "{line}");

    // /mappings keeps the first reasons for the platform engineer.
    let (status, _, text) = get(&format!("http://{}/mappings", gw.admin)).await;
    assert_eq!(status, StatusCode::OK);
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cs = m["mappings"].as_array().unwrap().iter().find(|m| m["id"] == "crowdstrike-alerts-ocsf").unwrap();
    assert_eq!(cs["failed_responses"], 2);
    assert!(cs["routes"].as_array().unwrap().len() == 2);
    let reasons: Vec<&str> = cs["failures"].as_array().unwrap().iter().map(|f| f["reason"].as_str().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains("finding_info.uid: required attribute missing")), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_errors_and_runaway_programs_answer_invalid_never_panic_or_hang() {
    let v = vendor(HashMap::from([
        ("/s", Bytes::from_static(br#"{"a": "a string"}"#)),
        ("/n", Bytes::from_static(b"[1]")),
    ]))
    .await;
    let p = Policies::new("");
    p.upstream("v", v.addr, "", "");
    p.write("mappings/err.yaml", "id: err\nsource: {vendor: x, api: y}\ntarget: {schema: stix}\nprogram: .a.b\n");
    p.write(
        "mappings/slow.yaml",
        "id: slow\nsource: {vendor: x, api: y}\ntarget: {schema: stix}\nprogram: reduce range(3000000) as $i (0; . + 1)\n",
    );
    p.write(
        "routes/r.yaml",
        &(route("err", "/s", "    mapping: err\n    when: always\n")
            + &route("slow", "/n", "    mapping: slow\n    when: always\n    timeout: 200ms\n")),
    );
    let gw = Running::start(p).await;

    let (status, h, body) = get_with(&gw.url("/s"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], br#"{"a": "a string"}"#);
    let mark = header(&h, "interlock-translation");
    assert!(mark.starts_with("invalid; mapping=err; program-error;") && mark.contains("program error"), "{mark}");

    // A program that runs too long is abandoned at the deadline, and its mapping is switched off.
    let started = tokio::time::Instant::now();
    let (status, h, body) = tokio::time::timeout(Duration::from_secs(5), get_with(&gw.url("/n"), None))
        .await
        .expect("a runaway program must not hang the request");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"[1]"[..]));
    assert!(header(&h, "interlock-translation").starts_with("invalid; mapping=slow; timeout;"), "{h:?}");
    let (_, h, _) = get_with(&gw.url("/n"), None).await;
    assert!(header(&h, "interlock-translation").contains("switched off"), "{h:?}");
    let (_, _, text) = get(&format!("http://{}/mappings", gw.admin)).await;
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let slow = m["mappings"].as_array().unwrap().iter().find(|m| m["id"] == "slow").unwrap();
    assert_eq!(slow["switched_off"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_cap_streams_through_untranslated() {
    let big = format!("{{\"resources\": [{}]}}", vec!["{\"id\": \"x\"}"; 400].join(","));
    let v = vendor(HashMap::from([("/alerts", Bytes::from(big.clone()))])).await;
    let r = route("cs", "/alerts", "    mapping: crowdstrike-alerts-ocsf\n    when: always\n    max_body: 1KiB\n");
    let gw = Running::start(policies(v.addr, &r)).await;
    let (status, h, body) = get_with(&gw.url("/alerts"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, big.as_bytes(), "prefix and rest, in order, nothing lost");
    assert!(
        header(&h, "interlock-translation").starts_with("skipped; reason=too_large; mapping=crowdstrike-alerts-ocsf"),
        "{h:?}"
    );
    assert_eq!(header(&h, "content-type"), "application/json");
}

#[test]
fn mapping_errors_are_config_errors_with_file_and_line() {
    let p = Policies::new("");
    p.write(
        "mappings/bad.yaml",
        "id: bad\nsource: {vendor: x, api: y}\ntarget: {schema: ocsf, class: detection_finding}\nprogram: |\n  {\n    a: .x,\n    b: (.y | ]\n  }\n",
    );
    p.write(
        "mappings/wrong.yaml",
        "id: wrong\nsource: {vendor: x, api: y}\ntarget: {schema: ocsf, class: no_such_class}\nprogram: .\n",
    );
    p.write(
        "routes/r.yaml",
        "- id: r\n  match:\n    path: /x\n  upstream: nowhere\n  anonymous: true\n  translate:\n    mapping: missing\n",
    );
    let out = std::process::Command::new(bin()).arg("check").arg(p.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("mappings/bad.yaml:7") && text.contains("jq:"), "the syntax error is on line 7:\n{text}");
    assert!(text.contains("mappings/wrong.yaml:3") && text.contains("no_such_class"), "{text}");
    assert!(text.contains("no mapping `missing`"), "{text}");
}

#[test]
fn interlock_translate_and_interlock_test_report_what_fails() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new(MAPPINGS), dir.path());
    // translate: the output on stdout, the validation report on stderr.
    let input = dir.path().join("drifted.json");
    std::fs::write(&input, drifted()).unwrap();
    let out = std::process::Command::new(bin())
        .args(["translate", "--config"])
        .arg(dir.path())
        .args(["--mapping", "crowdstrike-alerts-ocsf"])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("record 1: finding_info.uid: required attribute missing"), "{report}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["resources"][0]["class_uid"], 2004);

    // test: every shipped sample passes...
    let out = std::process::Command::new(bin()).arg("test").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // ...all on the fast path; a mapping outside it is named, with the reason.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("runs on jaq only"));
    std::fs::write(
        dir.path().join("summed.yaml"),
        "id: summed\nsource: {vendor: x, api: y}\ntarget: {schema: ecs, version: \"8.17\"}\nprogram: 'foreach .[] as $x (0; . + $x) | {message: tostring}'\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin()).arg("test").arg(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("note  summed: runs on jaq only, not the fast path (`foreach`)"), "{text}");
    std::fs::remove_file(dir.path().join("summed.yaml")).unwrap();
    // ...and an expected output that no longer matches is a failure with a diff.
    let exp = dir.path().join("samples/crowdstrike/alerts-v2.ocsf.json");
    let text = std::fs::read_to_string(&exp).unwrap().replacen("\"severity_id\": 4", "\"severity_id\": 5", 1);
    std::fs::write(&exp, text).unwrap();
    let out = std::process::Command::new(bin()).arg("test").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL  crowdstrike-alerts-ocsf")
            && text.contains("$.resources[0].severity_id: expected 5, got 4"),
        "{text}"
    );
}

#[test]
fn the_bundled_ocsf_schema_is_what_ocsf_compile_makes_of_the_release() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema_dir = root.join("../shared/corpus/ocsf-schema-1.8.0");
    if !schema_dir.join("version.json").is_file() {
        skipped(
            "the_bundled_ocsf_schema_is_what_ocsf_compile_makes_of_the_release",
            &format!("no OCSF 1.8.0 schema directory at {}", schema_dir.display()),
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ocsf.json");
    let run = std::process::Command::new(bin())
        .args(["ocsf", "compile"])
        .arg(&schema_dir)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let made = std::fs::read_to_string(&out).unwrap();
    let bundled = std::fs::read_to_string(root.join("src/translate/data/ocsf-1.8.0.json")).unwrap();
    assert!(
        made == bundled,
        "src/translate/data/ocsf-1.8.0.json is stale: regenerate it with `interlock ocsf compile`"
    );
    // Observable types are gathered from where the schema declares them, as the schema server does.
    let v: serde_json::Value = serde_json::from_str(&made).unwrap();
    let ids = v.pointer("/objects/observable/attrs/type_id/e").and_then(|e| e.as_array()).unwrap();
    for id in [0, 1, 2, 20, 21, 99] {
        assert!(ids.iter().any(|x| x.as_i64() == Some(id)), "observable type_id {id} missing: {ids:?}");
    }
}
