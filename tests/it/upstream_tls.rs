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
    assert_problem(s, &h, &b, 502, "upstream-unavailable");
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
