//! Usage roll-ups: what settled jobs and idle runners cost and how long the
//! jobs waited, added up per hour and per day and per (project, pool,
//! repository, sender, market, conclusion), so that a report over any window
//! reads a bounded number of buckets instead of every job.
//!
//! Everything in a bucket adds: counts, seconds, micro-dollars, and
//! histograms of the three job durations over fixed log-scale bounds, so
//! that buckets merge and percentiles of any range come from the merged
//! histogram.

use serde::{Deserialize, Serialize};

use super::cost::{JobUsage, MicroUsd, RunnerCost};
use super::{Job, Runner, Time};

/// The upper bounds, in milliseconds, of the duration histograms' buckets:
/// four per doubling from 64 ms to almost four hours, then one for anything
/// longer. A percentile read from them is the upper bound of the bucket it
/// falls in: at most 20% above the true value, and 64 ms for anything
/// quicker.
#[allow(clippy::indexing_slicing)] // evaluated by the compiler: an index out of range fails the build
pub const HISTOGRAM_BOUNDS_MS: [u64; 73] = {
    let mut bounds = [0u64; 73];
    // 64 ms × 2^(i/4), rounded down to whole milliseconds.
    const QUARTER_OCTAVE: [u64; 4] = [10_000, 11_892, 14_142, 16_818];
    let mut i = 0;
    while i < 72 {
        bounds[i] = 64 * (1 << (i / 4)) * QUARTER_OCTAVE[i % 4] / 10_000;
        i += 1;
    }
    bounds[72] = u64::MAX;
    bounds
};

/// The largest bound a percentile reads: the last bucket's values are
/// longer than it, by how much is not known.
#[allow(clippy::indexing_slicing)] // evaluated by the compiler, as above
const LAST_FINITE_BOUND_MS: u64 = HISTOGRAM_BOUNDS_MS[HISTOGRAM_BOUNDS_MS.len() - 2];

/// Counts of durations per [`HISTOGRAM_BOUNDS_MS`] bucket. Stored as the
/// `[bucket, count]` pairs of its non-empty buckets: most are empty, and a
/// report reads thousands of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram(pub Vec<u64>);

impl Serialize for Histogram {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().enumerate().filter(|(_, n)| **n > 0))
    }
}

impl<'de> Deserialize<'de> for Histogram {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(usize, u64)>::deserialize(deserializer)?;
        let mut histogram = Histogram::default();
        for (bucket, count) in pairs {
            if bucket >= HISTOGRAM_BOUNDS_MS.len() {
                return Err(serde::de::Error::custom(format!(
                    "histogram bucket {bucket} is past the last, {}",
                    HISTOGRAM_BOUNDS_MS.len() - 1
                )));
            }
            histogram.add_at(bucket, count);
        }
        Ok(histogram)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self(vec![0; HISTOGRAM_BOUNDS_MS.len()])
    }
}

impl Histogram {
    /// The bucket a duration falls in.
    pub fn bucket(ms: u64) -> usize {
        HISTOGRAM_BOUNDS_MS.partition_point(|&bound| bound < ms)
    }

    pub fn record(&mut self, ms: u64) {
        self.add_at(Self::bucket(ms), 1);
    }

    pub fn add_at(&mut self, bucket: usize, count: u64) {
        if self.0.len() < HISTOGRAM_BOUNDS_MS.len() {
            self.0.resize(HISTOGRAM_BOUNDS_MS.len(), 0);
        }
        if let Some(slot) = self.0.get_mut(bucket) {
            *slot = slot.saturating_add(count);
        }
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (i, &n) in other.0.iter().enumerate() {
            self.add_at(i, n);
        }
    }

    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `p`th percentile (0–100) in milliseconds: the upper bound of the
    /// bucket holding the value at that rank; `None` when empty. The last
    /// bucket has no upper bound: its values read as the one below's bound.
    pub fn percentile_ms(&self, p: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * total as f64)
            .ceil()
            .max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let bound = HISTOGRAM_BOUNDS_MS.get(i).copied().unwrap_or(u64::MAX);
                return Some(bound.min(LAST_FINITE_BOUND_MS));
            }
        }
        None
    }
}

/// What one bucket holds; every field adds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageFigures {
    /// Settled jobs, and of those GitHub concluded `success` and `failure`.
    pub jobs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub job_seconds: u64,
    pub overhead_seconds: u64,
    pub idle_seconds: u64,
    /// Runner seconds without a price: in the seconds above, in no cost.
    pub unpriced_seconds: u64,
    pub job_micro_usd: MicroUsd,
    pub overhead_micro_usd: MicroUsd,
    pub idle_micro_usd: MicroUsd,
    pub queued_to_launched: Histogram,
    pub launched_to_registered: Histogram,
    pub queued_to_in_progress: Histogram,
}

impl UsageFigures {
    pub fn merge(&mut self, other: &UsageFigures) {
        self.jobs += other.jobs;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.job_seconds += other.job_seconds;
        self.overhead_seconds += other.overhead_seconds;
        self.idle_seconds += other.idle_seconds;
        self.unpriced_seconds += other.unpriced_seconds;
        self.job_micro_usd = self.job_micro_usd.saturating_add(other.job_micro_usd);
        self.overhead_micro_usd = self
            .overhead_micro_usd
            .saturating_add(other.overhead_micro_usd);
        self.idle_micro_usd = self.idle_micro_usd.saturating_add(other.idle_micro_usd);
        self.queued_to_launched.merge(&other.queued_to_launched);
        self.launched_to_registered
            .merge(&other.launched_to_registered);
        self.queued_to_in_progress
            .merge(&other.queued_to_in_progress);
    }

    pub fn total_micro_usd(&self) -> MicroUsd {
        self.job_micro_usd
            .saturating_add(self.overhead_micro_usd)
            .saturating_add(self.idle_micro_usd)
    }

    fn add_cost(&mut self, cost: &RunnerCost) {
        self.job_seconds += cost.job_seconds;
        self.overhead_seconds += cost.overhead_seconds;
        self.idle_seconds += cost.idle_seconds;
        match cost.total_micro_usd {
            Some(_) => {
                self.job_micro_usd += cost.job_micro_usd.unwrap_or(0);
                self.overhead_micro_usd += cost.overhead_micro_usd.unwrap_or(0);
                self.idle_micro_usd += cost.idle_micro_usd.unwrap_or(0);
            }
            None => self.unpriced_seconds += cost.seconds(),
        }
    }
}

/// What a bucket is split by. Absent values are empty strings, so that a
/// key is always whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UsageDims {
    pub project_id: String,
    pub pool_id: String,
    /// `owner/name`, lower-cased; empty for an idle runner.
    pub repo: String,
    /// The GitHub login that triggered the run; empty for an idle runner.
    pub sender: String,
    /// `on-demand`, `spot`, or empty when no runner of pacer's ran it.
    pub market: String,
    /// GitHub's conclusion (`success`, `failure`, `cancelled`, …), or
    /// [`IDLE`] for a runner that never got a job.
    pub conclusion: String,
}

/// The conclusion a bucket of idle runners is filed under.
pub const IDLE: &str = "idle";

/// One addition to the roll-ups, applied once whatever the retries: its
/// `id` names the settled job or the idle runner it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    pub id: String,
    /// When it happened (the job's or the runner's end): which hour and day
    /// it is added to.
    pub at: Time,
    pub dims: UsageDims,
    pub figures: UsageFigures,
}

impl Contribution {
    /// A settled job: its runner's cost and its three durations.
    pub fn of_job(job: &Job, usage: &JobUsage, runner: Option<&Runner>) -> Self {
        let mut figures = UsageFigures {
            jobs: 1,
            succeeded: u64::from(job.conclusion.as_deref() == Some("success")),
            failed: u64::from(job.conclusion.as_deref() == Some("failure")),
            ..UsageFigures::default()
        };
        if let Some(cost) = &usage.cost {
            figures.add_cost(cost);
        }
        let t = &usage.timings;
        for (histogram, value) in [
            (&mut figures.queued_to_launched, t.queued_to_launched_ms),
            (
                &mut figures.launched_to_registered,
                t.launched_to_registered_ms,
            ),
            (
                &mut figures.queued_to_in_progress,
                t.queued_to_in_progress_ms,
            ),
        ] {
            if let Some(ms) = value {
                histogram.record(ms);
            }
        }
        Contribution {
            id: format!("job:{}", job.id),
            at: job.transitions.last().map_or(job.updated_at, |t| t.at),
            dims: UsageDims {
                project_id: job.project_id.clone().unwrap_or_default(),
                pool_id: job.pool_id.clone().unwrap_or_default(),
                repo: job.repo.to_lowercase(),
                sender: job.sender.clone().unwrap_or_default(),
                market: runner.and_then(|r| r.market.clone()).unwrap_or_default(),
                conclusion: job
                    .conclusion
                    .clone()
                    .unwrap_or_else(|| job.state.to_string()),
            },
            figures,
        }
    }

    /// A runner that ended without a job: its whole cost is its pool's.
    pub fn of_idle_runner(runner: &Runner, cost: &RunnerCost) -> Self {
        let mut figures = UsageFigures::default();
        figures.add_cost(cost);
        Contribution {
            id: format!("runner:{}", runner.id),
            at: runner.updated_at,
            dims: UsageDims {
                project_id: runner.project_id.clone(),
                pool_id: runner.pool_id.clone(),
                repo: String::new(),
                sender: String::new(),
                market: runner.market.clone().unwrap_or_default(),
                conclusion: IDLE.into(),
            },
            figures,
        }
    }
}

/// How long a roll-up bucket spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Hour,
    Day,
}

impl Period {
    pub const ALL: [Period; 2] = [Period::Hour, Period::Day];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
        }
    }

    /// The start of the hour or (UTC) day `t` falls in.
    pub fn start_of(self, t: Time) -> Time {
        use chrono::{DurationRound, TimeDelta};
        let span = match self {
            Period::Hour => TimeDelta::hours(1),
            Period::Day => TimeDelta::days(1),
        };
        t.duration_trunc(span).unwrap_or(t)
    }
}

/// One stored bucket: a period's figures for one set of dims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageBucket {
    pub period: Period,
    /// The start of its hour or (UTC) day.
    pub start: Time,
    pub dims: UsageDims,
    pub figures: UsageFigures,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_grow_by_a_quarter_octave_and_end_unbounded() {
        assert_eq!(HISTOGRAM_BOUNDS_MS[0], 64);
        assert_eq!(HISTOGRAM_BOUNDS_MS[4], 128);
        assert_eq!(HISTOGRAM_BOUNDS_MS[68], 64 << 17);
        assert!(HISTOGRAM_BOUNDS_MS[71] > 3 * 3_600_000, "past three hours");
        assert!(HISTOGRAM_BOUNDS_MS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*HISTOGRAM_BOUNDS_MS.last().unwrap(), u64::MAX);
        for pair in HISTOGRAM_BOUNDS_MS[..72].windows(2) {
            let ratio = pair[1] as f64 / pair[0] as f64;
            assert!((1.15..1.22).contains(&ratio), "{pair:?}");
        }
    }

    #[test]
    fn percentiles_come_from_the_merged_buckets() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for ms in [5, 1_000, 2_000] {
            a.record(ms);
        }
        for ms in [40_000, 60_000] {
            b.record(ms);
        }
        a.merge(&b);
        assert_eq!(a.count(), 5);
        assert_eq!(a.percentile_ms(0.0), Some(64), "the smallest's bucket");
        assert_eq!(a.percentile_ms(50.0), Some(2_048));
        let p95 = a.percentile_ms(95.0).unwrap();
        assert!((60_000..=60_000 * 6 / 5).contains(&p95), "{p95}");
        assert_eq!(Histogram::default().percentile_ms(50.0), None);
        let mut huge = Histogram::default();
        huge.record(u64::MAX);
        assert_eq!(huge.percentile_ms(99.0), Some(HISTOGRAM_BOUNDS_MS[71]));
    }

    #[test]
    fn a_histogram_is_stored_as_its_non_empty_buckets() {
        let mut h = Histogram::default();
        h.record(50);
        h.record(50);
        h.record(90_000);
        let text = serde_json::to_string(&h).unwrap();
        assert_eq!(text, format!("[[0,2],[{},1]]", Histogram::bucket(90_000)));
        assert_eq!(serde_json::from_str::<Histogram>(&text).unwrap(), h);
        assert!(
            serde_json::from_str::<Histogram>("[[73,1]]").is_err(),
            "past the last bucket"
        );
    }

    proptest::proptest! {
        #[test]
        fn a_percentile_is_at_least_the_value_and_within_a_bucket_of_it(values in proptest::collection::vec(1u64..4_000_000, 1..200), p in 1.0f64..100.0) {
            let mut h = Histogram::default();
            for &v in &values {
                h.record(v);
            }
            let mut sorted = values.clone();
            sorted.sort_unstable();
            let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            let exact = sorted[rank.clamp(1, sorted.len()) - 1];
            let read = h.percentile_ms(p).unwrap();
            proptest::prop_assert!(read >= exact);
            proptest::prop_assert!(read as f64 <= (exact.max(64) as f64) * 1.2 + 1.0, "{} for {}", read, exact);
        }
    }
}
