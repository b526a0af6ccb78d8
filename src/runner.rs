//! The scheduler: one tokio task per (target, service).
//!
//! Each task runs its probe on absolute deadlines (`first + k * interval`, skipping missed
//! ones, so nothing drifts over hours), under a timeout, behind a global cap on probes in
//! flight. The first round is spread over a few seconds by a hash of the service's identity
//! (five at start-up, one for the few services a reload starts), and later rounds over the
//! whole interval, so thousands of services never fire at once and a restart keeps each one's
//! phase. What every probe shares is done here once: the timeout, timing, the common metrics,
//! the status shown on `/` and the UP/DOWN log lines.
//!
//! [`Monitor::apply`] reconciles the running tasks with a new config: unchanged services keep
//! running (and their counters), removed ones stop and their series vanish, new ones start.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span};

use crate::base::labels::Labels;
use crate::base::outcome::{Failure, Outcome, Reason, Target, detail_of, round_of};
use crate::base::resolve;
use crate::base::round::Round;
use crate::base::shard::Shard;
use crate::config::error::{ConfigError, ConfigErrors};
use crate::config::model::{Config, Service};
use crate::metrics::{Metrics, ServiceMetrics, unix_now};
use crate::probe;
use crate::probe::shape::Probe;
use crate::status::history::{History, Summary};

/// How long the first round of probes is spread over at start-up.
pub const FIRST_ROUND_SPREAD: Duration = Duration::from_secs(5);

/// The shortest first-round spread of the services a reload (or the console) starts. A reload
/// usually starts a few services, and they should report within a second; the spread grows
/// with their share of all services (see [`reload_spread`]), so a reload never starts probes
/// faster than start-up does.
pub const RELOAD_SPREAD: Duration = Duration::from_secs(1);

/// The first-round spread for `starting` services out of `total`: [`FIRST_ROUND_SPREAD`] scaled
/// by their share, at least [`RELOAD_SPREAD`]. Starting everything (start-up) gets the full
/// spread; a tenth gets one second, the same rate of first probes per second as start-up or less.
pub fn reload_spread(starting: usize, total: usize) -> Duration {
    let share = starting as f64 / total.max(1) as f64;
    FIRST_ROUND_SPREAD
        .mul_f64(share.min(1.0))
        .max(RELOAD_SPREAD)
}

/// A service's identity: host and `service` label.
pub type ServiceKey = (String, String);

/// What the landing page and the console show about a service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusView {
    /// `None` until the first result.
    pub up: Option<bool>,
    /// Latency of the last successful probe.
    pub latency: Option<Duration>,
    /// The last failure, kept after recovery until the next failure replaces it.
    pub last_error: Option<String>,
    /// Whether the last probe failed (so `last_error` is current).
    pub failing: bool,
    /// When the last probe finished.
    pub last_check: Option<SystemTime>,
    /// Packet loss of the last probe, 0 to 1, where the protocol sends rounds.
    pub loss: Option<f64>,
    /// What the last probe saw beyond up and latency (a traceroute's path).
    pub detail: Option<String>,
}

/// Shared between a service task and the readers of its status.
#[derive(Debug)]
pub struct Status {
    view: Mutex<StatusView>,
    paused: AtomicBool,
    /// The last results, for the status page; its ring is allocated here, once.
    history: Mutex<History>,
}

impl Status {
    /// The status of a service probed every `interval`, before its first result, keeping at
    /// most `history_results` results.
    pub fn new(interval: Duration, history_results: usize) -> Self {
        Status {
            view: Mutex::default(),
            paused: AtomicBool::new(false),
            history: Mutex::new(History::new(interval, history_results)),
        }
    }

    /// A copy of the current view.
    pub fn view(&self) -> StatusView {
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Whether probing is paused.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Records a result in the history as the service's task does, for the readers' tests.
    #[cfg(test)]
    pub(crate) fn push_history(&self, at: SystemTime, latency: Option<Duration>) {
        if let Ok(mut h) = self.history.lock() {
            h.push(at, latency);
        }
    }

    /// The results of the last day (see [`History::summary`]).
    pub fn history(&self, now: SystemTime) -> Summary {
        self.history
            .lock()
            .map(|h| h.summary(now))
            .unwrap_or_default()
    }
}

/// One row of [`Monitor::status`].
#[derive(Debug, Clone)]
pub struct ServiceStatus {
    /// The service's config.
    pub service: Service,
    /// Whether it is paused.
    pub paused: bool,
    /// Its last results.
    pub view: StatusView,
    /// The status shared with its task, to read the history after the monitor's lock is let
    /// go: summing a day of results for every service is not work to do under it.
    pub live: Arc<Status>,
}

/// What [`Monitor::apply`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Services started.
    pub added: usize,
    /// Services stopped.
    pub removed: usize,
    /// Services whose config changed (restarted).
    pub changed: usize,
    /// Services left running untouched.
    pub kept: usize,
    /// Services that passed [`validate`] but still could not start (the machine changed in
    /// between, e.g. no file descriptor left), each located at the service.
    pub failed: Vec<ConfigError>,
}

struct Running {
    service: Service,
    /// The service's results; for `ip: all`, its paused flag (which pauses every address)
    /// and the row shown before its name first resolves.
    status: Arc<Status>,
    work: Work,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

/// What a service task probes each round.
#[derive(Clone)]
enum Work {
    /// The one address the protocol picks (the usual case).
    One {
        target: Target,
        probe: Arc<dyn Probe>,
        metrics: ServiceMetrics,
    },
    /// `ip: all`: every address the host resolves to.
    Each(Arc<EachAddress>),
}

/// An `ip: all` service: the addresses its host resolved to last, each probed as a service
/// of its own whose series carry an `ip` label. Addresses that appear or vanish between
/// lookups add or remove their series as a reload would.
struct EachAddress {
    service: Service,
    every: resolve::EveryAddress,
    all: Arc<Metrics>,
    history_results: usize,
    addresses: Mutex<Vec<Arc<Address>>>,
}

/// One address of an [`EachAddress`] service.
struct Address {
    /// `None` while the name has not resolved: the failure still needs a series (`ip=""`,
    /// which PromQL reads as no `ip` label).
    ip: Option<IpAddr>,
    /// The service with this address's `ip` label.
    service: Service,
    probe: Arc<dyn Probe>,
    metrics: ServiceMetrics,
    status: Arc<Status>,
}

impl EachAddress {
    fn current(&self) -> Vec<Arc<Address>> {
        self.addresses.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Makes the probed addresses `ips`, or, when the name did not resolve (`None`), keeps
    /// the last ones (or the unresolved row when there are none yet).
    fn reconcile(&self, ips: Option<&[IpAddr]>) {
        let Ok(mut addresses) = self.addresses.lock() else {
            return;
        };
        let wanted: Vec<Option<IpAddr>> = match ips {
            Some(ips) => ips.iter().copied().map(Some).collect(),
            None if addresses.is_empty() => vec![None],
            None => return,
        };
        addresses.retain(|a| {
            let keep = wanted.contains(&a.ip);
            if !keep {
                if let Some(ip) = a.ip {
                    info!(%ip, "address no longer resolved: its series are removed");
                }
                a.metrics.remove();
                a.probe.forget();
            }
            keep
        });
        for ip in wanted {
            if addresses.iter().any(|a| a.ip == ip) {
                continue;
            }
            match self.address(ip) {
                Ok(a) => {
                    if let Some(ip) = ip {
                        info!(%ip, "address resolved: probing it");
                    }
                    addresses.push(Arc::new(a));
                }
                // The options built when the config was checked; only the machine can
                // refuse now (no file descriptor left): the next round tries again.
                Err(e) => error!(ip = ?ip, error = %e, "cannot start probing an address"),
            }
        }
        addresses.sort_by_key(|a| a.ip.map(|ip| (ip.is_ipv6(), ip)));
    }

    fn address(&self, ip: Option<IpAddr>) -> Result<Address, probe::shape::BuildError> {
        let mut service = self.service.clone();
        service
            .labels
            .insert("ip".into(), ip.map(|ip| ip.to_string()).unwrap_or_default());
        let labels = labels_of(&service);
        let metrics = self.all.service(labels.clone());
        let ctx = probe::shape::Context {
            labels: &labels,
            timeout: service.timeout,
            rtt_buckets: service.rtt_buckets.as_deref(),
        };
        let probe = probe::build(&service.options, &ctx, &self.all.probe).inspect_err(|_| {
            metrics.remove();
        })?;
        Ok(Address {
            ip,
            status: Arc::new(Status::new(service.interval, self.history_results)),
            service,
            probe,
            metrics,
        })
    }

    /// Resolves the host, then probes every address at once. The outcome is the first
    /// failure, else the first success.
    async fn round(&self, limit: &Semaphore, cap: usize) -> Outcome {
        let host = &self.service.host;
        let timeout = self.service.timeout;
        let start = Instant::now();
        let found = resolve::with_budget(
            resolve::budget_for(timeout),
            resolve::addresses(host, self.every),
        )
        .await;
        let looked_up = start.elapsed();
        let failure = match &found {
            Ok(ips) => {
                self.reconcile(Some(ips));
                None
            }
            Err(f) => {
                self.reconcile(None);
                Some(f.clone())
            }
        };
        let addresses = self.current();
        if let Some(f) = failure {
            // No fresh answer: every address known is reported with the lookup's failure,
            // as a one-address service would be.
            let outcome = Err(f);
            for a in &addresses {
                let span = info_span!("address", ip = %a.label());
                span.in_scope(|| record(&outcome, start.elapsed(), &a.metrics, &a.status));
            }
            return outcome;
        }
        let wanted = u32::try_from(addresses.len().clamp(1, cap.max(1))).unwrap_or(1);
        let Ok(_permits) = limit.acquire_many(wanted).await else {
            return Err(Failure::new(Reason::Timeout, "netmon is stopping"));
        };
        // Dropped with the round too (the service stopped mid-round).
        let in_flight = &self.all.in_flight;
        in_flight.inc_by(i64::from(wanted));
        let _in_flight = scopeguard(move || {
            in_flight.dec_by(i64::from(wanted));
        });
        let target = Target { host: host.clone() };
        // The lookup is part of the round, as it is inside a one-address probe: what is left
        // of the timeout is each address's.
        let timeout = timeout.saturating_sub(looked_up);
        let rounds = addresses.iter().map(|a| {
            let ip = a.ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let span = info_span!("address", ip = %a.label());
            resolve::pinned(
                host,
                ip,
                execute(&*a.probe, &target, timeout, &a.metrics, &a.status),
            )
            .instrument(span)
        });
        let outcomes = futures_util::future::join_all(rounds).await;
        let first_failure = outcomes.iter().position(Result::is_err).unwrap_or(0);
        outcomes
            .into_iter()
            .nth(first_failure)
            .unwrap_or_else(|| Err(Failure::new(Reason::Dns, format!("{host} has no address"))))
    }

    /// Removes every address's series.
    fn forget(&self) {
        if let Ok(mut addresses) = self.addresses.lock() {
            for a in addresses.drain(..) {
                a.metrics.remove();
                a.probe.forget();
            }
        }
    }
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

impl Address {
    /// The `ip` label's value.
    fn label(&self) -> String {
        self.ip.map(|ip| ip.to_string()).unwrap_or_default()
    }
}

/// The set of running service tasks.
pub struct Monitor {
    metrics: Arc<Metrics>,
    limit: Arc<Semaphore>,
    services: BTreeMap<ServiceKey, Running>,
    /// The first-round spread of the next services started (see [`reload_spread`]).
    spread: Duration,
    /// The most results each service's history keeps.
    history_results: usize,
    /// This instance's site label and shard.
    placement: Placement,
    /// The size of `limit`.
    max_in_flight: usize,
}

/// Where this instance stands among others probing the same config: a `site` label for every
/// probe series (`--site`) and the shard whose services it probes (`--shard.index`,
/// `--shard.count`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The `site` label added to every service that does not set one itself.
    pub site: Option<String>,
    /// The shard; `None` probes every service.
    pub shard: Option<Shard>,
}

impl Placement {
    /// The services of `config` this instance probes, with the site label added.
    pub fn services<'c>(&self, config: &'c Config) -> Vec<Cow<'c, Service>> {
        config
            .services()
            .filter(|s| self.shard.is_none_or(|shard| shard.owns(&s.host, &s.name)))
            .map(|s| match &self.site {
                Some(site) if !s.labels.contains_key("site") => {
                    let mut placed = s.clone();
                    placed.labels.insert("site".into(), site.clone());
                    Cow::Owned(placed)
                }
                _ => Cow::Borrowed(s),
            })
            .collect()
    }
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("services", &self.services.len())
            .finish()
    }
}

/// The `host`, `protocol`, `service` labels plus the configured ones.
pub fn labels_of(service: &Service) -> Labels {
    let mut l = vec![
        ("host".to_string(), service.host.clone()),
        (
            "protocol".to_string(),
            service.protocol.as_str().to_string(),
        ),
        ("service".to_string(), service.name.clone()),
    ];
    l.extend(service.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    l
}

fn key_of(service: &Service) -> ServiceKey {
    (service.host.clone(), service.name.clone())
}

/// Where in `[0, 1)` this service's phase lies: stable across restarts, spread by a hash.
fn phase_fraction(key: &ServiceKey) -> f64 {
    // FNV-1a: std's SipHash is randomly keyed per process, and phases must survive restarts.
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    key.hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The planned start times of a service: the first soon, later ones on a fixed grid.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    next: Instant,
    anchor: Instant,
    interval: Duration,
}

impl Schedule {
    /// A schedule starting at `now` for a service at `fraction` of its interval, its first
    /// run within [`FIRST_ROUND_SPREAD`].
    pub fn new(now: Instant, interval: Duration, fraction: f64) -> Self {
        Self::with_spread(now, interval, fraction, FIRST_ROUND_SPREAD)
    }

    /// As [`Schedule::new`], with the first run within `spread` (shorter after a reload).
    pub fn with_spread(now: Instant, interval: Duration, fraction: f64, spread: Duration) -> Self {
        let anchor = now + interval.mul_f64(fraction);
        // A phase within the spread window is its own first run; a later phase gets an early
        // first run inside the window, then joins its grid point.
        let first = if interval.mul_f64(fraction) <= spread {
            anchor
        } else {
            now + spread.mul_f64(fraction)
        };
        Schedule {
            next: first,
            anchor,
            interval,
        }
    }

    /// The next planned start.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Moves to the first grid point after both the current one and `now`, skipping any that
    /// were missed (a late probe never causes a burst of catch-up probes).
    pub fn advance(&mut self, now: Instant) {
        let after = self.next.max(now);
        let since = after.saturating_duration_since(self.anchor);
        let k = (since.as_nanos() / self.interval.as_nanos().max(1)) as u32;
        let mut t = self.anchor + self.interval * k;
        while t <= after {
            t += self.interval;
        }
        self.next = t;
    }
}

impl Monitor {
    /// An empty monitor; `max_in_flight` caps concurrent probes across all services.
    pub fn new(metrics: Arc<Metrics>, max_in_flight: usize) -> Self {
        Monitor {
            metrics,
            limit: Arc::new(Semaphore::new(max_in_flight.max(1))),
            max_in_flight: max_in_flight.max(1),
            services: BTreeMap::new(),
            spread: RELOAD_SPREAD,
            history_results: crate::status::history::MAX_RESULTS,
            placement: Placement::default(),
        }
    }

    /// This monitor placed among others: a site label, a shard (see [`Placement`]).
    pub fn with_placement(self, placement: Placement) -> Self {
        Monitor { placement, ..self }
    }

    /// This monitor with services keeping at most `n` results each for the status page
    /// (`--status.history-results`; 0 keeps none), for the services started from now on.
    pub fn with_history_results(self, n: usize) -> Self {
        Monitor {
            history_results: n,
            ..self
        }
    }

    /// The metrics this monitor writes.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Checks that every service `config` would start (new or changed ones; running ones
    /// stay) builds, without changing anything.
    pub fn check(&self, config: &Config) -> Result<(), ConfigErrors> {
        let placed = self.placement.services(config);
        let starting = placed.iter().map(|s| s.as_ref()).filter(|s| {
            self.services
                .get(&key_of(s))
                .is_none_or(|r| r.service != **s)
        });
        let errors = validate(starting);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors::capped(errors))
        }
    }

    /// Reconciles the running services with `config`, all or nothing: when any service to
    /// start fails [`Monitor::check`], nothing changes and the errors say why.
    pub async fn apply(&mut self, config: &Config) -> Result<Changes, ConfigErrors> {
        self.check(config)?;
        Ok(self.apply_checked(config).await)
    }

    /// [`Monitor::apply`] for a `config` that has just passed [`Monitor::check`] (start-up and
    /// reloads check first, then start the echo server, then apply): every service is built
    /// once more only to start it. A service that fails now is in [`Changes::failed`].
    pub async fn apply_checked(&mut self, config: &Config) -> Changes {
        let mut changes = Changes::default();
        let placed = self.placement.services(config);
        let wanted: BTreeMap<ServiceKey, &Service> =
            placed.iter().map(|s| (key_of(s), s.as_ref())).collect();
        let stale: Vec<ServiceKey> = self
            .services
            .iter()
            .filter(|(k, r)| wanted.get(*k).is_none_or(|s| **s != r.service))
            .map(|(k, _)| k.clone())
            .collect();
        // Cancel every stale task first and only then wait for them: waiting one by one made
        // a reload of hundreds of services take seconds.
        let mut stopping = Vec::with_capacity(stale.len());
        for key in stale {
            if wanted.contains_key(&key) {
                changes.changed += 1;
            } else {
                changes.removed += 1;
            }
            if let Some(r) = self.services.remove(&key) {
                r.cancel.cancel();
                stopping.push(r);
            }
        }
        for r in stopping {
            finish(r).await;
        }
        let starting = wanted
            .keys()
            .filter(|k| !self.services.contains_key(*k))
            .count();
        self.spread = reload_spread(starting, wanted.len());
        for (key, service) in wanted {
            if self.services.contains_key(&key) {
                changes.kept += 1;
                continue;
            }
            if let Err(e) = self.start(service.clone()) {
                changes.failed.push(build_error(service, &e));
            }
        }
        changes.added = self.services.len() - changes.kept - changes.changed;
        self.metrics
            .shard_services
            .set(i64::try_from(self.services.len()).unwrap_or(i64::MAX));
        // A service the console adds alone starts within the shortest spread.
        self.spread = RELOAD_SPREAD;
        changes
    }

    /// Starts one service's task.
    pub fn start(&mut self, service: Service) -> Result<(), probe::shape::BuildError> {
        let key = key_of(&service);
        let work = match service.addresses {
            Some(every) => {
                // Built once against scratch families, so a refusal is reported at start as
                // for any service; each address builds its own probe when it resolves.
                if let Some(e) = validate([&service]).into_iter().next() {
                    return Err(probe::shape::BuildError(e.message));
                }
                Work::Each(Arc::new(EachAddress {
                    service: service.clone(),
                    every,
                    all: self.metrics.clone(),
                    history_results: self.history_results,
                    addresses: Mutex::new(Vec::new()),
                }))
            }
            None => {
                let labels = labels_of(&service);
                let metrics = self.metrics.service(labels.clone());
                let ctx = probe::shape::Context {
                    labels: &labels,
                    timeout: service.timeout,
                    rtt_buckets: service.rtt_buckets.as_deref(),
                };
                let probe = match probe::build(&service.options, &ctx, &self.metrics.probe) {
                    Ok(p) => p,
                    Err(e) => {
                        metrics.remove();
                        return Err(e);
                    }
                };
                Work::One {
                    target: Target {
                        host: service.host.clone(),
                    },
                    probe,
                    metrics,
                }
            }
        };
        let status = Arc::new(Status::new(service.interval, self.history_results));
        let cancel = CancellationToken::new();
        let task = Task {
            timeout: service.timeout,
            work: work.clone(),
            status: status.clone(),
            cancel: cancel.clone(),
            limit: self.limit.clone(),
            cap: self.max_in_flight,
            all: self.metrics.clone(),
        };
        let span = info_span!(
            "service",
            host = %service.host,
            protocol = %service.protocol,
            service = %service.name
        );
        let schedule = Schedule::with_spread(
            Instant::now(),
            service.interval,
            phase_fraction(&key),
            self.spread,
        );
        let handle = tokio::spawn(task.run(schedule).instrument(span));
        self.services.insert(
            key,
            Running {
                service,
                status,
                work,
                cancel,
                handle,
            },
        );
        Ok(())
    }

    /// Stops a service, waits for its task, and removes its series. False if unknown.
    pub async fn stop(&mut self, key: &ServiceKey) -> bool {
        let Some(r) = self.services.remove(key) else {
            return false;
        };
        r.cancel.cancel();
        finish(r).await;
        true
    }

    /// Stops every service.
    pub async fn stop_all(&mut self) {
        let keys: Vec<ServiceKey> = self.services.keys().cloned().collect();
        for k in keys {
            self.stop(&k).await;
        }
    }

    /// Every service with its status, ordered by host then service.
    /// An `ip: all` service has a row per address (its `service.labels` has the `ip`).
    pub fn status(&self) -> Vec<ServiceStatus> {
        let mut rows = Vec::with_capacity(self.services.len());
        for r in self.services.values() {
            let paused = r.status.paused();
            let addresses = match &r.work {
                Work::Each(each) => each.current(),
                Work::One { .. } => Vec::new(),
            };
            if addresses.is_empty() {
                rows.push(ServiceStatus {
                    service: r.service.clone(),
                    paused,
                    view: r.status.view(),
                    live: r.status.clone(),
                });
            }
            rows.extend(addresses.iter().map(|a| ServiceStatus {
                service: a.service.clone(),
                paused,
                view: a.status.view(),
                live: a.status.clone(),
            }));
        }
        rows
    }

    /// The configs of the running services, ordered by host then service.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values().map(|r| &r.service)
    }

    /// Pauses or resumes the services of `host` (all of them, or the one named `service`).
    /// Returns how many matched.
    pub fn set_paused(&self, host: Option<&str>, service: Option<&str>, paused: bool) -> usize {
        let mut n = 0;
        for ((h, s), r) in &self.services {
            if host.is_none_or(|x| x == h) && service.is_none_or(|x| x == s) {
                r.status.paused.store(paused, Ordering::Relaxed);
                n += 1;
            }
        }
        n
    }

    /// Probes one service now, outside its schedule, recording the result as usual.
    /// An `ip: all` service probes every address; the outcome is the first failure.
    pub async fn check_now(&self, key: &ServiceKey) -> Option<Outcome> {
        let r = self.services.get(key)?;
        Some(match &r.work {
            Work::One {
                target,
                probe,
                metrics,
            } => execute(&**probe, target, r.service.timeout, metrics, &r.status).await,
            Work::Each(each) => each.round(&self.limit, self.max_in_flight).await,
        })
    }
}

/// Waits for a cancelled service's task, then removes its series (after, so the task cannot
/// recreate one).
/// Builds the probe of every service in `services` as starting it would, but against a
/// scratch registry and without running it, and returns every failure located at its service.
/// `config check`, start-up and every reload call it before anything changes, so a file that
/// `config check` accepts starts.
pub fn validate<'a>(services: impl IntoIterator<Item = &'a Service>) -> Vec<ConfigError> {
    let mut registry = prometheus_client::registry::Registry::default();
    let scratch = probe::ProbeMetrics::register(&mut registry);
    services
        .into_iter()
        .filter_map(|s| {
            let labels = labels_of(s);
            let ctx = probe::shape::Context {
                labels: &labels,
                timeout: s.timeout,
                rtt_buckets: s.rtt_buckets.as_deref(),
            };
            match probe::build(&s.options, &ctx, &scratch) {
                // Its series in the scratch families go with it; kept, they added up to
                // some 2 KiB per http service over a large file.
                Ok(p) => {
                    p.forget();
                    None
                }
                Err(e) => Some(build_error(s, &e)),
            }
        })
        .collect()
}

fn build_error(s: &Service, e: &probe::shape::BuildError) -> ConfigError {
    ConfigError {
        file: s.origin.file.to_string(),
        line: s.origin.line,
        column: s.origin.column,
        message: format!("{} service on `{}`: {e}", s.protocol, s.host),
    }
}

async fn finish(r: Running) {
    let _ = r.handle.await;
    match r.work {
        Work::One { probe, metrics, .. } => {
            metrics.remove();
            probe.forget();
        }
        Work::Each(each) => each.forget(),
    }
}

struct Task {
    timeout: Duration,
    work: Work,
    status: Arc<Status>,
    cancel: CancellationToken,
    limit: Arc<Semaphore>,
    /// The limit's size: an `ip: all` round takes at most this many permits.
    cap: usize,
    all: Arc<Metrics>,
}

impl Task {
    async fn run(self, mut schedule: Schedule) {
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep_until(schedule.next()) => {}
            }
            let now = Instant::now();
            self.all
                .lateness
                .observe(now.saturating_duration_since(schedule.next()).as_secs_f64());
            match &self.work {
                _ if self.status.paused() => {}
                Work::Each(each) => tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => return,
                    _ = each.round(&self.limit, self.cap) => {}
                },
                Work::One {
                    target,
                    probe,
                    metrics,
                } => {
                    let permit = tokio::select! {
                        biased;
                        _ = self.cancel.cancelled() => return,
                        p = self.limit.acquire() => p,
                    };
                    let Ok(_permit) = permit else { return };
                    self.all.in_flight.inc();
                    tokio::select! {
                        biased;
                        _ = self.cancel.cancelled() => {
                            self.all.in_flight.dec();
                            return;
                        }
                        _ = execute(&**probe, target, self.timeout, metrics, &self.status) => {}
                    }
                    self.all.in_flight.dec();
                }
            }
            schedule.advance(Instant::now());
        }
    }
}

/// Runs one probe under `timeout` and records its outcome everywhere.
async fn execute(
    probe: &dyn Probe,
    target: &Target,
    timeout: Duration,
    metrics: &ServiceMetrics,
    status: &Status,
) -> Outcome {
    let start = Instant::now();
    let outcome = run_with_timeout(probe, target, timeout).await;
    record(&outcome, start.elapsed(), metrics, status);
    outcome
}

/// Runs `probe` once; past `timeout` the probe is dropped and the outcome is a `timeout`
/// failure. The one place the timeout rule lives, for the scheduler and `netmon check`; name
/// lookups inside the probe get their share of it, so a slow name server is reason `dns`.
pub async fn run_with_timeout(probe: &dyn Probe, target: &Target, timeout: Duration) -> Outcome {
    let run = resolve::with_budget(resolve::budget_for(timeout), probe.run(target));
    match tokio::time::timeout(timeout, run).await {
        Ok(o) => o,
        Err(_) => Err(Failure::new(
            Reason::Timeout,
            format!("no answer within {}", humantime::format_duration(timeout)),
        )),
    }
}

fn record(outcome: &Outcome, elapsed: Duration, metrics: &ServiceMetrics, status: &Status) {
    metrics.probes.inc();
    metrics.duration.set(elapsed.as_secs_f64());
    metrics.last.set(unix_now());
    let now = SystemTime::now();
    if let Ok(mut h) = status.history.lock() {
        h.push(now, outcome.as_ref().ok().map(|ok| ok.latency));
    }
    let previous = {
        let Ok(mut v) = status.view.lock() else {
            return;
        };
        let previous = v.up;
        v.last_check = Some(now);
        v.loss = round_of(outcome).map(Round::loss_ratio);
        v.detail = detail_of(outcome).map(str::to_string);
        match outcome {
            Ok(ok) => {
                v.up = Some(true);
                v.latency = Some(ok.latency);
                v.failing = false;
            }
            Err(f) => {
                v.up = Some(false);
                v.last_error = Some(f.to_string());
                v.failing = true;
            }
        }
        previous
    };
    match outcome {
        Ok(ok) => {
            metrics.up.set(1.0);
            metrics.latency.set(ok.latency.as_secs_f64());
            let ms = log_millis(ok.latency);
            match previous {
                None => info!(latency_ms = ms, "first result: UP"),
                Some(false) => info!(latency_ms = ms, "UP"),
                Some(true) => debug!(latency_ms = ms, "probe ok"),
            }
        }
        Err(f) => {
            metrics.up.set(0.0);
            metrics.failed(f.reason);
            match previous {
                None => info!(reason = %f.reason, error = %f.message, "first result: DOWN"),
                Some(true) => info!(reason = %f.reason, error = %f.message, "DOWN"),
                Some(false) => debug!(reason = %f.reason, error = %f.message, "probe failed"),
            }
        }
    }
}

/// A latency in milliseconds for a log line, to the microsecond: `0.181`, not
/// `0.18121500000000001`. Stays a number, so JSON logs keep it numeric.
fn log_millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The series one service has from its start, per protocol, with and without the RTT
    /// histogram, counted in the exposition (BENCHMARKS.md, "Series per service"). Run with
    /// `cargo test --lib series_per_service -- --nocapture` to print the table.
    #[tokio::test]
    async fn series_per_service() {
        let yaml = "defaults: { interval: 30s, timeout: 5s }\ntargets:\n  127.0.0.1:\n    services:\n      \
            - HTTP\n      - HTTPS\n      - ICMP\n      - { type: icmp, name: icmp-off, rtt_histogram: false }\n      \
            - { type: icmp, name: icmp-8, rtt_buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 1] }\n      \
            - DNS\n      - NTP\n      - \"TCP:22\"\n      - { type: udp, port: 53, send: x }\n      \
            - UDP\n      - { type: echo, name: echo-off, rtt_histogram: false }\n      - TRACEROUTE\n";
        let config = crate::config::load(yaml, "series.yml").unwrap();
        let mut rows = Vec::new();
        for s in config.services() {
            let m = Metrics::new();
            let labels = labels_of(s);
            let _common = m.service(labels.clone());
            let ctx = probe::shape::Context {
                labels: &labels,
                timeout: s.timeout,
                rtt_buckets: s.rtt_buckets.as_deref(),
            };
            // ICMP needs a raw or ping socket; without the privilege its row is left out.
            let Ok(_probe) = probe::build(&s.options, &ctx, &m.probe) else {
                continue;
            };
            let text = m.encode(false).unwrap();
            let label = format!("service=\"{}\"", s.name);
            let n = text
                .lines()
                .filter(|l| !l.starts_with('#') && l.contains(&label))
                .count();
            rows.push((s.name.clone(), n));
        }
        println!("service series at start");
        for (name, n) in &rows {
            println!("{name:<10} {n}");
        }
        let count = |name: &str| rows.iter().find(|r| r.0 == name).map(|r| r.1);
        assert_eq!(count("tcp:22"), Some(5));
        // Five common, six packet families, 17 buckets + `+Inf` + `_sum` + `_count`.
        assert_eq!(count("echo"), Some(31));
        assert_eq!(count("echo-off"), Some(11));
        // Five common and the route-change counter; the per-hop series come with the rounds.
        assert_eq!(count("traceroute"), Some(6));
        if count("icmp").is_some() {
            assert_eq!(count("icmp"), Some(31));
            assert_eq!(count("icmp-8"), Some(22));
            assert_eq!(count("icmp-off"), Some(11));
        }
    }

    #[test]
    fn logged_latencies_are_rounded_to_the_microsecond() {
        let shown = |nanos| format!("{}", log_millis(Duration::from_nanos(nanos)));
        assert_eq!(shown(181_215), "0.181");
        assert_eq!(shown(181_500), "0.182");
        assert_eq!(shown(12_345_678_901), "12345.679");
        assert_eq!(shown(0), "0");
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_do_not_drift_over_many_ticks() {
        let interval = Duration::from_secs(10);
        let start = Instant::now();
        let mut s = Schedule::new(start, interval, 0.75);
        // A late phase gets an early first run inside the spread window.
        assert_eq!(s.next() - start, Duration::from_millis(3750));
        let mut planned = Vec::new();
        for _ in 0..1000 {
            tokio::time::sleep_until(s.next()).await;
            // Each "probe" takes a varying time, as real ones do.
            tokio::time::sleep(Duration::from_millis(37)).await;
            planned.push(s.next());
            s.advance(Instant::now());
        }
        // After the first, every start is on the grid start + 7.5s + k * 10s.
        for (k, t) in planned.iter().skip(1).enumerate() {
            let expected = start + Duration::from_millis(7500) + interval * (k as u32);
            assert_eq!(*t, expected, "tick {k}");
        }
    }

    #[test]
    fn early_phases_run_first_on_their_grid_point() {
        let start = Instant::now();
        let s = Schedule::new(start, Duration::from_secs(60), 0.05);
        assert_eq!(s.next() - start, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn missed_deadlines_are_skipped_not_bunched() {
        let interval = Duration::from_secs(1);
        let start = Instant::now();
        let mut s = Schedule::new(start, interval, 0.0);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        s.advance(Instant::now());
        assert_eq!(s.next() - start, Duration::from_secs(4));
    }

    #[test]
    fn reloads_spread_their_first_round_by_their_share() {
        // Start-up: everything starts, the full spread.
        assert_eq!(reload_spread(3000, 3000), FIRST_ROUND_SPREAD);
        // A tenth, or one service from the console: one second.
        assert_eq!(reload_spread(300, 3000), RELOAD_SPREAD);
        assert_eq!(reload_spread(1, 3000), RELOAD_SPREAD);
        // Half: half the spread, so first probes never come faster than at start-up.
        assert_eq!(reload_spread(1500, 3000), FIRST_ROUND_SPREAD / 2);
        assert_eq!(reload_spread(0, 0), RELOAD_SPREAD);
        // A 60 s service at 0.75 of its interval runs first at 0.75 s, then on its grid.
        let start = Instant::now();
        let s = Schedule::with_spread(start, Duration::from_secs(60), 0.75, RELOAD_SPREAD);
        assert_eq!(s.next() - start, Duration::from_millis(750));
    }

    #[test]
    fn phases_are_stable_and_spread() {
        let a = phase_fraction(&("a".into(), "tcp:1".into()));
        assert_eq!(a, phase_fraction(&("a".into(), "tcp:1".into())));
        let mut buckets = [0usize; 10];
        for i in 0..10_000 {
            let f = phase_fraction(&(format!("host{i}"), "icmp".into()));
            assert!((0.0..1.0).contains(&f));
            buckets[(f * 10.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
    }
}
