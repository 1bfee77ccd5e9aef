//! What a runner cost and how long a job waited: arithmetic on recorded
//! times and hourly prices, in whole micro-dollars (one millionth of a US
//! dollar) so that sums are exact and never drift the way floats do.
//!
//! A runner's life, from launch to its end, splits into **job** time (the
//! job it ran, from `in_progress` to `completed`), **overhead** (the rest of
//! a life that ran a job: boot, registration, shutdown) and **idle** (a whole
//! life that never got a job). Its price per hour is the instance's plus its
//! root volume's. See docs/cost.md.

use serde::{Deserialize, Serialize};

use super::{JobState, Time, Transition};

/// Whole micro-dollars: 1 USD is 1,000,000.
pub type MicroUsd = u64;

pub const MICRO_USD_PER_USD: u64 = 1_000_000;

/// Hours in a month, as AWS bills EBS: a GB-month price over 730 hours.
pub const HOURS_PER_MONTH: u64 = 730;

/// Where an hourly price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum PriceSource {
    /// The AWS Pricing API's on-demand price.
    PricingApi,
    /// EC2's spot price history for the instance's availability zone.
    SpotHistory,
    /// `pricing.overrides` in the configuration.
    Override,
    /// No price was known.
    Unknown,
}

impl PriceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PriceSource::PricingApi => "pricing-api",
            PriceSource::SpotHistory => "spot-history",
            PriceSource::Override => "override",
            PriceSource::Unknown => "unknown",
        }
    }
}

/// An instance's hourly price, quoted when it was launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Price {
    pub micro_usd_per_hour: MicroUsd,
    pub source: PriceSource,
}

/// USD (as written in configuration) to whole micro-dollars, rounded to the
/// nearest; `None` for a value that is not a finite, non-negative amount
/// below a million dollars.
pub fn micro_usd(usd: f64) -> Option<MicroUsd> {
    (usd.is_finite() && (0.0..1_000_000.0).contains(&usd))
        .then(|| (usd * MICRO_USD_PER_USD as f64).round() as MicroUsd)
}

/// What a root volume of `gb` costs per hour at `per_gb_month`.
pub fn volume_per_hour(gb: u32, per_gb_month: MicroUsd) -> MicroUsd {
    let exact = u128::from(gb) * u128::from(per_gb_month);
    rounded_div(exact, u128::from(HOURS_PER_MONTH))
}

/// `amount * seconds / 3600`, rounded to the nearest micro-dollar.
fn for_seconds(per_hour: MicroUsd, seconds: u64) -> MicroUsd {
    rounded_div(u128::from(per_hour) * u128::from(seconds), 3600)
}

fn rounded_div(numerator: u128, denominator: u128) -> MicroUsd {
    MicroUsd::try_from((numerator + denominator / 2) / denominator).unwrap_or(MicroUsd::MAX)
}

/// Whole seconds from `from` to `to`; zero when `to` is not after `from`.
fn seconds_between(from: Time, to: Time) -> u64 {
    u64::try_from((to - from).num_seconds()).unwrap_or(0)
}

/// The times a runner's cost is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub launched: Time,
    pub ended: Time,
    /// When the job it ran started (`in_progress`) and, if GitHub said so
    /// before the runner ended, when it ended; `None` for a runner that
    /// never got a job.
    pub job: Option<(Time, Option<Time>)>,
}

/// A runner's cost, split by what its time went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct RunnerCost {
    pub source: PriceSource,
    /// Instance and root volume together; `None` when the instance's price
    /// is unknown.
    pub micro_usd_per_hour: Option<MicroUsd>,
    pub job_seconds: u64,
    pub overhead_seconds: u64,
    pub idle_seconds: u64,
    /// Each `None` when the price is unknown — never a made-up zero.
    pub job_micro_usd: Option<MicroUsd>,
    pub overhead_micro_usd: Option<MicroUsd>,
    pub idle_micro_usd: Option<MicroUsd>,
    /// The sum of the three, exactly.
    pub total_micro_usd: Option<MicroUsd>,
}

impl RunnerCost {
    /// The cost of `life` at the instance's `price` (if known) plus its root
    /// volume's `volume_per_hour`.
    pub fn of(life: Lifetime, price: Option<Price>, volume_per_hour: MicroUsd) -> Self {
        // Times written by different machines may disagree by a little: an
        // end before the launch is a life of nothing (and `clamp` would
        // panic on it).
        let ended = life.ended.max(life.launched);
        let total = seconds_between(life.launched, ended);
        let (job, overhead, idle) = match life.job {
            Some((started, finished)) => {
                let start = started.clamp(life.launched, ended);
                let end = finished.unwrap_or(ended).clamp(start, ended);
                let job = seconds_between(start, end);
                (job, total - job, 0)
            }
            None => (0, 0, total),
        };
        let per_hour = price.map(|p| p.micro_usd_per_hour.saturating_add(volume_per_hour));
        let part = |seconds| per_hour.map(|rate| for_seconds(rate, seconds));
        let (job_cost, overhead_cost, idle_cost) = (part(job), part(overhead), part(idle));
        RunnerCost {
            source: price.map_or(PriceSource::Unknown, |p| p.source),
            micro_usd_per_hour: per_hour,
            job_seconds: job,
            overhead_seconds: overhead,
            idle_seconds: idle,
            job_micro_usd: job_cost,
            overhead_micro_usd: overhead_cost,
            idle_micro_usd: idle_cost,
            total_micro_usd: match (job_cost, overhead_cost, idle_cost) {
                (Some(a), Some(b), Some(c)) => Some(a.saturating_add(b).saturating_add(c)),
                _ => None,
            },
        }
    }

    pub fn seconds(&self) -> u64 {
        self.job_seconds + self.overhead_seconds + self.idle_seconds
    }
}

/// How long a job waited, in milliseconds; each `None` until it happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct JobTimings {
    /// From queued to its runner's launch: pacer's own latency.
    pub queued_to_launched_ms: Option<u64>,
    /// From the launch of the runner that ran it to that runner's
    /// registration with pacer: boot.
    pub launched_to_registered_ms: Option<u64>,
    /// From queued to `in_progress`: what a developer waits.
    pub queued_to_in_progress_ms: Option<u64>,
}

fn millis_between(from: Time, to: Time) -> Option<u64> {
    u64::try_from((to - from).num_milliseconds()).ok()
}

impl JobTimings {
    /// From a job's transitions and, for the runner that ran it, that
    /// runner's launch and registration. A job is queued from the first
    /// state it reached after its last `waiting` (an environment approval
    /// or concurrency group is not a wait pacer or its runners cause).
    pub fn of(transitions: &[Transition], runner: Option<(Time, Option<Time>)>) -> Self {
        let released = transitions
            .iter()
            .rposition(|t| t.state == JobState::Waiting)
            .map_or(0, |i| i + 1);
        let after = transitions.get(released..).unwrap_or_default();
        let queued = after.first().map(|t| t.at);
        let first = |state| after.iter().find(|t| t.state == state).map(|t| t.at);
        let since_queued = |state| {
            queued
                .zip(first(state))
                .and_then(|(q, at)| millis_between(q, at))
        };
        JobTimings {
            queued_to_launched_ms: since_queued(JobState::Starting),
            launched_to_registered_ms: runner
                .and_then(|(launched, registered)| millis_between(launched, registered?)),
            queued_to_in_progress_ms: since_queued(JobState::Running),
        }
    }
}

/// What a finished job cost and how long it waited: written once the job
/// is final and the runner that ran it (if one of pacer's did) has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct JobUsage {
    /// The runner that ran it, when one of pacer's did.
    pub runner_id: Option<String>,
    pub timings: JobTimings,
    /// That runner's cost; `None` when no runner of pacer's ran the job.
    pub cost: Option<RunnerCost>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TransitionCause;

    fn at(s: i64) -> Time {
        chrono::DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    const M7G_LARGE: Price = Price {
        micro_usd_per_hour: 81_600,
        source: PriceSource::PricingApi,
    };

    #[test]
    fn a_runner_that_ran_a_job_splits_into_job_and_overhead() {
        // Launched at 0, job from 90 s to 690 s, ended at 720 s.
        let life = Lifetime {
            launched: at(0),
            ended: at(720),
            job: Some((at(90), Some(at(690)))),
        };
        let cost = RunnerCost::of(life, Some(M7G_LARGE), 0);
        assert_eq!(
            (cost.job_seconds, cost.overhead_seconds, cost.idle_seconds),
            (600, 120, 0)
        );
        // 600 s at $0.0816/h is $0.0136; 120 s is $0.00272.
        assert_eq!(cost.job_micro_usd, Some(13_600));
        assert_eq!(cost.overhead_micro_usd, Some(2_720));
        assert_eq!(cost.idle_micro_usd, Some(0));
        assert_eq!(cost.total_micro_usd, Some(16_320));
        assert_eq!(cost.source, PriceSource::PricingApi);
    }

    #[test]
    fn an_end_written_before_the_launch_by_a_clock_behind_is_a_life_of_nothing() {
        // The orchestrator's clock stamped the launch; another machine's,
        // a second behind, stamped the end. (This panicked in `clamp`.)
        for job in [None, Some((at(0), None)), Some((at(-5), Some(at(3))))] {
            let life = Lifetime {
                launched: at(0),
                ended: at(-1),
                job,
            };
            let cost = RunnerCost::of(life, Some(M7G_LARGE), 0);
            assert_eq!(cost.seconds(), 0, "{job:?}");
            assert_eq!(cost.total_micro_usd, Some(0));
        }
    }

    #[test]
    fn a_runner_that_never_got_a_job_is_idle_throughout() {
        let life = Lifetime {
            launched: at(0),
            ended: at(1800),
            job: None,
        };
        let spot = Price {
            micro_usd_per_hour: 31_000,
            source: PriceSource::SpotHistory,
        };
        let cost = RunnerCost::of(life, Some(spot), 0);
        assert_eq!(
            (cost.job_seconds, cost.overhead_seconds, cost.idle_seconds),
            (0, 0, 1800)
        );
        assert_eq!(cost.idle_micro_usd, Some(15_500));
        assert_eq!(cost.total_micro_usd, Some(15_500));
        assert_eq!(cost.source, PriceSource::SpotHistory);
    }

    #[test]
    fn the_root_volume_is_added_to_the_instance_price() {
        // 30 GB of gp3 at $0.08 per GB-month is $2.40 a month, $0.003288/h.
        let volume = volume_per_hour(30, 80_000);
        assert_eq!(volume, 3_288);
        let life = Lifetime {
            launched: at(0),
            ended: at(3600),
            job: Some((at(0), None)),
        };
        let cost = RunnerCost::of(life, Some(M7G_LARGE), volume);
        assert_eq!(cost.micro_usd_per_hour, Some(84_888));
        assert_eq!(
            cost.job_micro_usd,
            Some(84_888),
            "a job to the runner's end"
        );
        assert_eq!(cost.overhead_seconds, 0);
    }

    #[test]
    fn an_unknown_price_records_minutes_and_no_cost_never_zero() {
        let life = Lifetime {
            launched: at(0),
            ended: at(600),
            job: Some((at(60), Some(at(540)))),
        };
        let cost = RunnerCost::of(life, None, 3_288);
        assert_eq!(cost.source, PriceSource::Unknown);
        assert_eq!((cost.job_seconds, cost.overhead_seconds), (480, 120));
        assert_eq!(cost.micro_usd_per_hour, None);
        assert_eq!(
            (
                cost.job_micro_usd,
                cost.overhead_micro_usd,
                cost.idle_micro_usd,
                cost.total_micro_usd
            ),
            (None, None, None, None)
        );
    }

    #[test]
    fn job_times_outside_the_runners_life_are_cut_to_it() {
        // A completion that GitHub dated after the instance was gone, and a
        // start recorded before the launch (clock skew between writers).
        let life = Lifetime {
            launched: at(100),
            ended: at(400),
            job: Some((at(50), Some(at(900)))),
        };
        let cost = RunnerCost::of(life, Some(M7G_LARGE), 0);
        assert_eq!((cost.job_seconds, cost.overhead_seconds), (300, 0));
        let backwards = Lifetime {
            launched: at(100),
            ended: at(50),
            job: None,
        };
        assert_eq!(RunnerCost::of(backwards, Some(M7G_LARGE), 0).seconds(), 0);
    }

    #[test]
    fn usd_from_configuration_becomes_whole_micro_dollars() {
        assert_eq!(micro_usd(0.0816), Some(81_600));
        assert_eq!(micro_usd(0.08), Some(80_000));
        assert_eq!(micro_usd(0.0000004), Some(0));
        assert_eq!(micro_usd(12.5), Some(12_500_000));
        for refused in [-0.01, f64::NAN, f64::INFINITY, 1e6, 1e300] {
            assert_eq!(micro_usd(refused), None, "{refused}");
        }
    }

    fn step(state: JobState, s: i64) -> Transition {
        Transition {
            state,
            at: at(s),
            cause: TransitionCause::Webhook,
            note: None,
        }
    }

    #[test]
    fn timings_follow_the_transitions_and_the_runner() {
        use JobState::*;
        let steps = [
            step(Queued, 0),
            step(Claimed, 1),
            step(Starting, 2),
            // Given back, launched again: the first launch counts.
            step(Queued, 40),
            step(Claimed, 41),
            step(Starting, 42),
            step(Running, 95),
            step(Completed, 700),
        ];
        let t = JobTimings::of(&steps, Some((at(42), Some(at(80)))));
        assert_eq!(t.queued_to_launched_ms, Some(2_000));
        assert_eq!(t.launched_to_registered_ms, Some(38_000));
        assert_eq!(t.queued_to_in_progress_ms, Some(95_000));
    }

    #[test]
    fn time_waiting_for_an_approval_is_not_queue_time() {
        use JobState::*;
        let steps = [
            step(Waiting, 0),
            step(Queued, 3600),
            step(Claimed, 3601),
            step(Starting, 3602),
            step(Running, 3650),
        ];
        let t = JobTimings::of(&steps, None);
        assert_eq!(t.queued_to_launched_ms, Some(2_000));
        assert_eq!(t.queued_to_in_progress_ms, Some(50_000));
        assert_eq!(t.launched_to_registered_ms, None);
        // Cancelled while still waiting: nothing was waited for.
        let never = JobTimings::of(&[step(Waiting, 0), step(Cancelled, 60)], None);
        assert_eq!(never.queued_to_in_progress_ms, None);
        assert_eq!(JobTimings::of(&[], None), JobTimings::default());
    }

    proptest::proptest! {
        #[test]
        fn the_parts_always_add_up_and_never_exceed_the_life(
            launched in 0i64..100_000,
            lived in -1_000i64..1_000_000,
            start in -1_000i64..1_000_000,
            length in proptest::option::of(-1_000i64..1_000_000),
            ran in proptest::bool::ANY,
            price in proptest::option::of(0u64..50_000_000),
            volume in 0u64..1_000_000,
        ) {
            let life = Lifetime {
                launched: at(launched),
                ended: at(launched + lived),
                job: ran.then(|| (at(launched + start), length.map(|l| at(launched + start + l)))),
            };
            let price = price.map(|p| Price { micro_usd_per_hour: p, source: PriceSource::Override });
            let cost = RunnerCost::of(life, price, volume);
            proptest::prop_assert_eq!(cost.seconds(), u64::try_from(lived.max(0)).unwrap());
            if let (Some(a), Some(b), Some(c), Some(t)) = (cost.job_micro_usd, cost.overhead_micro_usd, cost.idle_micro_usd, cost.total_micro_usd) {
                proptest::prop_assert_eq!(a + b + c, t);
            } else {
                proptest::prop_assert!(price.is_none());
                proptest::prop_assert_eq!(cost.total_micro_usd, None);
            }
        }
    }
}
