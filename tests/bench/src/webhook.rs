//! Issue 8, part 1: the webhook hot path in process. Each event is GitHub's
//! real `queued` payload for a new job, signed; pacer checks the signature,
//! parses it, finds the project and pool, inserts the job (a conditional
//! insert on GitHub's job id) and enqueues it — on SQLite and the memory
//! queue. Measured twice: through the use case the HTTP handler calls
//! (`http::webhook::accept`: the signature check and payload read of the
//! edge, then the use case), and through the whole router as `pacer
//! serve` and the Lambda host run it (`app()`, with `oneshot`: no socket).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use axum::body::Body;
use http_body_util::BodyExt as _;
use pacer_shared::github::webhook::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER};
use pacer_shared::http::webhook::accept;
use pacer_shared::service::webhook::Outcome;
use tower::ServiceExt as _;

use crate::deployment::{Deployment, REPO, WEBHOOK_SECRET, instant_fleet};
use crate::measure::{Samples, cpu_time, half_range, micros};
use crate::payload::{Deliveries, Delivery, queued_example};
use crate::{Budget, Figure, Sizes};

/// Which entry point the events go through.
#[derive(Clone, Copy)]
enum Entry {
    Service,
    Router,
}

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Entry::Service => "webhook.service",
            Entry::Router => "webhook.router",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Entry::Service => "http::webhook::accept",
            Entry::Router => "app() via oneshot",
        }
    }
}

pub async fn run(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let deliveries = Deliveries::new(queued_example()?, REPO, WEBHOOK_SECRET);
    let mut figures = Vec::new();
    for (n, entry) in [Entry::Service, Entry::Router].into_iter().enumerate() {
        // A fresh database for each, so both see the same table sizes.
        let deployment = Deployment::embedded(instant_fleet(), 50).await?;
        let first_id = 1_000_000_000 * (n as i64 + 1);
        figures.extend(measure(entry, &deployment, &deliveries, first_id, sizes).await?);
    }
    Ok(figures)
}

async fn measure(
    entry: Entry,
    deployment: &Deployment,
    deliveries: &Deliveries,
    first_id: i64,
    sizes: &Sizes,
) -> anyhow::Result<Vec<Figure>> {
    let router = pacer_shared::http::app(deployment.app_state());
    let mut next_id = first_id;
    let deliver = async |delivery: Delivery| -> anyhow::Result<Duration> {
        match entry {
            Entry::Service => {
                let started = Instant::now();
                let outcome = accept(
                    &deployment.ports,
                    None,
                    "workflow_job",
                    Some(&delivery.signature),
                    &delivery.body,
                )
                .await;
                let took = started.elapsed();
                match outcome {
                    Ok(Outcome::Accepted { .. }) => Ok(took),
                    other => bail!("the webhook was not accepted: {other:?}"),
                }
            }
            Entry::Router => {
                let request = axum::http::Request::post("/api/webhook")
                    .header(EVENT_HEADER, "workflow_job")
                    .header(DELIVERY_HEADER, "bench")
                    .header(SIGNATURE_HEADER, &delivery.signature)
                    .header("content-type", "application/json")
                    .body(Body::from(delivery.body))?;
                let started = Instant::now();
                let response = router.clone().oneshot(request).await?;
                let status = response.status();
                // Reading the answer is part of serving it.
                let answer = response.into_body().collect().await?.to_bytes();
                let took = started.elapsed();
                ensure!(
                    status == 202,
                    "the webhook answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
                Ok(took)
            }
        }
    };

    // Warm caches and the allocator; not measured.
    for _ in 0..sizes.webhook_warmup {
        let labels = Deployment::labels(next_id as usize);
        deliver(deliveries.queued(next_id, &labels)).await?;
        next_id += 1;
    }

    let per_round = sizes.webhook_events.div_ceil(sizes.webhook_rounds);
    let mut all = Samples::with_capacity(per_round * sizes.webhook_rounds);
    let (mut p50s, mut p99s, mut cpus) = (Vec::new(), Vec::new(), Vec::new());
    let mut cpu_total = Duration::ZERO;
    let calls_before = deployment.calls();
    for _ in 0..sizes.webhook_rounds {
        // Built (and signed, as GitHub does) before the round: not measured.
        let round: Vec<Delivery> = (0..per_round)
            .map(|i| {
                let id = next_id + i as i64;
                deliveries.queued(id, &Deployment::labels(id as usize))
            })
            .collect();
        next_id += per_round as i64;
        let mut samples = Samples::with_capacity(per_round);
        let cpu_before = cpu_time();
        for delivery in round {
            samples.push(deliver(delivery).await?);
        }
        let cpu = cpu_time() - cpu_before;
        cpu_total += cpu;
        p50s.push(micros(samples.percentile(50.0)));
        p99s.push(micros(samples.percentile(99.0)));
        cpus.push(micros(cpu) / per_round as f64);
        all.extend(&samples);
    }
    let calls = deployment.calls() - calls_before;
    let events = all.len();
    let p99 = micros(all.percentile(99.0));
    let name = entry.name();
    let what = entry.what();
    let per_event = |n: u64| n as f64 / events as f64;
    let mut figures = vec![
        Figure::new(format!("{name}.p50"), micros(all.percentile(50.0)), "µs")
            .spread(half_range(&p50s))
            .note(format!("{what}: median latency over {events} events")),
        Figure::new(format!("{name}.p99"), p99, "µs")
            .spread(half_range(&p99s))
            .note(format!("{what}: 99th percentile over {events} events"))
            .budget(Budget::at_most(1000.0, "p99 < 1 ms")),
        Figure::new(
            format!("{name}.cpu"),
            micros(cpu_total) / events as f64,
            "µs",
        )
        .spread(half_range(&cpus))
        .note(format!(
            "{what}: CPU time (user + system, all threads) per event"
        )),
    ];
    if let Entry::Service = entry {
        // The same for either entry point: the calls one accepted job costs.
        figures.extend([
            Figure::new(
                "webhook.calls.store_reads",
                per_event(calls.store_reads),
                "per event",
            )
            .note("SQLite reads per accepted queued job"),
            Figure::new(
                "webhook.calls.store_writes",
                per_event(calls.store_writes),
                "per event",
            )
            .note("SQLite writes per accepted queued job (the conditional insert)"),
            Figure::new(
                "webhook.calls.queue_sends",
                per_event(calls.queue_sends),
                "per event",
            )
            .note("messages enqueued per accepted queued job"),
        ]);
    }
    Ok(figures)
}
