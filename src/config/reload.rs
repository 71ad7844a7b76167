//! The live snapshot and how it is replaced: file changes (notify), SIGHUP and admin `POST /reload`.
//!
//! A reload compiles the whole directory into a new [`Snapshot`]; only if that succeeds is it
//! swapped in (arc-swap), all at once. A failed reload keeps the old snapshot serving, logs every
//! error and the diff it would have applied, and records both for admin `GET /config/status`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::Watcher as _;
use tokio::sync::mpsc;

use super::ConfigError;
use crate::snapshot::Snapshot;

/// What asked for a reload (for logs and status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A file in the policies directory changed.
    FileChange,
    /// SIGHUP.
    Signal,
    /// Admin `POST /reload`.
    Admin,
}

/// What changed between two snapshots, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Diff {
    /// Routes added.
    pub routes_added: Vec<String>,
    /// Routes removed.
    pub routes_removed: Vec<String>,
    /// Routes whose definition changed.
    pub routes_changed: Vec<String>,
    /// Upstreams added.
    pub upstreams_added: Vec<String>,
    /// Upstreams removed.
    pub upstreams_removed: Vec<String>,
    /// Upstreams whose definition changed.
    pub upstreams_changed: Vec<String>,
    /// Settings that only take effect after a restart (listeners, admin address, runtime).
    pub restart_required: Vec<String>,
}

impl Diff {
    /// Compares two compiled configs.
    pub fn between(old: &super::Config, new: &super::Config) -> Diff {
        let mut d = Diff::default();
        // Debug output is the fingerprint; credentials print redacted, so a secret-only change
        // does not show here (and must not).
        let fp = |x: &dyn std::fmt::Debug| format!("{x:?}");
        for r in &new.routes {
            match old.routes.iter().find(|o| o.id == r.id) {
                None => d.routes_added.push(r.id.clone()),
                Some(o)
                    if fp(&(
                        o.template.clone(),
                        &o.host,
                        &o.methods,
                        &o.rewrite,
                        o.upgrade,
                        o.timeout,
                        o.max_body,
                        &old.upstreams[o.upstream].id,
                    )) != fp(&(
                        r.template.clone(),
                        &r.host,
                        &r.methods,
                        &r.rewrite,
                        r.upgrade,
                        r.timeout,
                        r.max_body,
                        &new.upstreams[r.upstream].id,
                    )) =>
                {
                    d.routes_changed.push(r.id.clone())
                }
                Some(_) => {}
            }
        }
        d.routes_removed =
            old.routes.iter().filter(|o| !new.routes.iter().any(|r| r.id == o.id)).map(|o| o.id.clone()).collect();
        for u in &new.upstreams {
            match old.upstreams.iter().find(|o| o.id == u.id) {
                None => d.upstreams_added.push(u.id.clone()),
                Some(o) => {
                    let strip = |x: &super::Upstream| {
                        let mut x = x.clone();
                        x.origin.line = 0;
                        fp(&x)
                    };
                    if strip(o) != strip(u) {
                        d.upstreams_changed.push(u.id.clone());
                    }
                }
            }
        }
        d.upstreams_removed = old
            .upstreams
            .iter()
            .filter(|o| !new.upstreams.iter().any(|u| u.id == o.id))
            .map(|o| o.id.clone())
            .collect();
        let (og, ng) = (&old.gateway, &new.gateway);
        if og.listeners.len() != ng.listeners.len()
            || og.listeners.iter().zip(&ng.listeners).any(|(a, b)| !a.same_socket(b))
        {
            d.restart_required.push("listeners".to_owned());
        }
        if og.admin_bind != ng.admin_bind {
            d.restart_required.push("admin.bind".to_owned());
        }
        if og.worker_threads != ng.worker_threads {
            d.restart_required.push("runtime.worker_threads".to_owned());
        }
        if og.log != ng.log {
            d.restart_required.push("log".to_owned());
        }
        d
    }
}

/// The outcome of the last reload attempt, served on `/config/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadOutcome {
    /// What triggered it.
    pub trigger: Trigger,
    /// When it finished (seconds since the Unix epoch).
    pub at_unix: u64,
    /// Whether the new config was applied.
    pub ok: bool,
    /// Every error, formatted `file:line: key: message`.
    pub errors: Vec<String>,
    /// What changed (or would have).
    pub diff: Option<Diff>,
}

/// Holds the current snapshot and serialises reloads.
#[derive(Debug)]
pub struct Store {
    /// Process-wide telemetry (outlives reloads).
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    dir: PathBuf,
    current: ArcSwap<Snapshot>,
    last: Mutex<Option<ReloadOutcome>>,
    reloading: tokio::sync::Mutex<()>,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Store {
    /// A store serving `first`, reloading from `dir`.
    pub fn new(dir: PathBuf, first: Snapshot, telemetry: Arc<crate::telemetry::Telemetry>) -> Store {
        telemetry.metrics.generation.set(first.generation as i64);
        Store {
            telemetry,
            dir,
            current: ArcSwap::from_pointee(first),
            last: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// The snapshot to use for one request.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The policies directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last reload attempt, if any.
    pub fn last_outcome(&self) -> Option<ReloadOutcome> {
        self.last.lock().ok().and_then(|g| g.clone())
    }

    /// Compiles the directory and swaps the result in, or keeps the old snapshot on any error.
    pub async fn reload(&self, trigger: Trigger) -> Result<u64, Vec<ConfigError>> {
        let _one_at_a_time = self.reloading.lock().await;
        let dir = self.dir.clone();
        let old = self.load();
        // Compiling reads files and may read secrets: keep it off the async workers.
        let compiled = tokio::task::spawn_blocking(move || super::load(&dir)).await;
        let result = match compiled {
            Ok(Ok(config)) => {
                let diff = Diff::between(&old.config, &config);
                match Snapshot::build(config, old.generation + 1, Some(&old), &self.telemetry) {
                    Ok(snap) => Ok((snap, diff)),
                    Err(e) => Err(e),
                }
            }
            Ok(Err(e)) => Err(e),
            Err(join) => Err(vec![ConfigError::at(&self.dir, None, "", format!("config compiler crashed: {join}"))]),
        };
        match result {
            Ok((snap, diff)) => {
                let generation = snap.generation;
                if !diff.restart_required.is_empty() {
                    tracing::warn!(settings = ?diff.restart_required, "config changes that need a restart were not applied");
                }
                tracing::info!(generation, ?trigger, diff = ?diff, "config reloaded");
                self.current.store(Arc::new(snap));
                self.record(ReloadOutcome {
                    trigger,
                    at_unix: unix_now(),
                    ok: true,
                    errors: Vec::new(),
                    diff: Some(diff),
                });
                self.telemetry.reload_counted(true, generation);
                Ok(generation)
            }
            Err(errors) => {
                let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
                for e in &shown {
                    tracing::error!(error = %e, "config error");
                }
                tracing::error!(
                    ?trigger,
                    errors = shown.len(),
                    generation = old.generation,
                    "config reload rejected; still serving the previous config"
                );
                self.record(ReloadOutcome { trigger, at_unix: unix_now(), ok: false, errors: shown, diff: None });
                self.telemetry.reload_counted(false, 0);
                Err(errors)
            }
        }
    }

    fn record(&self, o: ReloadOutcome) {
        if let Ok(mut g) = self.last.lock() {
            *g = Some(o);
        }
    }
}

/// Watches the policies directory (recursively) and the directories of the files the config reads
/// from elsewhere (certificates, keys, JWKS files), and reloads after `debounce` of quiet. The task
/// owns the watcher; aborting the task stops watching.
pub fn spawn_watcher(store: Arc<Store>, debounce: Duration) -> Result<tokio::task::JoinHandle<()>, String> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let dir = std::fs::canonicalize(store.dir()).unwrap_or_else(|_| store.dir().to_path_buf());
    let watched: Arc<Mutex<Vec<PathBuf>>> = Arc::new(Mutex::new(vec![dir.clone()]));
    let w = watched.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant =
            w.lock().map(|dirs| ev.paths.iter().any(|p| dirs.iter().any(|d| p.starts_with(d)))).unwrap_or(true);
        if relevant {
            let _ = tx.send(());
        }
    })
    .map_err(|e| format!("cannot watch the policies directory: {e}"))?;
    watcher
        .watch(&dir, notify::RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch `{}`: {e}", dir.display()))?;
    let mut watching_external: Vec<PathBuf> = Vec::new();
    let mut sync_external = move |watcher: &mut notify::RecommendedWatcher, store: &Store| {
        let snap = store.load();
        for f in &snap.config.external_files {
            let Some(parent) = f.parent() else { continue };
            let parent = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
            if parent.starts_with(&dir) || watching_external.contains(&parent) {
                continue;
            }
            match watcher.watch(&parent, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    if let Ok(mut w) = watched.lock() {
                        w.push(parent.clone());
                    }
                    watching_external.push(parent);
                }
                Err(e) => {
                    tracing::warn!(dir = %parent.display(), error = %e, "cannot watch a directory of referenced files; changes there need a reload")
                }
            }
        }
    };
    sync_external(&mut watcher, &store);
    Ok(tokio::spawn(async move {
        let mut watcher = watcher; // dropping it stops the notifications
        while rx.recv().await.is_some() {
            // Debounce: editors write files in several steps.
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if store.reload(Trigger::FileChange).await.is_ok() {
                sync_external(&mut watcher, &store);
            }
        }
    }))
}
