//! What many black-box tests share: a pacer wired in process on the
//! embedded adapters (SQLite in a temporary directory, memory queue,
//! simulated fleet, offline GitHub).

use std::sync::Arc;
use std::time::Duration;

use pacer_shared::clock::SystemClock;
use pacer_shared::config::Secret;
use pacer_shared::fleet::simulated::{SimulatedFleet, SimulatedSettings};
use pacer_shared::github::offline::OfflineGitHub;
use pacer_shared::queue::memory::MemoryQueue;
use pacer_shared::service::{Ports, Settings};
use pacer_shared::store::sqlite::SqliteStore;

pub const WEBHOOK_SECRET: &str = "test-webhook-secret-0123456789abcdef";
pub const CALLBACK_SECRET: &str = "test-callback-secret-0123456789abcdef";

pub fn settings(callback_url: &str) -> Settings {
    Settings {
        deployment: "pacer".into(),
        callback_url: callback_url.into(),
        callback_secret: Secret::new(CALLBACK_SECRET),
        webhook_secrets: vec![Secret::new(WEBHOOK_SECRET)],
        max_attempts: 3,
        redrive_after: Duration::from_secs(300),
        orphan_grace: Duration::from_secs(600),
        degraded_cooldown: Duration::from_secs(600),
        ebs_micro_usd_per_gb_month: 80_000,
        self_service: Default::default(),
        budgets: Vec::new(),
    }
}

/// Ports on the embedded adapters; the simulated fleet boots instantly and
/// is returned so a test can point it at a served pacer.
pub fn local_ports(dir: &std::path::Path) -> (Ports, Arc<SimulatedFleet>) {
    let store = SqliteStore::open(&dir.join("pacer.db")).expect("sqlite");
    let fleet = Arc::new(SimulatedFleet::new(SimulatedSettings {
        boot_delay: Duration::from_millis(10),
        job_time: Duration::from_millis(50),
        deployment: "pacer".into(),
        github: Some(std::sync::Arc::new(
            pacer_shared::host::simulation::OfflineGitHubPart::new(Secret::new(WEBHOOK_SECRET)),
        )),
        pickup_delay: Duration::from_millis(10),
        register_tries: 5,
        retry_delay: Duration::from_millis(50),
        launch_failure_rate: 0.0,
        bootstrap_failure_rate: 0.0,
    }));
    let ports = Ports {
        store: Arc::new(store),
        clock: Arc::new(SystemClock),
        ids: Arc::new(pacer_shared::domain::Ulids::default()),
        queue: Arc::new(MemoryQueue::new(Duration::from_secs(300))),
        fleet: fleet.clone(),
        github: Arc::new(OfflineGitHub::new("2.330.0")),
        pricing: Arc::new(pacer_shared::pricing::NoPricing),
        settings: Arc::new(settings("http://127.0.0.1:9")),
        catalog: Default::default(),
    };
    (ports, fleet)
}

/// A `queued` workflow_job delivery for `repo`, shaped like GitHub's.
/// Project `acme` with pool `linux` of `max_runners` (label `linux`), bound
/// to `acme/app`, written to `store` directly: what the console's admin
/// would have made.
pub async fn seed_acme(
    store: &dyn pacer_shared::store::Store,
    max_runners: u32,
    at: pacer_shared::domain::Time,
) -> (pacer_shared::domain::Project, pacer_shared::domain::Pool) {
    use pacer_shared::store::conformance;
    let project = conformance::project("acme", at);
    store.create_project(&project).await.unwrap();
    let pool = conformance::pool(&project.id, "linux", max_runners, at);
    store.create_pool(&pool).await.unwrap();
    store
        .create_binding(&conformance::binding("acme/app", &project.id, at))
        .await
        .unwrap();
    (project, pool)
}

/// A signed `queued` delivery for `repo` and `labels`, as GitHub sends it,
/// taken in by `ports`: what pacer made of it.
pub async fn deliver_queued(
    ports: &Ports,
    github_job_id: i64,
    repo: &str,
    labels: &[&str],
) -> pacer_shared::service::webhook::Outcome {
    let body = serde_json::to_vec(&queued_payload(github_job_id, repo, labels)).unwrap();
    let signature = pacer_shared::github::webhook::sign(WEBHOOK_SECRET.as_bytes(), &body);
    pacer_shared::http::webhook::accept(ports, None, "workflow_job", Some(&signature), &body)
        .await
        .unwrap()
}

pub fn queued_payload(github_job_id: i64, repo: &str, labels: &[&str]) -> serde_json::Value {
    let repo = pacer_shared::domain::RepoName::parse(repo).unwrap();
    let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    pacer_shared::github::webhook::sample_queued_payload(github_job_id, &repo, &labels, 77)
}

/// How a served pacer authenticates its callers (none of it by default).
#[derive(Default)]
pub struct Edge {
    pub auth: Option<pacer_shared::service::auth::AuthSettings>,
    pub sso: Option<pacer_shared::auth::oidc::Sso>,
    pub workload: Option<pacer_shared::auth::workload::WorkloadVerifier>,
}

/// pacer served in process on a free loopback port, with its orchestrator
/// and the instantly-booting simulated fleet; stopped on drop.
pub struct LocalPacer {
    pub base: String,
    pub ports: Ports,
    pub fleet: Arc<SimulatedFleet>,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl LocalPacer {
    pub async fn start() -> LocalPacer {
        let dir = tempfile::tempdir().unwrap();
        let (ports, fleet) = local_ports(dir.path());
        Self::serve(ports, fleet, dir).await
    }

    /// Serves `ports` (their settings get this server's URL); `fleet` is
    /// told where pacer listens (pass the simulated one even when `ports`
    /// use another fleet: it is then simply unused).
    pub async fn serve(
        ports: Ports,
        fleet: Arc<SimulatedFleet>,
        dir: tempfile::TempDir,
    ) -> LocalPacer {
        Self::serve_with_auth(ports, fleet, dir, None).await
    }

    /// Like [`LocalPacer::serve`], with console auth on.
    pub async fn serve_with_auth(
        ports: Ports,
        fleet: Arc<SimulatedFleet>,
        dir: tempfile::TempDir,
        auth: Option<pacer_shared::service::auth::AuthSettings>,
    ) -> LocalPacer {
        Self::serve_on(crate::process::free_port(), ports, fleet, dir, auth, None).await
    }

    /// Serves on a port chosen beforehand (SSO needs its redirect URL first).
    pub async fn serve_on(
        port: u16,
        ports: Ports,
        fleet: Arc<SimulatedFleet>,
        dir: tempfile::TempDir,
        auth: Option<pacer_shared::service::auth::AuthSettings>,
        sso: Option<pacer_shared::auth::oidc::Sso>,
    ) -> LocalPacer {
        let edge = Edge {
            auth,
            sso,
            workload: None,
        };
        Self::serve_edge(port, ports, fleet, dir, edge).await
    }

    /// Serves with the edge's authentication as given.
    pub async fn serve_edge(
        port: u16,
        mut ports: Ports,
        fleet: Arc<SimulatedFleet>,
        dir: tempfile::TempDir,
        edge: Edge,
    ) -> LocalPacer {
        pacer_shared::http_client::install_crypto_provider();
        let base = format!("http://127.0.0.1:{port}");
        let mut with_url = (*ports.settings).clone();
        with_url.callback_url = base.clone();
        ports.settings = Arc::new(with_url);
        fleet.set_pacer_url(base.clone());
        let state = pacer_shared::http::AppState {
            ports: ports.clone(),
            trusted_proxies: Arc::new(vec![]),
            auth: edge.auth.map(Arc::new),
            sso: edge.sso.map(Arc::new),
            console: None,
            workload: edge.workload.map(Arc::new),
        };
        let cfg = pacer_shared::config::ServerConfig {
            addr: format!("127.0.0.1:{port}"),
            ..Default::default()
        };
        let server = pacer_shared::server::Server::bind(pacer_shared::http::app(state), &cfg)
            .await
            .expect("bind");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (worker_stop, worker_stopped) = tokio::sync::oneshot::channel::<()>();
        let worker_ports = ports.clone();
        tokio::spawn(async move {
            let worker = tokio::spawn(pacer_shared::host::local::run_worker(
                worker_ports,
                16,
                async {
                    let _ = worker_stopped.await;
                },
            ));
            let _ = server
                .run(async {
                    let _ = stopped.await;
                })
                .await;
            let _ = worker_stop.send(());
            let _ = worker.await;
        });
        LocalPacer {
            base,
            ports,
            fleet,
            http: reqwest::Client::new(),
            stop: Some(stop),
            _dir: dir,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Sends a `workflow_job` delivery signed with the webhook secret.
    pub async fn webhook(&self, event: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        let signature = pacer_shared::github::webhook::sign(WEBHOOK_SECRET.as_bytes(), &bytes);
        let res = self
            .http
            .post(format!("{}/api/webhook", self.base))
            .header("x-github-event", event)
            .header("x-github-delivery", "test-delivery")
            .header("x-hub-signature-256", signature)
            .header("content-type", "application/json")
            .body(bytes)
            .send()
            .await
            .unwrap();
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// The status line pacer answers a JSON POST to `path` declaring a body
    /// of `length` bytes, of which a raw client sends only the first 64 KiB:
    /// pacer answers a body over its limit from the declared length, and a
    /// client still writing megabytes would see its pipe close instead.
    pub async fn status_for_declared_length(
        &self,
        path: &str,
        length: usize,
        headers: &[(&str, &str)],
    ) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://").to_string();
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\n{extra}content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream
            .write_all(&vec![b' '; length.min(64 * 1024)])
            .await
            .unwrap();
        let mut answer = vec![0u8; 64];
        let n = stream.read(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    }

    /// A project `acme` bound to `acme/app`, with one pool of `max_runners`.
    pub async fn seed(&self, max_runners: u32) -> (String, String) {
        let (_, project) = self
            .post("/api/projects", serde_json::json!({"name": "acme"}))
            .await;
        let project = project["id"].as_str().unwrap().to_string();
        let mut pool = crate::api_crud::pool_body(&project, "linux");
        pool["max_runners"] = max_runners.into();
        let (s, pool) = self.post("/api/pools", pool).await;
        assert_eq!(s, 201, "{pool}");
        let (s, _) = self
            .post(
                "/api/repos",
                serde_json::json!({"repo": "acme/app", "project_id": project}),
            )
            .await;
        assert_eq!(s, 201);
        (project, pool["id"].as_str().unwrap().to_string())
    }

    /// Polls `GET path` until `done` holds (bounded: 20 s).
    pub async fn wait_for(
        &self,
        path: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        for _ in 0..800 {
            let (_, body) = self.get(path).await;
            if done(&body) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let (_, body) = self.get(path).await;
        panic!("{path} never reached the expected state: {body}");
    }
}

impl Drop for LocalPacer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
