//! Reading one YAML file into a `Raw*` type while keeping every location a later error may need.
//!
//! Serde stops at the first error, so this module does three things the compiler relies on to report
//! **all** problems at once: values that may be invalid are read as [`Sp`] (value + line/column) and
//! checked later; unknown keys are collected with `serde_ignored` instead of failing; and a key index
//! built from the YAML events maps a key path (`routes[2].match.pathh`) back to its line.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_saphyr::granit_parser::{Event, Parser};

use super::ConfigError;

/// A value with the line and column it was written at (1-based line, 1-based column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sp<T> {
    /// The parsed value.
    pub value: T,
    /// Line of the value in its file (0 when unknown).
    pub line: usize,
    /// Column of the value (0 when unknown).
    pub col: usize,
}

impl<T> Sp<T> {
    /// A value without a location (defaults filled in by the compiler).
    pub fn unplaced(value: T) -> Self {
        Sp { value, line: 0, col: 0 }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(Sp {
            value: s.value,
            line: usize::try_from(s.referenced.line()).unwrap_or(0),
            col: usize::try_from(s.referenced.column()).unwrap_or(0),
        })
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// One step of a key path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A key path inside one document, printed as `routes[2].match.path`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The path with one more key.
    pub fn key(&self, k: &str) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_owned()));
        KeyPath(v)
    }
    /// The path with one more index.
    pub fn index(&self, i: usize) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        KeyPath(v)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Maps each key path of a document to the line its key is written on.
#[derive(Debug, Default)]
pub struct KeyIndex {
    lines: HashMap<KeyPath, usize>,
}

impl KeyIndex {
    /// Builds the index from the YAML events; a syntax error just ends the index early (the
    /// deserializer reports it).
    pub fn build(text: &str) -> KeyIndex {
        enum Frame {
            Map { path: KeyPath, pending_key: Option<String> },
            Seq { path: KeyPath, next: usize },
        }
        let mut lines = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        // Where the node that is starting now sits: decided by the frame on top of the stack.
        fn child_path(stack: &mut [Frame]) -> (KeyPath, bool) {
            match stack.last_mut() {
                None => (KeyPath::default(), false),
                Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                    Some(k) => (path.key(&k), false),
                    None => (path.clone(), true), // this node is a key
                },
                Some(Frame::Seq { path, next }) => {
                    let p = path.index(*next);
                    *next += 1;
                    (p, false)
                }
            }
        }
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            match event {
                Event::MappingStart(..) => {
                    let (path, is_key) = child_path(&mut stack);
                    if is_key {
                        break; // complex keys are not used by this config
                    }
                    stack.push(Frame::Map { path, pending_key: None });
                }
                Event::SequenceStart(..) => {
                    let (path, is_key) = child_path(&mut stack);
                    if is_key {
                        break;
                    }
                    stack.push(Frame::Seq { path, next: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::Scalar(value, ..) => {
                    let (path, is_key) = child_path(&mut stack);
                    if is_key {
                        let key_path = path.key(&value);
                        lines.entry(key_path).or_insert(span.start.line());
                        if let Some(Frame::Map { pending_key, .. }) = stack.last_mut() {
                            *pending_key = Some(value.into_owned());
                        }
                    }
                }
                Event::Alias(..) => {
                    let _ = child_path(&mut stack);
                }
                _ => {}
            }
        }
        KeyIndex { lines }
    }

    /// The line of `path`'s key, or of its nearest ancestor that has one.
    pub fn line(&self, path: &KeyPath) -> Option<usize> {
        let mut p = path.clone();
        loop {
            if let Some(l) = self.lines.get(&p) {
                return Some(*l);
            }
            p.0.pop()?;
        }
    }
}

fn ignored_to_keypath(path: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
    use serde_ignored::Path as P;
    match path {
        P::Root => {}
        P::Seq { parent, index } => {
            ignored_to_keypath(parent, out);
            out.push(Seg::Index(*index));
        }
        P::Map { parent, key } => {
            ignored_to_keypath(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_to_keypath(parent, out);
        }
    }
}

/// A parsed file: its typed content and the key index for later error locations.
pub struct Parsed<T> {
    /// The typed content.
    pub value: T,
    /// Key path → line, for errors about keys that carry no span.
    pub index: KeyIndex,
}

/// Parses `text` (the content of `file`) as `T`. Unknown keys and syntax/type errors are pushed to
/// `errors`; `None` is returned only when the document could not be read at all.
pub fn parse<T: DeserializeOwned>(file: &Path, text: &str, errors: &mut Vec<ConfigError>) -> Option<Parsed<T>> {
    let index = KeyIndex::build(text);
    let mut unknown: Vec<KeyPath> = Vec::new();
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    options.strict_booleans = true;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_ignored::deserialize(de, |path| {
            let mut segs = Vec::new();
            ignored_to_keypath(&path, &mut segs);
            // `Spanned` reads its value through a private marker field; that is not a user key.
            let internal = segs.iter().any(|s| matches!(s, Seg::Key(k) if k.starts_with("__serde_saphyr_private")));
            if !internal {
                unknown.push(KeyPath(segs));
            }
        })
    });
    for path in unknown {
        let line = index.line(&path);
        let key = path.to_string();
        errors.push(ConfigError::at(file, line, &key, "unknown key (check its spelling and nesting)".to_owned()));
    }
    match result {
        Ok(value) => Some(Parsed { value, index }),
        Err(e) => {
            let line = e.location().map(|l| usize::try_from(l.line()).unwrap_or(0));
            let msg = e.without_snippet().to_string();
            errors.push(ConfigError::at(file, line.filter(|l| *l > 0), "", msg));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct Inner {
        #[allow(dead_code)]
        path: Sp<String>,
    }
    #[derive(Deserialize, Debug)]
    struct Doc {
        name: Sp<String>,
        #[allow(dead_code)]
        items: Vec<Inner>,
    }

    #[test]
    fn spans_and_unknown_keys_are_all_reported() {
        let text = "name: x\nitems:\n  - path: /a\n    bogus: 1\n  - path: /b\n    other: 2\ntop_extra: true\n";
        let mut errors = Vec::new();
        let doc: Parsed<Doc> = parse(Path::new("f.yaml"), text, &mut errors).expect("parses");
        assert_eq!(doc.value.name.line, 1);
        assert_eq!(doc.value.name.value, "x");
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert!(
            shown.contains(&"f.yaml:4: items[0].bogus: unknown key (check its spelling and nesting)".to_owned()),
            "{shown:?}"
        );
        assert!(shown.iter().any(|s| s.starts_with("f.yaml:6: items[1].other")), "{shown:?}");
        assert!(shown.iter().any(|s| s.starts_with("f.yaml:7: top_extra")), "{shown:?}");
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let mut errors = Vec::new();
        let r: Option<Parsed<Doc>> = parse(Path::new("f.yaml"), "name: x\nitems: [\n", &mut errors);
        assert!(r.is_none());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].line.is_some(), "{:?}", errors[0]);
    }
}
