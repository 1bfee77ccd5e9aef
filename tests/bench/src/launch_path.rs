//! Issue 18, part 5: the serverless launch path end to end. A signed
//! `queued` delivery goes to the built `webhook` function under one Runtime
//! API stub; its hint goes to SQS on moto; a poller that behaves as Lambda's
//! SQS event source (long polls, invokes with what one receive returned,
//! batch size and batching window as `template.yaml` sets them, deletes
//! what the partial batch response does not name) hands it to the built
//! `orchestrator` under a second stub; the orchestrator claims the job on
//! DynamoDB and calls `RunInstances` on moto. Measured: delivery to the
//! moment moto's `RunInstances` answer passes back, one job at a time.
//!
//! Every AWS request of the run (the functions', the poller's, the
//! floor's) goes through one recording proxy in front of moto, which gives
//! the `RunInstances` time. The floor, timed before each job on the same
//! proxy: a bare `SendMessage`, a long-poll `ReceiveMessage` and a bare
//! `RunInstances`, one after the other — the AWS requests a launch cannot do
//! without.
//!
//! moto slows as its tables and queues grow (see `webhook_moto`): the jobs go
//! in lanes, each with a new table, new queues and new function processes,
//! whose first events warm them and are not measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use pacer_shared::config::Function;
use pacer_shared::fleet::ec2::{Ec2Fleet, sdk};
use pacer_shared::github::offline::OfflineGitHub;
use pacer_shared::queue::sqs::SqsQueue;
use pacer_shared::store::dynamodb::DynamoStore;
use pacer_test_support::events::{github_delivery, sqs_record};
use pacer_test_support::fault_proxy::FaultProxy;
use pacer_test_support::lambda_runtime::{self, Outcome, Running, RuntimeApi, lambda_env};
use pacer_test_support::moto::Ec2Network;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::cold_start::bench_binary;
use crate::deployment::{Deployment, Place, REPO, WEBHOOK_SECRET, ports, seed_at};
use crate::measure::{Samples, half_range};
use crate::payload::{Deliveries, queued_example};
use crate::{Figure, Sizes};

/// How long one job may take from delivery to its launch before the bench
/// gives up on the run.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Lambda's long poll.
const LONG_POLL_SECONDS: i32 = 20;
/// The instance type the pools and the floor launch (moto's x86_64 AMI).
const INSTANCE_TYPE: &str = "t3.micro";

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The orchestrator's SQS event source, as `template.yaml` sets it.
#[derive(Debug, Clone, Copy)]
struct EventSource {
    batch_size: i32,
    batching_window: Duration,
    partial_responses: bool,
}

impl EventSource {
    fn from_template() -> anyhow::Result<EventSource> {
        let path = pacer_test_support::in_repo("template.yaml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let template: serde_norway::Value =
            serde_norway::from_str(&text).context("template.yaml is YAML")?;
        let source = &template["Resources"]["OrchestratorFunction"]["Properties"]["Events"]["Jobs"]
            ["Properties"];
        let batch_size = source["BatchSize"]
            .as_i64()
            .context("the orchestrator's event source sets BatchSize")?;
        // Lambda's default for a standard queue is no window.
        let window = source["MaximumBatchingWindowInSeconds"]
            .as_u64()
            .unwrap_or(0);
        let partial_responses = source["FunctionResponseTypes"]
            .as_sequence()
            .is_some_and(|t| {
                t.iter()
                    .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
            });
        Ok(EventSource {
            batch_size: i32::try_from(batch_size).context("BatchSize fits an i32")?,
            batching_window: Duration::from_secs(window),
            partial_responses,
        })
    }

    fn described(&self) -> String {
        format!(
            "batch size {}, batching window {} s, {}",
            self.batch_size,
            self.batching_window.as_secs(),
            if self.partial_responses {
                "partial batch responses"
            } else {
                "whole batches retried"
            }
        )
    }
}

/// What the poller has settled so far.
#[derive(Debug, Clone, Copy, Default)]
struct Settled {
    /// Messages deleted after the orchestrator handled them.
    deleted: usize,
    /// Messages the orchestrator received more than once (a hint that
    /// came before its job's row, or a retry).
    received_again: usize,
}

/// Lambda's SQS event source for one function: long polls, invokes the
/// function with what it received (gathering more for the batching window,
/// if any), and deletes every message the answer does not name as failed.
/// An invocation that fails deletes nothing: its messages come back after
/// the queue's visibility timeout, as in Lambda.
async fn poll(
    sqs: aws_sdk_sqs::Client,
    url: String,
    source: EventSource,
    function: Arc<RuntimeApi>,
    settled: watch::Sender<Settled>,
) {
    loop {
        let mut messages = Vec::new();
        let window_ends = Instant::now() + source.batching_window;
        loop {
            let wait = if messages.is_empty() {
                LONG_POLL_SECONDS
            } else {
                window_ends
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    .min(LONG_POLL_SECONDS as u64) as i32
            };
            let received = sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages((source.batch_size - messages.len() as i32).clamp(1, 10))
                .wait_time_seconds(wait)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await;
            match received {
                Ok(out) => messages.extend(out.messages.unwrap_or_default()),
                Err(e) => {
                    eprintln!("bench: the poller's ReceiveMessage failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let full = messages.len() as i32 >= source.batch_size;
            if !messages.is_empty() && (full || Instant::now() >= window_ends) {
                break;
            }
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<String, Value> = m
                    .attributes()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str().to_string(), Value::from(v.as_str())))
                    .collect();
                sqs_record(
                    m.message_id().unwrap_or_default(),
                    m.receipt_handle().unwrap_or_default(),
                    m.body().unwrap_or_default(),
                    Value::Object(attributes),
                )
            })
            .collect();
        let again = messages
            .iter()
            .filter(|m| {
                m.attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .is_some_and(|n| n != "1")
            })
            .count();
        let id = function.queue(json!({ "Records": records }));
        let failed: Vec<String> = match function.answer(&id, LAUNCH_TIMEOUT).await {
            Some(answer) => match answer.outcome {
                Outcome::Response(response) if source.partial_responses => {
                    response["batchItemFailures"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
                        .collect()
                }
                Outcome::Response(_) => Vec::new(),
                Outcome::Error(_) => continue,
            },
            None => continue,
        };
        let done: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| !failed.iter().any(|f| Some(f.as_str()) == m.message_id()))
            .filter_map(|(n, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect();
        let deleted = done.len();
        if !done.is_empty() {
            if let Err(e) = sqs
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(done))
                .send()
                .await
            {
                eprintln!("bench: the poller's DeleteMessageBatch failed: {e}");
            }
        }
        settled.send_modify(|s| {
            s.deleted += deleted;
            s.received_again += again;
        });
    }
}

/// One function process under its own Runtime API stub.
struct Hosted {
    runtime: Arc<RuntimeApi>,
    process: Running,
}

impl Hosted {
    async fn start(name: &str, config: &[(&str, String)]) -> anyhow::Result<Hosted> {
        let runtime = Arc::new(RuntimeApi::start().await);
        let mut process = Running::spawn(&bench_binary(name)?, &lambda_env(&runtime, name, config));
        process.keep_tail();
        Ok(Hosted { runtime, process })
    }
}

/// What every lane shares.
struct Shared {
    deployment: lambda_runtime::Deployment,
    proxy: FaultProxy,
    /// Clients whose requests go through the proxy.
    sqs: aws_sdk_sqs::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    ec2: sdk::Client,
    network: Ec2Network,
    source: EventSource,
    deliveries: Deliveries,
}

/// A new table, new queues and new function processes for a run of jobs.
struct Lane {
    table: String,
    jobs_url: String,
    floor_url: String,
    webhook: Hosted,
    orchestrator: Hosted,
    poller: tokio::task::JoinHandle<()>,
    settled: watch::Receiver<Settled>,
    sent: usize,
}

impl Lane {
    async fn open(n: usize, shared: &Shared) -> anyhow::Result<Lane> {
        let table = format!("pacer-launch-{n}");
        let store = Arc::new(DynamoStore::new(shared.dynamodb.clone(), table.clone()));
        store.create_table().await?;
        let create = async |name: String| -> anyhow::Result<String> {
            let created = shared.sqs.create_queue().queue_name(name).send().await?;
            created.queue_url.context("CreateQueue returned no URL")
        };
        let jobs_url = create(format!("pacer-launch-jobs-{n}")).await?;
        let floor_url = create(format!("bench-launch-floor-{n}")).await?;
        let seeding = ports(
            store,
            Arc::new(SqsQueue::new(shared.sqs.clone(), jobs_url.clone())),
            Arc::new(Ec2Fleet::new(shared.ec2.clone(), "pacer".into())),
            Arc::new(OfflineGitHub::new("2.330.0")),
        );
        let place = Place {
            instance_type: INSTANCE_TYPE.into(),
            subnet: shared.network.subnets[0].clone(),
            security_group: shared.network.sg.clone(),
            ami: shared.network.ami.clone(),
        };
        seed_at(&seeding, 1_000, &place)
            .await
            .context("seeding the lane's table")?;

        let config = |function: Function| {
            let mut config = shared.deployment.config_for(function);
            for (key, value) in &mut config {
                match *key {
                    "PACER_DATABASE_TABLE" => *value = table.clone(),
                    "PACER_QUEUE_URL" => *value = jobs_url.clone(),
                    "PACER_AWS_ENDPOINT_URL" => *value = shared.proxy.endpoint.clone(),
                    _ => {}
                }
            }
            config
        };
        let webhook = Hosted::start("webhook", &config(Function::Webhook)).await?;
        let orchestrator = Hosted::start("orchestrator", &config(Function::Orchestrator)).await?;
        let (settle, settled) = watch::channel(Settled::default());
        let poller = tokio::spawn(poll(
            shared.sqs.clone(),
            jobs_url.clone(),
            shared.source,
            orchestrator.runtime.clone(),
            settle,
        ));
        Ok(Lane {
            table,
            jobs_url,
            floor_url,
            webhook,
            orchestrator,
            poller,
            settled,
            sent: 0,
        })
    }

    /// The floor: the requests a launch cannot do without, bare.
    async fn floor(&self, shared: &Shared) -> anyhow::Result<Duration> {
        let started = Instant::now();
        shared
            .sqs
            .send_message()
            .queue_url(&self.floor_url)
            .message_body("01JD8Z6W3Q4N5R7T9V1X3Z5B7D")
            .send()
            .await
            .context("the floor's SendMessage")?;
        let received = shared
            .sqs
            .receive_message()
            .queue_url(&self.floor_url)
            .max_number_of_messages(shared.source.batch_size.clamp(1, 10))
            .wait_time_seconds(LONG_POLL_SECONDS)
            .send()
            .await
            .context("the floor's ReceiveMessage")?;
        shared
            .ec2
            .run_instances()
            .image_id(&shared.network.ami)
            .instance_type(sdk::types::InstanceType::from(INSTANCE_TYPE))
            .subnet_id(&shared.network.subnets[0])
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .context("the floor's RunInstances")?;
        let took = started.elapsed();
        for m in received.messages() {
            shared
                .sqs
                .delete_message()
                .queue_url(&self.floor_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await?;
        }
        Ok(took)
    }

    /// Delivers job `github_id` to the webhook function and waits for its
    /// launch; returns delivery to `RunInstances` answered. Waits, too, for
    /// the webhook's answer and the poller's delete, so the next job finds
    /// nothing in flight.
    async fn launch(&mut self, shared: &Shared, github_id: i64) -> anyhow::Result<Duration> {
        let labels = Deployment::labels(github_id as usize);
        let delivery = shared.deliveries.queued(github_id, &labels);
        let body = std::str::from_utf8(&delivery.body).context("JSON is UTF-8")?;
        let event = github_delivery("workflow_job", body, &delivery.signature, "192.0.2.10");
        let launched_before = shared.proxy.run_instances().len();

        let delivered = Instant::now();
        let id = self.webhook.runtime.queue(event);
        let launched_at = loop {
            let launches = shared.proxy.run_instances();
            if let Some(launch) = launches.get(launched_before) {
                ensure!(
                    launch.fields.iter().any(|(_, v)| v == "pacer:runner"),
                    "a RunInstances that is not pacer's came between: {:?}",
                    launch.fields
                );
                if let Some(at) = launch.answered_at {
                    break at;
                }
            }
            if delivered.elapsed() > LAUNCH_TIMEOUT {
                bail!(
                    "job {github_id} was not launched within {LAUNCH_TIMEOUT:?}; the orchestrator printed:\n{}",
                    self.orchestrator.process.printed_tail()
                );
            }
            // Only when the run notices the launch: its time is moto's.
            tokio::time::sleep(Duration::from_millis(1)).await;
        };

        match self.webhook.runtime.answer(&id, LAUNCH_TIMEOUT).await {
            Some(answer) => match answer.outcome {
                Outcome::Response(r) if r["statusCode"] == 202 => {}
                other => bail!("the webhook answered {other:?}"),
            },
            None => bail!(
                "the webhook did not answer; it printed:\n{}",
                self.webhook.process.printed_tail()
            ),
        }
        self.sent += 1;
        let sent = self.sent;
        tokio::time::timeout(LAUNCH_TIMEOUT, self.settled.wait_for(|s| s.deleted >= sent))
            .await
            .context("the poller settled the job's message")?
            .context("the poller is running")?;
        Ok(launched_at.saturating_duration_since(delivered))
    }

    /// Stops the processes and deletes the table and queues; returns the
    /// messages received more than once.
    async fn close(self, shared: &Shared) -> anyhow::Result<usize> {
        self.poller.abort();
        let again = self.settled.borrow().received_again;
        self.webhook.process.stop().await;
        self.orchestrator.process.stop().await;
        shared
            .dynamodb
            .delete_table()
            .table_name(&self.table)
            .send()
            .await?;
        for url in [&self.jobs_url, &self.floor_url] {
            shared.sqs.delete_queue().queue_url(url).send().await?;
        }
        Ok(again)
    }
}

pub async fn run(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let source = EventSource::from_template()?;
    let deployment = lambda_runtime::Deployment::start(WEBHOOK_SECRET).await;
    let proxy = FaultProxy::start(&deployment.moto).await;
    let through_proxy = deployment
        .sdk
        .to_builder()
        .endpoint_url(&proxy.endpoint)
        .build();
    let ec2 = sdk::Client::new(&through_proxy);
    let network = Ec2Network::create(&ec2).await;
    let shared = Shared {
        sqs: aws_sdk_sqs::Client::new(&through_proxy),
        dynamodb: aws_sdk_dynamodb::Client::new(&through_proxy),
        ec2,
        network,
        source,
        deliveries: Deliveries::new(queued_example()?, REPO, WEBHOOK_SECRET),
        proxy,
        deployment,
    };

    let mut next_job = 4_000_000_000_i64;
    let mut floor = Samples::with_capacity(sizes.launch_jobs);
    let mut launch = Samples::with_capacity(sizes.launch_jobs);
    let (mut lane_floor, mut lane_launch) = (Vec::new(), Vec::new());
    let mut received_again = 0;
    let lanes = sizes.launch_jobs.div_ceil(sizes.launch_lane);
    for n in 0..lanes {
        let mut lane = Lane::open(n, &shared)
            .await
            .with_context(|| format!("opening lane {n}"))?;
        for _ in 0..sizes.launch_warmup {
            lane.floor(&shared).await?;
            lane.launch(&shared, next_job).await?;
            next_job += 1;
        }
        let (mut f, mut l) = (Samples::default(), Samples::default());
        let jobs = sizes
            .launch_lane
            .min(sizes.launch_jobs - n * sizes.launch_lane);
        for _ in 0..jobs {
            f.push(lane.floor(&shared).await?);
            l.push(lane.launch(&shared, next_job).await?);
            next_job += 1;
        }
        received_again += lane.close(&shared).await?;
        lane_floor.push(millis(f.percentile(50.0)));
        lane_launch.push(millis(l.percentile(50.0)));
        floor.extend(&f);
        launch.extend(&l);
    }

    let ratio =
        |p: f64| launch.percentile(p).as_secs_f64() / floor.percentile(p).as_secs_f64().max(1e-9);
    let what = format!(
        "{} jobs one at a time, in {lanes} lanes (a new table, queues and processes each, {} warm-up jobs not counted); the event source as template.yaml sets it: {}",
        launch.len(),
        sizes.launch_warmup,
        shared.source.described()
    );
    Ok(vec![
        Figure::new("launch.floor.p50", millis(floor.percentile(50.0)), "ms")
            .spread(half_range(&lane_floor))
            .note(format!(
                "bare SendMessage, long-poll ReceiveMessage and RunInstances one after the other, through the same proxy to moto, before each job: {what}"
            )),
        Figure::new("launch.floor.p99", millis(floor.percentile(99.0)), "ms")
            .note("99th percentile of the same"),
        Figure::new("launch.lambda.p50", millis(launch.percentile(50.0)), "ms")
            .spread(half_range(&lane_launch))
            .note(
                "a signed delivery to the webhook function → SQS → the Lambda-like poller → the orchestrator function → RunInstances answered, built functions under the Runtime API stub, DynamoDB, SQS and EC2 on moto",
            ),
        Figure::new("launch.lambda.p99", millis(launch.percentile(99.0)), "ms")
            .note("99th percentile of the same"),
        Figure::new("launch.lambda.p50_over_floor", ratio(50.0), "×")
            .note("the path's median over the floor's: what pacer's two functions add to the launch's unavoidable requests"),
        Figure::new("launch.lambda.p99_over_floor", ratio(99.0), "×")
            .note("the same for the 99th percentiles"),
        Figure::new("launch.lambda.received_again", received_again as f64, "messages").note(
            format!(
                "hints the orchestrator received more than once (a hint ahead of its job's row, or a retry), of {} jobs with their warm-ups",
                lanes * sizes.launch_warmup + launch.len()
            ),
        ),
    ])
}
