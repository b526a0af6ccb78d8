//! Configuration errors: each one names the file, line and column it is about, what was wrong
//! and, where we can tell, what would be right. `config::load` returns all of them at once.

use std::fmt;

/// One problem in a configuration file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as the user named it (or `<built-in>` for the compiled-in default).
    pub file: String,
    /// 1-based line; 0 when the problem is about the file as a whole.
    pub line: usize,
    /// 1-based column; 0 when the problem is about the file as a whole.
    pub column: usize,
    /// What is wrong, lowercase, naming the offending value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// Every problem found in one configuration file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{} error{} in configuration:",
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for (i, e) in self.0.iter().enumerate() {
            if i + 1 < n {
                writeln!(f, "  {e}")?;
            } else {
                write!(f, "  {e}")?;
            }
        }
        Ok(())
    }
}

/// Errors reading a configuration before it can be parsed at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source} (check the path given to --config.file)")]
    Read {
        /// The path as given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
    /// The configuration is valid but some services cannot run on this machine.
    #[error("{} service(s) cannot start:\n  {}", .0.0.len(), .0.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Start(ConfigErrors),
    /// The hosted echo server (`echo_server:`) could not start with the new settings.
    #[error("{0}")]
    Echo(String),
}
