//! Test certificates made with rcgen: a CA, leaves it signs, self-signed leaves, and the rustls
//! server configurations that present them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A calendar day, (year, month, day).
pub type Day = (i32, u8, u8);

/// A certificate authority that signs [`Leaf`]s.
pub struct Ca {
    cert: Certificate,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A CA named `common_name`, valid from 2015-01-01 to 2045-01-01.
    pub fn new(common_name: &str) -> Ca {
        Ca::valid(common_name, (2015, 1, 1), (2045, 1, 1))
    }

    /// A CA named `common_name`, valid between the two days.
    pub fn valid(common_name: &str, not_before: Day, not_after: Day) -> Ca {
        let key = KeyPair::generate().expect("generate a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = name(common_name);
        params.not_before = day(not_before);
        params.not_after = day(not_after);
        let cert = params.self_signed(&key).expect("self-sign the CA");
        Ca {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM: what a client's `ca_file` holds.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes [`Ca::pem`] to `dir/file` and returns the path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        write(dir, file, &self.pem())
    }
}

/// What a leaf certificate says: its names, validity and whether it claims to be a CA.
#[derive(Debug, Clone)]
pub struct Leaf {
    names: Vec<String>,
    common_name: Option<String>,
    not_before: Day,
    not_after: Day,
    ca_true: bool,
}

impl Leaf {
    /// A leaf for `names` (DNS names or IP addresses, in subjectAltName), valid from
    /// 2020-01-01 to 2040-01-01.
    pub fn new(names: &[&str]) -> Leaf {
        Leaf {
            names: names.iter().map(|n| n.to_string()).collect(),
            common_name: None,
            not_before: (2020, 1, 1),
            not_after: (2040, 1, 1),
            ca_true: false,
        }
    }

    /// Sets the subject's common name (rcgen's default one is shared by every certificate,
    /// which makes a self-signed leaf look issued by a CA of the same name).
    pub fn common_name(mut self, common_name: &str) -> Leaf {
        self.common_name = Some(common_name.into());
        self
    }

    /// Sets the validity period.
    pub fn valid(mut self, not_before: Day, not_after: Day) -> Leaf {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    /// Marks it CA:TRUE, as `openssl req -x509` (OpenSSL 3) does for a self-signed
    /// certificate.
    pub fn ca_true(mut self) -> Leaf {
        self.ca_true = true;
        self
    }

    /// The moment it expires, in seconds since 1970.
    pub fn not_after_unix(&self) -> i64 {
        day(self.not_after).unix_timestamp()
    }

    fn params(&self) -> CertificateParams {
        let mut p = CertificateParams::new(self.names.clone()).expect("leaf parameters");
        if let Some(cn) = &self.common_name {
            p.distinguished_name = name(cn);
        }
        if self.ca_true {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        p.not_before = day(self.not_before);
        p.not_after = day(self.not_after);
        p
    }

    /// Signed by `ca`; the server presents the leaf and the CA certificate.
    pub fn signed_by(&self, ca: &Ca) -> Issued {
        let key = KeyPair::generate().expect("generate a leaf key");
        let cert = self
            .params()
            .signed_by(&key, &ca.issuer)
            .expect("sign the leaf");
        Issued {
            chain: vec![cert.der().clone(), ca.cert.der().clone()],
            cert,
            key,
        }
    }

    /// Signed by its own key; the server presents it alone.
    pub fn self_signed(&self) -> Issued {
        let key = KeyPair::generate().expect("generate a leaf key");
        let cert = self.params().self_signed(&key).expect("self-sign the leaf");
        Issued {
            chain: vec![cert.der().clone()],
            cert,
            key,
        }
    }
}

/// A certificate with its key and the chain a server presents.
pub struct Issued {
    cert: Certificate,
    key: KeyPair,
    chain: Vec<CertificateDer<'static>>,
}

impl Issued {
    /// The certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Writes the certificate and the key to `dir/NAME.crt` and `dir/NAME.key`; returns both
    /// paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        (
            write(dir, &format!("{name}.crt"), &self.pem()),
            write(dir, &format!("{name}.key"), &self.key_pem()),
        )
    }

    /// A rustls server configuration (ring provider, TLS 1.2 and 1.3) presenting the chain.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config_with_alpn(&[])
    }

    /// The same, offering these ALPN protocols (`b"h2"`, `b"http/1.1"`).
    pub fn server_config_with_alpn(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                self.chain.clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der())),
            )
            .expect("a server configuration for the certificate");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn day((y, m, d): Day) -> time::OffsetDateTime {
    rcgen::date_time_ymd(y, m, d)
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Version, response, serve};
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TLS client trusting only `ca_pem`; what it read after `GET /`, or the handshake error.
    async fn get(port: u16, ca_pem: &str) -> Result<String, std::io::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        tls.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        tls.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn a_leaf_the_ca_signed_is_trusted_and_a_self_signed_one_is_not() {
        let ca = Ca::new("testkit CA");
        let leaf = Leaf::new(&["127.0.0.1"]);
        let good = serve(
            Some(leaf.signed_by(&ca).server_config()),
            Version::Http1,
            |_| response(200, "ok"),
        )
        .await;
        let answer = get(good.port(), &ca.pem()).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");

        let own = leaf.clone().common_name("self").self_signed();
        let alone = serve(Some(own.server_config()), Version::Http1, |_| {
            response(200, "ok")
        })
        .await;
        assert!(get(alone.port(), &ca.pem()).await.is_err());
        // Trusted as its own root, as a client's ca_file would make it.
        assert!(get(alone.port(), &own.pem()).await.is_ok());
    }
}
