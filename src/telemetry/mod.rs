//! Process logs and the gateway's own counters.
//!
//! `init_logging` installs the `tracing` subscriber (JSON lines or human-readable, filtered by the
//! config's `log.level` or the `INTERLOCK_LOG` environment variable). The counters here are read by
//! the admin API. Nothing in this module decides anything.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

static RELOADS_OK: AtomicU64 = AtomicU64::new(0);
static RELOADS_FAILED: AtomicU64 = AtomicU64::new(0);

/// Counts a reload attempt.
pub fn reload_counted(ok: bool) {
    if ok {
        RELOADS_OK.fetch_add(1, Ordering::Relaxed);
    } else {
        RELOADS_FAILED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reload attempts so far: (applied, rejected).
pub fn reload_counts() -> (u64, u64) {
    (RELOADS_OK.load(Ordering::Relaxed), RELOADS_FAILED.load(Ordering::Relaxed))
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
