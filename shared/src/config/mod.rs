//! pacer's typed configuration: loading, environment overrides, validation, secret references.
//!
//! This module owns every configuration key: its name, default, meaning and the rules it must
//! obey. Loading goes in one direction and fails fast with a one-line error naming the key:
//!
//! 1. the YAML file (optional: Lambda is configured by the environment alone) is read into a value
//!    tree and every key is checked against the key table in `schema.rs`;
//! 2. `PACER_*` variables are laid over it, resolved against the same table (key names contain
//!    underscores, so `PACER_SERVER_TLS_ACME_HTTP_ADDR` is found by lookup, not by splitting);
//! 3. serde turns the tree into [`Config`]; values are tidied (emails lower-cased, OIDC switching
//!    local login off), every rule in `validate.rs` is checked, and the trusted identities of
//!    `self_service` and the `budgets` are checked and parsed once (`self_service.rs`, `budgets.rs`);
//! 4. [`Config::resolve_secrets`] replaces `ssm:` / `secretsmanager:` references with their values
//!    and checks the rules that depend on them.
//!
//! Nothing here reads the process environment or the clock: callers pass the environment in, so
//! loading is a pure function of its inputs and tests need no global state.

mod budgets;
mod error;
mod function;
mod load;
mod local;
mod resolve;
mod schema;
mod secret;
mod sections;
mod self_service;
mod validate;

#[cfg(test)]
mod tests;

pub use crate::domain::duration::{format_go_duration, parse_go_duration};
pub use error::ConfigError;
pub use function::{FUNCTION_SECRETS, Function};
pub use local::generate_local_config;
pub use schema::{ENV_PREFIX, NON_CONFIG_ENV_VARS, reference_markdown};
pub use secret::{Secret, SecretRef};
pub use sections::{
    AcmeConfig, AuthConfig, AwsConfig, BudgetConfig, ClaimRuleConfig, DatabaseConfig,
    DatabaseEngine, DeploymentConfig, FleetConfig, FleetEngine, GithubConfig, KeyAlg,
    LabelPolicyConfig, LocalAuthConfig, LogFormat, LogLevel, LogOutput, LoggingConfig, OidcConfig,
    PricingConfig, QueueConfig, QueueEngine, RateLimit, ReaperConfig, RunnerConfig, RunnerSha256,
    RunnersConfig, SelfServiceConfig, ServerConfig, SimulatedFleetConfig, TlsConfig, TlsMode,
    TrustedIdentityConfig,
};

use load::Tree;
use serde::{Deserialize, Serialize};
use std::path::Path;
use validate::Phase;

/// The whole configuration. Build it with [`Config::load`] (or [`Config::from_yaml`] in tests);
/// `Default` gives the documented defaults, which are not a valid configuration on their own
/// (there is no `auth.jwt_secret`, for one).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub deployment: DeploymentConfig,
    pub github: GithubConfig,
    pub aws: AwsConfig,
    pub database: DatabaseConfig,
    pub queue: QueueConfig,
    pub fleet: FleetConfig,
    pub runner: RunnerConfig,
    pub reaper: ReaperConfig,
    pub pricing: PricingConfig,
    pub logging: LoggingConfig,
    pub auth: AuthConfig,
    pub self_service: SelfServiceConfig,
    /// Monthly budgets, as written; the same budgets, checked, come from
    /// [`Config::monthly_budgets`].
    pub budgets: Vec<BudgetConfig>,
    /// `budgets` checked and parsed once, by `Config::load`.
    #[serde(skip)]
    pub(crate) parsed_budgets: Vec<crate::domain::budget::Budget>,
    /// Adjustments made while loading that an operator should know about (for example "local
    /// login turned off because OIDC is on"); `main` logs them at info level.
    #[serde(skip)]
    pub notes: Vec<String>,
    /// The function the configuration was loaded for, which decides the secrets it must hold.
    #[serde(skip)]
    pub function: Function,
}

impl Config {
    /// Loads the YAML file at `path` (or nothing, when `None`), lays the `PACER_*` variables of
    /// `env` over it, and validates the result. `env` is the process environment, passed in
    /// (`std::env::vars().collect::<Vec<_>>()`) so that loading stays pure.
    ///
    /// Secret references are checked for shape here but resolved by [`Config::resolve_secrets`].
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        Self::load_for(Function::Serve, path, env)
    }

    /// Like [`Config::load`], for one function of pacer: a Lambda function is refused only the
    /// secrets its own work needs (see [`Function`]).
    pub fn load_for(
        function: Function,
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::load_from(function, Some(&text), path, env)
            }
            None => Self::load_from(function, None, Path::new("(environment only)"), env),
        }
    }

    /// Like [`Config::load`], from YAML text instead of a file: handy in tests and for configs
    /// held in memory.
    pub fn from_yaml(yaml: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
        Self::load_from(Function::Serve, Some(yaml), Path::new("(inline YAML)"), env)
    }

    fn load_from(
        function: Function,
        text: Option<&str>,
        origin: &Path,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut tree = Tree::from_yaml(text, origin)?;
        tree.overlay_env(env)?;
        let mut config = tree.deserialize()?;
        config.function = function;
        config
            .tidy(|key| tree.explicit.contains(key))
            .map_err(|e| attribute_to_env(e, &tree.env_vars))?;
        validate::validate(&config, Phase::BeforeResolution)
            .map_err(|e| attribute_to_env(e, &tree.env_vars))?;
        // Parsed once, here: later code takes them from `SelfServiceConfig::identities` and never
        // parses a pattern again. They hold no secret, so `validate_resolved` has nothing to redo.
        config.self_service.identities = self_service::trusted_identities(&config.self_service)
            .map_err(|e| attribute_to_env(e, &tree.env_vars))?;
        config.parsed_budgets = budgets::budgets(&config.budgets)?;
        Ok(config)
    }

    /// The monthly budgets, checked when the configuration was loaded; empty for a configuration
    /// that did not come from [`Config::load`] (or its siblings).
    pub fn monthly_budgets(&self) -> &[crate::domain::budget::Budget] {
        &self.parsed_budgets
    }

    /// Re-checks every rule with secret references resolved. [`Config::resolve_secrets`] calls it;
    /// call it yourself only if you filled in secrets by other means.
    pub fn validate_resolved(&self) -> Result<(), ConfigError> {
        validate::validate(self, Phase::Resolved)
    }

    /// True when some secret is an `ssm:` or `secretsmanager:` reference, so AWS must be reached
    /// (through [`Config::resolve_secrets`]) before the configuration is complete.
    pub fn has_secret_references(&self) -> bool {
        self.secrets()
            .into_iter()
            .any(|(_, secret)| secret.is_some_and(|s| s.reference().is_some()))
    }

    /// Where runners call back: `server.public_url`, else this process's own address
    /// (all-interfaces binds are reached through loopback).
    pub fn callback_url(&self) -> String {
        if let Some(url) = &self.server.public_url {
            return url.as_str().trim_end_matches('/').to_string();
        }
        let scheme = if matches!(self.server.tls.mode, TlsMode::None) {
            "http"
        } else {
            "https"
        };
        let addr = self.server.addr.trim();
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "3000"));
        let host = match host.trim_matches(['[', ']']) {
            "" | "0.0.0.0" | "::" => "127.0.0.1",
            h => h,
        };
        if host.contains(':') {
            format!("{scheme}://[{host}]:{port}")
        } else {
            format!("{scheme}://{host}:{port}")
        }
    }

    /// The modes that must be announced with a loud WARN at start, one sentence each.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.aws.disabled {
            warnings.push(
                "aws.disabled is true: pacer makes no AWS calls; use it only with the simulated fleet for development or demos"
                    .to_owned(),
            );
        }
        if self.auth.disabled {
            warnings.push(
                "auth.disabled is true: the console and its API are open to anyone who can reach this address".to_owned(),
            );
        }
        if self.github.disabled {
            warnings.push(
                "github.disabled is true: an offline stand-in replaces GitHub; no webhook is verified against a real App and no real runner registers"
                    .to_owned(),
            );
        }
        let oidc = &self.auth.oidc;
        let open_sso = !self.auth.disabled
            && oidc.enabled
            && oidc.allowed_emails.is_empty()
            && oidc.allowed_domains.is_empty()
            && oidc.allowed_groups.is_empty();
        if open_sso {
            let issuer = oidc
                .issuer
                .as_ref()
                .map_or("the identity provider".to_owned(), |u| u.to_string());
            warnings.push(format!(
                "auth.oidc has no allowed_emails, allowed_domains or allowed_groups: every account {issuer} knows may sign in, \
                 and on a pacer with no users yet the first one to do so becomes admin; set one of them"
            ));
        }
        warnings
    }

    /// Every secret-typed key with its value, in table order.
    pub(crate) fn secrets(&self) -> [(&'static str, Option<&Secret>); 7] {
        [
            (
                "server.cloudfront_origin_secret",
                self.server.cloudfront_origin_secret.as_ref(),
            ),
            ("github.private_key", self.github.private_key.as_ref()),
            ("github.webhook_secret", self.github.webhook_secret.as_ref()),
            (
                "github.webhook_secret_previous",
                self.github.webhook_secret_previous.as_ref(),
            ),
            (
                "github.callback_hmac_secret",
                self.github.callback_hmac_secret.as_ref(),
            ),
            ("auth.jwt_secret", self.auth.jwt_secret.as_ref()),
            (
                "auth.oidc.client_secret",
                self.auth.oidc.client_secret.as_ref(),
            ),
        ]
    }

    pub(crate) fn secrets_mut(&mut self) -> [(&'static str, &mut Option<Secret>); 7] {
        [
            (
                "server.cloudfront_origin_secret",
                &mut self.server.cloudfront_origin_secret,
            ),
            ("github.private_key", &mut self.github.private_key),
            ("github.webhook_secret", &mut self.github.webhook_secret),
            (
                "github.webhook_secret_previous",
                &mut self.github.webhook_secret_previous,
            ),
            (
                "github.callback_hmac_secret",
                &mut self.github.callback_hmac_secret,
            ),
            ("auth.jwt_secret", &mut self.auth.jwt_secret),
            ("auth.oidc.client_secret", &mut self.auth.oidc.client_secret),
        ]
    }

    /// Normalises values after parsing and applies the documented automatic adjustments,
    /// recording each adjustment in `notes`. `is_explicit` says whether the file or environment
    /// set a key, which decides between "adjust quietly" and "refuse the contradiction".
    fn tidy(&mut self, is_explicit: impl Fn(&str) -> bool) -> Result<(), ConfigError> {
        // Compared case-insensitively everywhere, so stored lower-case once.
        self.auth.local.email = self.auth.local.email.trim().to_lowercase();
        for list in [
            &mut self.auth.oidc.allowed_emails,
            &mut self.auth.oidc.allowed_domains,
        ] {
            for entry in list.iter_mut() {
                *entry = entry.trim().to_lowercase();
            }
        }
        // Relative paths are joined onto these bases; without a trailing slash `Url::join`
        // would drop the last segment (an Enterprise `/api/v3`, or pacer served under `/pacer`).
        ensure_trailing_slash(&mut self.github.api_url);
        if let Some(url) = &mut self.server.public_url {
            ensure_trailing_slash(url);
        }
        self.tidy_private_key();

        if self.auth.oidc.enabled && self.auth.local.enabled {
            self.auth.local.enabled = false;
            self.notes.push(
                "auth.oidc.enabled is true, so local login (auth.local.enabled) is turned off"
                    .to_owned(),
            );
        }
        if self.aws.disabled && self.pricing.enabled {
            if is_explicit("pricing.enabled") {
                return Err(ConfigError::invalid(
                    "pricing.enabled",
                    "needs the AWS Pricing API, but aws.disabled is true (set pricing.enabled to false)",
                ));
            }
            self.pricing.enabled = false;
            self.notes.push(
                "aws.disabled is true, so price quotes (pricing.enabled) are turned off".to_owned(),
            );
        }
        if self.logging.color && self.logging.format == LogFormat::Json {
            self.notes
                .push("logging.color is ignored with logging.format json".to_owned());
        }
        Ok(())
    }

    /// A PEM pasted into an environment variable often arrives with literal `\n` escapes instead
    /// of line breaks; restore them so the key parses.
    fn tidy_private_key(&mut self) {
        if let Some(key) = &self.github.private_key {
            let text = key.expose();
            if SecretRef::parse(text).is_none() && !text.contains('\n') && text.contains("\\n") {
                self.github.private_key = Some(Secret::new(text.replace("\\n", "\n").trim()));
            }
        }
    }
}

fn ensure_trailing_slash(url: &mut url::Url) {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
}

/// Adds the `PACER_*` variable behind a bad value to a validation error.
fn attribute_to_env(
    err: ConfigError,
    env_vars: &std::collections::BTreeMap<&'static str, String>,
) -> ConfigError {
    match err {
        ConfigError::Invalid {
            key,
            message,
            env_var: None,
        } => {
            let env_var = env_vars.get(load::strip_index(&key)).cloned();
            ConfigError::Invalid {
                key,
                message,
                env_var,
            }
        }
        other => other,
    }
}
