//! The translation step: a successful JSON answer from the vendor, on a route with `translate`,
//! becomes OCSF, ECS or STIX when the caller asks for it (or always), validated on the way.
//!
//! Every outcome is visible: `Interlock-Translation` on the response (`translated`, `invalid`,
//! `skipped`), the `interlock_translations_total` metric, the kept failure reasons on admin
//! `/mappings`, and a span per translation. A payload that does not translate validly is never
//! dropped: the vendor's own body passes (`on_invalid: raw`) or the caller gets a 502 naming the
//! failing fields (`strict`).

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::body::ResponseBody;
use crate::error::GatewayError;
use crate::telemetry::metrics::{MappingOnly, TranslationLabels};
use crate::telemetry::record::RequestRecord;
use crate::telemetry::Telemetry;
use crate::translate::{Failure, OnInvalid, RouteTranslate, When, TRANSLATION};
use crate::upstream::resilience::InFlight;

/// Whether this request asks for translation.
pub fn wanted(t: &RouteTranslate, accept: Option<&HeaderValue>) -> bool {
    t.when == When::Always || t.mapping.target.accepted_by(accept)
}

fn count(telemetry: &Telemetry, mapping: &str, result: &str) {
    telemetry
        .metrics
        .translations
        .get_or_create(&TranslationLabels { mapping: mapping.to_owned(), result: result.to_owned() })
        .inc();
}

fn mark(parts: &mut http::response::Parts, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        parts.headers.insert(TRANSLATION, v);
    }
}

/// Why the vendor body is passed as it is, before reading it.
fn not_translatable(parts: &http::response::Parts, max_body: u64) -> Option<&'static str> {
    if !parts.status.is_success() || parts.status == http::StatusCode::NO_CONTENT {
        return Some("status");
    }
    if parts.headers.get(header::CONTENT_ENCODING).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity")) {
        return Some("encoded");
    }
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !(essence == "application/json" || essence.ends_with("+json") || essence == "text/json") {
            return Some("not_json");
        }
    }
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return Some("too_large");
    }
    None
}

/// Reads the body up to `cap` bytes: all of it, or the part read and the rest still streaming.
async fn read_capped(mut body: Incoming, cap: u64) -> Result<Result<Bytes, (Bytes, Incoming)>, hyper::Error> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() as u64 > cap {
                return Ok(Err((buf.freeze(), body)));
            }
        }
    }
    Ok(Ok(buf.freeze()))
}

/// Translates the response when the route and the caller ask for it; otherwise passes it through.
#[allow(clippy::too_many_arguments)] // the request's pieces, each borrowed differently
pub async fn respond(
    t: &RouteTranslate,
    asked: bool,
    parts: &mut http::response::Parts,
    body: Incoming,
    guard: InFlight,
    upstream: &str,
    record: &mut RequestRecord,
    telemetry: &Telemetry,
) -> Result<ResponseBody, GatewayError> {
    if t.when == When::Accept {
        // The answer depends on Accept: caches in front must keep the variants apart.
        parts.headers.append(header::VARY, HeaderValue::from_static("accept"));
    }
    if !asked {
        return Ok(ResponseBody::Guarded(body, guard));
    }
    let mapping = &t.mapping;
    record.facts.mapping = Some(mapping.id.clone());
    if let Some(why) = not_translatable(parts, t.max_body) {
        mapping.stats.load().skipped.fetch_add(1, Ordering::Relaxed);
        record.facts.translation = Some("skipped");
        count(telemetry, &mapping.id, if why == "too_large" { "too_large" } else { "skipped" });
        mark(parts, format!("skipped; reason={why}; mapping={}", mapping.id));
        return Ok(ResponseBody::Guarded(body, guard));
    }
    let whole = match read_capped(body, t.max_body).await {
        Ok(Ok(b)) => b,
        Ok(Err((prefix, rest))) => {
            // Larger than the cap: what was read goes first, the rest streams on, untranslated.
            mapping.stats.load().skipped.fetch_add(1, Ordering::Relaxed);
            record.facts.translation = Some("skipped");
            count(telemetry, &mapping.id, "too_large");
            mark(parts, format!("skipped; reason=too_large; mapping={}; max_body={}", mapping.id, t.max_body));
            return Ok(ResponseBody::Resumed(Some(prefix), rest, guard));
        }
        Err(e) => return Err(GatewayError::UpstreamBody { upstream: upstream.to_owned(), why: e.to_string() }),
    };
    drop(guard);
    let span = match (&telemetry.tracing, &record.span) {
        (Some(tr), Some(parent)) => Some(tr.internal_span(parent, "translate")),
        _ => None,
    };
    let started = tokio::time::Instant::now();
    let outcome = if mapping.tripped.load(Ordering::Relaxed) {
        Err(Failure {
            kind: "timeout",
            reasons: vec![format!(
                "mapping `{}` is switched off: a translation overran its deadline; fix the program and reload",
                mapping.id
            )],
        })
    } else {
        run(t, whole.clone()).await
    };
    let elapsed = started.elapsed();
    telemetry
        .metrics
        .translation_duration
        .get_or_create(&MappingOnly { mapping: mapping.id.clone() })
        .observe(elapsed.as_secs_f64());
    let stats = mapping.stats.load();
    match outcome {
        Ok((out, records)) => {
            stats.translated.fetch_add(records as u64, Ordering::Relaxed);
            telemetry
                .metrics
                .translated_records
                .get_or_create(&MappingOnly { mapping: mapping.id.clone() })
                .inc_by(records as u64);
            count(telemetry, &mapping.id, "translated");
            record.facts.translation = Some("translated");
            if let Some(cx) = &span {
                crate::telemetry::otel::end(cx, translation_attrs(&mapping.id, "translated", records), false);
            }
            parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mapping.target.media_type()));
            // The representation changed: validators and digests of the vendor's no longer apply.
            for h in [
                header::CONTENT_LENGTH,
                header::ETAG,
                header::LAST_MODIFIED,
                header::CONTENT_RANGE,
                header::ACCEPT_RANGES,
            ] {
                parts.headers.remove(h);
            }
            parts.headers.remove("content-md5");
            parts.headers.remove("digest");
            parts.headers.remove("content-digest");
            mark(parts, format!("translated; mapping={}; records={records}", mapping.id));
            Ok(ResponseBody::full(out))
        }
        Err(f) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            let result = match f.kind {
                "program-error" => "program_error",
                "not-json" => "not_json",
                "timeout" => "timeout",
                _ => "invalid",
            };
            count(telemetry, &mapping.id, result);
            record.facts.translation = Some("invalid");
            if let Some(cx) = &span {
                crate::telemetry::otel::end(cx, translation_attrs(&mapping.id, result, 0), true);
            }
            for r in f.reasons.iter().take(5) {
                stats.remember(format!("{}: {r}", f.kind));
            }
            tracing::warn!(
                request_id = %record.request_id,
                mapping = %mapping.id,
                kind = f.kind,
                first = f.reasons.first().map(String::as_str).unwrap_or(""),
                reasons = f.reasons.len(),
                "vendor payload did not translate"
            );
            match t.on_invalid {
                OnInvalid::Strict => Err(GatewayError::TranslationFailed {
                    mapping: mapping.id.clone(),
                    kind: f.kind,
                    reasons: f.reasons,
                }),
                OnInvalid::Raw => {
                    mark(parts, format!("invalid; mapping={}; {}", mapping.id, f.header_value()));
                    Ok(ResponseBody::full(whole))
                }
            }
        }
    }
}

fn translation_attrs(mapping: &str, result: &str, records: usize) -> Vec<opentelemetry::KeyValue> {
    vec![
        opentelemetry::KeyValue::new("interlock.mapping", mapping.to_owned()),
        opentelemetry::KeyValue::new("interlock.translation.result", result.to_owned()),
        opentelemetry::KeyValue::new("interlock.translation.records", records as i64),
    ]
}

/// Runs the mapping off the async workers, bounded by the route's deadline. A program that
/// overruns it switches its mapping off (the thread running it cannot be stopped).
async fn run(t: &RouteTranslate, body: Bytes) -> Result<(Vec<u8>, usize), Failure> {
    let mapping = t.mapping.clone();
    let task = tokio::task::spawn_blocking(move || mapping.apply(&body));
    match tokio::time::timeout(t.timeout, task).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => {
            Err(Failure { kind: "program-error", reasons: vec![format!("the translation failed: {join}")] })
        }
        Err(_) => {
            t.mapping.tripped.store(true, Ordering::Relaxed);
            tracing::error!(
                mapping = %t.mapping.id,
                timeout = ?t.timeout,
                "translation overran its deadline: the mapping is switched off until the config is reloaded"
            );
            Err(Failure {
                kind: "timeout",
                reasons: vec![format!(
                    "the program ran longer than {} and was abandoned; the mapping is switched off until it is fixed and reloaded",
                    crate::config::units::format_duration(t.timeout)
                )],
            })
        }
    }
}
