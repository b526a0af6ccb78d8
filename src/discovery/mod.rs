//! Targets from discovery: one task per `discovery:` source of the running configuration,
//! reading it every `interval`/`refresh` and handing each new list of target groups to the
//! [`Reloader`], which applies it with the static configuration as a reload would (unchanged
//! services keep their counters).
//!
//! A source that cannot be read, gives an invalid list or one over its limits keeps its last
//! good list: the failure is logged with the source and counted in
//! `netmon_discovery_failures_total{source}`. A reload that adds, changes or removes a source
//! starts, restarts or stops its task.
//!
//! - [`file`](mod@file): file_sd files, found by their patterns and read again when they change;
//! - [`http`]: an http_sd endpoint, asked with reqwest.

pub mod file;
pub mod http;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::model::{Discovery, DiscoveryKind};
use crate::config::sd::TargetGroup;
use crate::reload::Reloader;

/// How long stopping waits for a source's task (one read in progress) before leaving it.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Why a read of a source failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A file_sd file.
    #[error(transparent)]
    File(#[from] file::FileError),
    /// An http_sd endpoint.
    #[error(transparent)]
    Http(#[from] http::HttpError),
}

/// Runs the sources of `reloader`'s configuration until `shutdown`, following reloads.
pub async fn run(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    let mut sources = reloader.discovery_sources();
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        let wanted = sources.borrow_and_update().clone();
        sync(&reloader, &shutdown, &mut running, wanted).await;
        tokio::select! {
            changed = sources.changed() => if changed.is_err() { break },
            _ = shutdown.cancelled() => break,
        }
    }
    for (_, r) in running.drain() {
        r.stop().await;
    }
}

/// A source's task.
struct Running {
    source: Discovery,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(STOP_WAIT, self.task).await.is_err() {
            warn!(source = %self.source.name, "discovery source did not stop in time");
        }
    }
}

/// Whether `a` and `b` read the same way: a change of `services:` alone needs no new read,
/// the reload applies it to the lists already read.
fn same_reading(a: &Discovery, b: &Discovery) -> bool {
    a.kind == b.kind && a.max_targets == b.max_targets
}

async fn sync(
    reloader: &Arc<Reloader>,
    shutdown: &CancellationToken,
    running: &mut HashMap<String, Running>,
    wanted: Vec<Discovery>,
) {
    let metrics = &reloader.metrics().discovery;
    let gone: Vec<String> = running
        .iter()
        .filter(|(name, r)| {
            !wanted
                .iter()
                .any(|w| &w.name == *name && same_reading(w, &r.source))
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in gone {
        if let Some(r) = running.remove(&name) {
            r.stop().await;
            if !wanted.iter().any(|w| w.name == name) {
                metrics.remove(&name);
                info!(source = %name, "discovery source removed");
            }
        }
    }
    for source in wanted {
        if running.contains_key(&source.name) {
            continue;
        }
        metrics.add(&source.name);
        let stop = shutdown.child_token();
        let task = tokio::spawn(watch(reloader.clone(), source.clone(), stop.clone()));
        info!(source = %source.name, "discovery source started");
        running.insert(source.name.clone(), Running { source, stop, task });
    }
}

/// How a source is read.
enum Reader {
    File(file::Files),
    Http(Box<http::Endpoint>),
}

impl Reader {
    async fn read(&mut self) -> Result<Vec<TargetGroup>, ReadError> {
        Ok(match self {
            Reader::File(f) => f.read().await?,
            Reader::Http(h) => h.read().await?,
        })
    }
}

/// Reads `source` every interval until `stop`, applying each new list.
async fn watch(reloader: Arc<Reloader>, source: Discovery, stop: CancellationToken) {
    let metrics = reloader.metrics().discovery.clone();
    let name = source.name.clone();
    let (mut reader, every) = match &source.kind {
        DiscoveryKind::File { patterns, interval } => (
            Reader::File(file::Files::new(patterns.clone(), source.max_targets)),
            interval.0,
        ),
        DiscoveryKind::Http(h) => match http::Endpoint::new(h, source.max_targets) {
            Ok(e) => (Reader::Http(Box::new(e)), h.refresh.0),
            Err(e) => {
                // Only a machine without usable TLS gets here: the config was checked.
                metrics.failed(&name);
                warn!(source = %name, error = %e, "discovery source cannot run");
                return;
            }
        },
    };
    // The list applied last, and how many targets it had.
    let mut applied: Option<(Vec<TargetGroup>, usize)> = None;
    // The last failure's message: the same failure again is counted but logged once, so a
    // broken file does not log every few seconds; the recovery is logged too.
    let mut failing: Option<String> = None;
    loop {
        let read = tokio::select! {
            r = reader.read() => r,
            _ = stop.cancelled() => return,
        };
        let outcome = match read {
            Ok(groups) => match &applied {
                Some((last, count)) if *last == groups => Ok(*count),
                _ => match reloader.discovered(&name, groups.clone()).await {
                    Ok(count) => {
                        applied = Some((groups, count));
                        Ok(count)
                    }
                    Err(crate::reload::DiscoveryError::Gone(_)) => return,
                    Err(e) => Err(("discovered list refused", e.to_string())),
                },
            },
            Err(e) => Err((
                "discovery source read failed: its last good list stays",
                e.to_string(),
            )),
        };
        match outcome {
            Ok(count) => {
                metrics.succeeded(&name, count, crate::metrics::unix_now());
                if failing.take().is_some() {
                    info!(source = %name, targets = count, "discovery source read again");
                }
            }
            Err((what, error)) => {
                metrics.failed(&name);
                if failing.as_ref() == Some(&error) {
                    debug!(source = %name, %error, "{what} (again)");
                } else {
                    warn!(source = %name, %error, "{what}");
                    failing = Some(error);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}
