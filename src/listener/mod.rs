//! Data-plane sockets: accepting connections within a cap, serving HTTP/1.1 and h2c on them, and
//! draining them on shutdown.
//!
//! The accept loop reads the current snapshot's limits for each new connection, so a reload changes
//! the limits of connections accepted after it. This module does not parse HTTP itself beyond the
//! framing sniffer (`sniff.rs`); hyper does, and the proxy decides.

pub mod drain;
pub mod sniff;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use drain::DrainWatch;

use crate::config::reload::Store;
use crate::config::{Limits, Listener};
use crate::identity::mtls::PeerCert;
use crate::proxy::{self, ConnInfo};

/// The HTTP server settings for one connection, derived from the limits in force when it was
/// accepted. hyper's own caps sit above ours so that our checks answer with problem+json; hyper's
/// plain answers remain as the backstop for grossly oversized heads.
pub fn http_builder(limits: &Limits, l: &Listener) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    if l.http1 && !l.h2c {
        b = b.http1_only();
    } else if l.h2c && !l.http1 {
        b = b.http2_only();
    }
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(hyper_max_headers(limits))
        .max_buf_size(hyper_max_buf(limits))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(limits.max_header_bytes.saturating_mul(2).max(16 * 1024)).unwrap_or(u32::MAX),
        )
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

fn hyper_max_headers(limits: &Limits) -> usize {
    (limits.max_headers * 2).clamp(100, 2000)
}

fn hyper_max_buf(limits: &Limits) -> usize {
    (limits.max_header_bytes * 2 + 16 * 1024).max(400 * 1024)
}

/// Serves HTTP on one accepted (and, for TLS listeners, handshaken) connection until it ends or
/// the drain asks it to finish.
async fn serve_connection<IO>(
    io: IO,
    mut conn: ConnInfo,
    cfg: &Listener,
    limits: &Limits,
    store: Arc<Store>,
    mut drain: DrainWatch,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let builder = http_builder(limits, cfg);
    let (io, framing) =
        sniff::SniffedIo::new(io, hyper_max_buf(limits), hyper_max_headers(limits), limits.header_read_timeout);
    conn.framing = Some(framing);
    let peer = conn.peer;
    let conn = Arc::new(conn);
    let service = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        // Each request pins the snapshot current at its arrival (invariant 6).
        let snap = store.load();
        async move { Ok::<_, Infallible>(proxy::handle(snap, &conn, req).await) }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        _ = drain.signaled() => {
            // Finish in-flight requests, refuse new ones (h1: no keep-alive; h2: GOAWAY).
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Accepts connections on `tcp` until the drain is signalled, serving each with the proxy.
pub async fn serve(tcp: TcpListener, cfg: Listener, store: Arc<Store>, mut drain: DrainWatch) {
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let local = match tcp.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(listener = %cfg.name, error = %e, "listener has no local address");
            return;
        }
    };
    loop {
        // Wait for a connection slot first: over the cap, clients wait in the kernel backlog.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = drain.signaled() => return,
        };
        let (stream, peer) = tokio::select! {
            r = tcp.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %cfg.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = drain.signaled() => return,
        };
        let _ = stream.set_nodelay(true);
        // The address this connection reached (a wildcard listener's own address is 0.0.0.0).
        let local = stream.local_addr().unwrap_or(local);
        let snap = store.load();
        // Listeners are fixed for the process; their TLS material follows the current snapshot.
        let tls = snap.config.gateway.listeners.iter().find(|l| l.bind == cfg.bind).and_then(|l| l.tls.clone());
        let limits = snap.config.gateway.limits.clone();
        drop(snap);
        let (store, drain, cfg) = (store.clone(), drain.clone(), cfg.clone());
        tokio::spawn(async move {
            match tls {
                None => {
                    let conn = ConnInfo {
                        peer,
                        local,
                        scheme: "http",
                        framing: None,
                        peer_cert: None,
                        telemetry: store.telemetry.clone(),
                    };
                    serve_connection(stream, conn, &cfg, &limits, store, drain).await;
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
                    let stream = match tokio::time::timeout(tls.handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let peer_cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(PeerCert::from_der)
                        .map(Arc::new);
                    let conn = ConnInfo {
                        peer,
                        local,
                        scheme: "https",
                        framing: None,
                        peer_cert,
                        telemetry: store.telemetry.clone(),
                    };
                    serve_connection(stream, conn, &cfg, &limits, store, drain).await;
                }
            }
            drop(permit);
        });
    }
}
