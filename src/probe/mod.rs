//! Probes: one file (or folder) per protocol behind one shape, and the table of protocols.
//!
//! A probe measures and decides; the runner (`crate::runner`) does what every probe shares:
//! the timeout, timing, `netmon_up`, latency, counters, the failure reason and the UP/DOWN log
//! line.
//!
//! Each protocol declares itself once with a [`shape::Definition`]: its name, port rule,
//! options type, metric families and constructor. The `protocols!` table below turns those
//! declarations into [`Protocol`], [`Options`], [`ProbeMetrics`], [`parse_options`] and
//! [`build`], so adding a protocol is one new file plus one line in the table.
//!
//! Each protocol file holds, in order: its `Options` (serde, `deny_unknown_fields`, validated
//! while the config is read), its `Metrics`, its `Definition`, the probe type with its
//! `impl Probe`, then tests against a fake server started by the test.

pub mod packets;
pub mod shape;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use shape::{
    BuildError, Context, Definition, OptionsError, PortRule, Probe, Registered, from_node,
};

/// Declares the protocol table: `module { Variant field => Definition, ... }` per protocol
/// file. Everything that lists protocols is generated from it.
macro_rules! protocols {
    ($(
        $module:ident {
            $( $(#[$doc:meta])* $variant:ident $field:ident => $def:ident ),+ $(,)?
        }
    )+) => {
        $( pub mod $module; )+

        /// The protocols netmon knows by name. Names are case-insensitive in the config.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Protocol {
            $($( $(#[$doc])* $variant, )+)+
        }

        impl Protocol {
            /// Every protocol, in the order they are documented.
            pub const ALL: &'static [Protocol] = &[$($(Protocol::$variant,)+)+];

            /// The lowercase name used in the config and in the `protocol` label.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($( Protocol::$variant => <$module::$def as Definition>::NAME, )+)+
                }
            }

            /// Whether the protocol has the RTT histogram (`rtt_buckets:`, `rtt_histogram:`).
            pub fn has_rtt_histogram(self) -> bool {
                match self {
                    $($( Protocol::$variant => <$module::$def as Definition>::RTT_HISTOGRAM, )+)+
                }
            }

            /// How the protocol treats ports.
            pub fn port_rule(self) -> PortRule {
                match self {
                    $($( Protocol::$variant => <$module::$def as Definition>::PORT, )+)+
                }
            }
        }

        /// A protocol's options as validated from the config, one variant per protocol.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum Options {
            $($(
                #[doc = concat!("`", stringify!($field), "` options.")]
                $variant(<$module::$def as Definition>::Options),
            )+)+
        }

        impl Options {
            /// The protocol these options belong to.
            pub fn protocol(&self) -> Protocol {
                match self {
                    $($( Options::$variant(_) => Protocol::$variant, )+)+
                }
            }

            /// The port the service talks to, for the `service` label (`tcp:22`).
            pub fn port(&self) -> Option<u16> {
                match self {
                    $($( Options::$variant(o) => <$module::$def as Definition>::port(o), )+)+
                }
            }
        }

        /// Every protocol's own metric families, registered once per registry; protocols
        /// that share families (http and https; icmp, echo and stamp) hold clones of the same ones.
        #[derive(Debug, Clone)]
        pub struct ProbeMetrics {
            $($(
                #[doc = concat!("The families of `", stringify!($field), "`.")]
                pub $field: <$module::$def as Definition>::Metrics,
            )+)+
            /// The sets' families that write their own text, each set once.
            sheets: Vec<Arc<dyn crate::base::series::Sheet>>,
        }

        impl ProbeMetrics {
            /// Registers every protocol's families under `registry` (already prefixed
            /// `netmon`).
            pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
                let mut registered = Registered::default();
                $($( let $field = registered.get(registry); )+)+
                ProbeMetrics {
                    $($( $field, )+)+
                    sheets: registered.into_sheets(),
                }
            }

            /// The families that write their own text, for the exposition to append after
            /// the registry's.
            pub fn sheets(&self) -> Vec<Arc<dyn crate::base::series::Sheet>> {
                self.sheets.clone()
            }

            /// `registry` and these families in OpenMetrics, for the probes' tests.
            #[cfg(test)]
            pub(crate) fn encode_with(
                &self,
                registry: &prometheus_client::registry::Registry,
            ) -> String {
                let mut text = String::new();
                crate::base::series::encode(
                    &mut text,
                    registry,
                    &self.sheets,
                    crate::base::series::Format::OpenMetrics,
                )
                .unwrap_or_else(|e| panic!("encoding: {e}"));
                text
            }
        }

        /// Parses and validates the protocol-specific options of one service. `node` is the
        /// service's mapping with the common keys (`type`, `name`, `interval`, `timeout`)
        /// already taken out.
        pub fn parse_options(
            protocol: Protocol,
            node: &marked_yaml::Node,
        ) -> Result<Options, OptionsError> {
            Ok(match protocol {
                $($( Protocol::$variant => {
                    let o = from_node(node)?;
                    <$module::$def as Definition>::validate(&o).map_err(OptionsError::whole)?;
                    Options::$variant(o)
                } )+)+
            })
        }

        /// Checks that validated options can run within the service's `timeout` (e.g. an
        /// ICMP round must end before it); the config loader calls it, so `config check`
        /// refuses what a probe could never do.
        pub fn fits(options: &Options, timeout: std::time::Duration) -> Result<(), String> {
            match options {
                $($( Options::$variant(o) => <$module::$def as Definition>::fits(o, timeout), )+)+
            }
        }

        /// Builds the probe for a service from its validated options.
        pub fn build(
            options: &Options,
            ctx: &Context<'_>,
            metrics: &ProbeMetrics,
        ) -> Result<Arc<dyn Probe>, BuildError> {
            match options {
                $($( Options::$variant(o) => {
                    <$module::$def as Definition>::build(o, ctx, &metrics.$field)
                } )+)+
            }
        }
    };
}

protocols! {
    http {
        /// HTTP request, `http://host/` by default.
        Http http => Http,
        /// HTTP over TLS, with certificate checks.
        Https https => Https,
    }
    icmp {
        /// ICMP echo (ping).
        Icmp icmp => Icmp,
    }
    dns {
        /// A DNS query sent to the target as the server.
        Dns dns => Dns,
    }
    ntp {
        /// An NTP query.
        Ntp ntp => Ntp,
    }
    tcp {
        /// A TCP connect, optionally with a banner check.
        Tcp tcp => Tcp,
    }
    udp {
        /// A UDP request/response check.
        Udp udp => Udp,
    }
    echo {
        /// Our own UDP echo protocol (the classic form's bare `UDP` with no port).
        Echo echo => Echo,
    }
    stamp {
        /// An RFC 8762 STAMP Session-Sender (unauthenticated) against a Session-Reflector.
        Stamp stamp => Stamp,
    }
    traceroute {
        /// Probes of rising TTL: the path, per-hop RTT and loss, route changes.
        Traceroute traceroute => Traceroute,
    }
}

impl Protocol {
    /// Parses a protocol name, ignoring case.
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL
            .iter()
            .copied()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether `NAME:PORT` and a `port:` option make sense for this protocol.
    pub fn takes_port(self) -> bool {
        self.port_rule() != PortRule::None
    }

    /// The port the protocol uses when none is given.
    pub fn default_port(self) -> Option<u16> {
        match self.port_rule() {
            PortRule::Default(p) => Some(p),
            PortRule::None | PortRule::Required => None,
        }
    }

    /// The names of every protocol, comma-separated, for help texts and error messages.
    pub fn names() -> String {
        Protocol::ALL
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
