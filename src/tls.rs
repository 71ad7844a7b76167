//! TLS material: reading PEM files, server configurations with SNI certificate selection and client
//! authentication for listeners, and client configurations (CA, client certificate, pins) for
//! upstreams.
//!
//! Called by the config compiler, which turns every failure into a located config error; the
//! listener and upstream modules receive ready `rustls` configurations. One crypto provider: ring.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime};

/// The crypto provider used everywhere.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file; an empty file is an error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = iter.collect();
    let certs = certs.map_err(|e| format!("`{}` has an unreadable certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` contains no PEM certificates", path.display()));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("cannot read a private key from `{}`: {e}", path.display()))
}

/// Reads the CRLs of PEM files.
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let iter = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let crls: Result<Vec<_>, _> = iter.collect();
    let crls = crls.map_err(|e| format!("`{}` has an unreadable CRL: {e}", path.display()))?;
    if crls.is_empty() {
        return Err(format!("`{}` contains no PEM CRLs", path.display()));
    }
    Ok(crls)
}

/// TLS versions from a config `min_version`.
pub fn versions(min_13: bool) -> &'static [&'static SupportedProtocolVersion] {
    static ONLY_13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static BOTH: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
    if min_13 {
        &ONLY_13
    } else {
        &BOTH
    }
}

/// DNS names (SAN) and validity of a certificate, for SNI and expiry warnings.
#[derive(Debug, Clone)]
pub struct CertFacts {
    /// DNS SANs, lower case.
    pub dns_names: Vec<String>,
    /// Not valid before (Unix seconds).
    pub not_before: i64,
    /// Not valid after (Unix seconds).
    pub not_after: i64,
}

/// Reads the facts of a DER certificate.
pub fn cert_facts(der: &CertificateDer<'_>) -> Result<CertFacts, String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("unparsable certificate: {e}"))?;
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                dns_names.push(d.to_ascii_lowercase());
            }
        }
    }
    let v = cert.validity();
    Ok(CertFacts { dns_names, not_before: v.not_before.timestamp(), not_after: v.not_after.timestamp() })
}

/// Picks the server certificate by SNI: exact name, then `*.` wildcard, then the default.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// `certs`: (names, key) in config order; the first is the default.
    pub fn new(certs: Vec<(Vec<String>, Arc<CertifiedKey>)>) -> Option<SniResolver> {
        let default = certs.first()?.1.clone();
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        for (names, key) in certs {
            for n in names {
                match n.strip_prefix("*.") {
                    Some(suffix) => wildcard.push((format!(".{suffix}"), key.clone())),
                    None => {
                        exact.entry(n).or_insert_with(|| key.clone());
                    }
                }
            }
        }
        Some(SniResolver { exact, wildcard, default })
    }

    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else { return self.default.clone() };
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        for (suffix, k) in &self.wildcard {
            // `*.corp.example` covers exactly one label.
            if let Some(label) = name.strip_suffix(suffix.as_str()) {
                if !label.is_empty() && !label.contains('.') {
                    return k.clone();
                }
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// How a listener treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Not requested.
    Off,
    /// Requested; a connection without one is anonymous.
    Optional,
    /// Required; the handshake fails without a valid one.
    Required,
}

/// Builds a listener's server configuration.
pub fn server_config(
    resolver: SniResolver,
    min_13: bool,
    client_auth: ClientAuth,
    client_roots: Option<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    alpn: Vec<Vec<u8>>,
) -> Result<rustls::ServerConfig, String> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(min_13))
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = match (client_auth, client_roots) {
        (ClientAuth::Off, _) => builder.with_no_client_auth(),
        (_, None) => return Err("`client_ca` is needed when `client_auth` is not `off`".to_owned()),
        (mode, Some(roots)) => {
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).with_crls(crls);
            if mode == ClientAuth::Optional {
                v = v.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(v.build().map_err(|e| format!("client certificate verifier: {e}"))?)
        }
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = alpn;
    // Stateless TLS 1.3 resumption tickets spare returning clients a full handshake.
    if let Ok(t) = rustls::crypto::ring::Ticketer::new() {
        cfg.ticketer = t;
    }
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
    Ok(cfg)
}

/// The SHA-256 pin of a certificate's SubjectPublicKeyInfo, as `sha256/<base64>`.
pub fn spki_pin(der: &CertificateDer<'_>) -> Result<String, String> {
    use base64::Engine as _;
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("unparsable certificate: {e}"))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    Ok(format!("sha256/{}", base64::engine::general_purpose::STANDARD.encode(digest.as_ref())))
}

/// The error a pin mismatch is reported with (found again when classifying upstream failures).
#[derive(Debug, thiserror::Error)]
#[error("the upstream's certificate key {got} matches none of the configured pins")]
pub struct PinMismatch {
    /// The pin of the certificate presented.
    pub got: String,
}

/// Normal WebPKI verification, then the SPKI pin check.
#[derive(Debug)]
pub struct PinnedVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    pins: Vec<String>,
}

impl PinnedVerifier {
    /// Wraps `inner` so that a verified certificate must also match one of `pins`.
    pub fn new(inner: Arc<dyn ServerCertVerifier>, pins: Vec<String>) -> PinnedVerifier {
        PinnedVerifier { inner, pins }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        let got = spki_pin(end_entity).map_err(rustls::Error::General)?;
        if self.pins.contains(&got) {
            Ok(ok)
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(
                PinMismatch { got },
            )))))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_for(name: &str) -> Arc<CertifiedKey> {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        Arc::new(CertifiedKey::from_der(vec![ck.cert.der().clone()], key, &provider()).unwrap())
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let (a, b, c) = (key_for("a.example"), key_for("b.example"), key_for("x.corp.example"));
        let r = SniResolver::new(vec![
            (vec!["a.example".into()], a.clone()),
            (vec!["b.example".into()], b.clone()),
            (vec!["*.corp.example".into()], c.clone()),
        ])
        .unwrap();
        assert!(Arc::ptr_eq(&r.pick(Some("B.example")), &b));
        assert!(Arc::ptr_eq(&r.pick(Some("x.corp.example")), &c));
        assert!(Arc::ptr_eq(&r.pick(Some("y.x.corp.example")), &a), "a wildcard covers one label");
        assert!(Arc::ptr_eq(&r.pick(Some("other")), &a));
        assert!(Arc::ptr_eq(&r.pick(None), &a));
    }

    #[test]
    fn pins_and_facts() {
        let ck = rcgen::generate_simple_self_signed(vec!["pin.example".to_owned()]).unwrap();
        let pin = spki_pin(ck.cert.der()).unwrap();
        assert!(pin.starts_with("sha256/") && pin.len() == 7 + 44, "{pin}");
        let facts = cert_facts(ck.cert.der()).unwrap();
        assert_eq!(facts.dns_names, vec!["pin.example"]);
        assert!(facts.not_after > facts.not_before);
    }
}
