//! Start-up and shutdown: binding the listeners, starting the admin API and the reload triggers,
//! and draining on SIGTERM/SIGINT.
//!
//! The data-plane request path itself is assembled in [`crate::proxy::handle`], in order; this
//! module owns everything around it. [`Gateway::start`] is also what the tests and `interlock demo`
//! use, so they exercise the same start-up as `interlock run`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::config::reload::{spawn_watcher, Store, Trigger};
use crate::config::{self, ConfigError};
use crate::listener::{self, drain::Drain};
use crate::snapshot::Snapshot;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration did not compile.
    #[error("the configuration has {} error(s)", .0.len())]
    Config(Vec<ConfigError>),
    /// A socket could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: String,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The policies directory cannot be watched.
    #[error("{0}")]
    Watch(String),
    /// The audit trail or access log cannot be opened.
    #[error("{0}")]
    Telemetry(String),
}

/// A running gateway: its bound addresses and the handles to stop it.
#[derive(Debug)]
pub struct Gateway {
    /// Bound data-plane addresses, in config order.
    pub listen_addrs: Vec<SocketAddr>,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    /// The config store (tests reload through it).
    pub store: Arc<Store>,
    admin: Arc<AdminState>,
    stop_admin: watch::Sender<bool>,
    drain: Drain,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Compiles `dir`, binds every listener and the admin port, and starts serving.
    pub async fn start(dir: &Path) -> Result<Gateway, StartError> {
        let d = dir.to_path_buf();
        let config = tokio::task::spawn_blocking(move || config::load(&d))
            .await
            .map_err(|e| {
                StartError::Config(vec![ConfigError::at(dir, None, "", format!("config compiler crashed: {e}"))])
            })?
            .map_err(StartError::Config)?;
        Gateway::start_with(dir, config).await
    }

    /// Starts serving an already compiled `config` read from `dir` (reloads read `dir` again).
    pub async fn start_with(dir: &Path, config: config::Config) -> Result<Gateway, StartError> {
        let telemetry = crate::telemetry::Telemetry::start(&config.gateway.telemetry).map_err(StartError::Telemetry)?;
        let snapshot = Snapshot::build(config, 1, None, &telemetry).map_err(StartError::Config)?;
        let gw = snapshot.config.gateway.clone();
        for w in &snapshot.config.warnings {
            tracing::warn!(warning = %w, "config warning");
        }
        let store = Arc::new(Store::new(dir.to_path_buf(), snapshot, telemetry));

        let mut tcp = Vec::new();
        for l in &gw.listeners {
            let t = TcpListener::bind(l.bind).await.map_err(|source| StartError::Bind {
                what: format!("listener `{}`", l.name),
                addr: l.bind,
                source,
            })?;
            tcp.push((t, l.clone()));
        }
        let admin_tcp = TcpListener::bind(gw.admin_bind).await.map_err(|source| StartError::Bind {
            what: "admin".to_owned(),
            addr: gw.admin_bind,
            source,
        })?;
        let admin_addr = admin_tcp.local_addr().map_err(|source| StartError::Bind {
            what: "admin".to_owned(),
            addr: gw.admin_bind,
            source,
        })?;

        let (stop_admin, stop_admin_rx) = watch::channel(false);
        let drain = Drain::default();
        let mut background = Vec::new();
        let mut listen_addrs = Vec::new();
        let mut names = Vec::new();
        for (t, l) in tcp {
            listen_addrs.push(t.local_addr().unwrap_or(l.bind));
            names.push(l.name.clone());
            background.push(tokio::spawn(listener::serve(t, l, store.clone(), drain.watch())));
        }
        let admin = Arc::new(AdminState { store: store.clone(), ready: false.into() });
        background.push(tokio::spawn(admin::serve(admin_tcp, admin.clone(), stop_admin_rx)));
        if gw.watch {
            background.push(spawn_watcher(store.clone(), gw.watch_debounce).map_err(StartError::Watch)?);
        }
        admin.ready.store(true, Ordering::Release);
        // Announced once ready, so whoever waits for these lines finds `/readyz` answering 200.
        for (name, addr) in names.iter().zip(&listen_addrs) {
            tracing::info!(listener = %name, addr = %addr, "listening");
        }
        tracing::info!(addr = %admin_addr, "admin listening");
        Ok(Gateway { listen_addrs, admin_addr, store, admin, stop_admin, drain, background })
    }

    /// Stops accepting, lets in-flight requests finish for up to the configured grace period, then
    /// closes what is left. Returns true when everything finished within the grace period.
    pub async fn shutdown(self) -> bool {
        let grace = self.store.load().config.gateway.shutdown_grace;
        self.shutdown_within(grace).await
    }

    /// [`shutdown`](Self::shutdown) with an explicit grace period.
    pub async fn shutdown_within(self, grace: Duration) -> bool {
        self.admin.ready.store(false, Ordering::Release);
        tracing::info!(holders = self.drain.holders(), grace_ms = grace.as_millis() as u64, "draining");
        let drained = tokio::time::timeout(grace, self.drain.drain()).await.is_ok();
        let _ = self.stop_admin.send(true);
        for t in self.background {
            t.abort();
        }
        // Every request has finished or been abandoned: flush the audit trail.
        self.store.telemetry.shutdown().await;
        if drained {
            tracing::info!("drained; exiting");
        } else {
            tracing::warn!("grace period over; closing remaining connections");
        }
        drained
    }
}

/// `interlock run`: start, reload on SIGHUP, drain on SIGTERM/SIGINT.
pub async fn run(dir: &Path, config: config::Config) -> Result<(), StartError> {
    let gw = Gateway::start_with(dir, config).await?;
    wait_for_stop_signal(&gw.store).await;
    gw.shutdown().await;
    Ok(())
}

/// Waits for SIGTERM or SIGINT, reloading on every SIGHUP meanwhile.
pub async fn wait_for_stop_signal(store: &Arc<Store>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
        else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); return; }
                _ = int.recv() => { tracing::info!("SIGINT received"); return; }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received; reloading");
                    let _ = store.reload(Trigger::Signal).await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
