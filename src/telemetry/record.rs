//! The record of one request: facts gathered along the request path, turned into an audit record,
//! metrics, an access-log line and a tap line exactly once — when the response body has been sent,
//! or when the request is abandoned (client gone, status 499).
//!
//! [`ObservedBody`] carries the record with the response body, counts the bytes sent and finishes
//! the record when hyper drops the body; if the request future itself is dropped, the record's own
//! `Drop` finishes it. Either way there is exactly one record per request (invariant 5).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::audit::AuditRecord;
use super::metrics::{Label, ProblemLabels, RequestLabels, RouteLabels};
use super::{TapLine, Telemetry};
use crate::proxy::body::{BoxError, ResponseBody};

/// Facts the request path learns (all safe to log).
#[derive(Debug, Default)]
pub struct Facts {
    /// Route id.
    pub route: Option<Arc<str>>,
    /// Upstream id.
    pub upstream: Option<Arc<str>>,
    /// Injected credential id.
    pub credential: Option<Arc<str>>,
    /// Caller id.
    pub caller: Option<Arc<str>>,
    /// Whether the caller is listed in `callers.yaml` (else metrics say `other`).
    pub caller_known: bool,
    /// Authentication method.
    pub auth: Option<&'static str>,
    /// `allow` / `deny`.
    pub decision: Option<&'static str>,
    /// Deciding rule or refusal type.
    pub rule: Option<String>,
    /// The shadow policy's denying rule, when it would deny a call that was allowed.
    pub shadow_deny: Option<String>,
    /// Problem type of a gateway-made error.
    pub error: Option<&'static str>,
    /// Upstream attempts beyond the first.
    pub retries: u32,
    /// Cache status.
    pub cache: Option<&'static str>,
    /// The fewest requests left in any rate-limit window the request passed.
    pub ratelimit_remaining: Option<u64>,
    /// The mapping a translation used.
    pub mapping: Option<String>,
    /// `translated`, `invalid` or `skipped`.
    pub translation: Option<&'static str>,
    /// Time the request waited in a rate-limit queue.
    pub queued: Option<std::time::Duration>,
    /// Request body bytes, counted by the request body as it streams.
    pub bytes_in: Option<Arc<AtomicU64>>,
    /// The route's path template (`http.route`).
    pub route_template: Option<Arc<str>>,
    /// The host the request was addressed to (`server.address`).
    pub host: Option<String>,
    /// The client's IP address.
    pub client_ip: Option<std::net::IpAddr>,
}

/// One request's record, finished exactly once.
#[derive(Debug)]
pub struct RequestRecord {
    tel: Arc<Telemetry>,
    started: Instant,
    time: SystemTime,
    /// Request id.
    pub request_id: String,
    /// Trace id (32 hex).
    pub trace_id: String,
    method: String,
    path: String,
    /// What the request path learned.
    pub facts: Facts,
    /// Response status; 0 until a response exists.
    pub status: u16,
    bytes_out: u64,
    finished: bool,
    /// The server span, when traces are exported.
    pub span: Option<opentelemetry::Context>,
    version: &'static str,
    scheme: &'static str,
}

impl RequestRecord {
    /// Starts the record of a request that just arrived.
    pub fn start(
        tel: Arc<Telemetry>,
        req: &http::Request<hyper::body::Incoming>,
        scheme: &'static str,
        request_id: String,
        trace_id: String,
        span: Option<opentelemetry::Context>,
    ) -> RequestRecord {
        tel.metrics.in_flight.inc();
        let (method, path) = (req.method(), req.uri().path());
        let version = match req.version() {
            http::Version::HTTP_2 => "2",
            http::Version::HTTP_10 => "1.0",
            _ => "1.1",
        };
        RequestRecord {
            tel,
            started: Instant::now(),
            time: SystemTime::now(),
            request_id,
            trace_id,
            method: method.as_str().to_owned(),
            path: path.chars().take(2048).collect(),
            facts: Facts::default(),
            status: 0,
            bytes_out: 0,
            finished: false,
            span,
            version,
            scheme,
        }
    }

    /// Replaces the raw path by the normalised one once known.
    pub fn set_path(&mut self, p: &str) {
        self.path.clear();
        self.path.extend(p.chars().take(2048));
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.status == 0 {
            self.status = 499; // the client went away before an answer
        }
        let f = &self.facts;
        let elapsed = self.started.elapsed();
        let bytes_in = f.bytes_in.as_ref().map_or(0, |b| b.load(Ordering::Relaxed));
        let m = &self.tel.metrics;
        m.in_flight.dec();
        let l = &m.labels;
        let route = f.route.clone().map_or_else(|| l.none.clone(), Label);
        let caller = match (&f.caller, f.caller_known) {
            (None, _) => l.anonymous.clone(),
            (Some(c), true) => Label(c.clone()),
            (Some(_), false) => l.other.clone(),
        };
        let status = l.class(self.status);
        m.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                caller,
                upstream: f.upstream.clone().map_or_else(|| l.none.clone(), Label),
                status: status.clone(),
            })
            .inc();
        m.request_duration.get_or_create(&RouteLabels { route, status }).observe(elapsed.as_secs_f64());
        if let Some(e) = f.error {
            m.problems.get_or_create(&ProblemLabels { r#type: e.to_owned() }).inc();
        }
        m.bytes_in.inc_by(bytes_in);
        m.bytes_out.inc_by(self.bytes_out);
        let duration_ms = elapsed.as_millis() as u64;
        if let Some(cx) = self.span.take().filter(|cx| {
            use opentelemetry::trace::TraceContextExt as _;
            // Unsampled spans record nothing: skip building their attributes.
            cx.span().is_recording() || {
                cx.span().end();
                false
            }
        }) {
            use opentelemetry::trace::TraceContextExt as _;
            use opentelemetry::KeyValue;
            let mut a = vec![
                KeyValue::new("http.request.method", self.method.clone()),
                KeyValue::new("url.path", self.path.clone()),
                KeyValue::new("url.scheme", self.scheme),
                KeyValue::new("http.response.status_code", i64::from(self.status)),
                KeyValue::new("network.protocol.version", self.version),
                KeyValue::new("interlock.request_id", self.request_id.clone()),
            ];
            let opt = |k: &'static str, v: Option<&str>, a: &mut Vec<KeyValue>| {
                if let Some(v) = v {
                    a.push(KeyValue::new(k, v.to_owned()));
                }
            };
            opt("http.route", f.route_template.as_deref(), &mut a);
            opt("server.address", f.host.as_deref(), &mut a);
            opt("interlock.caller", f.caller.as_deref(), &mut a);
            opt("interlock.auth", f.auth, &mut a);
            opt("interlock.route", f.route.as_deref(), &mut a);
            opt("interlock.upstream", f.upstream.as_deref(), &mut a);
            opt("interlock.credential", f.credential.as_deref(), &mut a);
            opt("interlock.decision", f.decision, &mut a);
            opt("interlock.cache", f.cache, &mut a);
            opt("interlock.mapping", f.mapping.as_deref(), &mut a);
            opt("interlock.translation", f.translation, &mut a);
            if let Some(r) = f.ratelimit_remaining {
                a.push(KeyValue::new("interlock.ratelimit.remaining", r.min(i64::MAX as u64) as i64));
            }
            if let Some(q) = f.queued {
                a.push(KeyValue::new("interlock.ratelimit.queued_ms", q.as_millis().min(i64::MAX as u128) as i64));
            }
            let error_type =
                f.error.map(str::to_owned).or_else(|| (self.status >= 500).then(|| self.status.to_string()));
            if let Some(e) = &error_type {
                a.push(KeyValue::new("error.type", e.clone()));
            }
            let name = match &f.route_template {
                Some(t) => format!("{} {t}", self.method),
                None => self.method.clone(),
            };
            cx.span().update_name(name);
            super::otel::end(&cx, a, self.status >= 500);
        }
        let wants_record = self.tel.audit.enabled() || self.tel.access_log.is_some();
        if !wants_record && !self.tel.tap_wanted() {
            return;
        }
        let time = rfc3339(self.time);
        if self.tel.tap_wanted() {
            self.tel.tap(TapLine {
                time: time.clone(),
                request_id: self.request_id.clone(),
                method: self.method.clone(),
                path: self.path.clone(),
                route: f.route.as_deref().map(str::to_owned),
                caller: f.caller.as_deref().map(str::to_owned),
                status: self.status,
                duration_ms,
                error: f.error,
            });
        }
        if !wants_record {
            return;
        }
        let record = AuditRecord {
            time,
            request_id: self.request_id.clone(),
            trace_id: self.trace_id.clone(),
            method: std::mem::take(&mut self.method),
            path: std::mem::take(&mut self.path),
            caller: f.caller.as_deref().map(str::to_owned),
            auth: f.auth.map(str::to_owned),
            route: f.route.as_deref().map(str::to_owned),
            upstream: f.upstream.as_deref().map(str::to_owned),
            credential: f.credential.as_deref().map(str::to_owned),
            decision: f.decision.map(str::to_owned),
            rule: f.rule.clone(),
            shadow_deny: f.shadow_deny.clone(),
            status: self.status,
            error: f.error.map(str::to_owned),
            bytes_in,
            bytes_out: self.bytes_out,
            duration_ms,
            retries: f.retries,
            cache: f.cache.map(str::to_owned),
            ..Default::default()
        };
        let mut record = record;
        if self.tel.audit.ocsf() {
            let ms = self.time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            let ip = f.client_ip.map(|i| i.to_string());
            record.ocsf = Some(super::audit::ocsf_api_activity(&record, ms, ip.as_deref()));
        }
        if let Some(a) = &self.tel.access_log {
            a.write(&record);
        }
        self.tel.audit.record(record);
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `2026-12-03T17:40:20.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    if !(0..=9999).contains(&year) {
        // Only from a vendor's far-future reset time: the general form.
        let (h, m, s, ms) = (rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_millis());
        return format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z");
    }
    // Written digit by digit: this runs once per audited request.
    fn digits(out: &mut String, n: i64, width: u32, then: char) {
        for p in (0..width).rev() {
            out.push(char::from(b'0' + (n / 10_i64.pow(p) % 10) as u8));
        }
        out.push(then);
    }
    let mut out = String::with_capacity(24);
    digits(&mut out, year, 4, '-');
    digits(&mut out, month, 2, '-');
    digits(&mut out, day, 2, 'T');
    digits(&mut out, rem / 3600, 2, ':');
    digits(&mut out, rem % 3600 / 60, 2, ':');
    digits(&mut out, rem % 60, 2, '.');
    digits(&mut out, i64::from(d.subsec_millis()), 3, 'Z');
    out
}

/// The response body with the request's record riding along.
#[derive(Debug)]
pub struct ObservedBody {
    inner: ResponseBody,
    record: Option<Box<RequestRecord>>,
}

impl ObservedBody {
    /// Attaches `record`; it is finished when this body is dropped (sent or abandoned).
    pub fn new(inner: ResponseBody, record: RequestRecord) -> ObservedBody {
        ObservedBody { inner, record: Some(Box::new(record)) }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &res {
            if let (Some(d), Some(r)) = (f.data_ref(), this.record.as_mut()) {
                r.bytes_out += d.len() as u64;
            }
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_796_315_542_123);
        assert_eq!(rfc3339(t), "2026-12-03T16:32:22.123Z");
        let leap = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
        let late = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(253_402_300_799_999);
        assert_eq!(rfc3339(late), "9999-12-31T23:59:59.999Z");
        let later = late + std::time::Duration::from_millis(1);
        assert_eq!(rfc3339(later), "10000-01-01T00:00:00.000Z");
    }
}
