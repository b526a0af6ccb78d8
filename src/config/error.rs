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

/// The most errors kept for one file; a broken generated file can hold millions, and the
/// first hundred say what is wrong. The rest are counted in a last line.
pub const MAX_SHOWN: usize = 100;

impl ConfigErrors {
    /// The first [`MAX_SHOWN`] of `errors`, then one line counting the rest.
    pub fn capped(errors: impl IntoIterator<Item = ConfigError>) -> ConfigErrors {
        let mut kept = Vec::new();
        let mut more = 0usize;
        for e in errors {
            if kept.len() < MAX_SHOWN {
                kept.push(e);
            } else {
                more += 1;
            }
        }
        let file = kept.first().map(|e| e.file.clone());
        if let (Some(file), true) = (file, more > 0) {
            kept.push(ConfigError::more(file, more));
        }
        ConfigErrors(kept)
    }
}

impl ConfigError {
    /// The line that counts errors left out.
    pub fn more(file: String, n: usize) -> ConfigError {
        ConfigError {
            file,
            line: 0,
            column: 0,
            message: format!("... and {n} more error{}", if n == 1 { "" } else { "s" }),
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
    /// The file is larger than netmon reads.
    #[error("config file {path} is larger than {} MiB: split the targets across files or trim it", .limit >> 20)]
    TooLarge {
        /// The path as given.
        path: String,
        /// The limit in bytes.
        limit: u64,
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
    /// The hosted STAMP reflector (`stamp_reflector:`) could not start with the new settings.
    #[error("{0}")]
    Stamp(String),
}
