//! The one path normalisation used for routing, policy and forwarding (invariant 3).
//!
//! Called once per request by the proxy before routing; the normalised path is what every later
//! stage sees and what the upstream receives. Rules, in order:
//!
//! 1. The path must be origin-form (start with `/`).
//! 2. Percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; other escapes
//!    are kept with upper-case hex. `%2F` (encoded `/`), `%5C` (`\`), `%00` (NUL), a raw `\` and
//!    malformed escapes are rejected: they mean different things to different servers.
//! 3. Empty segments (`//`) are collapsed, `.` and `..` segments removed (RFC 3986 §5.2.4; `..` at the
//!    root stays at the root). A trailing slash is kept.
//! 4. A segment such as `..;x` (a dot segment with a matrix parameter) is rejected, since some
//!    servers treat it as `..`.
//!
//! ```
//! use interlock::proxy::normalize::normalize;
//! assert_eq!(normalize("/vt//files/./a/../%41bc").unwrap(), "/vt/files/Abc");
//! assert!(normalize("/vt/files%2F..%2Fadmin").is_err());
//! ```

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The target is not origin-form (`*` or something not starting with `/`).
    #[error("The request target must be a path starting with `/`")]
    NotOriginForm,
    /// `%2F` in the path.
    #[error("The path contains an encoded slash (%2F)")]
    EncodedSlash,
    /// `\` or `%5C` in the path.
    #[error("The path contains a backslash")]
    Backslash,
    /// `%00` in the path.
    #[error("The path contains an encoded NUL (%00)")]
    Nul,
    /// `%` not followed by two hex digits.
    #[error("The path contains a malformed percent-escape")]
    BadEscape,
    /// `.;` or `..;` segment.
    #[error("The path contains a dot segment with parameters (`..;`)")]
    DotSegmentParam,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True when the path needs no work: no escapes, no backslash, no empty or dot segments.
fn is_clean(path: &[u8]) -> bool {
    let mut prev = b'/';
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b'\\' => return false,
            b'/' if prev == b'/' && i > 0 => return false,
            b'.' if prev == b'/' => {
                // "/." starts a dot segment only if followed by end, '/', '.', or ';'
                match path.get(i + 1) {
                    None | Some(b'/') | Some(b';') => return false,
                    Some(b'.') => {
                        if matches!(path.get(i + 2), None | Some(b'/') | Some(b';')) {
                            return false;
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        prev = b;
    }
    true
}

/// Normalises a request path (without the query). Returns the input unchanged when already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    if is_clean(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    // Pass 1: escapes.
    let mut decoded: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let (Some(h), Some(l)) =
                    (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
                else {
                    return Err(PathError::BadEscape);
                };
                let v = h * 16 + l;
                match v {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0 => return Err(PathError::Nul),
                    _ if is_unreserved(v) => decoded.push(v),
                    _ => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        decoded.extend_from_slice(&[b'%', HEX[(v >> 4) as usize], HEX[(v & 15) as usize]]);
                    }
                }
                i += 3;
            }
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    // Pass 2: segments. `decoded` holds only ASCII bytes from a &str plus ASCII escapes, so it
    // remains valid UTF-8; non-ASCII input bytes were copied whole.
    let mut out: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    for seg in decoded.split(|&b| b == b'/').skip(1) {
        trailing_slash = false;
        match seg {
            b"" => trailing_slash = true,
            b"." => trailing_slash = true,
            b".." => {
                out.pop();
                trailing_slash = true;
            }
            _ if seg.starts_with(b".;") || seg.starts_with(b"..;") => return Err(PathError::DotSegmentParam),
            _ => out.push(seg),
        }
    }
    let mut s = Vec::with_capacity(decoded.len());
    for seg in &out {
        s.push(b'/');
        s.extend_from_slice(seg);
    }
    if trailing_slash || out.is_empty() {
        s.push(b'/');
    }
    // Only ASCII was inserted or removed at ASCII boundaries, so this cannot fail; map defensively.
    String::from_utf8(s).map(Cow::Owned).map_err(|_| PathError::BadEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_are_borrowed() {
        for p in ["/", "/vt/files/abc", "/a.b/c..d/.e", "/x/", "/okta/api/v1/users?x"] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_slashes() {
        let cases = [
            ("//vt///files", "/vt/files"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/../c", "/a/c"),
            ("/../../etc", "/etc"),
            ("/a/.", "/a/"),
            ("/a/%2e%2E/b", "/b"),
            ("/a/%2e/b", "/a/b"),
            ("/%7euser/%41", "/~user/A"),
            ("/q%3fx/%c3%a9", "/q%3Fx/%C3%A9"),
            ("/a//", "/a/"),
            ("/..", "/"),
        ];
        for (i, o) in cases {
            assert_eq!(normalize(i).as_deref(), Ok(o), "{i}");
        }
    }

    #[test]
    fn tricks_are_rejected() {
        assert_eq!(normalize("/a%2fb"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/a%2F..%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/a\\b"), Err(PathError::Backslash));
        assert_eq!(normalize("/a%5cb"), Err(PathError::Backslash));
        assert_eq!(normalize("/a%00"), Err(PathError::Nul));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%4"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a/..;/admin"), Err(PathError::DotSegmentParam));
        assert_eq!(normalize("*"), Err(PathError::NotOriginForm));
        assert_eq!(normalize(""), Err(PathError::NotOriginForm));
    }

    #[test]
    fn idempotent() {
        for p in ["/a/%2e%2e/b/", "//x/./y/../z", "/%7e/%c3%a9", "/a/b/.."] {
            let once = normalize(p).unwrap().into_owned();
            assert_eq!(normalize(&once).unwrap(), once);
        }
    }
}
