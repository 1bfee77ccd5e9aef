//! [`UsageStore`]: contributions added once to the buckets of their hour and
//! day, read back by window.

use crate::domain::budget::BudgetStanding;
use crate::domain::usage::{Contribution, Histogram, Period, UsageDims, UsageFigures};

use super::*;

fn dims(pool: &str, sender: &str) -> UsageDims {
    UsageDims {
        project_id: "prj_1".into(),
        pool_id: pool.into(),
        repo: "acme/app".into(),
        sender: sender.into(),
        market: "spot".into(),
        conclusion: "success".into(),
    }
}

/// One settled job's figures: 10 minutes of job, 2 of overhead, at a known
/// price, with its three durations.
pub fn contribution(id: &str, at: Time, dims: UsageDims) -> Contribution {
    let mut figures = UsageFigures {
        jobs: 1,
        succeeded: 1,
        job_seconds: 600,
        overhead_seconds: 120,
        job_micro_usd: 13_600,
        overhead_micro_usd: 2_720,
        ..UsageFigures::default()
    };
    figures.queued_to_launched.record(1_500);
    figures.launched_to_registered.record(40_000);
    figures.queued_to_in_progress.record(45_000);
    Contribution {
        id: id.into(),
        at,
        dims,
        figures,
    }
}

fn twice(figures: &UsageFigures) -> UsageFigures {
    let mut sum = figures.clone();
    sum.merge(figures);
    sum
}

pub async fn a_contribution_counts_once_even_added_by_ten_at_once(store: Arc<dyn Store>) {
    let c = contribution("job:job_1", at(0), dims("pool_1", "octocat"));
    let tries: Vec<_> = (0..10)
        .map(|_| {
            let (store, c) = (store.clone(), c.clone());
            tokio::spawn(async move { store.add_usage(&c).await.unwrap() })
        })
        .collect();
    let mut added = 0;
    for t in tries {
        added += usize::from(t.await.unwrap());
    }
    assert_eq!(added, 1, "exactly one add of a contribution counts");
    assert!(
        !store.add_usage(&c).await.unwrap(),
        "a redelivery counts not"
    );
    for period in Period::ALL {
        let buckets = store
            .usage_buckets(period, period.start_of(at(0)), at(86_400))
            .await
            .unwrap();
        assert_eq!(buckets.len(), 1, "{period:?}");
        assert_eq!(buckets[0].figures, c.figures, "{period:?}");
        assert_eq!(buckets[0].dims, c.dims);
        assert_eq!(buckets[0].start, period.start_of(at(0)));
    }
}

pub async fn usage_adds_up_per_hour_and_day_and_reads_by_window(store: Arc<dyn Store>) {
    // t0 is 03:04:05: two jobs in that hour, one two hours later, one the
    // next day; another pool's and another sender's are buckets of their own.
    let day = Period::Day.start_of(at(0));
    let a = dims("pool_1", "octocat");
    let b = dims("pool_2", "hubot");
    let long_sender = "x".repeat(5_000); // from outside: any length is kept
    let c = dims("pool_1", &long_sender);
    let adds = [
        contribution("job:1", at(0), a.clone()),
        contribution("job:2", at(1_000), a.clone()),
        contribution("job:3", at(2 * 3_600), a.clone()),
        contribution("job:4", at(86_400), a.clone()),
        contribution("job:5", at(10), b.clone()),
        contribution("job:6", at(20), c.clone()),
    ];
    for add in &adds {
        assert!(store.add_usage(add).await.unwrap());
    }
    let one = adds[0].figures.clone();

    let hours = store
        .usage_buckets(Period::Hour, day, day + chrono::Duration::days(1))
        .await
        .unwrap();
    let hour_of = |t: Time, d: &UsageDims| {
        hours
            .iter()
            .find(|h| h.start == Period::Hour.start_of(t) && &h.dims == d)
            .map(|h| h.figures.clone())
    };
    assert_eq!(hours.len(), 4, "{hours:?}");
    assert_eq!(hour_of(at(0), &a), Some(twice(&one)));
    assert_eq!(hour_of(at(2 * 3_600), &a), Some(one.clone()));
    assert_eq!(hour_of(at(0), &b), Some(one.clone()));
    assert_eq!(hour_of(at(0), &c), Some(one.clone()));
    assert!(
        hours.windows(2).all(|w| w[0].start <= w[1].start),
        "in start order"
    );

    let days = store
        .usage_buckets(Period::Day, day, day + chrono::Duration::days(2))
        .await
        .unwrap();
    assert_eq!(days.len(), 4, "{days:?}");
    let first_day_a = days.iter().find(|d| d.start == day && d.dims == a).unwrap();
    let mut three = twice(&one);
    three.merge(&one);
    assert_eq!(first_day_a.figures, three);
    assert_eq!(first_day_a.figures.queued_to_in_progress.count(), 3);

    // The window is half-open on the buckets' starts.
    let later = store
        .usage_buckets(
            Period::Hour,
            Period::Hour.start_of(at(2 * 3_600)),
            Period::Hour.start_of(at(86_400)),
        )
        .await
        .unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].figures, one);
    let none = store
        .usage_buckets(Period::Day, day - chrono::Duration::days(30), day)
        .await
        .unwrap();
    assert!(none.is_empty());

    // Windows at the ends of time read nothing, and never panic.
    let (first, last) = (
        chrono::DateTime::<chrono::Utc>::MIN_UTC,
        chrono::DateTime::<chrono::Utc>::MAX_UTC,
    );
    for period in Period::ALL {
        let hours = chrono::Duration::hours(3);
        assert!(
            store
                .usage_buckets(period, last - hours, last)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .usage_buckets(period, first, first + hours)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

pub async fn a_histogram_keeps_every_bucket_through_the_store(store: Arc<dyn Store>) {
    let mut c = contribution("job:h", at(0), dims("pool_1", "octocat"));
    c.figures.queued_to_in_progress = Histogram::default();
    for ms in [0, 250, 251, 90_000, 3_600_000, u64::MAX] {
        c.figures.queued_to_in_progress.record(ms);
    }
    assert!(store.add_usage(&c).await.unwrap());
    let read = store
        .usage_buckets(Period::Hour, Period::Hour.start_of(at(0)), at(3_600))
        .await
        .unwrap();
    assert_eq!(
        read[0].figures.queued_to_in_progress,
        c.figures.queued_to_in_progress
    );
}

pub async fn a_budget_line_is_marked_once_a_month_and_spend_is_kept_beside_it(
    store: Arc<dyn Store>,
) {
    use crate::domain::budget::BudgetLine;
    assert!(store.budget_standings("2026-03").await.unwrap().is_empty());
    store
        .put_budget_spend("2026-03", "ci", 1_500_000, at(10))
        .await
        .unwrap();
    let tries: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .mark_budget_line("2026-03", "ci", BudgetLine::Warning, at(20))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut marked = 0;
    for t in tries {
        marked += usize::from(t.await.unwrap());
    }
    assert_eq!(marked, 1, "a line is crossed once, however many ask");
    assert!(
        !store
            .mark_budget_line("2026-03", "ci", BudgetLine::Warning, at(30))
            .await
            .unwrap()
    );
    // A later count keeps the mark; a mark keeps the count.
    store
        .put_budget_spend("2026-03", "ci", 2_000_000, at(40))
        .await
        .unwrap();
    assert!(
        store
            .mark_budget_line("2026-03", "ci", BudgetLine::Exceeded, at(50))
            .await
            .unwrap()
    );
    // A line marked before any count, another budget, another month.
    assert!(
        store
            .mark_budget_line("2026-03", "arm", BudgetLine::Exceeded, at(60))
            .await
            .unwrap()
    );
    assert!(
        store
            .mark_budget_line("2026-04", "ci", BudgetLine::Warning, at(70))
            .await
            .unwrap(),
        "each month starts afresh"
    );
    let march = store.budget_standings("2026-03").await.unwrap();
    assert_eq!(
        march,
        vec![
            BudgetStanding {
                month: "2026-03".into(),
                budget: "arm".into(),
                spent_micro_usd: 0,
                counted_at: None,
                warned_at: None,
                exceeded_at: Some(at(60)),
            },
            BudgetStanding {
                month: "2026-03".into(),
                budget: "ci".into(),
                spent_micro_usd: 2_000_000,
                counted_at: Some(at(40)),
                warned_at: Some(at(20)),
                exceeded_at: Some(at(50)),
            },
        ]
    );
    assert_eq!(store.budget_standings("2026-04").await.unwrap().len(), 1);
}
