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
    }
}
