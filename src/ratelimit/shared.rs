//! The shared store: limits counted in Redis, so every replica draws on one allowance.
//!
//! One Lua script does what [`super::gcra::reserve`] does locally, atomically on the Redis server
//! and on the Redis server's clock (`TIME`, microseconds), so replicas with skewed clocks still
//! agree. State per (limit, subject) is one string key holding the windows' arrival times, expiring
//! when every window is full again; a vendor pause is a second key holding the time the pause ends.
//! Keys share a hash tag (`{...}`) so the script works on Redis Cluster too.
//!
//! When Redis fails (timeout, refused, error reply) the store is marked down for a second, during
//! which requests go straight to the fallback (`on_unavailable: local` counts locally, `reject`
//! answers 503) instead of each waiting for a timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::gcra::Cell;
use crate::credentials::Secret;

const DOWN_FOR: Duration = Duration::from_secs(1);

/// `cluster.redis` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `redis://host:port/db` (`rediss://` for TLS), without a password.
    pub url: String,
    /// The password (`env:` or `file:` reference), if any.
    pub password: Option<Secret>,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Time allowed per command, and per connection attempt.
    pub timeout: Duration,
    /// `true`: count locally while Redis is unreachable; `false`: refuse with 503.
    pub fail_open: bool,
}

/// What the script answered.
#[derive(Debug)]
pub struct Reserved {
    /// Admitted (possibly after `wait_us`).
    pub admitted: bool,
    /// Microseconds until the request may go (admitted) or would conform (refused).
    pub wait_us: u64,
    /// The store's clock.
    pub now_us: u64,
    /// The windows' arrival times after the call.
    pub tats: Vec<u64>,
    /// The account is paused (a vendor signal seen by any replica).
    pub paused: bool,
}

/// The Redis store.
pub struct Shared {
    settings: Settings,
    conn: ConnectionManager,
    started: Instant,
    down_until: AtomicU64,
    last_log: AtomicU64,
    reserve: Arc<Script>,
    pause: Arc<Script>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("url", &self.settings.url).finish_non_exhaustive()
    }
}

/// KEYS: state, pause. ARGV: n, max_wait_us, local_pause_us, then t1 c1 t2 c2 ...
const RESERVE: &str = r"
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local n = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
local local_pause = tonumber(ARGV[3])
if local_pause > pause then pause = local_pause end
local at = now_us
if pause > at then at = pause end
local tats = {}
local raw = redis.call('GET', KEYS[1])
if raw then
  for v in string.gmatch(raw, '[^,]+') do tats[#tats + 1] = tonumber(v) end
end
for i = 1, n do
  local t = tonumber(ARGV[2 + 2 * i])
  local c = tonumber(ARGV[3 + 2 * i])
  local e = (tats[i] or 0) + t - c
  if e > at then at = e end
end
local out = {}
for i = 1, n do out[i] = string.format('%.0f', tats[i] or 0) end
local paused = 0
if pause > now_us and at == pause then paused = 1 end
if at - now_us > max_wait then
  return {0, string.format('%.0f', at - now_us), string.format('%.0f', now_us), paused, table.concat(out, ',')}
end
local ttl = 1
for i = 1, n do
  local t = tonumber(ARGV[2 + 2 * i])
  local tat = math.max(tats[i] or 0, at) + t
  out[i] = string.format('%.0f', tat)
  if tat - now_us > ttl then ttl = tat - now_us end
end
if n > 0 then
  redis.call('SET', KEYS[1], table.concat(out, ','), 'PX', math.floor(ttl / 1000) + 1)
end
return {1, string.format('%.0f', at - now_us), string.format('%.0f', now_us), paused, table.concat(out, ',')}
";

/// KEYS: pause. ARGV: until (µs since the epoch). Only ever extends a pause.
const PAUSE: &str = r"
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local untilv = tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if untilv > cur and untilv > now_us then
  redis.call('SET', KEYS[1], string.format('%.0f', untilv), 'PX', math.floor((untilv - now_us) / 1000) + 1)
end
return 1
";

impl Shared {
    /// Connects lazily (the first command connects; nothing blocks here). Needs a tokio runtime.
    pub fn new(settings: Settings) -> Result<Shared, String> {
        let info = redis::IntoConnectionInfo::into_connection_info(settings.url.as_str())
            .map_err(|e| format!("`{}` is not a Redis URL: {e}", settings.url))?;
        let info = match &settings.password {
            Some(p) => {
                let redis = info.redis_settings().clone().set_password(p.expose());
                info.set_redis_settings(redis)
            }
            None => info,
        };
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.timeout))
            .set_connection_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        Ok(Shared {
            settings,
            conn,
            started: Instant::now(),
            down_until: AtomicU64::new(0),
            last_log: AtomicU64::new(0),
            reserve: Arc::new(Script::new(RESERVE)),
            pause: Arc::new(Script::new(PAUSE)),
        })
    }

    /// The settings it was made from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// False for a second after a failure.
    pub fn up(&self) -> bool {
        self.down_until.load(Ordering::Relaxed) <= self.ms()
    }

    /// Records a failure: the store is skipped for a second; logged at most every 10 s.
    pub fn mark_down(&self, err: &redis::RedisError) {
        let now = self.ms();
        self.down_until.store(now + DOWN_FOR.as_millis() as u64, Ordering::Relaxed);
        let last = self.last_log.load(Ordering::Relaxed);
        if (last == 0 || now >= last + 10_000)
            && self.last_log.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(error = %err, fallback = if self.settings.fail_open { "local" } else { "reject" }, "shared rate-limit store (cluster.redis) unreachable");
        }
    }

    fn keys(&self, key: &(Arc<str>, Arc<str>)) -> (String, String) {
        let tag = format!("{}:{{rl:{}:{}}}", self.settings.key_prefix, key.0, key.1);
        (format!("{tag}:s"), format!("{tag}:p"))
    }

    /// Reserves one unit against `cells` (µs) for `key`, waiting at most `max_wait_us`.
    pub async fn reserve(
        &self,
        key: &(Arc<str>, Arc<str>),
        cells: &[Cell],
        local_pause: Option<SystemTime>,
        max_wait_us: u64,
    ) -> Result<Reserved, redis::RedisError> {
        let (state, pause) = self.keys(key);
        let mut inv = self.reserve.prepare_invoke();
        inv.key(state).key(pause).arg(cells.len()).arg(max_wait_us).arg(local_pause.map_or(0, micros));
        for c in cells {
            inv.arg(c.t).arg(c.c);
        }
        let mut conn = self.conn.clone();
        let (admitted, wait, now, paused, tats): (u8, String, String, u8, String) = inv.invoke_async(&mut conn).await?;
        let num = |s: &str| s.parse::<f64>().map(|f| f.max(0.0) as u64).unwrap_or(0);
        Ok(Reserved {
            admitted: admitted == 1,
            wait_us: num(&wait),
            now_us: num(&now),
            tats: tats.split(',').filter(|s| !s.is_empty()).map(num).collect(),
            paused: paused == 1,
        })
    }

    /// Pauses `key` (a vendor account) until `until` for every replica.
    pub async fn pause(&self, key: &(Arc<str>, Arc<str>), until: SystemTime) -> Result<(), redis::RedisError> {
        let (_, pause) = self.keys(key);
        let mut conn = self.conn.clone();
        let _: i64 = self.pause.key(pause).arg(micros(until)).invoke_async(&mut conn).await?;
        Ok(())
    }
}

impl Shared {
    fn cache_key(&self, key: &str) -> String {
        format!("{}:cache:{key}", self.settings.key_prefix)
    }

    /// A cached answer stored by any replica (the response cache's second tier).
    pub async fn cache_get(&self, key: &str) -> Result<Option<Vec<u8>>, redis::RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("GET").arg(self.cache_key(key)).query_async(&mut conn).await
    }

    /// Stores a cached answer for every replica, for `ttl`.
    pub async fn cache_set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        let ms = ttl.as_millis().max(1) as u64;
        redis::cmd("SET").arg(self.cache_key(key)).arg(value).arg("PX").arg(ms).query_async(&mut conn).await
    }
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
