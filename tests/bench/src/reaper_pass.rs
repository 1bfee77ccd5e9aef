//! Issue 18, part 4: one reaper pass whose cost does not grow with the
//! number of pools. The same 500 live runners (launched through the
//! orchestrator onto the simulated fleet, whose instances never boot, so
//! nothing is left for the pass to repair) are spread over 3 pools and then
//! over 50, and one pass over each is counted and timed: store requests,
//! fleet calls (EC2 requests in production) and GitHub calls.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use pacer_shared::calls::Calls;
use pacer_shared::domain::{JobState, Pool};
use pacer_shared::fleet::simulated::SimulatedSettings;
use pacer_shared::service::dispatch::{Dispatched, dispatch};
use pacer_shared::service::{Caller, config_objects, reaper};
use pacer_shared::store::conformance;
use serde_json::{Map, Value, json};

use crate::deployment::{Deployment, instant_fleet};
use crate::measure::{half_range, median};
use crate::{Budget, Figure, Sizes};

/// The pool counts compared.
const FEW: usize = 3;
const MANY: usize = 50;

/// What one pass cost.
struct Pass {
    calls: Calls,
    took: Duration,
}

pub async fn run(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let few = passes(FEW, sizes).await?;
    let many = passes(MANY, sizes).await?;
    let requests =
        |p: &[Pass]| median(&p.iter().map(|p| p.calls.total() as f64).collect::<Vec<_>>());
    let ms = |p: &[Pass]| {
        p.iter()
            .map(|p| p.took.as_secs_f64() * 1e3)
            .collect::<Vec<_>>()
    };
    let what = |n: usize| {
        format!(
            "one reaper pass over {} live runners in {n} pools (SQLite, simulated fleet, offline GitHub), median of {} passes",
            sizes.reaper_runners, sizes.reaper_passes
        )
    };
    let ratio = requests(&many) / requests(&few).max(1.0);
    Ok(vec![
        Figure::new(
            format!("reaper.pass.requests.{FEW}_pools"),
            requests(&few),
            "per pass",
        )
        .note(format!(
            "store, fleet and GitHub calls of {} ({})",
            what(FEW),
            kinds(&few[0].calls)
        )),
        Figure::new(
            format!("reaper.pass.requests.{MANY}_pools"),
            requests(&many),
            "per pass",
        )
        .note(format!(
            "the same, {} ({})",
            what(MANY),
            kinds(&many[0].calls)
        )),
        Figure::new("reaper.pass.requests.ratio", ratio, "×")
            .budget(Budget::at_most(2.0, "50 pools ≤ 2 × the requests of 3"))
            .note("requests of the 50-pool pass over the 3-pool one"),
        Figure::new(
            format!("reaper.pass.ms.{FEW}_pools"),
            median(&ms(&few)),
            "ms",
        )
        .spread(half_range(&ms(&few)))
        .note(what(FEW)),
        Figure::new(
            format!("reaper.pass.ms.{MANY}_pools"),
            median(&ms(&many)),
            "ms",
        )
        .spread(half_range(&ms(&many)))
        .note(what(MANY)),
    ])
}

/// What a pass's calls were, by kind.
fn kinds(c: &Calls) -> String {
    format!(
        "{} store reads, {} store writes, {} fleet, {} GitHub, {} queue sends",
        c.store_reads, c.store_writes, c.fleet, c.github, c.queue_sends
    )
}

/// `sizes.reaper_passes` passes over a deployment of `pools` pools holding
/// `sizes.reaper_runners` live runners between them.
async fn passes(pools: usize, sizes: &Sizes) -> anyhow::Result<Vec<Pass>> {
    // Instances that never boot: every runner stays pending and live, well
    // within its boot timeout, so a pass finds nothing to do.
    let fleet = SimulatedSettings {
        boot_delay: Duration::from_secs(24 * 3600),
        github: None,
        ..instant_fleet()
    };
    let per_pool = sizes.reaper_runners.div_ceil(pools) as u32;
    let deployment = Deployment::embedded(fleet, per_pool).await?;
    let mut all: Vec<Pool> = deployment.pools.clone();
    let admin = Caller::system("bench");
    for n in all.len()..pools {
        let body = json!({
            "project_id": all[0].spec.project_id, "name": format!("linux-{n}"), "labels": ["linux", format!("p{n}")],
            "instance_types": ["m7g.large"], "subnets": ["subnet-0abc1234"],
            "security_groups": ["sg-0abc1234"], "ami": "ami-0123456789abcdef0",
            "market": "on-demand", "max_runners": per_pool,
        });
        let body: Map<String, Value> = body.as_object().cloned().context("an object")?;
        let pool = config_objects::create_pool(&deployment.ports, &admin, body)
            .await
            .map_err(|e| anyhow::anyhow!("creating pool linux-{n}: {e}"))?;
        all.push(pool);
    }
    all.truncate(pools);
    let ports = &deployment.ports;
    let now = ports.clock.now();
    for n in 0..sizes.reaper_runners {
        let pool = &all[n % all.len()];
        let mut job = conformance::job(5_000_000_000 + n as i64, crate::deployment::REPO, now);
        job.project_id = Some(pool.spec.project_id.clone());
        job.pool_id = Some(pool.id.clone());
        job.state = JobState::Queued;
        ports.store.insert_job(&job).await?;
        let dispatched = dispatch(ports, &job.id)
            .await
            .map_err(|e| anyhow::anyhow!("dispatching: {e}"))?;
        ensure!(
            matches!(dispatched, Dispatched::Launched { .. }),
            "job {n} was not launched: {dispatched:?}"
        );
    }
    let mut passes = Vec::with_capacity(sizes.reaper_passes);
    for _ in 0..=sizes.reaper_passes {
        let before = deployment.calls();
        let started = Instant::now();
        let report = reaper::reconcile(ports)
            .await
            .map_err(|e| anyhow::anyhow!("the pass: {e}"))?;
        let took = started.elapsed();
        ensure!(
            report.actions.is_empty(),
            "the pass found work where there is none: {:?}",
            report.actions
        );
        passes.push(Pass {
            calls: deployment.calls() - before,
            took,
        });
    }
    // The first pass warmed what a scheduled function's earlier passes would have.
    passes.remove(0);
    Ok(passes)
}
