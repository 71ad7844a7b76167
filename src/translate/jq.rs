//! jq programs, compiled once at config load with jaq and run per vendor record.
//!
//! Mapping programs run inside the gateway on vendor input, so compiling also refuses what could
//! hurt it: functions that read the process environment or other inputs (`env`, `$ENV`, `input`,
//! `inputs`, `input_filename`), print (`debug`, `stderr`) or stop it (`halt`, `halt_error`); and
//! unbounded recursion (a definition that calls itself, directly or through others, and the
//! recursive generators `repeat`, `while`, `until`, `recurse(f)`), which could exhaust the stack.
//! Recursion over the input (`..`, `walk`, `paths`) is allowed: it is bounded by the nesting depth
//! of the parsed JSON (at most 128 levels). A program that loops without recursing is stopped by
//! the route's translation deadline.

use std::collections::{BTreeMap, BTreeSet};

use jaq_core::load::parse::{BinaryOp, Pattern, Term};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, Vars};
use jaq_json::Val;
use serde_json::Value;

/// A compiled jq program.
pub struct Program {
    filter: jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Program")
    }
}

/// A compile error: the 1-based line within the program, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Line within the program text.
    pub line: usize,
    /// The message.
    pub message: String,
}

fn line_of(code: &str, fragment: &str) -> usize {
    // jaq reports errors as slices of the source: their offset gives the line.
    let start = fragment.as_ptr() as usize;
    let base = code.as_ptr() as usize;
    if start >= base && start <= base + code.len() {
        code[..start - base].matches('\n').count() + 1
    } else {
        1
    }
}

/// Built-in functions mapping programs may not call.
const FORBIDDEN: [(&str, &str); 12] = [
    ("env", "reads the gateway's environment"),
    ("input", "reads other inputs"),
    ("inputs", "reads other inputs"),
    ("input_filename", "reads other inputs"),
    ("debug", "writes to the gateway's output"),
    ("stderr", "writes to the gateway's output"),
    ("halt", "stops the program"),
    ("halt_error", "stops the program"),
    ("repeat", "recurses without bound"),
    ("while", "recurses without bound"),
    ("until", "recurses without bound"),
    ("input_line_number", "reads other inputs"),
];

/// Calls and definitions found in a program (names with the text slice that names them).
#[derive(Default)]
struct Walk<'s> {
    /// Definition name → names it calls (nested definitions included).
    defs: BTreeMap<&'s str, BTreeSet<&'s str>>,
    /// Problems (slice, message).
    problems: Vec<(&'s str, String)>,
}

impl<'s> Walk<'s> {
    fn term(&mut self, t: &Term<&'s str>, calls: &mut BTreeSet<&'s str>) {
        match t {
            Term::Id | Term::Recurse | Term::Num(_) | Term::Break(_) => {}
            Term::Var(v) => {
                if *v == "$ENV" {
                    self.problems.push((
                        v,
                        "`$ENV` is not available to mappings (it would expose the gateway's environment)".to_owned(),
                    ));
                }
            }
            Term::Str(_, parts) => {
                for p in parts {
                    if let jaq_core::load::lex::StrPart::Term(t) = p {
                        self.term(t, calls);
                    }
                }
            }
            Term::Arr(a) => {
                if let Some(a) = a {
                    self.term(a, calls);
                }
            }
            Term::Obj(kvs) => {
                for (k, v) in kvs {
                    self.term(k, calls);
                    if let Some(v) = v {
                        self.term(v, calls);
                    }
                }
            }
            Term::Neg(t) | Term::Label(_, t) => self.term(t, calls),
            Term::BinOp(l, op, r) => {
                self.term(l, calls);
                if let BinaryOp::Pipe(Some(p)) = op {
                    self.pattern(p, calls);
                }
                self.term(r, calls);
            }
            Term::Fold(_, t, p, args) => {
                self.term(t, calls);
                self.pattern(p, calls);
                for a in args {
                    self.term(a, calls);
                }
            }
            Term::TryCatch(t, c) => {
                self.term(t, calls);
                if let Some(c) = c {
                    self.term(c, calls);
                }
            }
            Term::IfThenElse(branches, otherwise) => {
                for (c, t) in branches {
                    self.term(c, calls);
                    self.term(t, calls);
                }
                if let Some(o) = otherwise {
                    self.term(o, calls);
                }
            }
            Term::Def(defs, rest) => {
                for d in defs {
                    let mut inner = BTreeSet::new();
                    self.term(&d.body, &mut inner);
                    calls.extend(inner.iter().copied());
                    self.defs.entry(d.name).or_default().extend(inner);
                }
                self.term(rest, calls);
            }
            Term::Call(name, args) => {
                if let Some((_, why)) = FORBIDDEN.iter().find(|(n, _)| n == name) {
                    self.problems.push((name, format!("`{name}` is not available to mappings ({why})")));
                }
                if *name == "recurse" && !args.is_empty() {
                    self.problems.push((
                        name,
                        "`recurse(f)` is not available to mappings (it recurses without bound); use `..` or `walk`"
                            .to_owned(),
                    ));
                }
                calls.insert(name);
                for a in args {
                    self.term(a, calls);
                }
            }
            Term::Path(t, path) => {
                self.term(t, calls);
                for (part, _) in &path.0 {
                    match part {
                        jaq_core::path::Part::Index(i) => self.term(i, calls),
                        jaq_core::path::Part::Range(a, b) => {
                            for x in [a, b].into_iter().flatten() {
                                self.term(x, calls);
                            }
                        }
                    }
                }
            }
        }
    }

    fn pattern(&mut self, p: &Pattern<&'s str>, calls: &mut BTreeSet<&'s str>) {
        match p {
            Pattern::Var(_) => {}
            Pattern::Arr(ps) => {
                for p in ps {
                    self.pattern(p, calls);
                }
            }
            Pattern::Obj(kvs) => {
                for (k, p) in kvs {
                    self.term(k, calls);
                    self.pattern(p, calls);
                }
            }
        }
    }

    /// Definitions that reach themselves through calls.
    fn recursive(&self) -> Vec<&'s str> {
        let mut out = Vec::new();
        for start in self.defs.keys() {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<&str> = self.defs[start].iter().copied().collect();
            while let Some(n) = stack.pop() {
                if n == *start {
                    out.push(*start);
                    break;
                }
                if seen.insert(n) {
                    if let Some(next) = self.defs.get(n) {
                        stack.extend(next.iter().copied());
                    }
                }
            }
        }
        out
    }
}

/// The safety checks above, on a program that parsed.
fn check_safety(code: &str) -> Vec<CompileError> {
    let Some(term) = jaq_core::load::parse(code, |p| p.term()) else { return Vec::new() };
    let mut walk = Walk::default();
    let mut calls = BTreeSet::new();
    walk.term(&term, &mut calls);
    let mut out: Vec<CompileError> =
        walk.problems.iter().map(|(at, m)| CompileError { line: line_of(code, at), message: m.clone() }).collect();
    for name in walk.recursive() {
        let at = walk.defs.keys().find(|k| **k == name).copied().unwrap_or("");
        out.push(CompileError {
            line: line_of(code, at),
            message: format!(
                "`{name}` calls itself: recursive definitions are not allowed in mappings (runaway recursion would exhaust the stack); use `..`, `walk` or `paths`"
            ),
        });
    }
    out
}

/// The source of the helpers every mapping program can call (`num`, `int`, `bool`, `ms`, `iso`,
/// `severity_id`, `score_severity_id`, `prune`, `unmapped(keys)`).
pub const PRELUDE: &str = include_str!("prelude.jq");

/// The STIX 2.1 namespace for deterministic identifiers of cyber-observable objects (UUIDv5).
const STIX_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x00abedb4_aa42_466c_9c01_fed23315a9b7);

/// A STIX identifier `TYPE--UUIDv5` for the contributing properties in `props` (canonical JSON:
/// keys sorted, no spaces), as STIX 2.1 section 2.9 specifies for observables; used for other
/// objects too, so the same vendor record always yields the same identifiers.
pub fn stix_id(ty: &str, props: &Value) -> String {
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut name = String::new();
    canonical(props, &mut name);
    format!("{ty}--{}", uuid::Uuid::new_v5(&STIX_NAMESPACE, name.as_bytes()))
}

type Native = jaq_core::native::Fun<data::JustLut<Val>>;

/// `stix_id(type)`: see [`stix_id`].
fn stix_id_native<'a>(mut cv: jaq_core::Cv<'a, data::JustLut<Val>>) -> jaq_core::ValXs<'a, Val> {
    let ty = cv.0.pop_var();
    let props: Result<Value, _> = serde_json::from_str(&cv.1.to_string());
    let out = match (ty, props) {
        (Val::TStr(t), Ok(props)) => Ok(Val::utf8_str(stix_id(&String::from_utf8_lossy(&t), &props).into_bytes())),
        _ => Err(jaq_core::Error::str("stix_id: the argument must be a type name string, the input JSON")),
    };
    jaq_core::native::bome(out)
}

/// Interlock's native functions: `stix_id(type)`.
fn natives() -> impl Iterator<Item = Native> {
    let run: jaq_core::RunPtr<data::JustLut<Val>> = stix_id_native;
    [("stix_id", jaq_core::native::v(1), jaq_core::Native::<data::JustLut<Val>>::new(run))].into_iter()
}

fn prelude() -> impl Iterator<Item = jaq_core::load::parse::Def<&'static str>> {
    // Tested below: the prelude parses.
    jaq_core::load::parse(PRELUDE, |p| p.defs()).unwrap_or_default().into_iter()
}

impl Program {
    /// Parses and compiles `code` with jq's standard library (jaq-std, jaq-json).
    pub fn compile(code: &str) -> Result<Program, Vec<CompileError>> {
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs()).chain(prelude());
        let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs()).chain(natives());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader.load(&arena, File { code, path: () }).map_err(|errs| {
            errs.into_iter()
                .flat_map(|(_file, e)| match e {
                    jaq_core::load::Error::Io(list) => list
                        .into_iter()
                        .map(|(path, msg)| CompileError { line: 1, message: format!("{path}: {msg}") })
                        .collect(),
                    jaq_core::load::Error::Lex(list) => list
                        .into_iter()
                        .map(|(expect, at)| CompileError {
                            line: line_of(code, at),
                            message: format!("expected {}", expect.as_str()),
                        })
                        .collect(),
                    jaq_core::load::Error::Parse(list) => list
                        .into_iter()
                        .map(|(expect, at)| CompileError {
                            line: line_of(code, at),
                            message: format!(
                                "expected {}, found `{}`",
                                expect.as_str(),
                                at.chars().take(20).collect::<String>()
                            ),
                        })
                        .collect::<Vec<_>>(),
                })
                .collect::<Vec<_>>()
        })?;
        let filter = Compiler::default().with_funs(funs).compile(modules).map_err(|errs| {
            errs.into_iter()
                .flat_map(|(_file, list)| {
                    list.into_iter().map(|(name, undef)| CompileError {
                        line: line_of(code, name),
                        message: format!("undefined {} `{name}`", undef.as_str()),
                    })
                })
                .collect::<Vec<_>>()
        })?;
        let unsafe_parts = check_safety(code);
        if !unsafe_parts.is_empty() {
            return Err(unsafe_parts);
        }
        Ok(Program { filter })
    }

    /// Runs the program on `input`; every output, or the first error.
    pub fn run(&self, input: &Value) -> Result<Vec<Value>, String> {
        let text = input.to_string();
        let val = jaq_json::read::parse_single(text.as_bytes()).map_err(|e| format!("input: {e}"))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for r in self.filter.id.run((ctx, val)).map(unwrap_valr) {
            let v = r.map_err(|e| e.to_string())?;
            let s = v.to_string();
            out.push(
                serde_json::from_str(&s)
                    .map_err(|e| format!("output is not JSON ({e}): {}", s.chars().take(80).collect::<String>()))?,
            );
            if out.len() > 10_000 {
                return Err("the program produced more than 10000 outputs".to_owned());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(code: &str) -> Vec<String> {
        Program::compile(code)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| format!("{}: {}", e.line, e.message))
            .collect()
    }

    #[test]
    fn runs_and_reports_lines() {
        let p = Program::compile("{a: .x, b: (.y // \"none\")}").unwrap();
        assert_eq!(p.run(&serde_json::json!({"x": 1})).unwrap(), vec![serde_json::json!({"a": 1, "b": "none"})]);
        let e = errors("{a: .x,\n b: (.y | ]\n}");
        assert!(e[0].starts_with("2: "), "{e:?}");
        let e = errors(".a |\n nosuchfn(1)");
        assert!(e[0].starts_with("2: ") && e[0].contains("nosuchfn"), "{e:?}");
        // A runtime error is an error, not a panic.
        assert!(Program::compile(".a.b").unwrap().run(&serde_json::json!({"a": "s"})).is_err());
    }

    const EXPECTED_IPV4_ID: &str = "ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4";

    #[test]
    fn stix_ids_follow_the_stix_namespace() {
        // STIX 2.1 section 2.9: ipv4-addr with value 198.51.100.3 (computed independently with
        // Python's uuid.uuid5 over the canonical JSON `{"value":"198.51.100.3"}`).
        let p = Program::compile("stix_id(\"ipv4-addr\")").unwrap();
        let got = p.run(&serde_json::json!({"value": "198.51.100.3"})).unwrap().remove(0);
        assert_eq!(got, serde_json::json!(stix_id("ipv4-addr", &serde_json::json!({"value": "198.51.100.3"}))));
        assert_eq!(got, serde_json::json!(EXPECTED_IPV4_ID));
        // Key order does not matter.
        assert_eq!(
            stix_id("file", &serde_json::json!({"b": 1, "a": 2})),
            stix_id("file", &serde_json::json!({"a": 2, "b": 1}))
        );
    }

    #[test]
    fn prelude_helpers() {
        assert!(jaq_core::load::parse(PRELUDE, |p| p.defs()).is_some());
        let run = |code: &str, input: serde_json::Value| Program::compile(code).unwrap().run(&input).unwrap().remove(0);
        use serde_json::json;
        assert_eq!(
            run(
                "map(ms)",
                json!([
                    "2026-11-30T14:02:09.120Z",
                    "2026-11-30T14:02:09Z",
                    "2026-11-30T14:02:09.5123456Z",
                    "2026-11-30T16:02:09.12+02:00",
                    "1796047329",
                    1796047329,
                    1796047329120_i64,
                    "soon",
                    null
                ])
            ),
            json!([
                1796047329120_i64,
                1796047329000_i64,
                1796047329512_i64,
                1796047329120_i64,
                1796047329000_i64,
                1796047329000_i64,
                1796047329120_i64,
                null,
                null
            ])
        );
        assert_eq!(
            run("map(iso)", json!([1796047329120_i64, "2026-11-30T14:02:09Z"])),
            json!(["2026-11-30T14:02:09.120Z", "2026-11-30T14:02:09.000Z"])
        );
        assert_eq!(run("map(num)", json!(["42", 7, "x", null, "0.5"])), json!([42, 7, null, null, 0.5]));
        assert_eq!(run("map(bool)", json!(["true", "FALSE", false, "no", 1])), json!([true, false, false, null, null]));
        assert_eq!(run("map(severity_id)", json!(["High", "informational", "weird", null])), json!([4, 1, 99, 0]));
        assert_eq!(run("map(score_severity_id)", json!([5, "30", 59, 79, 100, null])), json!([1, 2, 3, 4, 5, 0]));
        assert_eq!(run("prune", json!({"a": null, "b": {"c": ""}, "d": [null, 1], "e": 0})), json!({"d": [1], "e": 0}));
        assert_eq!(run("unmapped([\"a\"])", json!({"a": 1, "b": 2})), json!({"b": 2}));
        assert_eq!(run("unmapped([\"a\"])", json!({"a": 1})), json!(null));
    }

    #[test]
    fn refuses_what_could_hurt_the_gateway() {
        for (code, word) in [
            ("def f: 1 + f; f", "calls itself"),
            ("def f: def g: f; g; f", "calls itself"),
            ("env.HOME", "`env`"),
            ("$ENV.HOME", "`$ENV`"),
            ("[repeat(1)] | length", "`repeat`"),
            ("[recurse(. + 1)]", "recurse(f)"),
            ("input", "`input`"),
            ("{x: (. | debug)}", "`debug`"),
        ] {
            let e = errors(code);
            assert!(e.iter().any(|m| m.contains(word)), "{code}: {e:?}");
        }
        // Recursion over the input is fine.
        let p = Program::compile("[..] | length").unwrap();
        assert_eq!(p.run(&serde_json::json!({"a": [1, 2]})).unwrap(), vec![serde_json::json!(4)]);
        assert!(Program::compile("walk(if type == \"string\" then ascii_downcase else . end)").is_ok());
        assert!(Program::compile("def f(x): x + 1; def g: f(2); g").is_ok());
    }
}
