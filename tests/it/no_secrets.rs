//! Everything the gateway emits in a run that uses every kind of secret — logs at trace level,
//! stdout, the audit trail (with OCSF), the access log, exported spans, metrics and every admin
//! view — is searched for every secret value. None may appear.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::*;

const SECRETS: [&str; 9] = [
    "SECRET-HEADER-7x9",
    "SECRET-PASS-8y0",
    "SECRET-QUERY-1z2",
    "SECRET-CLIENT-3a4",
    "SECRET-TOKEN-5c6",
    "ilk_SECRETAPIKEY0000000000000000000",
    "ilk_SECRETWRONGKEY111111111111111111",
    "SECRET-ADMIN-5b6",
    "SECRET-CALLER-BEARER-9d8",
];

/// A server answering every request with `body`, recording the raw request bodies it got.
async fn responder(body: &'static str, got: Arc<Mutex<Vec<u8>>>) -> SocketAddr {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = tcp.accept().await else { continue };
            let got = got.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let got = got.clone();
                    async move {
                        let b = req.into_body().collect().await.unwrap().to_bytes();
                        got.lock().unwrap().extend_from_slice(&b);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(body.as_bytes()))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_is_emitted_anywhere() {
    let up = Upstream::start().await;
    let idp =
        responder(r#"{"access_token":"SECRET-TOKEN-5c6","token_type":"Bearer","expires_in":3600}"#, Arc::default())
            .await;
    let spans: Arc<Mutex<Vec<u8>>> = Arc::default();
    let collector = responder("", spans.clone()).await;
    let out = tempfile::tempdir().unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let p = Policies::new("");
    let o = out.path().display();
    p.write(
        "gateway.yaml",
        &format!(
            "listeners:\n  - bind: {listen}\nadmin:\n  bind: {admin}\n  token: file:s/admin\nlog:\n  format: json\n  level: trace\ntelemetry:\n  access_log:\n    enabled: true\n    output: {o}/access.log\n  audit:\n    file: {o}/audit.log\n    ocsf: true\n  tracing:\n    endpoint: http://{collector}/v1/traces\n"
        ),
    );
    for (f, v) in
        [("admin", SECRETS[7]), ("hdr", SECRETS[0]), ("pass", SECRETS[1]), ("q", SECRETS[2]), ("cs", SECRETS[3])]
    {
        p.write(&format!("s/{f}"), v);
    }
    let hash: String = interlock::identity::apikey::digest(SECRETS[5]).iter().map(|b| format!("{b:02x}")).collect();
    p.write(
        "callers.yaml",
        &format!("callers:\n  - id: soar\n    api_keys:\n      - id: soar-k\n        hash: sha256:{hash}\n"),
    );
    p.upstream("hdr", up.addr, "", "credential: { header: x-key, value: file:s/hdr }\n");
    p.upstream("basic", up.addr, "", "credential: { basic: { username: u, password: file:s/pass } }\n");
    p.upstream("query", up.addr, "", "credential: { query: key, value: file:s/q }\n");
    p.upstream(
        "oauth",
        up.addr,
        "",
        &format!(
            "credential:\n  oauth2: {{ token_url: http://{idp}/token, client_id: cid, client_secret: file:s/cs }}\n"
        ),
    );
    let mut routes = String::new();
    for id in ["hdr", "basic", "query", "oauth"] {
        routes
            .push_str(&format!("- id: {id}\n  match:\n    path: /{id}/**\n  upstream: {id}\n  allow: [caller:soar]\n"));
    }
    p.write("routes/r.yaml", &routes);
    let child = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(p.path())
        .env("INTERLOCK_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = h1_client();
    let send = |path: &str, key: &str| {
        let req = Request::get(format!("http://{listen}{path}"))
            .header("x-api-key", key)
            .header("authorization", format!("Bearer {}", SECRETS[8]))
            .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .body(empty())
            .unwrap();
        let client = client.clone();
        async move { call(&client, req).await }
    };
    for path in ["/hdr/a", "/basic/a", "/query/a?key=caller-copy", "/oauth/a", "/nope"] {
        let (s, _, b) = send(path, SECRETS[5]).await;
        assert!(s.as_u16() == 200 || s.as_u16() == 404, "{path}: {s} {b}");
    }
    let (s, _, _) = send("/hdr/a", SECRETS[6]).await;
    assert_eq!(s.as_u16(), 401);
    // The vendor did get the secrets (they are real), and the gateway's outputs must not.
    assert_eq!(up.seen.lock().unwrap().iter().filter(|r| r.uri.contains("key=SECRET-QUERY-1z2")).count(), 1);
    let mut emitted = String::new();
    for path in ["/config", "/routes", "/upstreams", "/config/status", "/metrics"] {
        let req = Request::get(format!("http://{admin}{path}"))
            .header("authorization", format!("Bearer {}", SECRETS[7]))
            .body(empty())
            .unwrap();
        let (s, _, b) = call(&client, req).await;
        assert_eq!(s.as_u16(), 200, "{path}");
        emitted.push_str(&b);
    }
    crate::lifecycle_signal(&child, "-TERM");
    let status = tokio::task::spawn_blocking(move || {
        let s = crate::lifecycle_wait(&mut child, Duration::from_secs(15));
        let mut out = String::new();
        let mut err = String::new();
        use std::io::Read as _;
        child.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (s, out, err)
    })
    .await
    .unwrap();
    let (code, stdout, stderr) = status;
    assert!(code.success());
    assert!(
        stderr.contains("\"level\":\"DEBUG\"") || stderr.contains("\"level\":\"TRACE\"") || stderr.len() > 100,
        "expected verbose logs"
    );
    emitted.push_str(&stdout);
    emitted.push_str(&stderr);
    for f in ["access.log", "audit.log"] {
        let text = std::fs::read_to_string(out.path().join(f)).unwrap();
        assert!(!text.is_empty(), "{f} is empty");
        emitted.push_str(&text);
    }
    emitted.push_str(&String::from_utf8_lossy(&spans.lock().unwrap()));
    assert!(emitted.contains("soar") && emitted.contains("oauth"), "the outputs look empty");
    for secret in SECRETS {
        assert!(!emitted.contains(secret), "`{secret}` was emitted");
    }
}
