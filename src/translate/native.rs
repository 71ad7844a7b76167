//! Native implementations of prelude helpers on the hot path of every mapping (`ms`, `iso`,
//! `prune`, `unmapped`) and `stix_id`. `prelude.jq` defines the same helpers in jq, for running a
//! mapping with the `jq` command; a test checks both give the same answers.

use jaq_core::{data, native::bome, Cv, ValXs};
use jaq_json::{Rc, Val};

use super::jq::stix_id;

type D = data::JustLut<Val>;

/// A native filter: name, arity (variable arguments), implementation.
pub(super) type Native = jaq_core::native::Fun<D>;

/// Names the natives replace in `prelude.jq`.
pub(super) const REPLACED: [&str; 9] =
    ["ms", "iso", "prune", "unmapped", "num", "int", "bool", "severity_id", "score_severity_id"];

/// Most keys one `__objN` call takes (larger objects are built from several).
pub(super) const OBJ_MAX: usize = 16;

macro_rules! obj_natives {
    ($($n:literal),*) => {
        /// `__objN` by N (entries 0 and 1 unused).
        pub(super) const OBJ_NAMES: [&str; OBJ_MAX + 1] = ["", "", $(concat!("__obj", $n)),*];
        fn obj_natives() -> impl Iterator<Item = (&'static str, usize, jaq_core::RunPtr<D>)> {
            [$((concat!("__obj", $n), $n + 1, obj_native::<$n> as jaq_core::RunPtr<D>)),*].into_iter()
        }
    };
}
obj_natives!(2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);

/// `__objN(keys; v1; ...; vN)`: the object of the N keys (a list) and values (see `build_objects`).
fn obj_native<'a, const N: usize>(mut cv: Cv<'a, D>) -> ValXs<'a, Val> {
    let mut values: Vec<Val> = (0..N).map(|_| cv.0.pop_var()).collect();
    values.reverse();
    let out = match cv.0.pop_var() {
        Val::Arr(keys) if keys.len() == N => Ok(Val::obj(keys.iter().cloned().zip(values).collect())),
        _ => Err(jaq_core::Error::str("__obj: the first argument must be the list of keys")),
    };
    bome(out)
}

/// Interlock's native functions.
pub(super) fn natives() -> impl Iterator<Item = Native> {
    let list: [(&'static str, usize, jaq_core::RunPtr<D>); 11] = [
        ("stix_id", 1, stix_id_native),
        ("__const", 1, const_native),
        ("num", 0, |cv| bome(Ok(num(&cv.1).map_or(Val::Null, |(v, _)| v)))),
        ("int", 0, |cv| bome(Ok(num(&cv.1).map_or(Val::Null, |(_, f)| Val::from(f.floor() as isize))))),
        ("bool", 0, |cv| bome(Ok(bool_of(&cv.1)))),
        ("severity_id", 0, |cv| bome(Ok(Val::from(severity_scalar(&scalar(&cv.1)) as isize)))),
        ("score_severity_id", 0, |cv| bome(Ok(Val::from(score_severity(num(&cv.1).map(|(_, f)| f)) as isize)))),
        ("ms", 0, ms_native),
        ("iso", 0, iso_native),
        ("prune", 0, prune_native),
        ("unmapped", 1, unmapped_native),
    ];
    list.into_iter()
        .chain(obj_natives())
        .map(|(name, arity, run)| (name, jaq_core::native::v(arity), jaq_core::Native::<D>::new(run)))
}

fn text(v: &Val) -> Option<&str> {
    match v {
        Val::TStr(b) | Val::BStr(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

thread_local! {
    /// Literal lists and objects of mapping programs, parsed once per thread (see `fold_constants`).
    static CONSTANTS: std::cell::RefCell<std::collections::HashMap<Box<[u8]>, Val>> = Default::default();
}

/// `__const("<json>")`: the value of a literal list or object, parsed once.
fn const_native<'a>(mut cv: Cv<'a, D>) -> ValXs<'a, Val> {
    let text = cv.0.pop_var();
    let Val::TStr(bytes) = &text else { return bome(Err(jaq_core::Error::str("__const: not a string"))) };
    let found = CONSTANTS.with(|c| c.borrow().get(&bytes[..]).cloned());
    let v = match found {
        Some(v) => v,
        None => {
            let Ok(v) = jaq_json::read::parse_single(bytes) else {
                return bome(Err(jaq_core::Error::str("__const: not JSON")));
            };
            CONSTANTS.with(|c| {
                let mut c = c.borrow_mut();
                // Bounded: programs hold a few dozen literals; reloads may bring new ones.
                if c.len() > 4096 {
                    c.clear();
                }
                c.insert(bytes[..].into(), v.clone());
            });
            v
        }
    };
    bome(Ok(v))
}

/// A scalar as the helpers read it, from either value representation (jaq's or serde's).
pub(super) enum Scalar<'s> {
    Null,
    Bool(bool),
    Num(f64),
    Str(&'s str),
    /// A list or an object.
    Other,
}

fn scalar(v: &Val) -> Scalar<'_> {
    match v {
        Val::Null => Scalar::Null,
        Val::Bool(b) => Scalar::Bool(*b),
        Val::Num(_) => v.to_string().parse().map_or(Scalar::Other, Scalar::Num),
        _ => text(v).map_or(Scalar::Other, Scalar::Str),
    }
}

/// A numeric string as jq's `tonumber` reads it: the integer (when it is one) and the f64.
pub(super) fn num_text(t: &str) -> Option<(Option<i64>, f64)> {
    let t = t.trim();
    let f: f64 = t.parse().ok().filter(|f: &f64| f.is_finite())?;
    Some((t.parse::<i64>().ok(), f))
}

/// `num`: the number (as a value and as f64) of a number or numeric string.
fn num(v: &Val) -> Option<(Val, f64)> {
    match v {
        Val::Num(_) => Some((v.clone(), v.to_string().parse().ok()?)),
        _ => {
            let (int, f) = num_text(text(v)?)?;
            // jq's tonumber: integers stay integers.
            Some((int.map_or(Val::from(f), |i| Val::from(i as isize)), f))
        }
    }
}

/// `score_severity_id` of a number (None: not a number).
pub(super) fn score_severity(f: Option<f64>) -> i64 {
    match f {
        None => 0,
        Some(f) if f < 20.0 => 1,
        Some(f) if f < 40.0 => 2,
        Some(f) if f < 60.0 => 3,
        Some(f) if f < 80.0 => 4,
        Some(_) => 5,
    }
}

fn bool_of(v: &Val) -> Val {
    match bool_scalar(&scalar(v)) {
        Some(b) => Val::Bool(b),
        None => Val::Null,
    }
}

/// `bool`: a boolean, or "true" / "false" in any case.
pub(super) fn bool_scalar(s: &Scalar) -> Option<bool> {
    match s {
        Scalar::Bool(b) => Some(*b),
        Scalar::Str(t) if t.eq_ignore_ascii_case("true") => Some(true),
        Scalar::Str(t) if t.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// `severity_id`: null gives 0, a known word its id, anything else 99.
pub(super) fn severity_scalar(s: &Scalar) -> i64 {
    match s {
        Scalar::Null => 0,
        Scalar::Str(t) => match t.to_ascii_lowercase().as_str() {
            "informational" | "info" => 1,
            "low" => 2,
            "medium" | "moderate" => 3,
            "high" => 4,
            "critical" => 5,
            "fatal" => 6,
            _ => 99,
        },
        _ => 99,
    }
}

fn stix_id_native<'a>(mut cv: Cv<'a, D>) -> ValXs<'a, Val> {
    let ty = cv.0.pop_var();
    let props: Result<serde_json::Value, _> = serde_json::from_str(&cv.1.to_string());
    let out = match (text(&ty), props) {
        (Some(t), Ok(props)) => Ok(Val::utf8_str(stix_id(t, &props).into_bytes())),
        _ => Err(jaq_core::Error::str("stix_id: the argument must be a type name string, the input JSON")),
    };
    bome(out)
}

fn ms_native<'a>(cv: Cv<'a, D>) -> ValXs<'a, Val> {
    bome(Ok(ms(&cv.1).map_or(Val::Null, |ms| Val::from(ms as isize))))
}

fn iso_native<'a>(cv: Cv<'a, D>) -> ValXs<'a, Val> {
    bome(Ok(ms(&cv.1).map_or(Val::Null, |ms| Val::utf8_str(iso(ms).into_bytes()))))
}

fn prune_native<'a>(cv: Cv<'a, D>) -> ValXs<'a, Val> {
    bome(Ok(prune(cv.1)))
}

fn unmapped_native<'a>(mut cv: Cv<'a, D>) -> ValXs<'a, Val> {
    let keys = cv.0.pop_var();
    let out = match (cv.1, keys) {
        (Val::Obj(m), Val::Arr(keys)) => {
            let rest: jaq_json::Map =
                m.iter().filter(|(k, _)| !keys.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
            Ok(if rest.is_empty() { Val::Null } else { Val::obj(rest) })
        }
        (_, Val::Arr(_)) => Ok(Val::Null),
        _ => Err(jaq_core::Error::str("unmapped: the argument must be a list of key names")),
    };
    bome(out)
}

/// Whether `prune` drops a value: null, "", [] or {}.
fn is_empty(v: &Val) -> bool {
    match v {
        Val::Null => true,
        Val::TStr(b) | Val::BStr(b) => b.is_empty(),
        Val::Arr(a) => a.is_empty(),
        Val::Obj(m) => m.is_empty(),
        _ => false,
    }
}

/// Whether `prune` would change `v` (an empty value inside it, at any depth).
fn has_empty_inside(v: &Val) -> bool {
    match v {
        Val::Obj(m) => m.values().any(|x| is_empty(x) || has_empty_inside(x)),
        Val::Arr(a) => a.iter().any(|x| is_empty(x) || has_empty_inside(x)),
        _ => false,
    }
}

/// Removes nulls, empty strings, lists and objects at every depth (after pruning the inside).
/// What holds nothing to remove is kept as it is, not copied.
pub(super) fn prune(v: Val) -> Val {
    if !has_empty_inside(&v) {
        return v;
    }
    match v {
        Val::Obj(m) => {
            let out: jaq_json::Map =
                m.iter().map(|(k, v)| (k.clone(), prune(v.clone()))).filter(|(_, v)| !is_empty(v)).collect();
            Val::obj(out)
        }
        Val::Arr(a) => {
            let out: Vec<Val> = a.iter().map(|v| prune(v.clone())).filter(|v| !is_empty(v)).collect();
            Val::Arr(Rc::new(out))
        }
        other => other,
    }
}

/// Epoch milliseconds from what the prelude's `ms` reads (see `prelude.jq`).
fn ms(v: &Val) -> Option<i64> {
    ms_scalar(&scalar(v))
}

/// `ms` of a scalar.
pub(super) fn ms_scalar(v: &Scalar) -> Option<i64> {
    let epoch = |x: f64| if x > 100_000_000_000.0 { x.floor() as i64 } else { (x * 1000.0).floor() as i64 };
    let s = match v {
        Scalar::Num(f) => return Some(epoch(*f)),
        Scalar::Str(s) => *s,
        _ => return None,
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') && s.matches('.').count() <= 1 {
        let (int, frac) = s.split_once('.').unwrap_or((s, "1"));
        if int.is_empty() || frac.is_empty() {
            return None;
        }
        return s.parse::<f64>().ok().map(epoch);
    }
    rfc3339_ms(s)
}

fn digits(s: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let part = s.get(range)?;
    if part.bytes().all(|b| b.is_ascii_digit()) {
        part.parse().ok()
    } else {
        None
    }
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z | ±HH:MM | ±HHMM | anything]` as UTC epoch milliseconds.
fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (digits(s, 0..4)?, digits(s, 5..7)?, digits(s, 8..10)?);
    let (h, mi, sec) = (digits(s, 11..13)?, digits(s, 14..16)?, digits(s, 17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let rest = &s[19..];
    let mut millis = 0;
    if let Some(f) = rest.strip_prefix('.') {
        let frac: String = f.chars().take_while(char::is_ascii_digit).chain("000".chars()).take(3).collect();
        millis = frac.parse::<i64>().unwrap_or(0);
    }
    // A trailing `±HH:MM` or `±HHMM` offset.
    let rb = rest.as_bytes();
    let mut offset = 0;
    for (len, colon) in [(6, true), (5, false)] {
        if rb.len() >= len {
            let t = &rest[rest.len() - len..];
            let tb = t.as_bytes();
            let sign = match tb[0] {
                b'+' => 1,
                b'-' => -1,
                _ => continue,
            };
            if colon && tb[3] != b':' {
                continue;
            }
            let (hh, mm) = (digits(t, 1..3), digits(t, if colon { 4..6 } else { 3..5 }));
            if let (Some(hh), Some(mm)) = (hh, mm) {
                offset = sign * (hh * 60 + mm) * 60_000;
                break;
            }
        }
    }
    let days = days_from_civil(y, mo, d);
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + millis - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(super) fn iso(ms: i64) -> String {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (mi, rest) = (rest / 60_000, rest % 60_000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{:02}.{:03}Z", rest / 1000, rest % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 1, 19_000, 20_788, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms("2000-02-29T23:59:59.999Z"), Some(951_868_799_999));
        assert_eq!(rfc3339_ms("2026-02-30T00:00:00Z").map(iso).as_deref(), Some("2026-03-02T00:00:00.000Z"));
        assert_eq!(rfc3339_ms("2026-13-01T00:00:00Z"), None);
    }
}
