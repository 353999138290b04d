//! A locally made certificate for the gateway's HTTPS: a CA of its own and a serving
//! certificate it signed, as PEM files a client trusts with `--ca-file` (rustls takes a CA as
//! a trust anchor, not a self-signed serving certificate).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files of a locally made serving certificate.
#[derive(Debug, Clone)]
pub struct LocalCertificate {
    /// The CA to trust (PEM).
    pub ca: PathBuf,
    /// The serving certificate (PEM) for the names asked.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("making a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("writing {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// Makes a CA and a certificate for `names` (host names or IP addresses), written into `dir`
/// as `ca.pem`, `cert.pem` and `key.pem`.
pub fn local_certificate(dir: &Path, names: &[&str]) -> Result<LocalCertificate, TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "liveclass-test-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut serving =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    serving.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("localhost"),
    );
    serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = serving.signed_by(&key, &issuer)?;

    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem)
            .map(|()| path.clone())
            .map_err(|e| TlsError::Write(path, e))
    };
    Ok(LocalCertificate {
        ca: write("ca.pem", ca_cert.pem())?,
        cert: write("cert.pem", cert.pem())?,
        key: write("key.pem", key.serialize_pem())?,
    })
}
