//! The configuration: what the user wrote, validated once into typed values.
//!
//! [`loader`] reads YAML with positions, walks it by hand so that *every* problem is reported
//! with file, line and column, and hands each service's protocol options to the probe's own
//! serde `Options` (see `crate::probe`). Nothing downstream re-checks what it accepted. Two
//! forms are valid: the original Python monitor's dictionary
//! (`www.google.com: {services: [HTTP, ICMP], interval: 60}`) and the full form of the README,
//! which only adds keys to it.
//!
//! All YAML handling lives in this module, so the YAML crates can be swapped in one place.
//!
//! - [`model`]: the validated values; [`loader`]: text to model; [`save`]: model to text;
//! - [`single`]: the one-service configs of `check` and the console's `add`;
//! - [`web_config`]: `--web.config.file`; [`error`]: located errors;
//! - [`sd`]: the file_sd/http_sd documents of `discovery:` sources.

pub mod error;
pub mod loader;
pub mod model;
pub mod save;
pub mod sd;
pub mod single;
pub mod web_config;

pub use error::{ConfigError, ConfigErrors, LoadError};
pub use loader::{BUILTIN, Source, discovered, load, load_as, load_file};
pub use model::{Config, Defaults, Discovery, DiscoveryKind, Service, Target};
pub use save::{SaveError, to_yaml};
pub use web_config::{ClientAuth, TlsServerConfig, WebConfig, load_web_config, parse_web_config};
