//! Wiring shared by every host (the local binary and each Lambda function):
//! logging from `logging.*`, the AWS SDK configuration from `aws.*`, and the
//! adapters picked from config, which `host::boot` builds. Nothing else
//! decides which adapter runs.

use std::sync::Arc;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::auth::workload::WorkloadVerifier;
use crate::clock::{Clock, SystemClock};
use crate::config::{
    Config, DatabaseEngine, FleetEngine, LogFormat, LogOutput, LoggingConfig, QueueEngine, Secret,
};
use crate::fleet::Fleet;
use crate::fleet::ec2::Ec2Fleet;
use crate::fleet::simulated::{GitHubPart, SimulatedFleet, SimulatedSettings};
use crate::github::GitHub;
use crate::github::offline::OfflineGitHub;
use crate::github::rest::RestGitHub;
use crate::host::simulation::OfflineGitHubPart;
use crate::pricing::aws::AwsPricing;
use crate::pricing::{NoPricing, Pricing, WithOverrides};
use crate::queue::Queue;
use crate::queue::memory::MemoryQueue;
use crate::queue::sqs::SqsQueue;
use crate::service::auth::AuthSettings;
use crate::service::self_service::SelfServiceSettings;
use crate::service::{Ports, Settings};
use crate::store::Store;
use crate::store::dynamodb::DynamoStore;
use crate::store::sqlite::SqliteStore;

/// Keeps a file logger flushing; hold it until the process ends.
pub struct LogGuard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

/// Installs the global `tracing` subscriber per `logging.*`. `PACER_LOG` (or
/// `RUST_LOG`), when set, is a filter that refines the level per module.
pub fn init_logging(cfg: &LoggingConfig) -> anyhow::Result<LogGuard> {
    let filter = EnvFilter::try_from_env("PACER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| {
            // Dependencies are noisy at debug; pacer's own modules follow the level.
            EnvFilter::new(format!(
                "warn,pacer={0},pacer_shared={0},tower_http={0}",
                cfg.level.as_str()
            ))
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
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
    let mut loader = sdk_settings(aws_config::defaults(aws_config::BehaviorVersion::latest()))
        .region(aws_config::Region::new(cfg.aws.region.clone()));
    if !cfg.aws.profile.is_empty() {
        loader = loader.profile_name(&cfg.aws.profile);
    }
    if let Some(endpoint) = &cfg.aws.endpoint_url {
        loader = loader.endpoint_url(endpoint.as_str().trim_end_matches('/'));
    }
    Some(loader.load().await)
}

/// What pacer sets on every AWS SDK client it builds (and the tests and the
/// bench build theirs with): no stalled-stream protection, which watches
/// each request's body throughput at a measurable cost per request, while
/// pacer's requests and answers are a few KB; instead a connect timeout and
/// an attempt timeout bound a request that hangs. The attempt timeout is
/// longer than SQS's longest receive wait (20 s).
pub fn sdk_settings(loader: aws_config::ConfigLoader) -> aws_config::ConfigLoader {
    use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
    use aws_config::timeout::TimeoutConfig;
    loader
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .operation_attempt_timeout(std::time::Duration::from_secs(30))
                .build(),
        )
}

/// The store `database.engine` names.
pub async fn build_store(
    cfg: &Config,
    aws: Option<&aws_config::SdkConfig>,
) -> anyhow::Result<Arc<dyn Store>> {
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

/// The queue `queue.engine` names. The memory queue hides a received
/// message for five minutes, longer than any dispatch takes.
pub fn build_queue(
    cfg: &Config,
    aws: Option<&aws_config::SdkConfig>,
) -> anyhow::Result<Arc<dyn Queue>> {
    Ok(match cfg.queue.engine {
        QueueEngine::Memory => Arc::new(MemoryQueue::new(std::time::Duration::from_secs(300))),
        QueueEngine::Sqs => {
            let aws = aws.context("queue.engine is sqs but AWS is disabled")?;
            let url = cfg
                .queue
                .url
                .clone()
                .context("queue.url is required with queue.engine: sqs")?;
            Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(aws), url))
        }
    })
}

/// GitHub: the REST API as the App, or the offline stand-in when
/// `github.disabled`.
pub fn build_github(cfg: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<dyn GitHub>> {
    if cfg.github.disabled {
        return Ok(Arc::new(OfflineGitHub::new(&cfg.runner.version)));
    }
    // Validation let the key be left out only where the function never calls GitHub.
    if cfg.github.private_key.is_none()
        && cfg.github.private_key_path.is_none()
        && !cfg.function.calls_github()
    {
        return Ok(Arc::new(crate::github::absent::NoAppKey {
            function: cfg.function,
        }));
    }
    Ok(Arc::new(RestGitHub::new(&cfg.github, &cfg.runner, clock)?))
}

/// A fleet, and the same fleet as a [`SimulatedFleet`] when it is one (the
/// host tells a simulated fleet where pacer listens).
pub type Fleets = (Arc<dyn Fleet>, Option<Arc<SimulatedFleet>>);

/// The fleet `fleet.engine` names.
pub fn build_fleet(cfg: &Config, aws: Option<&aws_config::SdkConfig>) -> anyhow::Result<Fleets> {
    Ok(match cfg.fleet.engine {
        FleetEngine::Simulated => {
            let settings = SimulatedSettings::from_config(
                &cfg.fleet.simulated,
                cfg.deployment.name.clone(),
                cfg.github
                    .webhook_secret
                    .clone()
                    .map(|secret| Arc::new(OfflineGitHubPart::new(secret)) as Arc<dyn GitHubPart>),
            );
            let fleet = Arc::new(SimulatedFleet::new(settings));
            (fleet.clone(), Some(fleet))
        }
        FleetEngine::Ec2 => {
            let aws = aws.context("fleet.engine is ec2 but AWS is disabled")?;
            (
                Arc::new(Ec2Fleet::new(
                    aws_sdk_ec2::Client::new(aws),
                    cfg.deployment.name.clone(),
                )),
                None,
            )
        }
    })
}

/// Price quotes at launch: `pricing.overrides` first, then the Pricing API
/// and spot history when `pricing.enabled` and runners are real EC2
/// instances; no other price otherwise.
pub fn build_pricing(
    cfg: &Config,
    aws: Option<&aws_config::SdkConfig>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<dyn Pricing>> {
    let looked_up: Arc<dyn Pricing> = match aws {
        Some(aws) if cfg.pricing.enabled && cfg.fleet.engine == FleetEngine::Ec2 => Arc::new(
            AwsPricing::from_sdk_config(aws, cfg.pricing.cache_ttl, clock)?,
        ),
        _ => Arc::new(NoPricing),
    };
    let overrides = cfg.pricing.overrides_micro_usd();
    Ok(if overrides.is_empty() {
        looked_up
    } else {
        Arc::new(WithOverrides::new(overrides, looked_up))
    })
}

/// Where runners call back: see [`Config::callback_url`].
pub fn callback_url(cfg: &Config) -> String {
    cfg.callback_url()
}

/// The settings the use cases read.
pub fn settings(cfg: &Config) -> Settings {
    Settings {
        deployment: cfg.deployment.name.clone(),
        callback_url: callback_url(cfg),
        callback_secret: cfg.github.callback_hmac_secret.clone().unwrap_or_else(|| {
            // Reachable with github.disabled and no secret configured (a
            // per-process secret keeps callbacks signed all the same), and in
            // the functions that neither mint nor verify callback tokens.
            Secret::new(hex::encode(rand::random::<[u8; 32]>()))
        }),
        webhook_secrets: [
            &cfg.github.webhook_secret,
            &cfg.github.webhook_secret_previous,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect(),
        max_attempts: cfg.reaper.max_attempts,
        redrive_after: cfg.reaper.redrive_after,
        orphan_grace: cfg.reaper.orphan_grace,
        degraded_cooldown: cfg.reaper.degraded_cooldown,
        ebs_micro_usd_per_gb_month: cfg.pricing.ebs_micro_usd_per_gb_month(),
        self_service: SelfServiceSettings {
            enabled: cfg.self_service.enabled,
            identities: cfg.self_service.identities().to_vec(),
            registration_timeout: cfg.self_service.registration_timeout,
        },
        budgets: cfg.monthly_budgets().to_vec(),
    }
}

/// The workload token verifier when `self_service.enabled`; `None` answers
/// the self-service routes 404.
pub fn workload_verifier(cfg: &Config) -> anyhow::Result<Option<Arc<WorkloadVerifier>>> {
    if !cfg.self_service.enabled {
        return Ok(None);
    }
    let verifier = WorkloadVerifier::new(cfg.self_service.identities().to_vec())
        .context("self_service.trusted_identities")?;
    Ok(Some(Arc::new(verifier)))
}

/// Every port from config: what a host hands to `app()` and the workers.
pub async fn build_ports(
    cfg: &Config,
    aws: Option<&aws_config::SdkConfig>,
) -> anyhow::Result<(Ports, Option<Arc<SimulatedFleet>>)> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = build_store(cfg, aws).await?;
    let queue = build_queue(cfg, aws)?;
    let github = build_github(cfg, clock.clone())?;
    let (fleet, simulated) = build_fleet(cfg, aws)?;
    let pricing = build_pricing(cfg, aws, clock.clone())?;
    let ports = Ports {
        store,
        clock,
        ids: Arc::new(crate::domain::Ulids::default()),
        queue,
        fleet,
        github,
        pricing,
        settings: Arc::new(settings(cfg)),
        catalog: Arc::new(crate::service::catalog::Catalog::new(
            cfg.database.config_cache_ttl,
        )),
    };
    Ok((ports, simulated))
}

/// The OIDC relying party when SSO is on. Discovery happens here: a wrong
/// issuer stops the start, one that does not answer is tried again at
/// sign-in.
pub async fn sso(cfg: &Config) -> anyhow::Result<Option<Arc<crate::auth::oidc::Sso>>> {
    if cfg.auth.disabled {
        return Ok(None);
    }
    Ok(
        match crate::auth::oidc::OidcSettings::from_config(&cfg.auth.oidc) {
            Some(settings) => Some(Arc::new(crate::auth::oidc::Sso::at_start(settings).await?)),
            None => None,
        },
    )
}

/// Console auth from `auth.*`, or `None` under `auth.disabled`; SSO's
/// relying party is [`sso`].
pub async fn auth_settings(cfg: &Config) -> anyhow::Result<Option<Arc<AuthSettings>>> {
    if cfg.auth.disabled {
        return Ok(None);
    }
    Ok(Some(Arc::new(AuthSettings {
        jwt_secret: cfg
            .auth
            .jwt_secret
            .clone()
            .context("auth.jwt_secret is required unless auth.disabled is true")?,
        session_ttl: cfg.auth.session_ttl,
        local: cfg.auth.local.enabled,
        login_attempts: cfg.auth.login_rate_limit.attempts,
        login_window: cfg.auth.login_rate_limit.window,
        oidc_issuer_host: cfg
            .auth
            .oidc
            .issuer
            .as_ref()
            .filter(|_| cfg.auth.oidc.enabled)
            .and_then(|u| u.host_str().map(str::to_string)),
        secure_cookie: cfg
            .server
            .public_url
            .as_ref()
            .is_some_and(|u| u.scheme() == "https"),
    })))
}
