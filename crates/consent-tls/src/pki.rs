//! A development PKI made with rcgen: two CAs, so that no certificate issued for a client
//! can pass as the platform's server certificate. The platform CA issues the platform's
//! server certificate and nothing else (server authentication only); partners and anyone
//! calling the platform trust it alone for the platform. The client CA issues the
//! operator's certificate (client authentication only), a certificate per partner (client
//! authentication, and server authentication for the partner's own API) and the CRL.
//! Private keys are written `0600`. `platform-svc dev-pki` writes it to a directory; tests
//! use the same code to make valid, expired, revoked and foreign certificates.

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
    /// Serial number (revocation lists name it).
    pub serial: u64,
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
    /// What the certificate may authenticate.
    pub usage: Usage,
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
            usage: Usage::ClientAndServer,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }
}

/// The TLS roles a leaf certificate may play (its extended key usages, which rustls
/// enforces on both sides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server only.
    Server,
    /// A TLS client only.
    Client,
    /// Both: a partner's certificate, which also serves the partner's own API.
    ClientAndServer,
}

impl Usage {
    fn purposes(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ClientAndServer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
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

    /// Issues a leaf for the usage `spec` names.
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
        params.extended_key_usages = spec.usage.purposes();
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: spec.serial,
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
    /// The client CA: operator and partner certificates, and the CRL.
    pub ca: CertificateAuthority,
    /// The platform CA: the platform's server certificate only.
    pub platform_ca: CertificateAuthority,
    /// The platform's server certificate.
    pub platform: IssuedCertificate,
    /// The operator's client certificate.
    pub operator: IssuedCertificate,
    /// Each partner's certificate, by id.
    pub partners: Vec<(String, IssuedCertificate)>,
    /// An empty CRL, valid for a year.
    pub crl_pem: String,
}

/// What a partner's certificate holds: its SPIFFE id, and the names its own API serves
/// (`localhost`, `127.0.0.1`, `<id>` and `partner-<id>`), valid for a year.
pub fn partner_leaf(trust_domain: &str, id: &str, serial: u64) -> LeafSpec {
    let mut spec = LeafSpec::new(id, serial, 365);
    spec.uri = Some(partner_spiffe_id(trust_domain, id));
    spec.dns_names = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        id.to_string(),
        format!("partner-{id}"),
    ];
    spec
}

impl DevPki {
    /// The certificate of partner `id`, if it has one.
    pub fn partner(&self, id: &str) -> Option<&IssuedCertificate> {
        self.partners
            .iter()
            .find(|(partner, _)| partner == id)
            .map(|(_, cert)| cert)
    }
}

/// Host names the platform certificate serves.
pub const PLATFORM_NAMES: &[&str] = &["localhost", "127.0.0.1", "platform"];

impl DevPki {
    /// Makes both CAs, the platform certificate, operator `operator` and the given partners.
    pub fn generate(
        trust_domain: &str,
        operator: &str,
        partners: &[String],
    ) -> Result<Self, PkiError> {
        let ca = CertificateAuthority::new(&format!("{trust_domain} development client CA"))?;
        let platform_ca =
            CertificateAuthority::new(&format!("{trust_domain} development platform CA"))?;
        let mut serial = 1;
        let mut next_serial = || {
            serial += 1;
            serial
        };
        let mut platform_spec = LeafSpec::new("platform", next_serial(), 365);
        platform_spec.dns_names = PLATFORM_NAMES.iter().map(|s| s.to_string()).collect();
        platform_spec.usage = Usage::Server;
        let platform = platform_ca.issue(&platform_spec)?;
        let mut operator_spec = LeafSpec::new(operator, next_serial(), 365);
        operator_spec.uri = Some(operator_spiffe_id(trust_domain, operator));
        operator_spec.usage = Usage::Client;
        let operator = ca.issue(&operator_spec)?;
        let mut issued = Vec::new();
        for id in partners {
            let spec = partner_leaf(trust_domain, id, next_serial());
            issued.push((id.clone(), ca.issue(&spec)?));
        }
        let crl_pem = ca.crl(&[], OffsetDateTime::now_utc() + Duration::days(365))?;
        Ok(DevPki {
            ca,
            platform_ca,
            platform,
            operator,
            partners: issued,
            crl_pem,
        })
    }

    /// Writes `ca.pem` (the client CA), `platform-ca.pem`, `crl.pem`,
    /// `platform.pem`/`platform-key.pem`, `operator.pem`/`operator-key.pem` and
    /// `partner-<id>.pem`/`partner-<id>-key.pem`. Keys are readable by their owner only;
    /// with `key_owner`, that owner is the given user and group (as containers that run as
    /// their own user need, which takes the right to change owners).
    pub fn write_to(&self, dir: &Path, key_owner: Option<(u32, u32)>) -> Result<(), PkiError> {
        let failed = |path: &Path| {
            let path = path.display().to_string();
            move |source| PkiError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(failed(dir))?;
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(failed(&path))
        };
        let write_key = |name: &str, contents: &str| {
            let path = dir.join(name);
            write_private(&path, contents, key_owner).map_err(failed(&path))
        };
        write("ca.pem", self.ca.cert_pem())?;
        write("platform-ca.pem", self.platform_ca.cert_pem())?;
        write("crl.pem", &self.crl_pem)?;
        write("platform.pem", &self.platform.cert_pem)?;
        write_key("platform-key.pem", &self.platform.key_pem)?;
        write("operator.pem", &self.operator.cert_pem)?;
        write_key("operator-key.pem", &self.operator.key_pem)?;
        for (id, cert) in &self.partners {
            write(&format!("partner-{id}.pem"), &cert.cert_pem)?;
            write_key(&format!("partner-{id}-key.pem"), &cert.key_pem)?;
        }
        Ok(())
    }
}

/// Writes `contents` to a new file at `path` that only its owner may read (`0600` from
/// the moment it exists), owned by `owner` (user, group) if given: for private keys and
/// other secrets.
pub fn write_private(
    path: &Path,
    contents: &str,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // Remove an earlier file first: `mode` applies only to a file being created.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn usages(pem: &str) -> (bool, bool) {
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
            .unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        (eku.server_auth, eku.client_auth)
    }

    #[test]
    fn each_certificate_may_play_only_its_roles_and_keys_are_private() {
        let pki = DevPki::generate("consent.test", "ops", &["music".into()]).unwrap();
        assert_eq!(usages(&pki.platform.cert_pem), (true, false));
        assert_eq!(usages(&pki.operator.cert_pem), (false, true));
        assert_eq!(usages(&pki.partners[0].1.cert_pem), (true, true));
        assert_ne!(pki.ca.cert_pem(), pki.platform_ca.cert_pem());

        let dir = tempfile::tempdir().unwrap();
        pki.write_to(dir.path(), None).unwrap();
        pki.write_to(dir.path(), None).unwrap();
        for key in [
            "platform-key.pem",
            "operator-key.pem",
            "partner-music-key.pem",
        ] {
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }
}
