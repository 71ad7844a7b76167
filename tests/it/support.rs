//! Test support: a recording upstream, a policies directory builder, a running gateway and clients.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use interlock::app::Gateway;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub version: Version,
    pub headers: HeaderMap,
}

/// An in-process upstream that records every request head it receives.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn query_param(uri: &http::Uri, key: &str) -> Option<u64> {
    uri.query()?.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

async fn upstream_handle(
    seen: Arc<Mutex<Vec<Seen>>>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    seen.lock().unwrap().push(Seen {
        method: req.method().clone(),
        uri: req.uri().to_string(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    let path = req.uri().path().to_owned();
    if let Some(ms) = query_param(req.uri(), "sleep_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path.ends_with("/reset") {
        return Err(std::io::Error::other("reset requested"));
    }
    if path.ends_with("/echo") {
        // Stream the request body straight back.
        let body = req.into_body().boxed();
        return Ok(Response::new(body));
    }
    if path.ends_with("/count") {
        // Read the whole body, answer with its length.
        let mut n = 0u64;
        let mut body = req.into_body();
        while let Some(f) = body.frame().await {
            match f {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        return Ok(Response::new(full(n.to_string())));
    }
    if path.ends_with("/bytes") {
        let total = query_param(req.uri(), "n").unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_util::stream::unfold(total, move |left| {
            let chunk = chunk.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let n = left.min(chunk.len() as u64);
                Some((Ok::<_, hyper::Error>(Frame::data(chunk.slice(..n as usize))), left - n))
            }
        });
        return Ok(Response::new(StreamBody::new(stream).boxed()));
    }
    if path.ends_with("/upgrade") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut res = Response::new(Empty::new().map_err(|never| match never {}).boxed());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        res.headers_mut().insert("connection", "upgrade".parse().unwrap());
        res.headers_mut().insert("upgrade", "echo".parse().unwrap());
        return Ok(res);
    }
    if let Some(code) =
        path.rsplit('/').next().and_then(|s| s.strip_prefix("status-")).and_then(|c| c.parse::<u16>().ok())
    {
        let mut res = Response::new(full(format!("status {code}")));
        *res.status_mut() = StatusCode::from_u16(code).unwrap();
        return Ok(res);
    }
    let mut res = Response::new(full(format!("{{\"path\":{:?}}}", req.uri().to_string())));
    res.headers_mut().insert("content-type", "application/json".parse().unwrap());
    // Hop-by-hop headers an upstream might send back; the gateway must not pass them on.
    res.headers_mut().insert("connection", "x-upstream-hop".parse().unwrap());
    res.headers_mut().insert("x-upstream-hop", "1".parse().unwrap());
    res.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
    Ok(res)
}

impl Upstream {
    pub async fn start() -> Upstream {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else { continue };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| upstream_handle(s.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, seen }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("the upstream saw no request")
    }
}

/// A policies directory in a temp dir.
pub struct Policies {
    pub dir: tempfile::TempDir,
}

impl Policies {
    /// gateway.yaml with one listener on an ephemeral port and an ephemeral admin port, plus
    /// `extra` appended to gateway.yaml.
    pub fn new(extra_gateway: &str) -> Policies {
        let dir = tempfile::tempdir().unwrap();
        let p = Policies { dir };
        p.write(
            "gateway.yaml",
            &format!("listeners:\n  - name: main\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\nlog:\n  level: warn\n{extra_gateway}"),
        );
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// `callers.yaml` with one caller per `(id, api key)`, each in `group`, keys stored as hashes.
    pub fn callers_with_keys(&self, keys: &[(&str, &str)], group: &str) {
        let mut callers = String::from("callers:\n");
        for (id, key) in keys {
            let hash: String = interlock::identity::apikey::digest(key).iter().map(|b| format!("{b:02x}")).collect();
            callers.push_str(&format!(
                "  - id: {id}\n    groups: [{group}]\n    api_keys:\n      - id: {id}-k\n        hash: sha256:{hash}\n"
            ));
        }
        self.write("callers.yaml", &callers);
    }

    /// An upstream file `upstreams/<id>.yaml` pointing at `addr` with `base` path and extra keys.
    pub fn upstream(&self, id: &str, addr: SocketAddr, base: &str, extra: &str) {
        self.write(
            &format!("upstreams/{id}.yaml"),
            &format!("id: {id}\nendpoints: [\"http://{addr}{base}\"]\n{extra}"),
        );
    }
}

/// A gateway running in this process on a temp policies directory.
pub struct Running {
    pub gw: Option<Gateway>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub policies: Policies,
}

impl Running {
    pub async fn start(policies: Policies) -> Running {
        let gw = Gateway::start(policies.path()).await.unwrap_or_else(|e| match e {
            interlock::app::StartError::Config(errs) => {
                panic!("config errors: {:#?}", errs.iter().map(|e| e.to_string()).collect::<Vec<_>>())
            }
            other => panic!("{other}"),
        });
        Running { addr: gw.listen_addrs[0], admin: gw.admin_addr, gw: Some(gw), policies }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn shutdown(mut self) -> bool {
        self.gw.take().unwrap().shutdown_within(Duration::from_secs(5)).await
    }
}

pub type H1Client = Client<HttpConnector, BoxBody<Bytes, std::io::Error>>;

pub fn h1_client() -> H1Client {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub fn h2c_client() -> H1Client {
    Client::builder(TokioExecutor::new()).http2_only(true).build(HttpConnector::new())
}

pub fn body(b: impl Into<Bytes>) -> BoxBody<Bytes, std::io::Error> {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> BoxBody<Bytes, std::io::Error> {
    body(Bytes::new())
}

/// A simple GET/POST through a client; returns status, headers and body text.
pub async fn call(client: &H1Client, req: Request<BoxBody<Bytes, std::io::Error>>) -> (StatusCode, HeaderMap, String) {
    let res = client.request(req).await.expect("request failed");
    let (parts, b) = res.into_parts();
    let bytes = b.collect().await.expect("body failed").to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

pub async fn get(url: &str) -> (StatusCode, HeaderMap, String) {
    call(&h1_client(), Request::get(url).body(empty()).unwrap()).await
}

/// Sends raw bytes on a fresh connection and returns everything read until the peer closes or
/// `wait` passes without data.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Asserts a problem+json answer with the given status and type slug; returns the parsed body.
pub fn assert_problem(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    want_status: u16,
    slug: &str,
) -> serde_json::Value {
    assert_eq!(status.as_u16(), want_status, "body: {body}");
    assert_eq!(
        headers.get("content-type").map(|v| v.to_str().unwrap()),
        Some("application/problem+json"),
        "body: {body}"
    );
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(v["type"], format!("urn:interlock:problem:{slug}"), "{v}");
    assert_eq!(v["status"], want_status);
    assert!(v["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(v["detail"].as_str().is_some_and(|d| d.len() > 20), "{v}");
    let rid = headers.get("x-request-id").expect("x-request-id header").to_str().unwrap();
    assert_eq!(v["request_id"], rid);
    let trace = v["trace_id"].as_str().expect("trace_id");
    assert!(trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()), "{v}");
    v
}

/// Parses a raw HTTP/1 response: status and (lower-cased) head, and body.
pub fn split_raw(resp: &str) -> (u16, String, String) {
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_interlock"))
}

pub async fn wait_until<F: Fn() -> bool>(what: &str, timeout: Duration, f: F) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills a child process when dropped, so a failing test leaves no gateway (or its ports) behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Says that a test skipped itself, and why. Written to the process's stderr directly: the test
/// harness captures `eprintln!` of passing tests, and a skip must never be silent.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}
