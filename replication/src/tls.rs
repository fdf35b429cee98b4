//! TLS for the replication link (optional): the primary presents a certificate, the
//! standby checks it against the certificates it is told to trust. rustls with the
//! `ring` provider, as the HTTP server uses.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;

use crate::{Error, Result};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn io(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{what} {}: {e}", path.display()))
}

fn certificates(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let file = std::fs::File::open(path).map_err(|e| io("opening", path, e))?;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| io("reading", path, e))?;
    if certs.is_empty() {
        return Err(io("reading", path, "no certificate in it"));
    }
    Ok(certs)
}

/// A server configuration from a PEM certificate chain and private key (the HTTP
/// server adds its ALPN protocols to it).
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig> {
    let certs = certificates(cert)?;
    let file = std::fs::File::open(key).map_err(|e| io("opening", key, e))?;
    let key_der = rustls_pemfile::private_key(&mut std::io::BufReader::new(file))
        .map_err(|e| io("reading", key, e))?
        .ok_or_else(|| io("reading", key, "no private key in it"))?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Io(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| Error::Io(format!("TLS certificate {}: {e}", cert.display())))
}

/// The primary's side: accepts standbys over TLS with a certificate and key.
#[derive(Clone)]
pub struct Acceptor(pub(crate) tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor")
    }
}

impl Acceptor {
    /// From a PEM certificate chain and private key.
    pub fn new(cert: &Path, key: &Path) -> Result<Acceptor> {
        Ok(Acceptor(tokio_rustls::TlsAcceptor::from(Arc::new(server_config(cert, key)?))))
    }
}

/// The standby's side: TLS to a primary whose certificate is signed by (or is) one
/// of the certificates in the PEM file `trusted`, presented for `server_name`.
#[derive(Clone)]
pub struct Connector {
    pub(crate) connector: tokio_rustls::TlsConnector,
    pub(crate) server_name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("server_name", &self.server_name).finish()
    }
}

/// A client configuration trusting the certificates of a PEM bundle (such as the
/// system's CA bundle); the ones rustls cannot parse are skipped.
pub fn client_config(trusted: &Path) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _skipped) = roots.add_parsable_certificates(certificates(trusted)?);
    if added == 0 {
        return Err(io("trusting", trusted, "no usable certificate in it"));
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Io(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Connector {
    /// Trusts the certificates in `trusted` for the name `server_name`.
    pub fn new(trusted: &Path, server_name: &str) -> Result<Connector> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(trusted)? {
            roots.add(cert).map_err(|e| io("trusting", trusted, e))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Io(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| Error::Io(format!("TLS server name {server_name:?}: {e}")))?;
        Ok(Connector { connector: tokio_rustls::TlsConnector::from(Arc::new(config)), server_name })
    }
}
