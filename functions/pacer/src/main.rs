//! `pacer`: the whole system as one local process, plus its admin commands.
//! This file only wires: arguments → config → logging → adapters → serve.

mod console;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pacer_shared::config::{Config, generate_local_config};
use pacer_shared::http::{AppState, app, version};
use pacer_shared::service::{dispatch, reaper};
use pacer_shared::{runtime, server};

#[derive(Parser)]
#[command(
    name = "pacer",
    about = "Ephemeral, just-in-time GitHub Actions runners on your own AWS account"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the console, the API, the webhook and runner callbacks on `server.addr`.
    Serve {
        /// The YAML configuration file (every key can also come from PACER_* variables).
        #[arg(long, env = "PACER_CONFIG")]
        config: Option<PathBuf>,
        /// If the --config file does not exist, write the local default there
        /// first (SQLite, simulated fleet, fresh secrets) and say so.
        #[arg(long)]
        init: bool,
    },
    /// Print the version.
    Version,
    /// Operator commands.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create the first admin (auth.local.email) in the configured store if
    /// there are no users, and print its password once — for Lambda
    /// deployments, which have no terminal to print a banner to.
    Bootstrap {
        #[arg(long, env = "PACER_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Give a user a new random password, printed once.
    ResetPassword {
        #[arg(long, env = "PACER_CONFIG")]
        config: Option<PathBuf>,
        email: String,
    },
    /// Set a user's role (admin | viewer): the way back in when nobody is admin.
    SetRole {
        #[arg(long, env = "PACER_CONFIG")]
        config: Option<PathBuf>,
        email: String,
        role: String,
    },
    /// Send a signed `queued` workflow_job webhook to a running pacer, to
    /// watch one job go from queued to completed (with the simulated fleet).
    SendTestJob {
        /// The configuration of the running pacer (for its address and webhook secret).
        #[arg(long, env = "PACER_CONFIG")]
        config: Option<PathBuf>,
        /// The repository the job belongs to (bind it to a project first).
        #[arg(long)]
        repo: String,
        /// The job's runs-on labels, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "self-hosted")]
        labels: Vec<String>,
        /// pacer's base URL; defaults to the configured address.
        #[arg(long)]
        url: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("pacer {}", version());
            ExitCode::SUCCESS
        }
        Command::Serve { config, init } => block_on(serve(config, init)),
        Command::Admin {
            command:
                AdminCommand::SendTestJob {
                    config,
                    repo,
                    labels,
                    url,
                },
        } => block_on(send_test_job(config, repo, labels, url)),
        Command::Admin {
            command: AdminCommand::Bootstrap { config },
        } => block_on(admin_bootstrap(config)),
        Command::Admin {
            command: AdminCommand::ResetPassword { config, email },
        } => block_on(admin_reset_password(config, email)),
        Command::Admin {
            command:
                AdminCommand::SetRole {
                    config,
                    email,
                    role,
                },
        } => block_on(admin_set_role(config, email, role)),
    }
}

fn block_on(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
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

/// The store of the configured deployment, for the admin commands.
async fn admin_ports(
    config: Option<PathBuf>,
) -> anyhow::Result<(Config, pacer_shared::service::Ports)> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut cfg = Config::load(config.as_deref(), &env)?;
    server::install_crypto_provider();
    let aws = runtime::aws_sdk_config(&cfg).await;
    if let Some(aws) = &aws {
        cfg.resolve_secrets(aws).await?;
    }
    let (ports, _) = runtime::build_ports(&cfg, aws.as_ref()).await?;
    Ok((cfg, ports))
}

async fn admin_bootstrap(config: Option<PathBuf>) -> anyhow::Result<()> {
    let (cfg, ports) = admin_ports(config).await?;
    match pacer_shared::service::auth::bootstrap(&ports, &cfg.auth.local.email).await? {
        Some(password) => print_bootstrap_banner(&cfg.auth.local.email, &password),
        None => println!(
            "there are users already: nothing to bootstrap (use `pacer admin reset-password EMAIL`)"
        ),
    }
    Ok(())
}

async fn admin_reset_password(config: Option<PathBuf>, email: String) -> anyhow::Result<()> {
    let (_, ports) = admin_ports(config).await?;
    let password = pacer_shared::service::auth::reset_password(&ports, &email)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("new password for {email}: {password}\n(shown this once)");
    Ok(())
}

async fn admin_set_role(
    config: Option<PathBuf>,
    email: String,
    role: String,
) -> anyhow::Result<()> {
    let role = match role.as_str() {
        "admin" => pacer_shared::domain::Role::Admin,
        "viewer" => pacer_shared::domain::Role::Viewer,
        other => anyhow::bail!("role {other:?} is not admin or viewer"),
    };
    let (_, ports) = admin_ports(config).await?;
    let user = pacer_shared::service::auth::set_role_by_email(&ports, &email, role)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{} is now {:?}", user.email, user.role);
    Ok(())
}

async fn send_test_job(
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
    let repo =
        pacer_shared::domain::RepoName::parse(&repo).map_err(|e| anyhow::anyhow!("--repo: {e}"))?;
    let base = url.unwrap_or_else(|| runtime::callback_url(&cfg));
    let github_job_id = i64::from(rand::random::<u32>()) + 1;
    let body = serde_json::to_vec(&pacer_shared::github::webhook::sample_queued_payload(
        github_job_id,
        &repo,
        &labels,
        1,
    ))?;
    let signature = pacer_shared::github::webhook::sign(secret.expose().as_bytes(), &body);
    server::install_crypto_provider();
    let response = reqwest::Client::new()
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
    match (status.as_u16(), answer["job_id"].as_str()) {
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

async fn serve(config_path: Option<PathBuf>, init: bool) -> anyhow::Result<()> {
    if let (true, Some(path)) = (init, &config_path) {
        if !path.exists() {
            write_local_config(path)?;
        }
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut cfg = Config::load(config_path.as_deref(), &env)?;
    let _log_guard = runtime::init_logging(&cfg.logging)?;
    server::install_crypto_provider();

    let aws = runtime::aws_sdk_config(&cfg).await;
    if let Some(aws) = &aws {
        cfg.resolve_secrets(aws).await?;
    }
    for warning in cfg.warnings() {
        tracing::warn!("{warning}");
    }
    for note in &cfg.notes {
        tracing::info!("{note}");
    }
    tracing::info!(version = %version(), "pacer starting");

    let (ports, simulated) = runtime::build_ports(&cfg, aws.as_ref()).await?;
    if !cfg.auth.disabled && cfg.auth.local.enabled {
        if let Some(password) =
            pacer_shared::service::auth::bootstrap(&ports, &cfg.auth.local.email).await?
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
        console: Some(Arc::new(console::Embedded)),
    };
    let server = server::Server::bind(app(state), &cfg.server).await?;

    // The orchestrator and the reaper run beside the server and stop after
    // it: requests drain first, then in-flight work settles.
    let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let worker = tokio::spawn(dispatch::run_worker(
        ports.clone(),
        16,
        stopped(workers_stopped.clone()),
    ));
    let reaper = tokio::spawn(reaper::run_timer(
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
