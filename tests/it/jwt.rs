//! JWT callers: a real JWKS endpoint, real signatures, and the attack set, each refused with the
//! upstream seeing nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::*;

const ISS: &str = "https://idp.test";

/// A JWKS endpoint whose document and status the test controls, counting requests.
#[derive(Clone)]
struct Idp {
    addr: SocketAddr,
    state: Arc<Mutex<(String, u16, usize)>>,
}

impl Idp {
    async fn start(jwks: &JwkSet) -> Idp {
        let state = Arc::new(Mutex::new((serde_json::to_string(jwks).unwrap(), 200u16, 0usize)));
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = tcp.accept().await else { continue };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let st = st.clone();
                        async move {
                            let mut g = st.lock().unwrap();
                            g.2 += 1;
                            let mut r = Response::new(Full::new(Bytes::from(g.0.clone())));
                            *r.status_mut() = StatusCode::from_u16(g.1).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Idp { addr, state }
    }
    fn hits(&self) -> usize {
        self.state.lock().unwrap().2
    }
    fn publish(&self, jwks: &JwkSet) {
        self.state.lock().unwrap().0 = serde_json::to_string(jwks).unwrap();
    }
    fn fail(&self) {
        self.state.lock().unwrap().1 = 500;
    }
}

struct Keys {
    rsa: EncodingKey,
    ec: EncodingKey,
    attacker: EncodingKey,
}

fn keys() -> Keys {
    let rsa_pem = include_bytes!("fixtures/jwt-test-rsa.pem");
    let ec = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let attacker = rcgen::KeyPair::generate().unwrap().serialize_pem();
    Keys {
        rsa: EncodingKey::from_rsa_pem(rsa_pem).unwrap(),
        ec: EncodingKey::from_ec_pem(ec.as_bytes()).unwrap(),
        attacker: EncodingKey::from_ec_pem(attacker.as_bytes()).unwrap(),
    }
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut j = Jwk::from_encoding_key(key, alg).unwrap();
    j.common.key_id = Some(kid.to_owned());
    j
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn claims() -> serde_json::Value {
    json!({"iss": ISS, "aud": "interlock", "sub": "soar", "exp": now() + 300, "groups": ["readers"]})
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &serde_json::Value, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn unsigned(header: serde_json::Value, claims: &serde_json::Value) -> String {
    let b = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", b(&header), b(claims))
}

async fn gateway(idp: &Idp, extra: &str) -> (Running, Upstream) {
    let up = Upstream::start().await;
    let p = Policies::new("");
    p.write(
        "callers.yaml",
        &format!(
            "jwt:\n  - id: corp\n    issuer: {ISS}\n    audiences: [interlock]\n    jwks_url: http://{}/jwks\n    algorithms: [RS256, RS512, ES256]\n    refresh: 1h\n    refetch_interval: 1h\n{extra}callers:\n  - id: soar\n    groups: [automation]\n",
            idp.addr
        ),
    );
    p.upstream("up", up.addr, "", "");
    p.write(
        "routes/r.yaml",
        "- id: private\n  match:\n    path: /private/**\n  upstream: up\n  allow: [caller:soar]\n",
    );
    (Running::start(p).await, up)
}

async fn call_with(gw: &Running, token: &str) -> (StatusCode, http::HeaderMap, String) {
    let req =
        Request::get(gw.url("/private/x")).header("authorization", format!("Bearer {token}")).body(empty()).unwrap();
    call(&h1_client(), req).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_token_identifies_the_caller_and_is_not_forwarded() {
    let k = keys();
    let idp = Idp::start(&JwkSet { keys: vec![jwk(&k.rsa, Algorithm::RS256, "rsa-1")] }).await;
    let (gw, up) = gateway(&idp, "").await;
    let (s, _, b) = call_with(&gw, &sign(Algorithm::RS256, Some("rsa-1"), &claims(), &k.rsa)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(up.last().headers.get("authorization").is_none(), "the caller's token reached the upstream");
    // No token at all: 401 with a Bearer challenge.
    let (s, h, b) = get(&gw.url("/private/x")).await;
    assert_problem(s, &h, &b, 401, "unauthenticated");
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Bearer realm=\"interlock\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_attack_set_is_refused_and_nothing_reaches_the_upstream() {
    let k = keys();
    let rsa_jwk = jwk(&k.rsa, Algorithm::RS256, "rsa-1");
    let idp = Idp::start(&JwkSet { keys: vec![rsa_jwk.clone()] }).await;
    let elsewhere = Idp::start(&JwkSet { keys: vec![jwk(&k.attacker, Algorithm::ES256, "attacker")] }).await;
    let (gw, up) = gateway(&idp, "").await;
    // Warm up: the JWKS is fetched and a good token works.
    assert_eq!(call_with(&gw, &sign(Algorithm::RS256, Some("rsa-1"), &claims(), &k.rsa)).await.0, StatusCode::OK);
    let served = up.count();

    let c = claims();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims();
        f(&mut c);
        c
    };
    let rsa_n = match &rsa_jwk.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::RSA(p) => p.n.clone(),
        _ => unreachable!(),
    };
    let mut foreign_header = Header::new(Algorithm::ES256);
    foreign_header.kid = Some("attacker".into());
    foreign_header.jku = Some(format!("http://{}/jwks", elsewhere.addr));
    foreign_header.x5u = Some(format!("http://{}/cert", elsewhere.addr));
    foreign_header.jwk = Some(jwk(&k.attacker, Algorithm::ES256, "attacker"));
    let mut big = claims();
    big["pad"] = json!("x".repeat(9000));
    let attacks: Vec<(&str, String)> = vec![
        ("alg none", unsigned(json!({"alg": "none", "kid": "rsa-1"}), &c)),
        ("alg None", unsigned(json!({"alg": "None", "kid": "rsa-1"}), &c)),
        ("alg NONE", unsigned(json!({"alg": "NONE", "kid": "rsa-1"}), &c)),
        (
            "HS256 keyed with the RSA public key",
            sign(Algorithm::HS256, Some("rsa-1"), &c, &EncodingKey::from_secret(rsa_n.as_bytes()).unwrap()),
        ),
        ("RS512 on a key pinned to RS256", sign(Algorithm::RS512, Some("rsa-1"), &c, &k.rsa)),
        ("unknown kid", sign(Algorithm::RS256, Some("nope"), &c, &k.rsa)),
        ("unknown kid again", sign(Algorithm::RS256, Some("nope-2"), &c, &k.rsa)),
        ("kid with path characters", sign(Algorithm::RS256, Some("../../../etc/passwd"), &c, &k.rsa)),
        ("jku/x5u/jwk pointing elsewhere", jsonwebtoken::encode(&foreign_header, &c, &k.attacker).unwrap()),
        ("expired", sign(Algorithm::RS256, Some("rsa-1"), &with(&|c| c["exp"] = json!(now() - 120)), &k.rsa)),
        (
            "missing exp",
            sign(Algorithm::RS256, Some("rsa-1"), &with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))), &k.rsa),
        ),
        ("future nbf", sign(Algorithm::RS256, Some("rsa-1"), &with(&|c| c["nbf"] = json!(now() + 120)), &k.rsa)),
        ("wrong aud", sign(Algorithm::RS256, Some("rsa-1"), &with(&|c| c["aud"] = json!("someone-else")), &k.rsa)),
        (
            "missing aud",
            sign(Algorithm::RS256, Some("rsa-1"), &with(&|c| drop(c.as_object_mut().unwrap().remove("aud"))), &k.rsa),
        ),
        ("wrong iss", sign(Algorithm::RS256, Some("rsa-1"), &with(&|c| c["iss"] = json!("https://evil.test")), &k.rsa)),
        ("over 8 KiB", sign(Algorithm::RS256, Some("rsa-1"), &big, &k.rsa)),
        ("garbage", "not-a-jwt".to_owned()),
        ("garbage parts", "aaa.bbb.ccc".to_owned()),
        ("tampered payload", {
            let t = sign(Algorithm::RS256, Some("rsa-1"), &c, &k.rsa);
            let parts: Vec<&str> = t.split('.').collect();
            let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(with(&|c| c["sub"] = json!("admin")).to_string());
            format!("{}.{evil}.{}", parts[0], parts[2])
        }),
    ];
    let hits_before = idp.hits();
    for (what, token) in &attacks {
        let (s, h, b) = call_with(&gw, token).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {b}");
        let v = assert_problem(s, &h, &b, 401, "invalid-token");
        assert!(h["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""), "{what}");
        assert!(v["detail"].as_str().unwrap().len() > 20, "{what}");
    }
    assert_eq!(up.count(), served, "an attack reached the upstream");
    // Two unknown kids cost at most one extra JWKS fetch (refetch_interval 1h).
    assert!(idp.hits() <= hits_before + 1, "unknown kids caused {} fetches", idp.hits() - hits_before);
    assert_eq!(elsewhere.hits(), 0, "a key URL from the token header was fetched");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_is_picked_up_on_first_use_of_its_kid() {
    let k = keys();
    let idp = Idp::start(&JwkSet { keys: vec![jwk(&k.rsa, Algorithm::RS256, "rsa-1")] }).await;
    let (gw, _up) = gateway(&idp, "").await;
    assert_eq!(call_with(&gw, &sign(Algorithm::RS256, Some("rsa-1"), &claims(), &k.rsa)).await.0, StatusCode::OK);
    idp.publish(&JwkSet { keys: vec![jwk(&k.rsa, Algorithm::RS256, "rsa-1"), jwk(&k.ec, Algorithm::ES256, "ec-2")] });
    let (s, _, b) = call_with(&gw, &sign(Algorithm::ES256, Some("ec-2"), &claims(), &k.ec)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn known_keys_outlive_an_idp_outage_until_max_stale() {
    let k = keys();
    let idp = Idp::start(&JwkSet { keys: vec![jwk(&k.rsa, Algorithm::RS256, "rsa-1")] }).await;
    let (gw, up) = gateway(&idp, "    max_stale: 1s\n").await;
    let token = sign(Algorithm::RS256, Some("rsa-1"), &claims(), &k.rsa);
    assert_eq!(call_with(&gw, &token).await.0, StatusCode::OK);
    idp.fail();
    assert_eq!(call_with(&gw, &token).await.0, StatusCode::OK, "known keys must keep working during the outage");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (s, h, b) = call_with(&gw, &token).await;
    assert_problem(s, &h, &b, 503, "identity-provider-unavailable");
    assert_eq!(up.count(), 2);
    let (_, _, m) = get(&format!("http://{}/metrics", gw.admin)).await;
    assert!(m.contains("interlock_jwks_fetches_total{issuer=\"corp\",result=\"ok\"} 1"), "{m}");
    assert!(m.contains("interlock_jwks_fetches_total{issuer=\"corp\",result=\"failed\"}"), "{m}");
}

#[test]
fn api_keys_never_reach_logs_or_status() {
    let p = Policies::new("");
    let up_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    p.write("gateway.yaml", &format!("listeners:\n  - bind: {listen}\nadmin:\n  bind: {admin}\n"));
    let good = "ilk_thisIsTheGoodKeyDoNotLog0000000000000000";
    let bad = "ilk_thisIsTheWrongKeyDoNotLog111111111111111";
    let hash = format!(
        "sha256:{}",
        interlock::identity::apikey::digest(good).iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    p.write(
        "callers.yaml",
        &format!("callers:\n  - id: soar\n    api_keys:\n      - id: soar-k\n        hash: {hash}\n"),
    );
    p.upstream("up", up_addr, "", "");
    p.write("routes/r.yaml", "- id: r\n  match:\n    path: /**\n  upstream: up\n  allow: [caller:soar]\n");
    let child = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(p.path())
        .env("INTERLOCK_LOG", "trace")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (key, want) in [(good, 502), (bad, 401)] {
            let req = Request::get(format!("http://{listen}/x")).header("x-api-key", key).body(empty()).unwrap();
            let (s, _, body) = call(&h1_client(), req).await;
            assert_eq!(s.as_u16(), want, "{body}");
            assert!(!body.contains(key));
        }
        let (_, _, status) = get(&format!("http://{admin}/config/status")).await;
        assert!(!status.contains(good) && !status.contains(&hash[7..20]), "{status}");
    });
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("request"), "expected some logs: {logs}");
    assert!(!logs.contains(good) && !logs.contains(bad), "an API key was logged");
}
