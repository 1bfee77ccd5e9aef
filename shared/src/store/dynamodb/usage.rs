//! Usage roll-ups. A bucket is one item under `USAGE#<period>#<start>`, its
//! sort key a digest of its dims (which are attributes of their own): every
//! figure is a number attribute that a contribution `ADD`s to, histograms one
//! attribute per non-empty bucket. A contribution's mark, `USAGEMARK#<id>`,
//! is written in the same transaction, so a second add of it changes nothing.
//! Reading a window is one strongly consistent query per period start.

use futures::StreamExt as _;
use sha2::{Digest, Sha256};

use crate::domain::budget::{BudgetLine, BudgetStanding, month_bounds};
use crate::domain::cost::MicroUsd;
use crate::domain::usage::{Contribution, Histogram, Period, UsageBucket, UsageDims, UsageFigures};

use super::*;

/// How long a contribution's mark is kept: past any window a report reads.
const MARK_RETENTION_DAYS: i64 = 400;

/// The attributes of the counters, in [`UsageFigures`] order.
const COUNTERS: [&str; 10] = [
    "jobs",
    "succeeded",
    "failed",
    "job_seconds",
    "overhead_seconds",
    "idle_seconds",
    "unpriced_seconds",
    "job_micro_usd",
    "overhead_micro_usd",
    "idle_micro_usd",
];

/// The prefixes of the histograms' attributes (`<prefix><bucket>`).
const HISTOGRAMS: [&str; 3] = ["q2l_", "l2r_", "q2p_"];

const DIMS: [&str; 6] = [
    "project_id",
    "pool_id",
    "repo",
    "sender",
    "market",
    "conclusion",
];

fn counters(f: &UsageFigures) -> [u64; 10] {
    [
        f.jobs,
        f.succeeded,
        f.failed,
        f.job_seconds,
        f.overhead_seconds,
        f.idle_seconds,
        f.unpriced_seconds,
        f.job_micro_usd,
        f.overhead_micro_usd,
        f.idle_micro_usd,
    ]
}

fn histograms(f: &UsageFigures) -> [&Histogram; 3] {
    [
        &f.queued_to_launched,
        &f.launched_to_registered,
        &f.queued_to_in_progress,
    ]
}

fn dim_values(d: &UsageDims) -> [&str; 6] {
    [
        &d.project_id,
        &d.pool_id,
        &d.repo,
        &d.sender,
        &d.market,
        &d.conclusion,
    ]
}

fn bucket_pk(period: Period, start: Time) -> String {
    format!("USAGE#{}#{}", period.as_str(), time_key(&start))
}

/// A fixed-size key for any dims, however long the values from outside.
fn dims_key(d: &UsageDims) -> String {
    let mut digest = Sha256::new();
    for value in dim_values(d) {
        digest.update(value.as_bytes());
        digest.update([0]);
    }
    let digest = digest.finalize();
    hex::encode(digest.get(..16).unwrap_or(&digest))
}

fn number(item: &Item, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn decode_bucket(period: Period, start: Time, item: &Item) -> UsageBucket {
    let text = |name: &str| string_attr(item, name).unwrap_or_default().to_string();
    let mut figures = UsageFigures::default();
    let [
        jobs,
        succeeded,
        failed,
        job_s,
        overhead_s,
        idle_s,
        unpriced_s,
        job_c,
        overhead_c,
        idle_c,
    ] = COUNTERS.map(|name| number(item, name));
    figures.jobs = jobs;
    figures.succeeded = succeeded;
    figures.failed = failed;
    figures.job_seconds = job_s;
    figures.overhead_seconds = overhead_s;
    figures.idle_seconds = idle_s;
    figures.unpriced_seconds = unpriced_s;
    figures.job_micro_usd = job_c;
    figures.overhead_micro_usd = overhead_c;
    figures.idle_micro_usd = idle_c;
    for (prefix, histogram) in HISTOGRAMS.iter().zip([
        &mut figures.queued_to_launched,
        &mut figures.launched_to_registered,
        &mut figures.queued_to_in_progress,
    ]) {
        for i in 0..crate::domain::usage::HISTOGRAM_BOUNDS_MS.len() {
            histogram.add_at(i, number(item, &format!("{prefix}{i}")));
        }
    }
    UsageBucket {
        period,
        start,
        dims: UsageDims {
            project_id: text("project_id"),
            pool_id: text("pool_id"),
            repo: text("repo"),
            sender: text("sender"),
            market: text("market"),
            conclusion: text("conclusion"),
        },
        figures,
    }
}

#[async_trait]
impl UsageStore for DynamoStore {
    #[instrument(level = "debug", skip_all, fields(table = %self.table, id = %contribution.id))]
    async fn add_usage(&self, contribution: &Contribution) -> StoreResult<bool> {
        let c = contribution;
        let mut mark = key(format!("USAGEMARK#{}", c.id), "MARK");
        mark.insert(TYPE.into(), s("usage_mark"));
        let kept =
            c.at.checked_add_signed(chrono::Duration::days(MARK_RETENTION_DAYS))
                .unwrap_or(c.at);
        mark.insert(TTL_ATTRIBUTE.into(), n(kept.timestamp()));
        let mut writes = vec![self.tx_put(mark, Cond::absent())?];
        for period in Period::ALL {
            let start = period.start_of(c.at);
            let bucket = key(bucket_pk(period, start), &dims_key(&c.dims));
            let always = Cond::new(|e| {
                format!(
                    "attribute_not_exists({0}) OR attribute_exists({0})",
                    e.name(PK)
                )
            });
            writes.push(self.tx_update(bucket, always, |e| {
                let mut sets = vec![format!("{} = {}", e.name(TYPE), e.value(s("usage_bucket")))];
                for (name, value) in DIMS.iter().zip(dim_values(&c.dims)) {
                    sets.push(format!("{} = {}", e.name(name), e.value(s(value))));
                }
                let mut adds = Vec::new();
                for (name, value) in COUNTERS.iter().zip(counters(&c.figures)) {
                    if value > 0 {
                        adds.push(format!("{} {}", e.name(name), e.value(n(value))));
                    }
                }
                for (prefix, histogram) in HISTOGRAMS.iter().zip(histograms(&c.figures)) {
                    for (i, &count) in histogram.0.iter().enumerate() {
                        if count > 0 {
                            let name = format!("{prefix}{i}");
                            adds.push(format!("{} {}", e.name(&name), e.value(n(count))));
                        }
                    }
                }
                let mut update = format!("SET {}", sets.join(", "));
                if !adds.is_empty() {
                    update.push_str(&format!(" ADD {}", adds.join(", ")));
                }
                update
            })?);
        }
        match self.transact(writes, "add_usage").await? {
            None => Ok(true),
            Some(c) if c.failed(0) => Ok(false),
            Some(_) => Err(StoreError::Backend(anyhow!(
                "adding usage was refused by a condition that always holds"
            ))),
        }
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, period = period.as_str()))]
    async fn usage_buckets(
        &self,
        period: Period,
        from: Time,
        to: Time,
    ) -> StoreResult<Vec<UsageBucket>> {
        let step = match period {
            Period::Hour => chrono::Duration::hours(1),
            Period::Day => chrono::Duration::days(1),
        };
        let mut starts = Vec::new();
        let mut start = Some(period.start_of(from));
        while let Some(at) = start.filter(|at| *at < to) {
            if at >= from {
                starts.push(at);
            }
            // At the end of time there is no next period: stop, never panic.
            start = at.checked_add_signed(step);
        }
        // One query per period, a few at a time, in start order.
        let pages: Vec<StoreResult<Vec<UsageBucket>>> = futures::stream::iter(starts)
            .map(|start| self.buckets_starting(period, start))
            .buffered(PARALLEL_QUERIES)
            .collect()
            .await;
        let mut buckets = Vec::new();
        for page in pages {
            buckets.extend(page?);
        }
        Ok(buckets)
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, month, budget))]
    async fn put_budget_spend(
        &self,
        month: &str,
        budget: &str,
        spent: MicroUsd,
        at: Time,
    ) -> StoreResult<()> {
        let mut e = Expr::default();
        let update = format!(
            "SET {} = {}, {} = {}, {} = {}, {} = {}",
            e.name("spent_micro_usd"),
            e.value(n(spent)),
            e.name("counted_at"),
            e.value(s(time_key(&at))),
            e.name(TYPE),
            e.value(s("budget_standing")),
            e.name(TTL_ATTRIBUTE),
            e.value(n(standing_expiry(at))),
        );
        let key = key(standing_pk(month), budget);
        self.update_if(key, e, update, None, "put_budget_spend")
            .await
            .map(|_| ())
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, month, budget))]
    async fn mark_budget_line(
        &self,
        month: &str,
        budget: &str,
        line: BudgetLine,
        at: Time,
    ) -> StoreResult<bool> {
        let attribute = line_attribute(line);
        let mut e = Expr::default();
        let update = format!(
            "SET {} = {}, {} = {}, {} = {}",
            e.name(attribute),
            e.value(s(time_key(&at))),
            e.name(TYPE),
            e.value(s("budget_standing")),
            e.name(TTL_ATTRIBUTE),
            e.value(n(standing_expiry(at))),
        );
        let cond = format!("attribute_not_exists({})", e.name(attribute));
        let key = key(standing_pk(month), budget);
        self.update_if(key, e, update, Some(cond), "mark_budget_line")
            .await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, month))]
    async fn budget_standings(&self, month: &str) -> StoreResult<Vec<BudgetStanding>> {
        let items = self
            .whole_partition(standing_pk(month), "budget_standings")
            .await?;
        Ok(items
            .iter()
            .map(|item| {
                let time = |name: &str| string_attr(item, name).and_then(|t| t.parse().ok());
                BudgetStanding {
                    month: month.to_string(),
                    budget: string_attr(item, SK).unwrap_or_default().to_string(),
                    spent_micro_usd: number(item, "spent_micro_usd"),
                    counted_at: time("counted_at"),
                    warned_at: time(line_attribute(BudgetLine::Warning)),
                    exceeded_at: time(line_attribute(BudgetLine::Exceeded)),
                }
            })
            .collect())
    }
}

/// A month's budget standings: one partition, a budget's name its sort key.
fn standing_pk(month: &str) -> String {
    format!("BUDGET#{month}")
}

fn line_attribute(line: BudgetLine) -> &'static str {
    match line {
        BudgetLine::Warning => "warned_at",
        BudgetLine::Exceeded => "exceeded_at",
    }
}

/// When a standing may go: as long after its month as a contribution's mark.
fn standing_expiry(at: Time) -> i64 {
    let end = month_bounds(at).map_or(at, |(_, next)| next);
    end.checked_add_signed(chrono::Duration::days(MARK_RETENTION_DAYS))
        .unwrap_or(end)
        .timestamp()
}

/// Queries in flight at once when a window spans many periods.
const PARALLEL_QUERIES: usize = 8;

impl DynamoStore {
    /// Every bucket of the period starting at `start`: one partition.
    async fn buckets_starting(&self, period: Period, start: Time) -> StoreResult<Vec<UsageBucket>> {
        let items = self
            .whole_partition(bucket_pk(period, start), "usage_buckets")
            .await?;
        Ok(items
            .iter()
            .map(|item| decode_bucket(period, start, item))
            .collect())
    }

    /// Every item of the partition `pk`, read consistently, page by page.
    async fn whole_partition(&self, pk: String, op: &str) -> StoreResult<Vec<Item>> {
        let mut e = Expr::default();
        let cond = format!("{} = {}", e.name(PK), e.value(s(pk)));
        let mut items = Vec::new();
        let mut page: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(&cond)
                .set_expression_attribute_names(e.names())
                .set_expression_attribute_values(e.values())
                .consistent_read(true)
                .set_exclusive_start_key(page.take())
                .send()
                .await
                .map_err(|err| self.backend(err, "Query", op))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(last) if !last.is_empty() => page = Some(last),
                _ => return Ok(items),
            }
        }
    }
}
