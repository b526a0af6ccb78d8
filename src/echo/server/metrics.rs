//! The echo server's families: datagrams and connections by verdict, bytes echoed.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::echo::server::policy::Verdict;

type ResultLabels = Vec<(&'static str, &'static str)>;

/// The server's families, registered once per registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub(crate) packets: Family<ResultLabels, Counter>,
    pub(crate) connections: Family<ResultLabels, Counter>,
    pub(crate) tcp_bytes: Counter,
}

impl Metrics {
    /// Registers `netmon_echo_server_packets_total{result}`,
    /// `netmon_echo_server_tcp_connections_total{result}` and
    /// `netmon_echo_server_tcp_bytes_total` under `registry` (already prefixed `netmon`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            packets: Family::default(),
            connections: Family::default(),
            tcp_bytes: Counter::default(),
        };
        registry.register(
            "echo_server_packets",
            "UDP datagrams received by the echo server, by what was done with them",
            m.packets.clone(),
        );
        registry.register(
            "echo_server_tcp_connections",
            "TCP connections to the echo server, by what was done with them",
            m.connections.clone(),
        );
        registry.register(
            "echo_server_tcp_bytes",
            "Bytes echoed over TCP",
            m.tcp_bytes.clone(),
        );
        for v in Verdict::ALL {
            let _ = m.packets.get_or_create_owned(&vec![("result", v.as_str())]);
        }
        m
    }

    pub(crate) fn packet_counters(&self) -> [Counter; 6] {
        Verdict::ALL.map(|v| {
            self.packets
                .get_or_create_owned(&vec![("result", v.as_str())])
        })
    }

    pub(crate) fn connection(&self, result: &'static str) {
        self.connections
            .get_or_create(&vec![("result", result)])
            .inc();
    }
}
