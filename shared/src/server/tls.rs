//! TLS material for `server.tls.mode: manual | self`, and the rustls server configuration every
//! TLS mode serves with.
//!
//! pacer has one TLS stack: rustls on aws-lc-rs. Server configurations name that provider
//! explicitly; `crate::http_client::install_crypto_provider` makes it the process default for
//! the clients that look it up at run time.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Datelike, Duration, Utc};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tracing::{info, warn};

use super::x509::Validity;
use crate::config::KeyAlg;

/// How long an in-memory self-signed certificate is valid. It is regenerated at every start, so
/// this only needs to outlast one run; a year also stays inside the limits some clients put on
/// certificate lifetimes even for locally trusted roots.
const SELF_SIGNED_VALIDITY: Duration = Duration::days(365);

/// A certificate chain (leaf first) and its private key.
pub(crate) struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // Never empty: `parse_chain` refuses a PEM without a certificate and
        // `self_signed` makes a chain of one.
        #[allow(clippy::indexing_slicing)]
        &self.chain[0]
    }
}

/// The rustls server configuration for one certificate: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1
/// offered by ALPN.
pub(crate) fn server_config(identity: Identity) -> anyhow::Result<rustls::ServerConfig> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .context("configuring TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(identity.chain, identity.key)
            .context("the private key is unusable or does not fit the certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Loads `server.tls.cert` (a PEM chain, leaf first) and `server.tls.key` (a PEM private key in
/// PKCS#8, PKCS#1 or SEC1 form). Every error names the file it is about.
pub(crate) fn load_manual(cert_path: &Path, key_path: &Path) -> anyhow::Result<Identity> {
    let cert_pem = read(cert_path, "server.tls.cert")?;
    let chain = parse_chain(&cert_pem).with_context(|| {
        format!(
            "server.tls.cert {}: no usable certificate",
            cert_path.display()
        )
    })?;
    let key_pem = read(key_path, "server.tls.key")?;
    let key = parse_key(&key_pem).with_context(|| {
        format!(
            "server.tls.key {}: no usable private key",
            key_path.display()
        )
    })?;
    let identity = Identity { chain, key };

    let validity = Validity::of(identity.leaf())
        .with_context(|| format!("server.tls.cert {}", cert_path.display()))?;
    let fingerprint = fingerprint(identity.leaf());
    info!(
        cert = %cert_path.display(),
        %fingerprint,
        expires = %validity.not_after,
        "loaded the TLS certificate",
    );
    warn_if_expiring(&validity, cert_path);
    Ok(identity)
}

fn read(path: &Path, key: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{key}: cannot read {}", path.display()))
}

/// Every `CERTIFICATE` block of a PEM text, in order; at least one.
pub(crate) fn parse_chain(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| anyhow!("malformed PEM: {err}"))?;
    if chain.is_empty() {
        bail!("no CERTIFICATE block found");
    }
    Ok(chain)
}

/// The first private key of a PEM text.
pub(crate) fn parse_key(pem: &[u8]) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => {
            anyhow!("no PRIVATE KEY block found (PKCS#8, RSA or EC)")
        }
        other => anyhow!("malformed PEM: {other}"),
    })
}

/// An operator-supplied certificate gets the warning an ACME one would get a renewal for.
fn warn_if_expiring(validity: &Validity, path: &Path) {
    let (now, expires) = (Utc::now(), validity.not_after);
    if expires <= now {
        warn!(
            cert = %path.display(),
            %expires,
            "the TLS certificate has expired; clients refuse it",
        );
    } else if validity.renew_at() <= now {
        warn!(cert = %path.display(), %expires, "the TLS certificate expires soon; replace it");
    }
}

/// A fresh in-memory self-signed certificate for `server.tls.mode: self`, naming `fqdn` (when
/// set), `localhost`, `127.0.0.1` and `::1`, with an RSA-2048 or Ed25519 key. Its SHA-256
/// fingerprint is logged so an operator can pin it.
pub(crate) fn self_signed(fqdn: Option<&str>, alg: KeyAlg) -> anyhow::Result<Identity> {
    let mut names: Vec<String> = Vec::new();
    for name in fqdn.into_iter().chain(["localhost", "127.0.0.1", "::1"]) {
        if !names.iter().any(|known| known.eq_ignore_ascii_case(name)) {
            names.push(name.to_owned());
        }
    }

    let key = match alg {
        KeyAlg::Rsa => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048),
        KeyAlg::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
    }
    .context("generating the self-signed certificate's key")?;

    let mut params = CertificateParams::new(names.clone())
        .with_context(|| format!("server.tls.fqdn {fqdn:?} is not a valid host name"))?;
    let mut subject = DistinguishedName::new();
    subject.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    subject.push(DnType::OrganizationName, "pacer (self-signed)");
    params.distinguished_name = subject;
    let now = Utc::now();
    let day = |at: DateTime<Utc>| {
        // Month and day always fit in a u8.
        rcgen::date_time_ymd(at.year(), at.month() as u8, at.day() as u8)
    };
    // A day of slack before now covers clients whose clocks run a little behind.
    params.not_before = day(now - Duration::days(1));
    params.not_after = day(now + SELF_SIGNED_VALIDITY);
    let cert = params
        .self_signed(&key)
        .context("signing the self-signed certificate")?;

    let identity = Identity {
        chain: vec![cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    };
    info!(
        sans = ?names,
        alg = ?alg,
        fingerprint_sha256 = %fingerprint(identity.leaf()),
        "generated an in-memory self-signed TLS certificate; pin this fingerprint to trust it",
    );
    Ok(identity)
}

/// A certificate's SHA-256 fingerprint as `AB:CD:…`, the form `openssl x509 -fingerprint
/// -sha256` and browsers show.
pub(crate) fn fingerprint(cert: &CertificateDer<'_>) -> String {
    // rustls exposes aws-lc-rs's SHA-256 through its cipher suites; borrowing it from there
    // avoids a second hash implementation.
    // A TLS 1.3 suite constant: `tls13()` is always `Some`.
    #[allow(clippy::expect_used)]
    let sha256 = aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite")
        .common
        .hash_provider;
    let digest = sha256.hash(cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
