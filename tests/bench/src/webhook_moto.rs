//! Issue 8, part 2: the webhook against emulated AWS. The same deliveries as
//! part 1 (GitHub's real `queued` example, signed) go through the `webhook`
//! Lambda's router (`host::lambda::http_router(Function::Webhook)`) as API Gateway
//! hands them over, with DynamoDB and SQS on `moto_server`: the signature
//! check, the parse, the pool match, the conditional put and the
//! SendMessage, every AWS request over loopback HTTP on one reused client.
//!
//! moto is slow Python, so the same run measures its floor — one bare SQS
//! SendMessage on the same client — interleaved with the events, so the
//! figures read as "floor + pacer". moto slows as its data grows (see
//! [`Lane`]): the events go in batches, each on a new table and new queues,
//! the floor's queue holding as many messages as pacer's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use axum::Router;
use http_body_util::BodyExt as _;
use pacer_shared::calls::Calls;
use pacer_shared::config::Function;
use pacer_shared::fleet::simulated::SimulatedFleet;
use pacer_shared::github::offline::OfflineGitHub;
use pacer_shared::host::lambda::http_router;
use pacer_shared::http::AppState;
use pacer_shared::queue::sqs::SqsQueue;
use pacer_shared::store::dynamodb::DynamoStore;
use pacer_test_support::events::github_delivery;
use pacer_test_support::moto::Moto;
use tower::ServiceExt as _;

use crate::deployment::{Deployment, REPO, WEBHOOK_SECRET, instant_fleet, ports, seed};
use crate::measure::{Samples, cpu_time, half_range, micros};
use crate::payload::{Deliveries, queued_example};
use crate::{Budget, Figure, Sizes};

/// What pacer enqueues: a job id (a ULID).
const FLOOR_BODY: &str = "01JD8Z6W3Q4N5R7T9V1X3Z5B7D";

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// One round's latencies.
struct Round {
    floor: Samples,
    floor_cpu: Duration,
    webhook: Samples,
    webhook_cpu: Duration,
}

/// The webhook function as one batch of events finds it: its router on a
/// new DynamoDB table (seeded) and a new SQS queue, and the floor's new
/// queue beside it. moto deep-copies the whole table on every
/// TransactWriteItems (pacer's conditional insert) and reads every item on
/// every Query, and its SendMessage slows as a queue fills; DynamoDB and
/// SQS do none of that, so each batch starts empty. (New queues rather than
/// purged ones: moto, like SQS, allows one PurgeQueue a minute.)
struct Lane {
    store: Arc<DynamoStore>,
    queue: Arc<SqsQueue>,
    router: Router,
    jobs_url: String,
    floor_url: String,
    /// The calls seeding made, not counted as the events'.
    seeded: Calls,
}

impl Lane {
    async fn open(n: usize, aws: &Aws) -> anyhow::Result<Lane> {
        let store = Arc::new(DynamoStore::new(
            aws.dynamodb.clone(),
            format!("pacer-bench-{n}"),
        ));
        store.create_table().await?;
        let create = async |name: String| -> anyhow::Result<String> {
            let created = aws.sqs.create_queue().queue_name(name).send().await?;
            created.queue_url.context("CreateQueue returned no URL")
        };
        let jobs_url = create(format!("pacer-jobs-{n}")).await?;
        let floor_url = create(format!("bench-floor-{n}")).await?;
        let queue = Arc::new(SqsQueue::new(aws.sqs.clone(), jobs_url.clone()));
        let ports = ports(
            store.clone(),
            queue.clone(),
            Arc::new(SimulatedFleet::new(instant_fleet())),
            Arc::new(OfflineGitHub::new("2.330.0")),
        );
        seed(&ports, 50).await?;
        // A warm function holds the configuration already (the catalog):
        // read before the events, not counted as theirs.
        let repo = pacer_shared::domain::RepoName::parse(REPO).map_err(anyhow::Error::msg)?;
        ports.catalog.serving(&ports, &repo).await?;
        let state = AppState {
            ports,
            trusted_proxies: Arc::new(vec![]),
            auth: None,
            sso: None,
            console: None,
            workload: None,
        };
        let router =
            http_router(Function::Webhook, state, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Lane {
            seeded: store.calls() + queue.calls(),
            store,
            queue,
            router,
            jobs_url,
            floor_url,
        })
    }

    /// What the function does with one event, as `lambda_http` hands it over.
    async fn serve(&self, event: &str) -> anyhow::Result<()> {
        let request = lambda_http::request::from_str(event).context("a payload 2.0 event")?;
        let response = self.router.clone().oneshot(request).await?;
        let status = response.status();
        let answer = response.into_body().collect().await?.to_bytes();
        ensure!(
            status == 202,
            "the webhook answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
        Ok(())
    }

    /// The floor: one bare SendMessage on the same client.
    async fn send_bare(&self, aws: &Aws) -> anyhow::Result<()> {
        aws.sqs
            .send_message()
            .queue_url(&self.floor_url)
            .message_body(FLOOR_BODY)
            .send()
            .await?;
        Ok(())
    }

    /// Deletes the table and the queues; returns the calls the events made.
    async fn close(self, aws: &Aws) -> anyhow::Result<Calls> {
        let calls = self.store.calls() + self.queue.calls() - self.seeded;
        aws.dynamodb
            .delete_table()
            .table_name(self.store.table())
            .send()
            .await?;
        for url in [&self.jobs_url, &self.floor_url] {
            aws.sqs.delete_queue().queue_url(url).send().await?;
        }
        Ok(calls)
    }
}

/// The clients every lane shares.
struct Aws {
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
}

/// Runs on a runtime of one thread, as the webhook function does.
pub async fn run(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let sizes = sizes.clone();
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(measure(&sizes))
    })
    .await?
}

async fn measure(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    pacer_shared::http_client::install_crypto_provider();
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let aws = Aws {
        dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
        sqs: aws_sdk_sqs::Client::new(&sdk),
    };
    let deliveries = Deliveries::new(queued_example()?, REPO, WEBHOOK_SECRET);

    // Each event as API Gateway's JSON, built and signed before it is sent.
    let mut next_id = 3_000_000_000_i64;
    let mut events = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                let id = next_id;
                next_id += 1;
                let delivery = deliveries.queued(id, &Deployment::labels(id as usize));
                let body = std::str::from_utf8(&delivery.body).expect("JSON is UTF-8");
                github_delivery("workflow_job", body, &delivery.signature, "192.0.2.10").to_string()
            })
            .collect()
    };

    // Connections, caches and moto's own first requests; not measured.
    let mut lanes = 0..;
    let lane = Lane::open(lanes.next().unwrap_or_default(), &aws).await?;
    for event in events(sizes.moto_warmup) {
        lane.send_bare(&aws).await?;
        lane.serve(&event).await?;
    }
    lane.close(&aws).await?;

    let per_round = sizes.moto_events.div_ceil(sizes.moto_rounds);
    let mut calls = Calls::default();
    let mut rounds = Vec::new();
    for _ in 0..sizes.moto_rounds {
        let mut round = Round {
            floor: Samples::with_capacity(per_round),
            floor_cpu: Duration::ZERO,
            webhook: Samples::with_capacity(per_round),
            webhook_cpu: Duration::ZERO,
        };
        let round_events = events(per_round);
        for batch in round_events.chunks(sizes.moto_batch) {
            let lane = Lane::open(lanes.next().unwrap_or_default(), &aws).await?;
            for event in batch {
                let cpu_before = cpu_time();
                let started = Instant::now();
                lane.send_bare(&aws).await?;
                round.floor.push(started.elapsed());
                round.floor_cpu += cpu_time() - cpu_before;

                let cpu_before = cpu_time();
                let started = Instant::now();
                lane.serve(event).await?;
                round.webhook.push(started.elapsed());
                round.webhook_cpu += cpu_time() - cpu_before;
            }
            calls = calls + lane.close(&aws).await?;
        }
        rounds.push(round);
    }
    drop(moto);

    let (mut floor, mut webhook) = (Samples::default(), Samples::default());
    let (mut floor_cpu, mut cpu) = (Duration::ZERO, Duration::ZERO);
    for round in &rounds {
        floor.extend(&round.floor);
        webhook.extend(&round.webhook);
        floor_cpu += round.floor_cpu;
        cpu += round.webhook_cpu;
    }
    let events = webhook.len();
    let per_event = |n: u64| n as f64 / events as f64;
    let spread = |f: &dyn Fn(&Round) -> f64| half_range(&rounds.iter().map(f).collect::<Vec<_>>());
    let requests = calls.store_reads + calls.store_writes + calls.queue_sends;
    let what = format!(
        "{events} sequential events in {} rounds of {per_round}, each batch of {} on a new table and new queues",
        rounds.len(),
        sizes.moto_batch
    );
    Ok(vec![
        Figure::new("moto.floor.p50", millis(floor.percentile(50.0)), "ms")
            .spread(spread(&|r| millis(r.floor.percentile(50.0))))
            .note(format!(
                "one bare SQS SendMessage to moto_server on the same client, before each event: {what}"
            )),
        Figure::new("moto.floor.p99", millis(floor.percentile(99.0)), "ms")
            .spread(spread(&|r| millis(r.floor.percentile(99.0))))
            .note("99th percentile of the bare SendMessage"),
        Figure::new("moto.floor.cpu", micros(floor_cpu) / floor.len() as f64, "µs")
            .spread(spread(&|r| micros(r.floor_cpu) / r.floor.len() as f64))
            .note("CPU time of this process per bare SendMessage: the AWS SDK's own cost of one request"),
        Figure::new("webhook.lambda.p50", millis(webhook.percentile(50.0)), "ms")
            .spread(spread(&|r| millis(r.webhook.percentile(50.0))))
            .note(format!(
                "the webhook Lambda's router on API Gateway events, DynamoDB and SQS on moto_server: {what}"
            )),
        Figure::new("webhook.lambda.p99", millis(webhook.percentile(99.0)), "ms")
            .spread(spread(&|r| millis(r.webhook.percentile(99.0))))
            .note("99th percentile of the same"),
        Figure::new(
            "webhook.lambda.p50_over_floor",
            ratio(webhook.percentile(50.0), floor.percentile(50.0)),
            "×",
        )
        .spread(spread(&|r| ratio(r.webhook.percentile(50.0), r.floor.percentile(50.0))))
        .budget(Budget::at_most(1.3, "p50 ≤ 1.3 × moto.floor.p50, same run"))
        .note("the webhook's median over the bare request's: what pacer adds to one AWS round trip"),
        Figure::new(
            "webhook.lambda.p99_over_floor",
            ratio(webhook.percentile(99.0), floor.percentile(99.0)),
            "×",
        )
        .spread(spread(&|r| ratio(r.webhook.percentile(99.0), r.floor.percentile(99.0))))
        .budget(Budget::at_most(1.4, "p99 ≤ 1.4 × moto.floor.p99, same run"))
        .note("the same for the 99th percentiles"),
        Figure::new("webhook.lambda.cpu", micros(cpu) / events as f64, "µs")
            .spread(spread(&|r| micros(r.webhook_cpu) / r.webhook.len() as f64))
            .budget(Budget::at_most(1000.0, "≤ 1.0 ms per event"))
            .note("CPU time of this process per event (pacer and the AWS SDK; moto's own not counted), on one thread as the function runs"),
        Figure::new("webhook.lambda.aws_calls", per_event(requests), "per event").note(format!(
            "AWS requests per event: DynamoDB reads {}, DynamoDB writes {}, SQS sends {}",
            per_event(calls.store_reads),
            per_event(calls.store_writes),
            per_event(calls.queue_sends)
        )),
    ])
}
