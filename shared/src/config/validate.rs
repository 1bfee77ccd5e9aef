//! The rules a loaded configuration must satisfy before pacer starts.
//!
//! Validation is fail-fast: the first broken rule is returned, naming its key. Secret values are
//! described by their length only. Values that are still `ssm:` / `secretsmanager:` references
//! are checked for their shape before resolution and for their content after it, which is why
//! there are two phases.

use super::error::ConfigError;
use super::secret::Secret;
use super::sections::{
    AcmeConfig, AuthConfig, DatabaseEngine, FleetEngine, GithubConfig, OidcConfig, PricingConfig,
    QueueEngine, RunnerConfig, ServerConfig, TlsConfig, TlsMode,
};
use super::{Config, Function};
use crate::domain::cost::micro_usd;
use crate::domain::duration::format_go_duration;
use crate::domain::pool::is_instance_type;
use std::path::Path;
use std::time::Duration;
use url::Url;

/// Minimum length of the keys pacer signs with.
pub(crate) const MIN_SIGNING_SECRET_CHARS: usize = 32;

/// More connections than this would exhaust file descriptors long before the cap applied.
const MAX_CONNECTIONS: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// At load: references are only checked for shape; their values are not known yet.
    BeforeResolution,
    /// After `resolve_secrets`: every secret holds its real value.
    Resolved,
}

type Check = Result<(), ConfigError>;

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, message)
}

pub(crate) fn validate(cfg: &Config, phase: Phase) -> Check {
    contradictions(cfg)?;
    secret_references(cfg, phase)?;
    server(&cfg.server)?;
    deployment_name(&cfg.deployment.name)?;
    github(&cfg.github, cfg.function, phase)?;
    aws(cfg)?;
    store_and_queue(cfg)?;
    runner_callbacks(cfg)?;
    runner(&cfg.runner)?;
    timings(cfg)?;
    auth(&cfg.auth, cfg.function, phase)?;
    Ok(())
}

/// Settings that cannot hold together, whatever their individual values.
fn contradictions(cfg: &Config) -> Check {
    if !cfg.aws.disabled {
        return Ok(());
    }
    let needs_aws = |what: &str, instead: &str| {
        format!(
            "{what} needs AWS, but aws.disabled is true (use {instead}, or set aws.disabled to false)"
        )
    };
    if cfg.database.engine == DatabaseEngine::Dynamodb {
        return Err(invalid("database.engine", needs_aws("dynamodb", "sqlite")));
    }
    if cfg.queue.engine == QueueEngine::Sqs {
        return Err(invalid("queue.engine", needs_aws("sqs", "memory")));
    }
    if cfg.fleet.engine == FleetEngine::Ec2 {
        return Err(invalid("fleet.engine", needs_aws("ec2", "simulated")));
    }
    Ok(())
}

/// Reference shapes before resolution; leftovers after it.
fn secret_references(cfg: &Config, phase: Phase) -> Check {
    for (key, secret) in cfg.secrets() {
        let Some(reference) = secret.and_then(Secret::reference) else {
            continue;
        };
        if phase == Phase::Resolved {
            return Err(invalid(
                key,
                format!(
                    "secret reference {reference} was not resolved (resolve_secrets runs at start)"
                ),
            ));
        }
        reference.check().map_err(|message| invalid(key, message))?;
        if cfg.aws.disabled {
            return Err(invalid(
                key,
                format!(
                    "is the secret reference {reference}, which cannot be read because aws.disabled is true"
                ),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------- server

fn server(server: &ServerConfig) -> Check {
    check_listen_addr("server.addr", &server.addr)?;
    if let Some(url) = &server.public_url {
        check_http_url("server.public_url", url)?;
    }
    // Below a second, clients on slow links would be cut off; above the upper bounds, slow
    // clients hold connections long enough to starve the others again.
    let (second, minute) = (Duration::from_secs(1), Duration::from_secs(60));
    check_duration_between(
        "server.header_read_timeout",
        server.header_read_timeout,
        second,
        5 * minute,
    )?;
    check_duration_between(
        "server.request_timeout",
        server.request_timeout,
        second,
        60 * minute,
    )?;
    if !(1..=MAX_CONNECTIONS).contains(&server.max_connections) {
        return Err(invalid(
            "server.max_connections",
            format!(
                "must be between 1 and {MAX_CONNECTIONS} (got {})",
                server.max_connections
            ),
        ));
    }
    tls(&server.tls)
}

fn tls(tls: &TlsConfig) -> Check {
    match tls.mode {
        TlsMode::None => Ok(()),
        TlsMode::Manual => {
            let cert = tls.cert.as_deref().ok_or_else(|| {
                invalid("server.tls.cert", "required when server.tls.mode is manual")
            })?;
            let key = tls.key.as_deref().ok_or_else(|| {
                invalid("server.tls.key", "required when server.tls.mode is manual")
            })?;
            check_readable("server.tls.cert", cert)?;
            check_readable("server.tls.key", key)
        }
        TlsMode::SelfSigned => match &tls.fqdn {
            Some(fqdn) if !is_host_name(fqdn) => Err(invalid(
                "server.tls.fqdn",
                format!("{fqdn:?} is not a host name"),
            )),
            _ => Ok(()),
        },
        TlsMode::Acme => acme(&tls.acme),
    }
}

fn acme(acme: &AcmeConfig) -> Check {
    if acme.hosts.is_empty() {
        return Err(invalid(
            "server.tls.acme.hosts",
            "list at least one host name when server.tls.mode is acme",
        ));
    }
    for (index, host) in acme.hosts.iter().enumerate() {
        if !is_host_name(host) {
            return Err(invalid(
                &format!("server.tls.acme.hosts[{index}]"),
                format!("{host:?} is not a host name (no scheme, port or path)"),
            ));
        }
    }
    if let Some(email) = &acme.email {
        if !is_email(email) {
            return Err(invalid(
                "server.tls.acme.email",
                format!("{email:?} is not an email address"),
            ));
        }
    }
    if acme.cache_dir.as_os_str().is_empty() {
        return Err(invalid("server.tls.acme.cache_dir", "must not be empty"));
    }
    check_listen_addr("server.tls.acme.http_addr", &acme.http_addr)?;
    check_http_url("server.tls.acme.directory_url", &acme.directory_url)?;
    if let Some(ca_cert) = &acme.ca_cert {
        check_readable("server.tls.acme.ca_cert", ca_cert)?;
    }
    Ok(())
}

fn deployment_name(name: &str) -> Check {
    let well_formed = (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if well_formed {
        Ok(())
    } else {
        Err(invalid(
            "deployment.name",
            format!(
                "{name:?} must be 1 to 32 characters of a-z, 0-9 and '-', starting with a letter"
            ),
        ))
    }
}

// ---------------------------------------------------------------------------------------- github

fn github(github: &GithubConfig, function: Function, phase: Phase) -> Check {
    check_http_url("github.api_url", &github.api_url)?;

    // Secrets given are checked even while GitHub is off, so turning it on later holds no surprise.
    check_non_empty_secret(
        "github.webhook_secret",
        github.webhook_secret.as_ref(),
        phase,
    )?;
    check_non_empty_secret(
        "github.webhook_secret_previous",
        github.webhook_secret_previous.as_ref(),
        phase,
    )?;
    check_signing_secret(
        "github.callback_hmac_secret",
        github.callback_hmac_secret.as_ref(),
        phase,
    )?;
    if github.private_key.is_some() && github.private_key_path.is_some() {
        return Err(invalid(
            "github.private_key",
            "set either github.private_key or github.private_key_path, not both",
        ));
    }
    if github.disabled {
        return Ok(());
    }

    match github.app_id {
        None => {
            return Err(invalid(
                "github.app_id",
                "required unless github.disabled is true",
            ));
        }
        Some(0) => {
            return Err(invalid(
                "github.app_id",
                "must be the App's id, a positive number",
            ));
        }
        Some(_) => {}
    }
    if github.webhook_secret.is_none() && function.verifies_webhooks() {
        return Err(invalid(
            "github.webhook_secret",
            format!(
                "required unless github.disabled is true: {}",
                function.needs("will not accept webhooks it cannot verify")
            ),
        ));
    }
    if github.callback_hmac_secret.is_none() && function.signs_callbacks() {
        return Err(invalid(
            "github.callback_hmac_secret",
            format!(
                "required unless github.disabled is true: {} (generate one with: openssl rand -hex 32)",
                function.needs("signs runner callbacks with it")
            ),
        ));
    }
    if github.private_key.is_none() && github.private_key_path.is_none() {
        if !function.calls_github() {
            return Ok(());
        }
        return Err(invalid(
            "github.private_key_path",
            format!(
                "required unless github.disabled is true: {} (or give the PEM itself in github.private_key)",
                function.needs("calls GitHub as the App")
            ),
        ));
    }
    github_private_key(github, phase)
}

fn github_private_key(github: &GithubConfig, phase: Phase) -> Check {
    if let Some(secret) = &github.private_key {
        if !is_checkable(secret, phase) {
            return Ok(());
        }
    }
    let pem = github.private_key_pem()?;
    match &github.private_key_path {
        Some(path) if github.private_key.is_none() => check_pem_private_key(
            "github.private_key_path",
            pem.expose(),
            &format!("{} does not", path.display()),
        ),
        _ => check_pem_private_key("github.private_key", pem.expose(), "does not"),
    }
}

/// A shape check only (the GitHub module parses the key): it catches a wrong file or a
/// truncated paste at start rather than at the first webhook.
fn check_pem_private_key(key: &str, pem: &str, subject: &str) -> Check {
    let problem = match pem_private_key_label(pem) {
        Ok(label) if label.contains("ENCRYPTED") => {
            Some("hold an unencrypted key (this one is encrypted)")
        }
        Ok(_) => None,
        Err(problem) => Some(problem),
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(invalid(key, format!("{subject} {problem}"))),
    }
}

/// The label of the first PEM block (`RSA PRIVATE KEY`, `PRIVATE KEY`…), if it is a complete
/// private-key block.
pub(crate) fn pem_private_key_label(pem: &str) -> Result<&str, &'static str> {
    const NOT_PEM: &str = "look like a PEM private key (-----BEGIN ... PRIVATE KEY-----)";
    let (_, after_begin) = pem.split_once("-----BEGIN ").ok_or(NOT_PEM)?;
    let (label, body_and_end) = after_begin.split_once("-----").ok_or(NOT_PEM)?;
    if !label.ends_with("PRIVATE KEY") {
        return Err(NOT_PEM);
    }
    let end_marker = format!("-----END {label}-----");
    let (body, _) = body_and_end
        .split_once(&end_marker)
        .ok_or("end with its -----END line (truncated?)")?;
    if body.trim().is_empty() {
        return Err("contain key data between the BEGIN and END lines");
    }
    Ok(label)
}

// ------------------------------------------------------------------------------ AWS and storage

fn aws(cfg: &Config) -> Check {
    let region = &cfg.aws.region;
    let well_formed = !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !well_formed {
        return Err(invalid(
            "aws.region",
            format!("{region:?} is not an AWS region name like us-east-1"),
        ));
    }
    if let Some(url) = &cfg.aws.endpoint_url {
        check_http_url("aws.endpoint_url", url)?;
    }
    Ok(())
}

fn store_and_queue(cfg: &Config) -> Check {
    match cfg.database.engine {
        DatabaseEngine::Sqlite if cfg.database.path.as_os_str().is_empty() => {
            return Err(invalid(
                "database.path",
                "required when database.engine is sqlite",
            ));
        }
        DatabaseEngine::Dynamodb => {
            let table = &cfg.database.table;
            if table.is_empty() {
                return Err(invalid(
                    "database.table",
                    "required when database.engine is dynamodb",
                ));
            }
            let well_formed = (3..=255).contains(&table.len())
                && table
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !well_formed {
                return Err(invalid(
                    "database.table",
                    format!(
                        "{table:?} is not a DynamoDB table name (3 to 255 of a-z, A-Z, 0-9, '_', '-', '.')"
                    ),
                ));
            }
        }
        DatabaseEngine::Sqlite => {}
    }
    if cfg.queue.engine == QueueEngine::Sqs {
        let url = cfg
            .queue
            .url
            .as_deref()
            .ok_or_else(|| invalid("queue.url", "required when queue.engine is sqs"))?;
        let parsed = Url::parse(url)
            .map_err(|e| invalid("queue.url", format!("invalid URL {url:?} ({e})")))?;
        check_http_url("queue.url", &parsed)?;
    }
    Ok(())
}

/// A runner's callbacks carry its token one way and its JIT configuration the other: over plain
/// http between an EC2 instance and pacer, anyone on the path could read both and take the runner's
/// place. Simulated runners call back inside pacer's own process.
fn runner_callbacks(cfg: &Config) -> Check {
    if cfg.fleet.engine != FleetEngine::Ec2 {
        return Ok(());
    }
    let callback = cfg.callback_url();
    let Ok(url) = Url::parse(&callback) else {
        // Only a malformed server.addr gets here, and that is refused on its own.
        return Ok(());
    };
    if url.scheme() != "http" || is_loopback(&url) {
        return Ok(());
    }
    let what = match cfg.server.public_url {
        Some(_) => format!("{callback} is plain http"),
        None => format!("is unset, so runners would call back on {callback}, plain http"),
    };
    Err(invalid(
        "server.public_url",
        format!(
            "{what}: with fleet.engine ec2, each runner's callback token and JIT configuration would cross the network in clear; use an https:// URL (plain http is accepted only for a loopback host, or with fleet.engine simulated)"
        ),
    ))
}

/// 127.0.0.0/8, ::1 or `localhost`: traffic that never leaves the machine.
pub(super) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn runner(runner: &RunnerConfig) -> Check {
    runner_version(&runner.version)?;
    for (key, _, _, value) in runner.sha256.given() {
        if crate::github::sha256_hex(value).is_none() {
            return Err(invalid(
                key,
                format!(
                    "{value:?} is not a SHA-256: write its 64 hex digits, as sha256sum prints them"
                ),
            ));
        }
        if runner.version == "latest" {
            return Err(invalid(
                key,
                "needs a pinned runner.version such as 2.321.0: a checksum belongs to one release, and latest moves on",
            ));
        }
    }
    Ok(())
}

fn runner_version(version: &str) -> Check {
    let is_pin = {
        let parts: Vec<&str> = version.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
    };
    if version == "latest" || is_pin {
        Ok(())
    } else {
        Err(invalid(
            "runner.version",
            format!("{version:?} must be \"latest\" or a release like 2.321.0"),
        ))
    }
}

fn timings(cfg: &Config) -> Check {
    let positive = |key: &str, value: Duration| {
        if value.is_zero() {
            Err(invalid(key, "must be longer than zero"))
        } else {
            Ok(())
        }
    };
    positive("reaper.interval", cfg.reaper.interval)?;
    positive("reaper.redrive_after", cfg.reaper.redrive_after)?;
    positive("reaper.orphan_grace", cfg.reaper.orphan_grace)?;
    if cfg.fleet.simulated.bootstrap_failure_percent > 100 {
        return Err(invalid(
            "fleet.simulated.bootstrap_failure_percent",
            format!(
                "must be between 0 and 100 (got {})",
                cfg.fleet.simulated.bootstrap_failure_percent
            ),
        ));
    }
    if !(1..=20).contains(&cfg.reaper.max_attempts) {
        return Err(invalid(
            "reaper.max_attempts",
            format!("must be between 1 and 20 (got {})", cfg.reaper.max_attempts),
        ));
    }
    positive("pricing.cache_ttl", cfg.pricing.cache_ttl)?;
    pricing(&cfg.pricing)?;
    positive("auth.session_ttl", cfg.auth.session_ttl)
}

/// The most USD per hour an override may name: above the dearest EC2
/// instance by far, so a slip of the decimal point is caught.
const MAX_OVERRIDE_USD_PER_HOUR: f64 = 1_000.0;

fn pricing(pricing: &PricingConfig) -> Check {
    for (instance_type, &usd) in &pricing.overrides {
        let key = format!("pricing.overrides.{}", instance_type.escape_debug());
        if !is_instance_type(instance_type) {
            return Err(invalid(
                &key,
                "is not an EC2 instance type: write it as AWS does, lower case, e.g. m7g.large",
            ));
        }
        if !(0.0..=MAX_OVERRIDE_USD_PER_HOUR).contains(&usd) || micro_usd(usd).is_none() {
            return Err(invalid(
                &key,
                format!("must be USD per hour, from 0 to {MAX_OVERRIDE_USD_PER_HOUR} (got {usd})"),
            ));
        }
    }
    if !(0.0..=10.0).contains(&pricing.ebs_gb_month) {
        return Err(invalid(
            "pricing.ebs_gb_month",
            format!(
                "must be USD per GB-month, from 0 to 10 (got {}; gp3 lists at 0.08)",
                pricing.ebs_gb_month
            ),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------ auth

fn auth(auth: &AuthConfig, function: Function, phase: Phase) -> Check {
    if !auth.disabled && auth.jwt_secret.is_none() && function.serves_console() {
        return Err(invalid(
            "auth.jwt_secret",
            format!(
                "required unless auth.disabled is true: {} (generate one with: openssl rand -hex 32)",
                function.needs("signs console sessions with it")
            ),
        ));
    }
    check_signing_secret("auth.jwt_secret", auth.jwt_secret.as_ref(), phase)?;
    if !auth.disabled && !auth.local.enabled && !auth.oidc.enabled {
        return Err(invalid(
            "auth.local.enabled",
            "no way to sign in: turn on auth.local.enabled or auth.oidc.enabled (or, behind your own gate, set auth.disabled: true)",
        ));
    }
    if !is_email(&auth.local.email) {
        return Err(invalid(
            "auth.local.email",
            format!("{:?} is not an email address", auth.local.email),
        ));
    }
    oidc(&auth.oidc, function, phase)
}

fn oidc(oidc: &OidcConfig, function: Function, phase: Phase) -> Check {
    // The shapes of the allow-lists are checked even while OIDC is off: they are wrong either way.
    for (index, email) in oidc.allowed_emails.iter().enumerate() {
        let key = format!("auth.oidc.allowed_emails[{index}]");
        if let Some(domain) = email.strip_prefix('@') {
            return Err(invalid(
                &key,
                format!(
                    "{email:?} is a domain, not an address: put {domain:?} in auth.oidc.allowed_domains"
                ),
            ));
        }
        if !is_email(email) {
            return Err(invalid(
                &key,
                format!("{email:?} is not a full email address"),
            ));
        }
    }
    for (index, domain) in oidc.allowed_domains.iter().enumerate() {
        if !is_host_name(domain) {
            return Err(invalid(
                &format!("auth.oidc.allowed_domains[{index}]"),
                format!("{domain:?} is not a domain; write it without @, like example.com"),
            ));
        }
    }
    let claim_set = oidc
        .groups_claim
        .as_deref()
        .is_some_and(|claim| !claim.is_empty());
    for (key, groups) in [
        ("auth.oidc.allowed_groups", &oidc.allowed_groups),
        ("auth.oidc.admin_groups", &oidc.admin_groups),
    ] {
        if !groups.is_empty() && !claim_set {
            return Err(invalid(
                key,
                "needs auth.oidc.groups_claim, the ID token claim that lists the user's groups",
            ));
        }
        if groups.iter().any(String::is_empty) {
            return Err(invalid(key, "must not contain empty group names"));
        }
    }
    check_non_empty_secret(
        "auth.oidc.client_secret",
        oidc.client_secret.as_ref(),
        phase,
    )?;
    if !oidc.enabled {
        return Ok(());
    }

    let required = |key: &str| invalid(key, "required when auth.oidc.enabled is true");
    let issuer = oidc
        .issuer
        .as_ref()
        .ok_or_else(|| required("auth.oidc.issuer"))?;
    check_http_url("auth.oidc.issuer", issuer)?;
    if oidc.client_id.as_deref().is_none_or(str::is_empty) {
        return Err(required("auth.oidc.client_id"));
    }
    if oidc.client_secret.is_none() && function.serves_console() {
        return Err(required("auth.oidc.client_secret"));
    }
    let redirect = oidc
        .redirect_url
        .as_ref()
        .ok_or_else(|| required("auth.oidc.redirect_url"))?;
    check_http_url("auth.oidc.redirect_url", redirect)?;
    // The issuer is the identity provider and the redirect URL is pacer: one origin for both means
    // pacer was named as its own provider, and discovery would loop back to itself.
    if issuer.origin() == redirect.origin() {
        return Err(invalid(
            "auth.oidc.issuer",
            format!(
                "{} shares its origin (scheme, host and port) with auth.oidc.redirect_url; the issuer is the identity provider's URL, not pacer's",
                issuer.origin().ascii_serialization()
            ),
        ));
    }
    if !oidc.scopes.iter().any(|scope| scope == "openid") {
        return Err(invalid("auth.oidc.scopes", "must include openid"));
    }
    Ok(())
}

// --------------------------------------------------------------------------------- small checks

fn check_signing_secret(key: &str, secret: Option<&Secret>, phase: Phase) -> Check {
    match secret {
        Some(secret)
            if is_checkable(secret, phase) && secret.char_len() < MIN_SIGNING_SECRET_CHARS =>
        {
            Err(invalid(
                key,
                format!(
                    "must be at least {MIN_SIGNING_SECRET_CHARS} characters (got {})",
                    secret.char_len()
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn check_non_empty_secret(key: &str, secret: Option<&Secret>, phase: Phase) -> Check {
    match secret {
        Some(secret) if is_checkable(secret, phase) && secret.is_empty() => {
            Err(invalid(key, "must not be empty"))
        }
        _ => Ok(()),
    }
}

/// Whether a secret's value can be judged yet: not while it is still a reference.
fn is_checkable(secret: &Secret, phase: Phase) -> bool {
    phase == Phase::Resolved || secret.reference().is_none()
}

fn check_http_url(key: &str, url: &Url) -> Check {
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(
            key,
            format!("{url} must be an http:// or https:// URL with a host"),
        ));
    }
    Ok(())
}

fn check_duration_between(key: &str, value: Duration, min: Duration, max: Duration) -> Check {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(invalid(
        key,
        format!(
            "must be between {} and {} (got {})",
            format_go_duration(min),
            format_go_duration(max),
            format_go_duration(value)
        ),
    ))
}

fn check_readable(key: &str, path: &Path) -> Check {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
}

/// `host:port` or `:port`; the host may be a name, an IPv4 address or a bracketed IPv6 address.
pub(crate) fn check_listen_addr(key: &str, addr: &str) -> Check {
    let refuse = || {
        invalid(
            key,
            format!("{addr:?} must be host:port or :port, like 127.0.0.1:3000 or :3000"),
        )
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(refuse)?;
    port.parse::<u16>().map_err(|_| refuse())?;
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        host.is_empty() || is_host_name(host)
    };
    if host_ok { Ok(()) } else { Err(refuse()) }
}

/// A DNS name or IPv4 address: dot-separated labels of letters, digits and '-'.
fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `local@domain`, with no spaces; `admin@localhost` counts.
fn is_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !local.contains(char::is_whitespace) && is_host_name(domain)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_take_host_and_port_or_a_bare_port() {
        for good in [
            "127.0.0.1:3000",
            ":3000",
            "localhost:8080",
            "[::1]:3000",
            "[::]:80",
            "0.0.0.0:0",
        ] {
            assert!(check_listen_addr("k", good).is_ok(), "{good}");
        }
        for bad in [
            "3000",
            "127.0.0.1",
            ":http",
            "::1:3000",
            "host:70000",
            "",
            "[::1:3000",
            "a b:1",
        ] {
            assert!(check_listen_addr("k", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pem_shape_check_accepts_private_keys_only() {
        let rsa =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(pem_private_key_label(rsa), Ok("RSA PRIVATE KEY"));
        let pkcs8 = "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----";
        assert_eq!(pem_private_key_label(pkcs8), Ok("PRIVATE KEY"));
        assert!(
            pem_private_key_label("-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----")
                .is_err()
        );
        assert!(pem_private_key_label("-----BEGIN RSA PRIVATE KEY-----\nMIIE").is_err());
        assert!(
            pem_private_key_label("-----BEGIN PRIVATE KEY-----\n\n-----END PRIVATE KEY-----")
                .is_err()
        );
        assert!(pem_private_key_label("not a key").is_err());
    }

    #[test]
    fn emails_need_a_local_part_and_a_domain() {
        assert!(is_email("admin@localhost"));
        assert!(is_email("ops@example.com"));
        for bad in [
            "@example.com",
            "ops@",
            "ops",
            "ops @example.com",
            "ops@exa mple.com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
