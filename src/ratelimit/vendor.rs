//! Reading a vendor's own rate-limit signals from its response headers.
//!
//! Dialects (chosen per upstream with `quota.headers`):
//!
//! | dialect | headers read |
//! |---|---|
//! | `ietf` | `RateLimit: "p";r=R;t=T` (draft-ietf-httpapi-ratelimit-headers), and the older `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset` (seconds) |
//! | `x-ratelimit` | `X-RateLimit-Limit` / `-Remaining` / `-Reset` (Unix time when at least 10⁹, else seconds from now) |
//! | `okta` | `X-Rate-Limit-Limit` / `-Remaining` / `-Reset` (Unix time) |
//! | `crowdstrike` | `X-RateLimit-Limit` / `-Remaining`, and `X-RateLimit-RetryAfter` (Unix time) on 429 |
//! | `none` | nothing but `Retry-After` |
//!
//! `Retry-After` (seconds or an HTTP date) on a 429 or 503 is read in every dialect.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, StatusCode};

/// Which rate-limit headers an upstream sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Only `Retry-After`.
    None,
    /// IETF `RateLimit` fields.
    Ietf,
    /// `X-RateLimit-*`.
    XRateLimit,
    /// `X-Rate-Limit-*`.
    Okta,
    /// CrowdStrike Falcon.
    CrowdStrike,
}

impl Dialect {
    /// Parses the config name.
    pub fn parse(name: &str) -> Option<Dialect> {
        Some(match name {
            "none" => Dialect::None,
            "ietf" => Dialect::Ietf,
            "x-ratelimit" => Dialect::XRateLimit,
            "okta" => Dialect::Okta,
            "crowdstrike" => Dialect::CrowdStrike,
            _ => return None,
        })
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::None => "none",
            Dialect::Ietf => "ietf",
            Dialect::XRateLimit => "x-ratelimit",
            Dialect::Okta => "okta",
            Dialect::CrowdStrike => "crowdstrike",
        }
    }
}

/// What one vendor response said about the account's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Signal {
    /// The window's size, if stated.
    pub limit: Option<u64>,
    /// Requests left in the current window.
    pub remaining: Option<u64>,
    /// When the window resets.
    pub reset: Option<SystemTime>,
    /// When the vendor will accept requests again (a 429/503 with `Retry-After` or the dialect's own).
    pub retry_after: Option<SystemTime>,
    /// The response was a 429.
    pub throttled: bool,
}

impl Signal {
    /// True when the response carried anything about the quota.
    pub fn is_empty(&self) -> bool {
        self.limit.is_none()
            && self.remaining.is_none()
            && self.reset.is_none()
            && self.retry_after.is_none()
            && !self.throttled
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The first unsigned integer in a value (`"100"`, `"100, 100;w=60"`).
fn number(v: &str) -> Option<u64> {
    let digits: &str = &v[..v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len())];
    digits.parse().ok()
}

fn after(now: SystemTime, secs: u64) -> SystemTime {
    now + Duration::from_secs(secs.min(366 * 86_400))
}

fn epoch(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `Retry-After`: delay seconds or an HTTP date.
pub fn retry_after(h: &HeaderMap, now: SystemTime) -> Option<SystemTime> {
    let v = header(h, "retry-after")?;
    if let Ok(s) = v.parse::<u64>() {
        return Some(after(now, s));
    }
    httpdate::parse_http_date(v).ok()
}

/// Whether a response may carry a signal in `dialect` (a cheap look before [`read`]).
pub fn signals(dialect: Dialect, status: StatusCode, h: &HeaderMap) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::SERVICE_UNAVAILABLE
        || match dialect {
            Dialect::None => false,
            Dialect::Ietf => h.contains_key("ratelimit") || h.contains_key("ratelimit-remaining"),
            Dialect::XRateLimit | Dialect::CrowdStrike => h.contains_key("x-ratelimit-remaining"),
            Dialect::Okta => h.contains_key("x-rate-limit-remaining"),
        }
}

/// Reads the signals of `dialect` from a response.
pub fn read(dialect: Dialect, status: StatusCode, h: &HeaderMap, now: SystemTime) -> Signal {
    let throttled = status == StatusCode::TOO_MANY_REQUESTS;
    let mut s = Signal { throttled, ..Signal::default() };
    if throttled || status == StatusCode::SERVICE_UNAVAILABLE {
        s.retry_after = retry_after(h, now);
    }
    match dialect {
        Dialect::None => {}
        Dialect::Ietf => {
            if let Some(v) = header(h, "ratelimit") {
                // A list of `"name";r=R;t=T` items: the most constrained one counts.
                for item in v.split(',') {
                    let mut r = None;
                    let mut t = None;
                    for p in item.split(';').skip(1) {
                        match p.trim().split_once('=') {
                            Some(("r", x)) => r = number(x),
                            Some(("t", x)) => t = number(x),
                            _ => {}
                        }
                    }
                    if let Some(r) = r {
                        if s.remaining.is_none_or(|cur| r < cur) {
                            s.remaining = Some(r);
                            s.reset = t.map(|t| after(now, t));
                        }
                    }
                }
            }
            if s.remaining.is_none() {
                s.remaining = header(h, "ratelimit-remaining").and_then(number);
                s.reset = header(h, "ratelimit-reset").and_then(number).map(|t| after(now, t));
            }
            s.limit = header(h, "ratelimit-limit").and_then(number);
        }
        Dialect::XRateLimit => {
            s.limit = header(h, "x-ratelimit-limit").and_then(number);
            s.remaining = header(h, "x-ratelimit-remaining").and_then(number);
            s.reset = header(h, "x-ratelimit-reset").and_then(number).map(|t| {
                if t >= 1_000_000_000 {
                    epoch(t)
                } else {
                    after(now, t)
                }
            });
        }
        Dialect::Okta => {
            s.limit = header(h, "x-rate-limit-limit").and_then(number);
            s.remaining = header(h, "x-rate-limit-remaining").and_then(number);
            s.reset = header(h, "x-rate-limit-reset").and_then(number).map(epoch);
        }
        Dialect::CrowdStrike => {
            s.limit = header(h, "x-ratelimit-limit").and_then(number);
            s.remaining = header(h, "x-ratelimit-remaining").and_then(number);
            if throttled {
                if let Some(t) = header(h, "x-ratelimit-retryafter").and_then(number) {
                    s.retry_after = Some(epoch(t));
                }
            }
        }
    }
    s
}

/// Until when the vendor account should receive nothing, given a signal.
///
/// - a `Retry-After` (or the dialect's equivalent) on 429/503: until then;
/// - a 429 without one: `without_reset` from now;
/// - `remaining <= reserve` with a reset time: until the reset; without one: `without_reset`.
///
/// Pauses are capped at `max_pause`. `None`: keep sending.
pub fn pause_until(
    s: &Signal,
    reserve: u64,
    without_reset: Duration,
    max_pause: Duration,
    now: SystemTime,
) -> Option<SystemTime> {
    let until = if let Some(t) = s.retry_after {
        Some(t)
    } else if s.throttled {
        Some(now + without_reset)
    } else if s.remaining.is_some_and(|r| r <= reserve) {
        Some(s.reset.unwrap_or(now + without_reset))
    } else {
        None
    }?;
    (until > now).then(|| until.min(now + max_pause))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    const NOW: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        epoch(NOW)
    }

    #[test]
    fn dialects() {
        let ok = StatusCode::OK;
        let s = read(Dialect::Ietf, ok, &h(&[("ratelimit", "\"burst\";r=7;t=3, \"day\";r=2;t=600")]), now());
        assert_eq!((s.remaining, s.reset), (Some(2), Some(epoch(NOW + 600))));
        let s = read(Dialect::Ietf, ok, &h(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "12")]), now());
        assert_eq!((s.remaining, s.reset), (Some(0), Some(epoch(NOW + 12))));
        let x = [("x-ratelimit-limit", "60"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1800000030")];
        let s = read(Dialect::XRateLimit, ok, &h(&x), now());
        assert_eq!((s.limit, s.remaining, s.reset), (Some(60), Some(0), Some(epoch(NOW + 30))));
        let s =
            read(Dialect::XRateLimit, ok, &h(&[("x-ratelimit-remaining", "5"), ("x-ratelimit-reset", "30")]), now());
        assert_eq!(s.reset, Some(epoch(NOW + 30)));
        let s = read(
            Dialect::Okta,
            ok,
            &h(&[("x-rate-limit-remaining", "1"), ("x-rate-limit-reset", "1800000045")]),
            now(),
        );
        assert_eq!((s.remaining, s.reset), (Some(1), Some(epoch(NOW + 45))));
        let cs = [("x-ratelimit-remaining", "0"), ("x-ratelimit-retryafter", "1800000007")];
        let s = read(Dialect::CrowdStrike, StatusCode::TOO_MANY_REQUESTS, &h(&cs), now());
        assert_eq!((s.throttled, s.retry_after), (true, Some(epoch(NOW + 7))));
        // Dialect headers are ignored when another dialect is configured; garbage is ignored.
        assert!(read(Dialect::None, ok, &h(&x), now()).is_empty());
        assert!(read(Dialect::Okta, ok, &h(&[("x-rate-limit-remaining", "lots")]), now()).is_empty());
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_on_429_and_503_only() {
        let s = read(Dialect::None, StatusCode::TOO_MANY_REQUESTS, &h(&[("retry-after", "3")]), now());
        assert_eq!(s.retry_after, Some(epoch(NOW + 3)));
        let date = httpdate::fmt_http_date(epoch(NOW + 90));
        let s = read(Dialect::None, StatusCode::SERVICE_UNAVAILABLE, &h(&[("retry-after", &date)]), now());
        assert_eq!(s.retry_after, Some(epoch(NOW + 90)));
        assert_eq!(read(Dialect::None, StatusCode::OK, &h(&[("retry-after", "3")]), now()).retry_after, None);
    }

    #[test]
    fn pauses() {
        let none = Duration::from_secs(1);
        let cap = Duration::from_secs(3600);
        let p = |s: Signal, reserve| pause_until(&s, reserve, none, cap, now());
        let base = Signal::default();
        assert_eq!(p(Signal { remaining: Some(3), ..base }, 0), None);
        let reset = Some(epoch(NOW + 20));
        assert_eq!(p(Signal { remaining: Some(0), reset, ..base }, 0), reset);
        assert_eq!(p(Signal { remaining: Some(2), reset, ..base }, 2), reset, "the reserve is kept");
        assert_eq!(p(Signal { throttled: true, ..base }, 0), Some(epoch(NOW + 1)));
        let far = Some(epoch(NOW + 86_400));
        assert_eq!(p(Signal { throttled: true, retry_after: far, ..base }, 0), Some(epoch(NOW + 3600)), "capped");
        assert_eq!(
            p(Signal { remaining: Some(0), reset: Some(epoch(NOW - 5)), ..base }, 0),
            None,
            "a reset in the past"
        );
    }
}
