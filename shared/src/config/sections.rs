//! The typed sections of [`Config`](super::Config) and the value types they are made of.
//!
//! Every struct has a `Default` that matches the key table in `schema.rs` (a test compares them),
//! refuses unknown fields, and serialises back to the YAML it was read from, with secrets redacted.

use super::error::ConfigError;
use super::schema::LETS_ENCRYPT_DIRECTORY;
use super::secret::Secret;
use crate::domain::cost::{MicroUsd, micro_usd};
use crate::domain::duration::{format_go_duration, go as go_duration, parse_go_duration};
use crate::domain::project::Scope;
use crate::domain::self_service::TrustedIdentity;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use url::Url;

/// Serde through `Display` and `FromStr`: the value reads and writes as the
/// text a person types in the YAML (`10/5m`, `stdout`).
macro_rules! serde_as_text {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

// ---------------------------------------------------------------------------------------- server

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port` or `:port` (every interface).
    pub addr: String,
    #[serde(with = "optional_url")]
    pub public_url: Option<Url>,
    /// Bare addresses are read as single-host networks (`/32`, `/128`).
    #[serde(with = "ip_nets")]
    pub trusted_proxies: Vec<IpNet>,
    /// Proves a request came through pacer's own CloudFront distribution.
    pub cloudfront_origin_secret: Option<Secret>,
    /// For the TLS handshake, each request's headers, and idleness between requests.
    #[serde(with = "go_duration")]
    pub header_read_timeout: Duration,
    /// From a request's complete headers to its answer, the body read included.
    #[serde(with = "go_duration")]
    pub request_timeout: Duration,
    /// Connections served at once; the rest wait to be accepted.
    pub max_connections: u32,
    pub tls: TlsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:3000".into(),
            public_url: None,
            trusted_proxies: Vec::new(),
            cloudfront_origin_secret: None,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_connections: 512,
            tls: TlsConfig::default(),
        }
    }
}

impl ServerConfig {
    /// The address to bind: `server.addr` with an empty host (`:3000`) made explicit as every
    /// IPv4 interface, which is what operators coming from Go mean by it.
    pub fn bind_addr(&self) -> String {
        bind_addr(&self.addr)
    }
}

/// `:port` → `0.0.0.0:port`; anything else unchanged.
pub fn bind_addr(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_owned(),
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub mode: TlsMode,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub fqdn: Option<String>,
    pub alg: KeyAlg,
    pub acme: AcmeConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain HTTP; something in front terminates TLS.
    #[default]
    None,
    /// Operator-supplied PEM certificate and key.
    Manual,
    /// A self-signed certificate made in memory at start.
    #[serde(rename = "self")]
    SelfSigned,
    /// Certificates ordered from an ACME CA over HTTP-01.
    Acme,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlg {
    #[default]
    Rsa,
    Ed25519,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcmeConfig {
    pub hosts: Vec<String>,
    pub email: Option<String>,
    pub cache_dir: PathBuf,
    pub http_addr: String,
    #[serde(with = "required_url")]
    pub directory_url: Url,
    /// The only root trusted for the directory, instead of the system roots
    /// (a test CA such as pebble); the first certificate of the PEM file.
    pub ca_cert: Option<PathBuf>,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            email: None,
            cache_dir: PathBuf::from("./certs"),
            http_addr: ":80".into(),
            directory_url: constant_url(LETS_ENCRYPT_DIRECTORY),
            ca_cert: None,
        }
    }
}

// ------------------------------------------------------------------------------------ deployment

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeploymentConfig {
    /// 1–32 of `[a-z0-9-]`, starting with a letter.
    pub name: String,
}

impl Default for DeploymentConfig {
    fn default() -> Self {
        Self {
            name: "pacer".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------- github

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GithubConfig {
    pub disabled: bool,
    pub app_id: Option<u64>,
    pub private_key_path: Option<PathBuf>,
    /// The PEM itself, as an alternative to `private_key_path`.
    pub private_key: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    /// Still accepted while the webhook secret is being rotated.
    pub webhook_secret_previous: Option<Secret>,
    pub callback_hmac_secret: Option<Secret>,
    /// Always ends with `/`, so relative paths join onto it (an Enterprise `/api/v3` base included).
    #[serde(with = "required_url")]
    pub api_url: Url,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            disabled: false,
            app_id: None,
            private_key_path: None,
            private_key: None,
            webhook_secret: None,
            webhook_secret_previous: None,
            callback_hmac_secret: None,
            api_url: constant_url("https://api.github.com/"),
        }
    }
}

impl GithubConfig {
    /// The App's PEM private key: `private_key` itself, or the contents of `private_key_path`
    /// (read on every call, so a replaced file is picked up). The error names the key.
    pub fn private_key_pem(&self) -> Result<Secret, ConfigError> {
        match (&self.private_key, &self.private_key_path) {
            (Some(pem), _) => Ok(pem.clone()),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|pem| Secret::new(pem.trim()))
                .map_err(|e| {
                    ConfigError::invalid(
                        "github.private_key_path",
                        format!("cannot read {}: {e}", path.display()),
                    )
                }),
            (None, None) => Err(ConfigError::invalid(
                "github.private_key_path",
                "required unless github.disabled is true (or give the PEM itself in github.private_key)",
            )),
        }
    }
}

// ------------------------------------------------------------------------------------------- aws

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsConfig {
    pub disabled: bool,
    pub region: String,
    /// Empty: the SDK's default credential chain.
    pub profile: String,
    #[serde(with = "optional_url")]
    pub endpoint_url: Option<Url>,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            disabled: false,
            region: "us-east-1".into(),
            profile: String::new(),
            endpoint_url: None,
        }
    }
}

// ------------------------------------------------------------------------------ store and queue

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub engine: DatabaseEngine,
    /// SQLite file.
    pub path: PathBuf,
    /// DynamoDB table.
    pub table: String,
    /// How long a process takes in webhooks with the projects, pools and
    /// bindings it read; zero reads them for every webhook.
    #[serde(with = "go_duration")]
    pub config_cache_ttl: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            engine: DatabaseEngine::Sqlite,
            path: PathBuf::from("./data/pacer.db"),
            table: "pacer".into(),
            config_cache_ttl: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseEngine {
    #[default]
    Sqlite,
    Dynamodb,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    pub engine: QueueEngine,
    /// SQS queue URL.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueEngine {
    #[default]
    Memory,
    Sqs,
}

// ----------------------------------------------------------------------------------------- fleet

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    pub engine: FleetEngine,
    pub simulated: SimulatedFleetConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FleetEngine {
    #[default]
    Ec2,
    Simulated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedFleetConfig {
    #[serde(with = "go_duration")]
    pub boot_delay: Duration,
    #[serde(with = "go_duration")]
    pub job_time: Duration,
    pub bootstrap_failure_percent: u32,
}

impl Default for SimulatedFleetConfig {
    fn default() -> Self {
        Self {
            boot_delay: Duration::from_secs(2),
            job_time: Duration::from_secs(10),
            bootstrap_failure_percent: 0,
        }
    }
}

// --------------------------------------------------------------------------- runner and reaper

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunnerConfig {
    /// `latest` or a release pin such as `2.321.0`.
    pub version: String,
    /// Checksums of the pinned release's tarballs, for where GitHub's release API is out of
    /// reach; when any is set, GitHub is not asked for them.
    pub sha256: RunnerSha256,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            version: "latest".into(),
            sha256: RunnerSha256::default(),
        }
    }
}

/// The SHA-256 (64 hex digits) of each Linux tarball of the pinned actions/runner release.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunnerSha256 {
    pub linux_x64: Option<String>,
    pub linux_arm64: Option<String>,
}

impl RunnerSha256 {
    /// The key of each platform's checksum, with that platform's `os` and `arch`.
    pub const KEYS: [(&'static str, &'static str, &'static str); 2] = [
        ("runner.sha256.linux_x64", "linux", "x64"),
        ("runner.sha256.linux_arm64", "linux", "arm64"),
    ];

    /// Each checksum given, as `(key, os, arch, value)`.
    pub fn given(&self) -> impl Iterator<Item = (&'static str, &'static str, &'static str, &str)> {
        Self::KEYS
            .into_iter()
            .zip([&self.linux_x64, &self.linux_arm64])
            .filter_map(|((key, os, arch), value)| Some((key, os, arch, value.as_deref()?)))
    }

    /// The key that holds the checksum of `os`-`arch`'s tarball, if there is one.
    pub fn key_for(os: &str, arch: &str) -> Option<&'static str> {
        Self::KEYS
            .into_iter()
            .find(|(_, o, a)| *o == os && *a == arch)
            .map(|(key, _, _)| key)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReaperConfig {
    #[serde(with = "go_duration")]
    pub interval: Duration,
    #[serde(with = "go_duration")]
    pub redrive_after: Duration,
    #[serde(with = "go_duration")]
    pub orphan_grace: Duration,
    /// 1..=20.
    pub max_attempts: u32,
    #[serde(with = "go_duration")]
    pub degraded_cooldown: Duration,
}

impl Default for ReaperConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            redrive_after: Duration::from_secs(5 * 60),
            orphan_grace: Duration::from_secs(10 * 60),
            max_attempts: 3,
            degraded_cooldown: Duration::from_secs(10 * 60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingConfig {
    pub enabled: bool,
    #[serde(with = "go_duration")]
    pub cache_ttl: Duration,
    /// Instance type → USD per hour, as written; checked by `validate`, read
    /// in micro-dollars through [`PricingConfig::overrides_micro_usd`].
    pub overrides: BTreeMap<String, f64>,
    /// USD per GB-month of root volume.
    pub ebs_gb_month: f64,
}

impl Default for PricingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cache_ttl: Duration::from_secs(24 * 3600),
            overrides: BTreeMap::new(),
            ebs_gb_month: 0.08,
        }
    }
}

impl PricingConfig {
    /// The overrides in whole micro-dollars (validated at load, so none is
    /// dropped here).
    pub fn overrides_micro_usd(&self) -> BTreeMap<String, MicroUsd> {
        self.overrides
            .iter()
            .filter_map(|(instance_type, &usd)| Some((instance_type.clone(), micro_usd(usd)?)))
            .collect()
    }

    /// `ebs_gb_month` in whole micro-dollars.
    pub fn ebs_micro_usd_per_gb_month(&self) -> MicroUsd {
        micro_usd(self.ebs_gb_month).unwrap_or(0)
    }
}

// --------------------------------------------------------------------------------------- logging

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    pub level: LogLevel,
    pub format: LogFormat,
    pub output: LogOutput,
    /// Only meaningful with the text format.
    pub color: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

impl From<LogLevel> for tracing::Level {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error => tracing::Level::ERROR,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

/// Where logs go: standard output, or a file given by an absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LogOutput {
    #[default]
    Stdout,
    File(PathBuf),
}

impl FromStr for LogOutput {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "stdout" {
            return Ok(Self::Stdout);
        }
        let path = PathBuf::from(text);
        if path.is_absolute() {
            Ok(Self::File(path))
        } else {
            Err(format!(
                "must be \"stdout\" or an absolute file path (got {text:?})"
            ))
        }
    }
}

impl fmt::Display for LogOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("stdout"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

serde_as_text!(LogOutput);

// ------------------------------------------------------------------------------------------ auth

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub disabled: bool,
    pub jwt_secret: Option<Secret>,
    #[serde(with = "go_duration")]
    pub session_ttl: Duration,
    pub login_rate_limit: RateLimit,
    pub local: LocalAuthConfig,
    pub oidc: OidcConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            disabled: false,
            jwt_secret: None,
            session_ttl: Duration::from_secs(12 * 3600),
            login_rate_limit: RateLimit {
                attempts: 10,
                window: Duration::from_secs(5 * 60),
            },
            local: LocalAuthConfig::default(),
            oidc: OidcConfig::default(),
        }
    }
}

/// `N/duration`: at most `attempts` tries in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub attempts: u32,
    pub window: Duration,
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = || format!("invalid rate limit {text:?} (use N/duration, like 10/5m)");
        let (count, window) = text.split_once('/').ok_or_else(usage)?;
        let attempts: u32 = count.trim().parse().map_err(|_| usage())?;
        if attempts == 0 {
            return Err(format!(
                "invalid rate limit {text:?} (allow at least 1 attempt)"
            ));
        }
        let window = parse_go_duration(window.trim())?;
        if window.is_zero() {
            return Err(format!(
                "invalid rate limit {text:?} (the window must be longer than zero)"
            ));
        }
        Ok(Self { attempts, window })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.attempts, format_go_duration(self.window))
    }
}

serde_as_text!(RateLimit);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalAuthConfig {
    pub enabled: bool,
    /// Lower-cased and trimmed at load, so the YAML's casing never causes a lookup miss.
    pub email: String,
}

impl Default for LocalAuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            email: "admin@localhost".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    pub enabled: bool,
    #[serde(with = "optional_url")]
    pub issuer: Option<Url>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    #[serde(with = "optional_url")]
    pub redirect_url: Option<Url>,
    pub scopes: Vec<String>,
    pub require_email_verified: bool,
    /// Lower-cased at load.
    pub allowed_emails: Vec<String>,
    /// Lower-cased at load.
    pub allowed_domains: Vec<String>,
    pub groups_claim: Option<String>,
    pub allowed_groups: Vec<String>,
    pub admin_groups: Vec<String>,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            issuer: None,
            client_id: None,
            client_secret: None,
            redirect_url: None,
            scopes: ["openid", "email", "profile"].map(String::from).to_vec(),
            require_email_verified: true,
            allowed_emails: Vec::new(),
            allowed_domains: Vec::new(),
            groups_claim: None,
            allowed_groups: Vec::new(),
            admin_groups: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------- self_service

/// Self-service runners: machines outside EC2 asking for just-in-time runner configurations with
/// an OIDC token. `trusted_identities` is kept as written (so the section serialises back to its
/// YAML); the same identities, checked and parsed, come from [`SelfServiceConfig::identities`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelfServiceConfig {
    /// Off by default: no token is accepted until an operator says whose.
    pub enabled: bool,
    /// How long a runner's configuration may go unused before the runner is deregistered.
    #[serde(with = "go_duration")]
    pub registration_timeout: Duration,
    /// Identities may be written while the section is off; they are checked all the same.
    pub trusted_identities: Vec<TrustedIdentityConfig>,
    /// `trusted_identities` parsed into domain values, once, by `Config::load`: later code never
    /// parses a pattern or a label again.
    #[serde(skip)]
    pub(crate) identities: Vec<TrustedIdentity>,
}

impl Default for SelfServiceConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            registration_timeout: Duration::from_secs(10 * 60),
            trusted_identities: Vec::new(),
            identities: Vec::new(),
        }
    }
}

/// By the fields as written: the parsed identities follow from them (and a regex or a glob has
/// no equality of its own).
impl PartialEq for SelfServiceConfig {
    fn eq(&self, other: &Self) -> bool {
        self.enabled == other.enabled
            && self.registration_timeout == other.registration_timeout
            && self.trusted_identities == other.trusted_identities
    }
}

/// One entry of `self_service.trusted_identities`, as written. Text stays text here; the rules
/// and the parsing live in `self_service.rs`, so that each refusal can name its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustedIdentityConfig {
    pub name: String,
    /// Kept byte for byte: it is compared so with a token's `iss`.
    pub issuer: String,
    /// `None`: taken from the issuer's discovery document.
    pub jwks_url: Option<String>,
    pub audience: String,
    pub identity_claim: String,
    /// Claim name → the rule its value must pass; sorted, so the rules are checked in a fixed
    /// order.
    pub claims: BTreeMap<String, ClaimRuleConfig>,
    /// Bare addresses are read as single-host networks (`/32`, `/128`).
    #[serde(with = "ip_nets")]
    pub source_cidrs: Vec<IpNet>,
    #[serde(with = "go_duration")]
    pub max_token_lifetime: Duration,
    pub runners: RunnersConfig,
    pub label_policy: Option<LabelPolicyConfig>,
}

impl Default for TrustedIdentityConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            issuer: String::new(),
            jwks_url: None,
            audience: String::new(),
            identity_claim: "sub".into(),
            claims: BTreeMap::new(),
            source_cidrs: Vec::new(),
            max_token_lifetime: Duration::from_secs(15 * 60),
            runners: RunnersConfig::default(),
            label_policy: None,
        }
    }
}

/// A claim rule as written: a plain value to match exactly (a number or a boolean counts as its
/// text, as a token's claim does), `{ prefix: TEXT }` or `{ regex: PATTERN }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRuleConfig {
    Exact(String),
    Prefix(String),
    Regex(String),
}

impl ClaimRuleConfig {
    const USAGE: &'static str =
        "expected a value to match exactly, { prefix: TEXT } or { regex: PATTERN }";
}

impl Serialize for ClaimRuleConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (kind, text) = match self {
            Self::Exact(value) => return serializer.serialize_str(value),
            Self::Prefix(prefix) => ("prefix", prefix),
            Self::Regex(pattern) => ("regex", pattern),
        };
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(kind, text)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for ClaimRuleConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        use serde_json::Value;
        let text = |value: Value| match value {
            Value::String(text) => Some(text),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            _ => None,
        };
        match Value::deserialize(deserializer)? {
            Value::Object(map) if map.len() == 1 => {
                let Some((kind, value)) = map.into_iter().next() else {
                    return Err(D::Error::custom(Self::USAGE));
                };
                let value = match value {
                    Value::String(value) => value,
                    _ => return Err(D::Error::custom(format!("{kind:?} takes text"))),
                };
                match kind.as_str() {
                    "prefix" => Ok(Self::Prefix(value)),
                    "regex" => Ok(Self::Regex(value)),
                    _ => Err(D::Error::custom(format!(
                        "unknown test {kind:?}: {}",
                        Self::USAGE
                    ))),
                }
            }
            value => text(value)
                .map(Self::Exact)
                .ok_or_else(|| D::Error::custom(Self::USAGE)),
        }
    }
}

/// Where an identity's runners register on GitHub, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunnersConfig {
    /// Required; an `Option` so its absence is refused by name.
    pub scope: Option<Scope>,
    /// With scope `org`.
    pub org: Option<String>,
    /// With scope `repo`: `owner/name`.
    pub repo: Option<String>,
    pub runner_group_id: i64,
    /// `None`: the identity's name and `-`.
    pub name_prefix: Option<String>,
}

impl Default for RunnersConfig {
    fn default() -> Self {
        Self {
            scope: None,
            org: None,
            repo: None,
            runner_group_id: 1,
            name_prefix: None,
        }
    }
}

/// The default label policy of an identity's owners, as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelPolicyConfig {
    /// Globs, `*` for any run of characters.
    pub allowed_labels: Vec<String>,
    pub required_labels: Vec<String>,
    /// Required; an `Option` so its absence is refused by name.
    pub max_live_runners: Option<u32>,
}

// --------------------------------------------------------------------------- serde adapters
// `url` and `ipnet` are built without their serde features in this workspace, and these adapters
// also give better messages than the crates' own ("must be an absolute URL").

fn parse_url(text: &str) -> Result<Url, String> {
    Url::parse(text).map_err(|e| format!("invalid URL {text:?} ({e})"))
}

mod required_url {
    use serde::{Deserialize, Deserializer, Serializer};
    use url::Url;

    pub fn serialize<S: Serializer>(value: &Url, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
        super::parse_url(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

mod optional_url {
    use serde::{Deserialize, Deserializer, Serializer};
    use url::Url;

    pub fn serialize<S: Serializer>(value: &Option<Url>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(url) => serializer.serialize_some(url.as_str()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Url>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| super::parse_url(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Parses a CIDR, or a bare address as a network of one host.
pub(crate) fn parse_ip_net(text: &str) -> Result<IpNet, String> {
    IpNet::from_str(text)
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!(
                "invalid address or CIDR {text:?} (use forms like 10.0.0.0/8, 127.0.0.1 or ::1)"
            )
        })
}

mod ip_nets {
    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[IpNet], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(value.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
        // One element at a time, so a bad entry's error carries its index in the path.
        struct Entry(IpNet);
        impl<'de> Deserialize<'de> for Entry {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                super::parse_ip_net(&String::deserialize(deserializer)?)
                    .map(Entry)
                    .map_err(serde::de::Error::custom)
            }
        }
        Ok(Vec::<Entry>::deserialize(deserializer)?
            .into_iter()
            .map(|entry| entry.0)
            .collect())
    }
}

/// A URL written in this file; the tests parse every default.
fn constant_url(url: &str) -> Url {
    #[allow(clippy::expect_used)]
    Url::parse(url).expect("a valid constant URL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_reads_count_and_go_duration_window() {
        let limit: RateLimit = "10/5m".parse().unwrap();
        assert_eq!(
            limit,
            RateLimit {
                attempts: 10,
                window: Duration::from_secs(300)
            }
        );
        assert_eq!(limit.to_string(), "10/5m");
    }

    #[test]
    fn rate_limit_refuses_zero_missing_parts_and_bad_windows() {
        for bad in [
            "0/5m",
            "10",
            "/5m",
            "10/",
            "ten/5m",
            "10/5minutes",
            "10/0s",
            "-1/5m",
        ] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bare_addresses_become_single_host_networks() {
        assert_eq!(
            parse_ip_net("127.0.0.1").unwrap().to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(parse_ip_net("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_ip_net("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!(parse_ip_net("10.0.0.0/33").is_err());
        assert!(parse_ip_net("proxy.local").is_err());
    }

    #[test]
    fn log_output_is_stdout_or_an_absolute_path() {
        assert_eq!("stdout".parse::<LogOutput>().unwrap(), LogOutput::Stdout);
        assert_eq!(
            "/var/log/pacer.log".parse::<LogOutput>().unwrap(),
            LogOutput::File("/var/log/pacer.log".into())
        );
        assert!("logs/pacer.log".parse::<LogOutput>().is_err());
        assert!("stderr".parse::<LogOutput>().is_err());
    }

    #[test]
    fn a_bare_port_binds_every_interface() {
        assert_eq!(bind_addr(":3000"), "0.0.0.0:3000");
        assert_eq!(bind_addr("127.0.0.1:3000"), "127.0.0.1:3000");
        assert_eq!(bind_addr("[::1]:3000"), "[::1]:3000");
    }
}

// --------------------------------------------------------------------------------------- budgets

/// One entry of `budgets:`, as written; `budgets.rs` checks it and names the key of each refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    pub name: String,
    /// A project's name: the budget covers all its pools.
    pub project: Option<String>,
    /// `project/pool`, both by name: the budget covers that pool.
    pub pool: Option<String>,
    pub monthly_usd: f64,
    pub warn_percent: u32,
    pub enforce: bool,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            project: None,
            pool: None,
            monthly_usd: 0.0,
            warn_percent: 80,
            enforce: false,
        }
    }
}
