//! `pacer`: the whole system as one local process, plus its admin commands.
//! This file only parses the command line and calls into
//! `pacer_shared::host::local`, which boots and serves.

mod console;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use pacer_shared::host::local::{self, block_on};
use pacer_shared::http::version;

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
    /// List the self-service runners, newest first.
    ListRunners {
        #[arg(long, env = "PACER_CONFIG")]
        config: Option<PathBuf>,
        /// Only this owner's (`<trusted identity>:<claim value>`).
        #[arg(long)]
        owner: Option<String>,
        /// Only runners in this state: pending, active, offline or deleted.
        #[arg(long)]
        state: Option<String>,
        /// One JSON object a line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Deregister the self-service runners that never came online within
    /// self_service.registration_timeout.
    CleanupStaleRunners {
        #[arg(long, env = "PACER_CONFIG")]
        config: Option<PathBuf>,
        /// Print what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Read every self-service runner's status from GitHub and record it.
    SyncGithub {
        #[arg(long, env = "PACER_CONFIG")]
        config: Option<PathBuf>,
        /// Print what would change, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write the audit log (oldest first) to stdout.
    ExportAuditLog {
        #[arg(long, env = "PACER_CONFIG")]
        config: Option<PathBuf>,
        /// From this time on (RFC 3339).
        #[arg(long)]
        since: Option<pacer_shared::domain::Time>,
        /// Before this time (RFC 3339).
        #[arg(long)]
        until: Option<pacer_shared::domain::Time>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
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

/// `export-audit-log --format`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Jsonl,
    Csv,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("pacer {}", version());
            ExitCode::SUCCESS
        }
        Command::Serve { config, init } => {
            block_on(local::serve(config, init, Arc::new(console::Embedded)))
        }
        Command::Admin {
            command:
                AdminCommand::SendTestJob {
                    config,
                    repo,
                    labels,
                    url,
                },
        } => block_on(local::send_test_job(config, repo, labels, url)),
        Command::Admin {
            command: AdminCommand::Bootstrap { config },
        } => block_on(local::admin_bootstrap(config)),
        Command::Admin {
            command: AdminCommand::ResetPassword { config, email },
        } => block_on(local::admin_reset_password(config, email)),
        Command::Admin {
            command:
                AdminCommand::SetRole {
                    config,
                    email,
                    role,
                },
        } => block_on(local::admin_set_role(config, email, role)),
        Command::Admin {
            command:
                AdminCommand::ListRunners {
                    config,
                    owner,
                    state,
                    json,
                },
        } => block_on(local::admin_list_runners(config, owner, state, json)),
        Command::Admin {
            command: AdminCommand::CleanupStaleRunners { config, dry_run },
        } => block_on(local::admin_cleanup_stale_runners(config, dry_run)),
        Command::Admin {
            command: AdminCommand::SyncGithub { config, dry_run },
        } => block_on(local::admin_sync_github(config, dry_run)),
        Command::Admin {
            command:
                AdminCommand::ExportAuditLog {
                    config,
                    since,
                    until,
                    format,
                },
        } => {
            let format = match format {
                Format::Jsonl => local::ExportFormat::Jsonl,
                Format::Csv => local::ExportFormat::Csv,
            };
            block_on(local::admin_export_audit_log(config, since, until, format))
        }
    }
}
