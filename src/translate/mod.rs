//! Schema translation on the wire: jq mappings (jaq) from vendor payloads to OCSF, ECS or STIX,
//! validated before they leave the gateway.
//!
//! - [`jq`]: compiling and running mapping programs.
//! - [`ocsf`]: the OCSF schema compiled into the binary and its validator.
//! - [`check`]: ECS and STIX validation.
//!
//! A mapping (`policies/mappings/*.yaml`) is compiled at config load; a route names it under
//! `translate`. [`Mapping::apply`] turns one vendor body into the translated body, or says why not
//! (program error, invalid output): the proxy then passes the vendor payload with an
//! `Interlock-Translation` header (`on_invalid: raw`) or answers 502 (`strict`). Nothing is dropped
//! silently; the first failure reasons per mapping are kept for admin `/mappings`.

pub mod check;
mod fast;
pub mod jq;
mod native;
pub mod ocsf;
pub mod samples;

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Response header saying what happened to the payload.
pub const TRANSLATION: http::header::HeaderName = http::header::HeaderName::from_static("interlock-translation");

/// Default `translate.max_body`.
pub const DEFAULT_MAX_BODY: u64 = 16 * 1024 * 1024;

/// Default `translate.timeout`.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Failure reasons kept per mapping for `/mappings`.
pub const KEPT_FAILURES: usize = 20;

/// What a mapping produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An OCSF event class.
    Ocsf {
        /// `1.8.0`.
        version: String,
        /// The event classes it may produce: (`class_uid`, name), e.g. (2004, `detection_finding`).
        classes: Vec<(i64, String)>,
    },
    /// Elastic Common Schema documents.
    Ecs {
        /// `8.17`.
        version: String,
    },
    /// STIX 2.1 objects or bundles.
    Stix,
}

impl Target {
    /// The media type of translated responses (and of the `Accept` value that asks for them).
    pub fn media_type(&self) -> &'static str {
        match self {
            Target::Ocsf { .. } => "application/ocsf+json",
            Target::Ecs { .. } => "application/ecs+json",
            Target::Stix => "application/stix+json;version=2.1",
        }
    }

    /// Short description.
    pub fn describe(&self) -> String {
        match self {
            Target::Ocsf { version, classes } => {
                let names: Vec<String> = classes.iter().map(|(uid, name)| format!("{name} ({uid})")).collect();
                format!("ocsf {version} {}", names.join(" or "))
            }
            Target::Ecs { version } => format!("ecs {version}"),
            Target::Stix => "stix 2.1".to_owned(),
        }
    }

    /// Whether an `Accept` header asks for this target (its media type with q > 0).
    pub fn accepted_by(&self, accept: Option<&http::HeaderValue>) -> bool {
        let Some(accept) = accept.and_then(|v| v.to_str().ok()) else { return false };
        let want = self.media_type();
        let (want_type, want_params) = want.split_once(';').unwrap_or((want, ""));
        accept.split(',').any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let ty = parts.next().unwrap_or("");
            if !ty.eq_ignore_ascii_case(want_type) {
                return false;
            }
            let mut q_ok = true;
            let mut version_ok = want_params.is_empty();
            for p in parts {
                match p.split_once('=').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"'))) {
                    Some((k, v)) if k == "q" => q_ok = v.parse::<f32>().is_ok_and(|q| q > 0.0),
                    Some((k, v)) if k == "version" => version_ok = want_params.trim() == format!("version={v}"),
                    _ => {}
                }
            }
            // `application/stix+json` without a version accepts 2.1 too.
            q_ok && (version_ok || !item.contains("version"))
        })
    }

    /// Validates one translated record; returns every problem (empty: valid).
    pub fn validate(&self, v: &Value) -> Vec<String> {
        match self {
            Target::Ocsf { classes, .. } => {
                let mut out = ocsf::bundled().validate(v);
                if let Some(c) = v.get("class_uid").and_then(Value::as_i64) {
                    if !classes.iter().any(|(uid, _)| *uid == c) {
                        let want: Vec<String> = classes.iter().map(|(uid, _)| uid.to_string()).collect();
                        out.insert(0, format!("class_uid: {c}, but the mapping's target is {}", want.join(" or ")));
                    }
                }
                out
            }
            Target::Ecs { .. } => check::ecs(v),
            Target::Stix => check::stix(v),
        }
    }
}

/// What to do with a response the mapping cannot translate validly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalid {
    /// Pass the vendor payload, with `Interlock-Translation: invalid; ...`.
    Raw,
    /// Answer 502 listing the failing fields.
    Strict,
}

/// When a route translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Only when the client's `Accept` asks for the target media type.
    Accept,
    /// Always.
    Always,
}

/// A route's `translate`.
#[derive(Debug, Clone)]
pub struct RouteTranslate {
    /// The mapping.
    pub mapping: Arc<Mapping>,
    /// When.
    pub when: When,
    /// Largest vendor body read for translation; larger ones pass raw.
    pub max_body: u64,
    /// Invalid output: raw or 502.
    pub on_invalid: OnInvalid,
    /// Longest a translation may run.
    pub timeout: std::time::Duration,
}

/// Keep or drop the envelope around a list of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// The response keeps its shape; the list holds translated records.
    Keep,
    /// The response is a JSON array of translated records.
    Drop,
}

/// Outcome counters and the first failure reasons of a mapping (kept across reloads by id).
#[derive(Debug, Default)]
pub struct MappingStats {
    /// Records translated.
    pub translated: AtomicU64,
    /// Responses that failed (invalid or program error).
    pub failed: AtomicU64,
    /// Responses passed through untranslated (not asked for, too large, not JSON, not 2xx).
    pub skipped: AtomicU64,
    failures: Mutex<VecDeque<(String, String)>>,
}

impl MappingStats {
    /// Keeps `reason` (with a time) among the first [`KEPT_FAILURES`].
    pub fn remember(&self, reason: String) {
        let mut f = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if f.len() < KEPT_FAILURES {
            f.push_back((crate::telemetry::record::rfc3339(std::time::SystemTime::now()), reason));
        }
    }

    /// The kept failures (time, reason).
    pub fn failures(&self) -> Vec<(String, String)> {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect()
    }
}

/// A compiled mapping.
#[derive(Debug)]
pub struct Mapping {
    /// Id.
    pub id: String,
    /// Where it is defined.
    pub origin: crate::config::Origin,
    /// `vendor / api / version` of the source payload.
    pub source: String,
    /// What it produces.
    pub target: Target,
    /// Path to the list of records (`resources` for `.resources[]`; empty for a bare array).
    pub each: Option<Vec<String>>,
    /// Keep or drop the envelope (with `each`).
    pub envelope: Envelope,
    /// The program.
    pub program: jq::Program,
    /// Sample vendor payloads with their expected translations.
    pub samples: Vec<Sample>,
    /// Outcomes; carried over to the reloaded mapping of the same id.
    pub stats: arc_swap::ArcSwap<MappingStats>,
    /// Set when a translation overran its deadline: the mapping is off until it is reloaded.
    pub tripped: std::sync::atomic::AtomicBool,
}

/// A sample vendor payload and its expected translation.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The vendor body.
    pub input: std::path::PathBuf,
    /// The expected output.
    pub expected: std::path::PathBuf,
}

/// Why a payload was not translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `program-error`, `invalid` or `not-json`.
    pub kind: &'static str,
    /// What failed, field by field (at most a screenful).
    pub reasons: Vec<String>,
}

impl Failure {
    /// A one-line summary for the `Interlock-Translation` header (ASCII, bounded).
    pub fn header_value(&self) -> String {
        let first: String = self
            .reasons
            .first()
            .map(String::as_str)
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"')
            .take(200)
            .collect();
        format!("{}; reasons={}; first=\"{first}\"", self.kind, self.reasons.len())
    }
}

/// What a mapping made of one vendor payload.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The translated document as the program produced it (records the program failed on are
    /// `null`), also when it does not validate.
    pub output: Value,
    /// Records translated (1 without `each`).
    pub records: usize,
    /// Program errors and validation problems, record by record; empty when it validates.
    pub reasons: Vec<String>,
    /// Whether the program itself failed (rather than its output not validating).
    pub program_failed: bool,
}

impl Mapping {
    /// Runs the program over a vendor payload and validates the result.
    pub fn translate(&self, input: &Value) -> Outcome {
        let mut reasons = Vec::new();
        let mut program_failed = false;
        let mut translate_one = |i: Option<usize>, v: &Value| -> Value {
            let at = i.map_or_else(String::new, |i| format!("record {i}: "));
            match self.program.run(v) {
                Ok(mut out) if out.len() == 1 => {
                    let o = out.pop().unwrap_or(Value::Null);
                    reasons.extend(self.target.validate(&o).into_iter().map(|p| format!("{at}{p}")));
                    o
                }
                Ok(out) => {
                    program_failed = true;
                    reasons.push(format!("{at}the program produced {} values instead of one", out.len()));
                    Value::Null
                }
                Err(e) => {
                    program_failed = true;
                    reasons.push(format!("{at}program error: {e}"));
                    Value::Null
                }
            }
        };
        let Some(path) = &self.each else {
            let output = translate_one(None, input);
            return Outcome { output, records: 1, reasons, program_failed };
        };
        let mut list_at = input;
        for seg in path {
            list_at = list_at.get(seg).unwrap_or(&Value::Null);
        }
        let items = match list_at {
            Value::Array(items) => items.as_slice(),
            // An absent list in an envelope is an empty page.
            Value::Null if !path.is_empty() => &[],
            _ => {
                let what = if path.is_empty() { "the payload".to_owned() } else { format!("`.{}`", path.join(".")) };
                return Outcome {
                    output: Value::Null,
                    records: 0,
                    reasons: vec![format!("{what} is not a list in the vendor payload")],
                    program_failed: false,
                };
            }
        };
        let list = Value::Array(items.iter().enumerate().map(|(i, v)| translate_one(Some(i), v)).collect());
        let output = match self.envelope {
            Envelope::Drop => list,
            Envelope::Keep => {
                let mut whole = input.clone();
                let mut slot = &mut whole;
                for seg in path {
                    slot = &mut slot[seg.as_str()];
                }
                *slot = list;
                whole
            }
        };
        Outcome { output, records: items.len(), reasons, program_failed }
    }

    /// Translates a vendor body: the translated body and the number of records, or why not.
    pub fn apply(&self, body: &[u8]) -> Result<(Vec<u8>, usize), Failure> {
        let input: Value = serde_json::from_slice(body)
            .map_err(|e| Failure { kind: "not-json", reasons: vec![format!("the vendor payload is not JSON: {e}")] })?;
        let mut out = self.translate(&input);
        if out.reasons.is_empty() {
            return Ok((serde_json::to_vec(&out.output).unwrap_or_default(), out.records));
        }
        out.reasons.truncate(50);
        let kind = if out.program_failed { "program-error" } else { "invalid" };
        Err(Failure { kind, reasons: out.reasons })
    }
}
