//! `--web.config.file`: TLS and basic auth for the web endpoints, in the Prometheus
//! exporter-toolkit format, so operators reuse the files they already have:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
//!   client_ca_file: ca.crt
//!   min_version: TLS12                             # optional: TLS12 or TLS13
//! basic_auth_users:
//!   alice: $2y$10$...                              # bcrypt hashes (htpasswd -nBC 10 alice)
//! ```
//! Relative paths are relative to the web config file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::error::{ConfigError, ConfigErrors, LoadError};

/// The parsed web config; files are read when the server starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// TLS settings; absent means plain HTTP.
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    /// User name to bcrypt hash; empty means no authentication.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
    /// Accepted for compatibility with exporter-toolkit files; netmon always allows HTTP/2
    /// over TLS and sends no extra headers.
    #[serde(default)]
    pub http_server_config: Option<HttpServerConfig>,
}

/// `http_server_config` of exporter-toolkit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Whether HTTP/2 is enabled (exporter-toolkit's key; informational here).
    #[serde(default)]
    pub http2: Option<bool>,
    /// Extra response headers (exporter-toolkit's key); not supported, refused if non-empty.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `tls_server_config` of exporter-toolkit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// `NoClientCert` (default), `RequireAndVerifyClientCert` or `VerifyClientCertIfGiven`.
    #[serde(default)]
    pub client_auth_type: Option<String>,
    /// CA bundle for client certificates.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// `TLS12` (default) or `TLS13`.
    #[serde(default)]
    pub min_version: Option<String>,
}

/// Client certificate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate asked for.
    None,
    /// A client certificate is verified if sent.
    VerifyIfGiven,
    /// A valid client certificate is required.
    Require,
}

impl TlsServerConfig {
    /// The client certificate policy.
    pub fn client_auth(&self) -> ClientAuth {
        match self.client_auth_type.as_deref() {
            Some("RequireAndVerifyClientCert") => ClientAuth::Require,
            Some("VerifyClientCertIfGiven") => ClientAuth::VerifyIfGiven,
            _ => ClientAuth::None,
        }
    }

    /// Whether only TLS 1.3 is allowed.
    pub fn tls13_only(&self) -> bool {
        self.min_version.as_deref() == Some("TLS13")
    }
}

/// Reads and validates a web config file; relative paths are resolved against its folder.
pub fn load_web_config(path: &Path) -> Result<WebConfig, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_web_config(&text, path)
}

/// Validates web config `text` as if read from `path` (which names it in errors and anchors
/// relative paths); the files it names are not read. Public for the fuzzer.
pub fn parse_web_config(text: &str, path: &Path) -> Result<WebConfig, LoadError> {
    let file = path.display().to_string();
    let err = |line: usize, column: usize, message: String| {
        LoadError::Invalid(ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line,
            column,
            message,
        }]))
    };
    if text.trim().is_empty() {
        return Ok(WebConfig::default());
    }
    let node =
        marked_yaml::parse_yaml(0, text).map_err(|e| err(0, 0, format!("invalid YAML: {e}")))?;
    let mut wc: WebConfig = marked_yaml::from_node(&node).map_err(|e| {
        let (l, c) = e
            .start_mark()
            .map(|m| (m.line(), m.column()))
            .unwrap_or((0, 0));
        err(l, c, e.to_string())
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    if let Some(tls) = &mut wc.tls_server_config {
        for p in [
            Some(&mut tls.cert_file),
            Some(&mut tls.key_file),
            tls.client_ca_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        match tls.client_auth_type.as_deref() {
            None
            | Some("NoClientCert")
            | Some("VerifyClientCertIfGiven")
            | Some("RequireAndVerifyClientCert") => {}
            Some(other) => {
                return Err(err(
                    0,
                    0,
                    format!(
                        "client_auth_type `{other}` is not supported: use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                    ),
                ));
            }
        }
        if tls.client_auth() != ClientAuth::None && tls.client_ca_file.is_none() {
            return Err(err(0, 0, "client_auth_type needs client_ca_file".into()));
        }
        match tls.min_version.as_deref() {
            None | Some("TLS12") | Some("TLS13") => {}
            Some(other) => {
                return Err(err(
                    0,
                    0,
                    format!("min_version `{other}` is not supported: use TLS12 or TLS13"),
                ));
            }
        }
    }
    if wc
        .http_server_config
        .as_ref()
        .is_some_and(|h| !h.headers.is_empty())
    {
        return Err(err(
            0,
            0,
            "http_server_config.headers is not supported by netmon; remove it".into(),
        ));
    }
    for (user, hash) in &wc.basic_auth_users {
        if bcrypt_cost(hash).is_none() {
            return Err(err(
                0,
                0,
                format!(
                    "basic_auth_users.{user}: not a bcrypt hash; make one with `htpasswd -nBC 10 {user}`"
                ),
            ));
        }
    }
    Ok(wc)
}

fn bcrypt_cost(hash: &str) -> Option<u32> {
    let mut parts = hash.split('$');
    let (empty, version, cost) = (parts.next()?, parts.next()?, parts.next()?);
    if !empty.is_empty() || !matches!(version, "2a" | "2b" | "2y" | "2x") || hash.len() != 60 {
        return None;
    }
    cost.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporter_toolkit_files_load_and_paths_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        let hash = bcrypt::hash("secret", 4).unwrap();
        std::fs::write(
            &p,
            format!("tls_server_config:\n  cert_file: c.pem\n  key_file: /abs/k.pem\nbasic_auth_users:\n  alice: {hash}\n"),
        )
        .unwrap();
        let wc = load_web_config(&p).unwrap();
        let tls = wc.tls_server_config.unwrap();
        assert_eq!(tls.cert_file, dir.path().join("c.pem"));
        assert_eq!(tls.key_file, PathBuf::from("/abs/k.pem"));
        assert_eq!(wc.basic_auth_users.len(), 1);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(&p, "basic_auth_users:\n  bob: plaintext\n").unwrap();
        assert!(
            load_web_config(&p)
                .unwrap_err()
                .to_string()
                .contains("not a bcrypt hash")
        );
        std::fs::write(
            &p,
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: SSL3\n",
        )
        .unwrap();
        assert!(
            load_web_config(&p)
                .unwrap_err()
                .to_string()
                .contains("min_version `SSL3`")
        );
        std::fs::write(&p, "tls_config:\n  cert_file: a\n").unwrap();
        let e = load_web_config(&p).unwrap_err().to_string();
        assert!(e.contains("web.yml:1:1") && e.contains("tls_config"), "{e}");
    }
}
