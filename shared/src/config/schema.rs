//! The one table of every configuration key.
//!
//! Each key's path, kind, default and meaning live here and nowhere else. The table drives three
//! things: resolving `PACER_*` variables (whose names are ambiguous on their own, because key names
//! contain underscores), typing and normalising values before they reach serde, and the reference
//! in `docs/configuration.md` (a test fails when a key is missing there). Another test checks the
//! table against the structs' `Default`, so the two cannot drift apart.

/// How a key's value is written. It decides how an environment variable's text becomes a value
/// and how loosely written YAML scalars are tidied before typed parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Free text.
    Text,
    /// Text that must never be printed; may be an `ssm:` / `secretsmanager:` reference.
    Secret,
    /// `true` / `false` (`1` / `0` from the environment).
    Bool,
    /// A whole number.
    Integer,
    /// A number that may have a fraction, such as a price in USD.
    Decimal,
    /// A Go-syntax duration such as `90s`.
    Duration,
    /// An absolute URL.
    Url,
    /// A filesystem path.
    Path,
    /// A socket address, `host:port` or `:port`.
    Address,
    /// One of a fixed set of lower-case words.
    Choice(&'static [&'static str]),
    /// A list of strings (comma-separated or a JSON array in the environment).
    List,
    /// `N/duration`, e.g. `10/5m`.
    RateLimit,
    /// A list of mappings, each with keys of its own that its struct checks (one trusted identity
    /// per entry, say). No single variable could hold one readably, so such a key is written in
    /// the YAML file only: its variable name is reserved, and refused when set.
    Mappings,
    /// A mapping of names to values (instance type to price, say); YAML only, as [`Kind::Mappings`].
    Mapping,
}

impl Kind {
    /// A short name for the docs and error messages.
    pub(crate) fn describe(self) -> String {
        match self {
            Kind::Text => "text".into(),
            Kind::Secret => "secret".into(),
            Kind::Bool => "boolean".into(),
            Kind::Integer => "integer".into(),
            Kind::Decimal => "decimal".into(),
            Kind::Duration => "duration".into(),
            Kind::Url => "URL".into(),
            Kind::Path => "path".into(),
            Kind::Address => "address".into(),
            Kind::Choice(words) => words.join(" \\| "),
            Kind::List => "list".into(),
            Kind::RateLimit => "rate limit".into(),
            Kind::Mappings => "list of mappings".into(),
            Kind::Mapping => "mapping".into(),
        }
    }

    /// True for the kinds no `PACER_*` variable can set.
    pub(crate) fn yaml_only(self) -> bool {
        matches!(self, Kind::Mappings | Kind::Mapping)
    }
}

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    /// Dotted path, e.g. `server.tls.acme.http_addr`.
    pub path: &'static str,
    pub kind: Kind,
    /// True when the key may be left unset (an `Option` in the structs). For such keys an empty
    /// string counts as unset, so `PACER_SERVER_PUBLIC_URL=` clears the value.
    pub optional: bool,
    /// The default as written in YAML (`""` for an optional key with no default).
    pub default: &'static str,
    /// One line saying what the key means.
    pub doc: &'static str,
}

impl Key {
    /// The environment variable that overrides this key: `PACER_` + the path upper-cased with
    /// dots turned into underscores. A [`Kind::yaml_only`] key has the name too, reserved so
    /// that setting it is refused with a reason instead of as an unknown variable.
    pub(crate) fn env_name(&self) -> String {
        env_name(self.path)
    }
}

pub(crate) fn env_name(path: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        path.replace('.', "_").to_ascii_uppercase()
    )
}

/// The prefix of every variable pacer reads.
pub const ENV_PREFIX: &str = "PACER_";

/// `PACER_*` variables that are not configuration keys but belong to pacer, so the overlay must
/// not refuse them as unknown keys.
///
/// - `PACER_CONFIG`: path of the YAML file (the `--config` flag of `pacer serve`).
/// - `PACER_LOG`: a tracing filter directive refining `logging.level` per module.
/// - `PACER_FAILPOINTS`: test-only crash points (see `crate::failpoint`), known only to a build
///   with the `failpoints` cargo feature, which the tests turn on. A default build (`cargo build
///   -p pacer`, the Lambda zips) holds neither the name nor the code, and refuses the variable
///   like any other unknown one.
pub const NON_CONFIG_ENV_VARS: &[&str] = &[
    "PACER_CONFIG",
    "PACER_LOG",
    #[cfg(feature = "failpoints")]
    crate::failpoint::ENV,
];

const fn key(path: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> Key {
    Key {
        path,
        kind,
        optional: false,
        default,
        doc,
    }
}

const fn optional(path: &'static str, kind: Kind, doc: &'static str) -> Key {
    Key {
        path,
        kind,
        optional: true,
        default: "",
        doc,
    }
}

pub(crate) const TLS_MODES: &[&str] = &["none", "manual", "self", "acme"];
pub(crate) const KEY_ALGS: &[&str] = &["rsa", "ed25519"];
pub(crate) const DATABASE_ENGINES: &[&str] = &["sqlite", "dynamodb"];
pub(crate) const QUEUE_ENGINES: &[&str] = &["memory", "sqs"];
pub(crate) const FLEET_ENGINES: &[&str] = &["ec2", "simulated"];
pub(crate) const LOG_LEVELS: &[&str] = &["debug", "info", "warn", "error"];
pub(crate) const LOG_FORMATS: &[&str] = &["json", "text"];

pub(crate) const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

use Kind::*;

/// Every configuration key, in the order of the docs.
#[rustfmt::skip]
pub(crate) const KEYS: &[Key] = &[
    // server
    key("server.addr", Address, "127.0.0.1:3000",
        "Where the HTTP server listens; `:3000` listens on every interface."),
    optional("server.public_url", Url,
        "The http(s) URL at which GitHub and the runners reach pacer; runner callbacks are built from it."),
    key("server.trusted_proxies", List, "[]",
        "Proxy addresses or CIDRs whose X-Forwarded-For is believed; empty means the peer address is the client."),
    optional("server.cloudfront_origin_secret", Secret,
        "In Lambda behind CloudFront: the value of the `X-Pacer-Origin-Secret` header the distribution adds; only requests carrying it may name the client with `CloudFront-Viewer-Address`."),
    key("server.header_read_timeout", Duration, "10s",
        "How long a client may take over the TLS handshake and over each request's headers, and how long a connection may sit idle between requests; slower ones are disconnected (1s to 5m)."),
    key("server.request_timeout", Duration, "1m",
        "The most a request may take once its headers are in: reading its body (a webhook's may reach 25 MiB) and the answer; a request over it gets 408 (1s to 1h)."),
    key("server.max_connections", Integer, "512",
        "Connections served at once; more wait, unanswered, in the system's listen queue until one closes. Keep the open-file limit well above it (1 to 1000000)."),
    key("server.tls.mode", Choice(TLS_MODES), "none",
        "How pacer terminates TLS itself: not at all, with given PEM files, a self-signed certificate, or ACME. In the TLS modes every response carries HSTS for a year."),
    optional("server.tls.cert", Path, "PEM certificate chain for `manual` mode; read again every minute with the key, so a renewed pair is served without a restart."),
    optional("server.tls.key", Path, "PEM private key for `manual` mode."),
    optional("server.tls.fqdn", Text,
        "Extra host name for the `self` certificate; `localhost` is always in it."),
    key("server.tls.alg", Choice(KEY_ALGS), "rsa", "Key type of the `self` certificate."),
    key("server.tls.acme.hosts", List, "[]",
        "Host names ACME may issue certificates for (at least one); other names are refused."),
    optional("server.tls.acme.email", Text, "Contact address given to the ACME CA for expiry notices."),
    key("server.tls.acme.cache_dir", Path, "./certs",
        "Directory keeping issued certificates and the account key across restarts; make it persistent."),
    key("server.tls.acme.http_addr", Address, ":80",
        "Listener for HTTP-01 challenges; it redirects every other request to HTTPS."),
    key("server.tls.acme.directory_url", Url, LETS_ENCRYPT_DIRECTORY,
        "ACME directory to order from; point it at a test CA such as pebble for trials."),
    optional("server.tls.acme.ca_cert", Path,
        "Root certificate (PEM, first certificate of the file) trusted instead of the system roots when talking to the ACME directory: for a test CA."),
    // deployment
    key("deployment.name", Text, "pacer",
        "Name of this install: prefixes runner names and tags instances `pacer:deployment`, so installs never touch each other's."),
    // github
    key("github.disabled", Bool, "false",
        "Use an offline stand-in for GitHub (demos, the simulated fleet); logs a loud warning."),
    optional("github.app_id", Integer, "The GitHub App's numeric id."),
    optional("github.private_key_path", Path, "File holding the App's PEM private key."),
    optional("github.private_key", Secret,
        "The App's PEM private key itself, instead of `private_key_path`."),
    optional("github.webhook_secret", Secret,
        "The App's webhook secret; every delivery's signature is checked against it."),
    optional("github.webhook_secret_previous", Secret,
        "The previous webhook secret, still accepted while a rotation is under way."),
    optional("github.callback_hmac_secret", Secret,
        "pacer's own key (not a GitHub setting) for signing runner callback tokens; at least 32 characters."),
    key("github.api_url", Url, "https://api.github.com/",
        "GitHub REST API base; change it for GitHub Enterprise Server or a test double."),
    // aws
    key("aws.disabled", Bool, "false",
        "Run without AWS: no credentials are looked up; needs the sqlite, memory and simulated engines."),
    key("aws.region", Text, "us-east-1", "The one AWS region pacer works in."),
    key("aws.profile", Text, "",
        "Named profile for credentials; empty uses the SDK's default chain."),
    optional("aws.endpoint_url", Url,
        "Send every AWS call to this endpoint instead of AWS's own (an emulator such as moto)."),
    // database
    key("database.engine", Choice(DATABASE_ENGINES), "sqlite", "Where state is stored."),
    key("database.path", Path, "./data/pacer.db", "SQLite file, created on first start."),
    key("database.table", Text, "pacer", "DynamoDB table name."),
    key("database.config_cache_ttl", Duration, "10s",
        "How long a process takes in webhooks with the projects, pools and repository bindings it read, without reading them again: a change made through the API is seen at once by the process that made it and by every other within this time. `0s` reads them for every webhook."),
    // queue
    key("queue.engine", Choice(QUEUE_ENGINES), "memory",
        "How jobs are handed to the orchestrator: in process, or through SQS."),
    optional("queue.url", Text, "SQS queue URL (required with the `sqs` engine)."),
    // fleet
    key("fleet.engine", Choice(FLEET_ENGINES), "ec2",
        "What launches runners: real EC2 instances, or a simulation that boots and runs jobs in process."),
    key("fleet.simulated.boot_delay", Duration, "2s",
        "How long a simulated instance takes to boot and register."),
    key("fleet.simulated.job_time", Duration, "10s", "How long a simulated runner spends on its job."),
    key("fleet.simulated.bootstrap_failure_percent", Integer, "0",
        "Share of simulated instances (0 to 100, evenly spread) whose bootstrap fails and reports an error tail, to see how pacer handles it."),
    // runner
    key("runner.version", Text, "latest",
        "Actions runner release to install: `latest` (looked up on GitHub, cached) or a pin like `2.321.0`."),
    optional("runner.sha256.linux_x64", Text,
        "SHA-256 (64 hex digits) of the pinned release's `linux-x64` tarball, for when GitHub's release API is out of reach; once any `runner.sha256` key is set, GitHub is not asked for checksums."),
    optional("runner.sha256.linux_arm64", Text,
        "SHA-256 of the pinned release's `linux-arm64` tarball, as `runner.sha256.linux_x64`."),
    // reaper
    key("reaper.interval", Duration, "1m", "How often the reaper reconciles store, EC2 and GitHub."),
    key("reaper.redrive_after", Duration, "5m",
        "How long a job may sit queued or claimed before the reaper hands it to the orchestrator again."),
    key("reaper.orphan_grace", Duration, "10m",
        "How old an instance with no matching runner record must be before it is terminated."),
    key("reaper.max_attempts", Integer, "3",
        "Launch attempts per job before it is marked failed (1 to 20)."),
    key("reaper.degraded_cooldown", Duration, "10m",
        "How long a pool or instance type that keeps failing is skipped before it is tried again."),
    // pricing
    key("pricing.enabled", Bool, "true",
        "Quote an hourly price for every launched instance (needs AWS Pricing and spot price history access)."),
    key("pricing.cache_ttl", Duration, "24h", "How long a looked-up price is reused."),
    key("pricing.overrides", Mapping, "{}",
        "Instance type to USD per hour, e.g. `m7g.large: 0.0816`: used instead of any looked-up price, in every market (negotiated rates, Savings Plans, offline use); written in the YAML file only."),
    key("pricing.ebs_gb_month", Decimal, "0.08",
        "USD per GB-month of a runner's root volume (gp3's list price by default), added to its instance's price."),
    // logging
    key("logging.level", Choice(LOG_LEVELS), "info", "Lowest level written."),
    key("logging.format", Choice(LOG_FORMATS), "json",
        "`json` for machines and production, `text` for people."),
    key("logging.output", Path, "stdout", "`stdout` or an absolute file path."),
    key("logging.color", Bool, "false", "ANSI colours; only used with the `text` format."),
    // auth
    key("auth.disabled", Bool, "false",
        "Open the console without login (behind a private network only); logs a loud warning."),
    optional("auth.jwt_secret", Secret,
        "Signs session tokens and the OIDC state cookie; at least 32 characters; required unless `auth.disabled`."),
    key("auth.session_ttl", Duration, "12h", "How long a console session lasts."),
    key("auth.login_rate_limit", RateLimit, "10/5m",
        "Failed login attempts allowed per client address and window, as `N/duration`; a successful sign-in does not count."),
    key("auth.local.enabled", Bool, "true",
        "Email and password login; turned off automatically when OIDC is enabled."),
    key("auth.local.email", Text, "admin@localhost",
        "Email of the first admin, created on first start with a one-time password (stored lower-cased)."),
    key("auth.oidc.enabled", Bool, "false", "Single sign-on through an OpenID Provider."),
    optional("auth.oidc.issuer", Url,
        "The provider's issuer URL (http or https, with a host); never pacer's own origin."),
    optional("auth.oidc.client_id", Text, "Client id registered with the provider."),
    optional("auth.oidc.client_secret", Secret, "Client secret registered with the provider."),
    optional("auth.oidc.redirect_url", Url,
        "Where the provider sends the browser back: `<public_url>/api/auth/oidc/callback`."),
    key("auth.oidc.scopes", List, "[openid, email, profile]",
        "Scopes requested; add the one that carries groups if you gate on groups."),
    key("auth.oidc.require_email_verified", Bool, "true",
        "Refuse sign-ins whose ID token says the email is not verified."),
    key("auth.oidc.allowed_emails", List, "[]",
        "Exact email addresses admitted; a match skips the other allow-lists."),
    key("auth.oidc.allowed_domains", List, "[]",
        "Email domains admitted (the part after `@`, case-insensitive)."),
    optional("auth.oidc.groups_claim", Text,
        "ID token claim holding the user's groups (`groups`, `cognito:groups`, `roles`…)."),
    key("auth.oidc.allowed_groups", List, "[]",
        "Groups admitted (case-insensitive); any one is enough. Needs `groups_claim`."),
    key("auth.oidc.admin_groups", List, "[]",
        "Groups whose members get the admin role (case-insensitive). Needs `groups_claim`."),
    // self_service
    key("self_service.enabled", Bool, "false",
        "Hand just-in-time runner configurations to machines outside EC2 that present an OIDC token from a trusted identity; needs at least one entry in `trusted_identities`."),
    key("self_service.registration_timeout", Duration, "10m",
        "A self-service runner not seen online this long after its configuration was handed out is deregistered."),
    key("self_service.trusted_identities", Mappings, "[]",
        "The OIDC issuers whose tokens may ask for runners, each with its audience, claim rules, runner placement and label policy; written in the YAML file only, as described under \"Self-service runners\" in `docs/configuration.md`."),
    // budgets
    key("budgets", Mappings, "[]",
        "Monthly budgets, each for a project (`project: NAME`) or one pool (`pool: PROJECT/POOL`): `name`, `monthly_usd`, `warn_percent` (default 80) and `enforce` (default false: warn only; true: stop launching for it once spent until the month ends or the budget is raised); written in the YAML file only, as described under \"Budgets\" in `docs/cost.md`."),
];

/// The reference table of every key as Markdown: key, default, environment variable, kind and
/// meaning. `docs/configuration.md` embeds it verbatim (a test keeps the two identical), and the
/// binary can print it.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "| Key | Default | Environment variable | Kind | Meaning |\n|---|---|---|---|---|\n",
    );
    for key in KEYS {
        let default = match key.default {
            "" if key.optional => "unset".to_owned(),
            "" => "`\"\"`".to_owned(),
            value => format!("`{value}`"),
        };
        let variable = if key.kind.yaml_only() {
            "YAML only".to_owned()
        } else {
            format!("`{}`", key.env_name())
        };
        out.push_str(&format!(
            "| `{}` | {default} | {variable} | {} | {} |\n",
            key.path,
            key.kind.describe(),
            key.doc
        ));
    }
    out
}

/// Looks a key up by its dotted path.
pub(crate) fn find(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.path == path)
}

/// True when `path` is a section (a proper prefix of some key), such as `server.tls`.
pub(crate) fn is_section(path: &str) -> bool {
    KEYS.iter().any(|key| {
        key.path
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Looks a key up by its environment variable name.
pub(crate) fn find_by_env(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.env_name() == name)
}

/// The closest known name to a misspelt one, if one is close enough to be a likely typo.
pub(crate) fn suggest<'a>(
    wrong: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (wrong.len() / 4).clamp(1, 3);
    candidates
        .map(|candidate| (edit_distance(wrong, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, one row at a time: `row[j]` is the distance between the part of `a`
/// read so far and the first `j` characters of `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        // `diagonal` is the previous row's value one column left; `left` this row's.
        let mut diagonal = i;
        let mut left = i + 1;
        for (cell, cb) in row.iter_mut().skip(1).zip(&b) {
            let here = (diagonal + usize::from(ca != *cb))
                .min(*cell + 1)
                .min(left + 1);
            diagonal = *cell;
            *cell = here;
            left = here;
        }
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
    }
    row.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_key_has_its_own_environment_variable() {
        let mut seen = HashSet::new();
        for key in KEYS {
            assert!(
                seen.insert(key.env_name()),
                "two keys map to {}",
                key.env_name()
            );
        }
    }

    #[test]
    fn no_key_is_also_a_section() {
        for key in KEYS {
            assert!(
                !is_section(key.path),
                "{} is both a key and a section",
                key.path
            );
        }
    }

    #[test]
    fn no_configuration_variable_is_on_the_non_config_allowlist() {
        for name in NON_CONFIG_ENV_VARS {
            assert!(find_by_env(name).is_none(), "{name} is a config key");
        }
    }

    #[test]
    fn env_names_follow_the_path() {
        assert_eq!(
            find_by_env("PACER_SERVER_TLS_ACME_HTTP_ADDR").unwrap().path,
            "server.tls.acme.http_addr"
        );
        assert_eq!(
            find_by_env("PACER_AUTH_JWT_SECRET").unwrap().path,
            "auth.jwt_secret"
        );
        assert_eq!(
            find_by_env("PACER_FLEET_SIMULATED_BOOT_DELAY")
                .unwrap()
                .path,
            "fleet.simulated.boot_delay"
        );
    }

    #[test]
    fn suggests_a_near_miss_but_not_a_stranger() {
        let paths = || KEYS.iter().map(|key| key.path);
        assert_eq!(suggest("server.tls.mdoe", paths()), Some("server.tls.mode"));
        assert_eq!(suggest("auth.jwt_secrt", paths()), Some("auth.jwt_secret"));
        assert_eq!(suggest("completely.different", paths()), None);
    }
}
