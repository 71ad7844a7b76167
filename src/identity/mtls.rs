//! The caller identity in a verified client certificate: its SPIFFE URI SAN, else its first DNS
//! SAN, else its subject CN.
//!
//! Read once per TLS connection by the listener after rustls has verified the chain (CA, validity,
//! client-auth EKU, CRLs); matched against `callers.yaml` per request by [`super::identify`].

use rustls_pki_types::CertificateDer;

/// Which part of the certificate named the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertIdentityKind {
    /// A `spiffe://` URI SAN.
    Spiffe,
    /// A DNS SAN.
    Dns,
    /// The subject common name.
    CommonName,
}

/// What the listener learned from a verified client certificate (all safe to log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// The identity string matched against `callers.yaml`.
    pub identity: String,
    /// Where it came from.
    pub kind: CertIdentityKind,
    /// Serial number, hex.
    pub serial: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Expiry, Unix seconds.
    pub not_after: i64,
}

impl PeerCert {
    /// Reads the identity of a client's end-entity certificate; `None` if it names nothing usable.
    pub fn from_der(der: &CertificateDer<'_>) -> Option<PeerCert> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut spiffe = None;
        let mut dns = None;
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::URI(u) if spiffe.is_none() && u.starts_with("spiffe://") => {
                        spiffe = Some((*u).to_owned())
                    }
                    GeneralName::DNSName(d) if dns.is_none() => dns = Some(d.to_ascii_lowercase()),
                    _ => {}
                }
            }
        }
        let cn = cert.subject().iter_common_name().next().and_then(|a| a.as_str().ok()).map(str::to_owned);
        let (identity, kind) = match (spiffe, dns, cn) {
            (Some(s), _, _) => (s, CertIdentityKind::Spiffe),
            (None, Some(d), _) => (d, CertIdentityKind::Dns),
            (None, None, Some(c)) => (c, CertIdentityKind::CommonName),
            (None, None, None) => return None,
        };
        Some(PeerCert {
            identity,
            kind,
            serial: cert.raw_serial_as_string().replace(':', ""),
            issuer: cert.issuer().to_string(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sans: &[rcgen::SanType], cn: Option<&str>) -> CertificateDer<'static> {
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = sans.to_vec();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn spiffe_then_dns_then_cn() {
        let uri = rcgen::SanType::URI("spiffe://corp.example/soar".try_into().unwrap());
        let dns = rcgen::SanType::DnsName("SOAR.corp.example".try_into().unwrap());
        let p = PeerCert::from_der(&cert(&[dns.clone(), uri], Some("soar-cn"))).unwrap();
        assert_eq!((p.identity.as_str(), p.kind), ("spiffe://corp.example/soar", CertIdentityKind::Spiffe));
        let p = PeerCert::from_der(&cert(&[dns], Some("soar-cn"))).unwrap();
        assert_eq!((p.identity.as_str(), p.kind), ("soar.corp.example", CertIdentityKind::Dns));
        let p = PeerCert::from_der(&cert(&[], Some("soar-cn"))).unwrap();
        assert_eq!((p.identity.as_str(), p.kind), ("soar-cn", CertIdentityKind::CommonName));
        assert!(PeerCert::from_der(&cert(&[], None)).is_none());
    }
}
