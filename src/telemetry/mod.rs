//! What the gateway tells operators: process logs, per-request records (audit trail, access log,
//! live tap) and Prometheus metrics.
//!
//! - `record.rs`: the one record per request and the body that finishes it.
//! - `audit.rs`: the hash-chained audit trail and `interlock audit verify`.
//! - `metrics.rs`: the Prometheus registry behind admin `/metrics`.
//!
//! [`Telemetry`] is created once per gateway process (it outlives config reloads) and shared by the
//! request path and the admin API. Nothing here decides anything about a request.

pub mod audit;
pub mod metrics;
pub mod otel;
pub mod record;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

use tokio::sync::broadcast;
use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;
use audit::{AuditRecord, AuditSettings, AuditSink};
use metrics::Metrics;

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A file (appended).
    File(PathBuf),
}

/// Access log settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    /// Where lines go.
    pub target: LogTarget,
    /// Fields to include (empty = all).
    pub fields: Vec<String>,
}

/// Telemetry settings from `gateway.yaml` (read at start-up).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TelemetrySettings {
    /// Access log, if on.
    pub access_log: Option<AccessLogSettings>,
    /// Audit trail.
    pub audit: AuditSettings,
    /// Trace export, if on.
    pub tracing: Option<otel::TracingSettings>,
}

/// A live summary of one finished request, for `/tap`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TapLine {
    /// Arrival time.
    pub time: String,
    /// Request id.
    pub request_id: String,
    /// Method.
    pub method: String,
    /// Normalised path.
    pub path: String,
    /// Route id.
    pub route: Option<String>,
    /// Caller id.
    pub caller: Option<String>,
    /// Status.
    pub status: u16,
    /// Duration.
    pub duration_ms: u64,
    /// Problem type, for gateway-made errors.
    pub error: Option<&'static str>,
}

/// JSON lines written by a dedicated thread; the request path never blocks on the output.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<String>,
    fields: Vec<String>,
    /// Lines dropped because the writer fell behind.
    pub dropped: AtomicU64,
}

impl AccessLog {
    fn start(s: &AccessLogSettings) -> Result<AccessLog, String> {
        let mut out: Box<dyn std::io::Write + Send> = match &s.target {
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::Stderr => Box::new(std::io::stderr()),
            LogTarget::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("cannot open the access log `{}`: {e}", p.display()))?,
            ),
        };
        let (tx, rx) = sync_channel::<String>(16_384);
        std::thread::Builder::new()
            .name("interlock-access-log".into())
            .spawn(move || {
                let mut buf = std::io::BufWriter::with_capacity(256 * 1024, &mut out);
                while let Ok(line) = rx.recv() {
                    let _ = buf.write_all(line.as_bytes());
                    let _ = buf.write_all(b"\n");
                    // Drain in batches: flush, pause briefly while lines keep coming (so senders
                    // need not wake this thread per line), block only when idle.
                    loop {
                        let mut got = false;
                        while let Ok(more) = rx.try_recv() {
                            let _ = buf.write_all(more.as_bytes());
                            let _ = buf.write_all(b"\n");
                            got = true;
                        }
                        let _ = buf.flush();
                        if !got {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                }
            })
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(AccessLog { tx, fields: s.fields.clone(), dropped: AtomicU64::new(0) })
    }

    /// Writes one line for a finished request (the audit record's facts, minus the chain fields).
    pub fn write(&self, r: &AuditRecord) {
        let mut v = match serde_json::to_value(r) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return,
        };
        for k in ["chain", "seq", "prev", "hash", "ocsf"] {
            v.remove(k);
        }
        if !self.fields.is_empty() {
            v.retain(|k, _| self.fields.iter().any(|f| f == k));
        }
        let line = serde_json::Value::Object(v).to_string();
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Process-wide telemetry: metrics, audit sink, access log, tap.
#[derive(Debug)]
pub struct Telemetry {
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Audit trail.
    pub audit: AuditSink,
    /// Access log, if on.
    pub access_log: Option<AccessLog>,
    /// Trace export, if on.
    pub tracing: Option<otel::Tracing>,
    tap: broadcast::Sender<Arc<TapLine>>,
}

impl Telemetry {
    /// Starts the writers for `s`.
    pub fn start(s: &TelemetrySettings) -> Result<Arc<Telemetry>, String> {
        let audit = AuditSink::start(s.audit.clone())?;
        let metrics = Metrics::new(audit.stats.clone());
        let access_log = s.access_log.as_ref().map(AccessLog::start).transpose()?;
        let tracing = s.tracing.as_ref().map(otel::Tracing::start).transpose()?;
        let (tap, _) = broadcast::channel(1024);
        Ok(Arc::new(Telemetry { metrics, audit, access_log, tracing, tap }))
    }

    /// Telemetry with every output off (metrics still count).
    pub fn disabled() -> Arc<Telemetry> {
        let audit = AuditSink::disabled();
        let (tap, _) = broadcast::channel(16);
        Arc::new(Telemetry { metrics: Metrics::new(audit.stats.clone()), audit, access_log: None, tracing: None, tap })
    }

    /// Flushes the audit trail and queued spans (after the drain). Both wait on other threads
    /// and tasks, so they run off the runtime's threads: on a single-threaded runtime, blocking
    /// here would starve the very export task being waited for.
    pub async fn shutdown(self: &Arc<Self>) {
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            me.audit.close();
            if let Some(t) = &me.tracing {
                t.shutdown();
            }
        })
        .await;
    }

    /// Whether anyone is watching the tap.
    pub fn tap_wanted(&self) -> bool {
        self.tap.receiver_count() > 0
    }

    fn tap(&self, line: TapLine) {
        let _ = self.tap.send(Arc::new(line));
    }

    /// A new tap subscription (bounded: a slow reader misses lines instead of holding memory).
    pub fn subscribe_tap(&self) -> broadcast::Receiver<Arc<TapLine>> {
        self.tap.subscribe()
    }

    /// Counts a reload attempt.
    pub fn reload_counted(&self, ok: bool, generation: u64) {
        let result = if ok { "ok" } else { "failed" };
        self.metrics.reloads.get_or_create(&metrics::ResultLabels { result: result.to_owned() }).inc();
        if ok {
            self.metrics.generation.set(generation as i64);
        }
    }

    /// Reload attempts so far: (applied, rejected).
    pub fn reload_counts(&self) -> (u64, u64) {
        let get = |r: &str| self.metrics.reloads.get_or_create(&metrics::ResultLabels { result: r.to_owned() }).get();
        (get("ok"), get("failed"))
    }
}

/// Installs the global log subscriber. `INTERLOCK_LOG` overrides the configured filter. Calling it
/// twice keeps the first subscriber.
pub fn init_logging(s: &LogSettings) {
    let filter = std::env::var("INTERLOCK_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&s.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if s.json {
        builder.json().flatten_event(true).with_current_span(false).try_init()
    } else {
        builder.try_init()
    };
}
