//! Authorization through the real gateway: allow, deny-wins, default deny, shadow, and `explain`.

use http::{Request, StatusCode};

use crate::support::*;

const KEYS: [(&str, &str, &str); 4] = [
    ("soar", "ilk_policy_soar_0000000000000000000", "automation"),
    ("siem", "ilk_policy_siem_1111111111111111111", "enrichment"),
    ("intern", "ilk_policy_intern_22222222222222222", "enrichment"),
    ("stranger", "ilk_policy_stranger_3333333333333333", ""),
];

const ROUTES: &str = r#"
- id: lookup
  match:
    path: /intel/**
  upstream: up
  allow: [group:enrichment, caller:soar]
  deny: [caller:intern]
  shadow:
    allow: [caller:soar]
- id: contain
  match:
    path: /edr/**
  upstream: up
  allow:
    - callers: [soar]
      methods: [POST]
      path: /edr/hosts/{id}/contain
- id: closed
  match:
    path: /closed/**
  upstream: up
"#;

fn policies(up: std::net::SocketAddr) -> Policies {
    let p = Policies::new("telemetry:\n  access_log:\n    enabled: true\n    output: access.log\n");
    let mut callers = String::from("callers:\n");
    for (id, key, group) in KEYS {
        let hash: String = interlock::identity::apikey::digest(key).iter().map(|b| format!("{b:02x}")).collect();
        let groups = if group.is_empty() { String::new() } else { format!("    groups: [{group}]\n") };
        callers.push_str(&format!(
            "  - id: {id}\n{groups}    api_keys:\n      - id: {id}-k\n        hash: sha256:{hash}\n"
        ));
    }
    p.write("callers.yaml", &callers);
    p.upstream("up", up, "", "credential:\n  id: vendor\n  header: x-vendor\n  value: file:k\n");
    p.write("k", "vendor-secret");
    p.write("routes/r.yaml", ROUTES);
    p
}

async fn as_caller(gw: &Running, who: &str, method: &str, path: &str) -> (StatusCode, http::HeaderMap, String) {
    let key = KEYS.iter().find(|k| k.0 == who).unwrap().1;
    let req = Request::builder().method(method).uri(gw.url(path)).header("x-api-key", key).body(empty()).unwrap();
    call(&h1_client(), req).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_matrix() {
    let up = Upstream::start().await;
    let gw = Running::start(policies(up.addr)).await;
    let cases = [
        ("soar", "GET", "/intel/x", 200),               // allow by caller
        ("siem", "GET", "/intel/x", 200),               // allow by group
        ("intern", "GET", "/intel/x", 403),             // deny wins over the group grant
        ("stranger", "GET", "/intel/x", 403),           // known caller, no rule
        ("soar", "POST", "/edr/hosts/h1/contain", 200), // method + path narrowed rule
        ("soar", "GET", "/edr/hosts/h1/contain", 403),
        ("soar", "POST", "/edr/hosts/h1/release", 403),
        ("siem", "POST", "/edr/hosts/h1/contain", 403),
        ("soar", "GET", "/closed/x", 403), // no allow rules: deny by default
    ];
    let mut served = 0;
    for (who, m, path, want) in cases {
        let before = up.count();
        let (s, h, b) = as_caller(&gw, who, m, path).await;
        assert_eq!(s.as_u16(), want, "{who} {m} {path}: {b}");
        if want == 403 {
            let v = assert_problem(s, &h, &b, 403, "forbidden");
            let detail = v["detail"].as_str().unwrap();
            assert!(detail.contains(&format!("caller `{who}`")), "{detail}");
            assert!(
                !detail.contains("group:") && !detail.contains("allow["),
                "the detail must not dump the policy: {detail}"
            );
            assert_eq!(up.count(), before, "a denied call reached the upstream");
        } else {
            served += 1;
        }
    }
    assert_eq!(up.count(), served);
    let (_, _, b) = as_caller(&gw, "intern", "GET", "/intel/x").await;
    assert!(b.contains("a deny rule (deny[0]: caller intern) refuses it"), "{b}");
    // Shadow: siem is allowed today but the candidate policy (soar only) would deny it.
    let (_, _, m) = get(&format!("http://{}/metrics", gw.admin)).await;
    let shadow: f64 = m
        .lines()
        .find(|l| l.starts_with("interlock_policy_shadow_denials_total{route=\"lookup\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert_eq!(shadow, 1.0, "one siem call was served and would be denied by the shadow policy: {m}");
    // ...and the access log line of that call names the shadow rule; no other line has one.
    let log = gw.policies.path().join("access.log");
    let calls = cases.len() + 1; // the matrix and the second intern call
    wait_until("access log lines", std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(&log).map(|t| t.lines().count() >= calls).unwrap_or(false)
    })
    .await;
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let flagged: Vec<_> = lines.iter().filter(|l| l.get("shadow_deny").is_some()).collect();
    assert_eq!(flagged.len(), 1, "{lines:#?}");
    assert_eq!(flagged[0]["caller"], "siem");
    assert_eq!(flagged[0]["decision"], "allow");
    assert_eq!(flagged[0]["shadow_deny"], "default-deny");
}

#[test]
fn explain_reports_route_upstream_rules_and_decision() {
    let p = policies("127.0.0.1:9".parse().unwrap());
    let run = |args: &[&str]| {
        let out =
            std::process::Command::new(bin()).arg("explain").arg("--config").arg(p.path()).args(args).output().unwrap();
        (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap())
    };
    let dir = p.path().display().to_string();
    let (code, text) = run(&["--caller", "intern", "GET", "/intel/files/abc?x=1"]);
    assert_eq!(code, 3);
    let golden = format!(
        "request:    GET /intel/files/abc?x=1\n\
         caller:     intern (groups: enrichment)\n\
         route:      lookup matches /intel/** ({dir}/routes/r.yaml:2)\n\
         upstream:   up -> http://127.0.0.1:9/intel/files/abc?x=1\n\
         credential: vendor (header x-vendor; value never shown)\n\
         identity:   required\n\
         rules:\n  \
         deny[0]          caller intern                                MATCHES  {dir}/routes/r.yaml:7\n  \
         allow[0]         group enrichment                             MATCHES  {dir}/routes/r.yaml:6\n  \
         allow[1]         caller soar                                  no match {dir}/routes/r.yaml:6\n  \
         shadow.allow[0]  caller soar                                  no match {dir}/routes/r.yaml:9\n\
         decision:   DENY by deny[0]: 403 forbidden\n\
         shadow:     deny (default-deny) (reported only, never enforced)\n\
         limits:     timeout 1m, max body 10MiB; no rate limits configured\n"
    );
    assert_eq!(text, golden);
    let (code, text) = run(&["--caller", "soar", "POST", "/edr/hosts/h9/contain"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("decision:   ALLOW by allow[0]"), "{text}");
    assert!(!text.contains("vendor-secret"));
    let (code, text) = run(&["GET", "/nowhere"]);
    assert_eq!(code, 4);
    assert!(text.contains("404 no-route"), "{text}");
}
