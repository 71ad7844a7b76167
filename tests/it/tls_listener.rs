//! TLS termination and mTLS caller identity: real handshakes with generated certificates, a rustls
//! client and curl.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use interlock::certs::{DevCa, Issued, Validity};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::support::*;

const CALLERS: &str = "callers:\n  - id: soar\n    groups: [automation]\n    mtls: [spiffe://interlock.dev/soar]\n    api_keys:\n      - id: soar-k\n        hash: sha256:9b30f61c534ce90a554d75032132f5f9a29fd6577a625726ff2f7d94f0287ed5\n  - id: siem\n    mtls: [spiffe://interlock.dev/siem]\n    api_keys:\n      - id: siem-k\n        hash: HASH_SIEM\n";
const SOAR_KEY: &str = "ilk_demo_soar_key_not_secret_7fQ2xLw9";
const SIEM_KEY: &str = "ilk_siem_test_key_0123456789";

const ROUTES: &str = "- id: private\n  match:\n    path: /private/**\n  upstream: up\n  allow: [caller:soar, caller:siem]\n- id: public\n  match:\n    path: /public/**\n  upstream: up\n  anonymous: true\n";

struct Setup {
    ca: DevCa,
    gw: Running,
    up: Upstream,
}

/// A gateway with one TLS listener (`client_auth` as given) in front of a recording upstream.
async fn setup(client_auth: &str, extra_tls: &str) -> Setup {
    let ca = DevCa::new("test CA").unwrap();
    let server = ca.server(&["localhost", "127.0.0.1"], Validity::Days(30)).unwrap();
    let up = Upstream::start().await;
    let p = Policies::new("");
    p.write("certs/server.pem", &server.cert_pem);
    p.write("certs/server.key", &server.key_pem);
    p.write("certs/ca.pem", &ca.ca.cert_pem);
    let client_ca = if client_auth == "off" { String::new() } else { "      client_ca: certs/ca.pem\n".to_owned() };
    p.write(
        "gateway.yaml",
        &format!(
            "listeners:\n  - bind: 127.0.0.1:0\n    tls:\n      certificates:\n        - cert: certs/server.pem\n          key: certs/server.key\n      client_auth: {client_auth}\n{client_ca}{extra_tls}admin:\n  bind: 127.0.0.1:0\nlog:\n  level: warn\nreload:\n  debounce: 50ms\n"
        ),
    );
    let siem_hash = format!("sha256:{}", hex(&interlock::identity::apikey::digest(SIEM_KEY)));
    p.write("callers.yaml", &CALLERS.replace("HASH_SIEM", &siem_hash));
    p.upstream("up", up.addr, "", "");
    p.write("routes/r.yaml", ROUTES);
    Setup { ca, gw: Running::start(p).await, up }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn client_config(ca_pem: &str, client: Option<&Issued>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(interlock::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some(c) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(c.cert_pem.as_bytes()).map(|c| c.unwrap()).collect();
            b.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap()).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    cfg
}

/// Opens a TLS connection and an HTTP/1.1 or h2 client connection on it (by ALPN).
async fn connect(
    addr: SocketAddr,
    name: &str,
    cfg: rustls::ClientConfig,
) -> Result<(Sender, Vec<CertificateDer<'static>>), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let certs = tls.get_ref().1.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    if h2 {
        let (s, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok((Sender::H2(s), certs))
    } else {
        let (s, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("client h1 connection ended: {e:?}");
            }
        });
        Ok((Sender::H1(s), certs))
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<(StatusCode, Version, String), String> {
        let mut b = Request::get(format!("https://localhost{path}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Empty::new()).unwrap();
        let res = match self {
            Sender::H1(s) => {
                let mut req = req;
                *req.uri_mut() = path.parse().unwrap();
                req.headers_mut().insert("host", "localhost".parse().unwrap());
                // A new HTTP/1 connection is not ready until its dispatcher has run once.
                s.ready().await.map_err(|e| format!("{e:?}"))?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await.map_err(|e| format!("{e:?}"))?;
                s.send_request(req).await
            }
        }
        .map_err(|e| format!("{e:?}"))?;
        let (status, version) = (res.status(), res.version());
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, version, String::from_utf8_lossy(&body).into_owned()))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn h2_and_http1_over_tls_by_alpn() {
    let s = setup("off", "").await;
    let (mut c, _) =
        connect(s.gw.addr, "localhost", client_config(&s.ca.ca.cert_pem, None, &[b"h2", b"http/1.1"])).await.unwrap();
    let (status, version, _) = c.get("/public/x", &[]).await.unwrap();
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_2));
    assert_eq!(s.up.last().headers["x-forwarded-proto"], "https");
    let (mut c, _) =
        connect(s.gw.addr, "localhost", client_config(&s.ca.ca.cert_pem, None, &[b"http/1.1"])).await.unwrap();
    let (status, version, _) = c.get("/public/y", &[]).await.unwrap();
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_11));
    // Identity is still required on non-anonymous routes.
    let (status, _, body) = c.get("/private/y", &[]).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("unauthenticated"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_selects_the_certificate() {
    let ca = DevCa::new("sni CA").unwrap();
    let a = ca.server(&["a.test"], Validity::Days(30)).unwrap();
    let b = ca.server(&["b.test"], Validity::Days(30)).unwrap();
    let up = Upstream::start().await;
    let p = Policies::new("");
    for (n, c) in [("a", &a), ("b", &b)] {
        p.write(&format!("certs/{n}.pem"), &c.cert_pem);
        p.write(&format!("certs/{n}.key"), &c.key_pem);
    }
    p.write("gateway.yaml", "listeners:\n  - bind: 127.0.0.1:0\n    tls:\n      certificates:\n        - { cert: certs/a.pem, key: certs/a.key }\n        - { cert: certs/b.pem, key: certs/b.key }\nadmin:\n  bind: 127.0.0.1:0\n");
    p.upstream("up", up.addr, "", "");
    p.write("routes/r.yaml", ROUTES);
    let gw = Running::start(p).await;
    for (name, want) in [("a.test", &a), ("b.test", &b), ("other.test", &a)] {
        let cfg = client_config(&ca.ca.cert_pem, None, &[b"http/1.1"]);
        let cfg = if name == "other.test" { insecure(cfg) } else { cfg };
        let (_, certs) = connect(gw.addr, name, cfg).await.unwrap();
        let want_der = CertificateDer::from_pem_slice(want.cert_pem.as_bytes()).unwrap();
        assert_eq!(certs[0], want_der, "SNI {name}");
    }
}

/// Accepts any server certificate (to observe the default certificate for an unknown name).
fn insecure(mut cfg: rustls::ClientConfig) -> rustls::ClientConfig {
    #[derive(Debug)]
    struct Any;
    impl rustls::client::danger::ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            interlock::tls::provider().signature_verification_algorithms.supported_schemes()
        }
    }
    cfg.dangerous().set_certificate_verifier(Arc::new(Any));
    cfg
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_certificate_serves_new_handshakes_and_old_connections_continue() {
    let s = setup("off", "").await;
    let (mut old, old_certs) =
        connect(s.gw.addr, "localhost", client_config(&s.ca.ca.cert_pem, None, &[b"http/1.1"])).await.unwrap();
    assert_eq!(old.get("/public/1", &[]).await.unwrap().0, StatusCode::OK);
    let renewed = s.ca.server(&["localhost", "127.0.0.1"], Validity::Days(60)).unwrap();
    s.gw.policies.write("certs/server.key", &renewed.key_pem);
    s.gw.policies.write("certs/server.pem", &renewed.cert_pem);
    let want = CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, certs) =
            connect(s.gw.addr, "localhost", client_config(&s.ca.ca.cert_pem, None, &[b"http/1.1"])).await.unwrap();
        if certs[0] == want {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(old_certs[0], want);
    // The connection opened before the swap still works.
    assert_eq!(old.get("/public/2", &[]).await.unwrap().0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn required_client_certificates_identify_callers_and_bad_ones_fail_the_handshake() {
    let s = setup("required", "").await;
    let ca_pem = &s.ca.ca.cert_pem;
    let soar = s.ca.client("soar", Validity::Days(30), true).unwrap();
    let (mut c, _) = connect(s.gw.addr, "localhost", client_config(ca_pem, Some(&soar), &[b"h2"])).await.unwrap();
    let (status, _, body) = c.get("/private/x", &[]).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.up.count(), 1);

    let other_ca = DevCa::new("other CA").unwrap();
    let rejected: Vec<(&str, Option<Issued>)> = vec![
        ("no certificate", None),
        ("another CA", Some(other_ca.client("soar", Validity::Days(30), true).unwrap())),
        ("expired", Some(s.ca.client("soar", Validity::Expired, true).unwrap())),
        ("not yet valid", Some(s.ca.client("soar", Validity::NotYetValid, true).unwrap())),
        ("server-only EKU", Some(s.ca.client("soar", Validity::Days(30), false).unwrap())),
    ];
    for (what, cert) in rejected {
        // TLS 1.3 reports a refused client certificate on the first read, so send a request too.
        let outcome = match connect(s.gw.addr, "localhost", client_config(ca_pem, cert.as_ref(), &[b"http/1.1"])).await
        {
            Err(e) => Err(e),
            Ok((mut c, _)) => c.get("/private/x", &[]).await.map(|r| r.0),
        };
        assert!(outcome.is_err(), "{what}: the connection was accepted: {outcome:?}");
    }
    assert_eq!(s.up.count(), 1, "a rejected client reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_certificates_are_401_unless_the_route_is_anonymous_and_identities_must_agree() {
    let s = setup("required", "").await;
    let ca_pem = &s.ca.ca.cert_pem;
    let stranger = s.ca.client("stranger", Validity::Days(30), true).unwrap();
    let (mut c, _) =
        connect(s.gw.addr, "localhost", client_config(ca_pem, Some(&stranger), &[b"http/1.1"])).await.unwrap();
    let (status, _, body) = c.get("/private/x", &[]).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("unknown-certificate") && body.contains("spiffe://interlock.dev/stranger"), "{body}");
    assert_eq!(c.get("/public/x", &[]).await.unwrap().0, StatusCode::OK);

    let soar = s.ca.client("soar", Validity::Days(30), true).unwrap();
    let (mut c, _) = connect(s.gw.addr, "localhost", client_config(ca_pem, Some(&soar), &[b"http/1.1"])).await.unwrap();
    // mTLS wins; the same caller's API key is fine, another caller's is a conflict.
    assert_eq!(c.get("/private/x", &[("x-api-key", SOAR_KEY)]).await.unwrap().0, StatusCode::OK);
    let (status, _, body) = c.get("/private/x", &[("x-api-key", SIEM_KEY)]).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("identity-conflict"), "{body}");
    // The API key header never reaches the upstream.
    assert!(s.up.last().headers.get("x-api-key").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_client_auth_lets_certificate_less_callers_use_api_keys() {
    let s = setup("optional", "").await;
    let (mut c, _) =
        connect(s.gw.addr, "localhost", client_config(&s.ca.ca.cert_pem, None, &[b"http/1.1"])).await.unwrap();
    assert_eq!(c.get("/private/x", &[("x-api-key", SIEM_KEY)]).await.unwrap().0, StatusCode::OK);
    let (status, _, body) = c.get("/private/x", &[("x-api-key", "ilk_wrong")]).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("invalid-api-key"), "{body}");
    assert_eq!(c.get("/public/x", &[]).await.unwrap().0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_client_certificates_fail_the_handshake() {
    let ca = DevCa::new("crl CA").unwrap();
    let revoked = ca.client("soar", Validity::Days(30), true).unwrap();
    let good = ca.client("siem", Validity::Days(30), true).unwrap();
    let server = ca.server(&["localhost"], Validity::Days(30)).unwrap();
    let up = Upstream::start().await;
    let p = Policies::new("");
    p.write("certs/server.pem", &server.cert_pem);
    p.write("certs/server.key", &server.key_pem);
    p.write("certs/ca.pem", &ca.ca.cert_pem);
    p.write("certs/ca.crl", &ca.crl(&[&revoked.cert_pem]).unwrap());
    p.write("gateway.yaml", "listeners:\n  - bind: 127.0.0.1:0\n    tls:\n      certificates: [{ cert: certs/server.pem, key: certs/server.key }]\n      client_auth: required\n      client_ca: certs/ca.pem\n      crl: [certs/ca.crl]\nadmin:\n  bind: 127.0.0.1:0\n");
    p.upstream("up", up.addr, "", "");
    p.write("routes/r.yaml", ROUTES);
    let gw = Running::start(p).await;
    let (mut c, _) =
        connect(gw.addr, "localhost", client_config(&ca.ca.cert_pem, Some(&good), &[b"http/1.1"])).await.unwrap();
    assert_eq!(c.get("/public/x", &[]).await.unwrap().0, StatusCode::OK);
    let outcome =
        match connect(gw.addr, "localhost", client_config(&ca.ca.cert_pem, Some(&revoked), &[b"http/1.1"])).await {
            Err(e) => Err(e),
            Ok((mut c, _)) => c.get("/public/x", &[]).await.map(|r| r.0),
        };
    assert!(outcome.is_err(), "a revoked certificate was accepted");
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_with_a_client_certificate() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        skipped("curl_with_a_client_certificate", "`curl` is not installed");
        return;
    }
    let s = setup("required", "").await;
    let soar = s.ca.client("soar", Validity::Days(30), true).unwrap();
    let dir = s.gw.policies.path().to_path_buf();
    std::fs::write(dir.join("soar.pem"), &soar.cert_pem).unwrap();
    std::fs::write(dir.join("soar.key"), &soar.key_pem).unwrap();
    let url = format!("https://localhost:{}/private/via-curl", s.gw.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", s.gw.addr.port());
    let run = move |with_cert: bool| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            "--http2",
            "--resolve",
            &resolve,
            "--cacert",
        ])
        .arg(dir.join("certs/ca.pem"));
        if with_cert {
            cmd.arg("--cert").arg(dir.join("soar.pem")).arg("--key").arg(dir.join("soar.key"));
        }
        cmd.arg(&url).output().unwrap()
    };
    let out = tokio::task::spawn_blocking(move || (run(true), run(false))).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.0.stdout), "200 2", "{:?}", out.0);
    assert!(!out.1.status.success(), "curl without a certificate succeeded");
    assert_eq!(s.up.count(), 1);
    assert_eq!(s.up.last().uri, "/private/via-curl");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_errors_name_tls_files() {
    let ca = DevCa::new("cfg CA").unwrap();
    let a = ca.server(&["a.test"], Validity::Days(30)).unwrap();
    let b = ca.server(&["b.test"], Validity::Days(30)).unwrap();
    let old = ca.server(&["old.test"], Validity::Expired).unwrap();
    let p = Policies::new("");
    p.write("certs/a.pem", &a.cert_pem);
    p.write("certs/b.key", &b.key_pem);
    p.write("certs/old.pem", &old.cert_pem);
    p.write("certs/old.key", &old.key_pem);
    p.write("gateway.yaml", "listeners:\n  - bind: 127.0.0.1:0\n    tls:\n      certificates:\n        - cert: certs/a.pem\n          key: certs/b.key\n        - cert: certs/missing.pem\n          key: certs/b.key\n      client_auth: required\n");
    let errs = interlock::config::load(p.path()).unwrap_err();
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let has = |n: &str| shown.iter().any(|e| e.contains(n));
    assert!(has("gateway.yaml:6: listeners[0].tls.certificates[0].key") && has("does not match"), "{shown:#?}");
    assert!(has("gateway.yaml:7: listeners[0].tls.certificates[1].cert: cannot read"), "{shown:#?}");
    assert!(has("gateway.yaml:9: listeners[0].tls.client_ca: `client_auth` needs `client_ca`"), "{shown:#?}");
    // An expired certificate loads, with a loud warning.
    p.write("gateway.yaml", "listeners:\n  - bind: 127.0.0.1:0\n    tls:\n      certificates:\n        - cert: certs/old.pem\n          key: certs/old.key\n");
    let c = interlock::config::load(p.path()).unwrap();
    assert!(c.warnings.iter().any(|w| w.to_string().contains("EXPIRED")), "{:?}", c.warnings);
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_outside_the_policies_directory_are_watched_too() {
    let ca = DevCa::new("ext CA").unwrap();
    let first = ca.server(&["localhost"], Validity::Days(30)).unwrap();
    let ext = tempfile::tempdir().unwrap();
    std::fs::write(ext.path().join("server.pem"), &first.cert_pem).unwrap();
    std::fs::write(ext.path().join("server.key"), &first.key_pem).unwrap();
    let up = Upstream::start().await;
    let p = Policies::new("");
    let (cert, key) = (ext.path().join("server.pem"), ext.path().join("server.key"));
    p.write(
        "gateway.yaml",
        &format!(
            "listeners:\n  - bind: 127.0.0.1:0\n    tls:\n      certificates:\n        - cert: {}\n          key: {}\nadmin:\n  bind: 127.0.0.1:0\nreload:\n  debounce: 50ms\n",
            cert.display(),
            key.display()
        ),
    );
    p.upstream("up", up.addr, "", "");
    p.write("routes/r.yaml", ROUTES);
    let gw = Running::start(p).await;
    let renewed = ca.server(&["localhost"], Validity::Days(60)).unwrap();
    std::fs::write(&key, &renewed.key_pem).unwrap();
    std::fs::write(&cert, &renewed.cert_pem).unwrap();
    let want = CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, certs) =
            connect(gw.addr, "localhost", client_config(&ca.ca.cert_pem, None, &[b"http/1.1"])).await.unwrap();
        if certs[0] == want {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the replaced external certificate was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_finishes_the_handshake_is_disconnected() {
    let s = setup("off", "      handshake_timeout: 300ms\n").await;
    let mut tcp = tokio::net::TcpStream::connect(s.gw.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 16];
    use tokio::io::AsyncReadExt as _;
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.expect("kept open").unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
}
