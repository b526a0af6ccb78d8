//! What the console's commands do to the running monitor.
//!
//! The session keeps the running [`Config`]. A change (`add`, `remove`, `interval`) edits a
//! copy, writes it as YAML and reads it back through [`config::load`], so the console can never
//! run a configuration `netmon config check` would refuse; then [`crate::runner::Monitor::apply`]
//! starts and stops exactly the services that changed, and /metrics follows at once. The
//! apply is all or nothing: if a new service cannot start (e.g. ICMP without the privilege),
//! nothing changes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, SystemTime};

use super::command::{self, Command, LogSetting};
use crate::base::hint::Dialect;
use crate::base::values::Duration;
use crate::config;
use crate::config::loader::Source;
use crate::config::model::{Config, Service, Target};
use crate::config::single::OneService;
use crate::logging::LogControl;
use crate::probe::Protocol;
use crate::reload::Reloader;
use crate::runner::{ServiceKey, ServiceStatus};

/// The host and service names Tab completes, refreshed from the monitor.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Each host with its services.
    pub hosts: BTreeMap<String, Vec<String>>,
}

/// Names shared between the session and the line editor's completer.
pub type SharedNames = Arc<Mutex<Names>>;

/// What a command asks of the prompt loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Show another prompt.
    Continue,
    /// Leave.
    Quit,
}

/// The console's state: the running config and the handles it acts through.
#[derive(Debug)]
pub struct Session {
    config: Config,
    reloader: Arc<Reloader>,
    log: Option<LogControl>,
    log_level: String,
    names: SharedNames,
}

impl Session {
    /// A session over a running monitor whose configuration is `config`.
    pub fn new(
        config: Config,
        reloader: Arc<Reloader>,
        log: Option<LogControl>,
        names: SharedNames,
    ) -> Self {
        let log_level = log
            .as_ref()
            .map_or_else(|| "info".to_string(), |l| l.initial().to_string());
        Session {
            config,
            reloader,
            log,
            log_level,
            names,
        }
    }

    /// Runs one typed line; `Ok` text is the output, `Err` a one-line error.
    pub async fn execute(&mut self, line: &str) -> (Next, Result<String, String>) {
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(e) => return (Next::Continue, Err(e.to_string())),
        };
        if cmd == Command::Quit {
            return (Next::Quit, Ok(String::new()));
        }
        let result = self.run(cmd).await;
        self.refresh_names().await;
        (Next::Continue, result)
    }

    /// Copies the running hosts and services into the completer's names.
    pub async fn refresh_names(&self) {
        let monitor = self.reloader.monitor().lock().await;
        let mut names = Names::default();
        for s in monitor.services() {
            names
                .hosts
                .entry(s.host.clone())
                .or_default()
                .push(s.name.clone());
        }
        if let Ok(mut n) = self.names.lock() {
            *n = names;
        }
    }

    async fn run(&mut self, cmd: Command) -> Result<String, String> {
        match cmd {
            Command::Nothing | Command::Quit => Ok(String::new()),
            Command::Help(topic) => command::help(topic.as_deref()).map_err(|e| e.to_string()),
            Command::Status(host) => self.status(host.as_deref()).await,
            Command::Add {
                host,
                service,
                every,
            } => self.add(&host, &service, every).await,
            Command::Remove { host, service } => self.remove(&host, service.as_deref()).await,
            Command::Pause {
                paused,
                host,
                service,
            } => {
                self.pause(paused, host.as_deref(), service.as_deref())
                    .await
            }
            Command::Check { host, service } => self.check(&host, service.as_deref()).await,
            Command::Interval {
                host,
                service,
                every,
            } => self.interval(&host, service.as_deref(), every).await,
            Command::Save(file) => self.save(file.as_deref()),
            Command::Log(setting) => self.log(setting),
        }
    }

    /// Checks `host` (and `service`) name something running; errors list what does.
    fn known(&self, host: &str, service: Option<&str>) -> Result<&Target, String> {
        let Some(t) = self.config.targets.iter().find(|t| t.host == host) else {
            let hosts: Vec<&str> = self
                .config
                .targets
                .iter()
                .map(|t| t.host.as_str())
                .collect();
            let hint = crate::base::hint::did_you_mean(host, hosts.iter().copied());
            return Err(if hosts.is_empty() {
                format!("no host `{host}`: nothing is monitored (add one with `add HOST PROTOCOL`)")
            } else {
                format!("no host `{host}`{hint}; hosts: {}", hosts.join(", "))
            });
        };
        if let Some(s) = service {
            if !t.services.iter().any(|x| x.name == s) {
                let names: Vec<&str> = t.services.iter().map(|x| x.name.as_str()).collect();
                let hint = crate::base::hint::did_you_mean(s, names.iter().copied());
                return Err(format!(
                    "`{host}` has no service `{s}`{hint}; its services: {}",
                    names.join(", ")
                ));
            }
        }
        Ok(t)
    }

    /// Takes the running static configuration when it is no longer the session's (a
    /// `POST /-/reload` or SIGHUP replaced it), so an edit starts from what runs.
    async fn sync(&mut self) -> Option<String> {
        let running = self.reloader.static_config()?;
        if running == self.config {
            return None;
        }
        self.config = running;
        Some(format!(
            "note: the configuration was reloaded from {}; continuing from it",
            self.reloader.source()
        ))
    }

    /// Validates `new` as `config check` would and runs it.
    async fn commit(&mut self, new: Config) -> Result<String, String> {
        let validated = if new.targets.is_empty() {
            // Nothing to validate; `save` refuses an empty configuration.
            new
        } else {
            let text = config::to_yaml(&new).map_err(|e| e.to_string())?;
            config::load_as(&text, "<console>", Dialect::Console).map_err(|e| messages(&e))?
        };
        // Through the reloader, so what discovery sources gave keeps running beside it.
        let changes = match self.reloader.apply_static(&validated).await {
            Ok(c) if c.failed.is_empty() => c,
            Ok(c) => {
                // Started in part only because the machine changed since the check: go back.
                let _ = self.reloader.apply_static(&self.config).await;
                return Err(format!(
                    "could not start, nothing changed: {}",
                    joined(&c.failed)
                ));
            }
            Err(e) => {
                return Err(format!(
                    "could not start, nothing changed: {}",
                    joined(&e.0)
                ));
            }
        };
        self.config = validated;
        Ok(format!(
            "{} started, {} stopped, {} restarted",
            changes.added, changes.removed, changes.changed
        ))
    }

    async fn add(
        &mut self,
        host: &str,
        service: &str,
        every: Option<Duration>,
    ) -> Result<String, String> {
        let note = self.sync().await;
        let svc = OneService {
            host: host.to_string(),
            service: service.to_string(),
            interval: every.map(|d| d.to_string()),
            dialect: Dialect::Console,
            ..OneService::default()
        }
        .load("<console>")
        .map_err(|e| messages(&e))?;
        let name = svc.name.clone();
        let host = svc.host.clone();
        let mut new = self.config.clone();
        match new.targets.iter_mut().find(|t| t.host == host) {
            Some(t) => t.services.push(svc),
            None => new.targets.push(Target {
                host: host.clone(),
                interval: None,
                timeout: None,
                labels: BTreeMap::new(),
                services: vec![svc],
            }),
        }
        let fitted = fit_timeouts(&mut new, &host, Some(&name));
        self.commit(new).await?;
        Ok(with_note(note, format!("added {host} {name}{fitted}")))
    }

    async fn remove(&mut self, host: &str, service: Option<&str>) -> Result<String, String> {
        let note = self.sync().await;
        self.known(host, service)?;
        let mut new = self.config.clone();
        let mut removed = Vec::new();
        for t in new.targets.iter_mut().filter(|t| t.host == host) {
            t.services.retain(|s| {
                let keep = service.is_some_and(|n| n != s.name);
                if !keep {
                    removed.push(s.name.clone());
                }
                keep
            });
        }
        new.targets.retain(|t| !t.services.is_empty());
        self.commit(new).await?;
        Ok(with_note(
            note,
            format!("removed {host} {}", removed.join(", ")),
        ))
    }

    async fn interval(
        &mut self,
        host: &str,
        service: Option<&str>,
        every: Duration,
    ) -> Result<String, String> {
        let note = self.sync().await;
        self.known(host, service)?;
        let mut new = self.config.clone();
        for t in new.targets.iter_mut().filter(|t| t.host == host) {
            match service {
                Some(name) => {
                    for s in t.services.iter_mut().filter(|s| s.name == name) {
                        s.own_interval = Some(every);
                    }
                }
                None => {
                    t.interval = Some(every);
                    for s in &mut t.services {
                        s.own_interval = None;
                    }
                }
            }
        }
        let fitted = fit_timeouts(&mut new, host, service);
        self.commit(new).await?;
        let what = service.map_or_else(|| host.to_string(), |s| format!("{host} {s}"));
        Ok(with_note(note, format!("{what}: every {every}{fitted}")))
    }

    async fn pause(
        &mut self,
        paused: bool,
        host: Option<&str>,
        service: Option<&str>,
    ) -> Result<String, String> {
        if let Some(h) = host {
            self.sync().await;
            self.known(h, service)?;
        }
        let n = self
            .reloader
            .monitor()
            .lock()
            .await
            .set_paused(host, service, paused);
        let verb = if paused { "paused" } else { "resumed" };
        Ok(format!(
            "{verb} {n} service{}",
            if n == 1 { "" } else { "s" }
        ))
    }

    async fn check(&mut self, host: &str, service: Option<&str>) -> Result<String, String> {
        self.sync().await;
        self.known(host, service)?;
        let monitor = self.reloader.monitor().lock().await;
        let keys: Vec<ServiceKey> = monitor
            .services()
            .filter(|s| s.host == host && service.is_none_or(|n| n == s.name))
            .map(|s| (s.host.clone(), s.name.clone()))
            .collect();
        let runs = keys.iter().map(|k| monitor.check_now(k));
        let outcomes = futures_util::future::join_all(runs).await;
        let mut out = String::new();
        for (k, o) in keys.iter().zip(outcomes) {
            let text = match o {
                None => "no longer running".to_string(),
                Some(Ok(ok)) => format!("UP in {}", ms(ok.latency)),
                Some(Err(f)) => format!("DOWN {f}"),
            };
            let _ = writeln!(out, "{} {}: {text}", k.0, k.1);
        }
        Ok(out.trim_end().to_string())
    }

    async fn status(&mut self, host: Option<&str>) -> Result<String, String> {
        if let Some(h) = host {
            self.sync().await;
            self.known(h, None)?;
        }
        let rows: Vec<ServiceStatus> = self
            .reloader
            .status()
            .await
            .into_iter()
            .filter(|r| host.is_none_or(|h| h == r.service.host))
            .collect();
        if rows.is_empty() {
            return Ok("no services: add one with `add HOST PROTOCOL[:PORT]`".into());
        }
        let now = SystemTime::now();
        let mut table = vec![
            [
                "HOST",
                "SERVICE",
                "STATE",
                "LATENCY",
                "LOSS",
                "LAST CHECK",
                "LAST ERROR",
            ]
            .map(String::from),
        ];
        for r in &rows {
            let s = &r.service;
            let v = &r.view;
            let mut state = match v.up {
                None => "pending".to_string(),
                Some(true) => "up".to_string(),
                Some(false) => "DOWN".to_string(),
            };
            if r.paused {
                state.push_str(" paused");
            }
            let loss = match v.last_check {
                Some(_) => v
                    .loss
                    .map_or_else(|| "-".into(), |l| format!("{:.0}%", l * 100.0)),
                None => "-".into(),
            };
            let last = v.last_check.map_or_else(
                || "never".to_string(),
                |t| match now.duration_since(t) {
                    Ok(d) => format!("{} ago", humantime::format_duration(round(d))),
                    Err(_) => "just now".to_string(),
                },
            );
            let error = match (&v.last_error, v.failing) {
                (Some(e), true) => e.clone(),
                (Some(e), false) => format!("(earlier) {e}"),
                (None, _) => "-".into(),
            };
            table.push([
                s.host.clone(),
                format!("{} ({})", s.name, every(s)),
                state,
                v.latency.map_or_else(|| "-".into(), ms),
                loss,
                last,
                error,
            ]);
        }
        let mut out = render(&table);
        // What a probe saw beyond the table's columns (a traceroute's path), one line each.
        for r in rows.iter().filter(|r| r.view.detail.is_some()) {
            let detail = r.view.detail.as_deref().unwrap_or_default();
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!(
                "{} {} path: {detail}",
                r.service.host, r.service.name
            ));
        }
        Ok(out)
    }

    fn save(&self, file: Option<&Path>) -> Result<String, String> {
        let path: PathBuf = match (file, self.reloader.source()) {
            (Some(f), _) => f.to_path_buf(),
            (None, Source::File(f)) => f.clone(),
            (None, Source::BuiltIn) => {
                return Err(
                    "netmon runs the built-in configuration; name a file: save FILE".into(),
                );
            }
        };
        if self.config.targets.is_empty() {
            return Err(
                "nothing to save: no targets (`config check` refuses an empty configuration)"
                    .into(),
            );
        }
        let body = config::to_yaml(&self.config).map_err(|e| e.to_string())?;
        let text = format!(
            "# netmon configuration, saved by `netmon console`.\n# Check it with: netmon config check {}\n{body}",
            path.display()
        );
        write_atomically(&path, &text)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(format!(
            "saved {} target(s), {} service(s) to {}",
            self.config.targets.len(),
            self.config.services().count(),
            path.display()
        ))
    }

    fn log(&mut self, setting: LogSetting) -> Result<String, String> {
        let Some(control) = &self.log else {
            return Err("logging cannot be changed here".into());
        };
        let directives = match &setting {
            LogSetting::On => self.log_level.clone(),
            LogSetting::Off => "off".to_string(),
            LogSetting::Filter(f) => f.to_ascii_lowercase(),
        };
        // A bare word is a level: tracing would read `loud` as a module name and log all.
        let levels = ["error", "warn", "info", "debug", "trace", "off"];
        if !directives.contains(['=', ',', ':']) && !levels.contains(&directives.as_str()) {
            return Err(format!(
                "unknown level `{directives}`; usage: log on|off|LEVEL (error, warn, info, debug, trace, or a filter such as netmon=debug)"
            ));
        }
        control.set(&directives).map_err(|e| {
            format!("{e}; usage: log on|off|LEVEL (error, warn, info, debug, trace)")
        })?;
        if let LogSetting::Filter(_) = setting {
            self.log_level = directives.clone();
        }
        Ok(match setting {
            LogSetting::Off => "log lines hidden (`log on` shows them again)".into(),
            _ => format!("logging at {directives}"),
        })
    }

    /// The protocols `add` accepts, for completion.
    pub fn protocols() -> Vec<&'static str> {
        Protocol::ALL.iter().map(|p| p.as_str()).collect()
    }
}

/// Where an edited service's inherited timeout is not below its new interval (a fast
/// `every`), gives the service its own timeout of 90% of the interval, as netmon does when no
/// timeout is written; says so in the returned text.
fn fit_timeouts(config: &mut Config, host: &str, service: Option<&str>) -> String {
    let defaults = config.defaults.clone();
    let mut lowered = Vec::new();
    for t in config.targets.iter_mut().filter(|t| t.host == host) {
        for s in t
            .services
            .iter_mut()
            .filter(|s| service.is_none_or(|n| n == s.name))
        {
            let interval = s
                .own_interval
                .or(t.interval)
                .or(defaults.interval)
                .map_or(crate::config::model::DEFAULT_INTERVAL, |d| d.0);
            let timeout = s.own_timeout.or(t.timeout).or(defaults.timeout);
            if timeout.is_some_and(|t| t.0 >= interval) {
                let fit = StdDuration::from_millis((interval.as_millis() * 9 / 10) as u64);
                s.own_timeout = Some(Duration(fit));
                lowered.push(format!("{} {}", s.name, Duration(fit)));
            }
        }
    }
    if lowered.is_empty() {
        String::new()
    } else {
        format!(" (timeout lowered to fit: {})", lowered.join(", "))
    }
}

fn with_note(note: Option<String>, text: String) -> String {
    match note {
        Some(n) => format!("{n}\n{text}"),
        None => text,
    }
}

/// Config errors on one line, without positions in text the user never saw.
fn messages(errors: &config::ConfigErrors) -> String {
    errors
        .0
        .iter()
        .map(|e| e.message.clone())
        .collect::<Vec<_>>()
        .join("; ")
}

fn every(s: &Service) -> String {
    format!("{} every {}", s.endpoint(), Duration(s.interval))
}

fn ms(d: StdDuration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1e3)
}

fn round(d: StdDuration) -> StdDuration {
    StdDuration::from_secs(d.as_secs())
}

/// Left-aligned columns two spaces apart.
fn render(rows: &[[String; 7]]) -> String {
    let mut widths = [0usize; 7];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// Writes `text` to a temporary file beside `path`, then renames it over `path`, so a crash
/// never leaves half a configuration.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".netmon-tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
fn joined(errors: &[crate::config::error::ConfigError]) -> String {
    errors
        .iter()
        .map(|e| e.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}
