//! Header rules of the request path: hop-by-hop removal, caller credential removal, forwarding
//! headers and request ids.
//!
//! Called by the proxy for every request and response; pure functions over `HeaderMap`.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

use crate::config::IpNet;

/// Headers that describe one connection and are never forwarded (RFC 9110 §7.6.1), plus the
/// de-facto ones proxies remove.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, every header named in `Connection`, and `Upgrade` unless
/// `keep_upgrade` (an upgrade being proxied keeps `Connection: upgrade` + `Upgrade`).
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    strip(h, keep_upgrade, None);
}

/// For requests: hop-by-hop headers, every credential a caller may have sent (`Authorization`,
/// `Proxy-Authorization`, `Cookie` and `credential_headers`, so the upstream sees only the injected
/// one: invariant 2), `Expect` and `Host`, in one pass over the request's headers: only names
/// actually present are removed, so the common request costs one scan instead of a dozen lookups.
pub fn strip_request(h: &mut HeaderMap, keep_upgrade: bool, credential_headers: &[HeaderName]) {
    strip(h, keep_upgrade, Some(credential_headers));
}

fn strip(h: &mut HeaderMap, keep_upgrade: bool, request: Option<&[HeaderName]>) {
    let mut doomed: SmallVec<[HeaderName; 8]> = SmallVec::new();
    let mut saw_connection = false;
    for name in h.keys() {
        let remove = if HOP_BY_HOP.contains(name) {
            saw_connection |= name == header::CONNECTION;
            true
        } else if name == header::UPGRADE {
            !keep_upgrade
        } else if let Some(extra) = request {
            name == header::AUTHORIZATION
                || name == header::COOKIE
                || name == header::EXPECT // hyper answered 100-continue to the caller already
                || name == header::HOST // the client sets the upstream's own Host / :authority
                || extra.contains(name)
        } else {
            false
        };
        if remove {
            doomed.push(name.clone());
        }
    }
    if saw_connection {
        // Names listed in Connection must go too (RFC 9110 §7.6.1).
        for v in h.get_all(header::CONNECTION) {
            let Ok(s) = v.to_str() else { continue };
            for token in s.split(',') {
                let t = token.trim();
                if t.is_empty() || (keep_upgrade && t.eq_ignore_ascii_case("upgrade")) {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(t.to_ascii_lowercase().as_bytes()) {
                    doomed.push(n);
                }
            }
        }
    }
    for n in doomed {
        h.remove(n);
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Sets `Forwarded` and `X-Forwarded-For/Proto/Host`. From an untrusted peer, incoming values are
/// discarded first; from a trusted proxy, ours are appended to theirs.
pub fn set_forwarded(h: &mut HeaderMap, peer: SocketAddr, proto: &str, host: Option<&str>, trusted: &[IpNet]) {
    use std::fmt::Write as _;
    let xff = HeaderName::from_static("x-forwarded-for");
    let xfp = HeaderName::from_static("x-forwarded-proto");
    let xfh = HeaderName::from_static("x-forwarded-host");
    let ip = peer.ip().to_canonical();
    let trust = !trusted.is_empty() && trusted.iter().any(|n| n.contains(ip));
    let mut buf = String::with_capacity(64);
    if trust {
        if let Some(prior) = join_values(h, &xff) {
            buf.push_str(&prior);
            buf.push_str(", ");
        }
    } else {
        h.remove(&xfp);
        h.remove(&xfh);
    }
    let _ = write!(buf, "{ip}");
    set(h, xff, &buf);
    if !h.contains_key(&xfp) {
        set(h, xfp, proto);
    }
    if let Some(host) = host {
        if !h.contains_key(&xfh) {
            set(h, xfh, host);
        }
    }
    buf.clear();
    if trust {
        if let Some(prior) = join_values(h, &header::FORWARDED) {
            buf.push_str(&prior);
            buf.push_str(", ");
        }
    }
    let _ = match ip {
        IpAddr::V4(v4) => write!(buf, "for={v4};proto={proto}"),
        IpAddr::V6(v6) => write!(buf, "for=\"[{v6}]\";proto={proto}"),
    };
    if let Some(host) = host {
        if host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)) {
            buf.push_str(";host=");
            buf.push_str(host);
        } else {
            buf.push_str(";host=\"");
            buf.push_str(&host.replace(['"', '\\'], ""));
            buf.push('"');
        }
    }
    set(h, header::FORWARDED, &buf);
}

fn join_values(h: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in h.get_all(name) {
        let Ok(s) = v.to_str() else { continue };
        match &mut out {
            None => out = Some(s.to_owned()),
            Some(o) => {
                o.push_str(", ");
                o.push_str(s);
            }
        }
    }
    out
}

fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// True when a client-sent request id may be kept: 1–128 characters of `A-Za-z0-9._:-`.
pub fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c))
}

/// A new request id: a time-ordered UUID (v7 layout), so ids sort by arrival across replicas. The
/// random part comes from a thread-local generator seeded once from the OS, not a syscall per id.
pub fn new_request_id() -> HeaderValue {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut random = [0u8; 10];
    fastrand::fill(&mut random);
    let id = uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = id.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Counts header fields and their bytes (name + value + 4 for `: ` and CRLF, as on the wire).
pub fn header_size(h: &HeaderMap) -> (usize, usize) {
    let mut bytes = 0;
    for (n, v) in h {
        bytes += n.as_str().len() + v.len() + 4;
    }
    (h.len(), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "close, X-Secret-Hop"),
            ("connection", "x-other"),
            ("x-secret-hop", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn upgrade_kept_when_proxying_one() {
        let mut h = map(&[("connection", "Upgrade, x-a"), ("upgrade", "websocket"), ("x-a", "1")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("x-a"));
    }

    #[test]
    fn request_strip_removes_hop_by_hop_credentials_expect_and_host_in_one_pass() {
        let mut h = map(&[
            ("connection", "x-a"),
            ("x-a", "1"),
            ("authorization", "Bearer t"),
            ("cookie", "c=1"),
            ("x-apikey", "k"),
            ("expect", "100-continue"),
            ("host", "gw"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ]);
        strip_request(&mut h, false, &[HeaderName::from_static("x-apikey")]);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["accept"], "*/*");
    }

    #[test]
    fn forwarded_from_untrusted_peer_is_rebuilt() {
        let mut h = map(&[("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6"), ("x-forwarded-host", "evil")]);
        set_forwarded(&mut h, "10.1.2.3:5555".parse().unwrap(), "http", Some("gw.corp"), &[]);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-host"], "gw.corp");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["forwarded"], "for=10.1.2.3;proto=http;host=gw.corp");
    }

    #[test]
    fn forwarded_from_trusted_proxy_is_appended() {
        let mut h =
            map(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=1.1.1.1"), ("x-forwarded-proto", "https")]);
        let trusted = [IpNet::parse("10.0.0.0/8").unwrap()];
        set_forwarded(&mut h, "[::ffff:10.1.2.3]:5555".parse().unwrap(), "http", Some("gw"), &trusted);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["forwarded"], "for=1.1.1.1, for=10.1.2.3;proto=http;host=gw");
    }

    #[test]
    fn request_ids() {
        assert!(valid_request_id(&HeaderValue::from_static("abc-123_x.y:z")));
        assert!(!valid_request_id(&HeaderValue::from_static("a b")));
        assert!(!valid_request_id(&HeaderValue::from_static("")));
        let id = new_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id.as_bytes()[14..15], b"7", "version 7: {id:?}");
        assert_ne!(id, new_request_id());
    }
}
