//! Basic authentication and TLS of `--web.config.file`.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use hyper::header::HeaderValue;
use tokio_rustls::TlsAcceptor;

use crate::config::web_config::{ClientAuth, TlsServerConfig};

use super::error::WebError;

/// Basic authentication against bcrypt hashes, with a small cache of verified credentials:
/// bcrypt is deliberately slow (tens of ms), and Prometheus sends the same credentials on
/// every scrape.
#[derive(Debug)]
pub struct BasicAuth {
    pub(super) users: BTreeMap<String, String>,
    pub(super) verified: Mutex<HashSet<u64>>,
    pub(super) hasher: RandomState,
    /// A hash at the users' cost, checked for unknown names.
    pub(super) dummy: String,
}

/// Verified credentials remembered at most; beyond it the cache starts again.
pub(super) const AUTH_CACHE: usize = 1024;

impl BasicAuth {
    /// Users mapped to bcrypt hashes.
    pub fn new(users: BTreeMap<String, String>) -> Self {
        let cost = users
            .values()
            .filter_map(|h| h.split('$').nth(2)?.parse::<u32>().ok())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let dummy = bcrypt::hash("netmon-unknown-user", cost).unwrap_or_default();
        BasicAuth {
            dummy,
            users,
            verified: Mutex::new(HashSet::new()),
            hasher: RandomState::new(),
        }
    }

    /// Whether the request's `Authorization` header holds a valid user and password.
    pub(super) fn allows(&self, header: Option<&HeaderValue>) -> bool {
        let Some(encoded) = header
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return false;
        };
        let Some(hash) = self.users.get(user) else {
            // Spend the same time as for a known user, so names cannot be probed by timing.
            let _ = bcrypt::verify(password, &self.dummy);
            return false;
        };
        let key = self.hasher.hash_one((user, password, hash));
        if self.verified.lock().is_ok_and(|v| v.contains(&key)) {
            return true;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if ok {
            if let Ok(mut v) = self.verified.lock() {
                if v.len() >= AUTH_CACHE {
                    v.clear();
                }
                v.insert(key);
            }
        }
        ok
    }
}

/// Builds the TLS acceptor for `tls_server_config`.
pub fn tls_acceptor(cfg: &TlsServerConfig) -> Result<TlsAcceptor, WebError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |what: String| WebError::Tls(what);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            tls_err(format!(
                "cannot read cert_file {}: {e}",
                cfg.cert_file.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(tls_err(format!(
            "cert_file {} holds no PEM certificate",
            cfg.cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| {
        tls_err(format!(
            "cannot read key_file {}: {e}",
            cfg.key_file.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if cfg.tls13_only() {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12, &rustls::version::TLS13]
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| tls_err(e.to_string()))?;
    let builder = match (cfg.client_auth(), &cfg.client_ca_file) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| tls_err(format!("cannot read client_ca_file {}: {e}", ca.display())))?
            {
                let c = c.map_err(|e| tls_err(format!("client_ca_file {}: {e}", ca.display())))?;
                roots
                    .add(c)
                    .map_err(|e| tls_err(format!("client_ca_file {}: {e}", ca.display())))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = if mode == ClientAuth::VerifyIfGiven {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| tls_err(e.to_string()))?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(format!("certificate and key do not fit together: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
