//! The simulated fleet (`fleet.engine: simulated`, the `make run` default):
//! instances that exist only in this process and play the runner's side of
//! the protocol against pacer's own callbacks.
//!
//! A simulated instance "boots" for `boot_delay`, then does what
//! `infra/runner/bootstrap.sh` does: reads `PACER_URL`/`PACER_TOKEN` from
//! its user data ([`super::user_data::parse`]), registers, "runs" the
//! runner, reports `/complete` (or `/error` with a log tail), and
//! terminates. When whoever plays GitHub ([`GitHubPart`]; the host's
//! offline stand-in under `github.disabled`) recognises the JIT config, its
//! `workflow_job` deliveries go to pacer too: `in_progress` after a moment
//! and `completed` after `job_time`.
//!
//! It owns the live-instance table and the counters a benchmark reads
//! ([`SimulatedFleet::counters`]).
//!
//! Faults can be injected for tests: with `launch_failure_rate` r, launches
//! fail with [`FleetError::NoCapacity`] (what EC2's
//! `InsufficientInstanceCapacity` becomes once every fallback is exhausted)
//! on a fixed schedule rather than at random — the n-th launch that would
//! start an instance fails when ⌊n·r⌋ > ⌊(n−1)·r⌋ — so any N launches hold
//! exactly ⌊N·r⌋ failures (r = 0.05: the 20th, 40th, 60th…), and a test
//! reads the same on every run. See [`injected_failure`]. Bootstraps fail
//! on the same kind of schedule with `fleet.simulated.bootstrap_failure_percent`:
//! the instance stops before registering and reports its log tail to
//! `/api/runner/error`, as `bootstrap.sh` does when it cannot go on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::AbortHandle;

use super::{Fleet, FleetError, FleetResult, Instance, JobRef, LaunchRequest, Launched, user_data};
use crate::calls::{Call, CallCounts, Calls};
use crate::config::{Secret, SimulatedFleetConfig};
use crate::domain::{Market, Pool, Time};

/// The availability zone every simulated instance is "in".
pub const SIMULATED_ZONE: &str = "simulated-1a";

/// GitHub's part in a simulated runner's life, played by whatever stands in
/// for GitHub (the offline GitHub of `github.disabled`): the fleet plays the
/// machine and the runner, this plays the service that hands it a job.
pub trait GitHubPart: Send + Sync + std::fmt::Debug {
    /// GitHub's id of the runner a JIT configuration registers, when the
    /// stand-in issued that configuration; `None` for a real one.
    fn runner_id(&self, encoded_jit_config: &str) -> Option<i64>;
    /// The `workflow_job` delivery GitHub sends when `runner` reaches
    /// `action` (`in_progress`, `completed`) on `job`.
    fn job_delivery(
        &self,
        job: &JobRef,
        runner: &RunnerIdentity,
        action: &str,
        now: Time,
    ) -> Delivery;
}

/// One webhook delivery: its headers (event, delivery id, signature) and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// How the simulated instances behave.
#[derive(Debug, Clone)]
pub struct SimulatedSettings {
    /// From launch to the first callback.
    pub boot_delay: Duration,
    /// How long the simulated job runs.
    pub job_time: Duration,
    pub deployment: String,
    /// Who plays GitHub; without it no runner gets a job, it only passes
    /// the time.
    pub github: Option<Arc<dyn GitHubPart>>,
    /// From registering to GitHub's `in_progress` (GitHub's job assignment).
    pub pickup_delay: Duration,
    /// Register attempts before the instance gives up (as the script does,
    /// for a pacer that is not answering yet).
    pub register_tries: u32,
    /// Pause between retried callbacks.
    pub retry_delay: Duration,
    /// The share of launches (0.0 = none, 1.0 = all) refused with
    /// [`FleetError::NoCapacity`], on the deterministic schedule of
    /// [`injected_failure`]. Only tests set it.
    pub launch_failure_rate: f64,
    /// The share of booted instances whose bootstrap fails before they
    /// register, reporting a log tail to `/api/runner/error` as the script
    /// does, on the same schedule (`fleet.simulated.bootstrap_failure_percent`).
    pub bootstrap_failure_rate: f64,
}

impl SimulatedSettings {
    pub fn from_config(
        cfg: &SimulatedFleetConfig,
        deployment: impl Into<String>,
        github: Option<Arc<dyn GitHubPart>>,
    ) -> Self {
        Self {
            boot_delay: cfg.boot_delay,
            job_time: cfg.job_time,
            deployment: deployment.into(),
            github,
            pickup_delay: Duration::from_millis(300),
            register_tries: 5,
            retry_delay: Duration::from_millis(500),
            launch_failure_rate: 0.0,
            bootstrap_failure_rate: f64::from(cfg.bootstrap_failure_percent) / 100.0,
        }
    }
}

/// Whether the `n`-th launch (1-based) fails when a share `rate` of them
/// should: exactly when ⌊n·rate⌋ steps up at `n`, in integer parts per
/// million so no float rounding moves a failure. Spreads the failures
/// evenly (rate 0.05: every 20th) and puts exactly ⌊N·rate⌋ in any first N.
pub fn injected_failure(n: u64, rate: f64) -> bool {
    const PARTS: u64 = 1_000_000;
    // NaN and negatives are "never"; above 1 is "always".
    let ppm = if rate.is_nan() {
        0
    } else {
        (rate.clamp(0.0, 1.0) * PARTS as f64).round() as u64
    };
    n > 0
        && u128::from(n) * u128::from(ppm) / u128::from(PARTS)
            > u128::from(n - 1) * u128::from(ppm) / u128::from(PARTS)
}

/// What the simulated fleet has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimulatedCounters {
    /// Instances launched (a repeated launch for the same runner not counted).
    pub launched: u64,
    /// Instances alive now.
    pub live: u64,
    /// The most instances alive at once.
    pub peak_live: u64,
    /// Instances that registered with pacer.
    pub registered: u64,
    /// Instances that reported `/complete`.
    pub completed: u64,
    /// Instances whose bootstrap failed (reported to `/error` where possible).
    pub failed: u64,
    /// Launches refused by an injected fault (`launch_failure_rate`); they
    /// started no instance and are not in `launched`.
    pub launch_failures: u64,
}

#[derive(Default)]
struct Counters {
    launched: AtomicU64,
    peak_live: AtomicU64,
    registered: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    /// Launches that would start an instance, counted for the fault schedule.
    launch_calls: AtomicU64,
    /// Bootstraps begun, counted for the bootstrap fault schedule.
    bootstraps: AtomicU64,
    launch_failures: AtomicU64,
}

struct Live {
    instance: Instance,
    launched: Launched,
    task: Option<AbortHandle>,
}

struct Inner {
    settings: SimulatedSettings,
    /// pacer's own base URL, once its server has bound.
    pacer_url: RwLock<Option<String>>,
    http: reqwest::Client,
    live: Mutex<HashMap<String, Live>>,
    counters: Counters,
    /// One per port method call: what EC2 would have been asked.
    calls: CallCounts,
}

/// See the module docs. Cheap to clone; clones share the instances.
#[derive(Clone)]
pub struct SimulatedFleet {
    inner: Arc<Inner>,
}

impl SimulatedFleet {
    pub fn new(settings: SimulatedSettings) -> Self {
        // Building fails only without a TLS crypto provider, which
        // `http_client::builder` installs.
        #[allow(clippy::expect_used)]
        let http = crate::http_client::builder()
            .timeout(Duration::from_secs(30))
            // The simulated runners only ever call this very process, which
            // may serve a self-signed certificate (`server.tls.mode: self`).
            .danger_accept_invalid_certs(true)
            .build()
            .expect("a reqwest client with a crypto provider installed");
        Self {
            inner: Arc::new(Inner {
                settings,
                pacer_url: RwLock::new(None),
                http,
                live: Mutex::new(HashMap::new()),
                counters: Counters::default(),
                calls: CallCounts::default(),
            }),
        }
    }

    /// Tells the fleet where pacer's server listens (known only once it has
    /// bound). Simulated runners call that address, and send their GitHub
    /// webhooks to it; until it is set they use the user data's `PACER_URL`.
    pub fn set_pacer_url(&self, url: impl Into<String>) {
        let url = url.into().trim_end_matches('/').to_string();
        *self
            .inner
            .pacer_url
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(url);
    }

    /// The fleet calls made so far (see [`crate::calls`]).
    pub fn calls(&self) -> Calls {
        self.inner.calls.snapshot()
    }

    pub fn counters(&self) -> SimulatedCounters {
        let c = &self.inner.counters;
        SimulatedCounters {
            launched: c.launched.load(Ordering::Relaxed),
            live: self.inner.lock_live().len() as u64,
            peak_live: c.peak_live.load(Ordering::Relaxed),
            registered: c.registered.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            launch_failures: c.launch_failures.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        // A panic elsewhere must not take the whole fleet down with it.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn base_url(&self, from_user_data: &str) -> String {
        self.pacer_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| from_user_data.trim_end_matches('/').to_string())
    }

    fn set_state(&self, instance_id: &str, state: &str) {
        if let Some(live) = self.lock_live().get_mut(instance_id) {
            live.instance.state = state.to_string();
        }
    }

    /// The instance "terminates": it leaves the table (once).
    fn remove(&self, instance_id: &str) -> Option<Live> {
        self.lock_live().remove(instance_id)
    }
}

#[async_trait]
impl Fleet for SimulatedFleet {
    async fn prepare_pool(&self, _pool: &Pool) -> FleetResult<Option<String>> {
        self.inner.calls.count(Call::Fleet);
        Ok(None)
    }

    async fn forget_pool(&self, _pool: &Pool) -> FleetResult<()> {
        self.inner.calls.count(Call::Fleet);
        Ok(())
    }

    async fn launch(&self, req: &LaunchRequest) -> FleetResult<Launched> {
        self.inner.calls.count(Call::Fleet);
        let inner = &self.inner;
        let instance_id = format!("i-sim{:013x}", rand::random::<u64>() >> 12);
        let launched = Launched {
            instance_id: instance_id.clone(),
            instance_type: req
                .pool
                .spec
                .instance_types
                .first()
                .cloned()
                .unwrap_or_else(|| "sim.large".into()),
            availability_zone: Some(SIMULATED_ZONE.into()),
            market: match req.pool.spec.market {
                Market::OnDemand => "on-demand",
                Market::Spot | Market::SpotFallback => "spot",
            }
            .into(),
        };
        {
            let mut live = inner.lock_live();
            // A runner is one instance: a repeated launch finds it.
            if let Some(existing) = live
                .values()
                .find(|l| l.instance.runner_id.as_deref() == Some(req.runner_id.as_str()))
            {
                return Ok(existing.launched.clone());
            }
            let n = inner.counters.launch_calls.fetch_add(1, Ordering::Relaxed) + 1;
            if injected_failure(n, inner.settings.launch_failure_rate) {
                inner
                    .counters
                    .launch_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(runner_id = %req.runner_id, launch = n, "simulated launch refused (injected fault)");
                return Err(FleetError::NoCapacity(format!(
                    "simulated InsufficientInstanceCapacity (injected fault on launch {n})"
                )));
            }
            live.insert(
                instance_id.clone(),
                Live {
                    instance: Instance {
                        instance_id: instance_id.clone(),
                        state: "pending".into(),
                        runner_id: Some(req.runner_id.clone()),
                        pool_id: Some(req.pool.id.clone()),
                        launched_at: Some(chrono::Utc::now()),
                    },
                    launched: launched.clone(),
                    task: None,
                },
            );
            inner.counters.launched.fetch_add(1, Ordering::Relaxed);
            inner
                .counters
                .peak_live
                .fetch_max(live.len() as u64, Ordering::Relaxed);
        }
        let task = tokio::spawn(play(Arc::clone(inner), instance_id.clone(), req.clone()));
        if let Some(live) = inner.lock_live().get_mut(&instance_id) {
            live.task = Some(task.abort_handle());
        }
        tracing::info!(%instance_id, runner_id = %req.runner_id, "simulated instance launched");
        Ok(launched)
    }

    async fn instance_for_runner(&self, runner_id: &str) -> FleetResult<Option<Instance>> {
        self.inner.calls.count(Call::Fleet);
        let live = self.inner.lock_live();
        Ok(live
            .values()
            .find(|l| l.instance.runner_id.as_deref() == Some(runner_id))
            .map(|l| l.instance.clone()))
    }

    async fn list_instances(&self) -> FleetResult<Vec<Instance>> {
        self.inner.calls.count(Call::Fleet);
        let mut all: Vec<Instance> = self
            .inner
            .lock_live()
            .values()
            .map(|l| l.instance.clone())
            .collect();
        all.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(all)
    }

    async fn terminate(&self, instance_id: &str) -> FleetResult<()> {
        self.inner.calls.count(Call::Fleet);
        if let Some(Live {
            task: Some(task), ..
        }) = self.inner.remove(instance_id)
        {
            task.abort();
            tracing::info!(%instance_id, "simulated instance terminated");
        }
        Ok(())
    }
}

/// One simulated instance's life, from boot to termination.
async fn play(inner: Arc<Inner>, instance_id: String, req: LaunchRequest) {
    tokio::time::sleep(inner.settings.boot_delay).await;
    inner.set_state(&instance_id, "running");
    let mut runner = SimulatedRunner {
        inner: &inner,
        req: &req,
        log: Vec::new(),
    };
    match runner.bootstrap().await {
        Ok(()) => {
            inner.counters.completed.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(%instance_id, runner_id = %req.runner_id, error = format!("{e:#}"), "simulated bootstrap failed");
            inner.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    inner.set_state(&instance_id, "shutting-down");
    inner.remove(&instance_id);
}

#[derive(Deserialize)]
struct Registration {
    encoded_jit_config: String,
    runner_name: String,
}

/// The bootstrap script's part, played in-process.
struct SimulatedRunner<'a> {
    inner: &'a Inner,
    req: &'a LaunchRequest,
    /// What the script would have logged; never holds a secret.
    log: Vec<String>,
}

impl SimulatedRunner<'_> {
    fn note(&mut self, line: impl Into<String>) {
        self.log.push(line.into());
    }

    async fn bootstrap(&mut self) -> anyhow::Result<()> {
        let settings = user_data::parse(&self.req.user_data()).context("reading the user data")?;
        let base = self.inner.base_url(&settings.url);
        self.note(format!("bootstrapping against {base}"));
        let n = self
            .inner
            .counters
            .bootstraps
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if injected_failure(n, self.inner.settings.bootstrap_failure_rate) {
            // What a broken image or a blocked download looks like from the
            // script: it stops before registering and sends its log tail.
            self.note("downloading the actions/runner release");
            self.note(
                "FAILED: simulated bootstrap failure (fleet.simulated.bootstrap_failure_percent)",
            );
            self.report_error(&base, &settings.token).await;
            bail!("simulated bootstrap failure");
        }
        let registration = match self.register(&base, &settings.token).await {
            Ok(r) => r,
            Err(e) => {
                self.note(format!("FAILED: {e:#}"));
                self.report_error(&base, &settings.token).await;
                return Err(e);
            }
        };
        self.inner
            .counters
            .registered
            .fetch_add(1, Ordering::Relaxed);
        self.note(format!("registered as runner {}", registration.runner_name));

        let (req, sim) = (self.req, &self.inner.settings);
        let github = sim.github.as_deref();
        let runner_id = github.and_then(|g| g.runner_id(&registration.encoded_jit_config));
        match (github, runner_id, &req.job) {
            (Some(github), Some(id), Some(job)) => {
                let runner = RunnerIdentity {
                    id,
                    name: registration.runner_name.clone(),
                };
                tokio::time::sleep(sim.pickup_delay).await;
                self.send_job_webhook(&base, github, job, &runner, "in_progress")
                    .await;
                tokio::time::sleep(sim.job_time).await;
                self.send_job_webhook(&base, github, job, &runner, "completed")
                    .await;
            }
            (Some(_), None, _) => {
                // A real JIT config: a real runner would take a job from
                // GitHub now. The simulation can only pass the time.
                tracing::warn!(runner = %registration.runner_name, "simulated runner got a real GitHub JIT config; it cannot run jobs");
                tokio::time::sleep(sim.job_time).await;
            }
            _ => tokio::time::sleep(sim.job_time).await,
        }
        self.note("the runner finished");
        self.post_with_retries(
            &base,
            "/api/runner/complete",
            &settings.token,
            &json!({}),
            3,
        )
        .await?;
        Ok(())
    }

    async fn register(&mut self, base: &str, token: &Secret) -> anyhow::Result<Registration> {
        let body = json!({"os": "linux", "arch": "x64"});
        let answer = self
            .post_with_retries(
                base,
                "/api/runner/register",
                token,
                &body,
                self.inner.settings.register_tries,
            )
            .await?;
        serde_json::from_slice(&answer)
            .context("register answered without encoded_jit_config and runner_name")
    }

    /// POSTs a callback, retrying (like the script) when pacer does not
    /// answer or answers 429/5xx; any other refusal is final.
    async fn post_with_retries(
        &mut self,
        base: &str,
        path: &str,
        token: &Secret,
        body: &Value,
        tries: u32,
    ) -> anyhow::Result<Vec<u8>> {
        let mut attempt = 1;
        loop {
            let sent = self
                .inner
                .http
                .post(format!("{base}{path}"))
                .bearer_auth(token.expose())
                .json(body)
                .send()
                .await;
            let status = match sent {
                Ok(resp) if resp.status().is_success() => return Ok(resp.bytes().await?.to_vec()),
                Ok(resp) => {
                    let status = resp.status();
                    if !(status.is_server_error() || status.as_u16() == 429) {
                        bail!("{path}: pacer refused with HTTP {status}");
                    }
                    status.to_string()
                }
                Err(e) => format!("no answer ({e})"),
            };
            self.note(format!("{path}: attempt {attempt} of {tries} got {status}"));
            if attempt >= tries {
                bail!("{path}: gave up after {attempt} attempts ({status})");
            }
            attempt += 1;
            tokio::time::sleep(self.inner.settings.retry_delay).await;
        }
    }

    async fn report_error(&mut self, base: &str, token: &Secret) {
        let mut tail = self.log.join("\n");
        if tail.len() > 4096 {
            let cut = tail.len() - 4096;
            let cut = (cut..tail.len())
                .find(|i| tail.is_char_boundary(*i))
                .unwrap_or(tail.len());
            tail = tail.split_off(cut);
        }
        if let Err(e) = self
            .post_with_retries(
                base,
                "/api/runner/error",
                token,
                &json!({"log_tail": tail}),
                2,
            )
            .await
        {
            tracing::warn!(
                error = format!("{e:#}"),
                "simulated runner could not report its failure"
            );
        }
    }

    /// The `workflow_job` delivery GitHub would send, as GitHub's stand-in
    /// makes it.
    async fn send_job_webhook(
        &mut self,
        base: &str,
        github: &dyn GitHubPart,
        job: &JobRef,
        runner: &RunnerIdentity,
        action: &str,
    ) {
        let delivery = github.job_delivery(job, runner, action, chrono::Utc::now());
        let mut request = self
            .inner
            .http
            .post(format!("{base}/api/webhook"))
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/pacer-simulated");
        for (name, value) in delivery.headers {
            request = request.header(name, value);
        }
        let sent = request.body(delivery.body).send().await;
        match sent {
            Ok(resp) if resp.status().is_success() => {
                self.note(format!("GitHub: job {} {action}", job.github_job_id))
            }
            Ok(resp) => {
                tracing::warn!(status = %resp.status(), action, "pacer refused a simulated webhook")
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_text::display_chain(&e), action, "could not deliver a simulated webhook")
            }
        }
    }
}

/// The runner as GitHub knows it.
#[derive(Debug, Clone)]
pub struct RunnerIdentity {
    pub id: i64,
    pub name: String,
}

#[cfg(test)]
mod tests;
