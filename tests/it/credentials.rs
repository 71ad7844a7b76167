//! Credential injection: every kind, exactly one credential upstream, per-caller selection.

use http::{Request, StatusCode};

use crate::support::*;

const KEYS: [(&str, &str); 3] = [
    ("tenant-a-soar", "ilk_cred_tenant_a_0000000000000000"),
    ("tenant-b-soar", "ilk_cred_tenant_b_1111111111111111"),
    ("other", "ilk_cred_other_22222222222222222"),
];

fn callers(p: &Policies) {
    p.callers_with_keys(&KEYS, "soar");
}

async fn as_caller(
    gw: &Running,
    who: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let key = KEYS.iter().find(|k| k.0 == who).unwrap().1;
    let mut b = Request::get(gw.url(path)).header("x-api-key", key);
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    call(&h1_client(), b.body(empty()).unwrap()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_injection_kind_reaches_the_upstream_as_the_only_credential() {
    let up = Upstream::start().await;
    let p = Policies::new("");
    callers(&p);
    for (f, v) in [
        ("hdr", "hdr-secret"),
        ("user", "svc-user"),
        ("pass", "p@ss w0rd"),
        ("q", "q secret/&="),
        ("kid", "key-id-1"),
        ("ksec", "key-secret-1"),
    ] {
        p.write(&format!("s/{f}"), v);
    }
    p.upstream("hdr", up.addr, "", "credential:\n  header: X-Api-Key\n  prefix: \"Token \"\n  value: file:s/hdr\n");
    p.upstream("basic", up.addr, "", "credential:\n  basic: { username: file:s/user, password: file:s/pass }\n");
    p.upstream("query", up.addr, "", "credential:\n  query: apikey\n  value: file:s/q\n");
    p.upstream("pair", up.addr, "", "credential:\n  headers: { X-Key-Id: file:s/kid, X-Key-Secret: file:s/ksec }\n");
    let mut routes = String::new();
    for id in ["hdr", "basic", "query", "pair"] {
        routes
            .push_str(&format!("- id: {id}\n  match:\n    path: /{id}/**\n  upstream: {id}\n  allow: [group:soar]\n"));
    }
    p.write("routes/r.yaml", &routes);
    let gw = Running::start(p).await;
    // Caller-sent credentials and tricks that try to smuggle a second one through.
    let tricks: &[(&str, &str)] = &[
        ("authorization", "Bearer caller-token"),
        ("x-key-id", "caller-key-id"),
        ("cookie", "session=caller"),
        ("connection", "x-api-key"),
        ("proxy-authorization", "Basic Y2FsbGVyOnB3"),
    ];
    let (s, _, _) = as_caller(&gw, "tenant-a-soar", "/hdr/x", tricks).await;
    assert_eq!(s, StatusCode::OK);
    let h = up.last().headers;
    assert_eq!(h.get_all("x-api-key").iter().collect::<Vec<_>>(), vec!["Token hdr-secret"], "{h:?}");
    for gone in ["authorization", "cookie", "proxy-authorization"] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream");
    }

    as_caller(&gw, "tenant-a-soar", "/basic/x", tricks).await;
    let h = up.last().headers;
    assert_eq!(h.get_all("authorization").iter().collect::<Vec<_>>(), vec!["Basic c3ZjLXVzZXI6cEBzcyB3MHJk"]); // svc-user:p@ss w0rd

    as_caller(&gw, "tenant-a-soar", "/query/x?q=1&apikey=caller-key&APIKEY=again", tricks).await;
    let seen = up.last();
    assert_eq!(seen.uri, "/query/x?q=1&apikey=q%20secret%2F%26%3D");

    as_caller(&gw, "tenant-a-soar", "/pair/x", tricks).await;
    let h = up.last().headers;
    assert_eq!(h.get_all("x-key-id").iter().collect::<Vec<_>>(), vec!["key-id-1"]);
    assert_eq!(h.get_all("x-key-secret").iter().collect::<Vec<_>>(), vec!["key-secret-1"]);
    assert!(h.get("authorization").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn each_tenant_uses_its_own_credential_and_unassigned_callers_get_none() {
    let up = Upstream::start().await;
    let p = Policies::new("");
    callers(&p);
    p.write("a.key", "tenant-a-secret");
    p.write("b.key", "tenant-b-secret");
    p.upstream(
        "edr",
        up.addr,
        "",
        "credentials:\n  - id: edr-tenant-a\n    header: authorization\n    prefix: \"Bearer \"\n    value: file:a.key\n    callers: [tenant-a-soar]\n  - id: edr-tenant-b\n    header: authorization\n    prefix: \"Bearer \"\n    value: file:b.key\n    callers: [tenant-b-soar]\n",
    );
    p.write(
        "routes/r.yaml",
        "- id: alerts\n  match:\n    path: /alerts/**\n  upstream: edr\n  allow: [group:soar]\n- id: shared\n  match:\n    path: /shared/**\n  upstream: edr\n  allow: [group:soar]\n  credential: edr-tenant-b\n",
    );
    let gw = Running::start(p).await;
    as_caller(&gw, "tenant-a-soar", "/alerts/1", &[]).await;
    assert_eq!(up.last().headers["authorization"], "Bearer tenant-a-secret");
    as_caller(&gw, "tenant-b-soar", "/alerts/1", &[]).await;
    assert_eq!(up.last().headers["authorization"], "Bearer tenant-b-secret");
    let before = up.count();
    let (s, h, b) = as_caller(&gw, "other", "/alerts/1", &[]).await;
    let v = assert_problem(s, &h, &b, 403, "no-credential");
    assert!(v["detail"].as_str().unwrap().contains("caller `other`"));
    assert_eq!(up.count(), before);
    // A route can pin one credential for everyone.
    as_caller(&gw, "tenant-a-soar", "/shared/1", &[]).await;
    assert_eq!(up.last().headers["authorization"], "Bearer tenant-b-secret");
}

#[test]
fn credential_config_errors_are_located() {
    let p = Policies::new("");
    p.upstream(
        "u",
        "127.0.0.1:1".parse().unwrap(),
        "",
        "credential:\n  header: x-a\n  query: k\n  value: env:NOPE_NOT_SET_123\n",
    );
    p.upstream(
        "v",
        "127.0.0.1:1".parse().unwrap(),
        "",
        "credential:\n  basic: { username: u, password: plain-text }\n",
    );
    p.upstream("w", "127.0.0.1:1".parse().unwrap(), "", "credential:\n  header: x-k\n  value: vault:kv/edr\n");
    p.write("routes/r.yaml", "- id: r\n  match:\n    path: /r\n  upstream: u\n  credential: missing\n");
    let errs = interlock::config::load(p.path()).unwrap_err();
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let has = |n: &str| shown.iter().any(|e| e.contains(n));
    assert!(has("u.yaml:4: credential: set exactly one of"), "{shown:#?}");
    assert!(has("v.yaml:4: credential.basic.password: inline secret"), "{shown:#?}");
    assert!(
        has("w.yaml:5: credential.value: unknown secret source `vault:` (installed sources: `env:`, `file:`)"),
        "{shown:#?}"
    );
    assert!(!shown.iter().any(|e| e.contains("plain-text")), "a secret in an error: {shown:#?}");
}
