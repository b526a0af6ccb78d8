//! One round of packets (icmp, echo, stamp) and the statistics ping reports about it.

use std::time::Duration;

/// What one round of packets measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Round {
    /// Packets sent.
    pub sent: u64,
    /// RTT of each valid reply, in the order the requests were sent.
    pub rtts: Vec<Duration>,
}

impl Round {
    /// Replies received.
    pub fn received(&self) -> u64 {
        self.rtts.len() as u64
    }

    /// Lost share, 0 to 1; 0 when nothing was sent.
    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - (self.received().min(self.sent) as f64 / self.sent as f64)
    }

    /// Mean RTT, if any reply came.
    pub fn mean(&self) -> Option<Duration> {
        let n = u32::try_from(self.rtts.len()).ok().filter(|n| *n > 0)?;
        Some(self.rtts.iter().sum::<Duration>() / n)
    }

    /// Smallest RTT.
    pub fn min(&self) -> Option<Duration> {
        self.rtts.iter().min().copied()
    }

    /// Largest RTT.
    pub fn max(&self) -> Option<Duration> {
        self.rtts.iter().max().copied()
    }

    /// Standard deviation of the RTTs (ping's `mdev`).
    pub fn mdev(&self) -> Option<Duration> {
        let mean = self.mean()?.as_secs_f64();
        let n = self.rtts.len() as f64;
        let var = self
            .rtts
            .iter()
            .map(|r| (r.as_secs_f64() - mean).powi(2))
            .sum::<f64>()
            / n;
        Some(Duration::from_secs_f64(var.sqrt()))
    }

    /// Mean absolute difference of consecutive RTTs (RFC 3550's idea without its smoothing);
    /// needs two replies.
    pub fn jitter(&self) -> Option<Duration> {
        if self.rtts.len() < 2 {
            return None;
        }
        let sum: f64 = self
            .rtts
            .windows(2)
            .map(|w| (w[1].as_secs_f64() - w[0].as_secs_f64()).abs())
            .sum();
        Some(Duration::from_secs_f64(sum / (self.rtts.len() - 1) as f64))
    }
}
