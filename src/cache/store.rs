//! The response store (moka, weighed in bytes against a global budget, each entry expiring at its
//! own lifetime plus its stale window) and the coalescing of concurrent misses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::GatewayError;

/// A stored response.
#[derive(Debug)]
pub struct Entry {
    /// The route it was stored for (for purges by route).
    pub route: Arc<str>,
    /// The upstream it came from (for the quota-saved metric).
    pub upstream: Arc<str>,
    /// Status.
    pub status: StatusCode,
    /// Headers as the caller got them.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// When it was stored.
    pub stored: Instant,
    /// How long it is fresh.
    pub fresh_for: Duration,
    /// How long after that it may answer when the vendor fails.
    pub stale_for: Duration,
}

impl Entry {
    /// Bytes it occupies, approximately (body, headers, bookkeeping).
    pub fn weight(&self) -> u32 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum();
        u32::try_from(self.body.len() + headers + 256).unwrap_or(u32::MAX)
    }

    /// Seconds since it was stored (the `Age` header).
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored)
    }

    /// Whether it may answer without asking the vendor.
    pub fn fresh(&self, now: Instant) -> bool {
        self.age(now) < self.fresh_for
    }

    /// Whether it may answer in place of a failed vendor call.
    pub fn usable_stale(&self, now: Instant) -> bool {
        self.age(now) < self.fresh_for + self.stale_for
    }
}

impl Entry {
    /// The entry as bytes for the shared tier: version, status, epoch ms when stored, lifetimes,
    /// headers, body.
    pub fn encode(&self) -> Vec<u8> {
        let stored_epoch_ms = epoch_ms().saturating_sub(self.age(Instant::now()).as_millis() as u64);
        let mut out = Vec::with_capacity(self.body.len() + 256);
        out.push(1u8);
        out.extend_from_slice(&self.status.as_u16().to_be_bytes());
        out.extend_from_slice(&stored_epoch_ms.to_be_bytes());
        out.extend_from_slice(&(self.fresh_for.as_millis() as u64).to_be_bytes());
        out.extend_from_slice(&(self.stale_for.as_millis() as u64).to_be_bytes());
        out.extend_from_slice(&(self.headers.len() as u32).to_be_bytes());
        for (k, v) in &self.headers {
            out.extend_from_slice(&(k.as_str().len() as u32).to_be_bytes());
            out.extend_from_slice(k.as_str().as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// An entry read back from the shared tier; `None` when the bytes are not one.
    pub fn decode(b: &[u8], route: Arc<str>, upstream: Arc<str>) -> Option<Entry> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = b.get(at..at + n)?;
            at += n;
            Some(s)
        };
        if take(1)? != [1u8] {
            return None;
        }
        let u16_ = |s: &[u8]| u16::from_be_bytes([s[0], s[1]]);
        let u32_ = |s: &[u8]| u32::from_be_bytes(s.try_into().unwrap_or([0; 4]));
        let u64_ = |s: &[u8]| u64::from_be_bytes(s.try_into().unwrap_or([0; 8]));
        let status = StatusCode::from_u16(u16_(take(2)?)).ok()?;
        let stored_epoch_ms = u64_(take(8)?);
        let fresh_for = Duration::from_millis(u64_(take(8)?));
        let stale_for = Duration::from_millis(u64_(take(8)?));
        let n = u32_(take(4)?) as usize;
        let mut headers = HeaderMap::with_capacity(n.min(256));
        for _ in 0..n {
            let kl = u32_(take(4)?) as usize;
            let k = http::HeaderName::from_bytes(take(kl)?).ok()?;
            let vl = u32_(take(4)?) as usize;
            let v = http::HeaderValue::from_bytes(take(vl)?).ok()?;
            headers.append(k, v);
        }
        let body = Bytes::copy_from_slice(b.get(at..)?);
        let age = Duration::from_millis(epoch_ms().saturating_sub(stored_epoch_ms));
        let now = Instant::now();
        let stored = now.checked_sub(age).unwrap_or(now);
        Some(Entry { route, upstream, status, headers, body, stored, fresh_for, stale_for })
    }
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

struct Lifetime;

// moka's expiry hook speaks std's Instant; the gateway's own clock (tokio's) is used everywhere else.
#[allow(clippy::disallowed_types)]
impl moka::Expiry<String, Arc<Entry>> for Lifetime {
    fn expire_after_create(&self, _key: &String, value: &Arc<Entry>, _now: std::time::Instant) -> Option<Duration> {
        Some(value.fresh_for + value.stale_for)
    }
}

/// What a fetch in flight ends with, for the callers waiting on it.
#[derive(Debug, Clone)]
pub enum Shared {
    /// The stored (or stale) answer.
    Entry(Arc<Entry>),
    /// The answer may not be shared (not storable, too large, refused for the caller): each waiter
    /// calls on its own.
    Pass,
    /// The vendor failed: every waiter gets the same error.
    Failed(Arc<GatewayError>),
}

type Flights = Arc<Mutex<HashMap<String, watch::Receiver<Option<Shared>>>>>;

/// The process's response cache.
pub struct Store {
    cache: moka::future::Cache<String, Arc<Entry>>,
    flights: Flights,
    /// Budget in bytes.
    pub max_bytes: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("max_bytes", &self.max_bytes).finish_non_exhaustive()
    }
}

/// Joining a fetch for a key.
pub enum Join {
    /// Nobody is fetching it: this caller does, and must `finish` (or drop, to let another try).
    Leader(Flight),
    /// Another caller is fetching it: wait for the outcome.
    Follower(watch::Receiver<Option<Shared>>),
}

/// A fetch in flight, led by one caller.
pub struct Flight {
    key: String,
    tx: watch::Sender<Option<Shared>>,
    flights: Flights,
}

impl Flight {
    /// Ends the flight: waiters get `outcome`.
    pub fn finish(self, outcome: Shared) {
        let _ = self.tx.send(Some(outcome));
        // Drop removes the key.
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        // Finished or abandoned (the leading caller went away): later callers start afresh;
        // waiters of an abandoned flight see the channel close and try again.
        let mut f = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if f.get(&self.key).is_some_and(|rx| rx.same_channel(&self.tx.subscribe())) {
            f.remove(&self.key);
        }
    }
}

impl Store {
    /// A store holding at most `max_bytes` of responses.
    pub fn new(max_bytes: u64) -> Store {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &String, v: &Arc<Entry>| v.weight())
            .expire_after(Lifetime)
            .support_invalidation_closures()
            .build();
        Store { cache, flights: Arc::default(), max_bytes }
    }

    /// The entry for `key`, fresh or stale.
    pub async fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.cache.get(key).await
    }

    /// Stores an entry.
    pub async fn insert(&self, key: String, entry: Arc<Entry>) {
        self.cache.insert(key, entry).await;
    }

    /// Joins the fetch for `key`, or leads it.
    pub fn join(&self, key: &str) -> Join {
        let mut f = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(rx) = f.get(key) {
            if rx.has_changed().is_ok() {
                return Join::Follower(rx.clone());
            }
        }
        let (tx, rx) = watch::channel(None);
        f.insert(key.to_owned(), rx);
        Join::Leader(Flight { key: key.to_owned(), tx, flights: self.flights.clone() })
    }

    /// Removes every entry (of `route`, when given); returns how many were there before.
    pub fn purge(&self, route: Option<&str>) -> u64 {
        let before = self.cache.entry_count();
        match route {
            None => self.cache.invalidate_all(),
            Some(r) => {
                let r: Arc<str> = Arc::from(r);
                let _ = self.cache.invalidate_entries_if(move |_, v| v.route == r);
            }
        }
        before
    }

    /// Entries and bytes held (after pending maintenance).
    pub async fn stats(&self) -> (u64, u64) {
        self.cache.run_pending_tasks().await;
        (self.cache.entry_count(), self.cache.weighted_size())
    }
}

/// Waits for a flight's outcome; `None` when its leader went away without one.
pub async fn wait(mut rx: watch::Receiver<Option<Shared>>) -> Option<Shared> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &'static [u8], fresh: u64) -> Arc<Entry> {
        Arc::new(Entry {
            route: Arc::from("r"),
            upstream: Arc::from("u"),
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body),
            stored: Instant::now(),
            fresh_for: Duration::from_secs(fresh),
            stale_for: Duration::from_secs(5),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn freshness_and_staleness_follow_the_clock() {
        let e = entry(b"x", 10);
        assert!(e.fresh(Instant::now()));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!e.fresh(Instant::now()) && e.usable_stale(Instant::now()));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!e.usable_stale(Instant::now()));
        assert_eq!(e.age(Instant::now()), Duration::from_secs(16));
    }

    #[tokio::test]
    async fn one_leader_and_followers_that_get_its_outcome() {
        let s = Store::new(1 << 20);
        let Join::Leader(flight) = s.join("k") else { panic!("first caller leads") };
        let Join::Follower(rx) = s.join("k") else { panic!("second caller follows") };
        let waiter = tokio::spawn(wait(rx));
        flight.finish(Shared::Entry(entry(b"body", 60)));
        match waiter.await.unwrap() {
            Some(Shared::Entry(e)) => assert_eq!(&e.body[..], b"body"),
            other => panic!("{other:?}"),
        }
        // The flight is over: the next caller leads a new one.
        assert!(matches!(s.join("k"), Join::Leader(_)));
    }

    #[test]
    fn entries_survive_the_shared_tier_encoding() {
        let mut e = Arc::try_unwrap(entry(b"{\"a\":1}", 60)).unwrap();
        e.status = StatusCode::NOT_FOUND;
        e.headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        e.headers.append("x-multi", http::HeaderValue::from_static("1"));
        e.headers.append("x-multi", http::HeaderValue::from_static("2"));
        let d = Entry::decode(&e.encode(), Arc::from("r"), Arc::from("u")).unwrap();
        assert_eq!(
            (d.status, &d.body[..], d.fresh_for, d.stale_for),
            (e.status, &e.body[..], e.fresh_for, e.stale_for)
        );
        assert_eq!(d.headers, e.headers);
        assert!(d.fresh(Instant::now()));
        assert!(Entry::decode(b"\x02junk", Arc::from("r"), Arc::from("u")).is_none());
        assert!(Entry::decode(&e.encode()[..10], Arc::from("r"), Arc::from("u")).is_none());
    }

    #[tokio::test]
    async fn an_abandoned_flight_lets_waiters_try_again() {
        let s = Store::new(1 << 20);
        let Join::Leader(flight) = s.join("k") else { panic!() };
        let Join::Follower(rx) = s.join("k") else { panic!() };
        drop(flight);
        assert!(wait(rx).await.is_none());
        assert!(matches!(s.join("k"), Join::Leader(_)));
    }

    #[tokio::test]
    async fn the_byte_budget_bounds_what_is_kept() {
        let s = Store::new(64 * 1024);
        let big = Bytes::from(vec![b'x'; 4096]);
        for i in 0..200 {
            let e = Entry { body: big.clone(), ..Arc::try_unwrap(entry(b"", 60)).unwrap() };
            s.insert(format!("k{i}"), Arc::new(e)).await;
        }
        let (n, bytes) = s.stats().await;
        assert!(bytes <= 64 * 1024, "{bytes} bytes held");
        assert!(n > 0 && n < 200, "{n} entries");
        assert_eq!(s.purge(None), n);
        assert_eq!(s.stats().await.0, 0);
    }
}
