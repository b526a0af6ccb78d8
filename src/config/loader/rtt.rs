//! `rtt_buckets:` and `rtt_histogram:`, in `defaults:` and in a service: the RTT histogram of
//! the protocols that have one (icmp, echo, stamp), its buckets or its absence.

use std::sync::Arc;

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;

use crate::probe::Protocol;
use crate::probe::packets::MAX_RTT_BUCKETS;

use super::{Loader, key_at, line_col};

/// `rtt_buckets:` and `rtt_histogram:` as written in one mapping.
#[derive(Debug, Default)]
pub(super) struct RttKeys {
    pub(super) buckets: Option<Arc<[f64]>>,
    pub(super) histogram: Option<bool>,
}

const EXAMPLE: &str = "e.g. `rtt_buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1]`";

impl Loader<'_> {
    /// Reads both keys of `map`; an invalid one is reported at its key and left out.
    pub(super) fn rtt_keys(&mut self, map: &MarkedMappingNode) -> RttKeys {
        RttKeys {
            buckets: map
                .get_node("rtt_buckets")
                .and_then(|n| self.rtt_buckets(map, n)),
            histogram: map
                .get_node("rtt_histogram")
                .and_then(|n| self.rtt_histogram(map, n)),
        }
    }

    fn rtt_buckets(&mut self, map: &MarkedMappingNode, node: &Node) -> Option<Arc<[f64]>> {
        let at = key_at(map, "rtt_buckets").unwrap_or_else(|| line_col(node.span()));
        let Some(seq) = node.as_sequence() else {
            self.err_at(
                at,
                format!(
                    "`rtt_buckets` must be a list of upper bounds in seconds, ascending, {EXAMPLE}"
                ),
            );
            return None;
        };
        if seq.is_empty() || seq.len() > MAX_RTT_BUCKETS {
            self.err_at(
                at,
                format!(
                    "`rtt_buckets` lists {} values: give 1 to {MAX_RTT_BUCKETS} (each is a series of every service), or `rtt_histogram: false` for none",
                    seq.len()
                ),
            );
            return None;
        }
        let mut out = Vec::with_capacity(seq.len());
        for item in seq.iter() {
            let text = item.as_scalar().map(|s| s.as_str().trim());
            let value = text.and_then(|t| t.parse::<f64>().ok());
            let Some(v) = value.filter(|v| v.is_finite() && *v > 0.0) else {
                let shown = text.unwrap_or("a list or mapping");
                self.err_at(
                    at,
                    format!("`rtt_buckets`: `{shown}` is not a number of seconds above 0: write bounds such as `0.005` (5 ms)"),
                );
                return None;
            };
            if let Some(&prev) = out.last() {
                if v <= prev {
                    self.err_at(
                        at,
                        format!("`rtt_buckets` must be ascending without repeats: `{v}` comes after `{prev}`"),
                    );
                    return None;
                }
            }
            out.push(v);
        }
        Some(out.into())
    }

    fn rtt_histogram(&mut self, map: &MarkedMappingNode, node: &Node) -> Option<bool> {
        let at = key_at(map, "rtt_histogram").unwrap_or_else(|| line_col(node.span()));
        match node.as_scalar().map(|s| s.as_str().trim()) {
            Some("true" | "True" | "TRUE") => Some(true),
            Some("false" | "False" | "FALSE") => Some(false),
            _ => {
                self.err_at(at, "`rtt_histogram` must be `true` or `false`");
                None
            }
        }
    }

    /// The buckets a service of `protocol` runs with (`None`: no histogram) from its own keys
    /// and the defaults, or `Err` after reporting keys that cannot apply to it.
    pub(super) fn effective_rtt(
        &mut self,
        protocol: Protocol,
        own: &RttKeys,
        map: Option<&MarkedMappingNode>,
        defaults: &RttKeys,
        default_buckets: &Arc<[f64]>,
    ) -> Result<Option<Arc<[f64]>>, ()> {
        let at = |key| map.and_then(|m| key_at(m, key)).unwrap_or((0, 0));
        if !protocol.has_rtt_histogram() {
            let with: Vec<&str> = Protocol::ALL
                .iter()
                .filter(|p| p.has_rtt_histogram())
                .map(|p| p.as_str())
                .collect();
            let mut bad = false;
            for (key, set) in [
                ("rtt_buckets", own.buckets.is_some()),
                ("rtt_histogram", own.histogram.is_some()),
            ] {
                if set {
                    self.err_at(
                        at(key),
                        format!(
                            "`{key}` applies to {} services only ({protocol} has no RTT histogram): remove it",
                            list(&with)
                        ),
                    );
                    bad = true;
                }
            }
            return if bad { Err(()) } else { Ok(None) };
        }
        if own.buckets.is_some() && own.histogram == Some(false) {
            self.err_at(
                at("rtt_buckets"),
                "`rtt_buckets` and `rtt_histogram: false` contradict each other: remove one",
            );
            return Err(());
        }
        // A service's own buckets turn its histogram on even where the defaults turn it off.
        let on = own
            .histogram
            .or(own.buckets.as_ref().map(|_| true))
            .or(defaults.histogram)
            .unwrap_or(true);
        Ok(on.then(|| {
            own.buckets
                .clone()
                .or_else(|| defaults.buckets.clone())
                .unwrap_or_else(|| default_buckets.clone())
        }))
    }
}

/// `a`, `a and b`, `a, b and c`: names as a sentence lists them.
fn list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}
