//! Issue 8, part 3: each Lambda binary's cold start. A function process is
//! started under the Runtime API stub with its first event already waiting,
//! in the environment of the black-box tests' deployment — DynamoDB, SQS,
//! SSM and Secrets Manager on moto, its three secrets as `ssm:` /
//! `secretsmanager:` references — and timed from the spawn until the stub
//! receives its answer. The function's own "cold start done" log line says
//! how long its secret look-ups took; `/proc` says its peak resident
//! memory by then. The same kind of event sent again to the now warm
//! process says how much of the start was the event's own work on moto.
//! Every start is a new process and a new stub.
//!
//! The binaries are the `bench` profile's, built by `make bench` beside
//! `pacer-bench`. When `make package` has left its zips, their sizes are
//! reported, and their release-profile `bootstrap`s are timed the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use pacer_shared::fleet::simulated::SimulatedFleet;
use pacer_shared::github::offline::OfflineGitHub;
use pacer_shared::queue::sqs::SqsQueue;
use pacer_shared::store::dynamodb::DynamoStore;
use pacer_test_support::events::{github_delivery, http_event, scheduled_event, sqs_record};
use pacer_test_support::lambda_runtime::{self, Answer, Outcome, Running, RuntimeApi, lambda_env};
use serde_json::{Value, json};

use crate::deployment::{Deployment, REPO, WEBHOOK_SECRET, instant_fleet, ports, seed};
use crate::measure::{half_range, median};
use crate::payload::{Deliveries, queued_example};
use crate::{Budget, Figure, Sizes};

/// The five functions, in the order of the table.
pub const FUNCTIONS: [&str; 5] = ["webhook", "api", "runner", "orchestrator", "reaper"];
/// How long a start may take before the bench gives up on it.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const MB: f64 = 1e6;

/// The figures of one kind of build of the functions.
#[derive(Clone, Copy, PartialEq)]
enum Build {
    /// `cargo build --profile bench`, beside `pacer-bench`.
    Bench,
    /// The `bootstrap` inside `make package`'s zip (release profile).
    Release,
}

impl Build {
    fn label(self) -> &'static str {
        match self {
            Build::Bench => "bench",
            Build::Release => "release",
        }
    }
}

/// What one function's starts measured, and its peak memory through
/// `Sizes::rss_events` events (bench build only).
struct Measured {
    starts: Vec<Start>,
    through: Option<u64>,
}

/// What one start measured.
struct Start {
    to_first_answer: Duration,
    /// The same kind of event, answered by the process once warm.
    warm: Duration,
    secrets: Option<Duration>,
    peak_rss: Option<u64>,
}

pub async fn run(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let deployment = lambda_runtime::Deployment::start(WEBHOOK_SECRET).await;
    let mut events = FirstEvents::new()?;
    let functions = &FUNCTIONS[..sizes.cold_functions.min(FUNCTIONS.len())];

    let mut figures = Vec::new();
    for name in functions {
        let binary = bench_binary(name)?;
        let measured =
            measure(name, Build::Bench, &binary, &deployment, &mut events, sizes).await?;
        figures.extend(start_figures(name, Build::Bench, &measured.starts));
        if let Some(peak) = measured.through {
            figures.push(
                Figure::new(format!("cold.{name}.rss_through"), peak as f64 / MB, "MB")
                    .budget(Budget::at_most(32.0, "peak RSS ≤ 32 MB"))
                    .note(format!(
                        "peak resident memory (VmHWM) of one process through its first {} events, each {}",
                        sizes.rss_events,
                        FirstEvents::described(name)
                    )),
            );
        }
    }
    let zips = zips();
    figures.extend(zip_figures(&zips));
    let dir = tempfile::tempdir()?;
    for (name, zip) in &zips {
        if !functions.contains(&name.as_str()) {
            continue;
        }
        let Some(bootstrap) = unpack_bootstrap(zip, &dir.path().join(name))? else {
            eprintln!(
                "bench: {} is not for this machine; not started",
                zip.display()
            );
            continue;
        };
        let measured = measure(
            name,
            Build::Release,
            &bootstrap,
            &deployment,
            &mut events,
            sizes,
        )
        .await?;
        figures.extend(start_figures(name, Build::Release, &measured.starts));
    }
    Ok(figures)
}

/// Starts the function once unmeasured (the binary into the page cache,
/// moto's EC2 backend initialised), then `sizes.cold_starts` times. Each
/// function and build has a table of its own, seeded as the console's
/// admin would, so what one function's events leave behind (the webhook's
/// jobs) is not another's to read (the reaper's pass).
async fn measure(
    name: &str,
    build: Build,
    binary: &Path,
    deployment: &lambda_runtime::Deployment,
    events: &mut FirstEvents,
    sizes: &Sizes,
) -> anyhow::Result<Measured> {
    let table = format!("pacer-{name}-{}", build.label());
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&deployment.sdk),
        table.clone(),
    ));
    store.create_table().await?;
    let queue = Arc::new(SqsQueue::new(
        aws_sdk_sqs::Client::new(&deployment.sdk),
        deployment.queue_url.clone(),
    ));
    let fleet = Arc::new(SimulatedFleet::new(instant_fleet()));
    seed(
        &ports(store, queue, fleet, Arc::new(OfflineGitHub::new("2.330.0"))),
        50,
    )
    .await?;
    let mut config = deployment.config.clone();
    for (key, value) in &mut config {
        if *key == "PACER_DATABASE_TABLE" {
            *value = table.clone();
        }
    }

    let mut starts = Vec::with_capacity(sizes.cold_starts);
    for n in 0..=sizes.cold_starts {
        let start = start_once(name, binary, &config, events)
            .await
            .with_context(|| format!("starting {}", binary.display()))?;
        if n > 0 {
            starts.push(start);
        }
    }
    let through = if build == Build::Bench {
        let peak = peak_rss_through(name, binary, &config, events, sizes.rss_events)
            .await
            .with_context(|| format!("{} events to {}", sizes.rss_events, binary.display()))?;
        Some(peak)
    } else {
        None
    };
    Ok(Measured { starts, through })
}

/// The peak resident memory of one process of the function through its
/// first `n` events of the kind its starts get, one after the other.
async fn peak_rss_through(
    name: &str,
    binary: &Path,
    config: &[(&str, String)],
    events: &mut FirstEvents,
    n: usize,
) -> anyhow::Result<u64> {
    let runtime = RuntimeApi::start().await;
    let mut function = Running::spawn(binary, &lambda_env(&runtime, name, config));
    // A thousand events' log lines would fill the pipe and stall the process.
    function.keep_tail();
    for served in 0..n {
        let (event, expected) = events.for_function(name);
        let id = runtime.queue(event);
        let Some(answer) = runtime.answer(&id, START_TIMEOUT).await else {
            bail!(
                "{name} stopped answering after {served} events; it printed last:\n{}",
                function.printed_tail()
            );
        };
        expected.check(name, &answer)?;
    }
    let peak = function
        .peak_rss_bytes()
        .context("the process's peak memory (Linux's /proc)")?;
    function.stop().await;
    Ok(peak)
}

/// One start: spawn, first answer, memory, the boot's log line, then the
/// same kind of event again to the now warm process.
async fn start_once(
    name: &str,
    binary: &Path,
    config: &[(&str, String)],
    events: &mut FirstEvents,
) -> anyhow::Result<Start> {
    let runtime = RuntimeApi::start().await;
    let (event, expected) = events.for_function(name);
    let id = runtime.queue(event);
    let env = lambda_env(&runtime, name, config);
    let spawned = Instant::now();
    let mut function = Running::spawn(binary, &env);
    let answer = loop {
        if let Some(answer) = runtime.answer(&id, Duration::from_millis(20)).await {
            break answer;
        }
        if function.exited().is_some() || spawned.elapsed() > START_TIMEOUT {
            let (_, printed) = function.finished().await;
            bail!("{name} served no event: {printed}");
        }
    };
    expected.check(name, &answer)?;
    let peak_rss = function.peak_rss_bytes();

    let (event, expected) = events.for_function(name);
    let queued = Instant::now();
    let id = runtime.queue(event);
    let Some(again) = runtime.answer(&id, START_TIMEOUT).await else {
        bail!("{name} did not answer a second event");
    };
    expected.check(name, &again)?;

    // Printed before the function asked for its first event.
    let boot_line = function
        .stdout_line("cold start done", Duration::from_secs(5))
        .await;
    function.stop().await;
    Ok(Start {
        to_first_answer: answer.at - spawned,
        warm: again.at - queued,
        secrets: boot_line.as_deref().and_then(secrets_took),
        peak_rss,
    })
}

/// `secrets_ms` of the "cold start done" line (JSON, its fields flattened).
fn secrets_took(line: &str) -> Option<Duration> {
    let line: Value = serde_json::from_str(line).ok()?;
    let ms = line
        .get("secrets_ms")
        .or_else(|| line.get("fields")?.get("secrets_ms"))?
        .as_f64()?;
    Some(Duration::from_secs_f64(ms / 1e3))
}

/// How a function answers its first event when it served it.
#[derive(Clone, Copy)]
enum Expected {
    Status(u64),
    /// An SQS batch or a schedule: any answer that is not an error.
    Answer,
}

impl Expected {
    fn check(self, name: &str, answer: &Answer) -> anyhow::Result<()> {
        let Outcome::Response(response) = &answer.outcome else {
            bail!("{name} failed its first event: {:?}", answer.outcome);
        };
        if let Expected::Status(status) = self {
            ensure!(
                response["statusCode"] == status,
                "{name} answered {response} where {status} was expected"
            );
        }
        Ok(())
    }
}

/// Each function's first event: the one it exists for, as cheap as it
/// comes, except the webhook's, which is a new job each time.
struct FirstEvents {
    deliveries: Deliveries,
    next_job: i64,
}

impl FirstEvents {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            deliveries: Deliveries::new(queued_example()?, REPO, WEBHOOK_SECRET),
            next_job: 4_000_000_000,
        })
    }

    fn for_function(&mut self, name: &str) -> (Value, Expected) {
        let ip = "192.0.2.44";
        match name {
            "webhook" => {
                let id = self.next_job;
                self.next_job += 1;
                let delivery = self.deliveries.queued(id, &Deployment::labels(id as usize));
                let body = std::str::from_utf8(&delivery.body).expect("JSON is UTF-8");
                let event = github_delivery("workflow_job", body, &delivery.signature, ip);
                (event, Expected::Status(202))
            }
            "api" => (
                http_event("GET", "/healthz", json!({}), None, ip),
                Expected::Status(200),
            ),
            "runner" => (
                http_event("POST", "/api/runner/complete", json!({}), None, ip),
                Expected::Status(401),
            ),
            "orchestrator" => {
                let record = sqs_record(
                    "m-1",
                    "r-1",
                    "not a job id",
                    json!({"ApproximateReceiveCount": "1"}),
                );
                (json!({"Records": [record]}), Expected::Answer)
            }
            _ => (scheduled_event(), Expected::Answer),
        }
    }

    /// What the figure's note says the first event was.
    fn described(name: &str) -> &'static str {
        match name {
            "webhook" => "a signed queued job (DynamoDB put, SQS send): 202",
            "api" => "GET /healthz",
            "runner" => "a callback without a token: 401",
            "orchestrator" => "an SQS batch of one malformed message",
            _ => "a scheduled reaper pass over the table",
        }
    }
}

fn start_figures(name: &str, build: Build, starts: &[Start]) -> Vec<Figure> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let totals: Vec<f64> = starts.iter().map(|s| ms(s.to_first_answer)).collect();
    let (prefix, built) = match build {
        Build::Bench => (format!("cold.{name}"), "bench-profile build"),
        Build::Release => (
            format!("cold.{name}.release"),
            "release bootstrap from make package",
        ),
    };
    let budget = Budget::at_most(50.0, "start to first served < 50 ms");
    let mut figures = vec![
        Figure::new(format!("{prefix}.start"), median(&totals), "ms")
            .spread(half_range(&totals))
            .budget(budget)
            .note(format!(
                "{built}: spawn to the Runtime API stub receiving the answer to {}, median of {} starts, secrets on moto included",
                FirstEvents::described(name),
                starts.len()
            )),
    ];
    if build == Build::Release {
        return figures;
    }
    let warm: Vec<f64> = starts.iter().map(|s| ms(s.warm)).collect();
    figures.push(
        Figure::new(format!("{prefix}.warm"), median(&warm), "ms")
            .spread(half_range(&warm))
            .note("the same kind of event to the process once warm: the event's own work, on moto"),
    );
    let secrets: Vec<f64> = starts.iter().filter_map(|s| s.secrets.map(ms)).collect();
    if !secrets.is_empty() {
        figures.push(
            Figure::new(format!("{prefix}.secrets"), median(&secrets), "ms")
                .spread(half_range(&secrets))
                .note("of which resolving 2 SSM parameters and 1 Secrets Manager secret on moto (the function's secrets_ms)"),
        );
    }
    let rss: Vec<f64> = starts
        .iter()
        .filter_map(|s| s.peak_rss.map(|b| b as f64 / MB))
        .collect();
    if !rss.is_empty() {
        figures.push(
            Figure::new(format!("{prefix}.rss"), median(&rss), "MB")
                .spread(half_range(&rss))
                .note("peak resident memory up to the first answer (VmHWM)"),
        );
    }
    figures
}

/// The function binary of the running profile, beside `pacer-bench`.
pub(crate) fn bench_binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = pacer_test_support::sibling_binary(name);
    ensure!(
        path.is_file(),
        "{} is missing: `make bench` builds the functions with `cargo build --profile bench -p {name} …` \
         (for `cargo test -p pacer-bench`: `cargo build -p {name}`)",
        path.display()
    );
    Ok(path)
}

/// `make package`'s zips (`<target>/lambda/<name>/bootstrap.zip`), of the
/// functions that have one.
fn zips() -> Vec<(String, PathBuf)> {
    let Some(target) = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(pacer_test_support::target_dir)
    else {
        return Vec::new();
    };
    FUNCTIONS
        .iter()
        .map(|name| {
            (
                name.to_string(),
                target.join(format!("lambda/{name}/bootstrap.zip")),
            )
        })
        .filter(|(_, zip)| zip.is_file())
        .collect()
}

fn zip_figures(zips: &[(String, PathBuf)]) -> Vec<Figure> {
    let budget = Budget::at_most(8.0, "zipped < 8 MB");
    if zips.is_empty() {
        return vec![
            Figure::new("zip.*", f64::NAN, "MB")
                .note("no zips: run `make package`, then `make bench` again"),
        ];
    }
    zips.iter()
        .filter_map(|(name, zip)| {
            let meta = std::fs::metadata(zip).ok()?;
            let built = meta
                .modified()
                .ok()
                .map(|t| {
                    chrono::DateTime::<chrono::Utc>::from(t)
                        .format("%Y-%m-%d %H:%M UTC")
                        .to_string()
                })
                .unwrap_or_default();
            Some(
                Figure::new(format!("zip.{name}"), meta.len() as f64 / MB, "MB")
                    .budget(budget.clone())
                    .note(format!(
                        "{} (make package, release profile, built {built})",
                        zip.display()
                    )),
            )
        })
        .collect()
}

/// The zip's `bootstrap`, unpacked into `dir`, when it is built for this
/// machine's architecture (`make package ARCH=arm64` zips are not).
fn unpack_bootstrap(zip: &Path, dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let status = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(zip)
        .arg(dir)
        .status()
        .context("python3 unpacks the zip")?;
    ensure!(status.success(), "unpacking {} failed", zip.display());
    let bootstrap = dir.join("bootstrap");
    let mut header = [0u8; 20];
    std::fs::File::open(&bootstrap)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
        .with_context(|| format!("{} holds no bootstrap", zip.display()))?;
    // ELF e_machine, little-endian, at byte 18.
    let machine = u16::from_le_bytes([header[18], header[19]]);
    let ours = match std::env::consts::ARCH {
        "x86_64" => 0x3e,
        "aarch64" => 0xb7,
        _ => return Ok(None),
    };
    if !header.starts_with(b"\x7fELF") || machine != ours {
        return Ok(None);
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755))?;
    Ok(Some(bootstrap))
}
