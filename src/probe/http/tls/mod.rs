//! TLS for the HTTP probe: which certificates are trusted, the verifier that decides, and
//! handshake failures told as sentences.
//!
//! Trust comes from `tls.ca_file` when given, else from the machine's trust store (where
//! OpenSSL and curl look: `SSL_CERT_FILE`, `SSL_CERT_DIR`, `/etc/ssl/certs`, ...), read once
//! per process; the built-in Mozilla roots (webpki-roots) are used only when that store is
//! empty. A certificate in `ca_file` is trusted when the server presents exactly it, as curl
//! and blackbox_exporter do: `openssl req -x509` makes self-signed certificates that say
//! CA:TRUE, which webpki refuses as a server certificate. Its dates and names are still
//! checked, and a CA chain in `ca_file` goes through the normal webpki path.
//!
//! The verifier also keeps the chain the server sent, so its earliest `notAfter` can be
//! exported even when verification fails (an expired certificate is exactly when the date
//! matters), and so a failure can name what was wrong with it.
//!
//! A fresh `ClientConfig` is made per connection with session resumption off: every probe
//! then performs a full handshake, so the TLS phase measures the same thing each time and the
//! server always presents its certificates (a resumed TLS 1.3 session would not).

use std::sync::{Arc, OnceLock};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use super::options::TlsOptions;
use crate::probe::shape::BuildError;

mod explain;
mod verify;

pub use explain::TlsError;
use verify::{AcceptAny, Capture, Verifier};
pub use verify::{Chain, earliest_not_after};

/// ALPN protocol name of HTTP/2 (RFC 9113 3.2).
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol name of HTTP/1.1 (RFC 7301 6).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// What a probe needs to open TLS connections: the provider and the verifier, built once.
#[derive(Debug)]
pub struct Tls {
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    store: Store,
}

/// Where trust came from, for failure messages.
#[derive(Debug, Clone)]
enum Store {
    CaFile,
    System,
    Insecure,
}

impl Store {
    fn name(&self) -> &'static str {
        match self {
            Store::CaFile => "ca_file",
            Store::System | Store::Insecure => "the system trust store",
        }
    }
}

impl Tls {
    /// Builds the trust settings from the `tls:` options: `ca_file` replaces the system trust
    /// store; `insecure_skip_verify` accepts any certificate.
    pub fn new(options: &TlsOptions) -> Result<Self, BuildError> {
        // The ring provider, chosen explicitly, so the probe does not depend on a process-wide
        // default having been installed first.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        if options.insecure_skip_verify {
            return Ok(Tls {
                verifier: Arc::new(AcceptAny {
                    provider: provider.clone(),
                }),
                provider,
                store: Store::Insecure,
            });
        }
        let (roots, exact, store) = match &options.ca_file {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in &ca.certs {
                    roots
                        .add(c.clone())
                        .map_err(|e| BuildError(format!("ca_file `{}`: {e}", ca.path.display())))?;
                }
                (Arc::new(roots), ca.certs.clone().into(), Store::CaFile)
            }
            None => {
                let system = system_store();
                (system.roots.clone(), system.certs.clone(), Store::System)
            }
        };
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| BuildError(format!("tls verifier: {e}")))?;
        Ok(Tls {
            verifier: Arc::new(Verifier { webpki, exact }),
            provider,
            store,
        })
    }

    /// A client config for one connection whose verifier records the chain into `chain`,
    /// offering `alpn` (most preferred first).
    pub fn client_config(
        &self,
        chain: Chain,
        alpn: &[&[u8]],
    ) -> Result<ClientConfig, rustls::Error> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Capture {
                inner: self.verifier.clone(),
                chain,
            }))
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = Resumption::disabled();
        Ok(config)
    }

    /// Says in words why a handshake failed with `error` (tokio-rustls wraps rustls errors
    /// in I/O errors); the other arguments as for [`Tls::explain`].
    pub fn explain_io(
        &self,
        error: &std::io::Error,
        presented: &[CertificateDer<'_>],
        name: &str,
        alpn: &[&[u8]],
    ) -> TlsError {
        explain::explain_io(error, presented, name, alpn, self.store.name())
    }

    /// Says in words why a handshake failed: `error` is what rustls reported, `presented` the
    /// chain the server sent (possibly empty), `name` the name it was checked against and
    /// `alpn` what was offered.
    pub fn explain(
        &self,
        error: &rustls::Error,
        presented: &[CertificateDer<'_>],
        name: &str,
        alpn: &[&[u8]],
    ) -> TlsError {
        explain::explain(error, presented, name, alpn, self.store.name())
    }
}

/// The machine's trust store: the roots for webpki, and the certificates themselves for the
/// exact match (a self-signed certificate installed there is trusted as curl trusts it).
struct SystemStore {
    roots: Arc<RootCertStore>,
    certs: Arc<[CertificateDer<'static>]>,
}

/// The trust store of the machine, loaded once per process.
fn system_store() -> &'static SystemStore {
    static STORE: OnceLock<SystemStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            tracing::warn!(error = %e, "tls trust store: a part could not be read");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(loaded.certs.iter().cloned());
        let searched = system_store_paths();
        if roots.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            tracing::info!(
                searched = %searched,
                store = "webpki-roots (built in)",
                roots = roots.len(),
                "tls trust store: the system store has no certificate, using the built-in Mozilla roots"
            );
        } else {
            tracing::info!(
                store = %searched,
                roots = added,
                ignored,
                "tls trust store loaded"
            );
        }
        SystemStore {
            roots: Arc::new(roots),
            certs: loaded.certs.into(),
        }
    })
}

/// Where the system store is read from, as rustls-native-certs does on Unix: the
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` variables when set, else the OpenSSL locations probed.
fn system_store_paths() -> String {
    let file = std::env::var_os(openssl_probe::ENV_CERT_FILE);
    let dir = std::env::var_os(openssl_probe::ENV_CERT_DIR);
    let mut parts = Vec::new();
    if file.is_some() || dir.is_some() {
        if let Some(f) = file {
            parts.push(format!("SSL_CERT_FILE={}", f.to_string_lossy()));
        }
        if let Some(d) = dir {
            parts.push(format!("SSL_CERT_DIR={}", d.to_string_lossy()));
        }
    } else {
        let probed = openssl_probe::probe();
        parts.extend(probed.cert_file.map(|f| f.display().to_string()));
        parts.extend(probed.cert_dir.iter().map(|d| d.display().to_string()));
    }
    if parts.is_empty() {
        "no OpenSSL location found".into()
    } else {
        parts.join(", ")
    }
}
