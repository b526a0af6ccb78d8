//! Handshake failures told as sentences: what was wrong with the certificate the server
//! presented, or which alert it sent, never a library's Debug output.

use rustls::pki_types::CertificateDer;
use rustls::{AlertDescription, CertificateError};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// Says in words why a handshake failed with `error` (tokio-rustls wraps rustls errors
/// in I/O errors); the other arguments as for [`explain`].
pub fn explain_io(
    error: &std::io::Error,
    presented: &[CertificateDer<'_>],
    name: &str,
    alpn: &[&[u8]],
    store: &'static str,
) -> TlsError {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(e) => explain(e, presented, name, alpn, store),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => TlsError::Closed,
        None => TlsError::Io(error.to_string()),
    }
}

/// Says in words why a handshake failed: `error` is what rustls reported, `presented` the
/// chain the server sent (possibly empty), `name` the name it was checked against and
/// `alpn` what was offered, `store` the trust store's name.
pub fn explain(
    error: &rustls::Error,
    presented: &[CertificateDer<'_>],
    name: &str,
    alpn: &[&[u8]],
    store: &'static str,
) -> TlsError {
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
    #[error(
        "certificate is a CA certificate (CA:TRUE) presented as the server's, and is not itself in {store}"
    )]
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
    #[error(
        "the server does not speak TLS here (it sent a corrupt message): is the port plain http?"
    )]
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

fn explain_certificate(
    e: &CertificateError,
    presented: &[CertificateDer<'_>],
    expected: &str,
    store: &'static str,
) -> TlsError {
    let parsed: Vec<X509Certificate<'_>> = presented
        .iter()
        .filter_map(|der| {
            x509_parser::parse_x509_certificate(der)
                .ok()
                .map(|(_, c)| c)
        })
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
                what: "a certificate that is not a CA (CA:FALSE) signs another in the chain".into(),
            },
            #[allow(deprecated)]
            Some(
                webpki::Error::RequiredEkuNotFound | webpki::Error::RequiredEkuNotFoundContext(_),
            ) => TlsError::WrongPurpose,
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
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
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
