//! A bounded in-memory history of one service's results, behind the sparkline and the uptime
//! percentage of the status page and `/api/v1/services`.
//!
//! The history is a ring of 8-byte records allocated once, when the service starts: recording
//! a result (the runner does it after every probe) writes one record and never allocates. It
//! keeps the last 24 hours or the last [`MAX_RESULTS`] results, whichever is less, so a
//! service costs at most [`max_bytes`] however long netmon runs. It uses nothing of netmon, so
//! the runner below the status page can own it.

use std::time::{Duration, SystemTime};

/// The most results a service's history keeps.
pub const MAX_RESULTS: usize = 1440;

/// The oldest result a history shows.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// The most points a [`Summary`] has: the sparkline is about this many pixels wide, so more
/// points would only make the page heavier.
pub const MAX_POINTS: usize = 120;

/// The latency stored for a failed result.
const DOWN: u32 = u32::MAX;

/// One result: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    /// Seconds after [`History::epoch`] (u32 seconds last 136 years).
    at: u32,
    /// Latency in microseconds (saturating just below [`DOWN`], 71 minutes, far above any
    /// timeout), or [`DOWN`] for a failure.
    latency_us: u32,
}

/// The last results of one service, oldest first, in a ring of fixed capacity.
#[derive(Debug, Clone)]
pub struct History {
    /// The time `Record::at` counts from: when the history was made.
    epoch: SystemTime,
    /// At most `capacity` records; once full, `next` is the oldest.
    records: Vec<Record>,
    capacity: usize,
    next: usize,
}

/// The bytes of one service's history at most: the ring's records plus the [`History`] itself.
pub const fn max_bytes() -> usize {
    MAX_RESULTS * std::mem::size_of::<Record>() + std::mem::size_of::<History>()
}

/// What the status page shows of a history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Results within [`MAX_AGE`].
    pub results: usize,
    /// How many of them succeeded.
    pub up: usize,
    /// How many results the history can hold.
    pub capacity: usize,
    /// Time of the oldest result counted.
    pub since: Option<SystemTime>,
    /// The results in at most [`MAX_POINTS`] consecutive groups, oldest first.
    pub points: Vec<Point>,
}

/// A group of consecutive results.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Point {
    /// Mean latency of the group's successes, seconds; `None` when none succeeded.
    pub latency: Option<f64>,
    /// Whether any result of the group failed.
    pub down: bool,
}

impl Summary {
    /// Successful results as a percentage of all, `None` before the first result.
    pub fn uptime_percent(&self) -> Option<f64> {
        (self.results > 0).then(|| self.up as f64 * 100.0 / self.results as f64)
    }
}

impl History {
    /// How many results cover [`MAX_AGE`] at `interval`, at most [`MAX_RESULTS`], at least 1.
    pub fn capacity_for(interval: Duration) -> usize {
        if interval.is_zero() {
            return MAX_RESULTS;
        }
        let wanted = (MAX_AGE.as_secs_f64() / interval.as_secs_f64()).ceil();
        (wanted.min(MAX_RESULTS as f64) as usize).max(1)
    }

    /// An empty history for a service probed every `interval`, keeping at most `results`
    /// results, its ring allocated now.
    pub fn new(interval: Duration, results: usize) -> Self {
        Self::with_capacity(Self::capacity_for(interval).min(results), SystemTime::now())
    }

    /// An empty history of `capacity` results (at most [`MAX_RESULTS`]; 0 keeps none)
    /// counting time from `epoch`.
    pub fn with_capacity(capacity: usize, epoch: SystemTime) -> Self {
        let capacity = capacity.min(MAX_RESULTS);
        History {
            epoch,
            records: Vec::with_capacity(capacity),
            capacity,
            next: 0,
        }
    }

    /// How many results it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many results it holds (some may be older than [`MAX_AGE`]).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds no result.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The bytes this history takes: its ring (allocated whole at the start) and itself.
    pub fn bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<Record>() + std::mem::size_of::<Self>()
    }

    /// Records a result finished at `at`: its latency when it succeeded, `None` when it failed.
    /// Overwrites the oldest result when full; never allocates.
    pub fn push(&mut self, at: SystemTime, latency: Option<Duration>) {
        let at = at
            .duration_since(self.epoch)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        let latency_us = match latency {
            Some(l) => u32::try_from(l.as_micros())
                .unwrap_or(DOWN - 1)
                .min(DOWN - 1),
            None => DOWN,
        };
        let record = Record { at, latency_us };
        if self.capacity == 0 {
            return;
        }
        if self.records.len() < self.capacity {
            self.records.push(record);
        } else {
            // The ring is full: `next` is the oldest record.
            self.records[self.next] = record;
            self.next = (self.next + 1) % self.capacity;
        }
    }

    /// The records, oldest first.
    fn ordered(&self) -> impl Iterator<Item = &Record> {
        let (newer, older) = self.records.split_at(self.next.min(self.records.len()));
        older.iter().chain(newer)
    }

    /// The results within [`MAX_AGE`] before `now`, counted and grouped for the sparkline.
    pub fn summary(&self, now: SystemTime) -> Summary {
        let cutoff = now
            .checked_sub(MAX_AGE)
            .and_then(|c| c.duration_since(self.epoch).ok())
            .map_or(0, |d| d.as_secs());
        let recent: Vec<Record> = self
            .ordered()
            .filter(|r| u64::from(r.at) >= cutoff)
            .copied()
            .collect();
        let mut summary = Summary {
            results: recent.len(),
            up: recent.iter().filter(|r| r.latency_us != DOWN).count(),
            capacity: self.capacity,
            since: recent
                .first()
                .map(|r| self.epoch + Duration::from_secs(u64::from(r.at))),
            points: Vec::new(),
        };
        let groups = recent.len().min(MAX_POINTS);
        summary.points.reserve_exact(groups);
        for g in 0..groups {
            // Group g holds records [g*n/groups, (g+1)*n/groups): sizes differ by one at most.
            let group = &recent[g * recent.len() / groups..(g + 1) * recent.len() / groups];
            let ups: Vec<u32> = group
                .iter()
                .map(|r| r.latency_us)
                .filter(|&l| l != DOWN)
                .collect();
            summary.points.push(Point {
                latency: (!ups.is_empty()).then(|| {
                    ups.iter().map(|&l| f64::from(l)).sum::<f64>() / ups.len() as f64 / 1e6
                }),
                down: ups.len() < group.len(),
            });
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn a_service_costs_at_most_twelve_kilobytes() {
        assert_eq!(std::mem::size_of::<Record>(), 8);
        assert!(max_bytes() <= 11_600, "{}", max_bytes());
        let h = History::new(Duration::from_secs(1), MAX_RESULTS);
        assert_eq!(h.capacity(), MAX_RESULTS);
        let h = History::new(Duration::from_secs(1), 100);
        assert_eq!(h.capacity(), 100);
        assert_eq!(History::new(Duration::from_secs(600), 1440).capacity(), 144);
        assert!(h.bytes() <= max_bytes(), "{}", h.bytes());
    }

    #[test]
    fn capacity_covers_a_day_or_the_most_results() {
        assert_eq!(History::capacity_for(Duration::from_secs(10)), 1440);
        assert_eq!(History::capacity_for(Duration::from_secs(60)), 1440);
        assert_eq!(History::capacity_for(Duration::from_secs(120)), 720);
        assert_eq!(History::capacity_for(Duration::from_secs(7 * 60)), 206);
        assert_eq!(History::capacity_for(Duration::from_secs(2 * 86_400)), 1);
        assert_eq!(History::capacity_for(Duration::ZERO), 1440);
    }

    #[test]
    fn the_ring_keeps_the_newest_results_and_never_grows() {
        let mut h = History::with_capacity(3, t(0));
        let before = h.bytes();
        for i in 0..10u64 {
            h.push(t(i), (i % 2 == 0).then(|| Duration::from_millis(i)));
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.bytes(), before);
        let ats: Vec<u32> = h.ordered().map(|r| r.at).collect();
        assert_eq!(ats, [7, 8, 9]);
        let s = h.summary(t(10));
        assert_eq!((s.results, s.up), (3, 1));
        assert_eq!(s.points[1].latency, Some(0.008));
        assert!(s.points[0].down && !s.points[1].down && s.points[2].down);
        assert_eq!(s.since, Some(t(7)));
    }

    #[test]
    fn uptime_is_the_share_of_successes_within_a_day() {
        let mut h = History::with_capacity(100, t(0));
        assert_eq!(h.summary(t(0)).uptime_percent(), None);
        for i in 0..4 {
            h.push(t(i), Some(Duration::from_millis(5)));
        }
        h.push(t(4), None);
        assert_eq!(h.summary(t(5)).uptime_percent(), Some(80.0));
        // A day later only the failure is recent enough.
        let s = h.summary(t(4) + MAX_AGE);
        assert_eq!((s.results, s.up), (1, 0));
        assert_eq!(s.uptime_percent(), Some(0.0));
        assert_eq!(h.summary(t(5) + MAX_AGE).results, 0);
    }

    #[test]
    fn many_results_are_grouped_into_at_most_the_points_drawn() {
        let mut h = History::with_capacity(MAX_RESULTS, t(0));
        for i in 0..MAX_RESULTS as u64 {
            h.push(t(i), (i != 5).then(|| Duration::from_micros(1000 + i)));
        }
        let s = h.summary(t(MAX_RESULTS as u64));
        assert_eq!(s.points.len(), MAX_POINTS);
        assert!(s.points[0].down, "the failure is in the first group");
        assert!(s.points[1..].iter().all(|p| !p.down));
        assert!(
            s.points
                .iter()
                .all(|p| p.latency.is_some_and(f64::is_finite))
        );
    }

    #[test]
    fn odd_clocks_and_latencies_do_not_panic() {
        let mut none = History::with_capacity(0, t(0));
        none.push(t(1), None);
        assert_eq!((none.len(), none.summary(t(2)).results), (0, 0));
        assert_eq!(none.summary(t(2)).uptime_percent(), None);
        let mut h = History::with_capacity(1, t(100));
        h.push(t(0), Some(Duration::MAX));
        h.push(SystemTime::UNIX_EPOCH, Some(Duration::ZERO));
        let s = h.summary(SystemTime::UNIX_EPOCH);
        assert_eq!(s.results, 1);
        assert_eq!(s.points[0].latency, Some(0.0));
        h.push(t(u64::from(u32::MAX) * 2), None);
        assert_eq!(h.summary(t(0)).results, 1);
    }
}
