//! Name resolution shared by the probes. IP literals never touch a resolver. Names are looked
//! up in `/etc/hosts`, then through hickory-resolver configured from `/etc/resolv.conf`; both
//! files are read again when they change. Lookups are asynchronous all the way down, so a name
//! server that answers late holds no thread and delays no other probe (the system resolver,
//! `getaddrinfo`, blocks one thread of tokio's shared blocking pool per lookup, and a probe's
//! timeout does not free it). Answers are cached for their TTL, clamped to
//! [`POSITIVE_TTL`] and [`NEGATIVE_TTL`]; concurrent lookups of one name share one query.
//!
//! Every lookup has a budget: [`budget_for`] a probe's timeout, set around the probe by the
//! runner with [`with_budget`]. A lookup past it fails with reason `dns` ("name lookup of
//! NAME took longer than 2s") rather than running into the probe's timeout, so a slow name
//! server is told apart from a slow target. Any other failure here is reason `dns` too.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Hosts, system_conf};
use tracing::warn;

use serde::{Deserialize, Serialize};

use crate::base::outcome::{Failure, Reason};
use crate::base::values::{self, IpPreference};

/// Bounds on how long a found address stays cached, whatever TTL its answer carried: at
/// least a second, so names published with TTL 0 are not asked for by every probe of every
/// service; at most an hour, so a mistaken huge TTL cannot pin an address for days.
pub const POSITIVE_TTL: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

/// Bounds on how long "no such name" and "no address" stay cached: a name that was just
/// created is seen within a minute.
pub const NEGATIVE_TTL: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(60);

/// The budget of lookups made outside a probe (the echo client).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);

/// `defaults: { resolver: ... }`: which name servers to ask and how long answers are kept.
/// The default is the system's: resolv.conf's servers, answers cached for their TTL within
/// [`POSITIVE_TTL`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Name servers to ask instead of resolv.conf's, as `IP` (port 53) or `IP:PORT`
    /// (`[v6]:PORT`); /etc/hosts is still read first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Whether answers are cached for their TTL (`false`: every probe asks).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub cache: bool,
    /// The shortest time an answer is kept, whatever its TTL (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ttl: Option<values::Duration>,
    /// The longest time an answer is kept, whatever its TTL (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<values::Duration>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            nameservers: Vec::new(),
            cache: true,
            min_ttl: None,
            max_ttl: None,
        }
    }
}

impl Settings {
    /// The name servers as socket addresses, or what is wrong with one.
    pub fn servers(&self) -> Result<Vec<SocketAddr>, String> {
        self.nameservers
            .iter()
            .map(|n| {
                let bare = n.trim_start_matches('[').trim_end_matches(']');
                bare.parse::<IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
                    .or_else(|_| n.parse::<SocketAddr>())
                    .map_err(|_| {
                        format!("name server `{n}` is not an IP address or IP:PORT, e.g. `9.9.9.9` or `127.0.0.1:5353` (names cannot be resolved before there is a resolver)")
                    })
            })
            .collect()
    }

    /// Checks what serde cannot: the addresses and the TTL bounds.
    pub fn validate(&self) -> Result<(), String> {
        self.servers()?;
        if let (Some(min), Some(max)) = (self.min_ttl, self.max_ttl) {
            if min.0 > max.0 {
                return Err(format!("min_ttl ({min}) is above max_ttl ({max})"));
            }
        }
        Ok(())
    }

    fn ttl(&self) -> RangeInclusive<Duration> {
        self.min_ttl.map_or(*POSITIVE_TTL.start(), |d| d.0)
            ..=self.max_ttl.map_or(*POSITIVE_TTL.end(), |d| d.0)
    }
}

/// What [`configure`] set last; the system resolver is rebuilt when it changes.
static SETTINGS: Mutex<Option<Settings>> = Mutex::new(None);

/// Uses `settings` for every lookup from now on (start-up and every reload call it with the
/// configuration's `defaults.resolver`, or the default).
pub fn configure(settings: &Settings) {
    let mut current = SETTINGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if current.as_ref() != Some(settings) {
        *current = Some(settings.clone());
        // The next lookup builds a resolver with them.
        *SYSTEM
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

fn settings() -> Settings {
    SETTINGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .unwrap_or_default()
}

/// The most names whose answers are cached (A and AAAA are one entry each).
const CACHE_NAMES: u64 = 262_144;

/// How often the resolver files are checked for changes.
const RECHECK: Duration = Duration::from_secs(5);

/// Distinct names with a lookup in flight at most before finished ones are swept out.
const INFLIGHT_SWEEP: usize = 1024;

/// Where the system keeps its resolver configuration and static names.
const RESOLV_CONF: &str = "/etc/resolv.conf";
const HOSTS: &str = "/etc/hosts";

tokio::task_local! {
    static BUDGET: Duration;
    /// The address an `ip: all` service probes in this round: lookups of its host inside the
    /// probe give this address alone, so every protocol probes it without knowing why.
    static PINNED: (Arc<str>, IpAddr);
}

/// `max_addresses` when `ip: all` is written without it.
pub const DEFAULT_MAX_ADDRESSES: usize = 8;

/// The largest `max_addresses` accepted: each address is a set of series.
pub const MAX_ADDRESSES_LIMIT: usize = 64;

/// `ip: all` (`all-ipv4`, `all-ipv6`): probe every address the name resolves to, each as its
/// own series with an `ip` label, at most `max` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EveryAddress {
    /// The family: `Auto` for both, IPv4 first.
    pub family: IpPreference,
    /// `max_addresses`: the most addresses probed; the lowest ones are kept, so a name server
    /// rotating its answers does not rotate the series.
    pub max: usize,
}

impl EveryAddress {
    /// Parses the value of `ip:` when it asks for every address; `None` for `auto`, `ipv4`,
    /// `ipv6` and anything else, which the protocol's own options read.
    pub fn parse(text: &str) -> Option<IpPreference> {
        match text.trim().to_ascii_lowercase().as_str() {
            "all" => Some(IpPreference::Auto),
            "all-ipv4" => Some(IpPreference::Ipv4),
            "all-ipv6" => Some(IpPreference::Ipv6),
            _ => None,
        }
    }

    /// The value of `ip:` that [`EveryAddress::parse`] reads back.
    pub fn as_str(&self) -> &'static str {
        match self.family {
            IpPreference::Auto => "all",
            IpPreference::Ipv4 => "all-ipv4",
            IpPreference::Ipv6 => "all-ipv6",
        }
    }
}

/// The addresses `host` resolves to for `every`: lowest first, without repeats, at most
/// `every.max`. Fails as a probe does (reason `dns`) when there is none.
pub async fn addresses(host: &str, every: EveryAddress) -> Result<Vec<IpAddr>, Failure> {
    let mut ips: Vec<IpAddr> = resolve(host, 0, every.family)
        .await?
        .into_iter()
        .map(|a| a.ip())
        .collect();
    // IPv4 before IPv6, then by number: a stable choice whatever order the answer had.
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.dedup();
    ips.truncate(every.max.max(1));
    Ok(ips)
}

/// Runs `probe` with lookups of `host` inside it answered by `ip` alone (see
/// [`EveryAddress`]); other names resolve as usual.
pub async fn pinned<F: Future>(host: &str, ip: IpAddr, probe: F) -> F::Output {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    PINNED.scope((Arc::from(bare), ip), probe).await
}

/// The share of a probe's timeout a name lookup may take: two fifths, so that a lookup cut
/// off at its budget leaves the probe most of its time, and the default 5s timeout gives 2s.
pub fn budget_for(timeout: Duration) -> Duration {
    timeout * 2 / 5
}

/// Runs `probe` with name lookups inside it limited to `budget`.
pub async fn with_budget<F: Future>(budget: Duration, probe: F) -> F::Output {
    BUDGET.scope(budget, probe).await
}

/// Resolves `host` to socket addresses with `port`, ordered by preference, never empty.
pub async fn resolve(
    host: &str,
    port: u16,
    pref: IpPreference,
) -> Result<Vec<SocketAddr>, Failure> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return filter(vec![SocketAddr::new(ip, port)], host, pref);
    }
    let pinned = PINNED
        .try_with(|(name, ip)| name.eq_ignore_ascii_case(bare).then_some(*ip))
        .ok()
        .flatten();
    if let Some(ip) = pinned {
        return filter(vec![SocketAddr::new(ip, port)], host, pref);
    }
    let budget = BUDGET.try_with(|b| *b).unwrap_or(DEFAULT_BUDGET);
    let lookups = system();
    let ips = within(budget, host, lookups.lookup(bare, pref, budget)).await?;
    let addrs = ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    filter(addrs, host, pref)
}

/// `lookup` cut off at `budget`, as a probe failure.
async fn within(
    budget: Duration,
    host: &str,
    lookup: impl Future<Output = Result<Vec<IpAddr>, LookupError>>,
) -> Result<Vec<IpAddr>, Failure> {
    match tokio::time::timeout(budget, lookup).await {
        Ok(Ok(ips)) => Ok(ips),
        Ok(Err(LookupError::NoAddress)) => Ok(Vec::new()),
        Ok(Err(e)) if !matches!(e, LookupError::TooSlow(_)) => Err(Failure::new(
            Reason::Dns,
            format!("cannot resolve {host}: {e}"),
        )),
        Ok(Err(_)) | Err(_) => Err(Failure::new(
            Reason::Dns,
            format!(
                "name lookup of {host} took longer than {}",
                humantime::format_duration(Duration::from_millis(
                    u64::try_from(budget.as_millis()).unwrap_or(u64::MAX)
                ))
            ),
        )),
    }
}

fn filter(
    mut addrs: Vec<SocketAddr>,
    host: &str,
    pref: IpPreference,
) -> Result<Vec<SocketAddr>, Failure> {
    match pref {
        IpPreference::Auto => addrs.sort_by_key(|a| a.is_ipv6()),
        IpPreference::Ipv4 => addrs.retain(SocketAddr::is_ipv4),
        IpPreference::Ipv6 => addrs.retain(SocketAddr::is_ipv6),
    }
    if addrs.is_empty() {
        let family = match pref {
            IpPreference::Ipv4 => " IPv4",
            IpPreference::Ipv6 => " IPv6",
            IpPreference::Auto => "",
        };
        return Err(Failure::new(
            Reason::Dns,
            format!("{host} has no{family} address"),
        ));
    }
    Ok(addrs)
}

/// Why a name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The text is not a valid DNS name.
    #[error("not a valid host name ({0})")]
    BadName(String),
    /// NXDOMAIN: the name does not exist.
    #[error("no such name (NXDOMAIN)")]
    NoSuchName,
    /// The name exists but has no address of the family asked for.
    #[error("no address")]
    NoAddress,
    /// The name server answered with an error code.
    #[error("the name server answered {0}")]
    Rcode(String),
    /// No name server answered within the resolver's own timeout.
    #[error("no name server answered")]
    Timeout,
    /// The lookup ran past its budget.
    #[error("the lookup took longer than {0:?}")]
    TooSlow(Duration),
    /// The name servers could not be reached.
    #[error("cannot reach the name servers: {0}")]
    Unreachable(String),
    /// Anything else the resolver reported.
    #[error("{0}")]
    Other(String),
}

impl From<NetError> for LookupError {
    fn from(e: NetError) -> Self {
        use hickory_resolver::net::DnsError;
        match &e {
            NetError::Dns(DnsError::NoRecordsFound(nr)) => match nr.response_code {
                ResponseCode::NXDomain => LookupError::NoSuchName,
                _ => LookupError::NoAddress,
            },
            NetError::Dns(DnsError::ResponseCode(code)) => LookupError::Rcode(code.to_string()),
            NetError::Timeout => LookupError::Timeout,
            NetError::NoConnections => {
                LookupError::Unreachable("no connection could be made".into())
            }
            NetError::Io(io) => LookupError::Unreachable(io.to_string()),
            _ => LookupError::Other(e.to_string()),
        }
    }
}

type LookupResult = Result<Vec<IpAddr>, LookupError>;
type Pending = Shared<BoxFuture<'static, LookupResult>>;

/// Lookups share a query when they ask the same of it: name, record type and budget.
type Key = (String, RecordType, Duration);

/// The resolver with its static names and the lookups in flight.
struct Lookups {
    resolver: TokioResolver,
    hosts: Hosts,
    inflight: Mutex<HashMap<Key, WeakShared<BoxFuture<'static, LookupResult>>>>,
}

impl Lookups {
    /// A resolver over `config` and `options` (as read from resolv.conf) and `hosts`.
    fn new(
        config: ResolverConfig,
        mut options: ResolverOpts,
        hosts: Hosts,
        settings: &Settings,
    ) -> Lookups {
        // /etc/hosts is consulted here first, as a whole: the resolver's own use of it would
        // ask DNS for the AAAA of a name listed with only an IPv4 address.
        options.use_hosts_file = ResolveHosts::Never;
        let ttl = settings.ttl();
        options.positive_min_ttl = Some(*ttl.start());
        options.positive_max_ttl = Some(*ttl.end());
        // hickory keeps 8,192 names by default: with more hostname targets than that, a
        // round of probes evicts the names the next round needs and every lookup misses
        // (measured: 3,246 of 10,000 names asked again within their TTL). The cache only
        // grows with the names asked for.
        options.cache_size = if settings.cache { CACHE_NAMES } else { 0 };
        options.negative_min_ttl = Some(*NEGATIVE_TTL.start());
        options.negative_max_ttl = Some(*NEGATIVE_TTL.end());
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build();
        let resolver = match resolver {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "the configured name servers cannot be used; using none");
                // Without name servers every name outside /etc/hosts fails with a reason.
                TokioResolver::builder_with_config(
                    ResolverConfig::default(),
                    TokioRuntimeProvider::default(),
                )
                .build()
                .expect("a resolver without name servers always builds")
            }
        };
        Lookups {
            resolver,
            hosts,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The addresses of `name` of the families `pref` allows, within `budget`; empty when it
    /// has none.
    async fn lookup(&self, name: &str, pref: IpPreference, budget: Duration) -> LookupResult {
        let parsed = Name::from_str(name).map_err(|e| LookupError::BadName(e.to_string()))?;
        let types: &[RecordType] = match pref {
            IpPreference::Auto => &[RecordType::A, RecordType::AAAA],
            IpPreference::Ipv4 => &[RecordType::A],
            IpPreference::Ipv6 => &[RecordType::AAAA],
        };
        // As glibc's "files" source: a name listed in /etc/hosts with an address of a family
        // asked for is answered from there alone.
        let listed: Vec<IpAddr> = types
            .iter()
            .filter_map(|t| {
                self.hosts
                    .lookup_static_host(&Query::query(parsed.clone(), *t))
            })
            .flat_map(|l| {
                l.answers()
                    .iter()
                    .filter_map(|r| r.data.ip_addr())
                    .collect::<Vec<_>>()
            })
            .collect();
        if !listed.is_empty() {
            return Ok(listed);
        }
        let results = futures_util::future::join_all(
            types.iter().map(|t| self.shared(name, &parsed, *t, budget)),
        )
        .await;
        let mut ips = Vec::new();
        let mut first_error = None;
        for r in results {
            match r {
                Ok(found) => ips.extend(found),
                Err(LookupError::NoAddress) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if ips.is_empty() => Err(e),
            _ => Ok(ips),
        }
    }

    /// The lookup of `name` for `rtype`, joined with the one in flight if there is one. The
    /// query itself stops at `budget`: an answer later than that is a failure for every lookup
    /// that waited on it, however late it joined, and is not cached.
    fn shared(&self, name: &str, parsed: &Name, rtype: RecordType, budget: Duration) -> Pending {
        let key = (name.to_ascii_lowercase(), rtype, budget);
        let mut inflight = self
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = inflight.get(&key).and_then(WeakShared::upgrade) {
            return p;
        }
        if inflight.len() >= INFLIGHT_SWEEP {
            inflight.retain(|_, w| w.upgrade().is_some());
        }
        let resolver = self.resolver.clone();
        let parsed = parsed.clone();
        let lookup: BoxFuture<'static, LookupResult> = async move {
            let found = tokio::time::timeout(budget, resolver.lookup(parsed, rtype))
                .await
                .map_err(|_| LookupError::TooSlow(budget))??;
            Ok(found
                .answers()
                .iter()
                .filter_map(|r| r.data.ip_addr())
                .collect())
        }
        .boxed();
        let pending = lookup.shared();
        if let Some(weak) = pending.downgrade() {
            inflight.insert(key, weak);
        }
        pending
    }
}

/// What the resolver was built from, to notice when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<(SystemTime, u64)>>);

impl Stamp {
    fn of(paths: &[&Path]) -> Stamp {
        Stamp(
            paths
                .iter()
                .map(|p| {
                    let m = std::fs::metadata(p).ok()?;
                    Some((m.modified().ok()?, m.len()))
                })
                .collect(),
        )
    }
}

struct Loaded {
    runtime: tokio::runtime::Id,
    lookups: Arc<Lookups>,
    stamp: Stamp,
    checked: Instant,
}

static SYSTEM: Mutex<Option<Loaded>> = Mutex::new(None);

/// The resolver built from the system's files, for the current runtime (the resolver's
/// sockets belong to one), rebuilt when a file changed.
fn system() -> Arc<Lookups> {
    let runtime = tokio::runtime::Handle::current().id();
    let mut slot = SYSTEM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let files = [Path::new(RESOLV_CONF), Path::new(HOSTS)];
    if let Some(l) = slot.as_mut().filter(|l| l.runtime == runtime) {
        if l.checked.elapsed() < RECHECK {
            return l.lookups.clone();
        }
        l.checked = Instant::now();
        let stamp = Stamp::of(&files);
        if stamp == l.stamp {
            return l.lookups.clone();
        }
    }
    let stamp = Stamp::of(&files);
    let settings = settings();
    let configured = settings.servers().unwrap_or_default();
    let (config, options) = if !configured.is_empty() {
        let mut config = ResolverConfig::default();
        config.name_servers = configured
            .iter()
            .map(|a| {
                let mut ns = NameServerConfig::udp_and_tcp(a.ip());
                for c in &mut ns.connections {
                    c.port = a.port();
                }
                ns
            })
            .collect();
        (config, ResolverOpts::default())
    } else {
        match system_conf::read_system_conf() {
            Ok(c) => c,
            Err(e) => {
                // glibc's rule when resolv.conf names no server: ask the local machine.
                warn!(file = RESOLV_CONF, error = %e, "cannot read the resolver configuration; asking 127.0.0.1");
                let mut config = ResolverConfig::default();
                config.name_servers =
                    vec![NameServerConfig::udp_and_tcp(IpAddr::from([127, 0, 0, 1]))];
                (config, ResolverOpts::default())
            }
        }
    };
    let hosts = Hosts::from_system().unwrap_or_default();
    let lookups = Arc::new(Lookups::new(config, options, hosts, &settings));
    *slot = Some(Loaded {
        runtime,
        lookups: lookups.clone(),
        stamp,
        checked: Instant::now(),
    });
    lookups
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET_2S: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn literals_skip_the_resolver_and_respect_the_family() {
        let a = resolve("127.0.0.1", 80, IpPreference::Auto).await.unwrap();
        assert_eq!(a, vec!["127.0.0.1:80".parse().unwrap()]);
        let a = resolve("[::1]", 80, IpPreference::Auto).await.unwrap();
        assert_eq!(a, vec!["[::1]:80".parse().unwrap()]);
        let e = resolve("127.0.0.1", 80, IpPreference::Ipv6)
            .await
            .unwrap_err();
        assert_eq!(e.reason, Reason::Dns);
        assert!(e.message.contains("no IPv6 address"), "{}", e.message);
    }

    #[tokio::test]
    async fn unknown_names_fail_with_reason_dns() {
        let e = with_budget(
            Duration::from_secs(3),
            resolve("no-such-host.invalid", 80, IpPreference::Auto),
        )
        .await
        .unwrap_err();
        assert_eq!(e.reason, Reason::Dns);
    }

    #[test]
    fn the_budget_is_two_fifths_of_the_timeout() {
        assert_eq!(budget_for(Duration::from_secs(5)), Duration::from_secs(2));
        assert_eq!(
            budget_for(Duration::from_millis(1500)),
            Duration::from_millis(600)
        );
    }

    /// A name server on 127.0.0.1 that answers every query with `answer` (A queries only)
    /// after `delay`, counting the queries it received.
    fn name_server(delay: Duration, answer: Option<[u8; 4]>) -> testkit::dns::Server {
        use testkit::dns::{NOERROR, Query, Server};
        Server::start(move |bytes, _| {
            let Some(q) = Query::parse(bytes) else {
                return Vec::new();
            };
            let ips: Vec<std::net::Ipv4Addr> = answer.into_iter().map(Into::into).collect();
            vec![(delay, q.answer(NOERROR, &ips, 300))]
        })
    }

    fn lookups_at(port: u16, hosts: &str) -> Lookups {
        let mut ns = NameServerConfig::udp(IpAddr::from([127, 0, 0, 1]));
        for c in &mut ns.connections {
            c.port = port;
        }
        let mut config = ResolverConfig::default();
        config.name_servers = vec![ns];
        let mut static_names = Hosts::default();
        static_names.read_hosts_conf(hosts.as_bytes()).unwrap();
        Lookups::new(
            config,
            ResolverOpts::default(),
            static_names,
            &Settings::default(),
        )
    }

    #[tokio::test]
    async fn a_late_answer_is_reason_dns_with_the_budget_in_the_message() {
        let server = name_server(Duration::from_secs(3), Some([192, 0, 2, 1]));
        let port = server.port();
        let lookups = lookups_at(port, "");
        let started = Instant::now();
        let e = within(
            Duration::from_millis(300),
            "slow.test",
            lookups.lookup("slow.test", IpPreference::Ipv4, Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(e.reason, Reason::Dns);
        assert_eq!(e.message, "name lookup of slow.test took longer than 300ms");
        drop(server);
    }

    #[tokio::test]
    async fn a_lookup_joined_late_fails_with_the_query_it_joined() {
        let server = name_server(Duration::from_millis(600), Some([192, 0, 2, 1]));
        let port = server.port();
        let lookups = lookups_at(port, "");
        let budget = Duration::from_millis(400);
        let first = lookups.lookup("late.test", IpPreference::Ipv4, budget);
        let second = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            lookups
                .lookup("late.test", IpPreference::Ipv4, budget)
                .await
        };
        let (a, b) = futures_util::future::join(first, second).await;
        assert_eq!(a, Err(LookupError::TooSlow(budget)));
        assert_eq!(b, Err(LookupError::TooSlow(budget)));
        // The resolver may send the query again (UDP retransmission), never a second lookup.
        assert!(server.udp_queries() >= 1);
        drop(server);
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_name_share_one_query_and_the_answer_is_cached() {
        let server = name_server(Duration::from_millis(100), Some([192, 0, 2, 7]));
        let port = server.port();
        let lookups = lookups_at(port, "");
        let all = futures_util::future::join_all(
            (0..50).map(|_| lookups.lookup("shared.test", IpPreference::Ipv4, BUDGET_2S)),
        )
        .await;
        for r in all {
            assert_eq!(r.unwrap(), vec![IpAddr::from([192, 0, 2, 7])]);
        }
        assert_eq!(server.udp_queries(), 1);
        let again = lookups
            .lookup("shared.test", IpPreference::Ipv4, BUDGET_2S)
            .await
            .unwrap();
        assert_eq!(again, vec![IpAddr::from([192, 0, 2, 7])]);
        assert_eq!(server.udp_queries(), 1, "answered from the cache");
        drop(server);
    }

    #[tokio::test]
    async fn hosts_entries_answer_alone_and_the_family_is_respected() {
        // A name server that never answers in time: a listed name must not wait for it.
        let server = name_server(Duration::from_secs(30), None);
        let port = server.port();
        let lookups = lookups_at(port, "127.0.0.1 fast.test\n::1 six.test\n");
        let v4 = lookups
            .lookup("fast.test", IpPreference::Auto, BUDGET_2S)
            .await
            .unwrap();
        assert_eq!(v4, vec![IpAddr::from([127, 0, 0, 1])]);
        let v6 = lookups
            .lookup("six.test", IpPreference::Ipv6, BUDGET_2S)
            .await
            .unwrap();
        assert_eq!(v6, vec!["::1".parse::<IpAddr>().unwrap()]);
        assert_eq!(server.udp_queries(), 0);
        drop(server);
    }

    #[tokio::test]
    async fn a_name_without_the_family_asked_for_says_so() {
        let server = name_server(Duration::ZERO, Some([192, 0, 2, 9]));
        let port = server.port();
        let lookups = lookups_at(port, "");
        let ips = within(
            Duration::from_secs(2),
            "v4only.test",
            lookups.lookup("v4only.test", IpPreference::Ipv6, BUDGET_2S),
        )
        .await
        .unwrap();
        let addrs = ips.into_iter().map(|ip| SocketAddr::new(ip, 80)).collect();
        let e = filter(addrs, "v4only.test", IpPreference::Ipv6).unwrap_err();
        assert_eq!(e.message, "v4only.test has no IPv6 address");
        drop(server);
    }
}
