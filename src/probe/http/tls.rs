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

use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::options::TlsOptions;
use crate::probe::shape::BuildError;

/// The chain a server presented, leaf first, filled by `Capture` during the handshake.
pub type Chain = Arc<Mutex<Vec<CertificateDer<'static>>>>;

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
                    roots.add(c.clone()).map_err(|e| {
                        BuildError(format!("ca_file `{}`: {e}", ca.path.display()))
                    })?;
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
        match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(e) => self.explain(e, presented, name, alpn),
            None if error.kind() == std::io::ErrorKind::UnexpectedEof => TlsError::Closed,
            None => TlsError::Io(error.to_string()),
        }
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
        let store = self.store.name();
        match error {
            rustls::Error::InvalidCertificate(e) => explain_certificate(e, presented, name, store),
            rustls::Error::NoCertificatesPresented => TlsError::NoCertificate,
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                TlsError::NotTls
            }
            rustls::Error::AlertReceived(alert) => TlsError::Alert {
                alert: alert_name(*alert),
                hint: alert_hint(*alert),
            },
            rustls::Error::NoApplicationProtocol => TlsError::NoProtocol {
                offered: alpn
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            rustls::Error::PeerIncompatible(why) => TlsError::Incompatible {
                what: words(&format!("{why:?}")),
            },
            rustls::Error::PeerMisbehaved(why) => TlsError::Misbehaved {
                what: words(&format!("{why:?}")),
            },
            rustls::Error::DecryptError => TlsError::Misbehaved {
                what: "a record did not decrypt".into(),
            },
            other => TlsError::Other(other.to_string()),
        }
    }
}

/// Why a TLS handshake failed, as an operator would say it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The server's certificate is past its `notAfter`.
    #[error("certificate expired at {at}")]
    Expired {
        /// `notAfter`, RFC 3339.
        at: String,
    },
    /// Another certificate of the presented chain is past its `notAfter`.
    #[error("certificate {subject} in the chain expired at {at}")]
    ChainExpired {
        /// Its subject.
        subject: String,
        /// Its `notAfter`, RFC 3339.
        at: String,
    },
    /// The certificate's `notBefore` is still to come.
    #[error("certificate is not valid before {at}")]
    NotYetValid {
        /// `notBefore`, RFC 3339.
        at: String,
    },
    /// The certificate does not name the host.
    #[error("certificate is for {names}, not {expected}")]
    WrongName {
        /// The names it carries (subjectAltName DNS and IP entries), comma-separated.
        names: String,
        /// The name checked.
        expected: String,
    },
    /// A self-signed certificate that the trusted store does not hold.
    #[error("self-signed certificate not in {store}")]
    SelfSigned {
        /// `ca_file` or the system trust store.
        store: &'static str,
    },
    /// The chain leads to an issuer the trusted store does not hold.
    #[error("unknown issuer {issuer}, not in {store}")]
    UnknownIssuer {
        /// The issuer's distinguished name.
        issuer: String,
        /// `ca_file` or the system trust store.
        store: &'static str,
    },
    /// A CA certificate presented as the server's, and not itself trusted.
    #[error("certificate is a CA certificate (CA:TRUE) presented as the server's, and is not itself in {store}")]
    CaAsServer {
        /// `ca_file` or the system trust store.
        store: &'static str,
    },
    /// A signature in the chain does not verify.
    #[error("certificate signature does not verify: the chain is broken or forged")]
    BadSignature,
    /// The certificate was revoked.
    #[error("certificate is revoked")]
    Revoked,
    /// The certificate's extended key usage excludes TLS servers.
    #[error("certificate is not for TLS servers: its extended key usage lacks serverAuth")]
    WrongPurpose,
    /// The certificate or chain cannot be checked at all.
    #[error("certificate cannot be verified: {what}")]
    Unverifiable {
        /// What stood in the way.
        what: String,
    },
    /// The server sent no certificate.
    #[error("the server presented no certificate")]
    NoCertificate,
    /// The server answered with something that is not TLS.
    #[error("the server does not speak TLS here (it sent a corrupt message): is the port plain http?")]
    NotTls,
    /// The server aborted the handshake with an alert.
    #[error("the server ended the handshake with the TLS alert {alert}{hint}")]
    Alert {
        /// The alert's name as in RFC 8446 6.
        alert: String,
        /// What it usually means, with a leading space and parentheses, or empty.
        hint: &'static str,
    },
    /// No ALPN protocol in common.
    #[error("the server supports none of the protocols offered by ALPN ({offered})")]
    NoProtocol {
        /// What was offered.
        offered: String,
    },
    /// No TLS version, cipher suite or key exchange in common.
    #[error("the server's TLS is incompatible with netmon's: {what}")]
    Incompatible {
        /// The incompatibility.
        what: String,
    },
    /// The server broke the protocol.
    #[error("the server broke the TLS protocol: {what}")]
    Misbehaved {
        /// How.
        what: String,
    },
    /// The server closed the connection before the handshake was done.
    #[error("the server closed the connection during the TLS handshake")]
    Closed,
    /// The connection failed during the handshake.
    #[error("the connection failed during the TLS handshake: {0}")]
    Io(String),
    /// Anything else rustls reported.
    #[error("tls handshake failed: {0}")]
    Other(String),
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

/// The earliest `notAfter` (Unix seconds) among `chain`; certificates that do not parse are
/// skipped.
pub fn earliest_not_after(chain: &[CertificateDer<'_>]) -> Option<i64> {
    chain
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .min()
}

/// Trusts a certificate of `ca_file` presented exactly as the server's own, and leaves every
/// other case to webpki.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The certificates of `ca_file`, or of the system store.
    exact: Arc<[CertificateDer<'static>]>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.exact.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            check_dates(end_entity, now)?;
            let parsed = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The validity period check of a certificate trusted as it is, with the same errors webpki
/// gives for a chain.
fn check_dates(der: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let validity = cert.validity();
    let secs = |t: i64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.max(0) as u64));
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now_secs < validity.not_before.timestamp() {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before: secs(validity.not_before.timestamp()),
        }
        .into());
    }
    if now_secs > validity.not_after.timestamp() {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after: secs(validity.not_after.timestamp()),
        }
        .into());
    }
    Ok(())
}

fn explain_certificate(
    e: &CertificateError,
    presented: &[CertificateDer<'_>],
    expected: &str,
    store: &'static str,
) -> TlsError {
    let parsed: Vec<X509Certificate<'_>> = presented
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok().map(|(_, c)| c))
        .collect();
    let leaf = parsed.first();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match e {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            let wanted = match e {
                CertificateError::ExpiredContext { not_after, .. } => {
                    i64::try_from(not_after.as_secs()).ok()
                }
                _ => None,
            };
            let expired = parsed.iter().enumerate().find(|(_, c)| {
                let t = c.validity().not_after.timestamp();
                wanted.map_or(t < now, |w| t == w)
            });
            match expired {
                Some((0, c)) => TlsError::Expired {
                    at: rfc3339(c.validity().not_after.timestamp()),
                },
                Some((_, c)) => TlsError::ChainExpired {
                    subject: c.subject().to_string(),
                    at: rfc3339(c.validity().not_after.timestamp()),
                },
                None => TlsError::Expired {
                    at: wanted.map_or_else(|| "a date in the past".into(), rfc3339),
                },
            }
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            let at = match e {
                CertificateError::NotValidYetContext { not_before, .. } => {
                    i64::try_from(not_before.as_secs()).ok().map(rfc3339)
                }
                _ => None,
            };
            TlsError::NotYetValid {
                at: at
                    .or_else(|| leaf.map(|c| rfc3339(c.validity().not_before.timestamp())))
                    .unwrap_or_else(|| "a date still to come".into()),
            }
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            TlsError::WrongName {
                names: leaf.map_or_else(|| "no name".into(), names_of),
                expected: expected.to_string(),
            }
        }
        CertificateError::UnknownIssuer => unknown_issuer(&parsed, store),
        CertificateError::BadSignature => TlsError::BadSignature,
        CertificateError::Revoked => TlsError::Revoked,
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            TlsError::WrongPurpose
        }
        CertificateError::BadEncoding => TlsError::Unverifiable {
            what: "it is not valid DER".into(),
        },
        CertificateError::UnhandledCriticalExtension => TlsError::Unverifiable {
            what: "it has a critical extension that webpki does not support".into(),
        },
        #[allow(deprecated)]
        CertificateError::UnsupportedSignatureAlgorithm
        | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            TlsError::Unverifiable {
                what: "it is signed with an algorithm that is not supported".into(),
            }
        }
        CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
            // webpki refuses a CA:TRUE leaf before it looks for an issuer.
            Some(webpki::Error::CaUsedAsEndEntity) if leaf.is_some_and(is_self_signed) => {
                TlsError::SelfSigned { store }
            }
            Some(webpki::Error::CaUsedAsEndEntity) => TlsError::CaAsServer { store },
            Some(webpki::Error::EndEntityUsedAsCa) => TlsError::Unverifiable {
                what: "a certificate that is not a CA (CA:FALSE) signs another in the chain"
                    .into(),
            },
            #[allow(deprecated)]
            Some(webpki::Error::RequiredEkuNotFound | webpki::Error::RequiredEkuNotFoundContext(_)) => {
                TlsError::WrongPurpose
            }
            Some(webpki::Error::PathLenConstraintViolated) => TlsError::Unverifiable {
                what: "the chain is longer than a CA's pathLenConstraint allows".into(),
            },
            Some(webpki::Error::NameConstraintViolation) => TlsError::Unverifiable {
                what: "a CA's name constraints exclude the certificate's names".into(),
            },
            Some(w) => TlsError::Unverifiable {
                what: words(&format!("{w:?}")),
            },
            None => TlsError::Unverifiable {
                what: other.0.to_string(),
            },
        },
        other => TlsError::Unverifiable {
            what: words(&format!("{other:?}")),
        },
    }
}

/// The issuer nobody trusts: follow the presented chain from the leaf as far as it goes.
fn unknown_issuer(chain: &[X509Certificate<'_>], store: &'static str) -> TlsError {
    let Some(mut current) = chain.first() else {
        return TlsError::UnknownIssuer {
            issuer: "of an unreadable certificate".into(),
            store,
        };
    };
    if is_self_signed(current) {
        return TlsError::SelfSigned { store };
    }
    // Bounded by the chain's length: each step moves to another presented certificate.
    for _ in 0..chain.len() {
        let next = chain.iter().find(|c| {
            c.subject().as_raw() == current.issuer().as_raw()
                && c.subject().as_raw() != current.subject().as_raw()
        });
        match next {
            Some(n) => current = n,
            None => break,
        }
    }
    TlsError::UnknownIssuer {
        issuer: current.issuer().to_string(),
        store,
    }
}

fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw()
}

/// The names a certificate is for: its subjectAltName DNS and IP entries, else its subject.
fn names_of(cert: &X509Certificate<'_>) -> String {
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push((*d).to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        names.push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        names.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        return format!("{} (it has no subjectAltName)", cert.subject());
    }
    names.join(", ")
}

/// Unix seconds as RFC 3339 UTC, to the second.
fn rfc3339(secs: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    );
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{secs} (Unix time)"))
}

/// The RFC 8446 name of an alert (rustls names its variants after them).
fn alert_name(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::Unknown(n) => format!("number {n}"),
        // rustls spells this one the British way.
        AlertDescription::UnrecognisedName => "unrecognized_name".into(),
        known => {
            let mut out = String::new();
            for (i, ch) in format!("{known:?}").chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_lowercase());
            }
            out
        }
    }
}

/// What an alert from a server usually means.
fn alert_hint(alert: AlertDescription) -> &'static str {
    match alert {
        AlertDescription::HandshakeFailure | AlertDescription::ProtocolVersion => {
            " (no TLS version or cipher suite in common)"
        }
        AlertDescription::UnrecognisedName => {
            " (the server does not know the name sent in SNI: see tls.server_name)"
        }
        AlertDescription::NoApplicationProtocol => {
            " (none of the HTTP versions offered by ALPN: see http_version)"
        }
        AlertDescription::CertificateRequired => {
            " (the server asks for a client certificate, which netmon does not send)"
        }
        _ => "",
    }
}

/// `CamelCase` as lowercase words, for the rare enum that has no sentence of its own.
fn words(camel: &str) -> String {
    let head = camel.split(['(', '{', ' ']).next().unwrap_or(camel);
    let mut out = String::new();
    for (i, ch) in head.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
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
