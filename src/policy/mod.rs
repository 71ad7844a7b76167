//! Authorization: the pure, synchronous decision whether a caller may make a call.
//!
//! Deny by default. A route's `allow` rules grant access; its `deny` rules win over them; its
//! `shadow` policy (a stricter candidate being rolled out) is evaluated too and only reported: a
//! call it would deny is logged and counted as "would deny" but served. [`decide`] is the one
//! engine behind the proxy and `interlock explain`; it does no I/O.

use std::fmt;

use http::Method;

use crate::config::Origin;
use crate::identity::Caller;
use crate::proxy::router::Template;

/// One rule: who (callers, groups or anyone), and optionally which methods and paths.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Where it is written: `allow[1]`, `deny[0]`, `shadow.allow[0]`.
    pub name: String,
    /// File and line.
    pub origin: Origin,
    /// Caller ids.
    pub callers: Vec<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Anyone, identified or not.
    pub anyone: bool,
    /// Methods (None = any).
    pub methods: Option<Vec<Method>>,
    /// Path template within the route (None = any path of the route).
    pub path: Option<Template>,
}

impl Rule {
    /// Whether the rule covers this caller, method and normalised path.
    pub fn matches(&self, caller: Option<&Caller>, method: &Method, path: &str) -> bool {
        let who = self.anyone
            || caller.is_some_and(|c| {
                self.callers.iter().any(|x| **x == *c.id) || c.groups.iter().any(|g| self.groups.contains(g))
            });
        who && self.methods.as_ref().is_none_or(|m| m.contains(method))
            && self.path.as_ref().is_none_or(|p| p.matches(path))
    }

    /// The rule in words: `group enrichment, GET only, on /vt/files/{hash}`.
    pub fn describe(&self) -> String {
        let mut who = Vec::new();
        if self.anyone {
            who.push("anyone".to_owned());
        }
        if !self.callers.is_empty() {
            who.push(format!("caller {}", self.callers.join(" or ")));
        }
        if !self.groups.is_empty() {
            who.push(format!("group {}", self.groups.join(" or ")));
        }
        let mut s = who.join(" or ");
        if let Some(m) = &self.methods {
            let m: Vec<&str> = m.iter().map(Method::as_str).collect();
            s.push_str(&format!(", methods {}", m.join("/")));
        }
        if let Some(p) = &self.path {
            s.push_str(&format!(", path {p}"));
        }
        s
    }
}

/// A route's policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Grants.
    pub allow: Vec<Rule>,
    /// Refusals that win over grants.
    pub deny: Vec<Rule>,
    /// A candidate policy reported on, never enforced.
    pub shadow: Option<Box<Policy>>,
}

/// The outcome of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Served, because of this rule.
    Allow(String),
    /// Refused, because of this rule (a `deny` rule), or `None` when no `allow` rule matched.
    Deny(Option<String>),
}

impl Decision {
    /// `allow` / `deny`.
    pub fn verdict(&self) -> &'static str {
        match self {
            Decision::Allow(_) => "allow",
            Decision::Deny(_) => "deny",
        }
    }

    /// The deciding rule's name, or `default-deny`.
    pub fn rule(&self) -> &str {
        match self {
            Decision::Allow(r) | Decision::Deny(Some(r)) => r,
            Decision::Deny(None) => "default-deny",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.verdict(), self.rule())
    }
}

/// One rule as considered by [`explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Considered {
    /// Rule name.
    pub rule: String,
    /// File and line.
    pub origin: String,
    /// The rule in words.
    pub description: String,
    /// Whether it matched.
    pub matched: bool,
}

/// Decides a call. Deny rules win; then the first matching allow rule; else deny.
pub fn decide(p: &Policy, caller: Option<&Caller>, method: &Method, path: &str) -> Decision {
    if let Some(d) = p.deny.iter().find(|r| r.matches(caller, method, path)) {
        return Decision::Deny(Some(d.name.clone()));
    }
    match p.allow.iter().find(|r| r.matches(caller, method, path)) {
        Some(a) => Decision::Allow(a.name.clone()),
        None => Decision::Deny(None),
    }
}

/// The shadow policy's decision, if the route has one.
pub fn shadow(p: &Policy, caller: Option<&Caller>, method: &Method, path: &str) -> Option<Decision> {
    p.shadow.as_deref().map(|s| decide(s, caller, method, path))
}

/// Every rule with whether it matched, in evaluation order (deny, then allow, then shadow).
pub fn explain(p: &Policy, caller: Option<&Caller>, method: &Method, path: &str) -> Vec<Considered> {
    let all =
        p.deny.iter().chain(p.allow.iter()).chain(p.shadow.iter().flat_map(|s| s.deny.iter().chain(s.allow.iter())));
    all.map(|r| Considered {
        rule: r.name.clone(),
        origin: r.origin.to_string(),
        description: r.describe(),
        matched: r.matches(caller, method, path),
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{AuthMethod, Caller};

    fn rule(name: &str, callers: &[&str], groups: &[&str]) -> Rule {
        Rule {
            name: name.into(),
            origin: Origin { file: "r.yaml".into(), line: 1 },
            callers: callers.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            anyone: false,
            methods: None,
            path: None,
        }
    }

    fn caller(id: &str, groups: &[&str]) -> Caller {
        Caller {
            id: id.into(),
            groups: groups.iter().map(|s| s.to_string()).collect::<Vec<_>>().into(),
            via: AuthMethod::ApiKey { key_id: "k".into() },
        }
    }

    #[test]
    fn deny_by_default_allow_rules_and_deny_wins() {
        let mut p = Policy::default();
        let soar = caller("soar", &["automation"]);
        assert_eq!(decide(&p, Some(&soar), &Method::GET, "/x"), Decision::Deny(None));
        p.allow.push(rule("allow[0]", &[], &["automation"]));
        assert_eq!(decide(&p, Some(&soar), &Method::GET, "/x"), Decision::Allow("allow[0]".into()));
        assert_eq!(decide(&p, None, &Method::GET, "/x"), Decision::Deny(None));
        p.deny.push(rule("deny[0]", &["soar"], &[]));
        assert_eq!(decide(&p, Some(&soar), &Method::GET, "/x"), Decision::Deny(Some("deny[0]".into())));
    }

    #[test]
    fn methods_and_paths_narrow_a_rule() {
        let mut r = rule("allow[0]", &["soar"], &[]);
        r.methods = Some(vec![Method::POST]);
        r.path = Some(Template::parse("/edr/hosts/{id}/contain").unwrap());
        let soar = caller("soar", &[]);
        assert!(r.matches(Some(&soar), &Method::POST, "/edr/hosts/h1/contain"));
        assert!(!r.matches(Some(&soar), &Method::GET, "/edr/hosts/h1/contain"));
        assert!(!r.matches(Some(&soar), &Method::POST, "/edr/hosts/h1/release"));
        assert_eq!(r.describe(), "caller soar, methods POST, path /edr/hosts/{id}/contain");
    }

    #[test]
    fn shadow_policies_are_reported_separately() {
        let p = Policy {
            allow: vec![rule("allow[0]", &[], &["automation"])],
            deny: vec![],
            shadow: Some(Box::new(Policy {
                allow: vec![rule("shadow.allow[0]", &["siem"], &[])],
                ..Default::default()
            })),
        };
        let soar = caller("soar", &["automation"]);
        assert!(matches!(decide(&p, Some(&soar), &Method::GET, "/"), Decision::Allow(_)));
        assert_eq!(shadow(&p, Some(&soar), &Method::GET, "/"), Some(Decision::Deny(None)));
        let considered = explain(&p, Some(&soar), &Method::GET, "/");
        assert_eq!(considered.len(), 2);
        assert!(considered[0].matched && !considered[1].matched);
    }
}
