//! Compiling `policies/mappings/*.yaml` into [`Mapping`]s: the jq program compiled with jaq, the
//! target checked against the schema data built into the binary, sample files resolved.
//!
//! A jq syntax error is a config error at the program's own line in the file.

use std::path::Path;
use std::sync::Arc;

use super::raw::{RawClasses, RawMapping};
use super::yaml::Sp;
use super::{ConfigError, Origin};
use crate::translate::{jq, ocsf, Envelope, Mapping, MappingStats, Sample, Target};

/// Parses an `each` selector (`.resources[]`, `.value[]`, `.data.items[]`, `.[]`) into key segments.
pub fn parse_each(text: &str) -> Result<Vec<String>, String> {
    let t = text.trim();
    let body = t
        .strip_suffix("[]")
        .ok_or_else(|| format!("`{t}` must end with `[]`: `.resources[]`, `.value[]`, or `.[]` for a bare array"))?;
    if body == "." {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for seg in body.strip_prefix('.').unwrap_or("").split('.') {
        let ok = !seg.is_empty()
            && !seg.starts_with(|c: char| c.is_ascii_digit())
            && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok || !body.starts_with('.') {
            return Err(format!(
                "`{t}` is not a path like `.resources[]` (keys of letters, digits and `_`, joined by `.`)"
            ));
        }
        out.push(seg.to_owned());
    }
    Ok(out)
}

fn target(raw: &Sp<super::raw::RawMappingTarget>, file: &Path, out: &mut Vec<ConfigError>) -> Option<Target> {
    let t = &raw.value;
    let version = t.version.as_ref().map(|v| v.value.as_str());
    let err = |out: &mut Vec<ConfigError>, line: usize, key: &str, msg: String| {
        out.push(ConfigError::at(file, Some(line), key, msg));
    };
    match t.schema.value.as_str() {
        "ocsf" => {
            let schema = ocsf::bundled();
            if let Some(v) = &t.version {
                if v.value != schema.version {
                    err(
                        out,
                        v.line,
                        "target.version",
                        format!(
                            "OCSF `{}` is not built in (this binary validates OCSF {}); regenerate the schema data with `interlock ocsf compile`",
                            v.value, schema.version
                        ),
                    );
                    return None;
                }
            }
            let names: Vec<&Sp<String>> = match &t.class {
                None => Vec::new(),
                Some(RawClasses::One(c)) => vec![c],
                Some(RawClasses::Many(list)) => list.iter().collect(),
            };
            if names.is_empty() {
                err(
                    out,
                    raw.line,
                    "target.class",
                    "an OCSF target needs `class` (e.g. `detection_finding`, or a list of classes)".to_owned(),
                );
                return None;
            }
            let mut classes = Vec::new();
            let errors_before = out.len();
            for class in names {
                match schema.classes.iter().find(|(_, c)| c.name == class.value) {
                    Some((uid, _)) => classes.push((*uid, class.value.clone())),
                    None => {
                        let known: Vec<&str> = schema.classes.values().map(|c| c.name.as_str()).collect();
                        // A class inside an untagged list may carry no position: use the target's.
                        let line = if class.line > 0 { class.line } else { raw.line };
                        err(
                            out,
                            line,
                            "target.class",
                            format!("`{}` is not among the built-in OCSF classes ({})", class.value, known.join(", ")),
                        );
                    }
                }
            }
            if out.len() > errors_before {
                return None;
            }
            Some(Target::Ocsf { version: schema.version.clone(), classes })
        }
        "ecs" => {
            if let Some(v) = version.filter(|v| !(*v == "8.17" || v.starts_with("8.17."))) {
                err(
                    out,
                    raw.line,
                    "target.version",
                    format!("ECS `{v}` is not built in; this binary validates ECS 8.17"),
                );
                return None;
            }
            Some(Target::Ecs { version: "8.17".to_owned() })
        }
        "stix" => {
            if let Some(v) = version.filter(|v| *v != "2.1") {
                err(out, raw.line, "target.version", format!("STIX `{v}` is not supported; use 2.1"));
                return None;
            }
            Some(Target::Stix)
        }
        other => {
            err(out, t.schema.line, "target.schema", format!("`{other}`: use `ocsf`, `ecs` or `stix`"));
            None
        }
    }
}

/// The first line of a program given as `program: |` (the line after the key) or inline.
fn program_start(text: &str, sp: &Sp<String>) -> usize {
    let line = text.lines().nth(sp.line.saturating_sub(1)).unwrap_or("");
    let after_key = line.split_once("program:").map_or(line, |(_, rest)| rest).trim();
    if after_key.starts_with('|') || after_key.starts_with('>') {
        sp.line + 1
    } else {
        sp.line.max(1)
    }
}

/// Compiles one mapping file.
pub fn compile(file: &Path, text: &str, raw: RawMapping, out: &mut Vec<ConfigError>) -> Option<Mapping> {
    let before = out.len();
    let id = raw.id.value.clone();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        out.push(ConfigError::at(
            file,
            Some(raw.id.line),
            "id",
            format!("`{id}` must be letters, digits, `-`, `_` or `.`"),
        ));
    }
    let target = target(&raw.target, file, out);
    let each = match &raw.each {
        None => None,
        Some(sp) => match parse_each(&sp.value) {
            Ok(p) => Some(p),
            Err(m) => {
                out.push(ConfigError::at(file, Some(sp.line), "each", m));
                None
            }
        },
    };
    let envelope = match raw.envelope.as_ref().map(|s| (s.value.as_str(), s.line)) {
        None | Some(("keep", _)) => Envelope::Keep,
        Some(("drop", _)) => Envelope::Drop,
        Some((other, line)) => {
            out.push(ConfigError::at(file, Some(line), "envelope", format!("`{other}`: use `keep` or `drop`")));
            Envelope::Keep
        }
    };
    if raw.envelope.is_some() && raw.each.is_none() {
        out.push(ConfigError::at(
            file,
            raw.envelope.as_ref().map(|s| s.line),
            "envelope",
            "`envelope` needs `each`".to_owned(),
        ));
    }
    let here = file.parent().unwrap_or(Path::new("."));
    let (code, code_file, first_line) = match (&raw.program, &raw.program_file) {
        (Some(p), None) => (Some(p.value.clone()), file.to_path_buf(), program_start(text, p)),
        (None, Some(f)) => {
            let path = here.join(&f.value);
            match std::fs::read_to_string(&path) {
                Ok(code) => (Some(code), path, 1),
                Err(e) => {
                    out.push(ConfigError::at(
                        file,
                        Some(f.line),
                        "program_file",
                        format!("cannot read {}: {e}", path.display()),
                    ));
                    (None, path, 1)
                }
            }
        }
        (Some(p), Some(_)) => {
            out.push(ConfigError::at(
                file,
                Some(p.line),
                "program",
                "give `program` or `program_file`, not both".to_owned(),
            ));
            (None, file.to_path_buf(), 1)
        }
        (None, None) => {
            out.push(ConfigError::at(
                file,
                Some(raw.id.line),
                "program",
                "a mapping needs `program` (jq) or `program_file`".to_owned(),
            ));
            (None, file.to_path_buf(), 1)
        }
    };
    let program = code.and_then(|code| match jq::Program::compile(&code) {
        Ok(p) => Some(p),
        Err(errs) => {
            for e in errs {
                let key = if raw.program.is_some() { "program" } else { "program_file" };
                out.push(ConfigError::at(&code_file, Some(first_line + e.line - 1), key, format!("jq: {}", e.message)));
            }
            None
        }
    });
    let mut samples = Vec::new();
    for (i, s) in raw.samples.iter().enumerate() {
        let input = here.join(&s.value.input);
        let expected = here.join(&s.value.expected);
        if !input.is_file() {
            out.push(ConfigError::at(
                file,
                Some(s.line),
                &format!("samples[{i}].input"),
                format!("{} does not exist", input.display()),
            ));
        }
        samples.push(Sample { input, expected });
    }
    let source = {
        let s = &raw.source;
        match &s.version {
            Some(v) => format!("{} / {} / {}", s.vendor.value, s.api.value, v.value),
            None => format!("{} / {}", s.vendor.value, s.api.value),
        }
    };
    if out.len() > before {
        return None;
    }
    Some(Mapping {
        id,
        origin: Origin { file: file.to_path_buf(), line: raw.id.line },
        source,
        target: target?,
        each,
        envelope,
        program: program?,
        samples,
        stats: arc_swap::ArcSwap::new(Arc::new(MappingStats::default())),
        tripped: std::sync::atomic::AtomicBool::new(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_selectors() {
        assert_eq!(parse_each(".resources[]").unwrap(), vec!["resources"]);
        assert_eq!(parse_each(".data.items[]").unwrap(), vec!["data", "items"]);
        assert_eq!(parse_each(".[]").unwrap(), Vec::<String>::new());
        assert!(parse_each(".resources").unwrap_err().contains("must end with `[]`"));
        assert!(parse_each("resources[]").is_err());
        assert!(parse_each(".a..b[]").is_err());
        assert!(parse_each(".a[0][]").is_err());
    }
}
