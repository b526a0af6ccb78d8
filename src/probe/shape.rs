//! The shape every protocol shares: the [`Probe`] it builds, the [`Definition`] it declares
//! once for the protocol table in `probe/mod.rs`, and the errors of both.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base::hint::did_you_mean;
use crate::base::labels::Labels;
use crate::base::outcome::{Outcome, Target};
use crate::base::series::Sheet;

/// Default `max_read` of the stream and datagram probes (tcp, udp): bytes read at most.
pub(crate) fn default_max_read() -> usize {
    4096
}

/// Whether `n` is [`default_max_read`], so `save` can leave it out.
pub(crate) fn is_default_max_read(n: &usize) -> bool {
    *n == default_max_read()
}

/// A configured probe, ready to run.
pub trait Probe: fmt::Debug + Send + Sync + 'static {
    /// Probes `target` once. The runner applies the timeout by dropping this future, so it must
    /// hold no state that outlives a drop.
    fn run<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Outcome>;

    /// Removes the protocol's own series (the runner removes the common ones) when the
    /// service is stopped for good.
    fn forget(&self) {}
}

/// How a protocol treats ports: `NAME:PORT` in the classic form and the `port:` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRule {
    /// The protocol has no port (icmp).
    None,
    /// A port must be given (tcp, udp).
    Required,
    /// This port unless another is given.
    Default(u16),
}

/// A protocol's metric families, registered once per registry even when several protocols
/// share them (http and https; icmp, echo and stamp).
pub trait Families: Clone + fmt::Debug + Send + Sync + 'static {
    /// Registers the families under `registry` (already prefixed `netmon`).
    fn register(registry: &mut Registry) -> Self;

    /// Registers the families through `shared`, which a set made of other sets (stamp's own
    /// families plus the packet ones) uses so that a set another protocol shares is
    /// registered once. Most sets have nothing to share.
    fn register_shared(registry: &mut Registry, shared: &mut Registered) -> Self {
        let _ = shared;
        Self::register(registry)
    }

    /// The families of the set that write their own text ([`Sheet`]) instead of being
    /// registered with prometheus-client; the exposition appends them after the registry.
    fn sheet(&self) -> Option<Arc<dyn Sheet>> {
        None
    }
}

/// Protocols with only the common families.
impl Families for () {
    fn register(_: &mut Registry) -> Self {}
}

/// Registers each [`Families`] type once and hands out clones; families are shared handles,
/// so every clone writes the same series.
#[derive(Default)]
pub struct Registered {
    sets: HashMap<TypeId, Box<dyn Any>>,
    sheets: Vec<Arc<dyn Sheet>>,
}

impl fmt::Debug for Registered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Registered({} sets)", self.sets.len())
    }
}

impl Registered {
    /// The families of type `F`, registering them on first use.
    pub fn get<F: Families>(&mut self, registry: &mut Registry) -> F {
        if let Some(f) = self
            .sets
            .get(&TypeId::of::<F>())
            .and_then(|b| b.downcast_ref::<F>())
        {
            return f.clone();
        }
        let f = F::register_shared(registry, self);
        self.sets.insert(TypeId::of::<F>(), Box::new(f.clone()));
        self.sheets.extend(f.sheet());
        f
    }

    /// The sheets of every set registered, each once.
    pub fn into_sheets(self) -> Vec<Arc<dyn Sheet>> {
        self.sheets
    }
}

/// One protocol, declared once; the table in `probe/mod.rs` derives parsing, validation,
/// ports, metrics registration and construction from it.
pub trait Definition {
    /// The lowercase name used in the config and in the `protocol` label.
    const NAME: &'static str;
    /// How the protocol treats ports.
    const PORT: PortRule;
    /// The options of a service of this protocol, as written in the config.
    type Options: DeserializeOwned + Serialize + Clone + PartialEq + fmt::Debug + Send + Sync;
    /// The protocol's own metric families (`()` when it has only the common ones).
    type Metrics: Families;
    /// Whether the protocol has the RTT histogram `netmon_rtt_seconds`, so that a service's
    /// `rtt_buckets:` and `rtt_histogram:` mean something for it.
    const RTT_HISTOGRAM: bool = false;

    /// Checks what serde cannot: required fields, value ranges, combinations.
    fn validate(options: &Self::Options) -> Result<(), String>;

    /// The port the service talks to, for the `service` label (`tcp:22`).
    fn port(options: &Self::Options) -> Option<u16>;

    /// Checks what depends on the service's timeout, e.g. that a round of packets ends
    /// before it. Most protocols have nothing to check.
    fn fits(options: &Self::Options, timeout: std::time::Duration) -> Result<(), String> {
        let _ = (options, timeout);
        Ok(())
    }

    /// Builds the probe from validated options.
    fn build(
        options: &Self::Options,
        ctx: &Context<'_>,
        metrics: &Self::Metrics,
    ) -> Result<Arc<dyn Probe>, BuildError>;
}

/// A problem with a service's options, located by the config loader.
#[derive(Debug)]
pub struct OptionsError {
    /// What is wrong.
    pub message: String,
    /// Where, if the deserializer knew.
    pub line_col: Option<(usize, usize)>,
}

impl OptionsError {
    /// An error about the whole service mapping.
    pub fn whole(message: impl Into<String>) -> Self {
        OptionsError {
            message: message.into(),
            line_col: None,
        }
    }
}

pub(crate) fn from_node<T: serde::de::DeserializeOwned>(
    node: &marked_yaml::Node,
) -> Result<T, OptionsError> {
    // Every protocol's `port` is checked here first, so `port: 70000`, `port: 0` and
    // `TCP:70000` all get the same sentence.
    if let Some(port) = node
        .as_mapping()
        .and_then(|m| m.get_node("port"))
        .and_then(|n| n.as_scalar())
    {
        let text = port.as_str().trim();
        if !text.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(OptionsError {
                message: format!("`port: {text}`: the port must be a number from 1 to 65535"),
                line_col: port.span().start().map(|m| (m.line(), m.column())),
            });
        }
    }
    marked_yaml::from_node::<T>(node).map_err(|e| {
        let line_col = e.start_mark().map(|m| (m.line(), m.column()));
        let message = match &*e {
            marked_yaml::Error::UnknownFieldError(field, expected, _) => format!(
                "unknown option `{field}`{}; valid options here: {}",
                did_you_mean(field, expected.iter().copied()),
                expected.join(", ")
            ),
            other => match e.path() {
                Some(path) => format!("`{path}`: {}", lowercase_first(&other.to_string())),
                None => lowercase_first(&other.to_string()),
            },
        };
        OptionsError { message, line_col }
    })
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// How long a probe that decides by itself when to stop waiting (a round of packets, UDP
/// silence, a traceroute) may wait: 90% of the service timeout, so it can still report what it
/// saw before the runner's timeout drops it.
pub fn wait_budget(timeout: Duration) -> Duration {
    timeout.mul_f64(0.9)
}

/// What a protocol's constructor gets besides its options and families.
#[derive(Debug)]
pub struct Context<'a> {
    /// The service's label set: host, protocol, service, then configured labels.
    pub labels: &'a Labels,
    /// The service's timeout. The runner drops the probe then; probes that decide by
    /// themselves when to stop waiting (a round of ICMP packets, UDP silence) finish a little
    /// before it so they can still report what they saw.
    pub timeout: Duration,
    /// The upper bounds of the service's RTT histogram (seconds, ascending), `None` for no
    /// histogram; only the protocols with one (`Definition::RTT_HISTOGRAM`) read it.
    pub rtt_buckets: Option<&'a [f64]>,
}

/// A probe that cannot start on this machine (e.g. ICMP without the privilege to open its
/// socket). The message says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_out_of_range_reads_the_same_whatever_was_written() {
        for text in ["70000", "0", "-1", "abc", "22.5"] {
            let yaml = format!("port: {text}");
            let node = marked_yaml::parse_yaml(0, &yaml).unwrap();
            let e = from_node::<crate::probe::tcp::Options>(&node).unwrap_err();
            assert_eq!(
                e.message,
                format!("`port: {text}`: the port must be a number from 1 to 65535")
            );
            assert_eq!(e.line_col, Some((1, 7)));
        }
        let node = marked_yaml::parse_yaml(0, "port: 22").unwrap();
        assert!(from_node::<crate::probe::tcp::Options>(&node).is_ok());
    }
}
