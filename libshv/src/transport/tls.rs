//! TLS for `ssl://` URLs (rustls with the ring provider). Certificates and keys are
//! PEM files named by the URL options `ca`, `cert` and `key`; `verify` says whether the
//! peer's certificate is checked (clients: the server's, on by default; a broker: the
//! clients', off by default — with it on, a client without a certificate the `ca` signed
//! is refused).

use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
};

use super::stream::BoxStream;

/// Described by the URL (`url` is below the transports: it names what to open).
pub use crate::url::TlsOptions;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Pem(String, String),
    #[error("{0}")]
    Config(String),
    #[error("a TLS listener needs `cert` and `key` (PEM files)")]
    NoServerCert,
    #[error("`verify=true` on a listener needs `ca`, the CA that signs client certificates")]
    NoClientCa,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem(path.to_string(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(
            path.to_string(),
            "no certificate in it".into(),
        ));
    }
    Ok(certs)
}

fn key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem(path.to_string(), e.to_string()))
}

fn roots(ca: &str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(ca)? {
        store
            .add(c)
            .map_err(|e| TlsError::Pem(ca.to_string(), e.to_string()))?;
    }
    Ok(store)
}

fn config_err(e: rustls::Error) -> TlsError {
    TlsError::Config(e.to_string())
}

/// The client side: trusts `ca` (else the system's roots), presents `cert`/`key` if
/// given, checks the server unless `verify=false`.
pub fn client_config(o: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?;
    let builder = if o.verify == Some(false) {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        let store = match &o.ca {
            Some(ca) => roots(ca)?,
            None => {
                let mut store = RootCertStore::empty();
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = store.add(c);
                }
                store
            }
        };
        builder.with_root_certificates(store)
    };
    let config = match (&o.cert, &o.key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(certs(c)?, key(k)?)
            .map_err(config_err)?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The broker side: presents `cert`/`key`; with `verify=true` requires client
/// certificates signed by `ca`.
pub fn server_config(o: &TlsOptions) -> Result<Arc<ServerConfig>, TlsError> {
    let (Some(cert), Some(k)) = (&o.cert, &o.key) else {
        return Err(TlsError::NoServerCert);
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?;
    let builder = if o.verify == Some(true) {
        let ca = o.ca.as_deref().ok_or(TlsError::NoClientCa)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(certs(cert)?, key(k)?)
        .map_err(config_err)?;
    Ok(Arc::new(config))
}

/// The client side of the layer: TLS over `stream`, the server's certificate checked
/// against `host` as `o` says.
pub async fn connect(stream: BoxStream, host: &str, o: &TlsOptions) -> std::io::Result<BoxStream> {
    let config = client_config(o).map_err(std::io::Error::other)?;
    let name = server_name(host).map_err(std::io::Error::other)?;
    let s = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await?;
    Ok(Box::new(s))
}

/// The server side of the layer: the handshake with a client, by a listener's
/// [`server_config`].
pub async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: BoxStream,
) -> std::io::Result<BoxStream> {
    let s = acceptor
        .accept(stream)
        .await
        .map_err(|e| std::io::Error::other(format!("TLS handshake failed: {e}")))?;
    Ok(Box::new(s))
}

/// The name a client checks the server's certificate against.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string())
        .map_err(|e| TlsError::Config(format!("invalid TLS server name '{host}': {e}")))
}

/// `verify=false`: any server certificate is accepted (signatures are still checked,
/// so the connection is encrypted, but not authenticated — for tests and closed labs).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
