//! The fast path for mapping programs: a direct evaluator for the part of jq that mappings are
//! written in, run on the parsed vendor record itself.
//!
//! jaq runs any jq program, but every term it evaluates allocates an iterator, every field it reads
//! copies the field's string, and the record is converted into jaq's values and back. For the
//! common shapes of a mapping — field reads, object and list construction, `//`, `if`, `select`,
//! `map`, string helpers and the prelude — this module compiles the program once more, into a tree
//! that is evaluated directly: one-output terms return their value, generators call a
//! continuation, field reads borrow from the record, and user definitions are expanded in place
//! (mappings may not recurse). Outputs equal jaq's (a test runs both over every shipped sample and
//! over damaged copies of them).
//!
//! Two ways out keep that promise: a program using anything outside the subset is not compiled
//! here and runs on jaq; and at run time, a case whose answer is not certain to match jaq's (a
//! float printed as text, iteration over an object the program built, ...) gives up, as does any
//! error, and the record is run again on jaq, whose answer (and error message) is the one used.

use std::rc::Rc;

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Def, Pattern, Term};
use jaq_core::ops::{Cmp, Math};
use jaq_core::path::{Opt, Part};
use regex_bites::bytes::Regex;
use serde_json::{Map, Number, Value};

use super::native::{self, Scalar};

/// Why evaluation stopped.
#[derive(Debug)]
enum Stop {
    /// A jq error (`try` and `?` catch it).
    Err,
    /// The fast path cannot give jaq's answer here; nothing catches it.
    Bail,
}

type R = Result<(), Stop>;

#[cfg(test)]
thread_local! {
    /// Where the fast path last gave up (tests print it).
    static LAST_BAIL: std::cell::Cell<Option<&'static std::panic::Location<'static>>> = const { std::cell::Cell::new(None) };
}

#[track_caller]
fn bail() -> Stop {
    #[cfg(test)]
    {
        let at = std::panic::Location::caller();
        LAST_BAIL.with(|l| l.set(Some(at)));
    }
    Stop::Bail
}

/// A value during evaluation: part of the record (or of a literal), or one the program made.
#[derive(Clone, Debug)]
enum V<'a> {
    /// Part of the input record. Its objects iterate in key order, as they do in jaq (both read
    /// the record from the same sorted map).
    In(&'a Value),
    /// Made by the program (or a literal). Objects the program built may iterate in a different
    /// order in jaq (insertion order), so iterating one with several keys gives up.
    Own(Rc<Value>),
}

static NULL: Value = Value::Null;
static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

/// A boolean, without an allocation.
fn boolean(b: bool) -> V<'static> {
    V::In(if b { &TRUE } else { &FALSE })
}

impl<'a> V<'a> {
    fn own(v: Value) -> Self {
        V::Own(Rc::new(v))
    }

    fn val(&self) -> &Value {
        match self {
            V::In(v) => v,
            V::Own(v) => v,
        }
    }

    fn into_value(self) -> Value {
        match self {
            V::In(v) => v.clone(),
            V::Own(rc) => Rc::try_unwrap(rc).unwrap_or_else(|rc| (*rc).clone()),
        }
    }

    fn truthy(&self) -> bool {
        !matches!(self.val(), Value::Null | Value::Bool(false))
    }

    /// A part of this value (borrowed from the record when this is).
    fn part(&self, f: impl FnOnce(&Value) -> Option<&Value>) -> V<'a> {
        match self {
            V::In(v) => V::In(f(v).unwrap_or(&NULL)),
            V::Own(v) => match f(v) {
                Some(x) => V::own(x.clone()),
                None => V::In(&NULL),
            },
        }
    }

    /// The elements of a list or the values of an object, in jaq's order.
    fn values(&self) -> Result<Vec<V<'a>>, Stop> {
        match self {
            V::In(Value::Array(a)) => Ok(a.iter().map(V::In).collect()),
            V::In(Value::Object(m)) => Ok(m.values().map(V::In).collect()),
            V::Own(v) => match &**v {
                Value::Array(a) => Ok(a.iter().map(|x| V::own(x.clone())).collect()),
                Value::Object(m) if m.len() <= 1 => Ok(m.values().map(|x| V::own(x.clone())).collect()),
                Value::Object(_) => Err(bail()),
                _ => Err(Stop::Err),
            },
            V::In(_) => Err(Stop::Err),
        }
    }

    /// The entries of an object, in jaq's order (or in any order, when it cannot matter).
    fn entries(&self, any_order: bool) -> Result<Vec<(&str, V<'a>)>, Stop> {
        match self {
            V::In(Value::Object(m)) => Ok(m.iter().map(|(k, v)| (k.as_str(), V::In(v))).collect()),
            V::Own(v) => match &**v {
                Value::Object(m) if any_order || m.len() <= 1 => {
                    Ok(m.iter().map(|(k, v)| (k.as_str(), V::own(v.clone()))).collect())
                }
                _ => Err(bail()),
            },
            _ => Err(bail()),
        }
    }
}

/// A number as jaq holds it.
#[derive(Clone, Copy)]
enum N {
    I(i64),
    F(f64),
}

fn number(n: &Number) -> Result<N, Stop> {
    match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Ok(N::I(i)),
        // Beyond i64: jaq uses big integers.
        _ if n.is_u64() => Err(bail()),
        (None, Some(f)) => Ok(N::F(f)),
        _ => Err(bail()),
    }
}

impl N {
    fn f(self) -> f64 {
        match self {
            N::I(i) => i as f64,
            N::F(f) => f,
        }
    }

    fn value(self) -> Result<Value, Stop> {
        match self {
            N::I(i) => Ok(Value::from(i)),
            N::F(f) if f.is_finite() => Number::from_f64(f).map(Value::Number).ok_or(Stop::Bail),
            N::F(_) => Err(bail()),
        }
    }
}

fn math(op: &Math, l: V, r: V) -> Result<Value, Stop> {
    use Value::{Array, Null, Object, String as S};
    let (lv, rv) = (l.val(), r.val());
    match (op, lv, rv) {
        (Math::Add, Null, _) => Ok(r.into_value()),
        (Math::Add, _, Null) => Ok(l.into_value()),
        (_, Value::Number(x), Value::Number(y)) => {
            let (x, y) = (number(x)?, number(y)?);
            let n = match (op, x, y) {
                (Math::Add, N::I(a), N::I(b)) => N::I(a.checked_add(b).ok_or(Stop::Bail)?),
                (Math::Sub, N::I(a), N::I(b)) => N::I(a.checked_sub(b).ok_or(Stop::Bail)?),
                (Math::Mul, N::I(a), N::I(b)) => N::I(a.checked_mul(b).ok_or(Stop::Bail)?),
                (Math::Rem, N::I(_), N::I(0)) => return Err(Stop::Err),
                (Math::Rem, N::I(a), N::I(b)) => N::I(a.checked_rem(b).unwrap_or(0)),
                (Math::Rem, _, _) => return Err(bail()),
                (Math::Add, a, b) => N::F(a.f() + b.f()),
                (Math::Sub, a, b) => N::F(a.f() - b.f()),
                (Math::Mul, a, b) => N::F(a.f() * b.f()),
                (Math::Div, a, b) => N::F(a.f() / b.f()),
            };
            n.value()
        }
        (Math::Add, S(a), S(b)) => Ok(S(format!("{a}{b}"))),
        (Math::Add, Array(_), Array(b)) => {
            let mut a = l.into_value();
            if let Array(a) = &mut a {
                a.extend(b.iter().cloned());
            }
            Ok(a)
        }
        (Math::Add, Object(_), Object(b)) => {
            let mut a = l.into_value();
            if let Object(a) = &mut a {
                a.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Ok(a)
        }
        (Math::Sub, Array(a), Array(b)) => {
            let mut out = Vec::with_capacity(a.len());
            for x in a {
                let mut found = false;
                for y in b {
                    if equal(x, y)? {
                        found = true;
                        break;
                    }
                }
                if !found {
                    out.push(x.clone());
                }
            }
            Ok(Array(out))
        }
        (Math::Div, S(a), S(b)) => Ok(split(a, b)),
        // String repetition and deep object merge: left to jaq.
        (Math::Mul, S(_) | Value::Number(_) | Object(_), S(_) | Value::Number(_) | Object(_)) => Err(bail()),
        _ => Err(Stop::Err),
    }
}

/// `a / b` on strings (jaq's split: nothing for "", characters for an empty separator).
fn split(a: &str, b: &str) -> Value {
    if a.is_empty() {
        Value::Array(Vec::new())
    } else if b.is_empty() {
        Value::Array(a.chars().map(|c| Value::String(c.to_string())).collect())
    } else {
        Value::Array(a.split(b).map(|s| Value::String(s.to_owned())).collect())
    }
}

/// jq's order of types: null, booleans, numbers, strings, lists, objects.
fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

fn float_cmp(a: f64, b: f64) -> Result<std::cmp::Ordering, Stop> {
    if a == 0.0 && b == 0.0 {
        return Ok(std::cmp::Ordering::Equal);
    }
    a.partial_cmp(&b).ok_or(Stop::Bail)
}

/// jaq's ordering of values (objects of several keys are left to jaq).
fn order(a: &Value, b: &Value) -> Result<std::cmp::Ordering, Stop> {
    use std::cmp::Ordering::Equal;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (number(x)?, number(y)?) {
            (N::I(x), N::I(y)) => Ok(x.cmp(&y)),
            (x, y) => float_cmp(x.f(), y.f()),
        },
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        (Value::String(x), Value::String(y)) => Ok(x.as_bytes().cmp(y.as_bytes())),
        (Value::Array(x), Value::Array(y)) => {
            for (x, y) in x.iter().zip(y) {
                let o = order(x, y)?;
                if o != Equal {
                    return Ok(o);
                }
            }
            Ok(x.len().cmp(&y.len()))
        }
        (Value::Object(x), Value::Object(y)) if x.is_empty() || y.is_empty() => Ok(x.len().min(1).cmp(&y.len().min(1))),
        (Value::Object(_), Value::Object(_)) => Err(bail()),
        _ => Ok(rank(a).cmp(&rank(b))),
    }
}

/// jaq's `contains`: a substring, every element of a list in some element, every entry of an
/// object in the same key's value, or else equality.
fn contains(a: &Value, b: &Value) -> Result<bool, Stop> {
    Ok(match (a, b) {
        (Value::String(l), Value::String(r)) => l.contains(r.as_str()),
        (Value::Array(l), Value::Array(r)) => {
            for r in r {
                let mut found = false;
                for l in l {
                    if contains(l, r)? {
                        found = true;
                        break;
                    }
                }
                if !found {
                    return Ok(false);
                }
            }
            true
        }
        (Value::Object(l), Value::Object(r)) => {
            for (k, r) in r {
                match l.get(k) {
                    Some(l) if contains(l, r)? => {}
                    _ => return Ok(false),
                }
            }
            true
        }
        _ => equal(a, b)?,
    })
}

/// jaq's equality (1 == 1.0; objects regardless of key order).
fn equal(a: &Value, b: &Value) -> Result<bool, Stop> {
    Ok(match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (number(x)?, number(y)?) {
            (N::I(x), N::I(y)) => x == y,
            (x, y) => x.f() == y.f(),
        },
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Ok(false);
            }
            for (x, y) in x.iter().zip(y) {
                if !equal(x, y)? {
                    return Ok(false);
                }
            }
            true
        }
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return Ok(false);
            }
            for (k, v) in x {
                match y.get(k) {
                    Some(w) if equal(v, w)? => {}
                    _ => return Ok(false),
                }
            }
            true
        }
        _ => a == b,
    })
}

fn compare(op: &Cmp, a: &Value, b: &Value) -> Result<bool, Stop> {
    use std::cmp::Ordering::{Greater, Less};
    Ok(match op {
        Cmp::Eq => equal(a, b)?,
        Cmp::Ne => !equal(a, b)?,
        Cmp::Lt => order(a, b)? == Less,
        Cmp::Gt => order(a, b)? == Greater,
        Cmp::Le => order(a, b)? != Greater,
        Cmp::Ge => order(a, b)? != Less,
    })
}

/// JSON text as jaq writes it (`tojson`, `tostring`, string interpolation); gives up on what jaq
/// may write differently: non-integer numbers the program made, DEL characters, objects the
/// program built.
fn to_json(v: &V) -> Result<String, Stop> {
    fn check(v: &Value, built: bool) -> Result<(), Stop> {
        match v {
            // jaq holds the record's numbers as serde_json printed them; computed ones it prints itself.
            Value::Number(n) if built && n.as_i64().is_none() => Err(bail()),
            Value::String(s) if s.contains('\u{7f}') => Err(bail()),
            Value::Array(a) => a.iter().try_for_each(|x| check(x, built)),
            Value::Object(m) if built && m.len() > 1 => Err(bail()),
            Value::Object(m) => m.iter().try_for_each(|(k, x)| {
                if k.contains('\u{7f}') {
                    return Err(bail());
                }
                check(x, built)
            }),
            _ => Ok(()),
        }
    }
    check(v.val(), matches!(v, V::Own(_)))?;
    serde_json::to_string(v.val()).map_err(|_| Stop::Bail)
}

fn text_of(v: &V) -> Result<String, Stop> {
    match v.val() {
        Value::String(s) => Ok(s.clone()),
        _ => to_json(v),
    }
}

fn scalar(v: &Value) -> Scalar<'_> {
    match v {
        Value::Null => Scalar::Null,
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) => n.as_f64().map_or(Scalar::Other, Scalar::Num),
        Value::String(s) => Scalar::Str(s),
        _ => Scalar::Other,
    }
}

/// jaq's index of arrays by position (negative from the end).
fn position(len: usize, i: i64) -> Option<usize> {
    let i = if i < 0 { (len as i64).checked_add(i)? } else { i };
    usize::try_from(i).ok().filter(|i| *i < len)
}

fn index<'a>(x: &V<'a>, i: &Value) -> Result<V<'a>, Stop> {
    match (x.val(), i) {
        (Value::Null, _) => Ok(V::In(&NULL)),
        (Value::Object(_), Value::String(k)) => Ok(x.part(|v| v.as_object().and_then(|m| m.get(k)))),
        (Value::Object(_), _) => Ok(V::In(&NULL)),
        (Value::Array(a), Value::Number(n)) => match number(n)? {
            N::I(i) => {
                let at = position(a.len(), i);
                Ok(x.part(|v| at.and_then(|at| v.as_array()?.get(at))))
            }
            N::F(_) => Err(bail()),
        },
        (Value::Array(_) | Value::String(_), Value::Array(_) | Value::Object(_)) => Err(bail()),
        _ => Err(Stop::Err),
    }
}

fn field<'a>(x: &V<'a>, k: &str) -> Result<V<'a>, Stop> {
    match x.val() {
        Value::Null => Ok(V::In(&NULL)),
        Value::Object(_) => Ok(x.part(|v| v.as_object().and_then(|m| m.get(k)))),
        _ => Err(Stop::Err),
    }
}

fn slice<'a>(x: &V<'a>, from: Option<&Value>, upto: Option<&Value>) -> Result<V<'a>, Stop> {
    let Value::Array(a) = x.val() else { return Err(bail()) };
    let bound = |b: Option<&Value>| -> Result<Option<i64>, Stop> {
        match b {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(Stop::Bail),
            Some(_) => Err(bail()),
        }
    };
    let len = a.len() as i64;
    let at = |i: i64| if i < 0 { (len + i).max(0) } else { i.min(len) };
    let start = bound(from)?.map_or(0, at);
    let end = bound(upto)?.map_or(len, at);
    let part = if end > start { a[start as usize..end as usize].to_vec() } else { Vec::new() };
    Ok(V::own(Value::Array(part)))
}

/// Functions of the input alone.
#[derive(Clone, Copy, Debug)]
enum F0 {
    Not,
    Length,
    Type,
    Keys,
    ToString,
    ToNumber,
    ToJson,
    Floor,
    Round,
    Ceil,
    Downcase,
    Upcase,
    Unique,
    Sort,
    Add,
    ToEntries,
    FromEntries,
    Ms,
    Iso,
    Num,
    Int,
    Bool,
    SeverityId,
    ScoreSeverityId,
    Prune,
    Min,
    Max,
    /// Of a list only (jaq's answer for anything else is its own).
    Reverse,
    /// In jaq's order: known for the record's objects and literals, not for objects the program
    /// built with several keys (those go to jaq).
    KeysUnsorted,
    /// jaq: `def flatten: [recurse(arrays[]) | select(isarray | not)];` (anything but a list is
    /// one leaf).
    Flatten,
    /// `trim`, `ltrim`, `rtrim` (Unicode white space, as jaq's byte-string trims).
    Trim(bool, bool),
    /// `@base64`: `tostring | encode_base64` (standard alphabet, padded).
    Base64,
}

/// Functions of the input and one value argument.
#[derive(Clone, Copy, Debug)]
enum F1 {
    StartsWith,
    EndsWith,
    Split,
    Join,
    LtrimStr,
    RtrimStr,
    Has,
    Unmapped,
    StixId,
    Index,
    Contains,
}

fn f0<'a>(f: F0, x: V<'a>) -> Result<V<'a>, Stop> {
    let v = x.val();
    let s = |s: String| Ok(V::own(Value::String(s)));
    let n = |i: i64| Ok(V::own(Value::from(i)));
    match f {
        F0::Not => Ok(boolean(!x.truthy())),
        F0::Length => match v {
            Value::Null => n(0),
            Value::Bool(_) => Err(Stop::Err),
            Value::Number(m) => match number(m)? {
                N::I(i) => i.checked_abs().map_or(Err(bail()), n),
                N::F(_) => Err(bail()),
            },
            Value::String(t) => n(t.chars().count() as i64),
            Value::Array(a) => n(a.len() as i64),
            Value::Object(m) => n(m.len() as i64),
        },
        F0::Type => s(["null", "boolean", "number", "string", "array", "object"][rank(v) as usize].to_owned()),
        F0::KeysUnsorted => match v {
            Value::Object(_) => {
                let keys = x.entries(false)?.into_iter().map(|(k, _)| Value::String(k.to_owned())).collect();
                Ok(V::own(Value::Array(keys)))
            }
            Value::Array(a) => Ok(V::own(Value::Array((0..a.len() as i64).map(Value::from).collect()))),
            _ => Err(bail()),
        },
        F0::Trim(start, end) => match v {
            Value::String(t) => {
                let t = match (start, end) {
                    (true, true) => t.trim(),
                    (true, false) => t.trim_start(),
                    _ => t.trim_end(),
                };
                s(t.to_owned())
            }
            _ => Err(bail()),
        },
        F0::Base64 => {
            use base64::Engine as _;
            s(base64::engine::general_purpose::STANDARD.encode(text_of(&x)?))
        }
        F0::Flatten => {
            fn leaves(v: &Value, out: &mut Vec<Value>) {
                match v {
                    Value::Array(items) => items.iter().for_each(|i| leaves(i, out)),
                    other => out.push(other.clone()),
                }
            }
            let mut out = Vec::new();
            leaves(v, &mut out);
            Ok(V::own(Value::Array(out)))
        }
        F0::Keys => match v {
            Value::Object(m) => Ok(V::own(Value::Array(m.keys().map(|k| Value::String(k.clone())).collect()))),
            Value::Array(a) => Ok(V::own(Value::Array((0..a.len() as i64).map(Value::from).collect()))),
            _ => Err(Stop::Err),
        },
        F0::ToString => match v {
            Value::String(_) => Ok(x),
            _ => s(to_json(&x)?),
        },
        F0::ToNumber => match v {
            Value::Number(_) => Ok(x),
            Value::String(t) => match native::num_text(t) {
                Some((Some(i), _)) if t.trim() == t => n(i),
                _ => Err(bail()),
            },
            _ => Err(Stop::Err),
        },
        F0::ToJson => s(to_json(&x)?),
        F0::Floor | F0::Round | F0::Ceil => match v {
            Value::Number(m) => match number(m)? {
                N::I(_) => Ok(x),
                N::F(y) => {
                    let r = match f {
                        F0::Floor => y.floor(),
                        F0::Ceil => y.ceil(),
                        _ => y.round(),
                    };
                    if r.is_finite() && (i64::MIN as f64..=i64::MAX as f64).contains(&r) {
                        n(r as i64)
                    } else {
                        Err(bail())
                    }
                }
            },
            _ => Err(Stop::Err),
        },
        F0::Downcase | F0::Upcase => match v {
            Value::String(t) => {
                s(if matches!(f, F0::Downcase) { t.to_ascii_lowercase() } else { t.to_ascii_uppercase() })
            }
            _ => Err(Stop::Err),
        },
        F0::Unique | F0::Sort => {
            let Value::Array(a) = v else { return Err(bail()) };
            let mut items: Vec<&Value> = a.iter().collect();
            let mut failed = false;
            items.sort_by(|a, b| {
                order(a, b).unwrap_or_else(|_| {
                    failed = true;
                    std::cmp::Ordering::Equal
                })
            });
            if failed {
                return Err(bail());
            }
            let mut out: Vec<Value> = Vec::with_capacity(items.len());
            for it in items {
                if matches!(f, F0::Unique) {
                    if let Some(last) = out.last() {
                        if order(last, it)? == std::cmp::Ordering::Equal {
                            continue;
                        }
                    }
                }
                out.push(it.clone());
            }
            Ok(V::own(Value::Array(out)))
        }
        F0::Add => {
            let mut acc = V::In(&NULL);
            for it in x.values()? {
                acc = V::own(math(&Math::Add, acc, it)?);
            }
            Ok(acc)
        }
        F0::ToEntries => {
            let list = x
                .entries(false)?
                .into_iter()
                .map(|(k, v)| {
                    let mut m = Map::new();
                    m.insert("key".to_owned(), Value::String(k.to_owned()));
                    m.insert("value".to_owned(), v.into_value());
                    Value::Object(m)
                })
                .collect();
            Ok(V::own(Value::Array(list)))
        }
        F0::FromEntries => {
            let Value::Array(a) = v else { return Err(bail()) };
            let mut m = Map::new();
            for e in a {
                let Some(Value::String(k)) = e.get("key") else { return Err(bail()) };
                m.insert(k.clone(), e.get("value").cloned().unwrap_or(Value::Null));
            }
            Ok(V::own(Value::Object(m)))
        }
        F0::Ms => Ok(native::ms_scalar(&scalar(v)).map_or(V::In(&NULL), |ms| V::own(Value::from(ms)))),
        F0::Iso => Ok(native::ms_scalar(&scalar(v)).map_or(V::In(&NULL), |ms| V::own(Value::String(native::iso(ms))))),
        F0::Num | F0::Int => {
            let got = match v {
                Value::Number(m) => m.as_f64().map(|f| (None, f)),
                Value::String(t) => native::num_text(t).map(|(i, f)| (Some(i), f)),
                _ => None,
            };
            match (f, got) {
                (_, None) => Ok(V::In(&NULL)),
                (F0::Num, Some((None, _))) => Ok(x),
                (F0::Num, Some((Some(Some(i)), _))) => n(i),
                (F0::Num, Some((Some(None), f))) => N::F(f).value().map(V::own),
                (_, Some((_, f))) => {
                    let r = f.floor();
                    if (i64::MIN as f64..=i64::MAX as f64).contains(&r) {
                        n(r as i64)
                    } else {
                        Err(bail())
                    }
                }
            }
        }
        F0::Bool => Ok(native::bool_scalar(&scalar(v)).map_or(V::In(&NULL), boolean)),
        F0::SeverityId => n(native::severity_scalar(&scalar(v))),
        F0::ScoreSeverityId => {
            let f = match v {
                Value::Number(m) => m.as_f64(),
                Value::String(t) => native::num_text(t).map(|(_, f)| f),
                _ => None,
            };
            n(native::score_severity(f))
        }
        F0::Min | F0::Max => {
            let Value::Array(a) = v else { return Err(bail()) };
            let mut best: Option<&Value> = None;
            for it in a {
                let better = match best {
                    None => true,
                    Some(b) if matches!(f, F0::Min) => order(it, b)? == std::cmp::Ordering::Less,
                    Some(b) => order(it, b)? != std::cmp::Ordering::Less,
                };
                // Which of two equal values jaq keeps is its own affair (1 and 1.0).
                if let Some(b) = best {
                    if order(it, b)? == std::cmp::Ordering::Equal && it != b {
                        return Err(bail());
                    }
                }
                if better {
                    best = Some(it);
                }
            }
            Ok(best.map_or(V::In(&NULL), |b| V::own(b.clone())))
        }
        F0::Reverse => match v {
            Value::Array(_) => {
                let mut v = x.into_value();
                if let Value::Array(l) = &mut v {
                    l.reverse();
                }
                Ok(V::own(v))
            }
            _ => Err(bail()),
        },
        F0::Prune if !has_empty_inside(v) => Ok(x),
        F0::Prune => {
            // In place: what the program built is usually held once, so nothing is copied.
            let mut v = x.into_value();
            prune(&mut v);
            Ok(V::own(v))
        }
    }
}

fn f1<'a>(f: F1, x: V<'a>, a: &V<'a>) -> Result<V<'a>, Stop> {
    let s = |s: String| Ok(V::own(Value::String(s)));
    let b = |b: bool| Ok(boolean(b));
    match (f, x.val(), a.val()) {
        (F1::StartsWith, Value::String(t), Value::String(p)) => b(t.starts_with(p.as_str())),
        (F1::EndsWith, Value::String(t), Value::String(p)) => b(t.ends_with(p.as_str())),
        (F1::StartsWith | F1::EndsWith, _, _) => Err(Stop::Err),
        (F1::Split, Value::String(t), Value::String(p)) => Ok(V::own(split(t, p))),
        (F1::Split, _, _) => Err(Stop::Err),
        (F1::Join, Value::Array(items), Value::String(sep)) => {
            let mut out = String::new();
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                let it = if matches!(x, V::Own(_)) { V::own(it.clone()) } else { x.part(|v| v.get(i)) };
                out.push_str(&text_of(&it)?);
            }
            s(out)
        }
        (F1::Join, _, _) => Err(bail()),
        (F1::LtrimStr, Value::String(t), Value::String(p)) => match t.strip_prefix(p.as_str()) {
            Some(rest) => s(rest.to_owned()),
            None => Ok(x),
        },
        (F1::RtrimStr, Value::String(t), Value::String(p)) => match t.strip_suffix(p.as_str()) {
            Some(rest) => s(rest.to_owned()),
            None => Ok(x),
        },
        (F1::LtrimStr | F1::RtrimStr, _, _) => Err(bail()),
        (F1::Has, Value::Object(m), Value::String(k)) => b(m.contains_key(k)),
        (F1::Has, Value::Array(l), Value::Number(n)) => match number(n)? {
            N::I(i) => b(position(l.len(), i).is_some()),
            N::F(_) => Err(bail()),
        },
        (F1::Has, _, _) => Err(bail()),
        (F1::Unmapped, Value::Object(m), Value::Array(keys)) => {
            let rest: Map<String, Value> = m
                .iter()
                .filter(|(k, _)| !keys.iter().any(|x| x.as_str() == Some(k.as_str())))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Ok(if rest.is_empty() { V::In(&NULL) } else { V::own(Value::Object(rest)) })
        }
        (F1::Unmapped, _, Value::Array(_)) => Ok(V::In(&NULL)),
        (F1::Unmapped, _, _) => Err(Stop::Err),
        (F1::StixId, props, Value::String(ty)) => s(super::jq::stix_id(ty, props)),
        (F1::StixId, _, _) => Err(Stop::Err),
        (F1::Contains, a, b) => Ok(boolean(contains(a, b)?)),
        (F1::Index, Value::Array(l), Value::Array(w)) if !w.is_empty() => {
            for (i, win) in l.windows(w.len()).enumerate() {
                let mut same = true;
                for (a, b) in win.iter().zip(w) {
                    same = same && equal(a, b)?;
                }
                if same {
                    return Ok(V::own(Value::from(i as i64)));
                }
            }
            Ok(V::In(&NULL))
        }
        (F1::Index, _, _) => Err(bail()),
    }
}

/// Whether `prune` drops a value: null, "", [] or {}.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

fn has_empty_inside(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.values().any(|x| is_empty(x) || has_empty_inside(x)),
        Value::Array(a) => a.iter().any(|x| is_empty(x) || has_empty_inside(x)),
        _ => false,
    }
}

/// `prune` (see `native::prune`), in place.
fn prune(v: &mut Value) {
    match v {
        Value::Object(m) => m.retain(|_, x| {
            prune(x);
            !is_empty(x)
        }),
        Value::Array(a) => a.retain_mut(|x| {
            prune(x);
            !is_empty(x)
        }),
        _ => {}
    }
}

/// A compiled term, and whether it always gives exactly one output (or an error).
#[derive(Debug)]
struct T {
    node: Node,
    one: bool,
}

#[derive(Debug)]
enum Node {
    Id,
    /// A literal: a number, a string, null, a boolean, `[]`, or a literal list or object of at
    /// least two entries (which jaq holds in key order too).
    Lit(Value),
    /// String interpolation: literal text and terms (all one-output).
    Str(Vec<Piece>),
    Arr(Option<Box<T>>),
    /// Object construction: keys (one-output) and values.
    Obj(Vec<(Key, T)>),
    Neg(Box<T>),
    Pipe(Box<T>, Box<T>),
    /// `f as $x | g`: the slot of `$x`.
    Bind(Box<T>, usize, Box<T>),
    Comma(Box<T>, Box<T>),
    /// `and` (false) / `or` (true).
    Logic(Box<T>, bool, Box<T>),
    Math(Box<T>, Math, Box<T>),
    Cmp(Box<T>, Cmp, Box<T>),
    Alt(Box<T>, Box<T>),
    Try(Box<T>),
    Ite(Box<T>, Box<T>, Box<T>),
    Var(usize),
    Path(Box<T>, Vec<(Step, Opt)>),
    Empty,
    Error(Box<T>),
    Select(Box<T>),
    Map(Box<T>),
    /// `with_entries(f)`; when `f` is a `select`, the keys out are keys in, so the order entries
    /// are visited in cannot matter.
    WithEntries(Box<T>),
    F0(F0),
    F1(F1, Box<T>),
    Test(Regex),
    /// `sub` / `gsub` with a literal replacement.
    Sub(Regex, String, bool),
    /// `.a.b = f`.
    Assign(Vec<String>, Box<T>),
    /// `.a.b |= f` (`f` one-output).
    Update(Vec<String>, Box<T>),
    /// `del(.a.b, .c)`.
    Del(Vec<Vec<String>>),
    /// `reduce SRC as $x (INIT; UPDATE)`: the slot of `$x`; UPDATE has one output.
    Reduce(Box<T>, usize, Box<T>, Box<T>),
    /// `any(g; cond)` (false) / `all(g; cond)` (true), deciding on the first output that settles
    /// it, as jaq's `isempty(first(...))` does: nothing after it is evaluated there, so nothing
    /// after it counts here (`isempty(g)` is `all(g; false)`).
    AnyAll(Box<T>, Box<T>, bool),
    /// `first(f)`: the first output of `f`, if any; nothing after it counts.
    First(Box<T>),
    /// `last(f)`: the last output of `f`, if any.
    Last(Box<T>),
    /// `limit(n; f)` (`n` one-output): the first `n` outputs of `f`; nothing after them counts.
    Limit(Box<T>, Box<T>),
    /// `map_values(f)` (`.[] |= f` in jaq): in a list every output of `f` per element, in an object
    /// the first output per value (none: the key goes).
    MapValues(Box<T>),
    /// `capture(re)` / `capture(re; flags)` with literals: per match (every match with `g`), an
    /// object of the named groups that took part in it.
    Capture(Regex, bool),
    /// `sort_by(f)`, `group_by(f)`, `unique_by(f)`, `min_by(f)`, `max_by(f)` of a list: each
    /// element keyed by the list of `f`'s outputs on it.
    By(Box<T>, By),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum By {
    Sort,
    Group,
    Unique,
    Min,
    Max,
}

#[derive(Debug)]
enum Piece {
    Text(String),
    Term(T),
}

#[derive(Debug)]
enum Key {
    Text(String),
    Term(T),
}

#[derive(Debug)]
enum Step {
    Key(String),
    Index(T),
    Iter,
    Slice(Option<T>, Option<T>),
}

fn t(node: Node) -> T {
    use Node::*;
    let one = match &node {
        Id | Lit(_) | Var(_) | Arr(_) | Map(_) | WithEntries(_) | F0(_) | Test(_) | Sub(..) | Del(_) | Error(_)
        | AnyAll(..) | By(..) | MapValues(_) => true,
        Str(p) => p.iter().all(|p| matches!(p, Piece::Text(_)) || matches!(p, Piece::Term(t) if t.one)),
        Obj(kvs) => kvs.iter().all(|(k, v)| v.one && (matches!(k, Key::Text(_)) || matches!(k, Key::Term(t) if t.one))),
        Neg(a) | F1(_, a) | Assign(_, a) | Update(_, a) => a.one,
        // UPDATE has one output (checked when compiling), so one per output of INIT.
        Reduce(_, _, init, _) => init.one,
        Pipe(a, b) | Bind(a, _, b) | Logic(a, _, b) | Math(a, _, b) | Cmp(a, _, b) | Alt(a, b) => a.one && b.one,
        Ite(c, a, b) => c.one && a.one && b.one,
        Path(h, steps) => {
            h.one
                && steps.iter().all(|(s, o)| {
                    matches!(o, Opt::Essential)
                        && match s {
                            Step::Key(_) => true,
                            Step::Index(i) => i.one,
                            Step::Iter => false,
                            Step::Slice(a, b) => a.iter().chain(b).all(|x| x.one),
                        }
                })
        }
        Comma(..) | Try(_) | Empty | Select(_) | First(_) | Last(_) | Limit(..) | Capture(..) => false,
    };
    T { node, one }
}

fn bx(node: Node) -> Box<T> {
    Box::new(t(node))
}

/// What is in scope while compiling: variables, definitions and filter arguments.
enum Bound<'s, 't> {
    Var(&'s str, usize),
    Def(&'t Def<&'s str>, Scope<'s, 't>),
    Arg(&'s str, &'t Term<&'s str>, Scope<'s, 't>),
}

struct Link<'s, 't> {
    bound: Bound<'s, 't>,
    next: Scope<'s, 't>,
}

type Scope<'s, 't> = Option<Rc<Link<'s, 't>>>;

fn with<'s, 't>(scope: &Scope<'s, 't>, bound: Bound<'s, 't>) -> Scope<'s, 't> {
    Some(Rc::new(Link { bound, next: scope.clone() }))
}

/// Most terms one program may expand to (definitions are expanded at every call).
const MAX_TERMS: usize = 200_000;

/// Deepest nesting of terms (evaluation recurses once per level, on a blocking thread's stack).
const MAX_DEPTH: usize = 100;

struct Compiler {
    slots: usize,
    terms: usize,
    depth: usize,
}

/// Why a program is not on the fast path (for tests and debugging).
type Unsupported = String;

fn literal_text(parts: &[StrPart<&str, Term<&str>>]) -> Option<String> {
    let mut out = String::new();
    for p in parts {
        match p {
            StrPart::Str(s) => out.push_str(s),
            StrPart::Char(c) => out.push(*c),
            StrPart::Term(_) => return None,
        }
    }
    Some(out)
}

fn literal_str(term: &Term<&str>) -> Option<String> {
    match term {
        Term::Str(None, parts) => literal_text(parts),
        _ => None,
    }
}

/// The keys of `.a.b.c` (a path of literal keys from the input).
fn key_path(term: &Term<&str>) -> Option<Vec<String>> {
    let Term::Path(head, path) = term else { return None };
    if !matches!(**head, Term::Id) || path.0.is_empty() {
        return None;
    }
    path.0
        .iter()
        .map(|(part, opt)| match (part, opt) {
            (Part::Index(k), Opt::Essential) => literal_str(k),
            _ => None,
        })
        .collect()
}

impl Compiler {
    fn slot(&mut self) -> usize {
        self.slots += 1;
        self.slots - 1
    }

    fn term<'s, 't>(&mut self, term: &'t Term<&'s str>, sc: &Scope<'s, 't>) -> Result<T, Unsupported> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err("the program expands to too many terms".into());
        }
        if self.depth >= MAX_DEPTH {
            return Err("the program nests too deeply".into());
        }
        self.depth += 1;
        let out = self.term_at(term, sc);
        self.depth -= 1;
        out
    }

    fn term_at<'s, 't>(&mut self, term: &'t Term<&'s str>, sc: &Scope<'s, 't>) -> Result<T, Unsupported> {
        // Literal lists and objects: one value, as jaq gets them (`super::jq::fold_constants`
        // gives jaq the same value, its objects in key order, like the record's).
        if let Some(v) = super::jq::constant(term) {
            return Ok(t(Node::Lit(v)));
        }
        let b = |c: &mut Self, x: &'t Term<&'s str>| c.term(x, sc).map(Box::new);
        Ok(t(match term {
            Term::Id => Node::Id,
            Term::Num(n) => {
                let v = match n.parse::<i64>() {
                    Ok(i) => Value::from(i),
                    Err(_) => {
                        let f: f64 = n.parse().map_err(|_| format!("number `{n}`"))?;
                        let v = Number::from_f64(f).ok_or_else(|| format!("number `{n}`"))?;
                        // jaq keeps a literal's text; equal only when it is written the way serde_json writes it.
                        if v.to_string() != *n {
                            return Err(format!("number `{n}` (not in its shortest form)"));
                        }
                        Value::Number(v)
                    }
                };
                Node::Lit(v)
            }
            Term::Str(None, parts) => match literal_text(parts) {
                Some(s) => Node::Lit(Value::String(s)),
                None => {
                    let mut pieces = Vec::new();
                    for p in parts {
                        pieces.push(match p {
                            StrPart::Str(s) => Piece::Text((*s).to_owned()),
                            StrPart::Char(c) => Piece::Text(c.to_string()),
                            StrPart::Term(x) => Piece::Term(self.term(x, sc)?),
                        });
                    }
                    Node::Str(pieces)
                }
            },
            Term::Arr(None) => Node::Lit(Value::Array(Vec::new())),
            Term::Arr(Some(x)) => Node::Arr(Some(b(self, x)?)),
            Term::Obj(kvs) => {
                let mut out = Vec::new();
                for (k, v) in kvs {
                    let key = match (k, literal_str(k)) {
                        (_, Some(s)) => Key::Text(s),
                        (Term::Var(name), _) => Key::Text(name.trim_start_matches('$').to_owned()),
                        (Term::Str(Some(_), _), _) => return Err("formatted strings".into()),
                        (k, None) => Key::Term(self.term(k, sc)?),
                    };
                    let value = match (v, k) {
                        (Some(v), _) => self.term(v, sc)?,
                        (None, Term::Var(_)) => self.term(k, sc)?,
                        (None, _) => {
                            let Key::Text(name) = &key else { return Err("`{(f)}` without a value".into()) };
                            t(Node::Path(Box::new(t(Node::Id)), vec![(Step::Key(name.clone()), Opt::Essential)]))
                        }
                    };
                    if let Key::Term(k) = &key {
                        if !k.one {
                            return Err("object keys that are generators".into());
                        }
                    }
                    out.push((key, value));
                }
                Node::Obj(out)
            }
            Term::Neg(x) => Node::Neg(b(self, x)?),
            Term::BinOp(l, op, r) => match op {
                BinaryOp::Pipe(None) => Node::Pipe(b(self, l)?, b(self, r)?),
                BinaryOp::Pipe(Some(Pattern::Var(x))) => {
                    let left = b(self, l)?;
                    let slot = self.slot();
                    let right = self.term(r, &with(sc, Bound::Var(x, slot)))?;
                    Node::Bind(left, slot, Box::new(right))
                }
                BinaryOp::Pipe(Some(_)) => return Err("destructuring patterns".into()),
                BinaryOp::Comma => Node::Comma(b(self, l)?, b(self, r)?),
                BinaryOp::Alt => Node::Alt(b(self, l)?, b(self, r)?),
                BinaryOp::Or => Node::Logic(b(self, l)?, true, b(self, r)?),
                BinaryOp::And => Node::Logic(b(self, l)?, false, b(self, r)?),
                BinaryOp::Math(m) => Node::Math(b(self, l)?, *m, b(self, r)?),
                BinaryOp::Cmp(c) => Node::Cmp(b(self, l)?, *c, b(self, r)?),
                BinaryOp::Assign => match key_path(l) {
                    Some(keys) => Node::Assign(keys, b(self, r)?),
                    None => return Err("assignment to other than `.a.b`".into()),
                },
                BinaryOp::Update => match key_path(l) {
                    Some(keys) => {
                        let f = self.term(r, sc)?;
                        if !f.one {
                            return Err("`|=` with a generator".into());
                        }
                        Node::Update(keys, Box::new(f))
                    }
                    None => return Err("update of other than `.a.b`".into()),
                },
                _ => return Err("arithmetic update-assignment".into()),
            },
            Term::TryCatch(x, None) => Node::Try(b(self, x)?),
            Term::IfThenElse(branches, otherwise) => {
                let mut acc = match otherwise {
                    Some(o) => self.term(o, sc)?,
                    None => t(Node::Id),
                };
                for (c, then) in branches.iter().rev() {
                    acc = t(Node::Ite(b(self, c)?, b(self, then)?, Box::new(acc)));
                }
                return Ok(acc);
            }
            Term::Def(defs, body) => {
                let mut inner = sc.clone();
                for d in defs {
                    inner = with(&inner, Bound::Def(d, inner.clone()));
                }
                return self.term(body, &inner);
            }
            Term::Call(name, args) => return self.call(name, args, sc),
            Term::Var(name) => {
                let mut at = sc.clone();
                loop {
                    let Some(link) = at else { return Err(format!("variable `{name}`")) };
                    if let Bound::Var(n, slot) = &link.bound {
                        if n == name {
                            break Node::Var(*slot);
                        }
                    }
                    at = link.next.clone();
                }
            }
            Term::Path(head, path) => {
                let head = b(self, head)?;
                let mut steps = Vec::new();
                for (part, opt) in &path.0 {
                    let step = match part {
                        Part::Index(k) => match literal_str(k) {
                            Some(s) => Step::Key(s),
                            None => {
                                let i = self.term(k, sc)?;
                                if !i.one {
                                    return Err("indices that are generators".into());
                                }
                                Step::Index(i)
                            }
                        },
                        Part::Range(None, None) => Step::Iter,
                        Part::Range(from, upto) => {
                            let from = from.as_ref().map(|x| self.term(x, sc)).transpose()?;
                            let upto = upto.as_ref().map(|x| self.term(x, sc)).transpose()?;
                            if from.iter().chain(&upto).any(|x| !x.one) {
                                return Err("slices bounded by generators".into());
                            }
                            Step::Slice(from, upto)
                        }
                    };
                    steps.push((step, *opt));
                }
                Node::Path(head, steps)
            }
            Term::Recurse => return Err("`..`".into()),
            Term::Str(Some(_), _) => return Err("formatted strings".into()),
            Term::TryCatch(_, Some(_)) => return Err("`catch`".into()),
            Term::Label(..) | Term::Break(_) => return Err("`label`".into()),
            Term::Fold(kind, xs, pattern, args) => {
                let (Pattern::Var(x), [init, update]) = (pattern, &args[..]) else {
                    return Err(if *kind == "reduce" { "destructuring patterns" } else { "`foreach`" }.into());
                };
                if *kind != "reduce" {
                    return Err("`foreach`".into());
                }
                let src = b(self, xs)?;
                let init = b(self, init)?;
                let slot = self.slot();
                let update = self.term(update, &with(sc, Bound::Var(x, slot)))?;
                if !update.one {
                    // jaq folds on from every output of UPDATE (and stops on none): kept on jaq.
                    return Err("`reduce` with an update of several (or no) outputs".into());
                }
                Node::Reduce(src, slot, init, Box::new(update))
            }
        }))
    }

    fn call<'s, 't>(&mut self, name: &'s str, args: &'t [Term<&'s str>], sc: &Scope<'s, 't>) -> Result<T, Unsupported> {
        let mut at = sc.clone();
        while let Some(link) = at {
            match &link.bound {
                Bound::Arg(n, term, caller) if *n == name && args.is_empty() => return self.term(term, caller),
                Bound::Def(d, defined) if d.name == name && d.args.len() == args.len() => {
                    return self.expand(d, args, sc, defined);
                }
                _ => {}
            }
            at = link.next.clone();
        }
        self.builtin(name, args, sc)
    }

    /// A call of a definition, expanded in place: filter arguments are compiled where they are
    /// used (in the caller's scope), value arguments (`$x`) bound around the body.
    fn expand<'s, 't>(
        &mut self,
        d: &'t Def<&'s str>,
        args: &'t [Term<&'s str>],
        caller: &Scope<'s, 't>,
        defined: &Scope<'s, 't>,
    ) -> Result<T, Unsupported> {
        let mut inner = defined.clone();
        let mut binds = Vec::new();
        for (param, arg) in d.args.iter().zip(args) {
            if param.starts_with('$') {
                let value = self.term(arg, caller)?;
                let slot = self.slot();
                inner = with(&inner, Bound::Var(param, slot));
                binds.push((value, slot));
            } else {
                inner = with(&inner, Bound::Arg(param, arg, caller.clone()));
            }
        }
        let mut body = self.term(&d.body, &inner)?;
        for (value, slot) in binds.into_iter().rev() {
            body = t(Node::Bind(Box::new(value), slot, Box::new(body)));
        }
        Ok(body)
    }

    fn builtin<'s, 't>(
        &mut self,
        name: &'s str,
        args: &'t [Term<&'s str>],
        sc: &Scope<'s, 't>,
    ) -> Result<T, Unsupported> {
        let lit = |v: Value| Ok(t(Node::Lit(v)));
        let f0 = |f: F0| Ok(t(Node::F0(f)));
        let index =
            |i: i64| Ok(t(Node::Path(bx(Node::Id), vec![(Step::Index(t(Node::Lit(Value::from(i)))), Opt::Essential)])));
        let regex = |term: &Term<&str>| -> Result<Regex, Unsupported> {
            let re = literal_str(term).ok_or("a regular expression that is not a literal")?;
            Regex::new(&re).map_err(|e| e.to_string())
        };
        match (name, args) {
            ("null", []) => lit(Value::Null),
            ("true", []) => lit(Value::Bool(true)),
            ("false", []) => lit(Value::Bool(false)),
            ("empty", []) => Ok(t(Node::Empty)),
            ("error", []) => Ok(t(Node::Error(bx(Node::Id)))),
            ("error", [m]) => Ok(t(Node::Error(Box::new(self.term(m, sc)?)))),
            ("not", []) => f0(F0::Not),
            ("length", []) => f0(F0::Length),
            ("type", []) => f0(F0::Type),
            ("keys", []) => f0(F0::Keys),
            ("keys_unsorted", []) => f0(F0::KeysUnsorted),
            ("flatten", []) => f0(F0::Flatten),
            ("trim", []) => f0(F0::Trim(true, true)),
            ("ltrim", []) => f0(F0::Trim(true, false)),
            ("rtrim", []) => f0(F0::Trim(false, true)),
            ("@base64", []) => f0(F0::Base64),
            // jaq: `def add(f): reduce f as $x (null; . + $x);`
            ("add", [f]) => {
                let items = self.term(f, sc)?;
                let slot = self.slot();
                let sum = t(Node::Math(bx(Node::Id), Math::Add, bx(Node::Var(slot))));
                Ok(t(Node::Reduce(Box::new(items), slot, bx(Node::Lit(Value::Null)), Box::new(sum))))
            }
            // jaq: `def getpath($path): reduce $path[] as $p (.; .[$p]);`
            ("getpath", [p]) => {
                let path = self.term(p, sc)?;
                let (path_slot, key_slot) = (self.slot(), self.slot());
                let keys = t(Node::Path(bx(Node::Var(path_slot)), vec![(Step::Iter, Opt::Essential)]));
                let step = t(Node::Path(bx(Node::Id), vec![(Step::Index(t(Node::Var(key_slot))), Opt::Essential)]));
                let fold = t(Node::Reduce(Box::new(keys), key_slot, bx(Node::Id), Box::new(step)));
                Ok(t(Node::Bind(Box::new(path), path_slot, Box::new(fold))))
            }
            ("tostring", []) => f0(F0::ToString),
            ("tonumber", []) => f0(F0::ToNumber),
            ("tojson", []) => f0(F0::ToJson),
            ("floor", []) => f0(F0::Floor),
            ("round", []) => f0(F0::Round),
            ("ceil", []) => f0(F0::Ceil),
            ("ascii_downcase", []) => f0(F0::Downcase),
            ("ascii_upcase", []) => f0(F0::Upcase),
            ("unique", []) => f0(F0::Unique),
            ("sort", []) => f0(F0::Sort),
            ("add", []) => f0(F0::Add),
            ("to_entries", []) => f0(F0::ToEntries),
            ("from_entries", []) => f0(F0::FromEntries),
            ("ms", []) => f0(F0::Ms),
            ("iso", []) => f0(F0::Iso),
            ("num", []) => f0(F0::Num),
            ("int", []) => f0(F0::Int),
            ("bool", []) => f0(F0::Bool),
            ("severity_id", []) => f0(F0::SeverityId),
            ("score_severity_id", []) => f0(F0::ScoreSeverityId),
            ("prune", []) => f0(F0::Prune),
            ("first", []) => index(0),
            ("last", []) => index(-1),
            ("values", []) => {
                let cond = t(Node::Cmp(bx(Node::Id), Cmp::Ne, bx(Node::Lit(Value::Null))));
                Ok(t(Node::Select(Box::new(cond))))
            }
            ("objects" | "arrays" | "strings" | "numbers" | "booleans" | "nulls", []) => {
                let ty = match name {
                    "objects" => "object",
                    "arrays" => "array",
                    "strings" => "string",
                    "numbers" => "number",
                    "booleans" => "boolean",
                    _ => "null",
                };
                let cond = t(Node::Cmp(bx(Node::F0(F0::Type)), Cmp::Eq, bx(Node::Lit(Value::String(ty.to_owned())))));
                Ok(t(Node::Select(Box::new(cond))))
            }
            ("min", []) => f0(F0::Min),
            ("max", []) => f0(F0::Max),
            ("capture", [re]) => Ok(t(Node::Capture(regex(re)?, false))),
            ("capture", [re, flags]) => {
                let (re, flags) = regex_with_flags(re, flags, "g")?;
                Ok(t(Node::Capture(re, flags.contains('g'))))
            }
            ("test", [re, flags]) => Ok(t(Node::Test(regex_with_flags(re, flags, "gn")?.0))),
            ("select", [f]) => Ok(t(Node::Select(Box::new(self.term(f, sc)?)))),
            ("any" | "all", _) if args.len() <= 2 => {
                let all = name == "all";
                let (generator, cond) = match args {
                    [g, c] => (self.term(g, sc)?, self.term(c, sc)?),
                    [c] => (t(Node::Path(bx(Node::Id), vec![(Step::Iter, Opt::Essential)])), self.term(c, sc)?),
                    _ => (t(Node::Path(bx(Node::Id), vec![(Step::Iter, Opt::Essential)])), t(Node::Id)),
                };
                Ok(t(Node::AnyAll(Box::new(generator), Box::new(cond), all)))
            }
            ("isempty", [g]) => {
                Ok(t(Node::AnyAll(Box::new(self.term(g, sc)?), bx(Node::Lit(Value::Bool(false))), true)))
            }
            ("first", [f]) => Ok(t(Node::First(Box::new(self.term(f, sc)?)))),
            ("map_values", [f]) => Ok(t(Node::MapValues(Box::new(self.term(f, sc)?)))),
            ("sort_by" | "group_by" | "unique_by" | "min_by" | "max_by", [f]) => {
                let by = match name {
                    "sort_by" => By::Sort,
                    "group_by" => By::Group,
                    "unique_by" => By::Unique,
                    "min_by" => By::Min,
                    _ => By::Max,
                };
                Ok(t(Node::By(Box::new(self.term(f, sc)?), by)))
            }
            // jaq: `def abs: if . < 0 then - . end;`
            ("abs", []) => Ok(t(Node::Ite(
                bx(Node::Cmp(bx(Node::Id), Cmp::Lt, bx(Node::Lit(Value::from(0))))),
                bx(Node::Neg(bx(Node::Id))),
                bx(Node::Id),
            ))),
            ("reverse", []) => f0(F0::Reverse),
            ("last", [f]) => Ok(t(Node::Last(Box::new(self.term(f, sc)?)))),
            ("limit", [n, f]) => {
                let n = self.term(n, sc)?;
                if !n.one {
                    return Err("`limit` with a count that is a generator".into());
                }
                Ok(t(Node::Limit(Box::new(n), Box::new(self.term(f, sc)?))))
            }
            ("map", [f]) => Ok(t(Node::Map(Box::new(self.term(f, sc)?)))),
            ("with_entries", [f]) => Ok(t(Node::WithEntries(Box::new(self.term(f, sc)?)))),
            ("test", [re]) => Ok(t(Node::Test(regex(re)?))),
            ("sub" | "gsub", [re, with]) => {
                let with = literal_str(with).ok_or("a replacement that is not a literal string")?;
                Ok(t(Node::Sub(regex(re)?, with, name == "gsub")))
            }
            ("del", [p]) => {
                fn paths(p: &Term<&str>, out: &mut Vec<Vec<String>>) -> Option<()> {
                    match p {
                        Term::BinOp(l, BinaryOp::Comma, r) => {
                            paths(l, out)?;
                            paths(r, out)
                        }
                        p => {
                            out.push(key_path(p)?);
                            Some(())
                        }
                    }
                }
                let mut list = Vec::new();
                paths(p, &mut list).ok_or("`del` of other than `.a.b, .c`")?;
                Ok(t(Node::Del(list)))
            }
            (_, [a]) => {
                let f = match name {
                    "startswith" => F1::StartsWith,
                    "endswith" => F1::EndsWith,
                    "split" => F1::Split,
                    "join" => F1::Join,
                    "ltrimstr" => F1::LtrimStr,
                    "rtrimstr" => F1::RtrimStr,
                    "has" => F1::Has,
                    "unmapped" => F1::Unmapped,
                    "stix_id" => F1::StixId,
                    "index" => F1::Index,
                    "contains" => F1::Contains,
                    _ => return Err(format!("`{name}/1`")),
                };
                Ok(t(Node::F1(f, Box::new(self.term(a, sc)?))))
            }
            _ => Err(format!("`{name}/{}`", args.len())),
        }
    }
}

/// A literal regular expression with literal flags: `i`, `x`, `s`, and those in `neutral` (which
/// change what is done with the matches, not the expression).
fn regex_with_flags(re: &Term<&str>, flags: &Term<&str>, neutral: &str) -> Result<(Regex, String), Unsupported> {
    let flags = literal_str(flags).ok_or("regular expression flags that are not a literal")?;
    let re = literal_str(re).ok_or("a regular expression that is not a literal")?;
    let mut b = regex_bites::bytes::RegexBuilder::new(&re);
    for f in flags.chars() {
        match f {
            'i' => b.case_insensitive(true),
            'x' => b.ignore_whitespace(true),
            's' => b.dot_matches_new_line(true),
            f if neutral.contains(f) => &mut b,
            _ => return Err(format!("regular expression flag `{f}`")),
        };
    }
    Ok((b.build().map_err(|e| e.to_string())?, flags))
}

/// A mapping program compiled for the fast path.
#[derive(Debug)]
pub(super) struct Fast {
    root: T,
    slots: usize,
}

type Out<'o, 'a> = &'o mut dyn FnMut(&mut Env<'a>, V<'a>) -> R;

struct Env<'a> {
    slots: Vec<V<'a>>,
}

impl Fast {
    /// Compiles `main` (a definition without arguments) with the definitions before it in scope;
    /// `Err` names what is outside the fast path.
    pub(super) fn compile<'s>(defs: &[Def<&'s str>], main: &str) -> Result<Fast, Unsupported> {
        let mut sc: Scope<'s, '_> = None;
        let mut found = None;
        for d in defs {
            if d.name == main && d.args.is_empty() {
                found = Some((d, sc.clone()));
            }
            sc = with(&sc, Bound::Def(d, sc.clone()));
        }
        let (d, defined) = found.ok_or("no main definition")?;
        let mut c = Compiler { slots: 0, terms: 0, depth: 0 };
        let root = c.expand(d, &[], &None, &defined)?;
        Ok(Fast { root, slots: c.slots })
    }

    /// Runs the program on `input`: every output, or `None` when jaq must give the answer (an
    /// error, or a case the fast path does not decide).
    pub(super) fn run(&self, input: &Value) -> Option<Vec<Value>> {
        let mut env = Env { slots: vec![V::In(&NULL); self.slots] };
        let mut out = Vec::new();
        let r = if self.root.one {
            one(&self.root, &mut env, V::In(input)).map(|v| out.push(v.into_value()))
        } else {
            eval(&self.root, &mut env, V::In(input), &mut |_, v| {
                out.push(v.into_value());
                if out.len() > 10_000 {
                    return Err(bail());
                }
                Ok(())
            })
        };
        r.ok().map(|()| out)
    }
}

/// The output of a one-output term.
fn one<'a>(t: &'a T, env: &mut Env<'a>, x: V<'a>) -> Result<V<'a>, Stop> {
    debug_assert!(t.one);
    match &t.node {
        Node::Id => Ok(x),
        Node::Lit(v) => Ok(V::In(v)),
        Node::Var(slot) => Ok(env.slots[*slot].clone()),
        Node::Str(pieces) => {
            let mut s = String::new();
            for p in pieces {
                match p {
                    Piece::Text(t) => s.push_str(t),
                    Piece::Term(t) => {
                        let v = one(t, env, x.clone())?;
                        match v.val() {
                            Value::String(t) => s.push_str(t),
                            _ => s.push_str(&to_json(&v)?),
                        }
                    }
                }
            }
            Ok(V::own(Value::String(s)))
        }
        Node::Arr(None) => Ok(V::own(Value::Array(Vec::new()))),
        Node::Arr(Some(f)) => {
            let mut list = Vec::new();
            collect(f, env, x, &mut list)?;
            Ok(V::own(Value::Array(list)))
        }
        Node::Obj(kvs) => {
            let mut m = Map::new();
            for (k, v) in kvs {
                let key = key(k, env, &x)?;
                let value = one(v, env, x.clone())?.into_value();
                m.insert(key, value);
            }
            Ok(V::own(Value::Object(m)))
        }
        Node::Neg(f) => match one(f, env, x)?.val() {
            Value::Number(n) => match number(n)? {
                N::I(i) => Ok(V::own(Value::from(i.checked_neg().ok_or(Stop::Bail)?))),
                N::F(f) => N::F(-f).value().map(V::own),
            },
            _ => Err(Stop::Err),
        },
        Node::Pipe(a, b) => {
            let y = one(a, env, x)?;
            one(b, env, y)
        }
        Node::Bind(a, slot, b) => {
            let y = one(a, env, x.clone())?;
            let old = std::mem::replace(&mut env.slots[*slot], y);
            let r = one(b, env, x);
            env.slots[*slot] = old;
            r
        }
        Node::Logic(a, or, b) => {
            let l = one(a, env, x.clone())?.truthy();
            let v = if l == *or { *or } else { one(b, env, x)?.truthy() };
            Ok(boolean(v))
        }
        Node::Math(a, op, b) => {
            let l = one(a, env, x.clone())?;
            let r = one(b, env, x)?;
            math(op, l, r).map(V::own)
        }
        Node::Cmp(a, op, b) => {
            let l = one(a, env, x.clone())?;
            let r = one(b, env, x)?;
            compare(op, l.val(), r.val()).map(boolean)
        }
        Node::Alt(a, b) => {
            let l = one(a, env, x.clone())?;
            if l.truthy() {
                Ok(l)
            } else {
                one(b, env, x)
            }
        }
        Node::Ite(c, a, b) => {
            if one(c, env, x.clone())?.truthy() {
                one(a, env, x)
            } else {
                one(b, env, x)
            }
        }
        Node::Path(h, steps) => {
            let mut v = one(h, env, x.clone())?;
            for (s, _) in steps {
                v = match s {
                    Step::Key(k) => field(&v, k)?,
                    Step::Index(i) => {
                        let i = one(i, env, x.clone())?;
                        index(&v, i.val())?
                    }
                    Step::Slice(from, upto) => {
                        let from = from.as_ref().map(|f| one(f, env, x.clone())).transpose()?;
                        let upto = upto.as_ref().map(|f| one(f, env, x.clone())).transpose()?;
                        slice(&v, from.as_ref().map(V::val), upto.as_ref().map(V::val))?
                    }
                    Step::Iter => return Err(bail()),
                };
            }
            Ok(v)
        }
        Node::Error(m) if m.one => {
            one(m, env, x)?;
            Err(Stop::Err)
        }
        Node::Error(_) => Err(bail()),
        Node::Reduce(src, slot, init, update) => {
            let acc = one(init, env, x.clone())?;
            fold(src, *slot, update, env, x, acc)
        }
        Node::By(f, by) => keyed_by(f, *by, env, x),
        Node::MapValues(f) => match x.val() {
            Value::Array(items) => {
                let mut list = Vec::with_capacity(items.len());
                for i in 0..items.len() {
                    collect(f, env, x.part(|v| v.get(i)), &mut list)?;
                }
                Ok(V::own(Value::Array(list)))
            }
            Value::Object(_) => {
                // Every value is mapped whatever the order, and any error is the answer's: the
                // order of the entries cannot matter.
                let mut obj = Map::new();
                for (k, v) in x.entries(true)? {
                    if let Some(y) = first_output(f, env, v)? {
                        obj.insert(k.to_owned(), y.into_value());
                    }
                }
                Ok(V::own(Value::Object(obj)))
            }
            _ => Err(Stop::Err),
        },
        Node::AnyAll(generator, cond, all) => {
            // Settled by a truthy condition (any) or a falsy one (all).
            let mut settled = false;
            let r = eval(generator, env, x, &mut |env, item| {
                if settled {
                    return Ok(());
                }
                eval(cond, env, item, &mut |_, c| {
                    settled = settled || c.truthy() != *all;
                    Ok(())
                })
            });
            match r {
                // What comes after the settling output is never evaluated by jaq.
                Err(_) if settled => {}
                r => r?,
            }
            Ok(boolean(settled != *all))
        }
        Node::Map(f) => {
            let mut list = Vec::new();
            for it in x.values()? {
                collect(f, env, it, &mut list)?;
            }
            Ok(V::own(Value::Array(list)))
        }
        Node::WithEntries(f) => {
            let any_order = matches!(f.node, Node::Select(_));
            let mut mapped = Vec::new();
            for (k, v) in x.entries(any_order)? {
                let mut e = Map::new();
                e.insert("key".to_owned(), Value::String(k.to_owned()));
                e.insert("value".to_owned(), v.into_value());
                eval(f, env, V::own(Value::Object(e)), &mut |_, v| {
                    mapped.push(v.into_value());
                    Ok(())
                })?;
            }
            f0(F0::FromEntries, V::own(Value::Array(mapped)))
        }
        Node::F0(f) => f0(*f, x),
        Node::F1(f, a) => {
            let arg = one(a, env, x.clone())?;
            f1(*f, x, &arg)
        }
        Node::Test(re) => match x.val() {
            Value::String(s) => Ok(boolean(re.is_match(s.as_bytes()))),
            _ => Err(Stop::Err),
        },
        Node::Sub(re, with, global) => {
            let Value::String(s) = x.val() else { return Err(Stop::Err) };
            let s = s.as_bytes();
            let mut out = Vec::with_capacity(s.len());
            let mut last = 0;
            for m in re.find_iter(s) {
                if m.start() == m.end() {
                    // Empty matches: jaq's rules for them are its own.
                    return Err(bail());
                }
                out.extend_from_slice(&s[last..m.start()]);
                out.extend_from_slice(with.as_bytes());
                last = m.end();
                if !global {
                    break;
                }
            }
            out.extend_from_slice(&s[last..]);
            String::from_utf8(out).map(|s| V::own(Value::String(s))).map_err(|_| Stop::Bail)
        }
        Node::Assign(keys, f) => {
            let y = one(f, env, x.clone())?.into_value();
            let mut v = x.into_value();
            set_path(&mut v, keys, y)?;
            Ok(V::own(v))
        }
        Node::Update(keys, f) => {
            let mut v = x.into_value();
            let mut at = &v;
            for k in keys {
                at = match at {
                    Value::Object(m) => m.get(k).unwrap_or(&NULL),
                    _ => return Err(bail()),
                };
            }
            let y = one(f, env, V::own(at.clone()))?.into_value();
            set_path(&mut v, keys, y)?;
            Ok(V::own(v))
        }
        Node::Del(paths) => {
            let mut v = x.into_value();
            for keys in paths {
                del_path(&mut v, keys)?;
            }
            Ok(V::own(v))
        }
        Node::Comma(..)
        | Node::Try(_)
        | Node::Empty
        | Node::Select(_)
        | Node::First(_)
        | Node::Capture(..)
        | Node::Last(_)
        | Node::Limit(..) => Err(bail()),
    }
}

fn key<'a>(k: &'a Key, env: &mut Env<'a>, x: &V<'a>) -> Result<String, Stop> {
    match k {
        Key::Text(s) => Ok(s.clone()),
        Key::Term(t) => match one(t, env, x.clone())?.into_value() {
            Value::String(s) => Ok(s),
            _ => Err(bail()),
        },
    }
}

fn set_path(v: &mut Value, keys: &[String], y: Value) -> Result<(), Stop> {
    let Some((k, rest)) = keys.split_first() else {
        *v = y;
        return Ok(());
    };
    // jaq does not make objects out of null here (jq does).
    let Value::Object(m) = v else { return Err(bail()) };
    match m.get_mut(k) {
        Some(inner) => set_path(inner, rest, y),
        None if rest.is_empty() => {
            m.insert(k.clone(), y);
            Ok(())
        }
        None => Err(bail()),
    }
}

fn del_path(v: &mut Value, keys: &[String]) -> Result<(), Stop> {
    let Some((k, rest)) = keys.split_first() else { return Ok(()) };
    match v {
        Value::Object(m) if rest.is_empty() => {
            m.remove(k);
            Ok(())
        }
        Value::Object(m) => match m.get_mut(k) {
            Some(inner @ Value::Object(_)) => del_path(inner, rest),
            _ => Err(bail()),
        },
        _ => Err(bail()),
    }
}

/// Lists of keys compared as jaq compares them (element by element, then by length).
fn order_keys(a: &[Value], b: &[Value]) -> Result<std::cmp::Ordering, Stop> {
    for (x, y) in a.iter().zip(b) {
        let o = order(x, y)?;
        if o != std::cmp::Ordering::Equal {
            return Ok(o);
        }
    }
    Ok(a.len().cmp(&b.len()))
}

/// Lists of keys equal as jaq compares them.
fn equal_keys(a: &[Value], b: &[Value]) -> Result<bool, Stop> {
    if a.len() != b.len() {
        return Ok(false);
    }
    for (x, y) in a.iter().zip(b) {
        if !equal(x, y)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `sort_by`, `group_by`, `unique_by`, `min_by`, `max_by` (as jaq-std does them: a stable sort by
/// the keys; groups of equal keys; the first least and the last greatest element).
fn keyed_by<'a>(f: &'a T, by: By, env: &mut Env<'a>, x: V<'a>) -> Result<V<'a>, Stop> {
    let Value::Array(items) = x.val() else { return Err(bail()) };
    if by == By::Sort && items.len() < 2 {
        // jaq sorts with `sort_by_cached_key`, which asks for no key when there is nothing to sort.
        return Ok(x);
    }
    let mut keyed: Vec<(Vec<Value>, usize)> = Vec::with_capacity(items.len());
    for i in 0..items.len() {
        let mut key = Vec::new();
        collect(f, env, x.part(|v| v.get(i)), &mut key)?;
        keyed.push((key, i));
    }
    let item = |i: usize| items[i].clone();
    if matches!(by, By::Min | By::Max) {
        let mut best: Option<&(Vec<Value>, usize)> = None;
        for k in &keyed {
            let replace = match best {
                None => true,
                Some(b) => {
                    let o = order_keys(&k.0, &b.0)?;
                    if by == By::Min {
                        o == std::cmp::Ordering::Less
                    } else {
                        o != std::cmp::Ordering::Less
                    }
                }
            };
            if replace {
                best = Some(k);
            }
        }
        return Ok(best.map_or(V::In(&NULL), |b| V::own(item(b.1))));
    }
    let mut failed = false;
    keyed.sort_by(|a, b| {
        order_keys(&a.0, &b.0).unwrap_or_else(|_| {
            failed = true;
            std::cmp::Ordering::Equal
        })
    });
    if failed {
        return Err(bail());
    }
    if by == By::Sort {
        return Ok(V::own(Value::Array(keyed.iter().map(|k| item(k.1)).collect())));
    }
    let mut groups: Vec<Vec<Value>> = Vec::new();
    let mut last: Option<&Vec<Value>> = None;
    for (key, i) in &keyed {
        let same = match last {
            Some(l) => equal_keys(l, key)?,
            None => false,
        };
        match groups.last_mut() {
            Some(g) if same => g.push(item(*i)),
            _ => groups.push(vec![item(*i)]),
        }
        last = Some(key);
    }
    Ok(V::own(Value::Array(if by == By::Unique {
        groups.into_iter().filter_map(|g| g.into_iter().next()).collect()
    } else {
        groups.into_iter().map(Value::Array).collect()
    })))
}

/// `reduce`: `update` (one output) applied to `acc` for each output of `src` on `x`, bound to
/// `slot` in turn, as `src` produces them.
fn fold<'a>(src: &'a T, slot: usize, update: &'a T, env: &mut Env<'a>, x: V<'a>, acc: V<'a>) -> Result<V<'a>, Stop> {
    let mut acc = Some(acc);
    eval(src, env, x, &mut |env, item| {
        let old = std::mem::replace(&mut env.slots[slot], item);
        let next = one(update, env, acc.take().ok_or(Stop::Bail)?);
        env.slots[slot] = old;
        acc = Some(next?);
        Ok(())
    })?;
    acc.ok_or(Stop::Bail)
}

/// Every output of `t` on `x`, appended to `list`.
fn collect<'a>(t: &'a T, env: &mut Env<'a>, x: V<'a>, list: &mut Vec<Value>) -> R {
    if t.one {
        list.push(one(t, env, x)?.into_value());
        return Ok(());
    }
    eval(t, env, x, &mut |_, v| {
        list.push(v.into_value());
        Ok(())
    })
}

/// The first output of `t` on `x`, if any. jaq never evaluates what comes after it, so an error
/// after it does not count.
fn first_output<'a>(t: &'a T, env: &mut Env<'a>, x: V<'a>) -> Result<Option<V<'a>>, Stop> {
    let mut found = None;
    let r = eval(t, env, x, &mut |_, v| {
        if found.is_none() {
            found = Some(v);
        }
        Ok(())
    });
    match (found, r) {
        (Some(v), _) => Ok(Some(v)),
        (None, r) => r.map(|()| None),
    }
}

/// Whether `t` on `x` gives anything: an output or an error (evaluated up to the first). When the
/// fast path cannot tell, jaq must answer.
fn has_item<'a>(t: &'a T, env: &mut Env<'a>, x: V<'a>) -> Result<bool, Stop> {
    if t.one {
        return Ok(true);
    }
    let mut found = false;
    match eval(t, env, x, &mut |_, _| {
        found = true;
        Err(Stop::Bail)
    }) {
        Ok(()) => Ok(false),
        Err(_) if found => Ok(true),
        Err(Stop::Err) => Ok(true),
        Err(e) => Err(e),
    }
}

/// An error out of `l op r` when `r` has no outputs came from `l`, which jaq never evaluates
/// then: jaq must answer.
fn unpaired<'a>(r: R, right: &'a T, env: &mut Env<'a>, x: V<'a>) -> R {
    match r {
        Err(Stop::Err) if !has_item(right, env, x)? => Err(bail()),
        r => r,
    }
}

/// Every output of `t` on `x`, to `out`.
fn eval<'a>(t: &'a T, env: &mut Env<'a>, x: V<'a>, out: Out<'_, 'a>) -> R {
    if t.one {
        let v = one(t, env, x)?;
        return out(env, v);
    }
    match &t.node {
        Node::Empty => Ok(()),
        Node::Comma(a, b) => {
            eval(a, env, x.clone(), out)?;
            eval(b, env, x, out)
        }
        Node::Pipe(a, b) => eval(a, env, x, &mut |env, y| eval(b, env, y, out)),
        Node::Bind(a, slot, b) => eval(a, env, x.clone(), &mut |env, y| {
            let old = std::mem::replace(&mut env.slots[*slot], y);
            let r = eval(b, env, x.clone(), out);
            env.slots[*slot] = old;
            r
        }),
        Node::Select(c) => eval(c, env, x.clone(), &mut |env, y| if y.truthy() { out(env, x.clone()) } else { Ok(()) }),
        Node::First(f) => match first_output(f, env, x)? {
            Some(v) => out(env, v),
            None => Ok(()),
        },
        Node::Capture(re, global) => {
            let Value::String(text) = x.val() else { return Err(Stop::Err) };
            let names: Vec<Option<&str>> = re.capture_names().collect();
            for caps in re.captures_iter(text.as_bytes()) {
                if caps.get(0).is_none_or(|m| m.start() == m.end()) {
                    // Empty matches: jaq's rules for them are its own.
                    return Err(bail());
                }
                let mut obj = Map::new();
                for (i, name) in names.iter().enumerate() {
                    if let (Some(name), Some(m)) = (name, caps.get(i)) {
                        let s = std::str::from_utf8(m.as_bytes()).map_err(|_| bail())?;
                        obj.insert((*name).to_owned(), Value::String(s.to_owned()));
                    }
                }
                out(env, V::own(Value::Object(obj)))?;
                if !*global {
                    break;
                }
            }
            Ok(())
        }
        Node::Last(f) => {
            let mut last = None;
            eval(f, env, x, &mut |_, v| {
                last = Some(v);
                Ok(())
            })?;
            last.map_or(Ok(()), |v| out(env, v))
        }
        Node::Limit(n, f) => {
            // Whole counts only (jaq counts a fraction down past zero, and compares other values).
            let mut left = match one(n, env, x.clone())?.val() {
                Value::Number(m) => m.as_i64().ok_or(Stop::Bail)?,
                _ => return Err(bail()),
            };
            if left <= 0 {
                return Ok(());
            }
            let mut downstream = None;
            let r = eval(f, env, x, &mut |env, v| {
                if left == 0 {
                    return Ok(());
                }
                left -= 1;
                out(env, v).map_err(|e| {
                    downstream = Some(e);
                    Stop::Bail
                })
            });
            match (downstream, r) {
                (Some(e), _) => Err(e),
                // What comes after the last output taken is never evaluated by jaq.
                (None, Err(_)) if left == 0 => Ok(()),
                (None, r) => r,
            }
        }
        Node::Reduce(src, slot, init, update) => eval(init, env, x.clone(), &mut |env, acc| {
            let y = fold(src, *slot, update, env, x.clone(), acc)?;
            out(env, y)
        }),
        Node::Try(f) => {
            let mut downstream = None;
            let r = eval(f, env, x, &mut |env, v| {
                out(env, v).map_err(|e| {
                    downstream = Some(e);
                    Stop::Bail
                })
            });
            match (downstream, r) {
                (Some(e), _) => Err(e),
                (None, Err(Stop::Err)) => Ok(()),
                (None, r) => r,
            }
        }
        Node::Alt(a, b) => {
            let mut any = false;
            eval(a, env, x.clone(), &mut |env, v| {
                if v.truthy() {
                    any = true;
                    out(env, v)
                } else {
                    Ok(())
                }
            })?;
            if any {
                Ok(())
            } else {
                eval(b, env, x, out)
            }
        }
        Node::Ite(c, a, b) => eval(c, env, x.clone(), &mut |env, y| {
            let branch = if y.truthy() { a } else { b };
            eval(branch, env, x.clone(), out)
        }),
        Node::Logic(a, or, b) => eval(a, env, x.clone(), &mut |env, l| {
            if l.truthy() == *or {
                out(env, boolean(*or))
            } else {
                eval(b, env, x.clone(), &mut |env, r| out(env, boolean(r.truthy())))
            }
        }),
        Node::Obj(kvs) => object(kvs, 0, env, &x, Map::new(), out),
        Node::Str(_) => Err(bail()),
        Node::F1(f, a) => eval(a, env, x.clone(), &mut |env, arg| {
            let v = f1(*f, x.clone(), &arg)?;
            out(env, v)
        }),
        // jaq pairs every output of the left with every output of the right: with none on the
        // right, the left's errors never surface there, so such an error goes to jaq.
        Node::Math(a, op, b) => {
            let r = eval(a, env, x.clone(), &mut |env, l| {
                eval(b, env, x.clone(), &mut |env, r| {
                    let v = math(op, l.clone(), r)?;
                    out(env, V::own(v))
                })
            });
            unpaired(r, b, env, x)
        }
        Node::Cmp(a, op, b) => {
            let r = eval(a, env, x.clone(), &mut |env, l| {
                eval(b, env, x.clone(), &mut |env, r| {
                    let v = compare(op, l.val(), r.val())?;
                    out(env, boolean(v))
                })
            });
            unpaired(r, b, env, x)
        }
        Node::Neg(_) | Node::Assign(..) | Node::Update(..) => Err(bail()),
        Node::Path(h, steps) => eval(h, env, x.clone(), &mut |env, y| path(steps, env, &x, y, out)),
        // One-output terms (handled above).
        _ => Err(bail()),
    }
}

fn object<'a>(
    kvs: &'a [(Key, T)],
    i: usize,
    env: &mut Env<'a>,
    x: &V<'a>,
    acc: Map<String, Value>,
    out: Out<'_, 'a>,
) -> R {
    let Some((k, v)) = kvs.get(i) else { return out(env, V::own(Value::Object(acc))) };
    // jaq pairs a computed key with each output of the value: with none, the key's error never
    // surfaces there, so such an error goes to jaq.
    let k = match key(k, env, x) {
        Ok(k) => k,
        Err(Stop::Err) if !has_item(v, env, x.clone())? => return Err(bail()),
        Err(e) => return Err(e),
    };
    if v.one {
        let mut acc = acc;
        acc.insert(k, one(v, env, x.clone())?.into_value());
        return object(kvs, i + 1, env, x, acc, out);
    }
    eval(v, env, x.clone(), &mut |env, y| {
        let mut acc = acc.clone();
        acc.insert(k.clone(), y.into_value());
        object(kvs, i + 1, env, x, acc, out)
    })
}

fn path<'a>(steps: &'a [(Step, Opt)], env: &mut Env<'a>, x: &V<'a>, v: V<'a>, out: Out<'_, 'a>) -> R {
    let Some(((step, opt), rest)) = steps.split_first() else { return out(env, v) };
    // `?` covers the indexing, not the evaluation of the index: its errors always count.
    let got: Result<Vec<V<'a>>, Stop> = match step {
        Step::Key(k) => field(&v, k).map(|y| vec![y]),
        Step::Index(i) => {
            let i = one(i, env, x.clone())?;
            index(&v, i.val()).map(|y| vec![y])
        }
        Step::Slice(from, upto) => {
            let from = from.as_ref().map(|f| one(f, env, x.clone())).transpose()?;
            let upto = upto.as_ref().map(|f| one(f, env, x.clone())).transpose()?;
            slice(&v, from.as_ref().map(V::val), upto.as_ref().map(V::val)).map(|y| vec![y])
        }
        Step::Iter => v.values(),
    };
    let ys = match (got, opt) {
        (Ok(ys), _) => ys,
        (Err(Stop::Err), Opt::Optional) => return Ok(()),
        (Err(e), _) => return Err(e),
    };
    for y in ys {
        path(rest, env, x, y, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::translate::jq::Program;

    /// The records of a sample payload (the `each` list, or the payload).
    fn records(m: &crate::translate::Mapping, payload: &Value) -> Vec<Value> {
        let Some(path) = &m.each else { return vec![payload.clone()] };
        let mut at = payload;
        for seg in path {
            at = at.get(seg).unwrap_or(&Value::Null);
        }
        at.as_array().cloned().unwrap_or_default()
    }

    /// Damaged copies of a record: each field (top level, and one level down) removed, nulled, or
    /// of another type.
    fn damaged(record: &Value) -> Vec<Value> {
        let replacements = || {
            [
                None,
                Some(json!(null)),
                Some(json!("x")),
                Some(json!(7)),
                Some(json!(2.5)),
                Some(json!({})),
                Some(json!([1, "a"])),
                Some(json!(true)),
            ]
        };
        let mut out = Vec::new();
        let Some(m) = record.as_object() else { return out };
        for (k, v) in m {
            for replacement in replacements() {
                let mut r = record.clone();
                match replacement {
                    None => {
                        r.as_object_mut().unwrap().remove(k);
                    }
                    Some(v) => r[k.as_str()] = v,
                }
                out.push(r);
            }
            for inner in v.as_object().map(|o| o.keys().collect::<Vec<_>>()).unwrap_or_default() {
                for replacement in replacements() {
                    let mut r = record.clone();
                    let o = r[k.as_str()].as_object_mut().unwrap();
                    match replacement {
                        None => {
                            o.remove(inner);
                        }
                        Some(v) => {
                            o.insert(inner.clone(), v);
                        }
                    }
                    out.push(r);
                }
            }
        }
        out
    }

    /// Both engines agree: the fast path answers as jaq does, or hands over.
    fn agree(p: &Program, input: &Value, what: &str) -> bool {
        let jaq = p.run_jaq(input);
        match p.run_fast(input) {
            Some(fast) => {
                let jaq =
                    jaq.unwrap_or_else(|e| panic!("{what}: the fast path answered, jaq failed: {e}\ninput: {input}"));
                let text = |v: &Vec<Value>| serde_json::to_string(v).unwrap();
                assert_eq!(text(&fast), text(&jaq), "{what}\ninput: {input}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn shipped_mappings_take_the_fast_path_and_agree_with_jaq() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/mappings"));
        let mappings = crate::config::load_mappings(dir).unwrap();
        assert!(mappings.len() >= 12);
        let slow: Vec<String> =
            mappings.iter().filter_map(|m| Some(format!("{}: {}", m.id, m.program.not_fast()?))).collect();
        assert!(slow.is_empty(), "not on the fast path: {slow:#?}");
        for m in &mappings {
            let (mut fast, mut total) = (0, 0);
            for s in &m.samples {
                let payload: Value = serde_json::from_slice(&std::fs::read(&s.input).unwrap()).unwrap();
                for r in records(m, &payload) {
                    let what = format!("{} {}", m.id, s.input.display());
                    // Every sample record is answered on the fast path.
                    let answered = agree(&m.program, &r, &what);
                    assert!(
                        answered || m.program.run_jaq(&r).is_err(),
                        "{what}: handed over at {:?}\ninput: {r}",
                        super::LAST_BAIL.with(|l| l.get())
                    );
                    for d in damaged(&r) {
                        total += 1;
                        fast += usize::from(agree(&m.program, &d, &what));
                    }
                }
            }
            eprintln!("{}: {fast} of {total} damaged records on the fast path", m.id);
        }
    }
}

#[cfg(test)]
mod differential {
    use serde_json::{json, Value};

    use crate::translate::jq::Program;

    fn inputs() -> Vec<Value> {
        vec![
            json!(null),
            json!({"a": {"b": 2, "c": null}, "x": 1.5, "n": -3, "s": "a-b,c", "l": [3, "x", null, [1], {"k": 1}, 1.0, 3],
                   "k": "a", "e": [{"key": "p", "value": 1}, {"key": "q", "value": null}], "t": true, "u": 18446744073709551615_u64}),
            json!([1, 2, 3, null, "x"]),
            json!("text"),
            json!(42),
            json!({"a": "str", "b": [], "c": {}, "d": "", "e": false}),
            json!([{"k": "b", "v": 2}, {"k": "a", "v": 1.0}, {"k": "b", "v": null}, {"v": "x"}]),
            json!(" \u{e9}t\u{e9} \u{2713} k=v, x@y.z \n"),
            json!({"l": [[1, [2]], [], "s", {"k": [3]}], "e": [{"key": "z", "value": [1, 2]}], "s": "AbC-123"}),
            json!([[3, 1], [2, "x"], [], [null, true]]),
        ]
    }

    /// Programs over the fast path's whole surface.
    const PROGRAMS: &[&str] = &[
        ".",
        ".a",
        ".a.b",
        ".a?",
        ".a.b?",
        ".a.b.c",
        ".[0]",
        ".[-1]",
        ".[7]",
        ".[1:3]",
        ".[:-1]",
        ".[2:]",
        ".l[1:2]",
        ".[]",
        ".[]?",
        "[.[]?]",
        "[.[] | . * 2]",
        ".l[.a.b]",
        ".[.k]",
        ".[\"a\"]",
        "map(. + 1)",
        "map(select(. != null))",
        "[.[]? | select(type == \"number\")]",
        "select(.a)",
        "[values]",
        "[.[]? | objects]",
        "[.[]? | strings]",
        "[.[]? | arrays]",
        "[.[]? | numbers]",
        "[.[]? | booleans]",
        "[.[]? | nulls]",
        "keys",
        "to_entries",
        "with_entries(select(.value != null))",
        ".e | from_entries",
        "{b: 1, a: 2} | to_entries",
        "{b: 1, a: 2} | with_entries(select(.value > 1))",
        "{b: 1, a: 2} | [.[]]",
        "{b: 1, a: 2} | keys",
        "{b: 1} | to_entries",
        "with_entries(.key |= ascii_upcase)",
        ".x? // 5",
        "(.a // .b)",
        "(null, false) // 3",
        "[(1, null, 2) // 3]",
        "[empty // 1]",
        "(.a.b // error(\"x\"))",
        "[(1, 2) + (10, 20)]",
        "[(1, 2) < (2, 1)]",
        "1 + 2.5",
        "10 / 4",
        "7 % 3",
        "7 % 0",
        "5 - 7",
        "3 * 4",
        "1.5 * 2",
        ".n | floor",
        ".x | floor",
        ".x | round",
        ".x | ceil",
        "-(.n)",
        "-(.x)",
        "-.s",
        "[3, 1, 2] | sort",
        "[3, 1, 3, \"a\", null] | unique",
        "[3, 1, 2] | min",
        "[3, 1, 2] | max",
        "[] | max",
        "[1, 1.0] | max",
        "[.[]? | length]",
        "length",
        ".l | tojson",
        "tojson",
        "tostring",
        "[.[]? | tostring]",
        ".s | tonumber",
        "\"12\" | tonumber",
        ".u + 1",
        ".u",
        ".u | tostring",
        "[.l[] | type]",
        ".l | add",
        "[\"a\", \"b\"] | add",
        "[[1], [2]] | add",
        "null | add",
        "\"a\\(.a)b\\(.x)\"",
        "\"n=\\(.n) t=\\(.t)\"",
        ".s | test(\"^a\")",
        ".s | test(\"B\"; \"i\")",
        ".s | gsub(\"-\"; \":\")",
        ".s | sub(\"[a-c]\"; \"X\")",
        ".s | gsub(\"[a-c]\"; \"X\")",
        ".s | gsub(\"x*\"; \"-\")",
        ".s | split(\",\")",
        "\"\" | split(\",\")",
        ".s | split(\"\")",
        "[\"a\", 1, null] | join(\"-\")",
        ".s | ascii_downcase",
        ".s | ascii_upcase",
        ".s | startswith(\"a\")",
        ".s | endswith(\"c\")",
        ".s | ltrimstr(\"a-\")",
        ".s | rtrimstr(\",c\")",
        "has(\"a\")",
        ".l | has(2)",
        ".l | has(-1)",
        ".l | has(-9)",
        "[] | has(-1)",
        "[1, 2, 3] - [2]",
        "{a: 1} + {b: 2}",
        "{a: 1} + null",
        "[1] + [2]",
        "\"a\" + \"b\"",
        "1 + \"a\"",
        "{} * {}",
        ".a = 1",
        ".a.b = 2",
        ".z.y = 3",
        ".a |= . + 1",
        ".a.b |= . + 1",
        "del(.a)",
        "del(.a, .x)",
        "del(.a.b)",
        "def f(g): [g, g]; f(.a)",
        "def f($x): $x + 1; f(.n)",
        "def f: def g: 3; g + 1; f",
        ". as $v | def f(g): 1 as $v | g; f($v)",
        "def f(a; $b): [a, $b]; f(.n; .x)",
        "def f($a; $b): [$a, $b]; [f((1, 2); (3, 4))]",
        "(.a and .t)",
        "[(true, false) or false]",
        "[(true, false) and (true, false)]",
        "[.[]? | not]",
        "[{a: (1, 2), b: (3, 4)}]",
        "{(.k): 1}",
        "1 as $x | {$x}",
        "{a}",
        "{\"a\"}",
        "{a: .x?}",
        "[{a: .l[]?}]",
        "{a: 1, a: 2}",
        "if . then 1 end",
        "[if (true, false) then 1 else 2 end]",
        "if .t then \"y\" elif .a then \"a\" else \"n\" end",
        "[(1, 2, 3)?]",
        "[(1, error(\"x\"), 3)?]",
        "try error(\"x\")",
        "[.[]? | try (if . == 2 then error(\"e\") else . end)]",
        "[(1, 2, 3)? | if . == 2 then error(\"x\") else . end]",
        "[.l[]? | .k?]",
        "[.[]? | .[0]?]",
        ".l | index([3])",
        ".l | index([\"x\", null])",
        ".l | index([])",
        "first",
        "last",
        ".l | first",
        ".l | last",
        "[.l[] | ms]",
        "[.s, .x, .n, \"2026-11-30T14:02:09.5Z\", 1796047329] | map(iso)",
        "[.[]? | num]",
        "[.[]? | int]",
        "[.[]? | bool]",
        "[.[]? | severity_id]",
        "[.[]? | score_severity_id]",
        "prune",
        "unmapped([\"a\", \"x\"])",
        "stix_id(\"file\")",
        "error",
        "error(\"custom\")",
        "[.[]? | tostring] | join(\",\")",
        "{a: 1, b: {c: 2}} | tojson",
        "{a: 1.5} | tojson",
        "[1.25] | tojson",
        "0.5",
        "1.50",
        "1e3",
        "reduce .[] as $x (0; . + $x)",
        "reduce .[]? as $x (0; . + 1)",
        "reduce (.l // [])[] as $x ([]; . + [$x])",
        "reduce .e[]? as $e ({}; . + {(.key // $e.key): $e.value})",
        "reduce .e[]? as $e ({}; .[$e.key] = $e.value)",
        "[reduce (1, 2) as $x (10, 20; . + $x)]",
        "reduce empty as $x (3; . + 1)",
        "reduce .[]? as $x (null; $x)",
        "reduce .[]? as $x (0; if $x == null then . else . + 1 end)",
        "[.[]? | numbers] | reduce .[] as $n (0; if $n > . then $n else . end)",
        ".a as $a | reduce (.l // [])[] as $x ($a; [., $x])",
        "reduce .[]? as $x (0; . + ($x | length))",
        "[reduce .[]? as $x (0; . + 1), reduce .[]? as $y (1; . * 2)]",
        "any",
        "all",
        "any(. == 1)",
        "all(. != null)",
        "any(.[]?; . == \"x\")",
        "all(.[]?; type == \"number\")",
        "any(.l[]?; . == 3)",
        "any((1, 2, error(\"late\")); . == 2)",
        "any((1, error(\"early\"), 2); . == 2)",
        "all((1, \"a\", error(\"late\")); type == \"number\")",
        "all((1, 2); . > 0)",
        "any(empty; .)",
        "all(empty; .)",
        "any(.[]?; (false, true, error(\"late\")))",
        "[.[]? | any(.[]?; . == 1)]",
        "try any(.[]; . + 1 > 2) catch \"caught\"",
        "[.[]? | try all(.[]; . > 0)]",
        "isempty(.[]?)",
        "isempty(empty)",
        "isempty(1, error(\"late\"))",
        "isempty(error(\"early\"), 1)",
        "[first(.[]?)]",
        "[first(empty)]",
        "first(1, error(\"late\"))",
        "[first(error(\"early\"), 1)]",
        "first(.l[]? | select(type == \"string\"))",
        "[.[]? | first(.[]? | select(. != null))]",
        "[first(.[]?), first(.e[]?.key)]",
        "[try first(error(\"e\"), 1)]",
        "[last(.[]?)]",
        "[last(empty)]",
        "[last(1, error(\"late\"))]",
        "[limit(2; .[]?)]",
        "[limit(0; .[]?)]",
        "[limit(-1; .[]?)]",
        "[limit(1; 1, error(\"late\"))]",
        "[limit(2; 1, error(\"early\"))]",
        "[limit(1.5; .[]?)]",
        "[limit(\"2\"; .[]?)]",
        "[limit(2; .l[]? | select(. != null))]",
        "[.[]? | [limit(1; .[]?)]]",
        "[limit(3; .[]?) | . + 1]",
        "[try limit(3; .[]? | . + 1)]",
        "[.[]? | abs]",
        "abs",
        "-5 | abs",
        "-1.5 | abs",
        "reverse",
        ".l | reverse",
        "[.[]? | contains(\"x\")]",
        "contains({a: {b: 2}})",
        "contains({a: {b: 3}})",
        "contains([1, \"x\"])",
        "contains([[1]])",
        ".s | contains(\"b,\")",
        ".l | contains([{k: 1}])",
        "contains(null)",
        "contains(42)",
        "contains(42.0)",
        "[.[]? | select(contains(\"ex\")?)]",
        "sort_by(.)",
        ".l | sort_by(type)",
        ".l | sort_by(type, .)",
        ".l | group_by(type)",
        ".l | unique_by(type)",
        ".l | min_by(type)",
        ".l | max_by(type)",
        "[] | min_by(.)",
        "[] | max_by(.)",
        "[] | group_by(.)",
        ".e | sort_by(.value)",
        ".e | group_by(.value == null)",
        ".e | max_by(.key)",
        "[3, 1.0, 1, 2] | sort_by(.)",
        "[3, 1.0, 1, 2] | group_by(.)",
        "[3, 1.0, 1, 2] | unique_by(.)",
        "[3, 1.0, 1, 3.0] | min_by(.), max_by(.)",
        "[{a: 2, b: 1}, {a: 1, b: 2}, {a: 2, b: 0}] | sort_by(.a), group_by(.a), min_by(.a), max_by(.a)",
        "[.[]? | sort_by(.)?]",
        "sort_by(empty)",
        "[null] | sort_by(error)",
        "[.[]? | [(.e[]?) - empty]?]",
        "[.[]? | [(error) * empty]]",
        "[.[]? | [{a: error, b: empty}]?]",
        "[.[]? | [{a: (1, 2), b: (3, 4)}]]",
        "[.[]? | [(.[0]) < (sort_by(.)?)]?]",
        "[(1, error(\"x\")) + empty]",
        "[.[(\"\" - .k) | tostring]?]",
        "[.[1:(.k | error)]?]",
        "[.[]? | {(.k // \"z\"): select(.a?)}]",
        "[.[]? | {(.k): empty}]",
        "[] | sort_by(error)",
        "[[null] | group_by(error)?]",
        "[[null] | min_by(error)?]",
        "sort_by(.a)",
        "keys_unsorted",
        ".a | keys_unsorted",
        "{b: 1, a: 2} | keys_unsorted",
        "{b: 1} | keys_unsorted",
        "{b: .x, a: .n} | keys_unsorted",
        "[.[]? | keys_unsorted?]",
        "getpath([\"a\", \"b\"])",
        "getpath([\"a\", \"zz\"])",
        "getpath([\"l\", 1])",
        "getpath([\"l\", -1])",
        "getpath([])",
        "getpath([\"x\", \"y\"])",
        "getpath([0])",
        "getpath([null])",
        "getpath([\"e\", 0, \"key\"])",
        "[getpath([\"a\"], [\"k\"])]",
        "getpath(\"a\")",
        "[.[]? | getpath([\"k\"])?]",
        "flatten",
        ".l | flatten",
        "[[1, [2, [3, []]]], 4, {a: [5]}] | flatten",
        "[.[]? | flatten]",
        "[\"  a b \\n\", \"\\u00a0x\\u2003\", \"\", \"x\"] | map(trim), map(ltrim), map(rtrim)",
        "trim",
        "[.[]? | trim?]",
        "@base64",
        "[.[]? | @base64]",
        "\"é✓ x\" | @base64",
        "{a: 1} | @base64",
        "add(.[]?)",
        "add(.l[]? | numbers)",
        "add(empty)",
        "add(.e[]?.key)",
        "[add(1, 2), add(\"a\", \"b\"), add([1], [2])]",
        "[.[]? | strings | capture(\"(?<first>[a-z])(?<rest>.*)\")]",
        "\"alice@example.com\" | capture(\"(?<user>[^@]+)@(?<domain>.+)\")",
        "\"alice\" | [capture(\"(?<user>[^@]+)@(?<domain>.+)\")]",
        "\"ab\" | capture(\"(?<a>a)|(?<b>b)\")",
        "\"ab\" | [capture(\"(?<a>a)|(?<b>b)\"; \"g\")]",
        "\"AB\" | capture(\"(?<x>a)\"; \"i\")",
        "\"xyz\" | capture(\"(y)\")",
        "\"xyz\" | [capture(\"(?<n>q?)\")]",
        "\"k1=v1,k2=v2\" | [capture(\"(?<k>\\\\w+)=(?<v>\\\\w+)\"; \"g\")]",
        ".s | capture(\"(?<head>[a-z])-(?<tail>[a-z])\")",
        "[.[]? | capture(\"(?<d>[0-9]+)\")?]",
        "map_values(. + 1)",
        "map_values(.)",
        "map_values(empty)",
        "map_values(., .)",
        "map_values(select(. != null))",
        "map_values(tostring)",
        ".a | map_values(tostring)",
        "{a: 1, b: null, c: 3} | map_values(select(. != null))",
        "{a: 1, b: 2} | map_values((. * 10), error(\"late\"))",
        "[1, 2] | map_values((. * 10), 0)",
        "[.[]? | map_values(type)?]",
    ];

    #[test]
    fn fast_path_agrees_with_jaq() {
        let mut answered = 0;
        let mut total = 0;
        let mut never = Vec::new();
        for code in PROGRAMS {
            let p = Program::compile(code).unwrap_or_else(|e| panic!("{code}: {e:?}"));
            let before = answered;
            for input in inputs() {
                total += 1;
                let jaq = p.run_jaq(&input);
                if let Some(fast) = p.run_fast(&input) {
                    answered += 1;
                    let jaq =
                        jaq.unwrap_or_else(|e| panic!("{code} on {input}: fast answered {fast:?}, jaq failed: {e}"));
                    let text = |v: &Vec<Value>| serde_json::to_string(v).unwrap();
                    assert_eq!(text(&fast), text(&jaq), "{code} on {input}");
                }
            }
            if answered == before {
                never.push(*code);
            }
        }
        eprintln!("never on the fast path: {never:?}");
        // Most of them are answered on the fast path (the rest hand over: errors and the cases above
        // whose answer is jaq's own).
        assert!(answered * 2 > total, "{answered} of {total}");
    }

    /// A random program from the fast path's grammar, at most `depth` deep.
    fn random_program(rng: &mut fastrand::Rng, depth: u32) -> String {
        const ATOMS: &[&str] = &[
            ".",
            ".a",
            ".l",
            ".e",
            ".s",
            ".k",
            ".x",
            ".a.b",
            ".[0]",
            ".[-1]",
            ".[1:]",
            ".[]?",
            ".l[]?",
            ".e[]?",
            "null",
            "true",
            "false",
            "0",
            "1",
            "-2",
            "2.5",
            "\"x\"",
            "\"\"",
            "[]",
            "{}",
            "[1, \"a\", null]",
            "{a: 1, b: [2]}",
            "length",
            "type",
            "keys?",
            "tostring",
            "tojson",
            "not",
            "empty",
            "$v",
        ];
        const UNARY: &[&str] = &[
            "[{}]",
            "select({})",
            "map({})?",
            "first({})",
            "last({})",
            "limit(2; {})",
            "any({}; .)",
            "all({}; .)",
            "isempty({})",
            "({})?",
            "try ({})",
            "[{}] | length",
            "{}|tostring",
            "add({})",
            "map_values({})?",
            "sort_by({})?",
            "group_by({})?",
            "min_by({})?",
            "({}) as $v | $v",
            "reduce ({}) as $x (0; . + 1)",
            "reduce ({}) as $x (null; $x)",
            "{{k: ({})}}",
            "[({}) | type]",
            "if ({}) then 1 else 2 end",
            "({}) | not",
            "({}) | length?",
            "getpath([\"a\"])?",
            "contains({})?",
            "flatten?",
            "reverse?",
            "{{a: ({}), b: .k}}",
            "{{a: 1, b: ({})}}",
            "{{(.k // \"z\"): ({})}}",
            ".[({}) | tostring]?",
            "[.[]?] | .[({}) | length?]?",
            "with_entries(select({}))?",
            "({}) | ascii_downcase?",
            "[({}) | tostring] | join(\",\")",
            "({}) // empty",
            "[({})] | sort?",
            "[({})] | unique",
            "({}) | to_entries?",
            "({}) | split(\",\")?",
            "({}) | test(\"a\")?",
        ];
        const BINARY: &[&str] = &[
            "{} | {}",
            "{}, {}",
            "{} // {}",
            "{} and {}",
            "{} or {}",
            "{} == {}",
            "{} < {}",
            "{} + {}",
            "{} - {}",
            "{} * {}",
        ];
        if depth == 0 || rng.u32(0..4) == 0 {
            return ATOMS[rng.usize(0..ATOMS.len())].to_owned();
        }
        if rng.bool() {
            let f = UNARY[rng.usize(0..UNARY.len())];
            f.replacen("{}", &random_program(rng, depth - 1), 1).replace("{{", "{").replace("}}", "}")
        } else {
            let f = BINARY[rng.usize(0..BINARY.len())];
            let (a, b) = (random_program(rng, depth - 1), random_program(rng, depth - 1));
            f.replacen("{}", &format!("({a})"), 1).replacen("{}", &format!("({b})"), 1)
        }
    }

    #[test]
    fn random_programs_agree_with_jaq() {
        // FUZZ_SEED and FUZZ_PROGRAMS explore further (`cargo test --release --lib random_programs`).
        let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        let mut rng = fastrand::Rng::with_seed(env("FUZZ_SEED", 7));
        let (mut fast, mut runs) = (0, 0);
        for _ in 0..env("FUZZ_PROGRAMS", 1500) {
            let body = random_program(&mut rng, 4);
            let code = format!(".a as $v | {body}");
            let Ok(p) = Program::compile(&code) else { continue };
            for input in inputs() {
                runs += 1;
                if let Some(got) = p.run_fast(&input) {
                    fast += 1;
                    let want = p
                        .run_jaq(&input)
                        .unwrap_or_else(|e| panic!("{code} on {input}: fast {got:?}, jaq failed: {e}"));
                    let text = |v: &Vec<Value>| serde_json::to_string(v).unwrap();
                    assert_eq!(text(&got), text(&want), "{code} on {input}");
                }
            }
        }
        // Most answers come from the fast path (the rest are errors and its hand-overs).
        assert!(fast * 5 > runs, "{fast} of {runs}");
    }

    #[test]
    fn errors_after_try_are_not_caught_by_it() {
        for code in ["[(1, 2, 3)? | if . == 2 then error(\"x\") else . end]", "[.a? | error(\"boom\")]"] {
            let p = Program::compile(code).unwrap();
            let input = json!({"a": 1});
            assert!(p.run_jaq(&input).is_err(), "{code}");
            assert!(p.run_fast(&input).is_none(), "{code}");
            assert!(p.run(&input).is_err(), "{code}");
        }
        // The error message is jaq's.
        let p = Program::compile(".a.b").unwrap();
        assert_eq!(p.run(&json!({"a": "s"})).unwrap_err(), p.run_jaq(&json!({"a": "s"})).unwrap_err());
    }

    #[test]
    fn reduce_with_a_one_output_update_is_on_the_fast_path() {
        let p = Program::compile("reduce .tags[] as $t ({}; . + {($t.key): $t.value}) | length").unwrap();
        assert_eq!(p.not_fast(), None);
        // A long source folds without growing the stack, as jaq does.
        let tags: Vec<Value> = (0..100_000).map(|i| json!({"key": format!("k{i}"), "value": i})).collect();
        let input = json!({"tags": tags});
        assert_eq!(p.run_fast(&input), Some(vec![json!(100_000)]));
        assert_eq!(p.run_jaq(&input).unwrap(), vec![json!(100_000)]);
        // An update that fails on one item: the whole record goes to jaq, whose error it is.
        let p = Program::compile("reduce .[] as $x (0; . + $x)").unwrap();
        assert_eq!(p.run_fast(&json!([1, "a"])), None);
        assert!(p.run(&json!([1, "a"])).is_err());
        assert_eq!(p.run(&json!([1, 2, 3])).unwrap(), vec![json!(6)]);
    }

    #[test]
    fn what_stays_on_jaq() {
        for (code, why) in [
            ("foreach .[] as $x (0; . + $x)", "foreach"),
            ("reduce .[] as $x (0; ., 1)", "several (or no) outputs"),
            ("reduce .[] as $x (0; empty)", "several (or no) outputs"),
            ("reduce .[] as [$a] (0; . + $a)", "destructuring"),
            ("[..]", "`..`"),
            ("try error(\"x\") catch .", "catch"),
            ("[limit(.[]; .[])]", "count that is a generator"),
            (".[] as [$a] | $a", "destructuring"),
            ("@base64d", "@base64d"),
            (".a += 1", "arithmetic update"),
        ] {
            let p = Program::compile(code).unwrap();
            let not = p.not_fast().unwrap_or_else(|| panic!("{code} is on the fast path"));
            assert!(not.contains(why), "{code}: {not}");
        }
        // Programs too large or too deep once definitions are expanded stay on jaq, and still run.
        let mut doubling = String::from("def f0: 1; ");
        for i in 1..=20 {
            doubling.push_str(&format!("def f{i}: f{}, f{}; ", i - 1, i - 1));
        }
        doubling.push_str("[f20] | length");
        let deep = format!("{}1{}", "[".repeat(150), "]".repeat(150));
        for (code, why, out) in
            [(doubling.as_str(), "too many terms", json!(1 << 20)), (deep.as_str(), "too deeply", Value::Null)]
        {
            let p = Program::compile(code).unwrap();
            assert!(p.not_fast().is_some_and(|n| n.contains(why)), "{:?}", p.not_fast());
            let got = p.run(&json!(null)).unwrap();
            if !out.is_null() {
                assert_eq!(got, vec![out]);
            }
        }
    }
}
