//! OCSF validation: the schema of the classes Interlock maps to, compiled from an OCSF schema
//! directory into a compact model, and a validator over it.
//!
//! [`compile`] reads a schema release (`dictionary.json`, `categories.json`, `events/**`,
//! `objects/*`, `profiles/*`), resolves `extends` chains of classes and objects, `$include`d profiles
//! and dictionary types, and keeps only what validation needs, for the requested classes and every
//! object they reach. The result ships inside the binary (`data/ocsf-1.8.0.json`, regenerated with
//! `interlock ocsf compile`). The OCSF schema is Apache-2.0 licensed; see `data/OCSF-NOTICE`.
//!
//! [`Schema::validate`] checks one event: required attributes, value types (string, integer, long,
//! float, boolean, timestamp, IP, MAC, email, URL, UUID, date-time, port, hashes...), enum values of
//! `*_id` attributes, nested objects and arrays recursively, unknown attributes, `at_least_one` /
//! `just_one` constraints, and the consistency of `class_uid`, `category_uid`, `activity_id` and
//! `type_uid`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One attribute of a class or object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attr {
    /// A scalar type (`string_t`, `timestamp_t`...) or an object name.
    #[serde(rename = "t")]
    pub kind: String,
    /// An array of `kind`.
    #[serde(rename = "a", default, skip_serializing_if = "std::ops::Not::not")]
    pub array: bool,
    /// `required`, `recommended` or `optional` (only `required` is enforced).
    #[serde(rename = "r", default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Allowed values of an enumerated (`*_id`) attribute.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub enumeration: Option<Vec<i64>>,
}

/// A class or an object: its attributes and constraints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Shape {
    /// Attributes by name.
    pub attrs: BTreeMap<String, Attr>,
    /// At least one of these must be present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at_least_one: Vec<String>,
    /// Exactly one of these must be present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub just_one: Vec<String>,
}

/// An event class.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Class {
    /// `detection_finding`.
    pub name: String,
    /// `category_uid`.
    pub category_uid: i64,
    /// Attributes and constraints.
    pub shape: Shape,
}

/// A scalar type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scalar {
    /// `string_t`, `integer_t`, `long_t`, `float_t`, `boolean_t` or `json_t`.
    pub base: String,
    /// Longest string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,
    /// Allowed numeric range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<(i64, i64)>,
}

/// The compiled schema.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Schema {
    /// The OCSF version it was compiled from.
    pub version: String,
    /// Classes by `class_uid`.
    pub classes: BTreeMap<i64, Class>,
    /// Objects by name.
    pub objects: BTreeMap<String, Shape>,
    /// Scalar types by name.
    pub types: BTreeMap<String, Scalar>,
}

fn read(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
    }
}

/// Raw definitions (classes or objects) by name, with their `extends` resolved and `$include`s merged.
struct Defs {
    root: std::path::PathBuf,
    raw: BTreeMap<String, Value>,
}

/// Attributes by name (definition, whether it came from a profile) and the constraints.
type Resolved = (BTreeMap<String, (Value, bool)>, Value);

impl Defs {
    fn load(root: &Path, sub: &str) -> Result<Defs, String> {
        let mut paths = Vec::new();
        files(&root.join(sub), &mut paths);
        let mut raw = BTreeMap::new();
        for p in paths {
            let v = read(&p)?;
            if let Some(name) = v.get("name").and_then(Value::as_str) {
                raw.insert(name.to_owned(), v);
            }
        }
        Ok(Defs { root: root.to_path_buf(), raw })
    }

    /// The attributes (merged along `extends`, with `$include`d files) and constraints of `name`.
    fn resolve(&self, name: &str, depth: usize) -> Result<Resolved, String> {
        if depth > 16 {
            return Err(format!("`{name}`: `extends` chain too deep"));
        }
        let def = self.raw.get(name).ok_or_else(|| format!("no definition `{name}`"))?;
        let (mut attrs, mut constraints) = match def.get("extends").and_then(Value::as_str) {
            Some(parent) if self.raw.contains_key(parent) => self.resolve(parent, depth + 1)?,
            _ => (BTreeMap::new(), Value::Null),
        };
        if let Some(c) = def.get("constraints") {
            constraints = c.clone();
        }
        if let Some(map) = def.get("attributes").and_then(Value::as_object) {
            for (k, v) in map {
                if k == "$include" {
                    for inc in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
                        let f = read(&self.root.join(inc))?;
                        let profile = inc.starts_with("profiles/");
                        for (ik, iv) in f.get("attributes").and_then(Value::as_object).into_iter().flatten() {
                            // Profile attributes apply only when the profile does: never required.
                            merge(&mut attrs, ik, iv, profile);
                        }
                    }
                } else {
                    merge(&mut attrs, k, v, false);
                }
            }
        }
        Ok((attrs, constraints))
    }
}

fn merge(attrs: &mut BTreeMap<String, (Value, bool)>, k: &str, v: &Value, from_profile: bool) {
    let entry = attrs.entry(k.to_owned()).or_insert_with(|| (Value::Object(Default::default()), from_profile));
    if let (Some(dst), Some(src)) = (entry.0.as_object_mut(), v.as_object()) {
        for (sk, sv) in src {
            // Enumerations extend the parent's (`0 Unknown` and `99 Other` come from the base).
            match (dst.get_mut(sk), sk.as_str()) {
                (Some(Value::Object(old)), "enum") => {
                    for (ek, ev) in sv.as_object().into_iter().flatten() {
                        old.insert(ek.clone(), ev.clone());
                    }
                }
                _ => {
                    dst.insert(sk.clone(), sv.clone());
                }
            }
        }
    }
    entry.1 = entry.1 && from_profile;
}

fn enum_values(v: &Value) -> Option<Vec<i64>> {
    let m = v.get("enum")?.as_object()?;
    let mut out: Vec<i64> = m.keys().filter_map(|k| k.parse().ok()).collect();
    out.sort_unstable();
    Some(out)
}

fn string_list(v: &Value, key: &str) -> Vec<String> {
    v.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// The classes the shipped mappings produce (what `interlock ocsf compile` includes by default).
pub const DEFAULT_CLASSES: [&str; 3] = ["detection_finding", "authentication", "account_change"];

/// Compiles the classes named in `classes` (e.g. `detection_finding`) from the schema at `root`.
pub fn compile(root: &Path, classes: &[&str]) -> Result<Schema, String> {
    let version = read(&root.join("version.json"))?
        .get("version")
        .and_then(Value::as_str)
        .ok_or("version.json has no version")?
        .to_owned();
    let dict = read(&root.join("dictionary.json"))?;
    let dict_attrs = dict.get("attributes").and_then(Value::as_object).ok_or("dictionary.json: no attributes")?;
    let categories = read(&root.join("categories.json"))?;
    let events = Defs::load(root, "events")?;
    let objects = Defs::load(root, "objects")?;

    let mut types = BTreeMap::new();
    let dict_types = dict.pointer("/types/attributes").and_then(Value::as_object).ok_or("dictionary.json: no types")?;
    for (name, t) in dict_types {
        // Follow `type` to the base scalar (timestamp_t -> long_t; port_t -> integer_t).
        let mut base = name.clone();
        let mut cur = t;
        for _ in 0..8 {
            match cur.get("type").and_then(Value::as_str) {
                Some(b) => {
                    base = b.to_owned();
                    match dict_types.get(b) {
                        Some(next) => cur = next,
                        None => break,
                    }
                }
                None => break,
            }
        }
        let range =
            t.get("range").and_then(Value::as_array).and_then(|r| Some((r.first()?.as_i64()?, r.get(1)?.as_i64()?)));
        let max_len = t.get("max_len").and_then(Value::as_u64).map(|n| n as usize);
        types.insert(name.clone(), Scalar { base, max_len, range });
    }

    let shape_of = |attrs: BTreeMap<String, (Value, bool)>, constraints: &Value, pending: &mut Vec<String>| -> Shape {
        let mut out = BTreeMap::new();
        for (name, (local, from_profile)) in attrs {
            let global = dict_attrs.get(&name).cloned().unwrap_or(Value::Null);
            let kind =
                local.get("type").or_else(|| global.get("type")).and_then(Value::as_str).unwrap_or("json_t").to_owned();
            let kind = if kind == "object_t" {
                local
                    .get("object_type")
                    .or_else(|| global.get("object_type"))
                    .and_then(Value::as_str)
                    .unwrap_or("object")
                    .to_owned()
            } else {
                kind
            };
            if !kind.ends_with("_t") && kind != "object" {
                pending.push(kind.clone());
            }
            let array =
                local.get("is_array").or_else(|| global.get("is_array")).and_then(Value::as_bool).unwrap_or(false);
            let required = !from_profile && local.get("requirement").and_then(Value::as_str) == Some("required");
            // A class's enumeration extends the dictionary's (which brings `0 Unknown`, `99 Other`).
            let enumeration = if name.ends_with("_id") {
                match (enum_values(&local), enum_values(&global)) {
                    (Some(mut l), Some(g)) => {
                        l.extend(g);
                        l.sort_unstable();
                        l.dedup();
                        Some(l)
                    }
                    (l, g) => l.or(g),
                }
            } else {
                None
            };
            out.insert(name, Attr { kind, array, required, enumeration });
        }
        Shape {
            attrs: out,
            at_least_one: string_list(constraints, "at_least_one"),
            just_one: string_list(constraints, "just_one"),
        }
    };

    let mut schema = Schema { version, classes: BTreeMap::new(), objects: BTreeMap::new(), types };
    let mut pending: Vec<String> = Vec::new();
    for class in classes {
        let def = events.raw.get(*class).ok_or_else(|| format!("no event class `{class}` in {}", root.display()))?;
        // The category may come from an ancestor (`detection_finding` extends `finding`).
        let mut category = "other";
        let mut cur = def;
        for _ in 0..16 {
            if let Some(c) = cur.get("category").and_then(Value::as_str) {
                category = c;
                break;
            }
            match cur.get("extends").and_then(Value::as_str).and_then(|p| events.raw.get(p)) {
                Some(parent) => cur = parent,
                None => break,
            }
        }
        let category_uid =
            categories.pointer(&format!("/attributes/{category}/uid")).and_then(Value::as_i64).unwrap_or(0);
        let local_uid = def.get("uid").and_then(Value::as_i64).ok_or_else(|| format!("class `{class}` has no uid"))?;
        let (attrs, constraints) = events.resolve(class, 0)?;
        let shape = shape_of(attrs, &constraints, &mut pending);
        schema
            .classes
            .insert(category_uid * 1000 + local_uid, Class { name: (*class).to_owned(), category_uid, shape });
    }
    let mut seen = BTreeSet::new();
    while let Some(obj) = pending.pop() {
        if !seen.insert(obj.clone()) {
            continue;
        }
        let (attrs, constraints) = objects.resolve(&obj, 0)?;
        let shape = shape_of(attrs, &constraints, &mut pending);
        schema.objects.insert(obj, shape);
    }
    // `observable.type_id` lists only 0 and 99 in its own file: the schema declares each observable
    // type where the observed thing is defined (`"observable": 2` on `ip_t`, 21 on the `user`
    // object...), and the schema server gathers them into the enum. So does this.
    if let Some(type_id) = schema.objects.get_mut("observable").and_then(|o| o.attrs.get_mut("type_id")) {
        let mut ids = BTreeSet::new();
        let mut paths = vec![root.join("dictionary.json")];
        for sub in ["objects", "events", "profiles"] {
            files(&root.join(sub), &mut paths);
        }
        for p in &paths {
            observable_ids(&read(p)?, &mut ids);
        }
        let e = type_id.enumeration.get_or_insert_with(Vec::new);
        e.extend(ids);
        e.sort_unstable();
        e.dedup();
    }
    Ok(schema)
}

/// Every `"observable": <id>` in a schema file.
fn observable_ids(v: &Value, out: &mut BTreeSet<i64>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if let (true, Some(n)) = (k == "observable", x.as_i64()) {
                    out.insert(n);
                }
                observable_ids(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| observable_ids(x, out)),
        _ => {}
    }
}

/// The schema shipped with Interlock (OCSF 1.8.0: the classes its mappings produce).
pub fn bundled() -> &'static Schema {
    static S: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    S.get_or_init(|| serde_json::from_str(include_str!("data/ocsf-1.8.0.json")).expect("bundled OCSF schema parses"))
}

impl Schema {
    /// Validates one event; returns every problem found (empty: valid).
    pub fn validate(&self, event: &Value) -> Vec<String> {
        let mut out = Vec::new();
        let Some(obj) = event.as_object() else {
            return vec!["the event is not a JSON object".to_owned()];
        };
        let Some(class_uid) = obj.get("class_uid").and_then(Value::as_i64) else {
            return vec!["class_uid: missing or not an integer".to_owned()];
        };
        let Some(class) = self.classes.get(&class_uid) else {
            let known: Vec<String> = self.classes.keys().map(i64::to_string).collect();
            return vec![format!("class_uid: {class_uid} is not a class this schema knows ({})", known.join(", "))];
        };
        if let Some(c) = obj.get("category_uid").and_then(Value::as_i64) {
            if c != class.category_uid {
                out.push(format!("category_uid: {c}, but class {class_uid} is in category {}", class.category_uid));
            }
        }
        if let (Some(a), Some(t)) =
            (obj.get("activity_id").and_then(Value::as_i64), obj.get("type_uid").and_then(Value::as_i64))
        {
            if t != class_uid * 100 + a {
                out.push(format!("type_uid: {t}, but class_uid * 100 + activity_id = {}", class_uid * 100 + a));
            }
        }
        self.check_shape(&class.shape, obj, At::Root, &mut out, 0);
        out
    }

    fn check_shape(
        &self,
        shape: &Shape,
        obj: &serde_json::Map<String, Value>,
        path: At<'_>,
        out: &mut Vec<String>,
        depth: usize,
    ) {
        if depth > 32 {
            out.push(format!("{path}: nested too deeply"));
            return;
        }
        for (name, attr) in &shape.attrs {
            if attr.required && obj.get(name).is_none_or(Value::is_null) {
                out.push(format!("{}: required attribute missing", At::Key(&path, name)));
            }
        }
        let whole = || if path.is_root() { "event".to_owned() } else { path.to_string() };
        if !shape.at_least_one.is_empty()
            && !shape.at_least_one.iter().any(|k| obj.get(k).is_some_and(|v| !v.is_null()))
        {
            out.push(format!("{}: needs at least one of {}", whole(), shape.at_least_one.join(", ")));
        }
        if !shape.just_one.is_empty()
            && shape.just_one.iter().filter(|k| obj.get(*k).is_some_and(|v| !v.is_null())).count() != 1
        {
            out.push(format!("{}: needs exactly one of {}", whole(), shape.just_one.join(", ")));
        }
        for (name, value) in obj {
            if value.is_null() {
                continue;
            }
            let p = At::Key(&path, name);
            let attr = match shape.attrs.get(name) {
                Some(a) => a,
                None => match name.strip_suffix("_dt").and_then(|base| shape.attrs.get(base)) {
                    // The datetime profile: `time_dt` beside `time`.
                    Some(b)
                        if self.types.get(&b.kind).is_some_and(|t| t.base == "long_t") || b.kind == "timestamp_t" =>
                    {
                        datetime_attr()
                    }
                    _ => {
                        out.push(format!("{p}: unknown attribute"));
                        continue;
                    }
                },
            };
            if attr.array {
                match value.as_array() {
                    Some(items) => {
                        for (i, item) in items.iter().enumerate() {
                            self.check_value(attr, item, At::Index(&p, i), out, depth);
                        }
                    }
                    None => out.push(format!("{p}: expected an array")),
                }
            } else {
                self.check_value(attr, value, p, out, depth);
            }
        }
    }

    fn check_value(&self, attr: &Attr, v: &Value, path: At<'_>, out: &mut Vec<String>, depth: usize) {
        if attr.kind == "object" {
            if !v.is_object() {
                out.push(format!("{path}: expected an object"));
            }
            return;
        }
        if let Some(shape) = self.objects.get(&attr.kind) {
            match v.as_object() {
                Some(o) => self.check_shape(shape, o, path, out, depth + 1),
                None => out.push(format!("{path}: expected an object ({})", attr.kind)),
            }
            return;
        }
        let Some(t) = self.types.get(&attr.kind) else { return };
        let base = if attr.kind.ends_with("_t") && self.types.contains_key(&t.base) {
            t.base.as_str()
        } else {
            attr.kind.as_str()
        };
        let ok = match base {
            "string_t" => v.is_string(),
            "integer_t" => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            "long_t" => v.is_i64() || v.is_u64(),
            "float_t" => v.is_number(),
            "boolean_t" => v.is_boolean(),
            _ => true, // json_t
        };
        if !ok {
            out.push(format!("{path}: expected {} ({}), got {}", attr.kind, base.trim_end_matches("_t"), kind_of(v)));
            return;
        }
        if let Some(s) = v.as_str() {
            if let Some(max) = t.max_len {
                if s.len() > max {
                    out.push(format!("{path}: longer than {max} characters"));
                }
            }
            if let Some(why) = check_format(&attr.kind, s) {
                out.push(format!("{path}: {why}"));
            }
        }
        if let (Some(n), Some((lo, hi))) = (v.as_i64(), t.range) {
            if n < lo || n > hi {
                out.push(format!("{path}: {n} is outside {lo}..{hi}"));
            }
        }
        if let (Some(n), Some(allowed)) = (v.as_i64(), &attr.enumeration) {
            if !allowed.contains(&n) {
                out.push(format!("{path}: {n} is not one of the defined values ({})", join(allowed)));
            }
        }
    }
}

/// Where in the event a value sits (`actor.user.name`, `observables[2].type_id`), written out
/// only when a problem is reported: a valid event costs no path strings.
#[derive(Clone, Copy)]
enum At<'a> {
    Root,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl At<'_> {
    fn is_root(&self) -> bool {
        matches!(self, At::Root)
    }
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Root => Ok(()),
            At::Key(At::Root, k) => f.write_str(k),
            At::Key(parent, k) => write!(f, "{parent}.{k}"),
            At::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// The attribute the datetime profile adds beside a timestamp (`time_dt` beside `time`).
fn datetime_attr() -> &'static Attr {
    static A: std::sync::OnceLock<Attr> = std::sync::OnceLock::new();
    A.get_or_init(|| Attr { kind: "datetime_t".into(), array: false, required: false, enumeration: None })
}

fn join(v: &[i64]) -> String {
    v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Format checks of the string types OCSF constrains.
pub fn check_format(kind: &str, s: &str) -> Option<String> {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    match kind {
        "ip_t" => s.parse::<std::net::IpAddr>().is_err().then(|| format!("`{s}` is not an IP address")),
        "subnet_t" => {
            let ok = s
                .split_once('/')
                .is_some_and(|(ip, bits)| ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok());
            (!ok).then(|| format!("`{s}` is not a CIDR subnet"))
        }
        "mac_t" => {
            let parts: Vec<&str> = s.split([':', '-']).collect();
            let ok = (parts.len() == 6 || parts.len() == 8) && parts.iter().all(|p| p.len() == 2 && hex(p));
            (!ok).then(|| format!("`{s}` is not a MAC address"))
        }
        "email_t" => {
            let ok = s
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.') && !s.contains(' '));
            (!ok).then(|| format!("`{s}` is not an email address"))
        }
        "uuid_t" => {
            let groups: Vec<&str> = s.split('-').collect();
            let ok = groups.len() == 5 && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && hex(g));
            (!ok).then(|| format!("`{s}` is not a UUID"))
        }
        "datetime_t" => {
            let b = s.as_bytes();
            let ok = b.len() >= 19
                && b[4] == b'-'
                && b[7] == b'-'
                && matches!(b[10], b'T' | b't' | b' ')
                && b[13] == b':'
                && b[16] == b':'
                && [0..4, 5..7, 8..10, 11..13, 14..16, 17..19]
                    .iter()
                    .all(|r| b[r.clone()].iter().all(u8::is_ascii_digit));
            (!ok).then(|| format!("`{s}` is not an RFC 3339 date-time"))
        }
        "url_t" => {
            let ok = s.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty()
                    && scheme.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
                    && !rest.is_empty()
            }) && !s.contains(char::is_whitespace);
            (!ok).then(|| format!("`{s}` is not a URL"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn problems_name_the_attribute_by_its_path() {
        let event = json!({
            "class_uid": 2004, "category_uid": 2, "activity_id": 1, "type_uid": 200401,
            "severity_id": 9, "time": "yesterday", "time_dt": "2026-12-04T10:00:00Z",
            "metadata": {"product": {"name": "EDR", "vendor_name": "V"}, "version": "1.8.0"},
            "finding_info": {"uid": "f-1", "title": "t", "renamed_field": 1},
            "observables": [
                {"name": "ip", "type_id": 2, "value": "192.0.2.1"},
                {"name": "host", "type_id": "two", "value": "h"}
            ],
            "device": {"type_id": 1, "ip": "not-an-ip"}
        });
        let got = super::bundled().validate(&event);
        for want in [
            "severity_id: 9 is not one of the defined values",
            "time: expected timestamp_t (long), got a string",
            "finding_info.renamed_field: unknown attribute",
            "observables[1].type_id: expected integer_t (integer), got a string",
            "device.ip: `not-an-ip` is not an IP address",
        ] {
            assert!(got.iter().any(|p| p.starts_with(want)), "no `{want}` in {got:#?}");
        }
        assert!(!got.iter().any(|p| p.starts_with("time_dt") || p.starts_with("observables[0]")), "{got:#?}");
        // Without `metadata`: named at the top level, without a leading dot.
        let mut bare = event.as_object().unwrap().clone();
        bare.remove("metadata");
        let got = super::bundled().validate(&serde_json::Value::Object(bare));
        assert!(got.iter().any(|p| p == "metadata: required attribute missing"), "{got:#?}");
    }
}
