//! Which instance of a shard set probes a service: rendezvous (highest random weight) hashing
//! of (host, service) over the shard indexes. Every instance with the same config and the same
//! shard count agrees without talking to the others, and going from N to N+1 shards moves only
//! the services the new shard wins, about 1/(N+1) of them.

use std::fmt;

/// This instance's place in a set of `count` shards (`--shard.index`, `--shard.count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why a shard cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// A set of no shards.
    #[error("--shard.count must be at least 1")]
    NoShards,
    /// An index outside the set.
    #[error("--shard.index {index} is not a shard of {count}: use 0 to {}", count - 1)]
    OutOfRange {
        /// The index given.
        index: u32,
        /// The count given.
        count: u32,
    },
}

impl Shard {
    /// Shard `index` of `count` (0-based).
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// The index, 0-based.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many shards share the config.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shard that owns the service `service` of `host` in a set of `count` shards.
    pub fn owner(host: &str, service: &str, count: u32) -> u32 {
        (0..count.max(1))
            .max_by_key(|&i| weight(host, service, i))
            .unwrap_or(0)
    }

    /// Whether this shard probes the service `service` of `host`.
    pub fn owns(&self, host: &str, service: &str) -> bool {
        Shard::owner(host, service, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}", self.index, self.count)
    }
}

/// The weight of shard `index` for a service: FNV-1a over host, a separator, service and the
/// index, then a 64-bit finaliser, so every weight is stable across processes, versions and
/// machines (std's hasher is keyed per process) and well spread even for similar names.
fn weight(host: &str, service: &str, index: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let index = index.to_le_bytes();
    let bytes = host
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(service.as_bytes())
        .chain(&[0xff])
        .chain(&index);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| {
                (
                    format!("host{}.example", i / 3),
                    format!("tcp:{}", 1000 + i),
                )
            })
            .collect()
    }

    #[test]
    fn every_service_has_exactly_one_owner() {
        for count in 1..=7 {
            let shards: Vec<Shard> = (0..count).map(|i| Shard::new(i, count).unwrap()).collect();
            for (host, service) in services(3000) {
                let owners = shards.iter().filter(|s| s.owns(&host, &service)).count();
                assert_eq!(owners, 1, "{host} {service} in {count} shards");
            }
        }
    }

    #[test]
    fn shards_get_even_shares() {
        let all = services(30_000);
        for count in [2u32, 3, 5, 8] {
            let mut per = vec![0usize; count as usize];
            for (h, s) in &all {
                per[Shard::owner(h, s, count) as usize] += 1;
            }
            let fair = all.len() as f64 / f64::from(count);
            for n in per {
                assert!(
                    (n as f64 - fair).abs() < fair * 0.05,
                    "{n} of {} services on one of {count} shards",
                    all.len()
                );
            }
        }
    }

    #[test]
    fn one_more_shard_moves_about_one_in_n_plus_one_and_only_to_it() {
        let all = services(30_000);
        for n in 1u32..=8 {
            let mut moved = 0usize;
            for (h, s) in &all {
                let before = Shard::owner(h, s, n);
                let after = Shard::owner(h, s, n + 1);
                if before != after {
                    assert_eq!(after, n, "a service moved between old shards");
                    moved += 1;
                }
            }
            let expected = all.len() as f64 / f64::from(n + 1);
            assert!(
                (moved as f64 - expected).abs() < expected * 0.05,
                "{moved} of {} moved going from {n} to {} shards, expected about {expected:.0}",
                all.len(),
                n + 1
            );
        }
    }

    #[test]
    fn an_index_outside_the_set_says_which_to_use() {
        assert_eq!(
            Shard::new(2, 2).unwrap_err().to_string(),
            "--shard.index 2 is not a shard of 2: use 0 to 1"
        );
        assert_eq!(Shard::new(0, 0).unwrap_err(), ShardError::NoShards);
        assert_eq!(Shard::new(1, 3).unwrap().to_string(), "1 of 3");
    }
}
