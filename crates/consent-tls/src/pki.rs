//! A development PKI made with rcgen: one CA, the platform's server certificate, an
//! operator certificate, a certificate per partner (usable as client and as server for the
//! partner's own API) and an empty CRL. `platform-svc dev-pki` writes it to a directory;
//! tests use the same code to make valid, expired, revoked and foreign certificates.

use crate::principal::{operator_spiffe_id, partner_spiffe_id};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// A PKI failure.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// Certificate (PEM).
    pub cert_pem: String,
    /// Private key (PEM, PKCS#8).
    pub key_pem: String,
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// Common name.
    pub common_name: String,
    /// DNS names and IP addresses the certificate serves.
    pub dns_names: Vec<String>,
    /// URI SAN (a SPIFFE id), if any.
    pub uri: Option<String>,
    /// Serial number (revocation lists name it).
    pub serial: u64,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl LeafSpec {
    /// A certificate valid from an hour ago for `days`.
    pub fn new(common_name: &str, serial: u64, days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: common_name.to_string(),
            dns_names: Vec::new(),
            uri: None,
            serial,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }
}

/// A certificate authority that issues leaves and CRLs.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new self-signed CA valid for ten years.
    pub fn new(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok(CertificateAuthority {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a leaf usable for both TLS server and client authentication.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCertificate, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name.as_str());
        for name in &spec.dns_names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.as_str().try_into()?),
            });
        }
        if let Some(uri) = &spec.uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        params.serial_number = Some(SerialNumber::from(spec.serial));
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A CRL revoking `serials`, valid from an hour ago until `next_update`.
    pub fn crl(&self, serials: &[u64], next_update: OffsetDateTime) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update,
            crl_number: SerialNumber::from(now.unix_timestamp().unsigned_abs()),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// The development PKI's contents.
#[derive(Debug)]
pub struct DevPki {
    /// The CA.
    pub ca: CertificateAuthority,
    /// The platform's server certificate.
    pub platform: IssuedCertificate,
    /// The operator's client certificate.
    pub operator: IssuedCertificate,
    /// Each partner's certificate, by id.
    pub partners: Vec<(String, IssuedCertificate)>,
    /// An empty CRL, valid for a year.
    pub crl_pem: String,
}

/// Host names the platform certificate serves.
pub const PLATFORM_NAMES: &[&str] = &["localhost", "127.0.0.1", "platform"];

impl DevPki {
    /// Makes a CA, the platform certificate, operator `operator` and the given partners.
    pub fn generate(
        trust_domain: &str,
        operator: &str,
        partners: &[String],
    ) -> Result<Self, PkiError> {
        let ca = CertificateAuthority::new(&format!("{trust_domain} development CA"))?;
        let mut serial = 1;
        let mut next_serial = || {
            serial += 1;
            serial
        };
        let mut platform_spec = LeafSpec::new("platform", next_serial(), 365);
        platform_spec.dns_names = PLATFORM_NAMES.iter().map(|s| s.to_string()).collect();
        let platform = ca.issue(&platform_spec)?;
        let mut operator_spec = LeafSpec::new(operator, next_serial(), 365);
        operator_spec.uri = Some(operator_spiffe_id(trust_domain, operator));
        let operator = ca.issue(&operator_spec)?;
        let mut issued = Vec::new();
        for id in partners {
            let mut spec = LeafSpec::new(id, next_serial(), 365);
            spec.uri = Some(partner_spiffe_id(trust_domain, id));
            spec.dns_names = vec![
                "localhost".into(),
                "127.0.0.1".into(),
                id.clone(),
                format!("partner-{id}"),
            ];
            issued.push((id.clone(), ca.issue(&spec)?));
        }
        let crl_pem = ca.crl(&[], OffsetDateTime::now_utc() + Duration::days(365))?;
        Ok(DevPki {
            ca,
            platform,
            operator,
            partners: issued,
            crl_pem,
        })
    }

    /// Writes `ca.pem`, `crl.pem`, `platform.pem`/`platform-key.pem`,
    /// `operator.pem`/`operator-key.pem` and `partner-<id>.pem`/`partner-<id>-key.pem`.
    pub fn write_to(&self, dir: &Path) -> Result<(), PkiError> {
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(|source| PkiError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        write("ca.pem", self.ca.cert_pem())?;
        write("crl.pem", &self.crl_pem)?;
        write("platform.pem", &self.platform.cert_pem)?;
        write("platform-key.pem", &self.platform.key_pem)?;
        write("operator.pem", &self.operator.cert_pem)?;
        write("operator-key.pem", &self.operator.key_pem)?;
        for (id, cert) in &self.partners {
            write(&format!("partner-{id}.pem"), &cert.cert_pem)?;
            write(&format!("partner-{id}-key.pem"), &cert.key_pem)?;
        }
        Ok(())
    }
}
