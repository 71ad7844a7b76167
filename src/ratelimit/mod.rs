//! Rate limits and vendor quotas: per caller, per route and per vendor account, each with one or
//! more windows (`4/1m` and `500/1d`), answered by refusing (429) or by queueing up to a maximum
//! wait; vendor accounts also pause on the vendor's own signals (`X-RateLimit-Remaining: 0`, 429
//! with `Retry-After`). With `cluster.redis`, shared limits are counted in Redis so every replica
//! draws on one allowance.
//!
//! - [`gcra`]: the arithmetic (several windows checked atomically, reservations for FIFO queueing).
//! - [`vendor`]: reading the vendor's rate-limit headers.
//! - [`shared`]: the Redis store (the same arithmetic in one Lua script).
//!
//! The [`Limiter`] is process-wide and survives reloads: a limit keeps its state while its id
//! (derived from the route or upstream id) stays the same. Keys (limit, subject) whose windows are
//! all full again are evicted, so a stream of distinct callers cannot grow memory without bound.

pub mod gcra;
pub mod shared;
pub mod vendor;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::telemetry::metrics::{Label, RateLimitMetrics};
use gcra::{Cell, Verdict};
use vendor::Dialect;

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

const SHARDS: usize = 16;
/// Windows per limit (more is a config error): state copies stay on the stack.
pub const MAX_WINDOWS: usize = 4;

/// A copy of a key's window state, without allocating.
#[derive(Debug, Clone, Copy, Default)]
struct Tats {
    n: usize,
    v: [u64; MAX_WINDOWS],
}

impl Tats {
    fn of(s: &[u64]) -> Tats {
        let mut t = Tats { n: s.len().min(MAX_WINDOWS), v: [0; MAX_WINDOWS] };
        t.v[..t.n].copy_from_slice(&s[..t.n]);
        t
    }
    fn get(&self) -> &[u64] {
        &self.v[..self.n]
    }
}

/// (limit id, subject), or (upstream id, credential id) for a vendor account.
type Key = (Arc<str>, Arc<str>);
const SWEEP_FLOOR: usize = 1024;

/// One window of a limit: `limit` requests per `per`, in bursts of at most `burst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Requests per period.
    pub limit: u64,
    /// The period.
    pub per: Duration,
    /// Requests that may go at once after a quiet period (default: `limit`).
    pub burst: u64,
}

impl Window {
    /// `4/1m`-style text.
    pub fn text(&self) -> String {
        format!("{}/{}", self.limit, crate::config::units::format_duration(self.per))
    }

    fn cell(&self, units_per_sec: u64) -> Cell {
        let per = self.per.as_nanos() * u128::from(units_per_sec) / 1_000_000_000;
        let t = (per / u128::from(self.limit.max(1))).max(1) as u64;
        Cell { t, c: t.saturating_mul(self.burst.max(1)) }
    }
}

/// What happens when a limit is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// Answer 429 at once.
    Reject,
    /// Hold the request until it conforms, at most `max_wait`; at most `max_queued` wait per key
    /// (per replica), beyond that 429 at once.
    Queue {
        /// The longest a request waits.
        max_wait: Duration,
        /// Requests waiting per key.
        max_queued: usize,
    },
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Each caller separately (anonymous callers by client address).
    Caller,
    /// All calls of a route together.
    Route,
    /// All calls made with one upstream credential (one vendor account), from any route or caller.
    Account,
}

/// A compiled limit.
#[derive(Debug)]
pub struct LimitSpec {
    /// Stable id: state key, metric label (`route:vt-files:caller`, `upstream:vt`).
    pub id: Arc<str>,
    /// Short name used in the `RateLimit*` headers (`caller`, `route`, `account`).
    pub name: &'static str,
    /// What is counted.
    pub scope: Scope,
    /// The windows; empty for a vendor account that is only paced by the vendor's headers.
    pub windows: Vec<Window>,
    /// Refuse or queue.
    pub on_exhausted: Exhausted,
    /// Counted in Redis when `cluster.redis` is configured.
    pub shared: bool,
    cells: Vec<Cell>,
    cells_us: Vec<Cell>,
    policy: Option<HeaderValue>,
    /// Decision counters (admitted, queued, rejected, unavailable), looked up once.
    counters: std::sync::OnceLock<[prometheus_client::metrics::counter::Counter; 4]>,
    /// `caller-1m`, per window: the item names of the `RateLimit*` headers.
    items: Vec<String>,
    label: Label,
}

impl LimitSpec {
    /// Builds a limit.
    pub fn new(
        id: &str,
        name: &'static str,
        scope: Scope,
        windows: Vec<Window>,
        on_exhausted: Exhausted,
        shared: bool,
    ) -> LimitSpec {
        let cells = windows.iter().map(|w| w.cell(1_000_000_000)).collect();
        let cells_us = windows.iter().map(|w| w.cell(1_000_000)).collect();
        let mut policy = String::new();
        for w in &windows {
            if !policy.is_empty() {
                policy.push_str(", ");
            }
            let _ = write!(policy, "\"{name}-{}\";q={};w={}", window_name(w), w.limit, w.per.as_secs().max(1));
        }
        LimitSpec {
            id: id.into(),
            name,
            scope,
            on_exhausted,
            shared,
            cells,
            cells_us,
            policy: HeaderValue::from_str(&policy).ok().filter(|_| !windows.is_empty()),
            items: windows.iter().map(|w| format!("{name}-{}", window_name(w))).collect(),
            counters: std::sync::OnceLock::new(),
            label: Label(id.into()),
            windows,
        }
    }

    /// Describes the limit for `interlock explain` and `/config`.
    pub fn describe(&self) -> String {
        let w: Vec<String> = self.windows.iter().map(Window::text).collect();
        let mode = match self.on_exhausted {
            Exhausted::Reject => "reject".to_owned(),
            Exhausted::Queue { max_wait, .. } => {
                format!("queue up to {}", crate::config::units::format_duration(max_wait))
            }
        };
        format!(
            "{} {} ({mode}{})",
            self.name,
            if w.is_empty() { "paced by vendor headers".to_owned() } else { w.join(" and ") },
            if self.shared { ", shared" } else { "" }
        )
    }
}

fn window_name(w: &Window) -> String {
    crate::config::units::format_duration(w.per)
}

/// An upstream's vendor-account quota: its own windows (may be none) plus pacing from the vendor's
/// rate-limit headers.
#[derive(Debug)]
pub struct Quota {
    /// The account limit (one bucket per credential).
    pub limit: Arc<LimitSpec>,
    /// Which rate-limit headers the vendor sends.
    pub dialect: Dialect,
    /// Stop sending while the vendor reports this many or fewer remaining.
    pub reserve: u64,
    /// Pause after a 429 without `Retry-After`, or "remaining 0" without a reset time.
    pub pause_without_reset: Duration,
    /// The longest pause a vendor can impose.
    pub max_pause: Duration,
}

/// One limit to pass for a request.
#[derive(Debug, Clone)]
pub struct Check {
    /// The limit.
    pub spec: Arc<LimitSpec>,
    /// What it is counted for: a caller id, a credential id, or empty for a route total.
    pub subject: Arc<str>,
    /// For a vendor account, the (upstream, credential) whose pause applies.
    pub account: Option<(Arc<str>, Arc<str>)>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedKind {
    /// A limit is exhausted (and does not queue, or not for that long).
    Limited,
    /// The limit queues, and its queue is full.
    QueueFull,
    /// The vendor account is paused on the vendor's own signal.
    VendorPaused,
    /// The shared store is unreachable and the limit fails closed.
    Unavailable,
}

/// A refusal, with the headers the 429 carries.
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub kind: RefusedKind,
    /// The limit that refused (`caller`, `route`, `account`) and its id.
    pub name: &'static str,
    /// The limit's id.
    pub limit: Arc<str>,
    /// The windows, as text (`4/1m and 500/1d`).
    pub windows: String,
    /// When to try again.
    pub retry_after: Duration,
    /// `RateLimit-Policy` and `RateLimit`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// What the vendor last said about one account.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AccountView {
    /// Credential id.
    pub credential: String,
    /// Last `limit` the vendor reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Last `remaining` the vendor reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// When the vendor said the quota resets (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<String>,
    /// Until when the gateway holds calls for this account (RFC 3339), if paused now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<String>,
    /// When the last signal was read (RFC 3339).
    pub observed: String,
    /// Pauses imposed so far.
    pub pauses: u64,
}

#[derive(Debug, Default)]
struct Entry {
    tats: Vec<u64>,
    queued: usize,
}

#[derive(Debug)]
struct Shard {
    map: HashMap<Key, Entry>,
    sweep_at: usize,
}

#[derive(Debug, Default)]
struct VendorState {
    pause_until: u64,
    pause_wall: Option<SystemTime>,
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<SystemTime>,
    observed: Option<SystemTime>,
    pauses: u64,
}

/// The process-wide limiter.
#[derive(Debug)]
pub struct Limiter {
    epoch: Instant,
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    vendors: Mutex<HashMap<Key, VendorState>>,
    /// The latest end of any vendor pause: while it is past, no account's pause needs looking up.
    latest_pause: std::sync::atomic::AtomicU64,
    shared: arc_swap::ArcSwapOption<shared::Shared>,
    metrics: Option<RateLimitMetrics>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Limiter {
    /// A limiter with no state; `metrics` (if any) receives decisions and vendor signals.
    pub fn new(metrics: Option<RateLimitMetrics>) -> Limiter {
        Limiter {
            epoch: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard { map: HashMap::new(), sweep_at: SWEEP_FLOOR })).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            vendors: Mutex::new(HashMap::new()),
            latest_pause: std::sync::atomic::AtomicU64::new(0),
            shared: arc_swap::ArcSwapOption::empty(),
            metrics,
        }
    }

    /// The shared store (`cluster.redis`), when configured.
    pub fn shared_store(&self) -> Option<Arc<shared::Shared>> {
        self.shared.load_full()
    }

    /// Uses (or stops using) a shared store. A store with unchanged settings is kept, so its
    /// connection survives reloads.
    pub fn set_shared(&self, settings: Option<&shared::Settings>) {
        let cur = self.shared.load();
        match (settings, cur.as_ref()) {
            (None, None) => {}
            (Some(s), Some(c)) if c.settings() == s => {}
            (None, Some(_)) => self.shared.store(None),
            (Some(s), _) => match shared::Shared::new(s.clone()) {
                Ok(sh) => self.shared.store(Some(Arc::new(sh))),
                Err(e) => {
                    tracing::error!(error = %e, "cluster.redis cannot be used; limits are counted locally");
                    self.shared.store(None);
                }
            },
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    fn shard(&self, key: &(Arc<str>, Arc<str>)) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Keys currently tracked (for tests and the admin API).
    pub fn tracked_keys(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Evicts every key whose windows are all full again and that has nobody waiting.
    pub fn sweep(&self) {
        let now = self.now();
        for s in &self.shards {
            lock(s).map.retain(|_, e| e.queued > 0 || !gcra::idle(&e.tats, now));
        }
    }

    fn pause_of(&self, account: &Option<(Arc<str>, Arc<str>)>, now: u64) -> u64 {
        match account {
            Some(k) if self.latest_pause.load(std::sync::atomic::Ordering::Relaxed) > now => {
                lock(&self.vendors).get(k).map_or(0, |v| v.pause_until).max(now)
            }
            _ => now,
        }
    }

    /// Passes every check, in order, or none: a refusal gives back what earlier checks reserved.
    /// An admitted request may have to wait ([`Admitted::wait`]) before it is sent.
    pub async fn acquire(self: &Arc<Self>, checks: &[Check]) -> Result<Admitted, Refused> {
        self.acquire_with(checks, false).await
    }

    /// Like [`Limiter::acquire`], but never queues: for a retry, which goes now or not at all.
    pub async fn acquire_now(self: &Arc<Self>, checks: &[Check]) -> Result<Admitted, Refused> {
        self.acquire_with(checks, true).await
    }

    async fn acquire_with(self: &Arc<Self>, checks: &[Check], no_wait: bool) -> Result<Admitted, Refused> {
        let now = self.now();
        let mut admitted = Admitted { limiter: self.clone(), go_at: now, now, holds: Vec::new(), states: Vec::new() };
        for check in checks {
            let spec = &check.spec;
            let pause = self.pause_of(&check.account, now);
            let (max_wait, max_queued) = match spec.on_exhausted {
                _ if no_wait => (0, 0),
                Exhausted::Reject => (0, 0),
                Exhausted::Queue { max_wait, max_queued } => (max_wait.as_nanos() as u64, max_queued),
            };
            let key = (spec.id.clone(), check.subject.clone());
            let shared = if spec.shared { self.shared.load_full() } else { None };
            let mut remote = None;
            if let Some(sh) = shared {
                if sh.up() {
                    let pause_wall = (pause > now).then(|| SystemTime::now() + Duration::from_nanos(pause - now));
                    match sh.reserve(&key, &spec.cells_us, pause_wall, max_wait / 1000).await {
                        Ok(r) => remote = Some(r),
                        Err(e) => sh.mark_down(&e),
                    }
                }
                if remote.is_none() {
                    // Unreachable (now or recently): fail open to the local count, or closed.
                    let fail_open = sh.settings().fail_open;
                    self.count_backend_error(fail_open);
                    if !fail_open {
                        self.decided(spec, "unavailable");
                        return Err(self.refuse(spec, RefusedKind::Unavailable, Duration::from_secs(1), None));
                    }
                }
            }
            let mut shard = lock(self.shard(&key));
            if shard.map.len() >= shard.sweep_at {
                shard.map.retain(|_, e| e.queued > 0 || !gcra::idle(&e.tats, now));
                shard.sweep_at = (shard.map.len() * 2).max(SWEEP_FLOOR);
            }
            let entry = shard.map.entry(key.clone()).or_default();
            let (verdict, tats, reserved) = match &remote {
                Some(r) => {
                    let at = now + r.wait_us.saturating_mul(1000);
                    // The store's clock: only the time owed per window matters for the headers.
                    let owed: Vec<u64> =
                        r.tats.iter().map(|t| now + t.saturating_sub(r.now_us).saturating_mul(1000)).collect();
                    let tats = Tats::of(&owed);
                    (if r.admitted { Verdict::Admit { at } } else { Verdict::Refuse { at } }, tats, None)
                }
                None => {
                    let v = gcra::reserve(&spec.cells, &mut entry.tats, now, pause, max_wait);
                    let tats = Tats::of(&entry.tats);
                    let reserved = matches!(v, Verdict::Admit { .. }).then_some(tats);
                    (v, tats, reserved)
                }
            };
            match verdict {
                Verdict::Admit { at } => {
                    let queued = at > now;
                    if queued && entry.queued >= max_queued {
                        if let Some(r) = &reserved {
                            gcra::release(&spec.cells, &mut entry.tats, r.get());
                        }
                        drop(shard);
                        self.decided(spec, "rejected");
                        return Err(self.refuse(
                            spec,
                            RefusedKind::QueueFull,
                            Duration::from_nanos(at - now),
                            Some(tats),
                        ));
                    }
                    if queued {
                        entry.queued += 1;
                    }
                    drop(shard);
                    admitted.holds.push(Hold { spec: spec.clone(), key, reserved, queued });
                    admitted.states.push((spec.clone(), tats, now));
                    self.decided(spec, if queued { "queued" } else { "admitted" });
                    admitted.go_at = admitted.go_at.max(at);
                }
                Verdict::Refuse { at } => {
                    drop(shard);
                    self.decided(spec, "rejected");
                    let paused = remote.as_ref().map_or(pause > now && at == pause, |r| r.paused);
                    let kind = if paused { RefusedKind::VendorPaused } else { RefusedKind::Limited };
                    return Err(self.refuse(spec, kind, Duration::from_nanos(at - now), Some(tats)));
                }
            }
        }
        Ok(admitted)
    }

    fn decided(&self, spec: &LimitSpec, outcome: &'static str) {
        let Some(m) = &self.metrics else { return };
        let counters = spec.counters.get_or_init(|| {
            ["admitted", "queued", "rejected", "unavailable"].map(|o| {
                m.decisions
                    .get_or_create(&crate::telemetry::metrics::DecisionLabels {
                        limit: spec.label.clone(),
                        outcome: m.labels.outcome(o),
                    })
                    .clone()
            })
        });
        let i = match outcome {
            "admitted" => 0,
            "queued" => 1,
            "rejected" => 2,
            _ => 3,
        };
        counters[i].inc();
    }

    fn count_backend_error(&self, fail_open: bool) {
        if let Some(m) = &self.metrics {
            m.backend_errors
                .get_or_create(&crate::telemetry::metrics::FallbackLabels {
                    fallback: m.labels.outcome(if fail_open { "local" } else { "reject" }),
                })
                .inc();
        }
    }

    fn refuse(&self, spec: &LimitSpec, kind: RefusedKind, wait: Duration, tats: Option<Tats>) -> Refused {
        let mut headers = Vec::new();
        if let Some(p) = &spec.policy {
            headers.push((RATELIMIT_POLICY, p.clone()));
            let tats = tats.unwrap_or_default();
            if let Ok(v) = HeaderValue::from_str(&ratelimit_value(spec, tats.get(), self.now(), Some(wait))) {
                headers.push((RATELIMIT, v));
            }
        }
        Refused {
            kind,
            name: spec.name,
            limit: spec.id.clone(),
            windows: spec.windows.iter().map(Window::text).collect::<Vec<_>>().join(" and "),
            retry_after: wait,
            headers,
        }
    }

    /// Reads a vendor response's rate-limit signals for the account (upstream, credential) and
    /// pauses the account when the vendor says so. Cheap when the response carries no signal.
    pub fn observe(
        &self,
        quota: &Quota,
        upstream: &Arc<str>,
        credential: &Arc<str>,
        status: StatusCode,
        h: &HeaderMap,
    ) {
        if !vendor::signals(quota.dialect, status, h) {
            return; // the common case: nothing to read, not even the clock
        }
        let wall = SystemTime::now();
        let s = vendor::read(quota.dialect, status, h, wall);
        if s.is_empty() {
            return;
        }
        let until = vendor::pause_until(&s, quota.reserve, quota.pause_without_reset, quota.max_pause, wall);
        let now = self.now();
        let mut paused = false;
        {
            let mut vendors = lock(&self.vendors);
            let v = vendors.entry((upstream.clone(), credential.clone())).or_default();
            v.observed = Some(wall);
            if s.limit.is_some() {
                v.limit = s.limit;
            }
            if s.remaining.is_some() {
                v.remaining = s.remaining;
                v.reset = s.reset;
            }
            if let Some(until) = until {
                let d = until.duration_since(wall).unwrap_or_default();
                let at = now + d.as_nanos() as u64;
                if at > v.pause_until {
                    self.latest_pause.fetch_max(at, std::sync::atomic::Ordering::Relaxed);
                    paused = v.pause_until <= now;
                    v.pause_until = at;
                    v.pause_wall = Some(until);
                    if paused {
                        v.pauses += 1;
                    }
                }
            }
        }
        if let Some(m) = &self.metrics {
            let labels = crate::telemetry::metrics::AccountLabels {
                upstream: Label(upstream.clone()),
                credential: Label(credential.clone()),
            };
            if let Some(r) = s.remaining {
                m.vendor_remaining.get_or_create(&labels).set(r.min(i64::MAX as u64) as i64);
            }
            if paused {
                m.vendor_pauses.get_or_create(&labels).inc();
            }
        }
        if paused {
            tracing::info!(upstream = %upstream, credential = %credential, until = %crate::telemetry::record::rfc3339(until.unwrap_or(wall)), throttled = s.throttled, "vendor account paused on the vendor's rate-limit signal");
        }
        if let (Some(until), true) = (until, quota.limit.shared) {
            if let Some(sh) = self.shared.load_full().filter(|sh| sh.up()) {
                let key = (quota.limit.id.clone(), credential.clone());
                tokio::spawn(async move {
                    if let Err(e) = sh.pause(&key, until).await {
                        sh.mark_down(&e);
                    }
                });
            }
        }
    }

    /// What the vendor last said about each account of `upstream`.
    pub fn accounts(&self, upstream: &str) -> Vec<AccountView> {
        let now = self.now();
        let vendors = lock(&self.vendors);
        let mut out: Vec<AccountView> = vendors
            .iter()
            .filter(|((u, _), _)| &**u == upstream)
            .map(|((_, c), v)| AccountView {
                credential: c.to_string(),
                limit: v.limit,
                remaining: v.remaining,
                reset: v.reset.map(crate::telemetry::record::rfc3339),
                paused_until: (v.pause_until > now)
                    .then_some(v.pause_wall)
                    .flatten()
                    .map(crate::telemetry::record::rfc3339),
                observed: v.observed.map(crate::telemetry::record::rfc3339).unwrap_or_default(),
                pauses: v.pauses,
            })
            .collect();
        out.sort_by(|a, b| a.credential.cmp(&b.credential));
        out
    }
}

/// `"caller-1m";r=3;t=45, ...` for one limit's state at `now` (`wait`: a refusal's retry time).
fn ratelimit_value(spec: &LimitSpec, tats: &[u64], now: u64, wait: Option<Duration>) -> String {
    let mut out = String::with_capacity(spec.items.len() * 32);
    for (i, (item, cell)) in spec.items.iter().zip(&spec.cells).enumerate() {
        let tat = tats.get(i).copied().unwrap_or(0);
        let (left, owed) = gcra::remaining(*cell, tat, now);
        let mut t = owed.div_ceil(1_000_000_000);
        if left == 0 {
            if let Some(w) = wait {
                t = t.max(w.as_secs() + u64::from(w.subsec_nanos() > 0));
            }
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "\"{item}\";r={left};t={t}");
    }
    out
}

#[derive(Debug)]
struct Hold {
    spec: Arc<LimitSpec>,
    key: (Arc<str>, Arc<str>),
    /// The windows' state right after our reservation (local store only), to give it back.
    reserved: Option<Tats>,
    queued: bool,
}

/// Permission to send, possibly after a wait. Dropped before [`Admitted::wait`] completes (the
/// client went away), it gives back its reservations where no later request depends on them.
#[derive(Debug)]
pub struct Admitted {
    limiter: Arc<Limiter>,
    go_at: u64,
    now: u64,
    holds: Vec<Hold>,
    states: Vec<(Arc<LimitSpec>, Tats, u64)>,
}

impl Admitted {
    /// How long the request waits before it may be sent.
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.go_at - self.now)
    }

    /// Waits until the request may be sent; then the reservation is spent.
    pub async fn wait(mut self) -> Admitted {
        let d = self.delay();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
            if let Some(m) = &self.limiter.metrics {
                m.queue_wait.observe(d.as_secs_f64());
            }
        }
        self.spend();
        self
    }

    fn spend(&mut self) {
        for h in self.holds.drain(..) {
            if h.queued {
                let mut shard = lock(self.limiter.shard(&h.key));
                if let Some(e) = shard.map.get_mut(&h.key) {
                    e.queued = e.queued.saturating_sub(1);
                }
            }
        }
    }

    /// True when a limit passed has windows (so the `RateLimit*` headers say something).
    pub fn has_policy(&self) -> bool {
        self.states.iter().any(|(s, _, _)| s.policy.is_some())
    }

    /// Adds `RateLimit-Policy` and `RateLimit` for the limits passed.
    pub fn add_headers(&self, h: &mut HeaderMap) {
        for (spec, tats, at) in &self.states {
            if let Some(p) = &spec.policy {
                h.append(RATELIMIT_POLICY, p.clone());
                if let Ok(v) = HeaderValue::from_str(&ratelimit_value(spec, tats.get(), *at, None)) {
                    h.append(RATELIMIT, v);
                }
            }
        }
    }

    /// The fewest requests left in any window passed (for the trace attribute).
    pub fn remaining(&self) -> Option<u64> {
        self.states
            .iter()
            .flat_map(|(spec, tats, at)| {
                spec.cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| gcra::remaining(*c, tats.get().get(i).copied().unwrap_or(0), *at).0)
            })
            .min()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        for h in self.holds.drain(..).rev() {
            let mut shard = lock(self.limiter.shard(&h.key));
            if let Some(e) = shard.map.get_mut(&h.key) {
                if h.queued {
                    e.queued = e.queued.saturating_sub(1);
                }
                if let Some(reserved) = &h.reserved {
                    gcra::release(&h.spec.cells, &mut e.tats, reserved.get());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(windows: &[(u64, u64)], on: Exhausted) -> Arc<LimitSpec> {
        let w = windows
            .iter()
            .map(|&(limit, secs)| Window { limit, per: Duration::from_secs(secs), burst: limit })
            .collect();
        Arc::new(LimitSpec::new("route:t:caller", "caller", Scope::Caller, w, on, false))
    }

    fn check(spec: &Arc<LimitSpec>, subject: &str) -> Check {
        Check { spec: spec.clone(), subject: subject.into(), account: None }
    }

    #[tokio::test]
    async fn callers_are_isolated_and_refusals_carry_headers() {
        let l = Arc::new(Limiter::new(None));
        let s = spec(&[(2, 60)], Exhausted::Reject);
        for _ in 0..2 {
            let a = l.acquire(&[check(&s, "noisy")]).await.unwrap();
            assert!(a.delay().is_zero());
            a.wait().await;
        }
        let r = l.acquire(&[check(&s, "noisy")]).await.unwrap_err();
        assert_eq!(r.kind, RefusedKind::Limited);
        assert!(
            r.retry_after > Duration::from_secs(29) && r.retry_after <= Duration::from_secs(30),
            "{:?}",
            r.retry_after
        );
        let h: HashMap<_, _> = r.headers.iter().cloned().collect();
        assert_eq!(h[&RATELIMIT_POLICY], "\"caller-1m\";q=2;w=60");
        assert_eq!(h[&RATELIMIT], "\"caller-1m\";r=0;t=60");
        let quiet = l.acquire(&[check(&s, "quiet")]).await.unwrap();
        let mut hm = HeaderMap::new();
        quiet.add_headers(&mut hm);
        assert_eq!(hm[&RATELIMIT], "\"caller-1m\";r=1;t=30");
    }

    #[tokio::test]
    async fn a_later_refusal_gives_back_earlier_reservations() {
        let l = Arc::new(Limiter::new(None));
        let caller = spec(&[(10, 60)], Exhausted::Reject);
        let route = Arc::new(LimitSpec::new(
            "route:t:total",
            "route",
            Scope::Route,
            vec![Window { limit: 1, per: Duration::from_secs(60), burst: 1 }],
            Exhausted::Reject,
            false,
        ));
        let checks = [check(&caller, "a"), Check { spec: route.clone(), subject: "".into(), account: None }];
        l.acquire(&checks).await.unwrap().wait().await;
        for _ in 0..5 {
            assert_eq!(l.acquire(&checks).await.unwrap_err().name, "route");
        }
        // Only the one admitted request counted against the caller.
        let a = l.acquire(&[check(&caller, "a")]).await.unwrap();
        assert_eq!(a.remaining(), Some(8));
    }

    #[tokio::test(start_paused = true)]
    async fn queued_requests_wait_in_order_and_the_queue_is_bounded() {
        let l = Arc::new(Limiter::new(None));
        let s = spec(&[(1, 1)], Exhausted::Queue { max_wait: Duration::from_secs(3), max_queued: 2 });
        let first = l.acquire(&[check(&s, "k")]).await.unwrap();
        assert!(first.delay().is_zero());
        let second = l.acquire(&[check(&s, "k")]).await.unwrap();
        let third = l.acquire(&[check(&s, "k")]).await.unwrap();
        assert!(second.delay() > Duration::from_millis(900) && third.delay() > second.delay());
        let full = l.acquire(&[check(&s, "k")]).await.unwrap_err();
        assert_eq!(full.kind, RefusedKind::QueueFull);
        // The newest waiter leaves: its place is given back to the next one.
        let third_delay = third.delay();
        drop(third);
        let again = l.acquire(&[check(&s, "k")]).await.unwrap();
        assert!(again.delay() <= third_delay);
        drop(again);
        second.wait().await;
        first.wait().await;
    }

    #[tokio::test]
    async fn idle_keys_are_evicted() {
        let l = Arc::new(Limiter::new(None));
        let s = spec(&[(1000, 1)], Exhausted::Reject);
        for i in 0..5000 {
            l.acquire(&[check(&s, &format!("caller-{i}"))]).await.unwrap().wait().await;
        }
        assert!(l.tracked_keys() <= 5000);
        std::thread::sleep(Duration::from_millis(5));
        l.sweep();
        assert_eq!(l.tracked_keys(), 0);
    }

    #[tokio::test]
    async fn a_vendor_signal_pauses_the_account_for_every_caller() {
        let l = Arc::new(Limiter::new(None));
        let q = Quota {
            limit: Arc::new(LimitSpec::new("upstream:v", "account", Scope::Account, vec![], Exhausted::Reject, false)),
            dialect: Dialect::XRateLimit,
            reserve: 0,
            pause_without_reset: Duration::from_secs(1),
            max_pause: Duration::from_secs(300),
        };
        let (u, c): (Arc<str>, Arc<str>) = ("v".into(), "main".into());
        let ck = Check { spec: q.limit.clone(), subject: c.clone(), account: Some((u.clone(), c.clone())) };
        l.acquire(std::slice::from_ref(&ck)).await.unwrap().wait().await;
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset", HeaderValue::from_static("20"));
        l.observe(&q, &u, &c, StatusCode::OK, &h);
        let r = l.acquire(std::slice::from_ref(&ck)).await.unwrap_err();
        assert_eq!(r.kind, RefusedKind::VendorPaused);
        assert!(r.retry_after > Duration::from_secs(19), "{:?}", r.retry_after);
        let view = l.accounts("v");
        assert_eq!(view[0].remaining, Some(0));
        assert!(view[0].paused_until.is_some());
        assert_eq!(view[0].pauses, 1);
    }
}
