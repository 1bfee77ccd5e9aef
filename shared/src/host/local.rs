//! The single local process, `pacer`: `serve` (the routers, the orchestrator
//! and the reaper in one process) and the admin commands. The binary's `main`
//! parses the command line and calls one function here.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;

use super::{Booted, boot};
use crate::config::{Config, generate_local_config};
use crate::domain::self_service::SelfRunnerStatus;
use crate::domain::{AuditEvent, Time};
use crate::http::console::ConsoleFiles;
use crate::http::{AppState, app, version};
use crate::queue::Queue;
use crate::service::{Ports, dispatch, reaper, self_service};
use crate::store::{AuditFilter, Pages, SelfRunnerFilter};
use crate::{runtime, server};

/// Runs one command on a new multi-threaded runtime; an error becomes one
/// line on stderr and a failing exit code.
pub fn block_on(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    // Without a runtime the process can do nothing at all: stopping at once
    // is all there is to do, at start, before any outside input is read.
    #[allow(clippy::expect_used)]
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, so a bad config reads as one sentence naming the key.
            eprintln!("pacer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `pacer serve`: the console (its files from `console`), the API, the
/// webhook and runner callbacks on `server.addr`, with the orchestrator and
/// the reaper beside them, until SIGTERM or Ctrl-C.
pub async fn serve(
    config_path: Option<PathBuf>,
    init: bool,
    console: Arc<dyn ConsoleFiles>,
) -> anyhow::Result<()> {
    if let (true, Some(path)) = (init, &config_path) {
        if !path.exists() {
            write_local_config(path)?;
        }
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let cfg = Config::load(config_path.as_deref(), &env)?;
    let _log_guard = runtime::init_logging(&cfg.logging)?;
    for warning in cfg.warnings() {
        tracing::warn!("{warning}");
    }
    for note in &cfg.notes {
        tracing::info!("{note}");
    }
    tracing::info!(version = %version(), "pacer starting");

    let Booted {
        cfg,
        ports,
        simulated,
        ..
    } = boot(cfg).await?;
    if !cfg.auth.disabled && cfg.auth.local.enabled {
        if let Some(password) =
            crate::service::auth::bootstrap(&ports, &cfg.auth.local.email).await?
        {
            print_bootstrap_banner(&cfg.auth.local.email, &password);
        }
    }
    if let Some(fleet) = &simulated {
        fleet.set_pacer_url(ports.settings.callback_url.clone());
    }
    let state = AppState {
        ports: ports.clone(),
        trusted_proxies: Arc::new(cfg.server.trusted_proxies.clone()),
        auth: runtime::auth_settings(&cfg).await?,
        sso: runtime::sso(&cfg).await?,
        console: Some(console),
        workload: runtime::workload_verifier(&cfg)?,
    };
    let server = server::Server::bind(app(state), &cfg.server).await?;

    // The orchestrator and the reaper run beside the server and stop after
    // it: requests drain first, then in-flight work settles.
    let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let worker = tokio::spawn(run_worker(
        ports.clone(),
        16,
        stopped(workers_stopped.clone()),
    ));
    let reaper = tokio::spawn(run_timer(
        ports,
        cfg.reaper.interval,
        stopped(workers_stopped),
    ));
    server.run(shutdown_signal()).await?;
    let _ = stop_workers.send(true);
    let _ = tokio::join!(worker, reaper);
    tracing::info!("pacer stopped");
    Ok(())
}

/// The store of the configured deployment, for the admin commands.
async fn admin_ports(config: Option<PathBuf>) -> anyhow::Result<(Config, Ports)> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let cfg = Config::load(config.as_deref(), &env)?;
    let Booted { cfg, ports, .. } = boot(cfg).await?;
    Ok((cfg, ports))
}

/// `pacer admin bootstrap`.
pub async fn admin_bootstrap(config: Option<PathBuf>) -> anyhow::Result<()> {
    let (cfg, ports) = admin_ports(config).await?;
    match crate::service::auth::bootstrap(&ports, &cfg.auth.local.email).await? {
        Some(password) => print_bootstrap_banner(&cfg.auth.local.email, &password),
        None => println!(
            "there are users already: nothing to bootstrap (use `pacer admin reset-password EMAIL`)"
        ),
    }
    Ok(())
}

/// `pacer admin reset-password`.
pub async fn admin_reset_password(config: Option<PathBuf>, email: String) -> anyhow::Result<()> {
    let (_, ports) = admin_ports(config).await?;
    let password = crate::service::auth::reset_password(&ports, &email)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("new password for {email}: {password}\n(shown this once)");
    Ok(())
}

/// `pacer admin set-role`.
pub async fn admin_set_role(
    config: Option<PathBuf>,
    email: String,
    role: String,
) -> anyhow::Result<()> {
    let role = match role.as_str() {
        "admin" => crate::domain::Role::Admin,
        "viewer" => crate::domain::Role::Viewer,
        other => anyhow::bail!("role {other:?} is not admin or viewer"),
    };
    let (_, ports) = admin_ports(config).await?;
    let user = crate::service::auth::set_role_by_email(&ports, &email, role)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{} is now {:?}", user.email, user.role);
    Ok(())
}

/// `pacer admin list-runners`: the self-service runners, newest first.
pub async fn admin_list_runners(
    config: Option<PathBuf>,
    owner: Option<String>,
    state: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let status = state
        .map(|s| {
            SelfRunnerStatus::parse(&s).ok_or_else(|| {
                anyhow::anyhow!("--state {s:?} is not one of pending, active, offline, deleted")
            })
        })
        .transpose()?;
    let (_, ports) = admin_ports(config).await?;
    let filter = SelfRunnerFilter { owner, status };
    let runners = self_service::every_runner(&ports, &filter)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if json {
        for runner in &runners {
            println!("{}", serde_json::to_string(runner)?);
        }
        return Ok(());
    }
    println!(
        "{:<32} {:<8} {:<20} {:<24} OWNER",
        "NAME", "STATUS", "CREATED", "LABELS"
    );
    for r in &runners {
        println!(
            "{:<32} {:<8} {:<20} {:<24} {}",
            r.name,
            r.status.as_str(),
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            r.labels.join(","),
            r.owner
        );
    }
    eprintln!("{} runner(s)", runners.len());
    Ok(())
}

/// `pacer admin sync-github`: each self-service runner's status from GitHub.
pub async fn admin_sync_github(config: Option<PathBuf>, dry_run: bool) -> anyhow::Result<()> {
    let (_, ports) = admin_ports(config).await?;
    let changes = self_service::sync_all(&ports, dry_run)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let verb = if dry_run { "would move" } else { "moved" };
    for c in &changes {
        println!(
            "{} {verb} {} -> {} ({})",
            c.runner,
            c.from.as_str(),
            c.to.as_str(),
            c.owner
        );
    }
    eprintln!(
        "{} change(s){}",
        changes.len(),
        if dry_run {
            ", none written (--dry-run)"
        } else {
            ""
        }
    );
    Ok(())
}

/// `pacer admin cleanup-stale-runners`: self-service runners that never came
/// online within `self_service.registration_timeout`, deregistered.
pub async fn admin_cleanup_stale_runners(
    config: Option<PathBuf>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let (_, ports) = admin_ports(config).await?;
    let stale = self_service::cleanup_stale(&ports, dry_run)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let verb = if dry_run { "would remove" } else { "removed" };
    for r in &stale {
        println!(
            "{verb} {} ({}, provisioned {})",
            r.name,
            r.owner,
            r.created_at.to_rfc3339()
        );
    }
    eprintln!(
        "{} stale runner(s){}",
        stale.len(),
        if dry_run {
            ", none removed (--dry-run)"
        } else {
            ""
        }
    );
    Ok(())
}

/// How `export-audit-log` writes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object a line.
    Jsonl,
    /// A header, then one row an event; `detail` as JSON text.
    Csv,
}

/// `pacer admin export-audit-log`: the audit log between two times, oldest
/// first, on stdout.
pub async fn admin_export_audit_log(
    config: Option<PathBuf>,
    since: Option<Time>,
    until: Option<Time>,
    format: ExportFormat,
) -> anyhow::Result<()> {
    let (_, ports) = admin_ports(config).await?;
    let filter = AuditFilter {
        from: since,
        to: until,
        ..Default::default()
    };
    let mut events: Vec<AuditEvent> = Vec::new();
    let mut pages = Pages::start();
    while let Some(page) = pages.next_request() {
        events.extend(pages.items(ports.store.list_audit(&filter, &page).await?));
    }
    events.reverse();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        ExportFormat::Jsonl => {
            for event in &events {
                serde_json::to_writer(&mut out, event)?;
                out.write_all(b"\n")?;
            }
        }
        ExportFormat::Csv => {
            let mut csv = csv::Writer::from_writer(&mut out);
            csv.write_record([
                "id",
                "at",
                "actor_kind",
                "actor",
                "client_ip",
                "action",
                "target",
                "detail",
            ])?;
            for e in &events {
                let kind = serde_json::to_value(e.actor.kind)?;
                csv.write_record([
                    e.id.as_str(),
                    &e.at.to_rfc3339(),
                    kind.as_str().unwrap_or_default(),
                    e.actor.id.as_str(),
                    e.client_ip.as_deref().unwrap_or_default(),
                    e.action.as_str(),
                    e.target.as_deref().unwrap_or_default(),
                    &e.detail.to_string(),
                ])?;
            }
            csv.flush()?;
        }
    }
    out.flush()?;
    eprintln!("{} event(s)", events.len());
    Ok(())
}

/// `pacer admin send-test-job`.
pub async fn send_test_job(
    config: Option<PathBuf>,
    repo: String,
    labels: Vec<String>,
    url: Option<String>,
) -> anyhow::Result<()> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let cfg = Config::load(config.as_deref(), &env)?;
    let secret = cfg
        .github
        .webhook_secret
        .as_ref()
        .context("github.webhook_secret is not set: pacer would refuse the webhook")?;
    let repo = crate::domain::RepoName::parse(&repo).map_err(|e| anyhow::anyhow!("--repo: {e}"))?;
    let base = url.unwrap_or_else(|| runtime::callback_url(&cfg));
    let github_job_id = i64::from(rand::random::<u32>()) + 1;
    let body = serde_json::to_vec(&crate::github::webhook::sample_queued_payload(
        github_job_id,
        &repo,
        &labels,
        1,
    ))?;
    let signature = crate::github::webhook::sign(secret.expose().as_bytes(), &body);
    // A client of a running pacer, which boots nothing of its own: its
    // TLS client needs the provider `boot` would have installed.
    let response = crate::http_client::builder()
        .build()?
        .post(format!("{base}/api/webhook"))
        .header("content-type", "application/json")
        .header("x-github-event", "workflow_job")
        .header(
            "x-github-delivery",
            format!("send-test-job-{github_job_id}"),
        )
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .with_context(|| format!("sending the webhook to {base}"))?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    match (
        status.as_u16(),
        answer.get("job_id").and_then(serde_json::Value::as_str),
    ) {
        (202, Some(job_id)) => {
            println!("job {job_id} accepted (GitHub job id {github_job_id}); watch it with:");
            println!("  curl -s {base}/api/jobs/{job_id}");
            Ok(())
        }
        (200, _) => anyhow::bail!(
            "pacer answered 200 without taking the job ({answer}): is {repo} bound to a project, and do the labels include self-hosted?"
        ),
        (code, _) => anyhow::bail!("pacer answered {code}: {answer}"),
    }
}

fn write_local_config(path: &Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let yaml = generate_local_config(dir);
    // Only the owner may read a file holding secrets.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, yaml.as_bytes())?;
    eprintln!(
        "pacer: wrote a local configuration with fresh secrets to {}",
        path.display()
    );
    Ok(())
}

/// The one place a secret is ever printed: straight to stderr, never
/// through `tracing`, so it never reaches structured logs.
fn print_bootstrap_banner(email: &str, password: &str) {
    let rule = "=".repeat(64);
    eprintln!(
        "{rule}\nPACER BOOTSTRAP: created the first admin, {email}\n  password: {password}\n  (shown this once; sign in and change it, or `pacer admin reset-password {email}`)\n{rule}"
    );
}

/// Resolves on SIGTERM or Ctrl-C: the server then drains in-flight requests.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}

/// The orchestrator of the local process: receives from the queue and
/// dispatches up to `concurrency` messages at once until `shutdown` resolves.
/// In Lambda, SQS invokes the orchestrator function instead.
pub async fn run_worker(
    ports: Ports,
    concurrency: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let queue: Arc<dyn Queue> = ports.queue.clone();
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let room = concurrency.saturating_sub(tasks.len()).max(1);
        tokio::select! {
            () = &mut shutdown => break,
            received = queue.receive(room.min(10), Duration::from_secs(20)) => match received {
                Ok(batch) => {
                    for delivery in batch {
                        let (ports, queue) = (ports.clone(), queue.clone());
                        tasks.spawn(async move { dispatch::settle(&ports, queue.as_ref(), &delivery).await });
                    }
                }
                Err(e) => {
                    tracing::error!(error = %crate::error_text::display_chain(&e), "receiving from the jobs queue failed");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            },
        }
        while tasks.len() >= concurrency {
            tasks.join_next().await;
        }
        while tasks.try_join_next().is_some() {}
    }
    // Let in-flight dispatches finish: each holds a reservation to settle.
    while tasks.join_next().await.is_some() {}
}

/// The reaper of the local process: a pass every `interval` until `shutdown`
/// resolves. A failed pass is logged as an error (and retried at the next
/// tick). In Lambda, an EventBridge schedule invokes the reaper function.
pub async fn run_timer(
    ports: Ports,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => match reaper::reconcile(&ports).await {
                Ok(report) if !report.deferred.is_empty() => {
                    tracing::warn!(actions = report.actions.len(), deferred = ?report.deferred, "reaper pass left work for the next one");
                }
                Ok(report) => tracing::debug!(actions = report.actions.len(), "reaper pass done"),
                Err(e) => tracing::error!(error = %crate::error_text::display_chain(&e), "reaper pass failed"),
            },
        }
    }
}
