//! `make bench`: pacer's figures on this machine. Each benchmark
//! is an entry of [`benchmarks`] that produces named figures; the binary
//! runs them, prints one table and writes the same figures to
//! `target/bench/results.json`. No benchmark asserts a time: figures with a
//! budget (docs/architecture.md) say whether they met it, and the table names the ones
//! that missed.
//!
//! `cargo test -p pacer-bench` runs every benchmark on a tiny input, so
//! `make test` keeps the harness working without timing anything.

pub mod burst;
pub mod cold_start;
pub mod deployment;
pub mod launch_path;
pub mod measure;
pub mod payload;
pub mod reaper_pass;
pub mod stats;
pub mod webhook;
pub mod webhook_moto;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use serde::Serialize;

/// How much work each benchmark does.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Measured webhook events per entry point (split into rounds).
    pub webhook_events: usize,
    pub webhook_rounds: usize,
    /// Events sent first and not measured.
    pub webhook_warmup: usize,
    pub burst_jobs: usize,
    /// `max_runners` of each of the three pools.
    pub burst_max_runners: u32,
    pub burst_rounds: usize,
    /// A burst still running after this is reported as it stands.
    pub burst_timeout: Duration,
    /// Measured webhook events against moto (split into rounds), the
    /// events of a batch on the same table and queues (new ones for each
    /// batch), and unmeasured ones first.
    pub moto_events: usize,
    pub moto_rounds: usize,
    pub moto_batch: usize,
    pub moto_warmup: usize,
    /// Starts of each function, and how many of the five are started.
    pub cold_starts: usize,
    pub cold_functions: usize,
    /// Events one warm process of each function serves while its peak
    /// resident memory is watched.
    pub rss_events: usize,
    /// Live runners a reaper pass looks over, and passes measured.
    pub reaper_runners: usize,
    pub reaper_passes: usize,
    /// Jobs sent down the serverless launch path, jobs a lane (new table,
    /// queues and processes), and warm-up jobs a lane not measured.
    pub launch_jobs: usize,
    pub launch_lane: usize,
    pub launch_warmup: usize,
    /// Days of usage roll-ups, jobs a day, distinct groups a day, and
    /// `/api/stats` calls measured over them.
    pub stats_days: usize,
    pub stats_jobs_per_day: usize,
    pub stats_groups_per_day: usize,
    pub stats_calls: usize,
}

impl Sizes {
    /// Every benchmark at the sizes the README's figures use.
    pub fn full() -> Self {
        Self {
            webhook_events: 10_000,
            webhook_rounds: 5,
            webhook_warmup: 500,
            burst_jobs: 1_000,
            burst_max_runners: 50,
            burst_rounds: 3,
            burst_timeout: Duration::from_secs(300),
            moto_events: 2_000,
            moto_rounds: 4,
            moto_batch: 10,
            moto_warmup: 50,
            cold_starts: 11,
            cold_functions: cold_start::FUNCTIONS.len(),
            rss_events: 1_000,
            reaper_runners: 500,
            reaper_passes: 5,
            launch_jobs: 200,
            launch_lane: 25,
            launch_warmup: 2,
            stats_days: 90,
            stats_jobs_per_day: 10_000,
            stats_groups_per_day: 400,
            stats_calls: 50,
        }
    }

    /// Enough to prove the harness runs (`make test`).
    pub fn tiny() -> Self {
        Self {
            webhook_events: 40,
            webhook_rounds: 2,
            webhook_warmup: 5,
            burst_jobs: 30,
            burst_max_runners: 4,
            burst_rounds: 1,
            burst_timeout: Duration::from_secs(60),
            moto_events: 6,
            moto_rounds: 2,
            moto_batch: 2,
            moto_warmup: 2,
            cold_starts: 2,
            cold_functions: 1,
            rss_events: 3,
            reaper_runners: 60,
            reaper_passes: 1,
            launch_jobs: 3,
            launch_lane: 3,
            launch_warmup: 1,
            stats_days: 3,
            stats_jobs_per_day: 40,
            stats_groups_per_day: 4,
            stats_calls: 2,
        }
    }
}

/// A budget a figure is held to (docs/architecture.md, "Performance budgets").
#[derive(Debug, Clone, Serialize)]
pub struct Budget {
    /// The largest value that meets it, in the figure's unit.
    pub at_most: f64,
    pub text: String,
}

impl Budget {
    pub fn at_most(limit: f64, text: impl Into<String>) -> Self {
        Self {
            at_most: limit,
            text: text.into(),
        }
    }
}

/// One measured figure: a row of the table and of results.json.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// ± half the range of the figure over the benchmark's rounds; `null`
    /// when it ran once or reports its worst round.
    pub spread: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// `Some(false)` when the figure misses its budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
    pub note: String,
}

impl Figure {
    pub fn new(name: impl Into<String>, value: f64, unit: &str) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.into(),
            spread: None,
            budget: None,
            met: None,
            note: String::new(),
        }
    }

    pub fn spread(mut self, spread: Option<f64>) -> Self {
        self.spread = spread;
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    pub fn budget(mut self, budget: Budget) -> Self {
        self.met = Some(self.value <= budget.at_most);
        self.budget = Some(budget);
        self
    }
}

type Run = for<'a> fn(&'a Sizes) -> BoxFuture<'a, anyhow::Result<Vec<Figure>>>;

/// One benchmark: a name to select it by, and what it measures.
pub struct Benchmark {
    pub name: &'static str,
    pub what: &'static str,
    pub run: Run,
}

/// Every benchmark, in table order.
pub fn benchmarks() -> Vec<Benchmark> {
    vec![
        Benchmark {
            name: "webhook",
            what: "webhook hot path in process: SQLite store, memory queue (part 1)",
            run: |sizes| Box::pin(webhook::run(sizes)),
        },
        Benchmark {
            name: "burst",
            what: "1,000-job burst over 3 pools on the instant simulated fleet, and calls per job (parts 4, 5)",
            run: |sizes| Box::pin(burst::run(sizes)),
        },
        Benchmark {
            name: "webhook_moto",
            what: "the webhook Lambda's router with DynamoDB and SQS on moto_server, beside moto's floor (part 2)",
            run: |sizes| Box::pin(webhook_moto::run(sizes)),
        },
        Benchmark {
            name: "stats",
            what: "GET /api/stats by pool over 90 days of roll-ups holding 10,000 jobs a day, on SQLite (issue 17)",
            run: |sizes| Box::pin(stats::run(sizes)),
        },
        Benchmark {
            name: "reaper",
            what: "one reaper pass over 500 live runners in 3 pools and in 50: requests and time (issue 18)",
            run: |sizes| Box::pin(reaper_pass::run(sizes)),
        },
        Benchmark {
            name: "launch",
            what: "the serverless launch path: webhook function → SQS → orchestrator function → RunInstances, on moto, beside its floor (issue 18)",
            run: |sizes| Box::pin(launch_path::run(sizes)),
        },
        Benchmark {
            name: "cold_start",
            what: "each Lambda binary from spawn to its first answer under the Runtime API stub; zip sizes (part 3)",
            run: |sizes| Box::pin(cold_start::run(sizes)),
        },
    ]
}

/// Where and how the figures were measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub date: String,
    pub pacer: String,
    pub cores: usize,
    pub cpu: String,
    /// `bench` (optimised) or `dev` (a debug build: figures are not comparable).
    pub profile: &'static str,
    pub sizes: &'static str,
    /// The 1-minute load average when the run began and when it ended:
    /// above zero, something else competed for the cores.
    pub load: [f64; 2],
}

/// The 1-minute load average (0 where /proc does not say).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

impl Machine {
    fn here(tiny: bool, load_before: f64) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            pacer: pacer_shared::http::version(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            profile: if cfg!(debug_assertions) {
                "dev"
            } else {
                "bench"
            },
            sizes: if tiny { "tiny" } else { "full" },
            load: [load_before, load_average()],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub figures: Vec<Figure>,
}

impl Report {
    /// The figures that missed their budget.
    pub fn missed(&self) -> impl Iterator<Item = &Figure> {
        self.figures.iter().filter(|f| f.met == Some(false))
    }
}

/// Runs the selected benchmarks (all when `only` is empty), one after the
/// other so none competes with another for the two cores.
pub async fn run(sizes: &Sizes, tiny: bool, only: &[String]) -> anyhow::Result<Report> {
    let load_before = load_average();
    let mut figures = Vec::new();
    for bench in benchmarks() {
        if !only.is_empty() && !only.iter().any(|o| o == bench.name) {
            continue;
        }
        eprintln!("bench: {} — {}", bench.name, bench.what);
        let started = std::time::Instant::now();
        let produced = (bench.run)(sizes)
            .await
            .with_context(|| format!("benchmark {}", bench.name))?;
        eprintln!(
            "bench: {} done in {:.1} s",
            bench.name,
            started.elapsed().as_secs_f64()
        );
        figures.extend(produced);
    }
    Ok(Report {
        machine: Machine::here(tiny, load_before),
        figures,
    })
}

/// Whole numbers and large values without decimals, small ones with two;
/// a dash for a figure that could not be measured here.
fn number(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v == v.trunc() || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The table `make bench` prints.
pub fn table(report: &Report) -> String {
    let m = &report.machine;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pacer {} — {} — {} cores ({}) — profile {}, {} sizes — load {:.2} → {:.2}",
        m.pacer, m.date, m.cores, m.cpu, m.profile, m.sizes, m.load[0], m.load[1]
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<34} {:>10} {:<9} {:>9}  budget",
        "figure", "value", "unit", "spread"
    );
    let _ = writeln!(out, "{}", "-".repeat(96));
    for f in &report.figures {
        let spread = f
            .spread
            .map(|s| format!("±{}", number(s)))
            .unwrap_or_default();
        let budget = match (&f.budget, f.met) {
            (Some(b), Some(true)) => format!("met: {}", b.text),
            (Some(b), _) => format!("MISSED: {}", b.text),
            (None, _) => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<34} {:>10} {:<9} {:>9}  {}",
            f.name,
            number(f.value),
            f.unit,
            spread,
            budget
        );
    }
    let missed: Vec<&Figure> = report.missed().collect();
    let _ = writeln!(out);
    if missed.is_empty() {
        let _ = writeln!(out, "Every budget measured here was met.");
    } else {
        for f in missed {
            let limit = f.budget.as_ref().map_or(0.0, |b| b.at_most);
            let _ = writeln!(
                out,
                "MISSED {}: {} {} (budget {} {})",
                f.name,
                number(f.value),
                f.unit,
                number(limit),
                f.unit
            );
        }
    }
    out
}

/// `target/bench/results.json` at the root of this checkout, wherever the
/// build's target directory is.
pub fn default_results_path() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().and_then(Path::parent).unwrap_or(manifest);
    root.join("target/bench/results.json")
}

pub fn write_json(report: &Report, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_benchmark_runs_on_a_tiny_input_and_reports_its_figures() {
        // Given the tiny sizes
        let sizes = Sizes::tiny();

        // When every benchmark runs
        let report = run(&sizes, true, &[]).await.expect("the benchmarks run");

        // Then each produced its named figures (times are not checked)
        let value = |name: &str| {
            report
                .figures
                .iter()
                .find(|f| f.name == name)
                .unwrap_or_else(|| panic!("no figure {name}: {report:#?}"))
                .value
        };
        for name in [
            "webhook.service.p50",
            "webhook.service.p99",
            "webhook.service.cpu",
            "webhook.router.p99",
        ] {
            assert!(value(name) > 0.0, "{name}");
        }
        assert!(value("burst.all_completed") >= value("burst.all_launched"));
        // And the stats read every day bucket of the window, once
        assert_eq!(value("stats.day_buckets"), 3.0 * 4.0);
        assert!(value("stats.90d.store_reads") >= 1.0);
        // And the burst kept its promises: nothing lost, nothing twice, no pool over its max
        assert_eq!(value("burst.lost"), 0.0);
        assert_eq!(value("burst.launched_twice"), 0.0);
        for pool in ["linux-x64", "linux-arm64", "linux-riscv"] {
            let peak = value(&format!("burst.peak_live.{pool}"));
            assert!(
                peak >= 1.0 && peak <= f64::from(sizes.burst_max_runners),
                "{pool}: {peak}"
            );
        }
        // And every job cost calls of each kind the path makes
        assert!(value("calls.store_writes") >= 1.0);
        assert!(value("calls.queue_sends") >= 1.0);
        assert_eq!(value("calls.ec2"), 1.0, "one launch per job, nothing else");
        assert_eq!(value("calls.github"), 1.0, "one JIT config per job");
        // And the webhook went through the Lambda's router to moto, beside moto's floor
        for name in [
            "moto.floor.p50",
            "moto.floor.p99",
            "webhook.lambda.p50",
            "webhook.lambda.p99",
        ] {
            assert!(value(name) > 0.0, "{name}");
        }
        assert!(
            value("webhook.lambda.aws_calls") >= 2.0,
            "at least the conditional put and the send"
        );
        // And the webhook binary started, with its secret look-ups and memory
        for name in [
            "cold.webhook.start",
            "cold.webhook.secrets",
            "cold.webhook.rss",
        ] {
            assert!(value(name) > 0.0, "{name}");
        }

        // And the table and the JSON carry every figure
        let printed = table(&report);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench/results.json");
        write_json(&report, &path).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (n, f) in report.figures.iter().enumerate() {
            assert!(printed.contains(&f.name), "{} not in the table", f.name);
            assert_eq!(json["figures"][n]["name"], f.name.as_str());
            for key in ["value", "unit", "spread"] {
                assert!(json["figures"][n].get(key).is_some(), "{key} of {}", f.name);
            }
        }
    }
}
