//! jq programs, compiled once at config load with jaq and run per vendor record (on the fast path
//! of [`super::fast`] when the program and the record allow, on jaq otherwise).
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

use jaq_core::load::parse::{BinaryOp, Def, Pattern, Term};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, Vars};
use jaq_json::Val;
use serde_json::Value;

/// A compiled jq program.
pub struct Program {
    filter: jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>,
    /// The same program on the fast path, when it is written in the part of jq that covers.
    fast: Result<super::fast::Fast, String>,
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

/// Deepest nesting a program may have: brackets, and terms within terms (a chain of `|` nests
/// too). jaq parses, compiles and runs programs recursively, so a program nested thousands deep
/// would exhaust a thread's stack; mappings nest a few dozen deep.
const MAX_NESTING: usize = 256;

/// Most `|` and `,` within one pair of brackets (the parser recurses along such a chain; see
/// [`COMPILE_STACK`]).
const MAX_CHAIN: usize = 50_000;

/// The stack programs are compiled on: the parser, the compilers and the rewriting passes recurse
/// along a chain of `|` or `,` (about 500 bytes a step), so a long literal list needs more than
/// the 2 MiB of a worker thread. Only the pages used are ever touched.
const COMPILE_STACK: usize = 64 << 20;

/// Refuses programs nested deeper than [`MAX_NESTING`]: brackets by a scan of the text (before
/// the parser recurses into them), then terms within terms, iteratively, on the parsed program.
fn check_nesting(code: &str) -> Result<(), CompileError> {
    let too_deep = |at: usize| {
        CompileError {
        line: code[..at].matches('\n').count() + 1,
        message: format!(
            "the program nests deeper than {MAX_NESTING} levels (brackets, or a long chain of `|`): split it into definitions"
        ),
    }
    };
    // Brackets, skipping strings and comments; `\(...)` inside a string is code again. The
    // parser also recurses along a chain of `|` or `,`: their number within one pair of brackets
    // is bounded too (generously: long literal lists are fine).
    let (mut depth, mut in_string) = (0usize, false);
    let mut chain: Vec<usize> = vec![0];
    let mut interpolations: Vec<usize> = Vec::new();
    let mut chars = code.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if in_string {
            match c {
                '\\' if chars.peek().is_some_and(|(_, n)| *n == '(') => {
                    chars.next();
                    in_string = false;
                    depth += 1;
                    chain.push(0);
                    interpolations.push(depth);
                }
                '\\' => {
                    chars.next();
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '#' => {
                for (_, n) in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
            }
            '"' => in_string = true,
            '(' | '[' | '{' => {
                depth += 1;
                chain.push(0);
                if depth > MAX_NESTING {
                    return Err(too_deep(at));
                }
            }
            ')' | ']' | '}' => {
                if c == ')' && interpolations.last() == Some(&depth) {
                    interpolations.pop();
                    in_string = true;
                }
                depth = depth.saturating_sub(1);
                if chain.len() > 1 {
                    chain.pop();
                }
            }
            '|' | ',' => {
                if let Some(n) = chain.last_mut() {
                    *n += 1;
                    if *n > MAX_CHAIN {
                        return Err(CompileError {
                            line: code[..at].matches('\n').count() + 1,
                            message: format!(
                                "more than {MAX_CHAIN} `|` or `,` within one pair of brackets: split the program into definitions"
                            ),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    // Terms within terms (what the text scan cannot see: `a | b | c ...` nests to the right).
    // Literal lists and objects do not count: they become constants before anything recurses
    // into them, so lookup tables may be long.
    let Some(mut term) = jaq_core::load::parse(code, |p| p.term()) else { return Ok(()) };
    let mut stack: Vec<(&mut Term<&str>, usize)> = vec![(&mut term, 1)];
    while let Some((t, d)) = stack.pop() {
        if d > MAX_NESTING {
            return Err(too_deep(0));
        }
        if constant(t).is_none() {
            children(t, &mut |c| stack.push((c, d + 1)));
        }
    }
    Ok(())
}

/// The name the program is compiled under.
const MAIN: &str = "__interlock_main";

/// A literal list or object (of at least two items, all literals) as JSON text.
pub(super) fn constant(t: &Term<&str>) -> Option<Value> {
    use jaq_core::load::lex::StrPart;
    let scalar = |t: &Term<&str>| -> Option<Value> {
        match t {
            Term::Num(n) => serde_json::from_str::<serde_json::Number>(n).ok().map(Value::Number),
            Term::Str(None, parts) => {
                let mut out = String::new();
                for p in parts {
                    match p {
                        StrPart::Str(s) => out.push_str(s),
                        StrPart::Char(c) => out.push(*c),
                        StrPart::Term(_) => return None,
                    }
                }
                Some(Value::String(out))
            }
            Term::Call("true", a) if a.is_empty() => Some(Value::Bool(true)),
            Term::Call("false", a) if a.is_empty() => Some(Value::Bool(false)),
            Term::Call("null", a) if a.is_empty() => Some(Value::Null),
            Term::Neg(x) => match &**x {
                Term::Num(n) => serde_json::from_str::<serde_json::Number>(&format!("-{n}")).ok().map(Value::Number),
                _ => None,
            },
            _ => None,
        }
    };
    fn items<'a>(t: &'a Term<&'a str>, out: &mut Vec<&'a Term<&'a str>>) {
        match t {
            Term::BinOp(l, BinaryOp::Comma, r) => {
                items(l, out);
                items(r, out);
            }
            other => out.push(other),
        }
    }
    let any = |t: &Term<&str>| scalar(t).or_else(|| constant(t));
    match t {
        Term::Arr(Some(inner)) => {
            let mut list = Vec::new();
            items(inner, &mut list);
            let values: Option<Vec<Value>> = list.into_iter().map(any).collect();
            values.filter(|v| v.len() >= 2).map(Value::Array)
        }
        Term::Obj(kvs) if kvs.len() >= 2 => {
            let mut map = serde_json::Map::new();
            for (k, v) in kvs {
                let Some(Value::String(k)) = scalar(k) else { return None };
                map.insert(k, any(v.as_ref()?)?);
            }
            Some(Value::Object(map))
        }
        _ => None,
    }
}

/// Calls `f` on every direct sub-term of `t`.
fn children<'t, 's>(t: &'t mut Term<&'s str>, f: &mut impl FnMut(&'t mut Term<&'s str>)) {
    use jaq_core::path::Part;
    match t {
        Term::Obj(kvs) => {
            for (k, v) in kvs.iter_mut() {
                f(k);
                if let Some(v) = v {
                    f(v);
                }
            }
        }
        Term::Str(_, parts) => {
            for p in parts {
                if let jaq_core::load::lex::StrPart::Term(x) = p {
                    f(x);
                }
            }
        }
        Term::Arr(Some(x)) | Term::Neg(x) | Term::Label(_, x) => f(x),
        Term::BinOp(l, _, r) => {
            f(l);
            f(r);
        }
        Term::Fold(_, x, _, args) => {
            f(x);
            args.iter_mut().for_each(f);
        }
        Term::TryCatch(x, c) => {
            f(x);
            if let Some(c) = c {
                f(c);
            }
        }
        Term::IfThenElse(branches, otherwise) => {
            for (c, b) in branches {
                f(c);
                f(b);
            }
            if let Some(o) = otherwise {
                f(o);
            }
        }
        Term::Def(defs, body) => {
            for d in defs {
                f(&mut d.body);
            }
            f(body);
        }
        Term::Call(_, args) => args.iter_mut().for_each(f),
        Term::Path(head, path) => {
            f(head);
            for (part, _) in &mut path.0 {
                match part {
                    Part::Index(i) => f(i),
                    Part::Range(a, b) => {
                        for x in [a, b].into_iter().flatten() {
                            f(x);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// The JSON text of every literal list and object of a program (outermost ones), and of the
/// key lists of object constructions with literal keys.
fn collect_constants(t: &mut Term<&str>, out: &mut BTreeSet<String>) {
    if let Some(v) = constant(t) {
        out.insert(v.to_string());
        return;
    }
    if let Term::Obj(kvs) = t {
        if let Some(keys) = literal_keys(kvs) {
            out.extend(key_groups(&keys));
        }
    }
    // (`children` hands out mutable sub-terms; nothing is changed here.)
    children(t, &mut |c| collect_constants(c, out));
}

/// Replaces literal lists and objects by `__const("<json>")`: built once, shared by every run
/// (jaq would otherwise build `{"new": 1, "closed": 4}` key by key on every evaluation).
fn fold_constants<'s>(t: &mut Term<&'s str>, texts: &'s BTreeSet<String>) {
    use jaq_core::load::lex::StrPart;
    if let Some(text) = constant(t).and_then(|v| texts.get(&v.to_string())) {
        *t = Term::Call("__const", vec![Term::Str(None, vec![StrPart::Str(text.as_str())])]);
        return;
    }
    children(t, &mut |c| fold_constants(c, texts));
}

/// The keys of an object construction whose keys are all literal strings and whose values are all
/// given (`{a: f, "b": g}`, not `{(f): g}` or `{a}`).
fn literal_keys(kvs: &[(Term<&str>, Option<Term<&str>>)]) -> Option<Vec<String>> {
    use jaq_core::load::lex::StrPart;
    kvs.iter()
        .map(|(k, v)| {
            v.as_ref()?;
            let Term::Str(None, parts) = k else { return None };
            let mut key = String::new();
            for p in parts {
                match p {
                    StrPart::Str(s) => key.push_str(s),
                    StrPart::Char(c) => key.push(*c),
                    StrPart::Term(_) => return None,
                }
            }
            Some(key)
        })
        .collect()
}

/// The JSON text of each group of keys `build_objects` passes to one `__objN`.
fn key_groups(keys: &[String]) -> impl Iterator<Item = String> + '_ {
    keys.chunks(super::native::OBJ_MAX).map(|c| Value::from(c.to_vec()).to_string())
}

/// Rewrites object constructions for speed; what they produce is unchanged.
///
/// jaq builds `{a: f, b: g, c: h}` as `{a: f} + ({b: g} + {c: h})`, copying the growing right-hand
/// object into each one-key left-hand one: quadratic in the number of keys, and its allocations
/// dominated translating records with a few dozen fields. With literal keys, the construction
/// becomes one native call, `__obj3(["a","b","c"]; f; g; h)` (the key list built once), which
/// makes the object in one step; other constructions are folded left, `(({a: f} + {b: g}) + {c: h})`,
/// which extends one object in place. The outputs, their order when values are generators (the
/// first key varies slowest), and "the last duplicate key wins" are as before.
fn build_objects<'s>(t: &mut Term<&'s str>, texts: &'s BTreeSet<String>) {
    use jaq_core::load::lex::StrPart;
    children(t, &mut |c| build_objects(c, texts));
    let Term::Obj(kvs) = t else { return };
    let add = |l: Term<&'s str>, r: Term<&'s str>| {
        Term::BinOp(Box::new(l), BinaryOp::Math(jaq_core::ops::Math::Add), Box::new(r))
    };
    if let Some(keys) = literal_keys(kvs).filter(|k| k.len() >= 2) {
        let mut entries = std::mem::take(kvs).into_iter();
        let mut built: Option<Term<&'s str>> = None;
        for (group, text) in keys.chunks(super::native::OBJ_MAX).zip(key_groups(&keys)) {
            let part = match (group.len(), texts.get(&text)) {
                (n, Some(text)) if n >= 2 => {
                    let keys = Term::Call("__const", vec![Term::Str(None, vec![StrPart::Str(text.as_str())])]);
                    let values = entries.by_ref().take(n).filter_map(|(_, v)| v);
                    Term::Call(super::native::OBJ_NAMES[n], std::iter::once(keys).chain(values).collect())
                }
                (n, _) => Term::Obj(entries.by_ref().take(n).collect()),
            };
            built = Some(match built {
                None => part,
                Some(acc) => add(acc, part),
            });
        }
        if let Some(b) = built {
            *t = b;
        }
    } else if kvs.len() > 2 {
        let mut entries = std::mem::take(kvs).into_iter();
        let first = Term::Obj(entries.next().into_iter().collect());
        *t = entries.fold(first, |acc, kv| add(acc, Term::Obj(vec![kv])));
    }
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

/// The prelude's definitions, without those `natives` implements (all of them for `jq_only`).
fn prelude(jq_only: bool) -> impl Iterator<Item = jaq_core::load::parse::Def<&'static str>> {
    // Tested below: the prelude parses.
    jaq_core::load::parse(PRELUDE, |p| p.defs())
        .unwrap_or_default()
        .into_iter()
        .filter(move |d| jq_only || !super::native::REPLACED.contains(&d.name))
}

impl Program {
    /// Parses and compiles `code` with jq's standard library (jaq-std, jaq-json).
    pub fn compile(code: &str) -> Result<Program, Vec<CompileError>> {
        // On a thread of its own, with a stack for long programs (see `COMPILE_STACK`).
        std::thread::scope(|s| {
            let compiler = std::thread::Builder::new()
                .name("interlock-jq".to_owned())
                .stack_size(COMPILE_STACK)
                .spawn_scoped(s, || Program::compile_with(code, false));
            match compiler {
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    Err(vec![CompileError { line: 1, message: "the jq compiler failed on this program".to_owned() }])
                }),
                Err(_) => Program::compile_with(code, false),
            }
        })
    }

    /// `compile`, with the prelude's helpers all in jq (`jq_only`) rather than native.
    fn compile_with(code: &str, jq_only: bool) -> Result<Program, Vec<CompileError>> {
        check_nesting(code).map_err(|e| vec![e])?;
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs()).chain(prelude(jq_only));
        let natives = super::native::natives().filter(move |f| !jq_only || !super::native::REPLACED.contains(&f.0));
        let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs()).chain(natives);
        // The program becomes a definition whose object constructions are rewritten (see
        // `flatten_objects`); if it does not parse that way, it is loaded as written, for the
        // errors. The wrapper adds no line, so error lines stay the program's.
        let wrapped = format!("def {MAIN}: {code}\n;");
        let mut constants = BTreeSet::new();
        let (base, main, own): (&str, &str, Vec<Def<&str>>) = match jaq_core::load::parse(&wrapped, |p| p.defs()) {
            Some(mut own) => {
                for d in &mut own {
                    collect_constants(&mut d.body, &mut constants);
                }
                for d in &mut own {
                    fold_constants(&mut d.body, &constants);
                    build_objects(&mut d.body, &constants);
                }
                (wrapped.as_str(), MAIN, own)
            }
            None => (code, code, Vec::new()),
        };
        // Shortens the standard definitions' `'static` to the program's lifetime.
        #[allow(clippy::map_identity)]
        let defs = defs.map(|d| -> Def<&str> { d }).chain(own);
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader.load(&arena, File { code: main, path: () }).map_err(|errs| {
            errs.into_iter()
                .flat_map(|(_file, e)| match e {
                    jaq_core::load::Error::Io(list) => list
                        .into_iter()
                        .map(|(path, msg)| CompileError { line: 1, message: format!("{path}: {msg}") })
                        .collect(),
                    jaq_core::load::Error::Lex(list) => list
                        .into_iter()
                        .map(|(expect, at)| CompileError {
                            line: line_of(base, at),
                            message: format!("expected {}", expect.as_str()),
                        })
                        .collect(),
                    jaq_core::load::Error::Parse(list) => list
                        .into_iter()
                        .map(|(expect, at)| CompileError {
                            line: line_of(base, at),
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
                        line: line_of(base, name),
                        message: format!("undefined {} `{name}`", undef.as_str()),
                    })
                })
                .collect::<Vec<_>>()
        })?;
        let unsafe_parts = check_safety(code);
        if !unsafe_parts.is_empty() {
            return Err(unsafe_parts);
        }
        let fast = if jq_only { Err("the prelude in jq".to_owned()) } else { fast_path(&wrapped) };
        Ok(Program { filter, fast })
    }

    /// Why runs do not take the fast path (what the program uses that it does not cover);
    /// `None` when they do (when the record allows).
    pub fn not_fast(&self) -> Option<&str> {
        self.fast.as_ref().err().map(String::as_str)
    }

    /// Runs the program on jaq alone.
    pub fn run_jaq(&self, input: &Value) -> Result<Vec<Value>, String> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for r in self.filter.id.run((ctx, to_val(input))).map(unwrap_valr) {
            let v = r.map_err(|e| e.to_string())?;
            out.push(from_val(&v));
            if out.len() > 10_000 {
                return Err("the program produced more than 10000 outputs".to_owned());
            }
        }
        Ok(out)
    }

    /// Runs the program on the fast path alone: `None` when jaq must answer.
    pub fn run_fast(&self, input: &Value) -> Option<Vec<Value>> {
        self.fast.as_ref().ok()?.run(input)
    }

    /// Runs the program on `input`; every output, or the first error. The fast path answers when
    /// it can; otherwise (and for every error, so its message is jaq's) jaq does.
    pub fn run(&self, input: &Value) -> Result<Vec<Value>, String> {
        match self.run_fast(input) {
            Some(out) => Ok(out),
            None => self.run_jaq(input),
        }
    }
}

/// The fast-path compilation of a wrapped program, with the prelude's jq definitions before it
/// (`Err` names what is outside the fast path).
fn fast_path(wrapped: &str) -> Result<super::fast::Fast, String> {
    let own = jaq_core::load::parse(wrapped, |p| p.defs()).ok_or("does not parse")?;
    // Shortens the prelude's `'static` to the program's lifetime.
    #[allow(clippy::map_identity)]
    let defs: Vec<Def<&str>> = prelude(false).map(|d| -> Def<&str> { d }).chain(own).collect();
    super::fast::Fast::compile(&defs, MAIN)
}

/// A JSON value as a jq value, as jaq's own reader would make it (integers as integers, other
/// numbers as their decimal text).
fn to_val(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => match n.as_i64().and_then(|i| isize::try_from(i).ok()) {
            Some(i) => Val::from(i),
            None if n.is_u64() => {
                Val::Num(jaq_json::Num::from_str_radix(&n.to_string(), 10).unwrap_or(jaq_json::Num::Float(f64::NAN)))
            }
            None => Val::Num(jaq_json::Num::Dec(n.to_string().into())),
        },
        Value::String(s) => Val::utf8_str(s.clone().into_bytes()),
        Value::Array(a) => Val::Arr(jaq_json::Rc::new(a.iter().map(to_val).collect())),
        Value::Object(m) => {
            Val::obj(m.iter().map(|(k, v)| (Val::utf8_str(k.clone().into_bytes()), to_val(v))).collect())
        }
    }
}

/// A jq value as JSON: non-finite numbers become null, as jq prints them; non-string keys their text.
fn from_val(v: &Val) -> Value {
    use jaq_json::Num;
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(Num::Int(i)) => Value::from(*i as i64),
        Val::Num(Num::Float(f)) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Val::Num(n) => serde_json::from_str::<serde_json::Number>(&n.to_string()).map_or(Value::Null, Value::Number),
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(a) => Value::Array(a.iter().map(from_val).collect()),
        Val::Obj(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                        other => other.to_string(),
                    };
                    (key, from_val(v))
                })
                .collect(),
        ),
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
    fn rewritten_literals_and_objects_behave_as_written() {
        let run = |code: &str| Program::compile(code).unwrap().run(&serde_json::json!({"k": "b"})).unwrap();
        use serde_json::json;
        // A shared literal updated in one run is not changed for the next.
        let p = Program::compile("{\"a\": 1, \"b\": [1, -2.5, null, true]} | .b[0] = .a + 10").unwrap();
        for _ in 0..2 {
            assert_eq!(p.run(&json!(null)).unwrap(), vec![json!({"a": 1, "b": [11, -2.5, null, true]})]);
        }
        assert_eq!(run("{\"a\": 1, \"b\": 2}[.k]"), vec![json!(2)]);
        // Generators in objects: every combination, first key slowest, the last duplicate key wins.
        assert_eq!(
            run("{a: (1, 2), b: 3, c: (4, 5)}"),
            vec![
                json!({"a": 1, "b": 3, "c": 4}),
                json!({"a": 1, "b": 3, "c": 5}),
                json!({"a": 2, "b": 3, "c": 4}),
                json!({"a": 2, "b": 3, "c": 5})
            ]
        );
        assert_eq!(run("{a: 1, b: 2, a: 3}"), vec![json!({"a": 3, "b": 2})]);
        assert_eq!(run("{(.k): 1, x: [1, 2], \"y\\n\": {}}"), vec![json!({"b": 1, "x": [1, 2], "y\n": {}})]);
        assert_eq!(run("[1, 2] + [3]"), vec![json!([1, 2, 3])]);
        // Larger than one native call takes: built in groups, in order.
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}: (. | {i})")).collect();
        let want: serde_json::Map<String, serde_json::Value> = (0..40).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(run(&format!("{{{}}}", keys.join(", "))), vec![serde_json::Value::Object(want)]);
        assert_eq!(
            run("{a: .k, b: .missing, \"c d\": {e: .k, f: [.k]}}"),
            vec![json!({"a": "b", "b": null, "c d": {"e": "b", "f": ["b"]}})]
        );
        let err = Program::compile("{a: 1, b: error(\"boom\")}").unwrap().run(&json!(null)).unwrap_err();
        assert!(err.contains("boom"), "{err}");
    }

    #[test]
    fn prelude_helpers() {
        assert!(jaq_core::load::parse(PRELUDE, |p| p.defs()).is_some());
        // The native helpers and their jq definitions (what the `jq` command runs) agree.
        for jq_only in [false, true] {
            prelude_helpers_in(jq_only);
        }
    }

    fn prelude_helpers_in(jq_only: bool) {
        let run = |code: &str, input: serde_json::Value| {
            Program::compile_with(code, jq_only).unwrap().run(&input).unwrap().remove(0)
        };
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
        assert_eq!(
            run(
                "map(ms)",
                json!(["2026-12-01 22:10:05 UTC", "2026-12-01T09:30:00.000+01:00", "2026-12-01T09:30:00-0130", "1.5"])
            ),
            json!([1796163005000_i64, 1796113800000_i64, 1796122800000_i64, 1500])
        );
        assert_eq!(
            run("{a: null, b: [{}, [], \"\", {c: [null]}], d: {e: {f: null}}, g: false} | prune", json!(null)),
            json!({"g": false})
        );
    }

    #[test]
    fn deep_programs_are_config_errors_and_long_literal_lists_are_fine() {
        for code in [format!("{}1{}", "[".repeat(300), "]".repeat(300)), ". | ".repeat(300) + "1"] {
            let e = errors(&code);
            assert!(e.iter().any(|m| m.contains("nests deeper than 256")), "{e:?}");
        }
        let e = errors(&format!(".a |\n{}", ", 1".repeat(60_000)));
        assert!(e.iter().any(|m| m.starts_with("2: ") && m.contains("more than 50000")), "{e:?}");
        // Brackets inside strings are text; interpolations are code.
        let text = format!("\"{}\" | \"\\(.a) {}\"", "[".repeat(300), "(".repeat(300));
        assert!(Program::compile(&text).is_ok());
        assert_eq!(
            Program::compile("\"x\\([.a, [.b]] | length)y\"").unwrap().run(&serde_json::json!({})).unwrap(),
            vec![serde_json::json!("x2y")]
        );
        // A lookup table of 5,000 entries: a constant, on the fast path.
        let list: Vec<String> = (0..5000).map(|i| format!("\"k{i}\"")).collect();
        let p = Program::compile(&format!("[{}] | index([\"k4999\"])", list.join(", "))).unwrap();
        assert_eq!(p.not_fast(), None);
        assert_eq!(p.run(&serde_json::json!(null)).unwrap(), vec![serde_json::json!(4999)]);
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
