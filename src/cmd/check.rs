//! `netmon check`: probe once and answer as a Nagios/Icinga plugin.
//!
//! Two forms: `netmon check PROTOCOL HOST [--port P] [-o KEY=VALUE ...]` turns its arguments
//! into a one-service configuration and reads it through [`config::load`], so every rule of a
//! config file (protocol names, required ports, option names and values) applies unchanged;
//! `netmon check --config.file F [--host H]` probes the services of a file. Each service gets
//! one output line in the plugin format
//! (`NETMON TCP OK - 127.0.0.1:22 time=0.000300s | time=0.000300s;0.1;0.2;0`) and the exit code
//! is the worst of the results: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
//!
//! Thresholds use the Nagios range syntax (see [`Range`]) for the latency in seconds and, where
//! a protocol reports packet loss (`netmon_packet_loss_ratio`), for the loss in percent. Such
//! protocols also add the round's mean opinion score to the performance data, as check_icmp's
//! MOS mode does (`mos=4.39;;;0;5`).

use std::fmt;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration as StdDuration;

use crate::base::hint::Dialect;
use crate::base::outcome::{Outcome, Target, detail_of, round_of};
use crate::base::quality::Quality;
use crate::base::resolve;
use crate::cli::CheckArgs;
use crate::config;
use crate::config::model::Service;
use crate::config::single::{OneService, option_value};
use crate::metrics::Metrics;
use crate::probe::shape::PortRule;
use crate::probe::{self, Protocol};
use crate::runner::labels_of;

/// A Nagios plugin state; the discriminant is the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// 0: within thresholds.
    Ok = 0,
    /// 1: outside the warning range.
    Warning = 1,
    /// 2: the probe failed or is outside the critical range.
    Critical = 2,
    /// 3: the check could not be run (bad arguments or configuration).
    Unknown = 3,
}

impl State {
    /// The word Nagios shows.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }

    /// The plugin exit code.
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

/// Why a check could not run: the UNKNOWN line's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CheckError(pub String);

/// A Nagios threshold range: `10` (alert outside 0..10), `10:` (below 10), `~:10` (above 10),
/// `10:20` (outside 10..20), `@10:20` (inside 10..20). Bounds are inclusive.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    /// The text as written, repeated in the performance data.
    pub text: String,
    start: f64,
    end: f64,
    inside: bool,
}

impl Range {
    /// Parses Nagios range syntax.
    pub fn parse(text: &str) -> Result<Range, CheckError> {
        let bad = |why: &str| {
            CheckError(format!(
                "invalid threshold `{text}`: {why} (write e.g. `10`, `10:`, `~:10`, `10:20` or `@10:20`)"
            ))
        };
        let t = text.trim();
        let (inside, body) = match t.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let number = |s: &str| -> Result<f64, CheckError> {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(&format!("`{s}` is not a number")))
        };
        let (start, end) = match body.split_once(':') {
            Some((a, b)) => {
                let start = match a.trim() {
                    "~" => f64::NEG_INFINITY,
                    "" => 0.0,
                    a => number(a)?,
                };
                let end = match b.trim() {
                    "" => f64::INFINITY,
                    b => number(b)?,
                };
                (start, end)
            }
            None if body.trim().is_empty() => return Err(bad("empty")),
            None => (0.0, number(body)?),
        };
        if start > end {
            return Err(bad("the start is above the end"));
        }
        Ok(Range {
            text: t.to_string(),
            start,
            end,
            inside,
        })
    }

    /// Whether `value` raises the alert this range stands for.
    pub fn alerts(&self, value: f64) -> bool {
        let within = self.start <= value && value <= self.end;
        within == self.inside
    }
}

/// One `-w`/`-c` argument: a latency range in seconds and optionally `,RANGE%` for loss.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Threshold {
    /// Latency in seconds.
    pub latency: Option<Range>,
    /// Packet loss in percent.
    pub loss: Option<Range>,
}

impl Threshold {
    /// Parses `RANGE`, `RANGE,RANGE%` or `,RANGE%`.
    pub fn parse(text: &str) -> Result<Threshold, CheckError> {
        let (lat, loss) = match text.split_once(',') {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        let latency = match lat.trim() {
            "" => None,
            l => Some(Range::parse(l)?),
        };
        let loss = match loss {
            None => None,
            Some(l) => match l.trim().strip_suffix('%') {
                Some(r) if !r.trim().is_empty() => Some(Range::parse(r)?),
                _ => {
                    return Err(CheckError(format!(
                        "invalid loss threshold `{l}`: write a range in percent, e.g. `20%`"
                    )));
                }
            },
        };
        if latency.is_none() && loss.is_none() {
            return Err(CheckError(format!("empty threshold `{text}`")));
        }
        Ok(Threshold { latency, loss })
    }
}

/// Everything a check run needs, validated.
#[derive(Debug)]
pub struct Plan {
    /// The services to probe, in order.
    pub services: Vec<Service>,
    /// `--timeout`, overriding each service's timeout.
    pub timeout: Option<StdDuration>,
    /// `-w`.
    pub warning: Threshold,
    /// `-c`.
    pub critical: Threshold,
}

/// Turns the command line into a plan, or the reason it cannot run.
pub fn plan(args: &CheckArgs) -> Result<Plan, CheckError> {
    let parse_threshold = |t: &Option<String>| match t {
        Some(t) => Threshold::parse(t),
        None => Ok(Threshold::default()),
    };
    let warning = parse_threshold(&args.warning)?;
    let critical = parse_threshold(&args.critical)?;
    let timeout = match &args.timeout {
        None => None,
        Some(t) => match crate::base::values::Duration::parse(t) {
            Ok(d) if !d.0.is_zero() => Some(d.0),
            Ok(_) => return Err(CheckError("--timeout must be greater than zero".into())),
            Err(e) => return Err(CheckError(format!("--timeout: {e}"))),
        },
    };
    let services = match (&args.config_file, &args.protocol) {
        (Some(_), Some(p)) => {
            return Err(CheckError(format!(
                "give either PROTOCOL HOST or --config.file, not both (PROTOCOL was `{p}`)"
            )));
        }
        (Some(file), None) => from_file(file, args)?,
        (None, Some(protocol)) => from_arguments(protocol, args)?,
        (None, None) => {
            return Err(CheckError(
                "nothing to check: give PROTOCOL HOST (e.g. `netmon check tcp 127.0.0.1 -p 22`) or --config.file FILE".into(),
            ));
        }
    };
    Ok(Plan {
        services,
        timeout,
        warning,
        critical,
    })
}

fn from_file(file: &std::path::Path, args: &CheckArgs) -> Result<Vec<Service>, CheckError> {
    if args.port.is_some() || !args.options.is_empty() || args.host.is_some() {
        return Err(CheckError(
            "with --config.file, only --host selects what to check (--port, -o and HOST belong to the PROTOCOL HOST form)".into(),
        ));
    }
    let config = config::load_file(file).map_err(|e| match e {
        config::LoadError::Invalid(errors) => CheckError(one_line(&errors)),
        other => CheckError(other.to_string()),
    })?;
    let services: Vec<Service> = config
        .services()
        .filter(|s| args.host_flag.as_ref().is_none_or(|h| *h == s.host))
        .cloned()
        .collect();
    if services.is_empty() {
        let hosts: Vec<&str> = config.targets.iter().map(|t| t.host.as_str()).collect();
        return Err(CheckError(format!(
            "no target `{}` in {}; its targets: {}",
            args.host_flag.as_deref().unwrap_or_default(),
            file.display(),
            hosts.join(", ")
        )));
    }
    Ok(services)
}

/// The errors of a generated or loaded config on one line, without positions in a file the
/// user never wrote.
fn one_line(errors: &config::ConfigErrors) -> String {
    errors
        .0
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Builds the one service `PROTOCOL HOST` stands for, through the config loader.
fn from_arguments(protocol: &str, args: &CheckArgs) -> Result<Vec<Service>, CheckError> {
    let host = match (&args.host, &args.host_flag) {
        (Some(a), Some(b)) if a != b => {
            return Err(CheckError(format!(
                "two hosts given: `{a}` and --host `{b}`; keep one"
            )));
        }
        (Some(h), _) | (None, Some(h)) => h,
        (None, None) => {
            return Err(CheckError(format!(
                "which host? write `netmon check {protocol} HOST`"
            )));
        }
    };
    let mut one = OneService {
        host: host.clone(),
        service: protocol.to_string(),
        port: args.port,
        dialect: Dialect::CommandLine,
        ..OneService::default()
    };
    let url_path = match from_url(protocol, host, args.port)? {
        Some(u) => {
            one.host = u.host;
            one.service = u.service;
            one.port = u.port;
            u.path
        }
        None => None,
    };
    for o in &args.options {
        let Some((k, v)) = o.split_once('=') else {
            return Err(CheckError(format!(
                "option `{o}` must be KEY=VALUE, e.g. `-o expect_regex=^SSH`"
            )));
        };
        let k = k.trim();
        let valid = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid || ["type", "name", "interval", "timeout"].contains(&k) {
            return Err(CheckError(format!(
                "`{k}` is not a protocol option (use --port, --timeout; options are lowercase names such as expect_regex)"
            )));
        }
        if k == "path" && url_path.is_some() {
            return Err(CheckError(format!(
                "the path is given twice: in the URL `{host}` and in `-o {o}`; keep one"
            )));
        }
        one.options.push((k.to_string(), option_value(v)));
    }
    if let Some(path) = url_path {
        one.options.push(("path".into(), path.into()));
    }
    let service = one.load("<command line>").map_err(|errors| {
        CheckError(
            errors
                .0
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    Ok(vec![service])
}

/// What a URL given as HOST stands for: `http://127.0.0.1:9855/metrics` is an `http` service
/// on `127.0.0.1`, port 9855, path `/metrics`.
#[derive(Debug, PartialEq)]
struct UrlTarget {
    host: String,
    /// The URL's scheme, which wins over PROTOCOL (`check http https://...` is https).
    service: String,
    port: Option<u16>,
    /// Path and query, when not just `/`.
    path: Option<String>,
}

/// Reads HOST as a URL when it is one. Only http and https take a URL; for every other
/// protocol the error spells out the command to type instead.
fn from_url(
    protocol: &str,
    text: &str,
    flag_port: Option<u16>,
) -> Result<Option<UrlTarget>, CheckError> {
    if !text.contains("://") {
        return Ok(None);
    }
    let url = url::Url::parse(text)
        .map_err(|e| CheckError(format!("`{text}` is not a valid URL: {e}")))?;
    let host = match url.host() {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(h) => h.to_string(),
        None => return Err(CheckError(format!("the URL `{text}` has no host"))),
    };
    let (name, protocol_port) = match protocol.rsplit_once(':') {
        Some((n, p)) => (n, p.trim().parse::<u16>().ok()),
        None => (protocol, None),
    };
    let name = name.trim().to_ascii_lowercase();
    let port = match (url.port(), protocol_port, flag_port) {
        (Some(u), Some(p), _) | (Some(u), None, Some(p)) if u != p => {
            return Err(CheckError(format!(
                "the port is given twice: {u} in the URL `{text}` and {p} on the command line; keep one"
            )));
        }
        (u, p, f) => u.or(p).or(f),
    };
    if !matches!(name.as_str(), "http" | "https") {
        let takes_port = Protocol::from_name(&name).is_none_or(|p| p.takes_port());
        let port = match (port, Protocol::from_name(&name).map(|p| p.port_rule())) {
            (Some(p), _) if takes_port => format!(" --port {p}"),
            (None, Some(PortRule::Required)) => " --port PORT".into(),
            _ => String::new(),
        };
        return Err(CheckError(format!(
            "{name} takes a host, not a URL: write `netmon check {name} {host}{port}`"
        )));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CheckError(format!(
            "{name} takes an http:// or https:// URL, not `{text}`"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CheckError(format!(
            "netmon does not send credentials from the URL `{text}`: remove them and send a header, e.g. `-o 'headers={{Authorization: Basic ...}}'`"
        )));
    }
    let path = match (url.path(), url.query()) {
        ("/", None) => None,
        (p, None) => Some(p.to_string()),
        (p, Some(q)) => Some(format!("{p}?{q}")),
    };
    Ok(Some(UrlTarget {
        host,
        service: url.scheme().to_string(),
        port,
        path,
    }))
}

/// What one probe gave, judged against the thresholds.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The service probed.
    pub service: Service,
    /// The probe's result (or why it could not be built).
    pub outcome: Result<Outcome, String>,
    /// Packet loss in percent, where the protocol reports it.
    pub loss_percent: Option<f64>,
    /// The round's call-quality estimate, where the protocol sends a round of packets.
    pub quality: Option<Quality>,
    /// The state.
    pub state: State,
}

/// Probes every service of `plan` at once and judges the results: one verdict per service,
/// or per address of an `ip: all` service.
pub async fn execute(plan: &Plan) -> Vec<Verdict> {
    let metrics = Metrics::new();
    let runs = plan
        .services
        .iter()
        .map(|s| probe_service(s, plan, &metrics));
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn probe_service(service: &Service, plan: &Plan, metrics: &Metrics) -> Vec<Verdict> {
    let Some(every) = service.addresses else {
        return vec![probe_once(service, None, plan, metrics).await];
    };
    let timeout = plan.timeout.unwrap_or(service.timeout);
    let found = resolve::with_budget(
        resolve::budget_for(timeout),
        resolve::addresses(&service.host, every),
    )
    .await;
    match found {
        Ok(ips) => {
            let runs = ips
                .into_iter()
                .map(|ip| probe_once(service, Some(ip), plan, metrics));
            futures_util::future::join_all(runs).await
        }
        Err(f) => {
            let outcome = Ok(Err(f));
            let state = judge(&outcome, None, &plan.warning, &plan.critical);
            vec![Verdict {
                service: service.clone(),
                outcome,
                loss_percent: None,
                quality: None,
                state,
            }]
        }
    }
}

/// Probes `service` once; `ip` is the one address of an `ip: all` service to probe.
async fn probe_once(
    service: &Service,
    ip: Option<IpAddr>,
    plan: &Plan,
    metrics: &Metrics,
) -> Verdict {
    let mut service = service.clone();
    if let Some(ip) = ip {
        service.labels.insert("ip".into(), ip.to_string());
    }
    let service = &service;
    let labels = labels_of(service);
    let timeout = plan.timeout.unwrap_or(service.timeout);
    let ctx = probe::shape::Context {
        labels: &labels,
        timeout,
        rtt_buckets: service.rtt_buckets.as_deref(),
    };
    let outcome = match probe::build(&service.options, &ctx, &metrics.probe) {
        Err(e) => Err(e.to_string()),
        Ok(p) => {
            let target = Target {
                host: service.host.clone(),
            };
            let run = crate::runner::run_with_timeout(&*p, &target, timeout);
            Ok(match ip {
                Some(ip) => resolve::pinned(&service.host, ip, run).await,
                None => run.await,
            })
        }
    };
    let round = outcome.as_ref().ok().and_then(round_of);
    let loss_percent = round.map(|r| r.loss_ratio() * 100.0);
    let quality = round.and_then(Quality::of);
    let state = judge(&outcome, loss_percent, &plan.warning, &plan.critical);
    Verdict {
        service: service.clone(),
        outcome,
        loss_percent,
        quality,
        state,
    }
}

fn judge(
    outcome: &Result<Outcome, String>,
    loss: Option<f64>,
    warning: &Threshold,
    critical: &Threshold,
) -> State {
    let ok = match outcome {
        Err(_) => return State::Unknown,
        Ok(Err(_)) => return State::Critical,
        Ok(Ok(ok)) => ok,
    };
    let latency = ok.latency.as_secs_f64();
    let hit = |t: &Threshold| {
        t.latency.as_ref().is_some_and(|r| r.alerts(latency))
            || matches!((&t.loss, loss), (Some(r), Some(l)) if r.alerts(l))
    };
    if hit(critical) {
        State::Critical
    } else if hit(warning) {
        State::Warning
    } else {
        State::Ok
    }
}

/// A performance-data label, quoted when it has characters Nagios would split on.
fn perf_label(label: &str) -> String {
    if label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        label.to_string()
    } else {
        format!("'{}'", label.replace('\'', "''"))
    }
}

/// A threshold's text for the performance data, empty when unset.
fn perf_range(r: &Option<Range>) -> &str {
    r.as_ref().map_or("", |r| r.text.as_str())
}

/// Formats one verdict as a plugin output line. `prefix` names the series when several
/// services share one output (`host service`), empty for a single service.
pub fn line(v: &Verdict, plan: &Plan, prefix: &str) -> String {
    let proto = v.service.protocol.as_str().to_uppercase();
    let state = v.state.as_str();
    let mut at = v.service.endpoint();
    if let (Some(ip), Some(_)) = (v.service.labels.get("ip"), v.service.addresses) {
        at.push_str(&format!(" [{ip}]"));
    }
    let name = if v.service.name == v.service.protocol.as_str() || prefix.is_empty() {
        String::new()
    } else {
        format!(" ({})", v.service.name)
    };
    match &v.outcome {
        Err(why) => format!("NETMON {proto} {state} - {at}{name} cannot probe: {why}"),
        Ok(Err(f)) => format!("NETMON {proto} {state} - {at}{name} {f}"),
        Ok(Ok(ok)) => {
            let secs = ok.latency.as_secs_f64();
            let mut text = format!("NETMON {proto} {state} - {at}{name} time={secs:.6}s");
            let (w, c) = (&plan.warning, &plan.critical);
            let label = |what: &str| {
                if prefix.is_empty() {
                    perf_label(what)
                } else {
                    perf_label(&format!("{prefix} {what}"))
                }
            };
            let mut perf = format!(
                "{}={secs:.6}s;{};{};0",
                label("time"),
                perf_range(&w.latency),
                perf_range(&c.latency)
            );
            if let Some(l) = v.loss_percent {
                text.push_str(&format!(" loss={}%", Pct(l)));
                perf.push_str(&format!(
                    " {}={}%;{};{};0;100",
                    label("pl"),
                    Pct(l),
                    perf_range(&w.loss),
                    perf_range(&c.loss)
                ));
            }
            if let Some(q) = v.quality {
                // check_icmp's field: no thresholds here (-w/-c are latency and loss), and its
                // 0..5 bounds so graphs of both tools share an axis.
                perf.push_str(&format!(" {}={:.2};;;0;5", label("mos"), q.mos));
            }
            format!("{text} | {perf}")
        }
    }
}

/// A percentage without trailing zeros: `0`, `12.5`.
struct Pct(f64);

impl fmt::Display for Pct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format!("{:.3}", self.0);
        f.write_str(s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// The line printed when the check cannot run.
pub fn unknown_line(e: &CheckError) -> String {
    let reason = e.0.lines().next().unwrap_or_default();
    format!("NETMON UNKNOWN - {reason}")
}

/// `netmon check`: prints the plugin output and returns the worst state's exit code.
pub fn run(args: &CheckArgs) -> ExitCode {
    let plan = match plan(args) {
        Ok(p) => p,
        Err(e) => {
            println!("{}", unknown_line(&e));
            return State::Unknown.exit_code();
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("NETMON UNKNOWN - cannot start the runtime: {e}");
            return State::Unknown.exit_code();
        }
    };
    let verdicts = rt.block_on(execute(&plan));
    let several = verdicts.len() > 1;
    let mut worst = State::Ok;
    for v in &verdicts {
        let prefix = prefix_of(v, several);
        println!("{}", line(v, &plan, &prefix));
        worst = worst.max(v.state);
    }
    // Long output, after every plugin line: what a probe saw beyond them (a traceroute's path).
    for v in &verdicts {
        if let Some(d) = detail_line(v, several) {
            println!("{d}");
        }
    }
    worst.exit_code()
}

/// The long-output line of a verdict whose probe tells more than up and latency (`path: 1
/// 192.0.2.1 0.412ms, 2 *, ...`), prefixed with host and service when several are checked.
pub fn detail_line(v: &Verdict, several: bool) -> Option<String> {
    let detail = v.outcome.as_ref().ok().and_then(detail_of)?;
    Some(match prefix_of(v, several) {
        p if p.is_empty() => format!("path: {detail}"),
        p => format!("{p} path: {detail}"),
    })
}

/// What names a verdict's lines when several share the output (`host service`, with the
/// address under `ip: all`); empty for a single one.
fn prefix_of(v: &Verdict, several: bool) -> String {
    if !several {
        return String::new();
    }
    match (v.service.labels.get("ip"), v.service.addresses) {
        (Some(ip), Some(_)) => format!("{} {} {ip}", v.service.host, v.service.name),
        _ => format!("{} {}", v.service.host, v.service.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nagios_ranges() {
        let cases: &[(&str, &[(f64, bool)])] = &[
            (
                "10",
                &[(-1.0, true), (0.0, false), (10.0, false), (10.1, true)],
            ),
            ("10:", &[(9.9, true), (10.0, false), (1e9, false)]),
            ("~:10", &[(-1e9, false), (10.0, false), (10.5, true)]),
            ("10:20", &[(9.0, true), (15.0, false), (21.0, true)]),
            (
                "@10:20",
                &[(9.0, false), (10.0, true), (20.0, true), (21.0, false)],
            ),
            ("0.1", &[(0.05, false), (0.2, true)]),
        ];
        for (text, values) in cases {
            let r = Range::parse(text).unwrap();
            for (v, alert) in *values {
                assert_eq!(r.alerts(*v), *alert, "{text} at {v}");
            }
        }
        for bad in ["", "x", "20:10", "@", "1:2:3", "nan"] {
            assert!(Range::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn thresholds_with_loss() {
        let t = Threshold::parse("0.1,20%").unwrap();
        assert_eq!(t.latency.unwrap().text, "0.1");
        assert_eq!(t.loss.unwrap().text, "20");
        let t = Threshold::parse(",5%").unwrap();
        assert!(t.latency.is_none());
        assert!(Threshold::parse("0.1,20").is_err());
        assert!(Threshold::parse(",").is_err());
    }

    #[tokio::test]
    async fn loss_comes_from_the_round_the_probe_sent() {
        use clap::Parser;
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port().to_string();
        let cli = crate::cli::Cli::try_parse_from([
            "netmon",
            "check",
            "echo",
            "127.0.0.1",
            "--port",
            &port,
            "--timeout",
            "2s",
            "-o",
            "count=2",
            "-o",
            "packet_interval=10ms",
            "-o",
            "reply_timeout=200ms",
        ])
        .unwrap();
        let Some(crate::cli::Command::Check(args)) = cli.command else {
            panic!("not a check command");
        };
        let plan = plan(&args).unwrap();
        let verdicts = execute(&plan).await;
        assert_eq!(verdicts.len(), 1);
        assert!(
            matches!(verdicts[0].outcome, Ok(Err(_))),
            "{:?}",
            verdicts[0]
        );
        assert_eq!(verdicts[0].loss_percent, Some(100.0));
        assert_eq!(verdicts[0].quality, Some(Quality::WORST));
    }

    #[tokio::test]
    async fn a_round_of_packets_adds_its_mos_to_the_performance_data() {
        use clap::Parser;
        let reflector = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = reflector.local_addr().unwrap().port().to_string();
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = reflector.recv_from(&mut buf).await {
                let _ = reflector.send_to(&buf[..n], from).await;
            }
        });
        let cli = crate::cli::Cli::try_parse_from([
            "netmon",
            "check",
            "echo",
            "127.0.0.1",
            "--port",
            &port,
            "-o",
            "count=2",
            "-o",
            "packet_interval=10ms",
        ])
        .unwrap();
        let Some(crate::cli::Command::Check(args)) = cli.command else {
            panic!("not a check command");
        };
        let plan = plan(&args).unwrap();
        let verdicts = execute(&plan).await;
        echo.abort();
        let text = line(&verdicts[0], &plan, "");
        // Loopback: no loss and well under 160 ms, so MOS is above 4.3.
        let mos: f64 = text
            .split_once(" mos=")
            .and_then(|(_, rest)| rest.strip_suffix(";;;0;5"))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no mos in {text}"));
        assert!(mos > 4.3 && mos < 4.41, "{text}");
        assert!(text.contains(" pl=0%;;;0;100 mos="), "{text}");
    }

    /// `plan` for `netmon check ARGS`, or the UNKNOWN reason.
    fn plan_of(args: &[&str]) -> Result<Plan, String> {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["netmon", "check"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        let Some(crate::cli::Command::Check(args)) = cli.command else {
            return Err("not a check command".into());
        };
        plan(&args).map_err(|e| e.0)
    }

    #[test]
    fn a_url_as_host_gives_scheme_host_port_and_path() {
        let cases = [
            (
                &["http", "http://127.0.0.1:9855/"][..],
                "http",
                "127.0.0.1",
                "127.0.0.1:9855",
                None,
            ),
            (
                &["http", "https://[::1]/metrics?x=1"],
                "https",
                "::1",
                "::1",
                Some("/metrics?x=1"),
            ),
            (
                &["https", "https://example.com:8443/a"],
                "https",
                "example.com",
                "example.com:8443",
                Some("/a"),
            ),
            (&["http:9855", "http://h/"], "http", "h", "h:9855", None),
        ];
        for (args, protocol, host, endpoint, path) in cases {
            let plan = plan_of(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let s = &plan.services[0];
            assert_eq!(s.protocol.as_str(), protocol, "{args:?}");
            assert_eq!(s.host, host, "{args:?}");
            assert_eq!(s.endpoint(), endpoint, "{args:?}");
            let (probe::Options::Http(o) | probe::Options::Https(o)) = &s.options else {
                panic!("{args:?}: not an http service");
            };
            assert_eq!(o.path.as_deref(), path, "{args:?}");
        }
    }

    #[test]
    fn a_url_where_only_a_host_fits_says_what_to_write() {
        let cases = [
            (
                &["tcp", "tcp://127.0.0.1:9855"][..],
                "tcp takes a host, not a URL: write `netmon check tcp 127.0.0.1 --port 9855`",
            ),
            (
                &["TCP", "http://127.0.0.1/"],
                "tcp takes a host, not a URL: write `netmon check tcp 127.0.0.1 --port PORT`",
            ),
            (
                &["icmp", "http://192.0.2.1:80/"],
                "icmp takes a host, not a URL: write `netmon check icmp 192.0.2.1`",
            ),
            (
                &["dns", "dns://[::1]:5353"],
                "dns takes a host, not a URL: write `netmon check dns ::1 --port 5353`",
            ),
            (
                &["http", "ftp://h/"],
                "http takes an http:// or https:// URL, not `ftp://h/`",
            ),
            (
                &["http", "http://h:8080/", "--port", "81"],
                "the port is given twice: 8080 in the URL `http://h:8080/` and 81 on the command line; keep one",
            ),
            (
                &["http", "http://h/a", "-o", "path=/b"],
                "the path is given twice: in the URL `http://h/a` and in `-o path=/b`; keep one",
            ),
            (
                &["http", "http://u:p@h/"],
                "netmon does not send credentials from the URL `http://u:p@h/`: remove them and send a header, e.g. `-o 'headers={Authorization: Basic ...}'`",
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(plan_of(args).unwrap_err(), expected, "{args:?}");
        }
    }

    #[test]
    fn command_line_hints_name_flags_not_config_keys() {
        let cases = [
            (
                &["tcp", "127.0.0.1"][..],
                "tcp service on `127.0.0.1` needs a port: add `--port 22`, e.g. `netmon check tcp 127.0.0.1 --port 22`",
            ),
            (
                &["udp", "h"],
                "udp service on `h` needs a port: add `--port 53`, e.g. `netmon check udp h --port 53` (`netmon check echo h` checks netmon's echo server)",
            ),
            (
                &["icmp", "h", "--port", "3"],
                "icmp has no port: drop `--port 3`",
            ),
            (
                &["icmp:3", "h"],
                "`icmp` has no port: write `icmp` without `:3`",
            ),
            (
                &["tcp:22", "h", "--port", "23"],
                "the port is given twice: in `tcp:22` and in `--port 23`; keep one",
            ),
        ];
        for (args, expected) in cases {
            let e = plan_of(args).unwrap_err();
            assert_eq!(e, expected, "{args:?}");
            assert!(
                !e.contains("`port:") && !e.contains("{type"),
                "config syntax in {e}"
            );
        }
    }

    #[test]
    fn loss_percent_prints_without_trailing_zeros() {
        assert_eq!(Pct(0.0).to_string(), "0");
        assert_eq!(Pct(12.5).to_string(), "12.5");
        assert_eq!(Pct(100.0).to_string(), "100");
    }
}
