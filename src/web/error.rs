//! Why the web server could not start.

use crate::base::listen::ListenError;

/// Errors starting the web server.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The listen address cannot be used.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The TLS settings of `--web.config.file` cannot be used.
    #[error("web TLS: {0}")]
    Tls(String),
}
