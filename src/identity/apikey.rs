//! Interlock-issued API keys for tools that can only send a static key.
//!
//! A key is `ilk_` + 43 characters of base64url (32 random bytes from the OS). Only its SHA-256 is
//! stored (`sha256:<hex>` in `callers.yaml`); a presented key is hashed and the digest looked up,
//! then compared in constant time. The key itself is never logged or stored.

use std::collections::HashMap;

use base64::Engine as _;

/// Prefix of every key, so secret scanners can recognise leaked keys.
pub const PREFIX: &str = "ilk_";

/// Keys longer than this are refused without hashing.
pub const MAX_KEY_LEN: usize = 256;

/// A new random key and its stored form.
pub fn generate() -> Result<(String, String), String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| "the OS random generator failed".to_owned())?;
    let key = format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let stored = format!("sha256:{}", hex(&digest(&key)));
    Ok((key, stored))
}

/// SHA-256 of a presented key.
pub fn digest(key: &str) -> [u8; 32] {
    digest_bytes(key.as_bytes())
}

/// SHA-256 of bytes.
pub fn digest_bytes(b: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses the stored form `sha256:<64 hex>`.
pub fn parse_stored(text: &str) -> Result<[u8; 32], String> {
    let h =
        text.strip_prefix("sha256:").ok_or("must be `sha256:<64 hex digits>` as printed by `interlock keys new`")?;
    if h.len() != 64 {
        return Err("must be `sha256:` followed by 64 hex digits".to_owned());
    }
    let mut out = [0u8; 32];
    for (i, chunk) in h.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).map_err(|_| "not hex")?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| "must be hex digits after `sha256:`".to_owned())?;
    }
    Ok(out)
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= a[i] ^ b[i];
    }
    std::hint::black_box(diff) == 0
}

/// The stored keys of all callers.
#[derive(Debug, Default, Clone)]
pub struct KeyTable {
    by_digest: HashMap<[u8; 32], (usize, String)>,
}

impl KeyTable {
    /// Adds a stored key for caller number `caller`; false if the hash is already present.
    pub fn insert(&mut self, digest: [u8; 32], caller: usize, key_id: String) -> bool {
        self.by_digest.insert(digest, (caller, key_id)).is_none()
    }

    /// Key ids of caller number `caller` (never the hashes), sorted.
    pub fn ids_for(&self, caller: usize) -> Vec<&str> {
        let mut v: Vec<&str> =
            self.by_digest.values().filter(|(c, _)| *c == caller).map(|(_, id)| id.as_str()).collect();
        v.sort_unstable();
        v
    }

    /// Number of stored keys.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The caller index and key id of a presented key.
    pub fn find(&self, presented: &[u8]) -> Option<(usize, &str)> {
        if presented.len() > MAX_KEY_LEN {
            return None;
        }
        let key = std::str::from_utf8(presented).ok()?;
        let d = digest(key);
        let (stored, (caller, id)) = self.by_digest.get_key_value(&d)?;
        ct_eq(stored, &d).then_some((*caller, id.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_and_differ() {
        let (k1, s1) = generate().unwrap();
        let (k2, _) = generate().unwrap();
        assert_ne!(k1, k2);
        assert!(k1.starts_with(PREFIX) && k1.len() == 4 + 43, "{k1}");
        let mut t = KeyTable::default();
        assert!(t.insert(parse_stored(&s1).unwrap(), 7, "soar-1".into()));
        assert_eq!(t.find(k1.as_bytes()), Some((7, "soar-1")));
        assert_eq!(t.find(k2.as_bytes()), None);
        assert_eq!(t.find(&[b'a'; 300]), None);
        assert!(parse_stored("md5:00").is_err());
        assert!(parse_stored(&format!("sha256:{}", "zz".repeat(32))).is_err());
    }
}
