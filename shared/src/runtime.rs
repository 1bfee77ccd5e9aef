//! Wiring shared by every host (the local binary and, later, each Lambda):
//! logging from `logging.*`, the AWS SDK configuration from `aws.*`, and the
//! adapters `main` picks from config. Hosts call these and nothing else
//! decides which adapter runs.

use std::sync::Arc;

use anyhow::Context;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, DatabaseEngine, LogFormat, LogOutput, LoggingConfig};
use crate::store::dynamodb::DynamoStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// Keeps a file logger flushing; hold it until the process ends.
pub struct LogGuard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

/// Installs the global `tracing` subscriber per `logging.*`. `RUST_LOG`, when
/// set, refines the level per module (for debugging pacer itself).
pub fn init_logging(cfg: &LoggingConfig) -> anyhow::Result<LogGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Dependencies are noisy at debug; pacer's own modules follow the level.
        EnvFilter::new(format!("warn,pacer={0},pacer_shared={0},tower_http={0}", cfg.level.as_str()))
    });
    let (writer, guard) = match &cfg.output {
        LogOutput::Stdout => (BoxMakeWriter::new(std::io::stdout), None),
        LogOutput::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("logging.output: cannot open {}", path.display()))?;
            let (writer, guard) = tracing_appender::non_blocking(file);
            (BoxMakeWriter::new(writer), Some(guard))
        }
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let result = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => {
            let to_terminal = matches!(cfg.output, LogOutput::Stdout);
            builder.with_ansi(cfg.color && to_terminal).try_init()
        }
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))?;
    Ok(LogGuard(guard))
}

/// The AWS SDK configuration from `aws.*`, or `None` when AWS is disabled.
pub async fn aws_sdk_config(cfg: &Config) -> Option<aws_config::SdkConfig> {
    if cfg.aws.disabled {
        return None;
    }
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(cfg.aws.region.clone()));
    if !cfg.aws.profile.is_empty() {
        loader = loader.profile_name(&cfg.aws.profile);
    }
    if let Some(endpoint) = &cfg.aws.endpoint_url {
        loader = loader.endpoint_url(endpoint.as_str().trim_end_matches('/'));
    }
    Some(loader.load().await)
}

/// The store `database.engine` names.
pub async fn build_store(cfg: &Config, aws: Option<&aws_config::SdkConfig>) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match cfg.database.engine {
        DatabaseEngine::Sqlite => {
            let store = SqliteStore::open(&cfg.database.path)?;
            tracing::info!(path = %cfg.database.path.display(), "store: SQLite");
            Arc::new(store)
        }
        DatabaseEngine::Dynamodb => {
            let aws = aws.context("database.engine is dynamodb but AWS is disabled")?;
            let client = aws_sdk_dynamodb::Client::new(aws);
            tracing::info!(table = %cfg.database.table, "store: DynamoDB");
            Arc::new(DynamoStore::new(client, cfg.database.table.clone()))
        }
    })
}
