//! TLS for the HTTP probe: which certificates are trusted, and a verifier wrapper that keeps
//! the chain the server sent so its earliest `notAfter` can be exported even when
//! verification fails (an expired certificate is exactly when the date matters).
//!
//! A fresh `ClientConfig` is made per connection with session resumption off: every probe
//! then performs a full handshake, so the TLS phase measures the same thing each time and the
//! server always presents its certificates (a resumed TLS 1.3 session would not).

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::options::TlsOptions;
use crate::probe::shape::BuildError;

/// The chain a server presented, leaf first, filled by [`Capture`] during the handshake.
pub type Chain = Arc<Mutex<Vec<CertificateDer<'static>>>>;

/// What a probe needs to open TLS connections: the provider and the verifier, built once.
#[derive(Debug)]
pub struct Tls {
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
}

impl Tls {
    /// Builds the trust settings from the `tls:` options: `ca_file` replaces the built-in
    /// Mozilla roots (webpki-roots); `insecure_skip_verify` accepts any certificate.
    pub fn new(options: &TlsOptions) -> Result<Self, BuildError> {
        // The ring provider, chosen explicitly, so the probe does not depend on a process-wide
        // default having been installed first.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = if options.insecure_skip_verify {
            Arc::new(AcceptAny {
                provider: provider.clone(),
            })
        } else {
            let mut roots = RootCertStore::empty();
            match &options.ca_file {
                Some(ca) => {
                    for c in &ca.certs {
                        roots.add(c.clone()).map_err(|e| {
                            BuildError(format!("ca_file `{}`: {e}", ca.path.display()))
                        })?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| BuildError(format!("tls verifier: {e}")))?
        };
        Ok(Tls { provider, verifier })
    }

    /// A client config for one connection whose verifier records the chain into `chain`.
    pub fn client_config(&self, chain: Chain) -> Result<ClientConfig, rustls::Error> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Capture {
                inner: self.verifier.clone(),
                chain,
            }))
            .with_no_client_auth();
        // The probe speaks HTTP/1.1 only (one measured code path); say so in ALPN.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        Ok(config)
    }
}

/// The earliest `notAfter` (Unix seconds) among `chain`; certificates that do not parse are
/// skipped.
pub fn earliest_not_after(chain: &[CertificateDer<'_>]) -> Option<i64> {
    chain
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .min()
}

/// Records the presented chain, then lets the real verifier decide.
#[derive(Debug)]
struct Capture {
    inner: Arc<dyn ServerCertVerifier>,
    chain: Chain,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        {
            let mut chain = self.chain.lock().unwrap_or_else(|e| e.into_inner());
            chain.clear();
            chain.push(end_entity.clone().into_owned());
            chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
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

/// `insecure_skip_verify`: any certificate is accepted, but the handshake signatures are still
/// checked so the connection is at least with the holder of the presented key.
#[derive(Debug)]
struct AcceptAny {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
