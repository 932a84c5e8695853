//! TLS for the receiver: the rustls config (TLS 1.3 and 1.2, ALPN h2 then http/1.1), a
//! self-signed certificate for a first run, the config that refuses every handshake while an
//! ACME certificate is awaited, and the process-wide crypto provider.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject as _};

use crate::config::Tls;

/// A certificate made at start for `server.tls = "self-signed"`: DER chain and PKCS#8 key.
/// Empty when the config names certificate files.
pub(crate) type SelfSigned = (Vec<CertificateDer<'static>>, Vec<u8>);

/// Installs rustls' ring provider as the process default (reqwest and async-nats take the
/// default); the receiver's own config names ring too, so the binary carries one provider only.
pub fn install_crypto_provider() {
    // An error means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A rustls config and the notAfter (Unix seconds) of the certificate it serves.
pub(crate) struct Served {
    pub(crate) config: Arc<rustls::ServerConfig>,
    pub(crate) not_after: i64,
}

/// Builds the rustls config for `tls`: TLS 1.3 and 1.2, ALPN h2 then http/1.1. For
/// [`Tls::SelfSigned`], `self_signed` is the certificate made at start (kept across reloads).
/// `None` for [`Tls::Acme`]: the certificate comes from the ACME task, not the config.
pub(crate) fn tls_config(tls: &Tls, self_signed: &SelfSigned) -> anyhow::Result<Option<Served>> {
    let (certs, key) = match tls {
        Tls::Acme(_) => return Ok(None),
        Tls::Files { cert, key } => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .with_context(|| {
                    format!(
                        "reading the certificate chain {} (server.tls_cert)",
                        cert.display()
                    )
                })?;
            anyhow::ensure!(
                !certs.is_empty(),
                "{} (server.tls_cert) holds no PEM certificate",
                cert.display()
            );
            let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
                format!("reading the private key {} (server.tls_key)", key.display())
            })?;
            (certs, key)
        }
        Tls::SelfSigned => (
            self_signed.0.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self_signed.1.clone())),
        ),
    };
    let leaf = certs.first().context("no certificate to serve")?;
    let not_after = not_after(leaf).with_context(|| match tls {
        Tls::Files { cert, .. } => format!(
            "reading the expiry of the first certificate in {} (server.tls_cert)",
            cert.display()
        ),
        _ => "reading the expiry of the self-signed certificate".to_owned(),
    })?;
    served(certs, key, not_after).map(Some)
}

/// The config serving `certs` (the leaf first) with `key`; `not_after` is the leaf's.
pub(crate) fn served(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    not_after: i64,
) -> anyhow::Result<Served> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and the private key do not make a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Served {
        config: Arc::new(config),
        not_after,
    })
}

/// A config with no certificate: every handshake fails (the client gets a TLS alert), so no
/// client is ever served a certificate it was not meant to see while the first ACME
/// certificate is awaited.
pub(crate) fn no_certificate_yet() -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCertificateYet));
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct NoCertificateYet;

impl rustls::server::ResolvesServerCert for NoCertificateYet {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
}

/// The notAfter of `cert` (the leaf: the first of the chain), in Unix seconds.
pub(crate) fn not_after(cert: &CertificateDer<'_>) -> anyhow::Result<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| anyhow::anyhow!("not a parsable X.509 certificate: {e}"))?;
    Ok(parsed.validity().not_after.timestamp())
}

/// A self-signed certificate for `localhost` and the listen address.
pub(crate) fn make_self_signed(listen: SocketAddr) -> anyhow::Result<SelfSigned> {
    let mut names = vec!["localhost".to_owned()];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    let made = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    Ok((
        vec![made.cert.der().clone()],
        made.signing_key.serialize_der(),
    ))
}
