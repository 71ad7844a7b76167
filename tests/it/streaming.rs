//! Bodies stream both ways without buffering: large transfers keep their bytes and the gateway's
//! memory flat.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::support::*;

const ROUTES: &str =
    "- id: all\n  match:\n    path: /**\n  upstream: up\n  anonymous: true\n  max_body: 1GiB\n  timeout: 5m\n";

fn stream_of(total: u64) -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
    let chunk = Bytes::from(vec![b'z'; 64 * 1024]);
    let s = futures_util::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(chunk.len() as u64);
            Some((Ok::<_, std::io::Error>(Frame::data(chunk.slice(..n as usize))), left - n))
        }
    });
    StreamBody::new(s).boxed()
}

async fn drain_len(res: http::Response<hyper::body::Incoming>) -> u64 {
    let mut body = res.into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        n += f.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    n
}

async fn round_trip(client: &H1Client, base: &str, bytes: u64) {
    // Upload: the upstream counts what it received.
    let res = client.request(Request::post(format!("{base}/count")).body(stream_of(bytes)).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let got = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&got), bytes.to_string());
    // Download.
    let res = client.request(Request::get(format!("{base}/bytes?n={bytes}")).body(empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(drain_len(res).await, bytes);
    // Both at once: the upstream echoes while we still send.
    let res = client.request(Request::post(format!("{base}/echo")).body(stream_of(bytes)).unwrap()).await.unwrap();
    assert_eq!(drain_len(res).await, bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_stream_both_ways_over_h1_and_h2c() {
    let up = Upstream::start().await;
    let p = Policies::new("");
    p.upstream("up", up.addr, "", "");
    p.write("routes/r.yaml", ROUTES);
    let gw = Running::start(p).await;
    let base = gw.url("");
    round_trip(&h1_client(), &base, 16 << 20).await;
    round_trip(&h2c_client(), &base, 16 << 20).await;
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// 100 MiB each way through the real binary; its peak RSS must stay under 64 MiB.
/// Run with `cargo test --release --test it -- --ignored streaming` (see docs/performance.md).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "memory measurement: run in release mode on demand"]
async fn hundred_mib_each_way_keeps_rss_under_64_mib() {
    let up = Upstream::start().await;
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let p = Policies::new("");
    p.write(
        "gateway.yaml",
        &format!("listeners:\n  - bind: {listen}\nadmin:\n  bind: 127.0.0.1:0\nlog:\n  level: warn\n"),
    );
    p.upstream("up", up.addr, "", "");
    p.write("routes/r.yaml", ROUTES);
    let mut child = std::process::Command::new(bin()).args(["run", "--config"]).arg(p.path()).spawn().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let base = format!("http://{listen}");
    round_trip(&h1_client(), &base, 100 << 20).await;
    round_trip(&h2c_client(), &base, 100 << 20).await;
    let hwm = vm_hwm_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("gateway peak RSS after 100 MiB each way (h1 + h2c): {hwm} KiB");
    assert!(hwm < 64 * 1024, "peak RSS {hwm} KiB");
}
