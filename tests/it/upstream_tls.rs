//! Upstream transport: https with a configured CA (real rustls handshakes with generated
//! certificates), ALPN h2, HTTP/1.1 only, h2c prior knowledge, and a CA that does not match.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

use crate::support::*;

/// A TLS upstream offering ALPN h2 and http/1.1; records the HTTP version of each request.
async fn tls_upstream() -> (SocketAddr, String, Arc<Mutex<Vec<Version>>>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let versions: Arc<Mutex<Vec<Version>>> = Arc::default();
    let v = versions.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = tcp.accept().await else { continue };
            let (acceptor, v) = (acceptor.clone(), v.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else { return };
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    v.lock().unwrap().push(req.version());
                    async move { Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("tls ok")))) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, ck.cert.pem(), versions)
}

async fn gateway_to(endpoint: &str, extra: &str, ca_pem: Option<&str>) -> Running {
    let p = Policies::new("");
    if let Some(pem) = ca_pem {
        p.write("certs/upstream-ca.pem", pem);
    }
    p.write("upstreams/v.yaml", &format!("id: v\nendpoints: [\"{endpoint}\"]\n{extra}"));
    p.write("routes/r.yaml", "- id: all\n  match:\n    path: /**\n  upstream: v\n  anonymous: true\n");
    Running::start(p).await
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstream_with_configured_ca_negotiates_h2_by_alpn() {
    let (addr, ca, versions) = tls_upstream().await;
    let endpoint = format!("https://localhost:{}", addr.port());
    let gw = gateway_to(&endpoint, "tls:\n  ca: certs/upstream-ca.pem\n  system_roots: false\n", Some(&ca)).await;
    let (s, _, b) = get(&gw.url("/x")).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, "tls ok"));
    assert_eq!(versions.lock().unwrap().as_slice(), &[Version::HTTP_2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstream_can_be_pinned_to_http1() {
    let (addr, ca, versions) = tls_upstream().await;
    let endpoint = format!("https://localhost:{}", addr.port());
    let gw = gateway_to(&endpoint, "protocol: http1\ntls:\n  ca: certs/upstream-ca.pem\n", Some(&ca)).await;
    let (s, _, _) = get(&gw.url("/x")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(versions.lock().unwrap().as_slice(), &[Version::HTTP_11]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_upstream_certificate_is_a_502_and_nothing_is_sent() {
    let (addr, _ca, versions) = tls_upstream().await;
    let other_ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap().cert.pem();
    let endpoint = format!("https://localhost:{}", addr.port());
    let gw = gateway_to(&endpoint, "tls:\n  ca: certs/upstream-ca.pem\n  system_roots: false\n", Some(&other_ca)).await;
    let (s, h, b) = get(&gw.url("/x")).await;
    assert_problem(s, &h, &b, 502, "upstream-certificate-untrusted");
    assert!(versions.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_upstream_can_speak_h2c_prior_knowledge() {
    let up = Upstream::start().await;
    let gw = gateway_to(&format!("http://{}", up.addr), "protocol: http2\n", None).await;
    let (s, _, _) = get(&gw.url("/x")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(up.last().version, Version::HTTP_2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_ca_file_is_a_config_error_naming_file_and_line() {
    let p = Policies::new("");
    p.write("upstreams/v.yaml", "id: v\nendpoints: [\"https://localhost:1\"]\ntls:\n  ca: certs/nope.pem\n");
    let errs = interlock::config::load(p.path()).unwrap_err();
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(shown.iter().any(|e| e.contains("v.yaml:4: tls.ca: cannot read")), "{shown:#?}");
}

/// A TLS upstream with a DevCa certificate for `names`, optionally requiring client certificates
/// from the same CA.
async fn pki_upstream(
    ca: &interlock::certs::DevCa,
    names: &[&str],
    require_client: bool,
) -> (SocketAddr, Arc<Mutex<Vec<Version>>>) {
    use rustls_pki_types::pem::PemObject;
    let server = ca.server(names, interlock::certs::Validity::Days(30)).unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server.cert_pem.as_bytes()).map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
    let b = rustls::ServerConfig::builder_with_provider(interlock::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = if require_client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.ca.cert_pem.as_bytes()).unwrap()).unwrap();
        let v =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), interlock::tls::provider())
                .build()
                .unwrap();
        b.with_client_cert_verifier(v)
    } else {
        b.with_no_client_auth()
    };
    let mut cfg = b.with_single_cert(chain, key).unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let versions: Arc<Mutex<Vec<Version>>> = Arc::default();
    let v = versions.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = tcp.accept().await else { continue };
            let (acceptor, v) = (acceptor.clone(), v.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else { return };
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    v.lock().unwrap().push(req.version());
                    async move { Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("tls ok")))) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, versions)
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_mtls_presents_the_configured_client_certificate() {
    let ca = interlock::certs::DevCa::new("vendor CA").unwrap();
    let (addr, seen) = pki_upstream(&ca, &["localhost"], true).await;
    let client = ca.client("interlock", interlock::certs::Validity::Days(30), true).unwrap();
    let endpoint = format!("https://localhost:{}", addr.port());
    let p = Policies::new("");
    p.write("certs/ca.pem", &ca.ca.cert_pem);
    p.write("certs/client.pem", &client.cert_pem);
    p.write("certs/client.key", &client.key_pem);
    p.write("upstreams/with.yaml", &format!("id: with\nendpoints: [\"{endpoint}\"]\ntls:\n  ca: certs/ca.pem\n  client_cert: certs/client.pem\n  client_key: certs/client.key\n"));
    p.write("upstreams/without.yaml", &format!("id: without\nendpoints: [\"{endpoint}\"]\ntls:\n  ca: certs/ca.pem\n"));
    p.write("routes/r.yaml", "- id: with\n  match:\n    path: /with/**\n  upstream: with\n  anonymous: true\n- id: without\n  match:\n    path: /without/**\n  upstream: without\n  anonymous: true\n");
    let gw = Running::start(p).await;
    let (s, _, b) = get(&gw.url("/with/x")).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, "tls ok"));
    // Without a client certificate the upstream refuses the handshake: a 502, never a 200.
    let (s, h, b) = get(&gw.url("/without/x")).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{b}");
    assert_eq!(h["content-type"], "application/problem+json");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn pins_and_sni_override() {
    let ca = interlock::certs::DevCa::new("vendor CA").unwrap();
    let (addr, seen) = pki_upstream(&ca, &["api.vendor.test"], false).await;
    let leaf_pin = {
        // The pin of the certificate the upstream presents: read it from a handshake.
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        roots.add(CertificateDer::from_pem_slice(ca.ca.cert_pem.as_bytes()).unwrap()).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(interlock::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(rustls_pki_types::ServerName::try_from("api.vendor.test").unwrap(), tcp)
            .await
            .unwrap();
        interlock::tls::spki_pin(&tls.get_ref().1.peer_certificates().unwrap()[0]).unwrap()
    };
    let endpoint = format!("https://127.0.0.1:{}", addr.port());
    let wrong_pin = "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let p = Policies::new("");
    p.write("certs/ca.pem", &ca.ca.cert_pem);
    let tls = |extra: &str| format!("tls:\n  ca: certs/ca.pem\n  system_roots: false\n{extra}");
    p.write(
        "upstreams/sni.yaml",
        &format!("id: sni\nendpoints: [\"{endpoint}\"]\n{}", tls("  server_name: api.vendor.test\n")),
    );
    p.write("upstreams/nosni.yaml", &format!("id: nosni\nendpoints: [\"{endpoint}\"]\n{}", tls("")));
    p.write(
        "upstreams/pinned.yaml",
        &format!(
            "id: pinned\nendpoints: [\"{endpoint}\"]\n{}",
            tls(&format!("  server_name: api.vendor.test\n  pins: [\"{leaf_pin}\"]\n"))
        ),
    );
    p.write(
        "upstreams/mispinned.yaml",
        &format!(
            "id: mispinned\nendpoints: [\"{endpoint}\"]\n{}",
            tls(&format!("  server_name: api.vendor.test\n  pins: [\"{wrong_pin}\"]\n"))
        ),
    );
    let mut routes = String::new();
    for id in ["sni", "nosni", "pinned", "mispinned"] {
        routes.push_str(&format!("- id: {id}\n  match:\n    path: /{id}/**\n  upstream: {id}\n  anonymous: true\n"));
    }
    p.write("routes/r.yaml", &routes);
    let gw = Running::start(p).await;
    assert_eq!(get(&gw.url("/sni/x")).await.0, StatusCode::OK);
    assert_eq!(get(&gw.url("/pinned/x")).await.0, StatusCode::OK);
    let (s, h, b) = get(&gw.url("/nosni/x")).await;
    assert_problem(s, &h, &b, 502, "upstream-certificate-untrusted");
    let (s, h, b) = get(&gw.url("/mispinned/x")).await;
    let v = assert_problem(s, &h, &b, 502, "upstream-pin-mismatch");
    assert!(v["detail"].as_str().unwrap().contains("pinned"), "{v}");
    assert_eq!(seen.lock().unwrap().len(), 2, "only the trusted, correctly pinned calls reached the upstream");
}
