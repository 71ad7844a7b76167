//! ECS and STIX validation.
//!
//! ECS: every field of the document must be an ECS 8.17 field (from the ECS field list compiled into
//! `data/ecs-8.17.0.tsv`, Apache-2.0, see `data/ECS-NOTICE`) or lie under an `object`/`flattened`
//! field, with a value of its type; `@timestamp` is required.
//!
//! STIX 2.1: objects and bundles are checked for their type's required properties (taken from the
//! STIX 2.1 JSON schemas), identifier form (`type--UUID`), timestamp form (RFC 3339, UTC, `Z`),
//! `spec_version: "2.1"` on domain and relationship objects, and references that name identifiers.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

fn ecs_fields() -> &'static HashMap<&'static str, &'static str> {
    static F: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    F.get_or_init(|| {
        include_str!("data/ecs-8.17.0.tsv")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('\t'))
            .collect()
    })
}

fn ecs_type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "keyword" | "text" | "match_only_text" | "wildcard" | "constant_keyword" => v.is_string(),
        "long" | "integer" | "short" | "byte" => v.is_i64() || v.is_u64(),
        "unsigned_long" => v.is_u64(),
        "float" | "double" | "scaled_float" | "half_float" => v.is_number(),
        "boolean" => v.is_boolean(),
        "date" => v.as_str().is_some_and(|s| super::ocsf::check_format("datetime_t", s).is_none()) || v.is_i64(),
        "ip" => v.as_str().is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()),
        "geo_point" => v.is_object() || v.is_array() || v.is_string(),
        "object" | "flattened" | "nested" => v.is_object() || v.is_array(),
        _ => true,
    }
}

/// Validates one ECS document.
pub fn ecs(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(obj) = doc.as_object() else { return vec!["the document is not a JSON object".to_owned()] };
    if !obj.contains_key("@timestamp") {
        out.push("@timestamp: required field missing".to_owned());
    }
    walk_ecs(obj, &mut String::with_capacity(64), &mut out);
    out
}

/// Checks the fields of `obj`, which sits at `path` (dotted; one buffer for the whole walk).
fn walk_ecs(obj: &serde_json::Map<String, Value>, path: &mut String, out: &mut Vec<String>) {
    let fields = ecs_fields();
    for (k, v) in obj {
        if v.is_null() {
            continue;
        }
        let len = path.len();
        if len > 0 {
            path.push('.');
        }
        path.push_str(k);
        match fields.get(path.as_str()) {
            Some(ty) if matches!(*ty, "object" | "flattened" | "nested") => {
                if !ecs_type_ok(ty, v) {
                    out.push(format!("{path}: expected {ty}"));
                }
            }
            Some(ty) => {
                let items: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                for item in items {
                    if !ecs_type_ok(ty, item) {
                        out.push(format!("{path}: expected {ty}, got {item}"));
                        break;
                    }
                }
            }
            None => match v {
                Value::Object(inner) => walk_ecs(inner, path, out),
                _ => out.push(format!("{path}: not an ECS 8.17 field")),
            },
        }
        path.truncate(len);
    }
}

/// Required properties of STIX 2.1 object types (from the STIX 2.1 JSON schemas).
fn stix_required(ty: &str) -> Option<(&'static [&'static str], bool)> {
    // (required, is a domain/relationship object needing created/modified/spec_version)
    Some(match ty {
        "attack-pattern" | "campaign" | "course-of-action" | "identity" | "incident" | "infrastructure"
        | "intrusion-set" | "threat-actor" | "tool" | "vulnerability" => (&["name"], true),
        "grouping" => (&["context", "object_refs"], true),
        "indicator" => (&["pattern", "pattern_type", "valid_from"], true),
        "location" => (&[], true),
        "malware" => (&["is_family"], true),
        "malware-analysis" => (&["product"], true),
        "note" => (&["content", "object_refs"], true),
        "observed-data" => (&["first_observed", "last_observed", "number_observed"], true),
        "opinion" => (&["object_refs", "opinion"], true),
        "report" => (&["name", "object_refs", "published"], true),
        "relationship" => (&["relationship_type", "source_ref", "target_ref"], true),
        "sighting" => (&["sighting_of_ref"], true),
        "autonomous-system" => (&["number"], false),
        "directory" => (&["path"], false),
        "domain-name" | "email-addr" | "ipv4-addr" | "ipv6-addr" | "mac-addr" | "url" => (&["value"], false),
        "mutex" | "software" => (&["name"], false),
        "network-traffic" => (&["protocols"], false),
        "artifact"
        | "email-message"
        | "file"
        | "process"
        | "user-account"
        | "windows-registry-key"
        | "x509-certificate" => (&[], false),
        _ => return None,
    })
}

fn stix_id_ok(id: &str, ty: &str) -> bool {
    id.strip_prefix(ty)
        .and_then(|r| r.strip_prefix("--"))
        .is_some_and(|u| super::ocsf::check_format("uuid_t", u).is_none())
}

fn stix_timestamp_ok(s: &str) -> bool {
    super::ocsf::check_format("datetime_t", s).is_none() && s.ends_with('Z') && s.as_bytes().get(10) == Some(&b'T')
}

/// Validates a STIX 2.1 object or bundle.
pub fn stix(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    stix_object(v, "", &mut out);
    out
}

fn stix_object(v: &Value, at: &str, out: &mut Vec<String>) {
    let p = |k: &str| if at.is_empty() { k.to_owned() } else { format!("{at}.{k}") };
    let Some(obj) = v.as_object() else {
        out.push(format!("{}: not a JSON object", if at.is_empty() { "object" } else { at }));
        return;
    };
    let Some(ty) = obj.get("type").and_then(Value::as_str) else {
        out.push(format!("{}: required property missing", p("type")));
        return;
    };
    match obj.get("id").and_then(Value::as_str) {
        Some(id) if stix_id_ok(id, ty) => {}
        Some(id) => out.push(format!("{}: `{id}` is not `{ty}--<UUID>`", p("id"))),
        None => out.push(format!("{}: required property missing", p("id"))),
    }
    if ty == "bundle" {
        match obj.get("objects") {
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    stix_object(item, &p(&format!("objects[{i}]")), out);
                }
            }
            None => {}
            Some(_) => out.push(format!("{}: must be a list", p("objects"))),
        }
        return;
    }
    let Some((required, sdo)) = stix_required(ty) else {
        if !ty.starts_with("x-") {
            out.push(format!("{}: `{ty}` is not a STIX 2.1 type", p("type")));
        }
        return;
    };
    let mut need: Vec<&str> = required.to_vec();
    if sdo {
        need.extend(["spec_version", "created", "modified"]);
    }
    for k in need {
        if obj.get(k).is_none_or(Value::is_null) {
            out.push(format!("{}: required property missing", p(k)));
        }
    }
    if let Some(sv) = obj.get("spec_version") {
        if sv != "2.1" {
            out.push(format!("{}: must be \"2.1\"", p("spec_version")));
        }
    }
    for (k, val) in obj {
        let ts = matches!(
            k.as_str(),
            "created"
                | "modified"
                | "valid_from"
                | "valid_until"
                | "first_observed"
                | "last_observed"
                | "published"
                | "first_seen"
                | "last_seen"
        );
        if ts && !val.as_str().is_some_and(stix_timestamp_ok) {
            out.push(format!("{}: not an RFC 3339 UTC timestamp (…T…Z)", p(k)));
        }
        if k.ends_with("_ref") && !val.as_str().is_some_and(|r| r.contains("--")) {
            out.push(format!("{}: not an identifier", p(k)));
        }
        if k.ends_with("_refs")
            && !val.as_array().is_some_and(|a| a.iter().all(|r| r.as_str().is_some_and(|r| r.contains("--"))))
        {
            out.push(format!("{}: not a list of identifiers", p(k)));
        }
        if k == "confidence" && val.as_u64().is_none_or(|c| c > 100) {
            out.push(format!("{}: must be an integer 0-100", p(k)));
        }
    }
    if ty == "indicator" && obj.get("pattern_type").and_then(Value::as_str) == Some("stix") {
        if let Some(pat) = obj.get("pattern").and_then(Value::as_str) {
            if !(pat.trim_start().starts_with('[') && pat.trim_end().ends_with(']')) {
                out.push(format!("{}: a STIX pattern is `[object:property = 'value']`", p("pattern")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stix_requirements() {
        let good = json!({"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": [
            {"type": "ipv4-addr", "id": "ipv4-addr--ff26c055-6336-5bc5-b98d-13d6226742dd", "value": "198.51.100.3"},
            {"type": "indicator", "spec_version": "2.1", "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
             "created": "2026-12-03T10:00:00.000Z", "modified": "2026-12-03T10:00:00.000Z",
             "pattern": "[ipv4-addr:value = '198.51.100.3']", "pattern_type": "stix", "valid_from": "2026-12-03T10:00:00Z",
             "confidence": 80}
        ]});
        assert_eq!(stix(&good), Vec::<String>::new());
        let bad = json!({"type": "indicator", "id": "indicator--nope", "spec_version": "2.0", "created": "yesterday", "confidence": 200});
        let problems = stix(&bad);
        for p in [
            "id: `indicator--nope`",
            "pattern: required",
            "spec_version: must be",
            "created: not an RFC 3339",
            "confidence: must be",
            "modified: required",
        ] {
            assert!(problems.iter().any(|x| x.starts_with(p)), "{p}: {problems:#?}");
        }
    }

    #[test]
    fn ecs_fields_and_types() {
        let good = json!({"@timestamp": "2026-12-03T10:00:00Z", "event": {"kind": "alert", "severity": 73}, "host": {"ip": ["10.0.0.1"]}, "labels": {"x": "y"}});
        assert_eq!(ecs(&good), Vec::<String>::new());
        let bad = json!({"event": {"severity": "high", "colour": "red"}, "host": {"ip": "not-an-ip", "x": {"y": 1}}, "zz": 1});
        let p = ecs(&bad);
        assert!(p.iter().any(|x| x.starts_with("@timestamp")), "{p:#?}");
        assert!(p.iter().any(|x| x.starts_with("event.severity: expected long")), "{p:#?}");
        assert!(p.iter().any(|x| x.starts_with("event.colour: not an ECS")), "{p:#?}");
        assert!(p.iter().any(|x| x.starts_with("host.ip: expected ip")), "{p:#?}");
        assert!(p.iter().any(|x| x == "host.x.y: not an ECS 8.17 field"), "{p:#?}");
        assert!(p.iter().any(|x| x == "zz: not an ECS 8.17 field"), "{p:#?}");
    }
}
