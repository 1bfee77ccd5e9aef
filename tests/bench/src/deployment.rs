//! pacer as `pacer serve` runs it on its embedded default — SQLite (WAL,
//! `synchronous=NORMAL`) in a temporary directory, the in-process queue,
//! the simulated fleet, the offline GitHub — with the concrete adapters kept
//! at hand so the bench can read their call counters.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pacer_shared::calls::Calls;
use pacer_shared::clock::SystemClock;
use pacer_shared::config::{Secret, ServerConfig};
use pacer_shared::domain::Pool;
use pacer_shared::fleet::Fleet;
use pacer_shared::fleet::simulated::{SimulatedFleet, SimulatedSettings};
use pacer_shared::github::offline::OfflineGitHub;
use pacer_shared::host::local::run_worker;
use pacer_shared::http::AppState;
use pacer_shared::queue::Queue;
use pacer_shared::queue::memory::MemoryQueue;
use pacer_shared::service::{Caller, Ports, Settings, config_objects};
use pacer_shared::store::Store;
use pacer_shared::store::sqlite::SqliteStore;
use serde_json::{Map, Value, json};

pub const WEBHOOK_SECRET: &str = "bench-webhook-secret-0123456789abcdef";
const CALLBACK_SECRET: &str = "bench-callback-secret-0123456789abcdef";
const RUNNER_VERSION: &str = "2.330.0";
/// The repository the bench's project serves.
pub const REPO: &str = "acme/app";
/// One pool per architecture; a job asks for one of them.
pub const ARCHES: [&str; 3] = ["x64", "arm64", "riscv"];
/// Dispatches the local orchestrator runs at once (as `pacer serve`).
const WORKER_CONCURRENCY: usize = 16;

/// A simulated fleet that boots, runs and finishes at once: every figure
/// measured on it is pacer's own time.
pub fn instant_fleet() -> SimulatedSettings {
    SimulatedSettings {
        boot_delay: Duration::ZERO,
        job_time: Duration::ZERO,
        deployment: "pacer".into(),
        github: Some(std::sync::Arc::new(
            pacer_shared::host::simulation::OfflineGitHubPart::new(Secret::new(WEBHOOK_SECRET)),
        )),
        pickup_delay: Duration::ZERO,
        register_tries: 5,
        retry_delay: Duration::from_millis(50),
        launch_failure_rate: 0.0,
        bootstrap_failure_rate: 0.0,
    }
}

/// pacer's ports on `store` and `queue`, with the bench's settings, the
/// offline GitHub and no pricing.
pub fn ports(
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    fleet: Arc<dyn Fleet>,
    github: Arc<OfflineGitHub>,
) -> Ports {
    Ports {
        store,
        clock: Arc::new(SystemClock),
        ids: Arc::new(pacer_shared::domain::Ulids::default()),
        queue,
        fleet,
        github,
        pricing: Arc::new(pacer_shared::pricing::NoPricing),
        settings: Arc::new(Settings {
            deployment: "pacer".into(),
            callback_url: "http://127.0.0.1:9".into(),
            callback_secret: Secret::new(CALLBACK_SECRET),
            webhook_secrets: vec![Secret::new(WEBHOOK_SECRET)],
            max_attempts: 3,
            redrive_after: Duration::from_secs(300),
            orphan_grace: Duration::from_secs(600),
            degraded_cooldown: Duration::from_secs(600),
            ebs_micro_usd_per_gb_month: 80_000,
            self_service: Default::default(),
            budgets: Vec::new(),
        }),
        // As `database.config_cache_ttl` ships.
        catalog: Arc::new(pacer_shared::service::catalog::Catalog::new(
            Duration::from_secs(10),
        )),
    }
}

/// Where the seeded pools launch: what a pool names of EC2.
pub struct Place {
    pub instance_type: String,
    pub subnet: String,
    pub security_group: String,
    pub ami: String,
}

impl Place {
    /// Ids in EC2's shapes, for fleets that never ask EC2 about them.
    pub fn simulated() -> Place {
        Place {
            instance_type: "m7g.large".into(),
            subnet: "subnet-0abc1234".into(),
            security_group: "sg-0abc1234".into(),
            ami: "ami-0123456789abcdef0".into(),
        }
    }
}

/// What the console's admin would create, through the same use cases:
/// project `acme` bound to [`REPO`] and one pool of `max_runners` per
/// architecture. Returns the pools in [`ARCHES`] order.
pub async fn seed(ports: &Ports, max_runners: u32) -> anyhow::Result<Vec<Pool>> {
    seed_at(ports, max_runners, &Place::simulated()).await
}

/// [`seed`], with the pools launching at `place`.
pub async fn seed_at(ports: &Ports, max_runners: u32, place: &Place) -> anyhow::Result<Vec<Pool>> {
    let admin = Caller::system("bench");
    let object = |v: Value| -> Map<String, Value> { v.as_object().cloned().expect("an object") };
    let project = config_objects::create_project(ports, &admin, object(json!({"name": "acme"})))
        .await
        .map_err(|e| anyhow::anyhow!("creating the project: {e}"))?;
    let mut pools = Vec::new();
    for arch in ARCHES {
        let body = json!({
            "project_id": project.id, "name": format!("linux-{arch}"), "labels": ["linux", arch],
            "instance_types": [place.instance_type], "subnets": [place.subnet],
            "security_groups": [place.security_group], "ami": place.ami,
            "market": "on-demand", "max_runners": max_runners,
        });
        let pool = config_objects::create_pool(ports, &admin, object(body))
            .await
            .map_err(|e| anyhow::anyhow!("creating pool linux-{arch}: {e}"))?;
        pools.push(pool);
    }
    config_objects::create_binding(
        ports,
        &admin,
        object(json!({"repo": REPO, "project_id": project.id})),
    )
    .await
    .map_err(|e| anyhow::anyhow!("binding {REPO}: {e}"))?;
    Ok(pools)
}

pub struct Deployment {
    pub ports: Ports,
    pub store: Arc<SqliteStore>,
    pub queue: Arc<MemoryQueue>,
    pub fleet: Arc<SimulatedFleet>,
    pub github: Arc<OfflineGitHub>,
    /// The pools by architecture.
    pub pools: Vec<Pool>,
    _dir: tempfile::TempDir,
}

impl Deployment {
    /// The embedded adapters on a fresh database, [`seed`]ed.
    pub async fn embedded(fleet: SimulatedSettings, max_runners: u32) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("a temporary directory for the database")?;
        let store = Arc::new(SqliteStore::open(&dir.path().join("pacer.db"))?);
        let queue = Arc::new(MemoryQueue::new(Duration::from_secs(300)));
        let fleet = Arc::new(SimulatedFleet::new(fleet));
        let github = Arc::new(OfflineGitHub::new(RUNNER_VERSION));
        let ports = ports(store.clone(), queue.clone(), fleet.clone(), github.clone());
        let pools = seed(&ports, max_runners).await?;
        Ok(Self {
            ports,
            store,
            queue,
            fleet,
            github,
            pools,
            _dir: dir,
        })
    }

    /// The labels a job for pool `n` (of [`ARCHES`]) asks for.
    pub fn labels(n: usize) -> [&'static str; 3] {
        ["self-hosted", "linux", ARCHES[n % ARCHES.len()]]
    }

    /// Every call the adapters have made so far.
    pub fn calls(&self) -> Calls {
        self.store.calls() + self.queue.calls() + self.fleet.calls() + self.github.calls()
    }

    /// The handlers' state, as `pacer serve` builds it (console auth and
    /// files are not on the webhook's path).
    pub fn app_state(&self) -> AppState {
        AppState {
            ports: self.ports.clone(),
            trusted_proxies: Arc::new(vec![]),
            auth: None,
            sso: None,
            console: None,
            workload: None,
        }
    }

    /// Serves `app()` on a free loopback port with the local orchestrator
    /// beside it, and points the simulated fleet at it.
    pub async fn serve(&self) -> anyhow::Result<Served> {
        pacer_shared::http_client::install_crypto_provider();
        let cfg = ServerConfig {
            addr: "127.0.0.1:0".into(),
            ..Default::default()
        };
        let server =
            pacer_shared::server::Server::bind(pacer_shared::http::app(self.app_state()), &cfg)
                .await?;
        // The simulated instances call this address, whatever the user data's URL says.
        let base = server.url();
        self.fleet.set_pacer_url(base.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let ports = self.ports.clone();
        let task = tokio::spawn(async move {
            let (worker_stop, worker_stopped) = tokio::sync::oneshot::channel::<()>();
            let worker = tokio::spawn(run_worker(ports, WORKER_CONCURRENCY, async {
                let _ = worker_stopped.await;
            }));
            let served = server
                .with_grace_period(Duration::from_secs(5))
                .run(async {
                    let _ = stopped.await;
                })
                .await;
            let _ = worker_stop.send(());
            let _ = worker.await;
            served
        });
        Ok(Served {
            base,
            stop: Some(stop),
            task,
        })
    }
}

/// A served deployment; [`Served::stop`] ends server and orchestrator.
pub struct Served {
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Served {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.context("the server task")?
    }
}
