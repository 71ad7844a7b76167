//! Running a mapping over its sample payloads: what `interlock test` reports.

use serde_json::Value;

use super::Mapping;

/// The result of one sample.
#[derive(Debug)]
pub struct SampleResult {
    /// The sample's vendor payload file.
    pub input: std::path::PathBuf,
    /// Records translated.
    pub records: usize,
    /// Program errors and validation problems.
    pub problems: Vec<String>,
    /// Differences from the expected output, one per line (`$.a.b: expected 1, got 2`).
    pub diff: Vec<String>,
    /// The translation, for `--update`.
    pub output: Value,
}

impl SampleResult {
    /// Whether the sample translated, validated and matched.
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.diff.is_empty()
    }
}

/// Translates every sample of `m` and compares each with its expected output.
pub fn run(m: &Mapping) -> Vec<SampleResult> {
    m.samples
        .iter()
        .map(|s| {
            let fail = |why: String| SampleResult {
                input: s.input.clone(),
                records: 0,
                problems: vec![why],
                diff: Vec::new(),
                output: Value::Null,
            };
            let input = match read_json(&s.input) {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            let out = m.translate(&input);
            let mut problems = out.reasons;
            problems.extend(engines_disagree(m, &input));
            let diff = match read_json(&s.expected) {
                Ok(expected) => {
                    let mut d = Vec::new();
                    diff("$", &expected, &out.output, &mut d);
                    d
                }
                Err(e) => vec![e],
            };
            SampleResult { input: s.input.clone(), records: out.records, problems, diff, output: out.output }
        })
        .collect()
}

/// Records on which the fast path answers differently from jaq (a bug in the gateway, never in
/// the mapping): checked on every sample, so `interlock test` catches it before a deployment does.
fn engines_disagree(m: &Mapping, input: &Value) -> Vec<String> {
    let records: Vec<&Value> = match &m.each {
        None => vec![input],
        Some(path) => {
            let mut at = input;
            for seg in path {
                at = at.get(seg).unwrap_or(&Value::Null);
            }
            at.as_array().map(|a| a.iter().collect()).unwrap_or_default()
        }
    };
    let mut out = Vec::new();
    for (i, r) in records.into_iter().enumerate() {
        let Some(fast) = m.program.run_fast(r) else { continue };
        let jaq = m.program.run_jaq(r);
        if jaq.as_ref().ok() != Some(&fast) {
            out.push(format!(
                "record {i}: the gateway's fast path and jaq disagree (a gateway bug: please report it with this sample); fast path: {}, jaq: {}",
                Value::from(fast),
                jaq.map_or_else(|e| e, |v| Value::from(v).to_string())
            ));
        }
    }
    out
}

fn read_json(p: &std::path::Path) -> Result<Value, String> {
    let text = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{} is not JSON: {e}", p.display()))
}

/// The differences between two documents, by path; at most 40 lines.
pub fn diff(at: &str, expected: &Value, got: &Value, out: &mut Vec<String>) {
    const MAX: usize = 40;
    if out.len() >= MAX || expected == got {
        return;
    }
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            for (k, ev) in e {
                let p = format!("{at}.{k}");
                match g.get(k) {
                    Some(gv) => diff(&p, ev, gv, out),
                    None if out.len() < MAX => out.push(format!("{p}: expected {}, missing", short(ev))),
                    None => {}
                }
            }
            for (k, gv) in g {
                if !e.contains_key(k) && out.len() < MAX {
                    out.push(format!("{at}.{k}: not expected, got {}", short(gv)));
                }
            }
        }
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() => {
            for (i, (ev, gv)) in e.iter().zip(g).enumerate() {
                diff(&format!("{at}[{i}]"), ev, gv, out);
            }
        }
        (Value::Array(e), Value::Array(g)) => {
            out.push(format!("{at}: expected {} elements, got {}", e.len(), g.len()));
        }
        _ => out.push(format!("{at}: expected {}, got {}", short(expected), short(got))),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_names_each_difference_by_path() {
        let mut d = Vec::new();
        diff(
            "$",
            &json!({"a": 1, "b": {"c": "x", "gone": true}, "l": [1, 2], "m": [1]}),
            &json!({"a": 2, "b": {"c": "x", "new": null}, "l": [1, 3], "m": [1, 2]}),
            &mut d,
        );
        assert_eq!(
            d,
            vec![
                "$.a: expected 1, got 2",
                "$.b.gone: expected true, missing",
                "$.b.new: not expected, got null",
                "$.l[1]: expected 2, got 3",
                "$.m: expected 1 elements, got 2",
            ]
        );
        let mut none = Vec::new();
        diff("$", &json!({"x": [1]}), &json!({"x": [1]}), &mut none);
        assert!(none.is_empty());
    }
}
