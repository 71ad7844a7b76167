//! jq programs, compiled once at config load with jaq and run per vendor record.

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

impl Program {
    /// Parses and compiles `code` with jq's standard library (jaq-std, jaq-json).
    pub fn compile(code: &str) -> Result<Program, Vec<CompileError>> {
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
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
