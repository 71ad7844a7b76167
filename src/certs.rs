//! `interlock certs dev`: a development PKI (CA, localhost server certificate, client
//! certificates for named callers), so TLS and mTLS can be tried end to end without a real PKI.
//!
//! The same [`DevCa`] issues the certificates of the tests (including expired and not-yet-valid
//! ones). Real deployments bring their own CA: see `docs/identity.md`.

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject as _;
use time::OffsetDateTime;

/// Trust domain of the SPIFFE ids in development client certificates.
pub const DEV_TRUST_DOMAIN: &str = "interlock.dev";

/// A certificate and its key, both PEM.
#[derive(Clone)]
pub struct Issued {
    /// Certificate (PEM).
    pub cert_pem: String,
    /// Private key (PEM, PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Issued { .. }")
    }
}

/// A development certificate authority.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate and key.
    pub ca: Issued,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCa { .. }")
    }
}

/// Validity of an issued certificate, relative to now.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From one hour ago for this many days.
    Days(u32),
    /// Expired an hour ago.
    Expired,
    /// Valid only from tomorrow.
    NotYetValid,
}

impl Validity {
    fn apply(self, p: &mut CertificateParams) {
        let now = OffsetDateTime::now_utc();
        let hour = Duration::from_secs(3600);
        let day = Duration::from_secs(86_400);
        match self {
            Validity::Days(d) => {
                p.not_before = now - hour;
                p.not_after = now + day * d;
            }
            Validity::Expired => {
                p.not_before = now - day * 30;
                p.not_after = now - hour;
            }
            Validity::NotYetValid => {
                p.not_before = now + day;
                p.not_after = now + day * 30;
            }
        }
    }
}

fn err(e: rcgen::Error) -> String {
    format!("certificate generation failed: {e}")
}

impl DevCa {
    /// A new CA named `name`, valid for ten years.
    pub fn new(name: &str) -> Result<DevCa, String> {
        let key = KeyPair::generate().map_err(err)?;
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        Validity::Days(3650).apply(&mut p);
        let cert = p.self_signed(&key).map_err(err)?;
        let ca = Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        Ok(DevCa { issuer: Issuer::new(p, key), ca })
    }

    fn issue(&self, mut p: CertificateParams, validity: Validity) -> Result<Issued, String> {
        let key = KeyPair::generate().map_err(err)?;
        validity.apply(&mut p);
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str], validity: Validity) -> Result<Issued, String> {
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).map_err(err)?;
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("localhost"));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(p, validity)
    }

    /// A client certificate for caller `name`: SPIFFE id `spiffe://interlock.dev/<name>`, CN `name`,
    /// EKU clientAuth (or serverAuth only when `client_eku` is false, to test EKU checks).
    pub fn client(&self, name: &str, validity: Validity, client_eku: bool) -> Result<Issued, String> {
        let mut p = CertificateParams::default();
        let uri = format!("spiffe://{DEV_TRUST_DOMAIN}/{name}");
        p.subject_alt_names =
            vec![SanType::URI(uri.try_into().map_err(|_| format!("`{name}` cannot be part of a URI"))?)];
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages =
            vec![if client_eku { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.issue(p, validity)
    }
}

impl DevCa {
    /// A CRL (PEM) revoking the given certificates (PEM), valid for a week.
    pub fn crl(&self, revoked_pems: &[&str]) -> Result<String, String> {
        use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
        use x509_parser::prelude::*;
        let now = OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::new();
        for pem in revoked_pems {
            let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| format!("unreadable certificate: {e}"))?;
            let (_, cert) = X509Certificate::from_der(&der).map_err(|e| format!("unparsable certificate: {e}"))?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(cert.raw_serial()),
                revocation_time: now - Duration::from_secs(60),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now - Duration::from_secs(60),
            next_update: now + Duration::from_secs(7 * 86_400),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).map_err(err)?.pem().map_err(err)
    }
}

/// Writes a development PKI into `out`: `ca.pem`, `ca.key`, `server.pem`, `server.key` (localhost,
/// 127.0.0.1, ::1) and `client-<name>.pem/.key` per caller. Returns the files written.
pub fn write_dev_pki(out: &Path, callers: &[String], days: u32) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create `{}`: {e}", out.display()))?;
    let ca = DevCa::new("Interlock development CA")?;
    let mut files = Vec::new();
    let mut write = |name: &str, text: &str, secret: bool| -> Result<(), String> {
        let p = out.join(name);
        std::fs::write(&p, text).map_err(|e| format!("cannot write `{}`: {e}", p.display()))?;
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
        files.push(p.display().to_string());
        Ok(())
    };
    write("ca.pem", &ca.ca.cert_pem, false)?;
    write("ca.key", &ca.ca.key_pem, true)?;
    let server = ca.server(&["localhost", "127.0.0.1", "::1"], Validity::Days(days))?;
    write("server.pem", &server.cert_pem, false)?;
    write("server.key", &server.key_pem, true)?;
    for c in callers {
        let client = ca.client(c, Validity::Days(days), true)?;
        write(&format!("client-{c}.pem"), &client.cert_pem, false)?;
        write(&format!("client-{c}.key"), &client.key_pem, true)?;
    }
    Ok(files)
}
