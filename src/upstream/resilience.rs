//! Retries with budgets, circuit breaking per endpoint, power-of-two-choices balancing, active health
//! checks and load shedding. The proxy drives the retry loop (`proxy::send_with_retries`); this
//! module holds the policies and the per-endpoint state they read and write.
//!
//! Endpoint state (in-flight count, latency EWMA, circuit, health) lives in `Arc`s carried from one
//! [`super::UpstreamClient`] to the next across reloads, keyed by endpoint URL, like connection pools.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::telemetry::metrics::{EndpointLabels, Label, UpstreamMetrics};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// When and how a failed attempt is tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = no retries).
    pub attempts: u32,
    /// Retry when no connection could be made (nothing was sent: safe for every method).
    pub on_connect: bool,
    /// Retry when the connection broke before a response head (idempotent calls only).
    pub on_reset: bool,
    /// Retry when an attempt passed `per_try_timeout` (idempotent calls only).
    pub on_timeout: bool,
    /// Retry on these vendor statuses (idempotent calls only).
    pub statuses: Vec<u16>,
    /// First back-off cap; doubles per retry.
    pub backoff_base: Duration,
    /// Largest back-off.
    pub backoff_max: Duration,
    /// Deadline of one attempt (within the route's overall timeout).
    pub per_try_timeout: Option<Duration>,
    /// A 429/503 whose `Retry-After` is longer is not retried (the answer goes to the caller).
    pub max_retry_after: Duration,
    /// Request bodies up to this size are kept to be sent again; larger ones are never retried.
    pub replay_body: u64,
    /// Retry non-idempotent methods too, when the request carries an `Idempotency-Key`.
    pub non_idempotent: bool,
}

impl RetryPolicy {
    /// The back-off before retry number `n` (1-based): full jitter over `min(max, base * 2^(n-1))`.
    pub fn backoff(&self, n: u32) -> Duration {
        let cap = self.backoff_base.saturating_mul(1u32 << (n.saturating_sub(1)).min(20)).min(self.backoff_max);
        let nanos = cap.as_nanos().min(u128::from(u64::MAX)) as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { fastrand::u64(0..=nanos) })
    }

    /// Whether `method` may be retried after bytes were sent.
    pub fn may_resend(&self, method: &http::Method, headers: &http::HeaderMap) -> bool {
        use http::Method as M;
        matches!(*method, M::GET | M::HEAD | M::OPTIONS | M::PUT | M::DELETE | M::TRACE)
            || (self.non_idempotent && headers.contains_key("idempotency-key"))
    }

    /// Describes the policy for `/config` and `explain`.
    pub fn describe(&self) -> String {
        let mut on: Vec<String> = Vec::new();
        if self.on_connect {
            on.push("connect".into());
        }
        if self.on_reset {
            on.push("reset".into());
        }
        if self.on_timeout {
            on.push("timeout".into());
        }
        on.extend(self.statuses.iter().map(u16::to_string));
        format!("{} attempts on {}", self.attempts, on.join(", "))
    }
}

/// A retry budget: retries may be at most `ratio` of requests plus `min_per_second`, over `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetSettings {
    /// Retries per request.
    pub ratio: f64,
    /// Retries per second always allowed.
    pub min_per_second: f64,
    /// The window requests and retries are counted over.
    pub window: Duration,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings { ratio: 0.2, min_per_second: 10.0, window: Duration::from_secs(10) }
    }
}

/// Requests and retries per second over a sliding window of whole seconds.
#[derive(Debug)]
pub struct Budget {
    settings: BudgetSettings,
    epoch: Instant,
    slots: Mutex<Vec<(u64, u64, u64)>>, // (second, requests, retries)
}

impl Budget {
    /// An empty budget.
    pub fn new(settings: BudgetSettings) -> Budget {
        let n = settings.window.as_secs().max(1) as usize;
        Budget { settings, epoch: Instant::now(), slots: Mutex::new(vec![(u64::MAX, 0, 0); n]) }
    }

    fn with_slot<R>(&self, f: impl FnOnce(&mut Vec<(u64, u64, u64)>, usize) -> R) -> R {
        let sec = self.epoch.elapsed().as_secs();
        let mut slots = lock(&self.slots);
        let n = slots.len();
        let i = (sec as usize) % n;
        if slots[i].0 != sec {
            slots[i] = (sec, 0, 0);
        }
        // Slots older than the window no longer count.
        for s in slots.iter_mut() {
            if s.0 != u64::MAX && sec.saturating_sub(s.0) >= n as u64 {
                *s = (u64::MAX, 0, 0);
            }
        }
        f(&mut slots, i)
    }

    /// Counts a request.
    pub fn request(&self) {
        self.with_slot(|s, i| s[i].1 += 1);
    }

    /// Takes one retry from the budget, if there is one left.
    pub fn try_retry(&self) -> bool {
        let w = self.settings.window.as_secs().max(1) as f64;
        let (ratio, floor) = (self.settings.ratio, self.settings.min_per_second * w);
        self.with_slot(|s, i| {
            let (req, ret) = s.iter().fold((0u64, 0u64), |a, x| (a.0 + x.1, a.1 + x.2));
            if (ret + 1) as f64 <= floor + ratio * req as f64 {
                s[i].2 += 1;
                true
            } else {
                false
            }
        })
    }

    /// The settings.
    pub fn settings(&self) -> BudgetSettings {
        self.settings
    }
}

/// When an endpoint's circuit opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSettings {
    /// Consecutive failures (5xx, connect errors, timeouts) that open the circuit.
    pub consecutive_failures: u32,
    /// First ejection time; doubles with each ejection in a row.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
}

/// Active health checking of each endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path (after the endpoint's base path) to GET.
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
    /// Deadline of one check.
    pub timeout: Duration,
    /// Consecutive passes that make an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

/// A circuit's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Traffic flows.
    Closed,
    /// Ejected: no traffic until the ejection ends.
    Open,
    /// The ejection ended: one probe request decides.
    HalfOpen,
}

#[derive(Debug)]
struct Circuit {
    state: CircuitState,
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
    ejections: u32,
    closed_at: Instant,
}

/// Live state of one endpoint.
#[derive(Debug)]
pub struct EndpointState {
    /// `scheme://authority/base` (also the metric label).
    pub url: String,
    label: Label,
    in_flight: AtomicUsize,
    ewma_us: AtomicU64,
    ewma_at_ms: AtomicU64,
    healthy: AtomicBool,
    checks: Mutex<(u32, u32)>, // consecutive (passes, failures)
    circuit: Mutex<Circuit>,
}

/// Can an endpoint take a request now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Yes.
    Ready,
    /// As the one half-open probe.
    Probe,
    /// No: ejected until then.
    Ejected(Instant),
    /// No: failing its health checks.
    Unhealthy,
}

impl EndpointState {
    /// A fresh endpoint: healthy, circuit closed.
    pub fn new(url: String) -> EndpointState {
        EndpointState {
            label: Label(url.as_str().into()),
            url,
            in_flight: AtomicUsize::new(0),
            ewma_us: AtomicU64::new(0),
            ewma_at_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            checks: Mutex::new((0, 0)),
            circuit: Mutex::new(Circuit {
                state: CircuitState::Closed,
                failures: 0,
                open_until: None,
                probing: false,
                ejections: 0,
                closed_at: Instant::now(),
            }),
        }
    }

    /// Requests in flight to this endpoint.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Latency EWMA (response head), microseconds.
    pub fn ewma_us(&self) -> u64 {
        self.ewma_us.load(Ordering::Relaxed)
    }

    /// The balancing cost: latency EWMA times (in flight + 1), like linkerd's peak-EWMA balancer.
    /// The EWMA halves every 10 s without a new sample, so an endpoint that was slow is tried
    /// again eventually instead of being starved forever.
    pub fn cost(&self) -> u128 {
        let age = clock_ms().saturating_sub(self.ewma_at_ms.load(Ordering::Relaxed));
        let ewma = self.ewma_us() >> (age / 10_000).min(63);
        u128::from(ewma.max(1)) * (self.in_flight() as u128 + 1)
    }

    /// Whether the health checks pass (true without health checks).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether it can take a request at `now`.
    pub fn availability(&self, now: Instant) -> Availability {
        if !self.healthy() {
            return Availability::Unhealthy;
        }
        let c = lock(&self.circuit);
        match c.state {
            CircuitState::Closed => Availability::Ready,
            CircuitState::Open => match c.open_until {
                Some(t) if t > now => Availability::Ejected(t),
                _ => Availability::Probe,
            },
            CircuitState::HalfOpen if c.probing => Availability::Ejected(now + Duration::from_secs(1)),
            CircuitState::HalfOpen => Availability::Probe,
        }
    }

    /// Claims the probe slot (half-open); false if another request took it first.
    fn claim_probe(&self, now: Instant) -> bool {
        let mut c = lock(&self.circuit);
        let expired = c.open_until.is_none_or(|t| t <= now);
        if (c.state == CircuitState::Open && expired) || (c.state == CircuitState::HalfOpen && !c.probing) {
            c.state = CircuitState::HalfOpen;
            c.probing = true;
            true
        } else {
            false
        }
    }

    /// Records an attempt's outcome: `ok` is false for a 5xx, a connect error or a timeout.
    pub fn record(
        &self,
        ok: bool,
        latency: Option<Duration>,
        settings: Option<&CircuitSettings>,
        m: Option<&UpstreamMetrics>,
        upstream: &Label,
    ) {
        if let (true, Some(l)) = (ok, latency) {
            let sample = l.as_micros().min(u128::from(u64::MAX)) as u64;
            let old = self.ewma_us.load(Ordering::Relaxed);
            let new = if old == 0 { sample } else { (old * 7 + sample * 3) / 10 };
            self.ewma_us.store(new, Ordering::Relaxed);
            self.ewma_at_ms.store(clock_ms(), Ordering::Relaxed);
        }
        let Some(s) = settings else { return };
        let now = Instant::now();
        let mut c = lock(&self.circuit);
        let before = c.state;
        if ok {
            c.failures = 0;
            if c.state != CircuitState::Closed {
                c.state = CircuitState::Closed;
                c.probing = false;
                c.open_until = None;
                c.closed_at = now;
            }
        } else {
            c.failures += 1;
            let reopen = c.state == CircuitState::HalfOpen;
            if reopen || (c.state == CircuitState::Closed && c.failures >= s.consecutive_failures) {
                if c.state == CircuitState::Closed && now.duration_since(c.closed_at) > s.max_ejection {
                    c.ejections = 0; // a long healthy spell forgives earlier ejections
                }
                let factor = 1u32 << c.ejections.min(16);
                let d = s.base_ejection.saturating_mul(factor).min(s.max_ejection);
                c.ejections += 1;
                c.state = CircuitState::Open;
                c.open_until = Some(now + d);
                c.probing = false;
                tracing::warn!(upstream = %upstream.0, endpoint = %self.url, ejected_for = ?d, failures = c.failures, "circuit opened: endpoint ejected");
                if let Some(m) = m {
                    m.ejections.get_or_create(&self.labels(upstream)).inc();
                }
            }
        }
        if c.state != before {
            if let Some(m) = m {
                m.circuit_state.get_or_create(&self.labels(upstream)).set(state_code(c.state));
            }
        }
    }

    fn labels(&self, upstream: &Label) -> EndpointLabels {
        EndpointLabels { upstream: upstream.clone(), endpoint: self.label.clone() }
    }

    /// Records one health-check result; returns the new health when it changed.
    pub fn record_check(&self, pass: bool, hc: &HealthCheck) -> Option<bool> {
        let mut k = lock(&self.checks);
        if pass {
            k.0 += 1;
            k.1 = 0;
        } else {
            k.1 += 1;
            k.0 = 0;
        }
        let healthy = self.healthy();
        if healthy && k.1 >= hc.unhealthy_threshold {
            self.healthy.store(false, Ordering::Relaxed);
            Some(false)
        } else if !healthy && k.0 >= hc.healthy_threshold {
            self.healthy.store(true, Ordering::Relaxed);
            Some(true)
        } else {
            None
        }
    }

    /// The admin view.
    pub fn view(&self) -> serde_json::Value {
        let now = Instant::now();
        let c = lock(&self.circuit);
        serde_json::json!({
            "url": self.url,
            "healthy": self.healthy(),
            "in_flight": self.in_flight(),
            "latency_ewma_ms": self.ewma_us() as f64 / 1000.0,
            "circuit": {
                "state": c.state,
                "consecutive_failures": c.failures,
                "ejections": c.ejections,
                "open_for_ms": c.open_until.filter(|t| *t > now).map(|t| (t - now).as_millis() as u64),
            },
        })
    }
}

fn clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let e = EPOCH.get_or_init(Instant::now);
    e.elapsed().as_millis() as u64
}

fn state_code(s: CircuitState) -> i64 {
    match s {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
    }
}

/// Why no endpoint could take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickError {
    /// Every endpoint is ejected; the first comes back after this long.
    CircuitOpen(Duration),
    /// Every endpoint fails its health checks.
    NoHealthy,
    /// The upstream's `max_concurrent` is reached.
    Overloaded,
}

/// One request in flight to an endpoint: dropped when the response body ends (or the attempt fails).
#[derive(Debug)]
pub struct InFlight {
    ep: Arc<EndpointState>,
    total: Arc<AtomicUsize>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.ep.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Chooses an endpoint: power of two choices among those available, the lower cost (latency EWMA
/// times requests in flight) wins. `avoid` (the endpoint that just failed) is skipped when there is another.
pub fn pick(
    states: &[Arc<EndpointState>],
    total: &Arc<AtomicUsize>,
    max_concurrent: Option<usize>,
    avoid: Option<usize>,
) -> Result<(usize, InFlight), PickError> {
    if let Some(max) = max_concurrent {
        if total.load(Ordering::Relaxed) >= max {
            return Err(PickError::Overloaded);
        }
    }
    let now = Instant::now();
    let mut ready: Vec<(usize, Availability)> = Vec::with_capacity(states.len());
    let mut soonest: Option<Instant> = None;
    let mut ejected = false;
    for (i, s) in states.iter().enumerate() {
        match s.availability(now) {
            a @ (Availability::Ready | Availability::Probe) => ready.push((i, a)),
            Availability::Ejected(t) => {
                ejected = true;
                soonest = Some(soonest.map_or(t, |s: Instant| s.min(t)));
            }
            Availability::Unhealthy => {}
        }
    }
    if ready.len() > 1 {
        if let Some(a) = avoid {
            ready.retain(|(i, _)| *i != a);
        }
    }
    // Probes first: a half-open endpoint gets its one probe as soon as it is due.
    let choice =
        if let Some(&(i, _)) = ready.iter().find(|(i, a)| *a == Availability::Probe && states[*i].claim_probe(now)) {
            Some(i)
        } else {
            let closed: Vec<usize> = ready.iter().filter(|(_, a)| *a == Availability::Ready).map(|(i, _)| *i).collect();
            match closed.len() {
                0 => None,
                1 => Some(closed[0]),
                n => {
                    let a = fastrand::usize(0..n);
                    let mut b = fastrand::usize(0..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    let (x, y) = (&states[closed[a]], &states[closed[b]]);
                    let better = match x.cost().cmp(&y.cost()) {
                        std::cmp::Ordering::Less => a,
                        std::cmp::Ordering::Greater => b,
                        std::cmp::Ordering::Equal if x.in_flight() <= y.in_flight() => a,
                        std::cmp::Ordering::Equal => b,
                    };
                    Some(closed[better])
                }
            }
        };
    let Some(i) = choice else {
        return Err(if ejected {
            PickError::CircuitOpen(soonest.map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now)))
        } else {
            PickError::NoHealthy
        });
    };
    states[i].in_flight.fetch_add(1, Ordering::Relaxed);
    total.fetch_add(1, Ordering::Relaxed);
    Ok((i, InFlight { ep: states[i].clone(), total: total.clone() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            on_connect: true,
            on_reset: true,
            on_timeout: true,
            statuses: vec![503],
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(35),
            per_try_timeout: None,
            max_retry_after: Duration::from_secs(1),
            replay_body: 1024,
            non_idempotent: false,
        }
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_cap() {
        let p = policy();
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(10));
            assert!(p.backoff(2) <= Duration::from_millis(20));
            assert!(p.backoff(5) <= Duration::from_millis(35));
        }
        let m = http::HeaderMap::new();
        assert!(p.may_resend(&http::Method::GET, &m) && !p.may_resend(&http::Method::POST, &m));
    }

    #[test]
    fn the_budget_allows_the_floor_plus_a_ratio_of_requests() {
        let b = Budget::new(BudgetSettings { ratio: 0.5, min_per_second: 0.2, window: Duration::from_secs(10) });
        // Floor: 0.2/s over 10 s = 2 retries with no requests at all.
        assert!(b.try_retry() && b.try_retry() && !b.try_retry());
        for _ in 0..10 {
            b.request();
        }
        // 2 + 0.5 * 10 = 7 in total.
        let more = (0..10).filter(|_| b.try_retry()).count();
        assert_eq!(more, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn circuits_open_half_open_and_close() {
        let s = CircuitSettings {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(60),
        };
        let states = vec![Arc::new(EndpointState::new("a".into()))];
        let total = Arc::new(AtomicUsize::new(0));
        let up = Label("u".into());
        for _ in 0..3 {
            let (i, g) = pick(&states, &total, None, None).unwrap();
            states[i].record(false, None, Some(&s), None, &up);
            drop(g);
        }
        assert!(
            matches!(pick(&states, &total, None, None), Err(PickError::CircuitOpen(d)) if d > Duration::from_secs(9))
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        let (i, probe) = pick(&states, &total, None, None).unwrap();
        // While the probe is out, nothing else goes.
        assert!(matches!(pick(&states, &total, None, None), Err(PickError::CircuitOpen(_))));
        // The probe fails: ejected again, for twice as long.
        states[i].record(false, None, Some(&s), None, &up);
        drop(probe);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(pick(&states, &total, None, None).is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        let (i, probe) = pick(&states, &total, None, None).unwrap();
        states[i].record(true, Some(Duration::from_millis(5)), Some(&s), None, &up);
        drop(probe);
        assert_eq!(states[0].availability(Instant::now()), Availability::Ready);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn two_choices_prefer_the_less_loaded_and_skip_unhealthy() {
        let states: Vec<_> = (0..2).map(|i| Arc::new(EndpointState::new(format!("e{i}")))).collect();
        let total = Arc::new(AtomicUsize::new(0));
        let (first, _g) = pick(&states, &total, None, None).unwrap();
        for _ in 0..20 {
            let (i, g) = pick(&states, &total, None, None).unwrap();
            assert_ne!(i, first, "the busy endpoint loses");
            drop(g);
        }
        let hc = HealthCheck {
            path: "/h".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 2,
        };
        let other = 1 - first;
        assert_eq!(states[other].record_check(false, &hc), None);
        assert_eq!(states[other].record_check(false, &hc), Some(false));
        for _ in 0..20 {
            assert_eq!(pick(&states, &total, None, None).unwrap().0, first);
        }
        assert!(matches!(pick(&states, &total, Some(1), None), Err(PickError::Overloaded)));
    }
}
#[cfg(test)]
mod cost_tests {
    use super::*;

    #[test]
    fn lower_cost_wins_under_concurrency() {
        let states: Vec<_> = (0..2).map(|i| Arc::new(EndpointState::new(format!("e{i}")))).collect();
        let total = Arc::new(AtomicUsize::new(0));
        let up = Label("u".into());
        states[0].record(true, Some(Duration::from_millis(2)), None, None, &up);
        states[1].record(true, Some(Duration::from_millis(150)), None, None, &up);
        let mut guards = Vec::new();
        for _ in 0..10 {
            let (i, g) = pick(&states, &total, None, None).unwrap();
            assert_eq!(i, 0);
            guards.push(g);
        }
    }
}
