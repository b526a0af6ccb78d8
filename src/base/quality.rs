//! Call-quality estimates of a round of packets (icmp, echo, stamp): the E-model R-factor and the mean
//! opinion score (MOS), computed as the `check_icmp` plugin of nagios-plugins and
//! monitoring-plugins computes them for its `-R`/`-M` modes, so the two tools agree on a path.
//!
//! The simplified E-model (ITU-T G.107) from RTT, jitter and loss:
//!
//! ```text
//! effective latency EL = mean RTT + 2 × jitter + 10 ms
//! R   = 93.2 − EL / 40              when EL < 160 ms
//!       93.2 − (EL − 120) / 10      otherwise
//! R  −= 2.5 × loss in percent, then R is held within 0 to 100
//! MOS = 1 + 0.035 R + 0.000007 R (R − 60) (100 − R), held within 1 to 4.5
//! ```
//!
//! Jitter is the mean absolute difference of consecutive RTTs ([`Round::jitter`]), which is what
//! check_icmp sums reply by reply. Where netmon differs from check_icmp, and why:
//! - check_icmp truncates the loss to a whole percent; netmon uses the exact share, so 1 lost of
//!   3 costs 83.3 points of R, not 82.5.
//! - check_icmp clamps only R (at 0); its MOS curve dips to 0.99 for R between 0 and 6.5, where
//!   netmon holds MOS at 1, the bottom of the scale. R cannot pass 92.95 from a round, so the
//!   upper limits (R 100, MOS 4.5) are there for the scale's sake and never change a value.
//! - check_icmp reports MOS 0 (no value) with fewer than two replies. netmon reports R = 0 and
//!   MOS = 1 for a round with no reply, which is also what the formula gives for 100 % loss;
//!   a round of one packet with its reply has no jitter to measure and counts it as 0.

use std::time::Duration;

use crate::base::round::Round;

/// The R-factor and MOS of one round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    /// E-model transmission rating, 0 (unusable) to 100; at most 92.95 from a round.
    pub r_factor: f64,
    /// Mean opinion score, 1 (bad) to 4.5; at most 4.40 from a round.
    pub mos: f64,
}

impl Quality {
    /// The bottom of both scales: what a round with no reply gets.
    pub const WORST: Quality = Quality {
        r_factor: 0.0,
        mos: 1.0,
    };

    /// The estimate for a round of `mean` RTT, `jitter` and `loss_ratio` (0 to 1). A loss that
    /// is not a number counts as total loss, so no NaN reaches a gauge.
    pub fn from_stats(mean: Duration, jitter: Duration, loss_ratio: f64) -> Quality {
        let loss = if loss_ratio.is_nan() {
            1.0
        } else {
            loss_ratio.clamp(0.0, 1.0)
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let effective = ms(mean) + 2.0 * ms(jitter) + 10.0;
        let r = if effective < 160.0 {
            93.2 - effective / 40.0
        } else {
            93.2 - (effective - 120.0) / 10.0
        };
        let r = (r - loss * 100.0 * 2.5).clamp(0.0, 100.0);
        let mos = 1.0 + 0.035 * r + 0.000_007 * r * (r - 60.0) * (100.0 - r);
        Quality {
            r_factor: r,
            mos: mos.clamp(1.0, 4.5),
        }
    }

    /// The estimate for a finished round; `None` when it sent nothing, so there is nothing to
    /// judge and the gauges keep their last value.
    pub fn of(round: &Round) -> Option<Quality> {
        if round.sent == 0 {
            return None;
        }
        let Some(mean) = round.mean() else {
            return Some(Quality::WORST);
        };
        // One reply has no consecutive pair; with more than one packet sent the loss alone
        // already brings R to 0, so this only matters for a round of one packet.
        let jitter = round.jitter().unwrap_or_default();
        Some(Quality::from_stats(mean, jitter, round.loss_ratio()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1e3)
    }

    /// Checks both values against ones worked out by hand from the formula.
    #[track_caller]
    fn assert_quality(q: Quality, r_factor: f64, mos: f64) {
        assert!(
            (q.r_factor - r_factor).abs() < 1e-9 && (q.mos - mos).abs() < 1e-9,
            "got R {} MOS {}, expected R {r_factor} MOS {mos}",
            q.r_factor,
            q.mos
        );
    }

    #[test]
    fn short_effective_latency_costs_a_fortieth() {
        // EL = 20 + 2·5 + 10 = 40 → R = 93.2 − 1 = 92.2;
        // MOS = 1 + 3.227 + 7e-6 · 92.2 · 32.2 · 7.8 = 4.227 + 0.162098664.
        assert_quality(
            Quality::from_stats(ms(20.0), ms(5.0), 0.0),
            92.2,
            4.389098664,
        );
    }

    #[test]
    fn long_effective_latency_costs_a_tenth_above_120_ms() {
        // EL = 200 + 2·20 + 10 = 250 → R = 93.2 − 13 = 80.2;
        // MOS = 1 + 2.807 + 7e-6 · 80.2 · 20.2 · 19.8 = 3.807 + 0.224537544.
        assert_quality(
            Quality::from_stats(ms(200.0), ms(20.0), 0.0),
            80.2,
            4.031537544,
        );
    }

    #[test]
    fn the_two_branches_meet_at_160_ms() {
        // EL = 140 + 2·5 + 10 = 160 takes the second branch: 93.2 − 40/10 = 89.2, the same as
        // the first would give (93.2 − 160/40); MOS = 1 + 3.122 + 7e-6 · 89.2 · 29.2 · 10.8.
        let at = Quality::from_stats(ms(140.0), ms(5.0), 0.0);
        assert_quality(at, 89.2, 4.122 + 0.000_007 * 89.2 * 29.2 * 10.8);
        // Just under (EL = 159.9 ms, first branch) and just over (160.1 ms, second branch).
        let below = Quality::from_stats(ms(139.9), ms(5.0), 0.0);
        let above = Quality::from_stats(ms(140.1), ms(5.0), 0.0);
        assert!((below.r_factor - (93.2 - 159.9 / 40.0)).abs() < 1e-9);
        assert!((above.r_factor - (93.2 - 40.1 / 10.0)).abs() < 1e-9);
    }

    #[test]
    fn each_percent_of_loss_costs_two_and_a_half() {
        // 20 % loss: R = 92.2 − 50 = 42.2;
        // MOS = 1 + 1.477 + 7e-6 · 42.2 · (−17.8) · 57.8 = 2.477 − 0.303919336.
        assert_quality(
            Quality::from_stats(ms(20.0), ms(5.0), 0.2),
            42.2,
            2.173080664,
        );
    }

    #[test]
    fn r_stops_at_zero_and_mos_at_one() {
        // 50 % loss: 92.2 − 125 < 0.
        assert_eq!(Quality::from_stats(ms(20.0), ms(5.0), 0.5), Quality::WORST);
        // Latency alone: EL = 2010 ms → 93.2 − 189 < 0.
        assert_eq!(
            Quality::from_stats(ms(2000.0), Duration::ZERO, 0.0),
            Quality::WORST
        );
        // 36 % loss: R = 92.2 − 90 = 2.2 stays, but the curve gives
        // 1 + 0.077 + 7e-6 · 2.2 · (−57.8) · 97.8 = 0.989946264, below the scale.
        assert_quality(Quality::from_stats(ms(20.0), ms(5.0), 0.36), 2.2, 1.0);
    }

    #[test]
    fn a_perfect_path_tops_out_below_the_scale_end() {
        // EL = 10 → R = 93.2 − 0.25 = 92.95;
        // MOS = 1 + 3.25325 + 7e-6 · 92.95 · 32.95 · 7.05 = 4.25325 + 0.151144368.
        let q = Quality::from_stats(Duration::ZERO, Duration::ZERO, 0.0);
        assert_quality(q, 92.95, 4.25325 + 0.000_007 * 92.95 * 32.95 * 7.05);
        assert!((q.mos - 4.404394368).abs() < 1e-9, "{}", q.mos);
    }

    #[test]
    fn a_loss_that_is_not_a_number_is_total_loss() {
        assert_eq!(
            Quality::from_stats(Duration::ZERO, Duration::ZERO, f64::NAN),
            Quality::WORST
        );
    }

    #[test]
    fn rounds_use_their_mean_jitter_and_loss() {
        // Mean 12 ms, jitter (|14−10| + |12−14|)/2 = 3 ms, loss 1 of 4:
        // EL = 12 + 6 + 10 = 28 → R = 93.2 − 0.7 − 62.5 = 30;
        // MOS = 1 + 1.05 + 7e-6 · 30 · (−30) · 70 = 2.05 − 0.441.
        let round = Round {
            sent: 4,
            rtts: vec![ms(10.0), ms(14.0), ms(12.0)],
        };
        assert_quality(Quality::of(&round).unwrap(), 30.0, 1.609);
    }

    #[test]
    fn a_round_with_no_reply_is_the_worst_and_an_empty_one_is_nothing() {
        let lost = Round {
            sent: 3,
            rtts: vec![],
        };
        assert_eq!(Quality::of(&lost), Some(Quality::WORST));
        assert_eq!(Quality::of(&Round::default()), None);
    }

    #[test]
    fn one_packet_with_its_reply_has_no_jitter() {
        // EL = 30 + 0 + 10 = 40 → R = 92.2, as in the first case.
        let round = Round {
            sent: 1,
            rtts: vec![ms(30.0)],
        };
        assert_quality(Quality::of(&round).unwrap(), 92.2, 4.389098664);
    }
}
