//! Route matching by host, path template and method, and the path rewrite that follows a match.
//!
//! Built once per config snapshot by the compiler; read per request by the proxy. Templates are
//! literal segments, `{name}` (exactly one segment) and a final `**` (the rest, possibly empty).
//! Lookup walks a segment tree preferring literal over `{param}` over `**`, so
//! `/vt/files/upload` beats `/vt/files/{hash}`; among routes on the same node, the first one (in
//! file order) whose host and method fit wins. The compiler rejects routes that another route would
//! shadow completely, so file order only breaks ties between disjoint method sets.
//!
//! ```
//! use interlock::proxy::router::{Lookup, RouterBuilder, Template, HostPattern};
//! let mut b = RouterBuilder::default();
//! b.add(0, Template::parse("/vt/files/{hash}").unwrap(), None, Some(vec![http::Method::GET]));
//! let router = b.build();
//! match router.lookup("gw", &http::Method::GET, "/vt/files/abc") {
//!     Lookup::Found(m) => assert_eq!(m.capture(0), Some("abc")),
//!     _ => unreachable!(),
//! }
//! ```

use std::collections::HashMap;

use http::Method;

/// One piece of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSeg {
    /// A literal segment.
    Literal(String),
    /// `{name}`: one segment.
    Param(String),
    /// `**`: the rest of the path (last piece only).
    Rest,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The segments, root excluded.
    pub segs: Vec<TemplateSeg>,
}

impl Template {
    /// Parses `/vt/files/{hash}` or `/okta/**`. Errors are sentences for the config compiler.
    pub fn parse(text: &str) -> Result<Template, String> {
        if !text.starts_with('/') {
            return Err(format!("path `{text}` must start with `/`"));
        }
        if text == "/" {
            return Ok(Template { segs: Vec::new() });
        }
        let parts: Vec<&str> = text[1..].split('/').collect();
        let mut segs = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if part.is_empty() {
                return Err(format!("path `{text}` has an empty segment (`//` or a trailing `/`)"));
            }
            if *part == "**" {
                if !last {
                    return Err(format!("path `{text}`: `**` may only be the last segment"));
                }
                segs.push(TemplateSeg::Rest);
            } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(format!("path `{text}`: `{{{name}}}` must name a capture with letters, digits or `_`"));
                }
                if names.contains(&name) {
                    return Err(format!("path `{text}`: capture `{{{name}}}` appears twice"));
                }
                names.push(name);
                segs.push(TemplateSeg::Param(name.to_owned()));
            } else if part.contains(['{', '}', '*', '%', '\\']) || *part == "." || *part == ".." {
                return Err(format!("path `{text}`: segment `{part}` must be a literal, `{{name}}` or a final `**`"));
            } else {
                segs.push(TemplateSeg::Literal((*part).to_owned()));
            }
        }
        Ok(Template { segs })
    }

    /// Names of the captures, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segs.iter().filter_map(|s| match s {
            TemplateSeg::Param(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// True when the template ends in `**`.
    pub fn has_rest(&self) -> bool {
        matches!(self.segs.last(), Some(TemplateSeg::Rest))
    }

    /// True when the normalised `path` matches this template on its own (used by policy rules).
    pub fn matches(&self, path: &str) -> bool {
        let body = path.strip_prefix('/').unwrap_or(path);
        let mut segs = if body.is_empty() { Vec::new() } else { body.split('/').collect::<Vec<_>>() };
        segs.reverse(); // pop from the front cheaply
        for t in &self.segs {
            match t {
                TemplateSeg::Rest => return true,
                TemplateSeg::Literal(l) => {
                    if segs.pop() != Some(l.as_str()) {
                        return false;
                    }
                }
                TemplateSeg::Param(_) => {
                    if segs.pop().is_none_or(|s| s.is_empty()) {
                        return false;
                    }
                }
            }
        }
        segs.is_empty()
    }

    /// The template with capture names erased: two routes with equal shapes match the same paths.
    pub fn shape(&self) -> String {
        let mut s = String::new();
        for seg in &self.segs {
            s.push('/');
            match seg {
                TemplateSeg::Literal(l) => s.push_str(l),
                TemplateSeg::Param(_) => s.push_str("{}"),
                TemplateSeg::Rest => s.push_str("**"),
            }
        }
        if s.is_empty() {
            s.push('/');
        }
        s
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.segs.is_empty() {
            return f.write_str("/");
        }
        for seg in &self.segs {
            match seg {
                TemplateSeg::Literal(l) => write!(f, "/{l}")?,
                TemplateSeg::Param(n) => write!(f, "/{{{n}}}")?,
                TemplateSeg::Rest => f.write_str("/**")?,
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// A host pattern: `api.example.com` or `*.example.com` (any subdomain, not the apex).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this host (lower case, no port).
    Exact(String),
    /// Any host ending with this suffix, which starts with `.`.
    Suffix(String),
}

impl HostPattern {
    /// Parses a config host pattern.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let t = text.to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && !s.starts_with('.')
                && !s.ends_with('.')
        };
        if let Some(rest) = t.strip_prefix("*.") {
            if valid(rest) {
                return Ok(HostPattern::Suffix(format!(".{rest}")));
            }
        } else if valid(&t) {
            return Ok(HostPattern::Exact(t));
        }
        Err(format!("host `{text}` must be a DNS name such as `api.example.com` or `*.example.com`, without a port"))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            HostPattern::Suffix(s) => {
                host.len() > s.len() && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }
}

#[derive(Debug)]
struct Entry {
    route: usize,
    host: Option<HostPattern>,
    methods: Option<Vec<Method>>,
}

#[derive(Debug, Default)]
struct Node {
    literals: HashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    /// Routes ending here.
    end: Vec<Entry>,
    /// Routes ending in `**` here.
    rest: Vec<Entry>,
}

/// Collects routes, then [`build`](RouterBuilder::build)s a [`Router`].
#[derive(Debug, Default)]
pub struct RouterBuilder {
    root: Node,
}

impl RouterBuilder {
    /// Adds route number `route` (an index into the snapshot's route list).
    pub fn add(&mut self, route: usize, t: Template, host: Option<HostPattern>, methods: Option<Vec<Method>>) {
        let mut node = &mut self.root;
        let entry = Entry { route, host, methods };
        for seg in t.segs {
            match seg {
                TemplateSeg::Literal(l) => node = node.literals.entry(l.into_boxed_str()).or_default(),
                TemplateSeg::Param(_) => node = node.param.get_or_insert_with(Default::default),
                TemplateSeg::Rest => {
                    node.rest.push(entry);
                    return;
                }
            }
        }
        node.end.push(entry);
    }

    /// Finishes the router.
    pub fn build(self) -> Router {
        Router { root: self.root }
    }
}

/// The compiled route table of one snapshot.
#[derive(Debug, Default)]
pub struct Router {
    root: Node,
}

/// A successful match: the route index and where its captures are in the normalised path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'p> {
    /// Index of the route in the snapshot.
    pub route: usize,
    path: &'p str,
    captures: [(u32, u32); MAX_CAPTURES],
    n_captures: usize,
    /// Byte offset where the `**` rest starts, `None` when the template has no rest or nothing remained.
    rest: Option<u32>,
}

/// At most this many `{param}` captures per template (checked by the compiler).
pub const MAX_CAPTURES: usize = 8;

impl<'p> RouteMatch<'p> {
    /// The `i`th capture (template order).
    pub fn capture(&self, i: usize) -> Option<&'p str> {
        if i >= self.n_captures {
            return None;
        }
        let (s, e) = self.captures[i];
        self.path.get(s as usize..e as usize)
    }

    /// The text matched by `**`: `None` when nothing followed the prefix, `Some("")` for a bare
    /// trailing slash.
    pub fn rest(&self) -> Option<&'p str> {
        self.rest.and_then(|s| self.path.get(s as usize..))
    }
}

/// The result of a lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'p> {
    /// A route takes the request.
    Found(RouteMatch<'p>),
    /// Routes exist for this host and path but not this method; these are allowed.
    MethodNotAllowed(Vec<Method>),
    /// No route for this host and path.
    NotFound,
}

struct Search<'p, 'h, 'm> {
    path: &'p str,
    host: &'h str,
    method: &'m Method,
    caps: [(u32, u32); MAX_CAPTURES],
    n: usize,
    allowed: Vec<Method>,
    path_hit: bool,
}

impl Search<'_, '_, '_> {
    /// Returns the first entry fitting host and method; records allowed methods otherwise.
    fn pick(&mut self, entries: &[Entry]) -> Option<usize> {
        for e in entries {
            if let Some(h) = &e.host {
                if !h.matches(self.host) {
                    continue;
                }
            }
            self.path_hit = true;
            match &e.methods {
                None if *self.method != Method::CONNECT => return Some(e.route),
                None => {}
                Some(ms) => {
                    if ms.contains(self.method) {
                        return Some(e.route);
                    }
                    for m in ms {
                        if !self.allowed.contains(m) {
                            self.allowed.push(m.clone());
                        }
                    }
                }
            }
        }
        None
    }
}

impl Router {
    /// Finds the route for `host` (lower case, no port), `method` and a **normalised** `path`.
    pub fn lookup<'p>(&self, host: &str, method: &Method, path: &'p str) -> Lookup<'p> {
        let mut s =
            Search { path, host, method, caps: [(0, 0); MAX_CAPTURES], n: 0, allowed: Vec::new(), path_hit: false };
        // Position 1 skips the leading '/'; "/" itself has no segments.
        let start = if path.len() <= 1 { None } else { Some(1) };
        if let Some((route, rest)) = Self::walk(&self.root, start, &mut s) {
            return Lookup::Found(RouteMatch {
                route,
                path,
                captures: s.caps,
                n_captures: s.n,
                rest: rest.map(|r| r as u32),
            });
        }
        if s.path_hit {
            if s.allowed.is_empty() {
                // Only CONNECT was refused by method-less routes.
                s.allowed.push(Method::GET);
            }
            Lookup::MethodNotAllowed(s.allowed)
        } else {
            Lookup::NotFound
        }
    }

    /// `pos`: byte offset of the next segment's first byte, `None` when no segments remain.
    fn walk(node: &Node, pos: Option<usize>, s: &mut Search<'_, '_, '_>) -> Option<(usize, Option<usize>)> {
        let Some(pos) = pos else {
            if let Some(r) = s.pick(&node.end) {
                return Some((r, None));
            }
            return s.pick(&node.rest).map(|r| (r, None));
        };
        let bytes = s.path.as_bytes();
        let end = bytes[pos..].iter().position(|&b| b == b'/').map_or(bytes.len(), |i| pos + i);
        let seg = &s.path[pos..end];
        let next = if end < bytes.len() { Some(end + 1) } else { None };
        if let Some(child) = node.literals.get(seg) {
            if let Some(found) = Self::walk(child, next, s) {
                return Some(found);
            }
        }
        if let Some(child) = &node.param {
            if !seg.is_empty() && s.n < MAX_CAPTURES {
                s.caps[s.n] = (pos as u32, end as u32);
                s.n += 1;
                if let Some(found) = Self::walk(child, next, s) {
                    return Some(found);
                }
                s.n -= 1;
            }
        }
        s.pick(&node.rest).map(|r| (r, Some(pos)))
    }
}

/// A compiled rewrite template: literal text, captures and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pieces: Vec<RewritePiece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RewritePiece {
    Text(String),
    Capture(usize),
    Rest,
}

impl Rewrite {
    /// Parses a rewrite against the route's template: every `{name}` must be a capture of it, and
    /// `**` requires the template to end in `**`.
    pub fn parse(text: &str, template: &Template) -> Result<Rewrite, String> {
        if !text.starts_with('/') {
            return Err(format!("rewrite `{text}` must start with `/`"));
        }
        let names: Vec<&str> = template.param_names().collect();
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("**") {
                if !template.has_rest() {
                    return Err(format!("rewrite `{text}` uses `**` but the match path does not end in `**`"));
                }
                if !lit.is_empty() {
                    pieces.push(RewritePiece::Text(std::mem::take(&mut lit)));
                }
                pieces.push(RewritePiece::Rest);
                rest = after;
            } else if let Some(after) = rest.strip_prefix('{') {
                let close = after.find('}').ok_or_else(|| format!("rewrite `{text}` has an unclosed `{{`"))?;
                let name = &after[..close];
                let idx = names.iter().position(|n| *n == name).ok_or_else(|| {
                    format!("rewrite `{text}` uses `{{{name}}}`, which the match path does not capture")
                })?;
                if !lit.is_empty() {
                    pieces.push(RewritePiece::Text(std::mem::take(&mut lit)));
                }
                pieces.push(RewritePiece::Capture(idx));
                rest = &after[close + 1..];
            } else {
                let c = rest.chars().next().unwrap_or('/');
                if matches!(c, '}' | '?' | '#' | '\\' | ' ') {
                    return Err(format!("rewrite `{text}` may not contain `{c}`"));
                }
                lit.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !lit.is_empty() {
            pieces.push(RewritePiece::Text(lit));
        }
        Ok(Rewrite { pieces })
    }

    /// Appends the rewritten path to `out`.
    pub fn apply(&self, m: &RouteMatch<'_>, out: &mut String) {
        for p in &self.pieces {
            match p {
                RewritePiece::Text(t) => out.push_str(t),
                RewritePiece::Capture(i) => out.push_str(m.capture(*i).unwrap_or("")),
                RewritePiece::Rest => match m.rest() {
                    Some(r) => out.push_str(r),
                    None => {
                        // Nothing after the prefix: `/api/**` becomes `/api`, not `/api/`.
                        if out.ends_with('/') && out.len() > 1 {
                            out.pop();
                        }
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Spec<'a> = (&'a str, Option<&'a str>, Option<Vec<Method>>);

    fn router(routes: &[Spec<'_>]) -> Router {
        let mut b = RouterBuilder::default();
        for (i, (p, h, m)) in routes.iter().enumerate() {
            b.add(i, Template::parse(p).unwrap(), h.map(|h| HostPattern::parse(h).unwrap()), m.clone());
        }
        b.build()
    }

    fn found(l: Lookup<'_>) -> (usize, Vec<String>, Option<String>) {
        match l {
            Lookup::Found(m) => (
                m.route,
                (0..m.n_captures).map(|i| m.capture(i).unwrap().to_owned()).collect(),
                m.rest().map(str::to_owned),
            ),
            other => panic!("expected a match, got {other:?}"),
        }
    }

    #[test]
    fn templates_parse_and_reject() {
        assert_eq!(Template::parse("/okta/**").unwrap().shape(), "/okta/**");
        assert_eq!(Template::parse("/vt/files/{hash}").unwrap().shape(), "/vt/files/{}");
        assert!(Template::parse("vt").is_err());
        assert!(Template::parse("/a//b").is_err());
        assert!(Template::parse("/a/**/b").is_err());
        assert!(Template::parse("/a/{}").is_err());
        assert!(Template::parse("/a/{x}/{x}").is_err());
        assert!(Template::parse("/a/b*").is_err());
        assert!(Template::parse("/a/../b").is_err());
    }

    #[test]
    fn single_template_matching() {
        let t = Template::parse("/edr/hosts/{id}/contain").unwrap();
        assert!(t.matches("/edr/hosts/h1/contain"));
        assert!(!t.matches("/edr/hosts/h1/release"));
        assert!(!t.matches("/edr/hosts/h1/contain/x"));
        assert!(!t.matches("/edr/hosts//contain"));
        let p = Template::parse("/edr/**").unwrap();
        assert!(p.matches("/edr") && p.matches("/edr/") && p.matches("/edr/a/b"));
        assert!(!p.matches("/other"));
        assert!(Template::parse("/").unwrap().matches("/"));
        assert!(!Template::parse("/a").unwrap().matches("/"));
    }

    #[test]
    fn literal_beats_param_beats_rest() {
        let r = router(&[("/vt/**", None, None), ("/vt/files/{hash}", None, None), ("/vt/files/upload", None, None)]);
        assert_eq!(found(r.lookup("h", &Method::GET, "/vt/files/upload")).0, 2);
        assert_eq!(found(r.lookup("h", &Method::GET, "/vt/files/abc")), (1, vec!["abc".into()], None));
        assert_eq!(found(r.lookup("h", &Method::GET, "/vt/files/abc/x")), (0, vec![], Some("files/abc/x".into())));
        assert_eq!(found(r.lookup("h", &Method::GET, "/vt")), (0, vec![], None));
        assert_eq!(found(r.lookup("h", &Method::GET, "/vt/")), (0, vec![], Some(String::new())));
        assert_eq!(r.lookup("h", &Method::GET, "/other"), Lookup::NotFound);
        // The empty segment of a trailing slash is not a capture.
        assert_eq!(found(r.lookup("h", &Method::GET, "/vt/files/")).0, 0);
    }

    #[test]
    fn backtracks_when_method_does_not_fit() {
        let r = router(&[
            ("/vt/files/upload", None, Some(vec![Method::POST])),
            ("/vt/files/{hash}", None, Some(vec![Method::GET])),
        ]);
        assert_eq!(found(r.lookup("h", &Method::GET, "/vt/files/upload")).0, 1);
        assert_eq!(found(r.lookup("h", &Method::POST, "/vt/files/upload")).0, 0);
        match r.lookup("h", &Method::DELETE, "/vt/files/upload") {
            Lookup::MethodNotAllowed(m) => assert_eq!(m, vec![Method::POST, Method::GET]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hosts() {
        let r =
            router(&[("/a", Some("api.example.com"), None), ("/a", Some("*.corp.example"), None), ("/b", None, None)]);
        assert_eq!(found(r.lookup("api.example.com", &Method::GET, "/a")).0, 0);
        assert_eq!(found(r.lookup("API.example.COM", &Method::GET, "/a")).0, 0);
        assert_eq!(found(r.lookup("x.corp.example", &Method::GET, "/a")).0, 1);
        assert_eq!(r.lookup("corp.example", &Method::GET, "/a"), Lookup::NotFound);
        assert_eq!(r.lookup("other", &Method::GET, "/a"), Lookup::NotFound);
        assert_eq!(found(r.lookup("anything", &Method::GET, "/b")).0, 2);
    }

    #[test]
    fn connect_never_matches_method_less_routes() {
        let r = router(&[("/**", None, None)]);
        assert!(matches!(r.lookup("h", &Method::CONNECT, "/x"), Lookup::MethodNotAllowed(_)));
    }

    #[test]
    fn rewrites() {
        let t = Template::parse("/vt/files/{hash}").unwrap();
        let rw = Rewrite::parse("/files/{hash}", &t).unwrap();
        let r = router(&[("/vt/files/{hash}", None, None), ("/okta/**", None, None)]);
        let Lookup::Found(m) = r.lookup("h", &Method::GET, "/vt/files/abc") else { panic!() };
        let mut out = String::from("/api/v3");
        rw.apply(&m, &mut out);
        assert_eq!(out, "/api/v3/files/abc");

        let t = Template::parse("/okta/**").unwrap();
        let rw = Rewrite::parse("/api/v1/**", &t).unwrap();
        for (path, want) in [("/okta/users/x", "/api/v1/users/x"), ("/okta", "/api/v1"), ("/okta/", "/api/v1/")] {
            let Lookup::Found(m) = r.lookup("h", &Method::GET, path) else { panic!() };
            let mut out = String::new();
            rw.apply(&m, &mut out);
            assert_eq!(out, want, "{path}");
        }
        assert!(Rewrite::parse("/x/{nope}", &Template::parse("/a/{id}").unwrap()).is_err());
        assert!(Rewrite::parse("/x/**", &Template::parse("/a/{id}").unwrap()).is_err());
        assert!(Rewrite::parse("x", &Template::parse("/a").unwrap()).is_err());
    }
}
