//! What the server answers: the reflection defences (source ports, allow-list, per-source
//! rate limit, size) and the verdict each datagram gets.

use crate::echo::settings::Settings;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Sources tracked by the rate limiter at most; the oldest are forgotten first.
pub const MAX_SOURCES: usize = 65_536;

/// Source ports of UDP services that answer unsolicited datagrams. A datagram from one of them
/// is either a reply from such a service or spoofed to start a loop between it and us: never
/// answered. Port 0 is not a valid source at all; 7007 is this server's own default port.
pub const REFLECTOR_PORTS: &[u16] = &[
    0,     // invalid
    7,     // echo
    9,     // discard
    13,    // daytime
    17,    // qotd
    19,    // chargen
    37,    // time
    53,    // dns
    67,    // dhcp server
    68,    // dhcp client
    69,    // tftp
    111,   // portmap
    123,   // ntp
    137,   // netbios-ns
    138,   // netbios-dgm
    161,   // snmp
    162,   // snmp-trap
    389,   // cldap
    427,   // slp
    500,   // isakmp
    520,   // rip
    623,   // ipmi
    1434,  // ms-sql-m
    1900,  // ssdp
    3702,  // ws-discovery
    4500,  // ipsec nat-t
    5060,  // sip
    5353,  // mdns
    5683,  // coap
    7007,  // netmon echo
    11211, // memcached
];

/// Whether datagrams from source port `port` are dropped (see [`REFLECTOR_PORTS`]).
pub fn is_reflector_port(port: u16) -> bool {
    REFLECTOR_PORTS.contains(&port)
}

/// What happened to a datagram: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Sent back.
    Echoed,
    /// Its source port is a well-known service's.
    DroppedSourcePort,
    /// Its source is over the rate limit.
    DroppedRateLimit,
    /// Its source is outside the allow-list.
    DroppedNotAllowed,
    /// Larger than `max_size`.
    DroppedTooLarge,
    /// Receiving or sending it failed.
    Error,
}

impl Verdict {
    /// Every verdict, so every series exists from the start.
    pub const ALL: [Verdict; 6] = [
        Verdict::Echoed,
        Verdict::DroppedSourcePort,
        Verdict::DroppedRateLimit,
        Verdict::DroppedNotAllowed,
        Verdict::DroppedTooLarge,
        Verdict::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Echoed => "echoed",
            Verdict::DroppedSourcePort => "dropped_source_port",
            Verdict::DroppedRateLimit => "dropped_rate_limit",
            Verdict::DroppedNotAllowed => "dropped_not_allowed",
            Verdict::DroppedTooLarge => "dropped_too_large",
            Verdict::Error => "error",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A token bucket per source address in a bounded table of two generations: when the current
/// one is half the bound, it becomes the previous one and the one before is forgotten. A source
/// seen in either keeps its bucket; memory never exceeds [`MAX_SOURCES`] entries.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    current: HashMap<IpAddr, Bucket>,
    previous: HashMap<IpAddr, Bucket>,
    max: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `rate` datagrams per second with a burst of one second's worth; at most `max` sources.
    pub fn new(rate: u32, max: usize) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(rate.max(1)),
            current: HashMap::new(),
            previous: HashMap::new(),
            max: max.max(2),
        }
    }

    /// Takes a token for `ip` at `now`; false when its bucket is empty.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let bucket = match self.current.get_mut(&ip) {
            Some(b) => b,
            None => {
                if self.current.len() >= self.max / 2 {
                    self.previous = std::mem::take(&mut self.current);
                }
                let b = self.previous.remove(&ip).unwrap_or(Bucket {
                    tokens: self.burst,
                    at: now,
                });
                self.current.entry(ip).or_insert(b)
            }
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decides what to do with each datagram: the defences, in order of cost.
#[derive(Debug)]
pub(crate) struct Policy {
    settings: Settings,
    limiter: Option<RateLimiter>,
}

impl Policy {
    pub(crate) fn new(settings: Settings) -> Self {
        let limiter =
            (settings.rate_limit > 0).then(|| RateLimiter::new(settings.rate_limit, MAX_SOURCES));
        Policy { settings, limiter }
    }

    pub(crate) fn judge(&mut self, src: SocketAddr, len: usize, now: Instant) -> Verdict {
        // A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d; the allow-list says a.b.c.d.
        let ip = src.ip().to_canonical();
        if is_reflector_port(src.port()) {
            Verdict::DroppedSourcePort
        } else if !self.settings.allowed(ip) {
            Verdict::DroppedNotAllowed
        } else if len > self.settings.max_size {
            Verdict::DroppedTooLarge
        } else if self.limiter.as_mut().is_some_and(|l| !l.allow(ip, now)) {
            Verdict::DroppedRateLimit
        } else {
            Verdict::Echoed
        }
    }
}
