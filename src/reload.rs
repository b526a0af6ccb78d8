//! Reloading: the configuration read again from its source and applied to the running
//! monitor, hosted echo server and hosted STAMP reflector. Shared by SIGHUP, `POST /-/reload` and the console.
//!
//! What `discovery:` sources give (`crate::discovery` reads them) is applied here too, the
//! same way: the static configuration plus every source's last good list, checked whole and
//! applied at once, one change at a time. A reload of the file keeps the discovered targets;
//! a source the new file no longer lists loses its targets with the same reload.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::error::{ConfigErrors, LoadError};
use crate::config::loader::Source;
use crate::config::model::{Config, Discovery};
use crate::config::sd::TargetGroup;
use crate::echo::server::EchoServer;
use crate::metrics::Metrics;
use crate::runner::{Changes, Monitor, ServiceStatus};
use crate::stamp::reflector::StampReflector;

/// Reloads the configuration from its source into the running monitor. Shared by SIGHUP, the
/// web endpoint and the console.
#[derive(Debug)]
pub struct Reloader {
    source: Source,
    monitor: Mutex<Monitor>,
    metrics: Arc<Metrics>,
    echo: Mutex<HostedEcho>,
    stamp: Mutex<HostedStamp>,
    reloading: Mutex<()>,
    started: SystemTime,
    last: std::sync::Mutex<Option<LastReload>>,
    discovered: std::sync::Mutex<Discovered>,
    sources: watch::Sender<Vec<Discovery>>,
}

/// The static configuration last applied and each discovery source's last good list: what
/// the monitor runs is the one plus the other.
#[derive(Debug, Default)]
struct Discovered {
    config: Option<Config>,
    lists: BTreeMap<String, Arc<[TargetGroup]>>,
}

/// The configuration the monitor is to run, static and discovered, and how many targets the
/// source whose list is new has in it.
struct Composed {
    config: Config,
    count: usize,
}

/// Why a discovery source's new list was not applied; the source keeps its last good one.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The running configuration has no such source (a reload removed it meanwhile).
    #[error("the running configuration has no discovery source `{0}`")]
    Gone(String),
    /// A target of the list is invalid.
    #[error(
        "{} invalid target(s) in the list:\n  {}\nthe source's last good list stays",
        .0.0.len(),
        .0.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  ")
    )]
    Invalid(ConfigErrors),
    /// A service of the list cannot run (e.g. its probe cannot be built).
    #[error("{0}\nnothing changed: the source's last good list stays")]
    Refused(ConfigErrors),
    /// The list runs, but some of its services did not start.
    #[error(
        "the list is applied, but {} service(s) could not start:\n  {}",
        .0.failed.len(),
        .0.failed.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  ")
    )]
    Partial(Changes),
}

/// The outcome of the last reload, for the status page's banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastReload {
    /// When it ended.
    pub at: SystemTime,
    /// Why it failed (the message `POST /-/reload` answered), `None` when it applied in full.
    pub error: Option<String>,
}

/// A server `serve` hosts beside the probes (the echo server, the STAMP reflector), restarted
/// by a reload only when its settings change.
trait Server: Sized + Send {
    /// Its section of the config.
    type Settings: Clone + PartialEq + Send + Sync;
    /// Its families in the main registry.
    type Metrics: Clone + Send + Sync;
    /// What it is called in errors.
    const NAME: &'static str;

    /// Binds and starts it.
    fn start(
        settings: Self::Settings,
        metrics: &Self::Metrics,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Result<Self, String>> + Send;

    /// The settings it runs with.
    fn settings(&self) -> &Self::Settings;

    /// Stops it and waits until its sockets are closed.
    fn stop(self) -> impl Future<Output = ()> + Send;
}

impl Server for EchoServer {
    type Settings = crate::echo::settings::Settings;
    type Metrics = crate::echo::server::metrics::Metrics;
    const NAME: &'static str = "echo server";

    async fn start(
        settings: Self::Settings,
        metrics: &Self::Metrics,
        shutdown: &CancellationToken,
    ) -> Result<Self, String> {
        EchoServer::start(settings, metrics, shutdown)
            .await
            .map_err(|e| e.to_string())
    }

    fn settings(&self) -> &Self::Settings {
        EchoServer::settings(self)
    }

    async fn stop(self) {
        EchoServer::stop(self).await
    }
}

impl Server for StampReflector {
    type Settings = crate::stamp::settings::Settings;
    type Metrics = crate::stamp::reflector::Metrics;
    const NAME: &'static str = "stamp reflector";

    async fn start(
        settings: Self::Settings,
        metrics: &Self::Metrics,
        shutdown: &CancellationToken,
    ) -> Result<Self, String> {
        StampReflector::start(settings, metrics, shutdown)
            .await
            .map_err(|e| e.to_string())
    }

    fn settings(&self) -> &Self::Settings {
        StampReflector::settings(self)
    }

    async fn stop(self) {
        StampReflector::stop(self).await
    }
}

/// A hosted [`Server`] and what it needs to start again.
#[derive(Debug)]
struct Hosted<S: Server> {
    /// Its families in the main registry; `None` when this reloader hosts no such server.
    metrics: Option<S::Metrics>,
    running: Option<S>,
    shutdown: CancellationToken,
}

impl<S: Server> Default for Hosted<S> {
    fn default() -> Self {
        Hosted {
            metrics: None,
            running: None,
            shutdown: CancellationToken::new(),
        }
    }
}

/// The echo server hosted for the config's `echo_server:`.
type HostedEcho = Hosted<EchoServer>;

/// The STAMP reflector hosted for the config's `stamp_reflector:`.
type HostedStamp = Hosted<StampReflector>;

impl<S: Server> Hosted<S> {
    /// Makes the running server match `want`. On failure the previous server is started
    /// again, so a refused reload leaves it as it was.
    async fn apply(&mut self, want: Option<&S::Settings>) -> Result<(), String> {
        let Some(metrics) = self.metrics.clone() else {
            return Ok(());
        };
        let before = self.running.as_ref().map(|s| s.settings().clone());
        if before.as_ref() == want {
            return Ok(());
        }
        // The new server may want the old one's port: stop it first.
        if let Some(old) = self.running.take() {
            old.stop().await;
        }
        let Some(settings) = want else {
            return Ok(());
        };
        match S::start(settings.clone(), &metrics, &self.shutdown).await {
            Ok(server) => {
                self.running = Some(server);
                Ok(())
            }
            Err(e) => {
                let mut message = format!("{}: {e}", S::NAME);
                if let Some(old) = before {
                    match S::start(old, &metrics, &self.shutdown).await {
                        Ok(server) => self.running = Some(server),
                        Err(again) => message.push_str(&format!(
                            "; the previous {} could not be started again either: {again}",
                            S::NAME
                        )),
                    }
                }
                Err(message)
            }
        }
    }
}

/// Why a reload did not apply in full.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration was refused; nothing changed.
    #[error("{0}\nnothing changed: the previous configuration is still running")]
    Refused(LoadError),
    /// The new configuration runs, but services that passed validation still failed to start
    /// (the machine changed in between, e.g. no file descriptor left).
    #[error(
        "the new configuration is running, but {} service(s) could not start:\n  {}",
        .0.failed.len(),
        .0.failed.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  ")
    )]
    Partial(Changes),
}

impl Reloader {
    /// Wraps a monitor whose config comes from `source`.
    pub fn new(source: Source, monitor: Monitor) -> Self {
        let metrics = monitor.metrics().clone();
        Reloader {
            source,
            monitor: Mutex::new(monitor),
            metrics,
            echo: Mutex::new(HostedEcho::default()),
            stamp: Mutex::new(HostedStamp::default()),
            reloading: Mutex::new(()),
            started: SystemTime::now(),
            last: std::sync::Mutex::new(None),
            discovered: std::sync::Mutex::new(Discovered::default()),
            sources: watch::Sender::new(Vec::new()),
        }
    }

    /// Records `config` as the static configuration the monitor runs, so discovered targets
    /// are added to it and its `discovery:` sources are read.
    pub fn with_config(self, config: Config) -> Self {
        self.sources.send_replace(config.discovery.clone());
        if let Ok(mut d) = self.discovered.lock() {
            d.config = Some(config);
        }
        self
    }

    /// The `discovery:` sources of the running configuration, updated by every reload that
    /// applies.
    pub fn discovery_sources(&self) -> watch::Receiver<Vec<Discovery>> {
        self.sources.subscribe()
    }

    /// The lists of the sources `config` lists: the sources a new file keeps keep their
    /// lists, the others lose them.
    fn lists_for(&self, config: &Config) -> BTreeMap<String, Arc<[TargetGroup]>> {
        match self.discovered.lock() {
            Ok(d) => d
                .lists
                .iter()
                .filter(|(name, _)| config.discovery.iter().any(|s| &s.name == *name))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Err(_) => BTreeMap::new(),
        }
    }

    /// Records `config` and `lists` as what runs now, and tells the discovery tasks when the
    /// sources changed.
    fn running(&self, config: Config, lists: BTreeMap<String, Arc<[TargetGroup]>>) {
        self.sources.send_if_modified(|s| {
            let changed = *s != config.discovery;
            if changed {
                s.clone_from(&config.discovery);
            }
            changed
        });
        if let Ok(mut d) = self.discovered.lock() {
            d.config = Some(config);
            d.lists = lists;
        }
    }

    /// The static configuration running now (the file's, or the console's edit of it),
    /// without discovered targets; `None` before [`Reloader::with_config`].
    pub fn static_config(&self) -> Option<Config> {
        self.discovered.lock().ok().and_then(|d| d.config.clone())
    }

    /// Runs `config` as the static configuration, with what its discovery sources gave, all
    /// or nothing as [`Monitor::apply`] does: the console's edits. Errors are those of the
    /// check; services that failed to start are in the returned changes, and then nothing
    /// is recorded as running.
    pub async fn apply_static(&self, config: &Config) -> Result<Changes, ConfigErrors> {
        let _one_at_a_time = self.reloading.lock().await;
        let lists = self.lists_for(config);
        let effective = Self::compose(config, &lists, None).await?.config;
        let changes = self.monitor.lock().await.apply(&effective).await?;
        if changes.failed.is_empty() {
            self.running(config.clone(), lists);
        }
        Ok(changes)
    }

    /// Refuses every later discovered list, waiting for one being applied: called on
    /// shutdown before the services stop, so no list starts them again.
    pub async fn close_discovery(&self) {
        let _one_at_a_time = self.reloading.lock().await;
        if let Ok(mut d) = self.discovered.lock() {
            d.config = None;
        }
    }

    /// `config` with the targets of its sources' lists in `lists` added, for the monitor,
    /// built on a blocking thread: thousands of targets take a while to build, and the async
    /// workers run the probes. `fresh` names a source whose list is new, whose target count
    /// is returned. Any list that does not build is an error, also one read before (a reload
    /// changed its `services:` or the defaults under it): the change is refused whole rather
    /// than run without that source's targets. Services shadowed by static ones or by earlier
    /// sources are logged.
    async fn compose(
        config: &Config,
        lists: &BTreeMap<String, Arc<[TargetGroup]>>,
        fresh: Option<&str>,
    ) -> Result<Composed, ConfigErrors> {
        let (config, lists, fresh) = (config.clone(), lists.clone(), fresh.map(str::to_string));
        let built = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            let mut count = 0;
            for source in &config.discovery {
                let Some(groups) = lists.get(&source.name) else {
                    continue;
                };
                match crate::config::loader::discovered(&config, source, groups) {
                    Ok(targets) => {
                        if fresh.as_deref() == Some(source.name.as_str()) {
                            count = targets.len();
                        }
                        found.push((source.name.as_str(), targets));
                    }
                    Err(e) => return Err(e),
                }
            }
            let (effective, shadowed) = config.with_discovered(found);
            for s in shadowed {
                warn!(
                    source = %s.source,
                    host = %s.host,
                    service = %s.service,
                    by = %s.by,
                    "discovered service left out: one of the same host and name runs already"
                );
            }
            Ok(Composed {
                config: effective,
                count,
            })
        })
        .await;
        built.unwrap_or_else(|e| {
            Err(ConfigErrors(vec![crate::config::ConfigError {
                file: "discovery".into(),
                line: 0,
                column: 0,
                message: format!("the thread building the discovered targets stopped: {e}"),
            }]))
        })
    }

    /// Applies `groups` as the new list of the discovery source `name`, all or nothing, with
    /// the static configuration and the other sources' lists. Returns how many targets the
    /// list has. On an error the source's previous list stays in force.
    pub async fn discovered(
        &self,
        name: &str,
        groups: Vec<TargetGroup>,
    ) -> Result<usize, DiscoveryError> {
        let _one_at_a_time = self.reloading.lock().await;
        let (config, mut lists) = match self.discovered.lock() {
            Ok(d) => (d.config.clone(), d.lists.clone()),
            Err(_) => (None, BTreeMap::new()),
        };
        let Some(config) = config else {
            return Err(DiscoveryError::Gone(name.to_string()));
        };
        if !config.discovery.iter().any(|s| s.name == name) {
            return Err(DiscoveryError::Gone(name.to_string()));
        }
        lists.insert(name.to_string(), groups.into());
        let Composed {
            config: effective,
            count,
        } = Self::compose(&config, &lists, Some(name))
            .await
            .map_err(DiscoveryError::Invalid)?;
        let mut monitor = self.monitor.lock().await;
        monitor.check(&effective).map_err(DiscoveryError::Refused)?;
        let changes = monitor.apply_checked(&effective).await;
        if let Ok(mut d) = self.discovered.lock() {
            d.lists = lists;
        }
        if !changes.failed.is_empty() {
            return Err(DiscoveryError::Partial(changes));
        }
        info!(
            source = name,
            targets = count,
            added = changes.added,
            removed = changes.removed,
            changed = changes.changed,
            unchanged = changes.kept,
            "discovered targets applied"
        );
        Ok(count)
    }

    /// Hosts the config's `echo_server:` with families `metrics` (registered in the main
    /// registry), starting with `running`, stopped by `shutdown`.
    pub fn with_echo_server(
        self,
        metrics: crate::echo::server::metrics::Metrics,
        running: Option<EchoServer>,
        shutdown: CancellationToken,
    ) -> Self {
        Reloader {
            echo: Mutex::new(HostedEcho {
                metrics: Some(metrics),
                running,
                shutdown,
            }),
            ..self
        }
    }

    /// Hosts the config's `stamp_reflector:` with families `metrics` (registered in the main
    /// registry), starting with `running`, stopped by `shutdown`.
    pub fn with_stamp_reflector(
        self,
        metrics: crate::stamp::reflector::Metrics,
        running: Option<StampReflector>,
        shutdown: CancellationToken,
    ) -> Self {
        Reloader {
            stamp: Mutex::new(HostedStamp {
                metrics: Some(metrics),
                running,
                shutdown,
            }),
            ..self
        }
    }

    /// Stops the hosted STAMP reflector, if one runs.
    pub async fn stop_stamp_reflector(&self) {
        if let Some(s) = self.stamp.lock().await.running.take() {
            s.stop().await;
        }
    }

    /// The hosted STAMP reflector's UDP address, if one runs.
    pub async fn stamp_reflector_addr(&self) -> Option<std::net::SocketAddr> {
        self.stamp
            .lock()
            .await
            .running
            .as_ref()
            .map(StampReflector::local_addr)
    }

    /// Stops the hosted echo server, if one runs.
    pub async fn stop_echo_server(&self) {
        if let Some(s) = self.echo.lock().await.running.take() {
            s.stop().await;
        }
    }

    /// The hosted echo server's UDP address, if one runs.
    pub async fn echo_server_addr(&self) -> Option<std::net::SocketAddr> {
        self.echo
            .lock()
            .await
            .running
            .as_ref()
            .map(EchoServer::local_addr)
    }

    /// Reads the source again and applies it, all or nothing: the config is validated and
    /// every new service built before anything changes. When anything fails, the running
    /// services, their counters and the hosted echo server stay as they were and
    /// `netmon_config_last_reload_successful` drops to 0.
    pub async fn reload(&self) -> Result<Changes, ReloadError> {
        // Held from the read to the apply, so reloads happen one after the other and each
        // reads the file as it is then: a slow read of an older file can never be applied
        // after a newer one.
        let _one_at_a_time = self.reloading.lock().await;
        // Parsing a large file takes a while: off the async workers, which run the probes
        // and the web side.
        let source = self.source.clone();
        let loaded = tokio::task::spawn_blocking(move || source.load()).await;
        let config = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(self.refused(e)),
            Err(e) => {
                return Err(self.refused(LoadError::Read {
                    path: self.source.to_string(),
                    source: std::io::Error::other(format!("the config reader stopped: {e}")),
                }));
            }
        };
        let lists = self.lists_for(&config);
        let effective = match Self::compose(&config, &lists, None).await {
            Ok(c) => c.config,
            Err(e) => return Err(self.refused(LoadError::Invalid(e))),
        };
        // One reload at a time: the monitor's lock is held from the check to the apply.
        let mut monitor = self.monitor.lock().await;
        if let Err(e) = monitor.check(&effective) {
            return Err(self.refused(LoadError::Start(e)));
        }
        let mut echo = self.echo.lock().await;
        let echo_before = echo.running.as_ref().map(|s| s.settings().clone());
        if let Err(e) = echo.apply(config.echo_server.as_ref()).await {
            return Err(self.refused(LoadError::Echo(e)));
        }
        if let Err(e) = self
            .stamp
            .lock()
            .await
            .apply(config.stamp_reflector.as_ref())
            .await
        {
            // All or nothing: the echo server goes back to what it was too.
            if let Err(again) = echo.apply(echo_before.as_ref()).await {
                error!(error = %again, "the previous echo server could not be started again");
            }
            return Err(self.refused(LoadError::Stamp(e)));
        }
        drop(echo);
        // Only once nothing can refuse the reload any more: a refused one changes nothing.
        crate::base::resolve::configure(&config.defaults.resolver.clone().unwrap_or_default());
        let changes = monitor.apply_checked(&effective).await;
        self.running(config, lists);
        if !changes.failed.is_empty() {
            self.metrics.reloaded(false);
            let e = ReloadError::Partial(changes);
            error!(config = %self.source, error = %e, "reload applied in part");
            self.remember(Some(e.to_string()));
            return Err(e);
        }
        self.metrics.reloaded(true);
        self.remember(None);
        info!(
            config = %self.source,
            added = changes.added,
            removed = changes.removed,
            changed = changes.changed,
            unchanged = changes.kept,
            "configuration reloaded"
        );
        Ok(changes)
    }

    fn refused(&self, e: LoadError) -> ReloadError {
        self.metrics.reloaded(false);
        error!(config = %self.source, error = %e, "reload failed: nothing changed, the previous configuration is still running");
        let e = ReloadError::Refused(e);
        self.remember(Some(e.to_string()));
        e
    }

    fn remember(&self, error: Option<String>) {
        let last = LastReload {
            at: SystemTime::now(),
            error,
        };
        if let Ok(mut l) = self.last.lock() {
            *l = Some(last);
        }
    }

    /// The outcome of the last reload; `None` before the first.
    pub fn last_reload(&self) -> Option<LastReload> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    /// When this reloader was made: when `serve` (or the console) started monitoring.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Every service and its status.
    pub async fn status(&self) -> Vec<ServiceStatus> {
        self.monitor.lock().await.status()
    }

    /// The monitor, for the console.
    pub fn monitor(&self) -> &Mutex<Monitor> {
        &self.monitor
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Where the config comes from.
    pub fn source(&self) -> &Source {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sd::{Format, parse};

    fn file(dir: &std::path::Path, text: &str) -> Source {
        let path = dir.join("netmon.yml");
        std::fs::write(&path, text).unwrap();
        Source::File(path)
    }

    async fn hosts(r: &Reloader) -> Vec<String> {
        let mut h: Vec<String> = r
            .monitor()
            .lock()
            .await
            .services()
            .map(|s| format!("{} {}", s.host, s.name))
            .collect();
        h.sort();
        h
    }

    const WITH_SOURCE: &str = "defaults: { interval: 1h }\ntargets: { 127.0.0.1: { services: [\"TCP:9\"] } }\ndiscovery: [{ file: /nonexistent/*.json, name: files, services: [\"TCP:9\"] }]\n";

    #[tokio::test]
    async fn discovered_lists_survive_reloads_and_console_edits_until_their_source_goes() {
        let dir = tempfile::tempdir().unwrap();
        let source = file(dir.path(), WITH_SOURCE);
        let config = source.load().unwrap();
        let mut monitor = Monitor::new(Arc::new(Metrics::new()), 4);
        assert!(monitor.apply(&config).await.unwrap().failed.is_empty());
        let r = Reloader::new(source, monitor).with_config(config.clone());
        let groups = |text: &str| parse(text, Format::Json, 10).unwrap();

        let found = r.discovered(
            "files",
            groups(r#"[{"targets": ["127.0.0.2", "127.0.0.1"]}]"#),
        );
        // 127.0.0.1's tcp:9 is the file's; 127.0.0.2 is the source's.
        assert_eq!(found.await.unwrap(), 2);
        assert_eq!(hosts(&r).await, ["127.0.0.1 tcp:9", "127.0.0.2 tcp:9"]);

        // An invalid list is refused whole; the last good one stays.
        let bad = r
            .discovered(
                "files",
                groups(r#"[{"targets": ["127.0.0.3", "bad host"]}]"#),
            )
            .await
            .unwrap_err();
        assert!(matches!(bad, DiscoveryError::Invalid(_)), "{bad}");
        assert!(
            bad.to_string().contains("`bad host` is not a host name"),
            "{bad}"
        );
        assert_eq!(hosts(&r).await, ["127.0.0.1 tcp:9", "127.0.0.2 tcp:9"]);

        // A console edit of the static part keeps the discovered targets.
        let mut edited = config.clone();
        edited.targets[0].host = "127.0.0.4".into();
        edited.targets[0].services[0].host = "127.0.0.4".into();
        assert!(r.apply_static(&edited).await.unwrap().failed.is_empty());
        assert_eq!(
            hosts(&r).await,
            ["127.0.0.1 tcp:9", "127.0.0.2 tcp:9", "127.0.0.4 tcp:9"]
        );
        assert_eq!(r.static_config(), Some(edited));

        // So does a reload of the file.
        r.reload().await.unwrap();
        assert_eq!(hosts(&r).await, ["127.0.0.1 tcp:9", "127.0.0.2 tcp:9"]);

        // A reload without the source drops its targets, and later lists are refused.
        let mut sources = r.discovery_sources();
        file(
            dir.path(),
            "targets: { 127.0.0.1: { services: [\"TCP:9\"] } }\n",
        );
        r.reload().await.unwrap();
        assert_eq!(hosts(&r).await, ["127.0.0.1 tcp:9"]);
        assert!(sources.has_changed().unwrap());
        assert!(sources.borrow_and_update().is_empty());
        let gone = r.discovered("files", groups(r#"[{"targets": ["127.0.0.2"]}]"#));
        assert!(matches!(gone.await, Err(DiscoveryError::Gone(_))));
        r.monitor().lock().await.stop_all().await;
    }

    #[tokio::test]
    async fn a_reload_whose_template_no_longer_fits_a_list_read_before_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let source = file(dir.path(), WITH_SOURCE);
        let config = source.load().unwrap();
        let mut monitor = Monitor::new(Arc::new(Metrics::new()), 4);
        assert!(monitor.apply(&config).await.unwrap().failed.is_empty());
        let r = Reloader::new(source, monitor).with_config(config);
        let list = parse(r#"[{"targets": ["127.0.0.2"]}]"#, Format::Json, 10).unwrap();
        assert_eq!(r.discovered("files", list).await.unwrap(), 1);
        let before = hosts(&r).await;
        assert_eq!(before, ["127.0.0.1 tcp:9", "127.0.0.2 tcp:9"]);

        // A tcp service with no port of its own needs `host:port` targets, which this list
        // does not give: the reload is refused and both services keep running.
        file(
            dir.path(),
            &WITH_SOURCE.replace("services: [\"TCP:9\"] }]", "services: [{ type: tcp }] }]"),
        );
        let refused = r.reload().await.unwrap_err();
        assert!(matches!(refused, ReloadError::Refused(_)), "{refused}");
        assert!(refused.to_string().contains("127.0.0.2"), "{refused}");
        assert_eq!(hosts(&r).await, before);
        r.monitor().lock().await.stop_all().await;
    }
}
