//! Behaviour tests for loading, environment overrides and validation.
//!
//! Each test starts from a small valid configuration, changes one thing (a YAML patch or a
//! variable), and checks what pacer does, most often which key the error names.

use super::schema::{self, KEYS};
use super::*;
use crate::domain;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

const JWT_SECRET: &str = "jwt-secret-0123456789abcdef0123456789";
const CALLBACK_SECRET: &str = "callback-secret-0123456789abcdef0123";
const FAKE_PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAfakefakefakefake\n-----END RSA PRIVATE KEY-----\n";

/// A valid local configuration: no AWS, no GitHub, simulated fleet, local login.
const LOCAL: &str = r#"
aws: { disabled: true }
github: { disabled: true }
fleet: { engine: simulated }
auth: { jwt_secret: "jwt-secret-0123456789abcdef0123456789" }
"#;

/// A valid configuration with GitHub on (AWS still off).
fn with_github() -> String {
    patched(
        LOCAL,
        &format!(
            r#"
github:
  disabled: false
  app_id: 12345
  private_key: {pem:?}
  webhook_secret: webhook-secret
  callback_hmac_secret: {CALLBACK_SECRET}
"#,
            pem = FAKE_PEM
        ),
    )
}

/// A valid configuration with OIDC on.
fn with_oidc() -> String {
    patched(
        LOCAL,
        r#"
server: { public_url: "https://pacer.example.com" }
auth:
  oidc:
    enabled: true
    issuer: https://idp.example.com
    client_id: pacer
    client_secret: oidc-client-secret
    redirect_url: https://pacer.example.com/api/auth/oidc/callback
"#,
    )
}

/// `base` with `patch` deep-merged over it; a `null` in the patch deletes the key.
fn patched(base: &str, patch: &str) -> String {
    fn merge(base: &mut Value, patch: Value) {
        match (base, patch) {
            (Value::Object(base), Value::Object(patch)) => {
                for (name, value) in patch {
                    if value.is_null() {
                        base.remove(&name);
                    } else {
                        merge(base.entry(name).or_insert(Value::Null), value);
                    }
                }
            }
            (base, patch) => *base = patch,
        }
    }
    let mut tree: Value = serde_norway::from_str(base).expect("test base is YAML");
    merge(
        &mut tree,
        serde_norway::from_str(patch).expect("test patch is YAML"),
    );
    serde_norway::to_string(&tree).expect("serialises")
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn load(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(yaml, &[])
}

fn load_with_env(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_yaml(yaml, &env(vars))
}

/// Loads `LOCAL` patched with `patch` and returns the error, which must exist.
fn error_for(base: &str, patch: &str) -> ConfigError {
    match load(&patched(base, patch)) {
        Ok(_) => panic!("expected an error for patch:\n{patch}"),
        Err(err) => err,
    }
}

/// Asserts the error names `key`, in `key()` and at the start of its one-line message.
#[track_caller]
fn assert_names_key(err: &ConfigError, key: &str) {
    assert_eq!(err.key(), Some(key), "wrong key in: {err}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("config invalid: {key}")),
        "message does not lead with the key: {message}"
    );
    assert!(!message.contains('\n'), "message spans lines: {message}");
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let unique = format!(
            "pacer-config-{name}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        );
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ------------------------------------------------------------------------------------- loading

#[test]
fn a_minimal_local_config_loads_with_documented_defaults() {
    let config = load(LOCAL).expect("valid");

    assert_eq!(config.server.addr, "127.0.0.1:3000");
    assert_eq!(config.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(config.server.request_timeout, Duration::from_secs(60));
    assert_eq!(config.server.max_connections, 512);
    assert_eq!(config.deployment.name, "pacer");
    assert_eq!(config.database.engine, DatabaseEngine::Sqlite);
    assert_eq!(config.database.path, PathBuf::from("./data/pacer.db"));
    assert_eq!(config.queue.engine, QueueEngine::Memory);
    assert_eq!(config.fleet.simulated.boot_delay, Duration::from_secs(2));
    assert_eq!(config.reaper.interval, Duration::from_secs(60));
    assert_eq!(config.reaper.max_attempts, 3);
    assert_eq!(config.auth.session_ttl, Duration::from_secs(12 * 3600));
    assert_eq!(
        config.auth.login_rate_limit,
        RateLimit {
            attempts: 10,
            window: Duration::from_secs(300)
        }
    );
    assert_eq!(config.auth.oidc.scopes, ["openid", "email", "profile"]);
    assert_eq!(config.logging.output, LogOutput::Stdout);
    assert_eq!(config.github.api_url.as_str(), "https://api.github.com/");
    assert_eq!(
        config.server.tls.acme.directory_url.as_str(),
        "https://acme-v02.api.letsencrypt.org/directory"
    );
}

#[test]
fn a_file_on_disk_loads_and_a_missing_one_is_named() {
    let dir = TempDir::new("file");
    let path = dir.file("pacer.yaml", LOCAL);
    assert!(Config::load(Some(&path), &[]).is_ok());

    let missing = dir.0.join("absent.yaml");
    let err = Config::load(Some(&missing), &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("absent.yaml"), "{err}");
}

#[test]
fn invalid_yaml_is_reported_on_one_line() {
    let err = load("server:\n  addr: [unclosed\n").unwrap_err();
    assert!(matches!(err, ConfigError::Yaml { .. }), "{err}");
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn an_empty_file_leaves_every_key_at_its_default() {
    // The defaults alone are not a working configuration: GitHub is on but has no App.
    let err = load("# only a comment\n").unwrap_err();
    assert_names_key(&err, "github.app_id");
}

#[test]
fn unknown_yaml_key_is_refused_with_its_full_path_and_a_suggestion() {
    let err = error_for(LOCAL, "server: { tls: { mdoe: acme } }");
    assert_names_key(&err, "server.tls.mdoe");
    assert!(
        err.to_string()
            .contains("unknown key (did you mean server.tls.mode?)"),
        "{err}"
    );
}

#[test]
fn unknown_top_level_section_is_refused() {
    let err = error_for(LOCAL, "servers: { addr: ':3000' }");
    assert_names_key(&err, "servers");
}

#[test]
fn a_section_written_as_a_scalar_is_refused() {
    let err = error_for(LOCAL, "server: { tls: none }");
    assert_names_key(&err, "server.tls");
}

#[test]
fn a_wrong_type_names_the_key() {
    let err = error_for(LOCAL, "github: { app_id: twelve }");
    assert_names_key(&err, "github.app_id");

    let err = error_for(LOCAL, "auth: { local: { enabled: maybe } }");
    assert_names_key(&err, "auth.local.enabled");

    let err = error_for(LOCAL, "auth: { oidc: { scopes: openid } }");
    assert_names_key(&err, "auth.oidc.scopes");
}

#[test]
fn a_bad_list_entry_names_its_index() {
    let err = error_for(
        LOCAL,
        "server: { trusted_proxies: ['10.0.0.0/8', 'proxy.local'] }",
    );
    assert_names_key(&err, "server.trusted_proxies[1]");
}

#[test]
fn trusted_proxies_accept_bare_addresses_and_cidrs() {
    let config = load(&patched(
        LOCAL,
        "server: { trusted_proxies: ['10.0.0.0/8', '127.0.0.1', '::1'] }",
    ))
    .unwrap();
    let proxies: Vec<String> = config
        .server
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);
}

#[test]
fn an_empty_value_leaves_the_default() {
    let config = load(&patched(
        LOCAL,
        "auth: { session_ttl: null }\nserver: { public_url: '' }",
    ))
    .unwrap();
    assert_eq!(config.auth.session_ttl, Duration::from_secs(12 * 3600));
    assert_eq!(config.server.public_url, None);
}

#[test]
fn numbers_written_for_text_keys_are_read_as_text() {
    let config = load(&patched(
        LOCAL,
        "aws: { profile: 2024 }\ngithub: { webhook_secret: 123456 }",
    ))
    .unwrap();
    assert_eq!(config.aws.profile, "2024");
    assert_eq!(config.github.webhook_secret.unwrap().expose(), "123456");
}

#[test]
fn choices_are_case_insensitive() {
    let config = load(&patched(LOCAL, "logging: { level: WARN, format: Text }")).unwrap();
    assert_eq!(config.logging.level, LogLevel::Warn);
    assert_eq!(config.logging.format, LogFormat::Text);
}

#[test]
fn unknown_engine_and_mode_values_are_refused_naming_the_key() {
    for (key, patch) in [
        ("server.tls.mode", "server: { tls: { mode: letsencrypt } }"),
        ("server.tls.alg", "server: { tls: { alg: ecdsa } }"),
        ("database.engine", "database: { engine: postgres }"),
        ("queue.engine", "queue: { engine: kafka }"),
        ("fleet.engine", "fleet: { engine: k8s }"),
        ("logging.level", "logging: { level: trace }"),
        ("logging.format", "logging: { format: xml }"),
    ] {
        let err = error_for(LOCAL, patch);
        assert_names_key(&err, key);
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }
}

#[test]
fn yaml_merge_keys_are_honoured() {
    let yaml = format!("{LOCAL}\nx-common: &common {{ level: debug }}\n");
    // An unknown top-level key is still refused, anchors or not.
    assert_names_key(&load(&yaml).unwrap_err(), "x-common");

    let yaml = "aws: &off { disabled: true }\ngithub: *off\nfleet: { engine: simulated }\nauth: { jwt_secret: \"jwt-secret-0123456789abcdef0123456789\" }\n";
    let config = load(yaml).unwrap();
    assert!(config.github.disabled);
}

// ----------------------------------------------------------------------------------- durations

#[test]
fn a_duration_in_words_is_refused_naming_the_key() {
    let err = error_for(LOCAL, "auth: { session_ttl: 12hours }");
    assert_eq!(
        err.to_string(),
        "config invalid: auth.session_ttl: invalid duration \"12hours\" (use Go syntax like 90s, 10m, 1h30m)"
    );
}

#[test]
fn a_duration_without_unit_days_or_sign_is_refused() {
    for (patch, key) in [
        ("reaper: { interval: 60 }", "reaper.interval"),
        ("reaper: { orphan_grace: 1d }", "reaper.orphan_grace"),
        ("reaper: { redrive_after: '-5m' }", "reaper.redrive_after"),
        ("pricing: { cache_ttl: '' }", "pricing.cache_ttl"),
        (
            "fleet: { simulated: { job_time: 10 seconds } }",
            "fleet.simulated.job_time",
        ),
    ] {
        assert_names_key(&error_for(LOCAL, patch), key);
    }
}

#[test]
fn go_durations_are_read_for_every_duration_key() {
    let config = load(&patched(
        LOCAL,
        r#"
server: { header_read_timeout: 2.5s, request_timeout: 1h }
fleet: { simulated: { boot_delay: 300ms, job_time: 1.5s } }
reaper: { interval: 90s, redrive_after: 1h30m, orphan_grace: 2h45m30s, degraded_cooldown: 0s }
pricing: { cache_ttl: 1.5h }
auth: { session_ttl: 8h }
"#,
    ))
    .unwrap();
    assert_eq!(
        config.server.header_read_timeout,
        Duration::from_millis(2500)
    );
    assert_eq!(config.server.request_timeout, Duration::from_secs(3600));
    assert_eq!(
        config.fleet.simulated.boot_delay,
        Duration::from_millis(300)
    );
    assert_eq!(config.fleet.simulated.job_time, Duration::from_millis(1500));
    assert_eq!(config.reaper.interval, Duration::from_secs(90));
    assert_eq!(config.reaper.redrive_after, Duration::from_secs(5400));
    assert_eq!(config.reaper.orphan_grace, Duration::from_secs(9930));
    assert_eq!(config.reaper.degraded_cooldown, Duration::ZERO);
    assert_eq!(config.pricing.cache_ttl, Duration::from_secs(5400));
    assert_eq!(config.auth.session_ttl, Duration::from_secs(8 * 3600));
}

#[test]
fn zero_is_refused_where_it_would_spin_or_expire_at_once() {
    for (patch, key) in [
        ("reaper: { interval: 0s }", "reaper.interval"),
        ("reaper: { redrive_after: 0s }", "reaper.redrive_after"),
        ("reaper: { orphan_grace: '0' }", "reaper.orphan_grace"),
        ("pricing: { cache_ttl: 0s }", "pricing.cache_ttl"),
        ("auth: { session_ttl: 0s }", "auth.session_ttl"),
    ] {
        assert_names_key(&error_for(LOCAL, patch), key);
    }
}

// --------------------------------------------------------------------------------- environment

#[test]
fn env_overrides_nested_keys_whose_names_contain_underscores() {
    let config = load_with_env(
        &patched(LOCAL, "server: { tls: { acme: { http_addr: ':80' } } }"),
        &[
            ("PACER_SERVER_TLS_ACME_HTTP_ADDR", ":8080"),
            ("PACER_FLEET_SIMULATED_BOOT_DELAY", "250ms"),
            (
                "PACER_AUTH_JWT_SECRET",
                "from-env-0123456789abcdef0123456789",
            ),
            ("PACER_AUTH_OIDC_REQUIRE_EMAIL_VERIFIED", "false"),
        ],
    )
    .unwrap();
    assert_eq!(config.server.tls.acme.http_addr, ":8080");
    assert_eq!(
        config.fleet.simulated.boot_delay,
        Duration::from_millis(250)
    );
    assert_eq!(
        config.auth.jwt_secret.unwrap().expose(),
        "from-env-0123456789abcdef0123456789"
    );
    assert!(!config.auth.oidc.require_email_verified);
}

#[test]
fn env_alone_configures_pacer_without_a_file() {
    let vars = env(&[
        ("PACER_AWS_DISABLED", "true"),
        ("PACER_GITHUB_DISABLED", "1"),
        ("PACER_FLEET_ENGINE", "simulated"),
        ("PACER_AUTH_JWT_SECRET", JWT_SECRET),
    ]);
    let config = Config::load(None, &vars).unwrap();
    assert!(config.aws.disabled && config.github.disabled);
}

#[test]
fn env_lists_are_comma_separated_or_json() {
    let config = load_with_env(
        LOCAL,
        &[
            ("PACER_SERVER_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1,,"),
            (
                "PACER_AUTH_OIDC_ALLOWED_DOMAINS",
                r#"["Example.com", "corp.example"]"#,
            ),
            ("PACER_AUTH_OIDC_SCOPES", ""),
        ],
    )
    .unwrap();
    let proxies: Vec<String> = config
        .server
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "127.0.0.1/32"]);
    assert_eq!(
        config.auth.oidc.allowed_domains,
        ["example.com", "corp.example"]
    );
    assert!(config.auth.oidc.scopes.is_empty());
}

#[test]
fn a_malformed_json_list_in_env_is_refused_naming_key_and_variable() {
    let err =
        load_with_env(LOCAL, &[("PACER_AUTH_OIDC_ALLOWED_GROUPS", "[\"admins\"")]).unwrap_err();
    assert_names_key(&err, "auth.oidc.allowed_groups");
    assert!(
        err.to_string()
            .contains("(set by PACER_AUTH_OIDC_ALLOWED_GROUPS)"),
        "{err}"
    );
}

#[test]
fn env_numbers_and_booleans_are_typed_by_the_schema() {
    let config = load_with_env(
        LOCAL,
        &[
            ("PACER_GITHUB_APP_ID", "123"),
            ("PACER_REAPER_MAX_ATTEMPTS", "5"),
            ("PACER_LOGGING_COLOR", "TRUE"),
        ],
    )
    .unwrap();
    assert_eq!(config.github.app_id, Some(123));
    assert_eq!(config.reaper.max_attempts, 5);
    assert!(config.logging.color);

    let err = load_with_env(LOCAL, &[("PACER_GITHUB_APP_ID", "12ab")]).unwrap_err();
    assert_names_key(&err, "github.app_id");
    assert!(err.to_string().contains("PACER_GITHUB_APP_ID"), "{err}");

    let err = load_with_env(LOCAL, &[("PACER_AUTH_DISABLED", "yes")]).unwrap_err();
    assert_names_key(&err, "auth.disabled");
}

#[test]
fn env_overrides_the_file() {
    let config = load_with_env(
        &patched(LOCAL, "logging: { level: info }"),
        &[("PACER_LOGGING_LEVEL", "debug")],
    )
    .unwrap();
    assert_eq!(config.logging.level, LogLevel::Debug);
}

#[test]
fn an_empty_env_value_clears_an_optional_key() {
    let config = load_with_env(
        &patched(LOCAL, "server: { public_url: 'https://pacer.example.com' }"),
        &[("PACER_SERVER_PUBLIC_URL", "")],
    )
    .unwrap();
    assert_eq!(config.server.public_url, None);
}

#[test]
fn an_unknown_pacer_variable_is_refused_like_an_unknown_key() {
    let err = load_with_env(LOCAL, &[("PACER_AUTH_JWT_SECRETT", "x")]).unwrap_err();
    assert!(matches!(err, ConfigError::UnknownEnvVar { .. }));
    assert_eq!(err.key(), Some("PACER_AUTH_JWT_SECRETT"));
    assert!(
        err.to_string()
            .contains("did you mean PACER_AUTH_JWT_SECRET?"),
        "{err}"
    );
    assert!(!err.to_string().contains("=x"));
}

#[test]
fn non_config_pacer_variables_and_other_variables_are_ignored() {
    let mut vars: Vec<(&str, &str)> = NON_CONFIG_ENV_VARS
        .iter()
        .map(|name| (*name, "anything"))
        .collect();
    vars.extend([
        ("HOME", "/root"),
        ("RUST_LOG", "debug"),
        ("pacer_lower", "x"),
    ]);
    assert!(load_with_env(LOCAL, &vars).is_ok());
}

#[test]
fn a_bad_secret_from_env_names_the_variable_but_not_the_value() {
    let err = load_with_env(LOCAL, &[("PACER_AUTH_JWT_SECRET", "short-secret")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config invalid: auth.jwt_secret: must be at least 32 characters (got 12) (set by PACER_AUTH_JWT_SECRET)"
    );
}

#[test]
fn every_key_can_be_set_from_the_environment() {
    // Given a valid value for each kind, when every key is set through its variable at once,
    // then the overlay accepts every name (the values need not make a coherent config), but
    // for the YAML-only keys, whose variables are refused naming the key and the variable.
    for key in KEYS {
        if key.kind.yaml_only() {
            let mut tree = load::Tree::from_yaml(None, std::path::Path::new("t")).unwrap();
            let err = tree
                .overlay_env(&env(&[(&key.env_name(), "[]")]))
                .unwrap_err();
            assert_names_key(&err, key.path);
            assert!(err.to_string().contains(&key.env_name()), "{err}");
            continue;
        }
        let value = match key.kind {
            schema::Kind::Bool => "false",
            schema::Kind::Integer => "3",
            schema::Kind::Duration => "5m",
            schema::Kind::Url => "https://example.com",
            schema::Kind::Address => ":3000",
            schema::Kind::RateLimit => "5/1m",
            schema::Kind::Choice(words) => words[0],
            schema::Kind::List => "a,b",
            _ => "x",
        };
        let mut tree = load::Tree::from_yaml(None, std::path::Path::new("t")).unwrap();
        tree.overlay_env(&env(&[(&key.env_name(), value)]))
            .unwrap_or_else(|e| panic!("{}: {e}", key.path));
        assert_eq!(
            tree.env_vars.get(key.path).map(String::as_str),
            Some(key.env_name().as_str())
        );
    }
}

// ---------------------------------------------------------------------------------- validation

#[test]
fn jwt_secret_is_required_unless_auth_is_disabled() {
    let err = error_for(LOCAL, "auth: { jwt_secret: null }");
    assert_names_key(&err, "auth.jwt_secret");

    let config = load(&patched(
        LOCAL,
        "auth: { jwt_secret: null, disabled: true }",
    ))
    .unwrap();
    assert!(config.auth.disabled);
}

#[test]
fn a_short_jwt_secret_is_refused_by_length_without_showing_it() {
    let err = error_for(LOCAL, "auth: { jwt_secret: abcdefghijkl }");
    assert_eq!(
        err.to_string(),
        "config invalid: auth.jwt_secret: must be at least 32 characters (got 12)"
    );
}

#[test]
fn github_needs_an_app_id_a_webhook_secret_a_callback_secret_and_a_key() {
    assert!(load(&with_github()).is_ok());
    for (key, patch) in [
        ("github.app_id", "github: { app_id: null }"),
        ("github.app_id", "github: { app_id: 0 }"),
        ("github.webhook_secret", "github: { webhook_secret: null }"),
        ("github.webhook_secret", "github: { webhook_secret: '' }"),
        (
            "github.callback_hmac_secret",
            "github: { callback_hmac_secret: null }",
        ),
        ("github.private_key_path", "github: { private_key: null }"),
    ] {
        assert_names_key(&error_for(&with_github(), patch), key);
    }
}

#[test]
fn a_short_callback_secret_is_refused() {
    let err = error_for(
        &with_github(),
        "github: { callback_hmac_secret: too-short }",
    );
    assert_eq!(
        err.to_string(),
        "config invalid: github.callback_hmac_secret: must be at least 32 characters (got 9)"
    );
}

#[test]
fn secrets_given_while_github_is_off_are_still_checked() {
    assert_names_key(
        &error_for(LOCAL, "github: { callback_hmac_secret: short }"),
        "github.callback_hmac_secret",
    );
}

#[test]
fn the_private_key_may_come_from_a_readable_file() {
    let dir = TempDir::new("pem");
    let pem = dir.file("app.pem", FAKE_PEM);
    let yaml = patched(
        &with_github(),
        &format!("github: {{ private_key: null, private_key_path: {pem:?} }}"),
    );
    let config = load(&yaml).unwrap();
    assert_eq!(
        config.github.private_key_path.as_deref(),
        Some(pem.as_path())
    );
}

#[test]
fn a_missing_private_key_file_names_the_key_and_the_os_error() {
    let err = error_for(
        &with_github(),
        "github: { private_key: null, private_key_path: /nonexistent/app.pem }",
    );
    assert_names_key(&err, "github.private_key_path");
    assert!(err.to_string().contains("/nonexistent/app.pem"), "{err}");
    assert!(err.to_string().contains("No such file"), "{err}");
}

#[test]
fn a_private_key_file_that_is_not_a_pem_key_is_refused() {
    let dir = TempDir::new("notpem");
    let path = dir.file(
        "cert.pem",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    );
    let err = error_for(
        &with_github(),
        &format!("github: {{ private_key: null, private_key_path: {path:?} }}"),
    );
    assert_names_key(&err, "github.private_key_path");
}

#[test]
fn an_inline_private_key_that_is_not_a_pem_key_is_refused_without_quoting_it() {
    let err = error_for(
        &with_github(),
        "github: { private_key: 'my-secret-not-a-key' }",
    );
    assert_names_key(&err, "github.private_key");
    assert!(!err.to_string().contains("my-secret-not-a-key"), "{err}");
}

#[test]
fn both_private_key_and_its_path_is_refused() {
    let err = error_for(
        &with_github(),
        "github: { private_key_path: /etc/pacer/app.pem }",
    );
    assert_names_key(&err, "github.private_key");
}

#[test]
fn a_pem_with_escaped_newlines_from_env_is_restored() {
    let escaped = FAKE_PEM.replace('\n', "\\n");
    let config = load_with_env(&with_github(), &[("PACER_GITHUB_PRIVATE_KEY", &escaped)]).unwrap();
    assert_eq!(config.github.private_key.unwrap().expose(), FAKE_PEM.trim());
}

#[test]
fn github_disabled_does_not_read_the_key_file() {
    let config = load(&patched(
        LOCAL,
        "github: { private_key_path: /nonexistent/app.pem }",
    ))
    .unwrap();
    assert!(config.github.disabled);
}

#[test]
fn a_public_url_under_a_path_keeps_its_path_when_joined() {
    let config = load(&patched(
        LOCAL,
        "server: { public_url: 'https://example.com/pacer' }",
    ))
    .unwrap();
    let url = config.server.public_url.unwrap();
    assert_eq!(
        url.join("api/runner/register").unwrap().as_str(),
        "https://example.com/pacer/api/runner/register"
    );
}

#[test]
fn an_enterprise_api_url_keeps_its_last_segment_when_joined() {
    let config = load(&patched(
        LOCAL,
        "github: { api_url: 'https://ghe.example.com/api/v3' }",
    ))
    .unwrap();
    assert_eq!(
        config.github.api_url.join("app").unwrap().as_str(),
        "https://ghe.example.com/api/v3/app"
    );
}

#[test]
fn oidc_needs_issuer_client_id_client_secret_and_redirect_url() {
    assert!(load(&with_oidc()).is_ok());
    for key in ["issuer", "client_id", "client_secret", "redirect_url"] {
        let err = error_for(
            &with_oidc(),
            &format!("auth: {{ oidc: {{ {key}: null }} }}"),
        );
        assert_names_key(&err, &format!("auth.oidc.{key}"));
    }
}

#[test]
fn the_oidc_issuer_must_be_an_http_url_with_a_host() {
    assert_names_key(
        &error_for(
            &with_oidc(),
            "auth: { oidc: { issuer: accounts.google.com } }",
        ),
        "auth.oidc.issuer",
    );
    assert_names_key(
        &error_for(
            &with_oidc(),
            "auth: { oidc: { issuer: 'ftp://idp.example.com' } }",
        ),
        "auth.oidc.issuer",
    );
    assert_names_key(
        &error_for(&with_oidc(), "auth: { oidc: { issuer: 'urn:idp:pacer' } }"),
        "auth.oidc.issuer",
    );
}

#[test]
fn an_issuer_sharing_its_origin_with_the_redirect_url_is_refused() {
    // Default ports are made explicit: https://host and https://host:443 are one origin.
    let err = error_for(
        &with_oidc(),
        "auth: { oidc: { issuer: 'https://pacer.example.com:443/oidc' } }",
    );
    assert_names_key(&err, "auth.oidc.issuer");
    assert!(err.to_string().contains("origin"), "{err}");
}

#[test]
fn an_issuer_on_the_same_host_but_another_port_is_accepted() {
    let yaml = patched(
        &with_oidc(),
        "auth: { oidc: { issuer: 'http://localhost:9000', redirect_url: 'http://localhost:3000/api/auth/oidc/callback' } }",
    );
    assert!(load(&yaml).is_ok());
}

#[test]
fn a_bare_domain_in_allowed_emails_points_to_allowed_domains() {
    let err = error_for(
        &with_oidc(),
        "auth: { oidc: { allowed_emails: ['ops@example.com', '@example.com'] } }",
    );
    assert_names_key(&err, "auth.oidc.allowed_emails[1]");
    assert!(
        err.to_string().contains("auth.oidc.allowed_domains"),
        "{err}"
    );
}

#[test]
fn allowed_groups_need_a_groups_claim() {
    let err = error_for(
        &with_oidc(),
        "auth: { oidc: { allowed_groups: [pacer-admins] } }",
    );
    assert_names_key(&err, "auth.oidc.allowed_groups");
    let err = error_for(
        &with_oidc(),
        "auth: { oidc: { admin_groups: [pacer-admins] } }",
    );
    assert_names_key(&err, "auth.oidc.admin_groups");
    assert!(
        load(&patched(
            &with_oidc(),
            "auth: { oidc: { groups_claim: groups, allowed_groups: [a] } }"
        ))
        .is_ok()
    );
}

#[test]
fn oidc_scopes_must_include_openid() {
    assert_names_key(
        &error_for(&with_oidc(), "auth: { oidc: { scopes: [email] } }"),
        "auth.oidc.scopes",
    );
}

#[test]
fn enabling_oidc_turns_local_login_off_with_a_note() {
    let config = load(&with_oidc()).unwrap();
    assert!(!config.auth.local.enabled);
    assert!(
        config
            .notes
            .iter()
            .any(|note| note.contains("auth.local.enabled")),
        "{:?}",
        config.notes
    );
}

#[test]
fn the_local_admin_email_is_trimmed_and_lower_cased() {
    let config = load(&patched(
        LOCAL,
        "auth: { local: { email: '  Admin@Example.COM ' } }",
    ))
    .unwrap();
    assert_eq!(config.auth.local.email, "admin@example.com");
    assert_names_key(
        &error_for(LOCAL, "auth: { local: { email: admin } }"),
        "auth.local.email",
    );
}

#[test]
fn logging_output_is_stdout_or_an_absolute_path() {
    assert_names_key(
        &error_for(LOCAL, "logging: { output: logs/pacer.log }"),
        "logging.output",
    );
    let config = load(&patched(LOCAL, "logging: { output: /var/log/pacer.log }")).unwrap();
    assert_eq!(
        config.logging.output,
        LogOutput::File("/var/log/pacer.log".into())
    );
}

#[test]
fn color_with_json_logs_is_a_note_not_an_error() {
    let config = load(&patched(LOCAL, "logging: { format: json, color: true }")).unwrap();
    assert!(
        config
            .notes
            .iter()
            .any(|note| note.contains("logging.color"))
    );
}

#[test]
fn the_listen_address_must_be_host_port_or_port() {
    assert_names_key(&error_for(LOCAL, "server: { addr: '3000' }"), "server.addr");
    assert_names_key(
        &error_for(LOCAL, "server: { addr: 'localhost' }"),
        "server.addr",
    );
    let config = load(&patched(LOCAL, "server: { addr: ':3000' }")).unwrap();
    assert_eq!(config.server.bind_addr(), "0.0.0.0:3000");
}

#[test]
fn server_limits_can_be_set_from_the_environment() {
    let config = load_with_env(
        LOCAL,
        &[
            ("PACER_SERVER_HEADER_READ_TIMEOUT", "5s"),
            ("PACER_SERVER_REQUEST_TIMEOUT", "2m30s"),
            ("PACER_SERVER_MAX_CONNECTIONS", "2048"),
        ],
    )
    .unwrap();
    assert_eq!(config.server.header_read_timeout, Duration::from_secs(5));
    assert_eq!(config.server.request_timeout, Duration::from_secs(150));
    assert_eq!(config.server.max_connections, 2048);

    let err = load_with_env(LOCAL, &[("PACER_SERVER_MAX_CONNECTIONS", "many")]).unwrap_err();
    assert_names_key(&err, "server.max_connections");
    assert!(
        err.to_string().contains("PACER_SERVER_MAX_CONNECTIONS"),
        "{err}"
    );
}

#[test]
fn server_timeouts_outside_their_bounds_are_refused_naming_the_key() {
    for (patch, key) in [
        (
            "server: { header_read_timeout: 0s }",
            "server.header_read_timeout",
        ),
        (
            "server: { header_read_timeout: 500ms }",
            "server.header_read_timeout",
        ),
        (
            "server: { header_read_timeout: 5m1s }",
            "server.header_read_timeout",
        ),
        (
            "server: { header_read_timeout: 10 }",
            "server.header_read_timeout",
        ),
        ("server: { request_timeout: 0s }", "server.request_timeout"),
        (
            "server: { request_timeout: 1h0m1s }",
            "server.request_timeout",
        ),
    ] {
        assert_names_key(&error_for(LOCAL, patch), key);
    }
    let err = error_for(LOCAL, "server: { request_timeout: 2h }");
    assert_eq!(
        err.to_string(),
        "config invalid: server.request_timeout: must be between 1s and 1h (got 2h)"
    );

    let bounds = "server: { header_read_timeout: 1s, request_timeout: 1h }";
    assert!(load(&patched(LOCAL, bounds)).is_ok());
    let bounds = "server: { header_read_timeout: 5m, request_timeout: 1s }";
    assert!(load(&patched(LOCAL, bounds)).is_ok());
}

#[test]
fn max_connections_must_be_between_1_and_a_million() {
    for bad in ["0", "1000001", "-1", "lots"] {
        assert_names_key(
            &error_for(LOCAL, &format!("server: {{ max_connections: {bad} }}")),
            "server.max_connections",
        );
    }
    for good in [1, 1_000_000] {
        let config = load(&patched(
            LOCAL,
            &format!("server: {{ max_connections: {good} }}"),
        ));
        assert_eq!(config.unwrap().server.max_connections, good);
    }
}

#[test]
fn the_public_url_must_be_http_or_https() {
    assert_names_key(
        &error_for(LOCAL, "server: { public_url: 'ftp://pacer.example.com' }"),
        "server.public_url",
    );
    assert_names_key(
        &error_for(LOCAL, "server: { public_url: 'pacer.example.com' }"),
        "server.public_url",
    );
}

#[test]
fn manual_tls_needs_readable_cert_and_key_files() {
    assert_names_key(
        &error_for(LOCAL, "server: { tls: { mode: manual } }"),
        "server.tls.cert",
    );
    let dir = TempDir::new("tls");
    let cert = dir.file("cert.pem", "cert");
    let yaml =
        format!("server: {{ tls: {{ mode: manual, cert: {cert:?}, key: /nonexistent/key.pem }} }}");
    let err = error_for(LOCAL, &yaml);
    assert_names_key(&err, "server.tls.key");
    assert!(err.to_string().contains("/nonexistent/key.pem"));

    let key = dir.file("key.pem", "key");
    assert!(
        load(&patched(
            LOCAL,
            &format!("server: {{ tls: {{ mode: manual, cert: {cert:?}, key: {key:?} }} }}")
        ))
        .is_ok()
    );
}

#[test]
fn self_signed_tls_needs_no_fqdn() {
    let config = load(&patched(
        LOCAL,
        "server: { tls: { mode: self, alg: ed25519 } }",
    ))
    .unwrap();
    assert_eq!(config.server.tls.mode, TlsMode::SelfSigned);
    assert_eq!(config.server.tls.alg, KeyAlg::Ed25519);
}

#[test]
fn acme_needs_at_least_one_host() {
    assert_names_key(
        &error_for(LOCAL, "server: { tls: { mode: acme } }"),
        "server.tls.acme.hosts",
    );
    assert_names_key(
        &error_for(
            LOCAL,
            "server: { tls: { mode: acme, acme: { hosts: ['https://pacer.example.com'] } } }",
        ),
        "server.tls.acme.hosts[0]",
    );
    let config = load(&patched(
        LOCAL,
        "server: { tls: { mode: acme, acme: { hosts: [pacer.example.com], directory_url: 'https://localhost:14000/dir' } } }",
    ))
    .unwrap();
    assert_eq!(
        config.server.tls.acme.directory_url.as_str(),
        "https://localhost:14000/dir"
    );
    assert_eq!(config.server.tls.acme.http_addr, ":80");
}

#[test]
fn acme_ca_cert_must_be_readable() {
    let err = error_for(
        LOCAL,
        "server: { tls: { mode: acme, acme: { hosts: [pacer.example.com], ca_cert: /nonexistent/pebble.pem } } }",
    );
    assert_names_key(&err, "server.tls.acme.ca_cert");
}

#[test]
fn the_deployment_name_is_a_short_lower_case_slug_starting_with_a_letter() {
    for bad in ["Pacer", "1pacer", "pa_cer", "-pacer", &"a".repeat(33)] {
        let err = error_for(LOCAL, &format!("deployment: {{ name: '{bad}' }}"));
        assert_names_key(&err, "deployment.name");
    }
    assert!(load(&patched(LOCAL, "deployment: { name: prod-eu-1 }")).is_ok());
}

#[test]
fn the_login_rate_limit_is_n_per_duration() {
    for bad in ["0/5m", "10", "10/5minutes", "ten/5m"] {
        assert_names_key(
            &error_for(LOCAL, &format!("auth: {{ login_rate_limit: '{bad}' }}")),
            "auth.login_rate_limit",
        );
    }
    let config = load(&patched(LOCAL, "auth: { login_rate_limit: 3/1m }")).unwrap();
    assert_eq!(
        config.auth.login_rate_limit,
        RateLimit {
            attempts: 3,
            window: Duration::from_secs(60)
        }
    );
}

#[test]
fn max_attempts_must_be_between_1_and_20() {
    assert_names_key(
        &error_for(LOCAL, "reaper: { max_attempts: 0 }"),
        "reaper.max_attempts",
    );
    assert_names_key(
        &error_for(LOCAL, "reaper: { max_attempts: 21 }"),
        "reaper.max_attempts",
    );
    assert!(load(&patched(LOCAL, "reaper: { max_attempts: 20 }")).is_ok());
}

#[test]
fn the_runner_version_is_latest_or_a_release() {
    assert!(load(&patched(LOCAL, "runner: { version: 2.321.0 }")).is_ok());
    assert_names_key(
        &error_for(LOCAL, "runner: { version: v2.321 }"),
        "runner.version",
    );
}

/// AWS on, with the local engines, for the AWS engine rules.
fn with_aws() -> String {
    patched(LOCAL, "aws: { disabled: false }")
}

const X64_SHA256: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

#[test]
fn runner_checksums_are_64_hex_digits_for_a_pinned_version() {
    let config = load(&patched(
        LOCAL,
        &format!(
            "runner: {{ version: 2.321.0, sha256: {{ linux_x64: {} }} }}",
            X64_SHA256.to_uppercase()
        ),
    ))
    .unwrap();
    assert_eq!(
        config.runner.sha256.linux_x64.as_deref(),
        Some(X64_SHA256.to_uppercase().as_str())
    );
    assert_eq!(config.runner.sha256.linux_arm64, None);

    let short = error_for(
        LOCAL,
        "runner: { version: 2.321.0, sha256: { linux_arm64: abc123 } }",
    );
    assert_names_key(&short, "runner.sha256.linux_arm64");
    assert!(short.to_string().contains("64 hex digits"), "{short}");
    let not_hex = "z".repeat(64);
    assert_names_key(
        &error_for(
            LOCAL,
            &format!("runner: {{ version: 2.321.0, sha256: {{ linux_x64: {not_hex} }} }}"),
        ),
        "runner.sha256.linux_x64",
    );
}

#[test]
fn runner_checksums_need_a_pinned_version() {
    let err = error_for(
        LOCAL,
        &format!("runner: {{ sha256: {{ linux_x64: {X64_SHA256} }} }}"),
    );
    assert_names_key(&err, "runner.sha256.linux_x64");
    assert!(err.to_string().contains("pinned runner.version"), "{err}");
}

#[test]
fn runner_checksums_can_come_from_the_environment() {
    let config = load_with_env(
        LOCAL,
        &[
            ("PACER_RUNNER_VERSION", "2.321.0"),
            ("PACER_RUNNER_SHA256_LINUX_ARM64", X64_SHA256),
        ],
    )
    .unwrap();
    assert_eq!(
        config.runner.sha256.linux_arm64.as_deref(),
        Some(X64_SHA256)
    );
}

/// AWS on and the EC2 fleet: runners are real instances calling back over the network.
fn with_ec2() -> String {
    patched(&with_aws(), "fleet: { engine: ec2 }")
}

#[test]
fn a_plain_http_public_url_is_refused_with_the_ec2_fleet() {
    for url in ["http://pacer.example.com", "http://10.0.0.5:3000"] {
        let err = error_for(&with_ec2(), &format!("server: {{ public_url: '{url}' }}"));
        assert_names_key(&err, "server.public_url");
        assert!(err.to_string().contains("in clear"), "{err}");
    }
    assert!(
        load(&patched(
            &with_ec2(),
            "server: { public_url: 'https://pacer.example.com' }"
        ))
        .is_ok()
    );
}

#[test]
fn a_plain_http_public_url_is_accepted_on_loopback() {
    for url in [
        "http://127.0.0.1:3000",
        "http://127.8.9.10",
        "http://[::1]:3000",
        "http://localhost:3000",
    ] {
        let patch = format!("server: {{ public_url: '{url}' }}");
        assert!(load(&patched(&with_ec2(), &patch)).is_ok(), "{url}");
    }
}

#[test]
fn a_plain_http_public_url_is_accepted_with_the_simulated_fleet() {
    // LOCAL runs the simulated fleet: its runners call back inside pacer's own process.
    assert!(
        load(&patched(
            LOCAL,
            "server: { public_url: 'http://pacer.example.com' }"
        ))
        .is_ok()
    );
}

#[test]
fn without_a_public_url_the_callback_address_must_not_be_plain_http_off_the_machine() {
    let err = error_for(&with_ec2(), "server: { addr: '10.0.0.5:3000' }");
    assert_names_key(&err, "server.public_url");
    assert!(err.to_string().contains("http://10.0.0.5:3000"), "{err}");
    // pacer's own TLS makes the callbacks https; a loopback bind is fine as it is.
    assert!(
        load(&patched(
            &with_ec2(),
            "server: { addr: '10.0.0.5:3000', tls: { mode: self } }"
        ))
        .is_ok()
    );
    assert!(load(&patched(&with_ec2(), "server: { addr: ':3000' }")).is_ok());
}

#[test]
fn sqs_needs_a_queue_url() {
    assert_names_key(
        &error_for(&with_aws(), "queue: { engine: sqs }"),
        "queue.url",
    );
    assert_names_key(
        &error_for(&with_aws(), "queue: { engine: sqs, url: not-a-url }"),
        "queue.url",
    );
    let url = "https://sqs.us-east-1.amazonaws.com/123456789012/pacer-jobs";
    assert!(
        load(&patched(
            &with_aws(),
            &format!("queue: {{ engine: sqs, url: '{url}' }}")
        ))
        .is_ok()
    );
}

#[test]
fn dynamodb_needs_a_table_name() {
    assert_names_key(
        &error_for(&with_aws(), "database: { engine: dynamodb, table: '' }"),
        "database.table",
    );
    assert_names_key(
        &error_for(&with_aws(), "database: { engine: dynamodb, table: 'a b' }"),
        "database.table",
    );
    assert!(load(&patched(&with_aws(), "database: { engine: dynamodb }")).is_ok());
}

#[test]
fn aws_disabled_contradicts_the_aws_engines() {
    for (key, patch) in [
        ("database.engine", "database: { engine: dynamodb }"),
        (
            "queue.engine",
            "queue: { engine: sqs, url: 'https://sqs.example.com/1/q' }",
        ),
        ("fleet.engine", "fleet: { engine: ec2 }"),
    ] {
        let err = error_for(LOCAL, patch);
        assert_names_key(&err, key);
        assert!(err.to_string().contains("aws.disabled"), "{err}");
    }
}

#[test]
fn aws_disabled_turns_default_pricing_off_but_refuses_explicit_pricing() {
    let config = load(LOCAL).unwrap();
    assert!(!config.pricing.enabled);
    assert!(
        config
            .notes
            .iter()
            .any(|note| note.contains("pricing.enabled"))
    );

    assert_names_key(
        &error_for(LOCAL, "pricing: { enabled: true }"),
        "pricing.enabled",
    );
}

#[test]
fn price_overrides_and_the_volume_price_are_read_in_micro_dollars() {
    let config = load(&patched(
        LOCAL,
        "pricing: { overrides: { m7g.large: 0.0816, c7i.metal-24xl: 4.284 }, ebs_gb_month: 0.1 }",
    ))
    .unwrap();
    assert_eq!(
        config.pricing.overrides_micro_usd(),
        BTreeMap::from([
            ("c7i.metal-24xl".to_string(), 4_284_000),
            ("m7g.large".to_string(), 81_600)
        ])
    );
    assert_eq!(config.pricing.ebs_micro_usd_per_gb_month(), 100_000);
    let free = load(&patched(LOCAL, "pricing: { overrides: { t4g.nano: 0 } }")).unwrap();
    assert_eq!(
        free.pricing.overrides_micro_usd().get("t4g.nano"),
        Some(&0),
        "an instance already paid for (a Savings Plan) may cost nothing more"
    );
    let defaults = load(LOCAL).unwrap();
    assert!(defaults.pricing.overrides.is_empty());
    assert_eq!(
        defaults.pricing.ebs_micro_usd_per_gb_month(),
        80_000,
        "gp3's list price"
    );
}

#[test]
fn a_bad_price_is_refused_naming_its_key() {
    for (patch, key) in [
        (
            "pricing: { overrides: { M7G.Large: 0.08 } }",
            "pricing.overrides.M7G.Large",
        ),
        (
            "pricing: { overrides: { large: 0.08 } }",
            "pricing.overrides.large",
        ),
        (
            "pricing: { overrides: { m7g.large: -1 } }",
            "pricing.overrides.m7g.large",
        ),
        (
            "pricing: { overrides: { m7g.large: 81600 } }",
            "pricing.overrides.m7g.large",
        ),
        (
            "pricing: { overrides: { m7g.large: cheap } }",
            "pricing.overrides",
        ),
        ("pricing: { overrides: [m7g.large] }", "pricing.overrides"),
        ("pricing: { ebs_gb_month: -0.08 }", "pricing.ebs_gb_month"),
        ("pricing: { ebs_gb_month: 80 }", "pricing.ebs_gb_month"),
        ("pricing: { ebs_gb_month: '1e400' }", "pricing.ebs_gb_month"),
        (
            "pricing: { overrides: { m7g.large: '0.08' } }",
            "pricing.overrides.m7g.large",
        ),
        ("pricing: { ebs_gb_month: lots }", "pricing.ebs_gb_month"),
    ] {
        let err = error_for(LOCAL, patch);
        let named = err.key().unwrap_or_default();
        assert!(named.starts_with(key), "{patch}: {err}");
    }
    let err = error_for(LOCAL, "pricing: { overrides: { \"m7g.large\\n\": 0.08 } }");
    assert!(!err.to_string().contains('\n'), "one line: {err}");
}

#[test]
fn budgets_are_read_per_project_or_pool_in_micro_dollars() {
    use crate::domain::budget::{Budget, BudgetScope};
    let config = load(&patched(
        LOCAL,
        "budgets:\n  - { name: ci, project: acme, monthly_usd: 500 }\n  - { name: gpu, pool: acme/gpu-a100, monthly_usd: 1200.5, warn_percent: 90, enforce: true }",
    ))
    .unwrap();
    assert_eq!(
        config.monthly_budgets(),
        [
            Budget {
                name: "ci".into(),
                scope: BudgetScope::Project {
                    project: "acme".into()
                },
                monthly_micro_usd: 500_000_000,
                warn_percent: 80,
                enforce: false,
            },
            Budget {
                name: "gpu".into(),
                scope: BudgetScope::Pool {
                    project: "acme".into(),
                    pool: "gpu-a100".into()
                },
                monthly_micro_usd: 1_200_500_000,
                warn_percent: 90,
                enforce: true,
            },
        ]
    );
    assert!(load(LOCAL).unwrap().monthly_budgets().is_empty());
}

#[test]
fn a_bad_budget_is_refused_naming_its_key() {
    for (patch, key, says) in [
        (
            "budgets: [{ project: acme, monthly_usd: 5 }]",
            "budgets[0].name",
            "1–64",
        ),
        (
            "budgets: [{ name: ci, monthly_usd: 5 }]",
            "budgets[0].project",
            "is missing",
        ),
        (
            "budgets: [{ name: ci, project: acme, pool: acme/linux, monthly_usd: 5 }]",
            "budgets[0].pool",
            "give one",
        ),
        (
            "budgets: [{ name: ci, pool: linux, monthly_usd: 5 }]",
            "budgets[0].pool",
            "project/pool",
        ),
        (
            "budgets: [{ name: ci, pool: 'acme/', monthly_usd: 5 }]",
            "budgets[0].pool",
            "the pool",
        ),
        (
            "budgets: [{ name: ci, project: 'a b', monthly_usd: 5 }]",
            "budgets[0].project",
            "project's name",
        ),
        (
            "budgets: [{ name: ci, project: acme }]",
            "budgets[0].monthly_usd",
            "above 0",
        ),
        (
            "budgets: [{ name: ci, project: acme, monthly_usd: -5 }]",
            "budgets[0].monthly_usd",
            "above 0",
        ),
        (
            "budgets: [{ name: ci, project: acme, monthly_usd: 2e12 }]",
            "budgets[0].monthly_usd",
            "at most",
        ),
        (
            "budgets: [{ name: ci, project: acme, monthly_usd: lots }]",
            "budgets[0].monthly_usd",
            "",
        ),
        (
            "budgets: [{ name: ci, project: acme, monthly_usd: 5, warn_percent: 0 }]",
            "budgets[0].warn_percent",
            "1 to 100",
        ),
        (
            "budgets: [{ name: ci, project: acme, monthly_usd: 5, warn_percent: 300 }]",
            "budgets[0].warn_percent",
            "1 to 100",
        ),
        (
            "budgets: [{ name: ci, project: acme, monthly_usd: 5, enforce: maybe }]",
            "budgets[0].enforce",
            "",
        ),
        (
            "budgets: [{ name: ci, project: acme, monthly_usd: 5, limit: 3 }]",
            "budgets[0]",
            "limit",
        ),
        (
            "budgets: [{ name: ci, project: acme, monthly_usd: 5 }, { name: CI, project: b, monthly_usd: 5 }]",
            "budgets[1].name",
            "budgets[0]",
        ),
        ("budgets: { name: ci }", "budgets", ""),
    ] {
        let err = error_for(LOCAL, patch);
        let named = err.key().unwrap_or_default();
        assert!(named.starts_with(key), "{patch}: {err}");
        assert!(err.to_string().contains(says), "{patch}: {err}");
    }
    let err = load_with_env(LOCAL, &[("PACER_BUDGETS", "[]")]).unwrap_err();
    assert!(err.to_string().contains("YAML file only"), "{err}");
}

#[test]
fn a_secret_reference_while_aws_is_disabled_is_refused() {
    let err = error_for(LOCAL, "auth: { jwt_secret: 'ssm:/pacer/jwt' }");
    assert_names_key(&err, "auth.jwt_secret");
    assert!(err.to_string().contains("ssm:/pacer/jwt"), "{err}");
}

#[test]
fn a_malformed_secret_reference_is_refused_at_load() {
    let err = error_for(&with_aws(), "auth: { jwt_secret: 'ssm:pacer/jwt' }");
    assert_names_key(&err, "auth.jwt_secret");
}

#[test]
fn referenced_secrets_are_checked_only_after_resolution() {
    // Given short references where long secrets are needed
    let yaml = patched(
        &patched(&with_github(), "aws: { disabled: false }"),
        "auth: { jwt_secret: 'ssm:/p/jwt' }\ngithub: { callback_hmac_secret: 'secretsmanager:cb', private_key: 'ssm:/p/key' }",
    );
    // When loaded, the references pass (their values are unknown yet)
    let mut config = load(&yaml).expect("references pass at load");
    assert!(config.has_secret_references());

    // Then validation after resolution refuses anything left unresolved
    let err = config.validate_resolved().unwrap_err();
    assert_names_key(&err, "github.private_key");

    // And once the values are filled in, their content is checked
    config.github.private_key = Some(Secret::new(FAKE_PEM));
    config.github.callback_hmac_secret = Some(Secret::new(CALLBACK_SECRET));
    config.auth.jwt_secret = Some(Secret::new("short"));
    assert_names_key(&config.validate_resolved().unwrap_err(), "auth.jwt_secret");
    config.auth.jwt_secret = Some(Secret::new(JWT_SECRET));
    assert!(config.validate_resolved().is_ok());
}

#[tokio::test]
async fn resolving_without_references_calls_nothing_and_validates() {
    let mut config = load(&with_github()).unwrap();
    let aws = aws_config::SdkConfig::builder().build();
    config
        .resolve_secrets(&aws)
        .await
        .expect("nothing to resolve");
    assert!(!config.has_secret_references());
}

// ---------------------------------------------------------------------------------- self-service

const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// A valid trusted identity: GitHub Actions' issuer, ruled on the owner's id.
const IDENTITY: &str = r#"
name: ci
issuer: https://token.actions.githubusercontent.com
audience: pacer-runners
claims:
  repository_owner_id: "123456"
  workflow_ref: { prefix: "octo-org/infra/.github/workflows/" }
  sub: { regex: "repo:octo-org/[^:]+:ref:refs/heads/main" }
runners: { scope: org, org: octo-org }
label_policy:
  allowed_labels: [gpu, linux, x64, "cuda-*"]
  max_live_runners: 2
"#;

/// `IDENTITY` with `patch` deep-merged over it (a `null` deletes the key).
fn identity(patch: &str) -> String {
    patched(IDENTITY, patch)
}

/// `LOCAL` with self-service on, trusting `identities` (each one YAML mapping).
fn with_identities(identities: &[String]) -> String {
    let list: Vec<Value> = identities
        .iter()
        .map(|yaml| serde_norway::from_str(yaml).expect("test identity is YAML"))
        .collect();
    let section =
        serde_json::json!({ "self_service": { "enabled": true, "trusted_identities": list } });
    patched(
        LOCAL,
        &serde_norway::to_string(&section).expect("serialises"),
    )
}

/// The error loading `IDENTITY` patched with `patch` gives; there must be one.
fn identity_error(patch: &str) -> ConfigError {
    match load(&with_identities(&[identity(patch)])) {
        Ok(_) => panic!("expected an error for identity patch:\n{patch}"),
        Err(err) => err,
    }
}

/// The key of the first identity's `field`.
fn first(field: &str) -> String {
    format!("self_service.trusted_identities[0].{field}")
}

fn claims(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("test claims are an object, not {other}"),
    }
}

#[test]
fn self_service_is_off_and_trusts_no_one_by_default() {
    let config = load(LOCAL).unwrap();
    assert!(!config.self_service.enabled);
    assert_eq!(
        config.self_service.registration_timeout,
        Duration::from_secs(600)
    );
    assert!(config.self_service.trusted_identities.is_empty());
    assert!(config.self_service.identities().is_empty());
}

#[test]
fn a_trusted_identity_is_parsed_once_into_domain_values_with_its_defaults() {
    let config = load(&with_identities(&[IDENTITY.to_owned()])).unwrap();
    let [ci] = config.self_service.identities() else {
        panic!(
            "one identity expected: {:?}",
            config.self_service.identities()
        );
    };
    assert_eq!(ci.name, "ci");
    // Kept byte for byte: no trailing slash is added, as a URL parser would.
    assert_eq!(ci.issuer, GITHUB_ISSUER);
    assert_eq!(ci.jwks_url, None);
    assert_eq!(ci.audience, "pacer-runners");
    assert_eq!(ci.identity_claim, "sub");
    assert!(ci.source_cidrs.is_empty());
    assert_eq!(ci.max_token_lifetime, Duration::from_secs(15 * 60));
    assert_eq!(
        ci.runners,
        domain::self_service::Placement {
            scope: domain::Scope::Org,
            org: Some("octo-org".into()),
            repo: None,
            runner_group_id: 1,
            name_prefix: "ci-".into(),
        }
    );
    let claimed: Vec<&str> = ci.claims.iter().map(|rule| rule.claim.as_str()).collect();
    assert_eq!(claimed, ["repository_owner_id", "sub", "workflow_ref"]);

    // The rules behave as written: exact, prefix, and a regex over the whole value.
    let good = serde_json::json!({
        "repository_owner_id": "123456",
        "workflow_ref": "octo-org/infra/.github/workflows/ci.yml@refs/heads/main",
        "sub": "repo:octo-org/infra:ref:refs/heads/main",
    });
    assert_eq!(ci.check_claims(&claims(good.clone())), Ok(()));
    for (claim, value) in [
        ("repository_owner_id", "1234567"),
        (
            "workflow_ref",
            "octo-org/infra-evil/.github/workflows/ci.yml",
        ),
        ("sub", "repo:octo-org/infra:ref:refs/heads/main-evil"),
    ] {
        let mut bad = claims(good.clone());
        bad.insert(claim.into(), Value::from(value));
        let reason = ci.check_claims(&bad).unwrap_err();
        assert!(reason.contains(claim), "{reason}");
    }

    let policy = ci.label_policy.as_ref().expect("a label policy");
    assert_eq!(policy.max_live_runners, 2);
    assert!(policy.required_labels.is_empty());
    let asked: domain::LabelSet = ["GPU", "cuda-12"]
        .into_iter()
        .map(|label| domain::Label::parse(label).unwrap())
        .collect();
    assert!(policy.decide(&asked).is_ok());
}

#[test]
fn every_field_of_an_identity_is_read() {
    let config = load(&with_identities(&[identity(
        r#"
jwks_url: http://127.0.0.1:8080/keys
identity_claim: repository
claims: { workflow_ref: null, sub: null, repository_owner_id: 123456, on_main: true }
source_cidrs: [10.0.0.0/8, 192.0.2.7]
max_token_lifetime: 1h
runners: { scope: repo, org: null, repo: octo-org/infra, runner_group_id: 4, name_prefix: gpu. }
label_policy: { required_labels: [On-Prem], max_live_runners: 0 }
"#,
    )]))
    .unwrap();
    let ci = &config.self_service.identities()[0];
    assert_eq!(ci.jwks_url.as_deref(), Some("http://127.0.0.1:8080/keys"));
    assert_eq!(ci.identity_claim, "repository");
    let cidrs: Vec<String> = ci.source_cidrs.iter().map(ToString::to_string).collect();
    assert_eq!(cidrs, ["10.0.0.0/8", "192.0.2.7/32"]);
    assert!(ci.admits_address(Some("192.0.2.7".parse().unwrap())));
    assert!(!ci.admits_address(Some("192.0.2.8".parse().unwrap())));
    assert_eq!(ci.max_token_lifetime, Duration::from_secs(3600));
    assert_eq!(ci.runners.scope, domain::Scope::Repo);
    assert_eq!(ci.runners.org, None);
    assert_eq!(
        ci.runners.repo.as_ref().map(ToString::to_string).as_deref(),
        Some("octo-org/infra")
    );
    assert_eq!(ci.runners.runner_group_id, 4);
    assert_eq!(ci.runners.name_prefix, "gpu.");
    let policy = ci.label_policy.as_ref().unwrap();
    assert_eq!(policy.required_labels[0].as_str(), "on-prem");
    assert_eq!(policy.max_live_runners, 0);

    // A number or a boolean written as a claim value is matched as its text, whichever way the
    // token writes it.
    for token in [
        serde_json::json!({ "repository_owner_id": 123456, "on_main": true }),
        serde_json::json!({ "repository_owner_id": "123456", "on_main": "true" }),
    ] {
        assert_eq!(ci.check_claims(&claims(token)), Ok(()));
    }
}

#[test]
fn a_loaded_self_service_section_serialises_back_to_what_loads_the_same() {
    let yaml = with_identities(&[
        IDENTITY.to_owned(),
        identity("name: other\nclaims: { repository_owner_id: 42 }"),
    ]);
    let config = load(&yaml).unwrap();
    // The section alone: the rest of a serialised config has its secrets redacted.
    let section = serde_json::json!({ "self_service": &config.self_service });
    let again = load(&patched(LOCAL, &serde_norway::to_string(&section).unwrap())).unwrap();
    assert_eq!(again.self_service, config.self_service);
    assert_eq!(again.self_service.identities().len(), 2);
}

#[test]
fn self_service_scalars_come_from_the_environment() {
    let config = load_with_env(
        &patched(
            LOCAL,
            &format!(
                "self_service: {{ trusted_identities: [{}] }}",
                serde_json::to_string(&serde_norway::from_str::<Value>(IDENTITY).unwrap()).unwrap()
            ),
        ),
        &[
            ("PACER_SELF_SERVICE_ENABLED", "true"),
            ("PACER_SELF_SERVICE_REGISTRATION_TIMEOUT", "3m"),
        ],
    )
    .unwrap();
    assert!(config.self_service.enabled);
    assert_eq!(
        config.self_service.registration_timeout,
        Duration::from_secs(180)
    );
    assert_eq!(config.self_service.identities().len(), 1);
}

#[test]
fn trusted_identities_are_refused_from_the_environment_naming_key_and_variable() {
    let err = load_with_env(LOCAL, &[("PACER_SELF_SERVICE_TRUSTED_IDENTITIES", "[]")]).unwrap_err();
    assert_names_key(&err, "self_service.trusted_identities");
    assert!(err.to_string().contains("YAML file only"), "{err}");
    assert!(
        err.to_string()
            .contains("(set by PACER_SELF_SERVICE_TRUSTED_IDENTITIES)"),
        "{err}"
    );
}

#[test]
fn enabled_with_no_identity_is_refused_as_admitting_no_one() {
    let err = error_for(LOCAL, "self_service: { enabled: true }");
    assert_names_key(&err, "self_service.trusted_identities");
    assert!(err.to_string().contains("admits no one"), "{err}");

    let err = load_with_env(LOCAL, &[("PACER_SELF_SERVICE_ENABLED", "1")]).unwrap_err();
    assert_names_key(&err, "self_service.trusted_identities");
}

#[test]
fn identities_are_checked_while_self_service_is_off() {
    let bad = serde_json::to_string(
        &serde_norway::from_str::<Value>(&identity("audience: sts.amazonaws.com")).unwrap(),
    )
    .unwrap();
    let err = error_for(
        LOCAL,
        &format!("self_service: {{ enabled: false, trusted_identities: [{bad}] }}"),
    );
    assert_names_key(&err, &first("audience"));
}

#[test]
fn the_registration_timeout_is_a_duration_longer_than_zero() {
    for patch in [
        "self_service: { registration_timeout: 0s }",
        "self_service: { registration_timeout: 10 }",
    ] {
        assert_names_key(
            &error_for(LOCAL, patch),
            "self_service.registration_timeout",
        );
    }
    let err =
        load_with_env(LOCAL, &[("PACER_SELF_SERVICE_REGISTRATION_TIMEOUT", "0s")]).unwrap_err();
    assert_names_key(&err, "self_service.registration_timeout");
    assert!(
        err.to_string()
            .contains("PACER_SELF_SERVICE_REGISTRATION_TIMEOUT"),
        "{err}"
    );
}

#[test]
fn identity_names_are_short_lower_case_slugs_and_unique() {
    for bad in ["''", "CI", "c_i", "ci:x", &"a".repeat(33)] {
        assert_names_key(&identity_error(&format!("name: {bad}")), &first("name"));
    }
    assert_names_key(&identity_error("name: null"), &first("name"));

    let err = load(&with_identities(&[
        identity("name: ci"),
        identity("name: gpu"),
        identity("name: ci"),
    ]))
    .unwrap_err();
    assert_names_key(&err, "self_service.trusted_identities[2].name");
    assert!(
        err.to_string()
            .contains("self_service.trusted_identities[0]"),
        "{err}"
    );
    assert!(
        load(&with_identities(&[
            identity("name: 0-ci-9"),
            identity("name: gpu")
        ]))
        .is_ok()
    );
}

#[test]
fn the_issuer_and_key_url_need_https_except_on_loopback() {
    for field in ["issuer", "jwks_url"] {
        for bad in [
            "http://idp.example.com",
            "http://10.0.0.5:8080",
            "ftp://idp.example.com",
            "idp.example.com",
            "'https://idp.example.com '",
            "'https://'",
        ] {
            let err = identity_error(&format!("{field}: {bad}"));
            assert_names_key(&err, &first(field));
        }
        for good in [
            "http://127.0.0.1:8080",
            "http://127.8.9.10/issuer",
            "'http://[::1]:8080'",
            "http://localhost:8080",
            "https://idp.example.com/realms/ci",
        ] {
            let yaml = with_identities(&[identity(&format!("{field}: {good}"))]);
            assert!(
                load(&yaml).is_ok(),
                "{field}: {good}: {:?}",
                load(&yaml).err()
            );
        }
    }
    let err = identity_error("issuer: http://idp.example.com");
    assert!(err.to_string().contains("https://"), "{err}");
    assert_names_key(&identity_error("issuer: null"), &first("issuer"));
    assert_names_key(
        &identity_error("issuer: 'https://idp.example.com/?tenant=a'"),
        &first("issuer"),
    );
}

#[test]
fn the_audience_is_required_and_not_one_other_tokens_carry() {
    for bad in [
        "null",
        "''",
        "'  '",
        "sts.amazonaws.com",
        "STS.AmazonAWS.com",
        "https://github.com/octo-org",
        "HTTPS://GitHub.COM/octo-org",
        "https://github.com",
    ] {
        let err = identity_error(&format!("audience: {bad}"));
        assert_names_key(&err, &first("audience"));
    }
    let err = identity_error("audience: https://github.com/octo-org");
    assert!(err.to_string().contains("default audience"), "{err}");
    for good in [
        "pacer",
        "https://pacer.example.com",
        "https://github.com.pacer.example",
    ] {
        let yaml = with_identities(&[identity(&format!("audience: {good}"))]);
        assert!(load(&yaml).is_ok(), "{good}");
    }
}

/// Patches `IDENTITY`'s claims down to `claims` alone.
fn only_claims(claims: &str) -> String {
    format!("claims: {{ repository_owner_id: null, workflow_ref: null, sub: null, {claims} }}")
}

#[test]
fn an_identity_needs_a_claim_rule_besides_the_audience() {
    let issuer = "issuer: https://idp.example.com";
    for claims in ["", "aud: pacer-runners"] {
        let err = identity_error(&format!("{issuer}\n{}", only_claims(claims)));
        assert_names_key(&err, &first("claims"));
        assert!(err.to_string().contains("besides aud"), "{err}");
    }
    let yaml = with_identities(&[identity(&format!(
        "{issuer}\n{}",
        only_claims("aud: pacer-runners, workflow_ref: { prefix: a/b/ }")
    ))]);
    assert!(load(&yaml).is_ok());
}

#[test]
fn github_actions_tokens_need_a_rule_on_whose_repository_they_are() {
    for issuer in [
        GITHUB_ISSUER,
        "https://token.actions.githubusercontent.com/octo-enterprise",
    ] {
        let err = identity_error(&format!(
            "issuer: {issuer}\n{}",
            only_claims("workflow_ref: { prefix: octo-org/infra/ }, aud: pacer-runners")
        ));
        assert_names_key(&err, &first("claims"));
        assert!(
            err.to_string().contains("every repository on GitHub"),
            "{err}"
        );
        assert!(err.to_string().contains("repository_owner_id"), "{err}");

        for claim in [
            "repository_owner_id",
            "repository_id",
            "repository_owner",
            "repository",
            "sub",
            "enterprise_id",
        ] {
            let yaml = with_identities(&[identity(&format!(
                "issuer: {issuer}\n{}",
                only_claims(&format!("{claim}: x"))
            ))]);
            assert!(load(&yaml).is_ok(), "{issuer} with a rule on {claim}");
        }
    }
    // Another issuer is not shared by all of GitHub: any rule but aud will do.
    let yaml = with_identities(&[identity(&format!(
        "issuer: https://gitlab.example.com\n{}",
        only_claims("project_path: { prefix: infra/ }")
    ))]);
    assert!(load(&yaml).is_ok());
}

#[test]
fn each_claim_rule_must_say_something_and_compile() {
    for (patch, key) in [
        ("claims: { sub: { regex: 'repo:(' } }", "claims.sub"),
        (
            "claims: { sub: { regex: '(a{1000}){1000}' } }",
            "claims.sub",
        ),
        ("claims: { sub: { prefix: '' } }", "claims.sub"),
        ("claims: { sub: '' }", "claims.sub"),
        ("claims: { sub: { regex: '' } }", "claims.sub"),
        (
            "claims: { sub: \"repo:octo-org/\\u202einfra\" }",
            "claims.sub",
        ),
        ("claims: { sub: [a, b] }", "claims.sub"),
        ("claims: { sub: { prefix: a, regex: b } }", "claims.sub"),
        ("claims: { sub: { glob: 'a*' } }", "claims.sub"),
        ("claims: { sub: { prefix: 1 } }", "claims.sub"),
        ("claims: { 'two words': x }", "claims"),
        ("claims: { '': x }", "claims"),
        ("identity_claim: ''", "identity_claim"),
        ("identity_claim: 'a\tb'", "identity_claim"),
    ] {
        assert_names_key(&identity_error(patch), &first(key));
    }
    let err = identity_error("claims: { sub: { glob: 'a*' } }");
    assert!(err.to_string().contains("{ regex: PATTERN }"), "{err}");

    // A rule left empty in the YAML is no rule at all.
    let sub = r#"sub: { regex: "repo:octo-org/[^:]+:ref:refs/heads/main" }"#;
    assert!(IDENTITY.contains(sub));
    let err = load(&with_identities(&[IDENTITY.replace(sub, "sub: null")])).unwrap_err();
    assert_names_key(&err, &first("claims.sub"));
}

#[test]
fn a_claim_name_with_a_line_break_is_named_on_one_line() {
    let err = identity_error("claims: { \"a\\nb\": [1] }");
    assert_eq!(err.key(), Some(first("claims.a\\nb").as_str()));
    assert!(!err.to_string().contains('\n'), "{err}");
}

#[test]
fn the_token_lifetime_is_longer_than_zero_and_at_most_a_day() {
    for bad in ["0s", "24h0m1s", "48h", "15"] {
        assert_names_key(
            &identity_error(&format!("max_token_lifetime: {bad}")),
            &first("max_token_lifetime"),
        );
    }
    let yaml = with_identities(&[identity("max_token_lifetime: 24h")]);
    assert_eq!(
        load(&yaml).unwrap().self_service.identities()[0].max_token_lifetime,
        Duration::from_secs(24 * 3600)
    );
}

#[test]
fn the_runner_placement_is_consistent_with_its_scope() {
    for (patch, key) in [
        ("runners: { scope: null }", "runners.scope"),
        ("runners: { scope: team }", "runners.scope"),
        ("runners: { org: null }", "runners.org"),
        ("runners: { org: 'octo org' }", "runners.org"),
        ("runners: { repo: octo-org/infra }", "runners.repo"),
        ("runners: { scope: repo }", "runners.org"),
        ("runners: { scope: repo, org: null }", "runners.repo"),
        (
            "runners: { scope: repo, org: null, repo: infra }",
            "runners.repo",
        ),
        (
            "runners: { scope: repo, org: null, repo: 'octo-org/../x' }",
            "runners.repo",
        ),
        ("runners: { runner_group_id: 0 }", "runners.runner_group_id"),
        (
            "runners: { runner_group_id: -3 }",
            "runners.runner_group_id",
        ),
        ("runners: { name_prefix: '' }", "runners.name_prefix"),
        ("runners: { name_prefix: 'ci/' }", "runners.name_prefix"),
        (
            "runners: { name_prefix: 'ci runner-' }",
            "runners.name_prefix",
        ),
        (
            "runners: { name_prefix: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' }",
            "runners.name_prefix",
        ),
        ("runners: { group: 1 }", "runners.group"),
    ] {
        assert_names_key(&identity_error(patch), &first(key));
    }
    assert_names_key(&identity_error("runners: null"), &first("runners.scope"));
}

#[test]
fn the_default_name_prefix_is_held_to_the_same_rule() {
    let long = "a".repeat(32);
    let err = identity_error(&format!("name: {long}"));
    assert_names_key(&err, &first("runners.name_prefix"));
    assert!(err.to_string().contains("default"), "{err}");

    let yaml = with_identities(&[identity(&format!(
        "name: {long}\nrunners: {{ name_prefix: a- }}"
    ))]);
    assert_eq!(
        load(&yaml).unwrap().self_service.identities()[0]
            .runners
            .name_prefix,
        "a-"
    );
    let yaml = with_identities(&[identity(&format!("name: {}", "a".repeat(31)))]);
    assert_eq!(
        load(&yaml).unwrap().self_service.identities()[0]
            .runners
            .name_prefix,
        format!("{}-", "a".repeat(31))
    );
}

#[test]
fn a_label_policy_needs_parsable_labels_and_a_runner_limit() {
    for (patch, key) in [
        (
            "label_policy: { allowed_labels: [gpu, ''] }",
            "label_policy.allowed_labels[1]",
        ),
        (
            "label_policy: { allowed_labels: ['[gpu'] }",
            "label_policy.allowed_labels[0]",
        ),
        (
            "label_policy: { required_labels: [ok, 'a,b'] }",
            "label_policy.required_labels[1]",
        ),
        (
            "label_policy: { required_labels: [\"a\\u200bb\"] }",
            "label_policy.required_labels[0]",
        ),
        (
            "label_policy: { max_live_runners: null }",
            "label_policy.max_live_runners",
        ),
        (
            "label_policy: { max_live_runners: -1 }",
            "label_policy.max_live_runners",
        ),
        (
            "label_policy: { max_runners: 2 }",
            "label_policy.max_runners",
        ),
    ] {
        assert_names_key(&identity_error(patch), &first(key));
    }
    let yaml = with_identities(&[identity("label_policy: null")]);
    assert!(
        load(&yaml).unwrap().self_service.identities()[0]
            .label_policy
            .is_none()
    );
}

#[test]
fn a_bad_source_cidr_or_unknown_field_names_its_key() {
    assert_names_key(
        &identity_error("source_cidrs: [10.0.0.0/8, office.example.com]"),
        &first("source_cidrs[1]"),
    );
    let err = identity_error("audiance: pacer");
    assert!(
        err.key()
            .is_some_and(|key| key.starts_with("self_service.trusted_identities[0]")),
        "{err}"
    );
    assert!(err.to_string().contains("audiance"), "{err}");
}

// ------------------------------------------------------------------------------------ warnings

#[test]
fn warnings_list_the_disabled_modes() {
    let config = load(&patched(LOCAL, "auth: { disabled: true }")).unwrap();
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    for key in ["aws.disabled", "auth.disabled", "github.disabled"] {
        assert!(
            warnings.iter().any(|w| w.starts_with(key)),
            "{key} missing from {warnings:?}"
        );
    }

    let config = load(&patched(
        &with_github(),
        "aws: { disabled: false }\nfleet: { engine: ec2 }",
    ))
    .unwrap();
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

#[test]
fn sso_without_an_allowlist_warns_that_every_account_may_sign_in() {
    let sso = |allow: &str| {
        let yaml = format!(
            "auth:\n  oidc:\n    enabled: true\n    issuer: https://idp.example\n    client_id: pacer\n    \
             client_secret: \"{}\"\n    redirect_url: https://pacer.example/api/auth/oidc/callback\n{allow}",
            "s".repeat(32)
        );
        load(&patched(
            &with_github(),
            &format!("aws: {{ disabled: false }}\nfleet: {{ engine: ec2 }}\n{yaml}"),
        ))
        .unwrap()
    };
    let warnings = sso("").warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("auth.oidc has no allowed_emails")
            && warnings[0].contains("https://idp.example"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("becomes admin"));
    for allow in [
        "    allowed_domains: [example.com]\n",
        "    allowed_emails: [a@example.com]\n",
        "    groups_claim: groups\n    allowed_groups: [ops]\n",
    ] {
        assert!(
            sso(allow).warnings().is_empty(),
            "{allow}: {:?}",
            sso(allow).warnings()
        );
    }
}

// ----------------------------------------------------------------------------------- redaction

#[test]
fn no_secret_appears_in_debug_or_serialized_output() {
    let secrets = [
        "jwt-VALUE-0123456789abcdef0123456789",
        "webhook-VALUE",
        "previous-VALUE",
        "callback-VALUE-0123456789abcdef012345",
        "oidc-VALUE",
    ];
    let yaml = patched(
        &with_oidc(),
        &format!(
            "auth: {{ jwt_secret: {}, oidc: {{ client_secret: {} }} }}\ngithub: {{ webhook_secret: {}, webhook_secret_previous: {}, callback_hmac_secret: {} }}",
            secrets[0], secrets[4], secrets[1], secrets[2], secrets[3]
        ),
    );
    let mut config = load(&yaml).unwrap();
    config.github.private_key = Some(Secret::new(FAKE_PEM));

    let debug = format!("{config:?}");
    let pretty = format!("{config:#?}");
    let json = serde_json::to_string(&config).unwrap();
    let yaml_out = serde_norway::to_string(&config).unwrap();
    for output in [&debug, &pretty, &json, &yaml_out] {
        for secret in secrets.iter().copied().chain(["MIIEowIBAAKCAQEA"]) {
            assert!(!output.contains(secret), "{secret} leaked into: {output}");
        }
        assert!(output.contains("[redacted]"));
    }
}

#[test]
fn no_secret_appears_in_error_messages() {
    for patch in [
        "auth: { jwt_secret: VALUE-abc }",
        "auth: { jwt_secret: [VALUE-abc] }",
        "github: { callback_hmac_secret: VALUE-abc }",
    ] {
        let err = error_for(LOCAL, patch);
        assert!(!err.to_string().contains("VALUE-abc"), "{err}");
    }
}

// ------------------------------------------------------------------------------ the key table

/// Flattens a serialised config into `path → rendered value` (`None` for unset), stopping at
/// table keys.
fn flatten(value: &Value, prefix: &str, out: &mut Vec<(String, Option<String>)>) {
    let rendered = match value {
        Value::Object(map) if schema::find(prefix).is_none() => {
            for (name, inner) in map {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                flatten(inner, &path, out);
            }
            return;
        }
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        Value::Array(items) => {
            let items: Vec<&str> = items
                .iter()
                .map(|item| item.as_str().unwrap_or_default())
                .collect();
            Some(format!("[{}]", items.join(", ")))
        }
        other => Some(other.to_string()),
    };
    out.push((prefix.to_owned(), rendered));
}

#[test]
fn the_key_table_matches_the_structs_and_their_defaults() {
    let mut actual = Vec::new();
    flatten(
        &serde_json::to_value(Config::default()).unwrap(),
        "",
        &mut actual,
    );

    let mut table: Vec<&str> = KEYS.iter().map(|key| key.path).collect();
    let mut structs: Vec<&str> = actual.iter().map(|(path, _)| path.as_str()).collect();
    table.sort_unstable();
    structs.sort_unstable();
    assert_eq!(
        table, structs,
        "schema.rs KEYS and the config structs disagree"
    );

    for (path, default) in &actual {
        let key = schema::find(path).unwrap();
        assert_eq!(
            key.optional,
            default.is_none(),
            "optional flag of {path} in schema.rs"
        );
        assert_eq!(
            key.default,
            default.as_deref().unwrap_or_default(),
            "default of {path} in schema.rs"
        );
    }
}

#[test]
fn the_docs_describe_every_key_with_its_variable() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let docs = std::fs::read_to_string(path).expect("docs/configuration.md exists");

    let missing: Vec<&str> = KEYS
        .iter()
        .filter(|key| {
            let variable = !key.kind.yaml_only() && !docs.contains(&key.env_name());
            !docs.contains(&format!("| `{}` |", key.path)) || variable
        })
        .map(|key| key.path)
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks these keys: {missing:?}"
    );

    let table = reference_markdown();
    assert!(
        docs.contains(&table),
        "the key table in docs/configuration.md is out of date; replace it with:\n\n{table}"
    );
    // Operators read the README first: it carries the same table.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md exists");
    assert!(
        readme.contains(&table),
        "the key table in README.md is out of date; replace it with:\n\n{table}"
    );
    for name in NON_CONFIG_ENV_VARS {
        assert!(
            docs.contains(name),
            "docs/configuration.md does not mention {name}"
        );
    }
}

// ------------------------------------------------------------------------- functions and secrets

/// The secrets of a deployment with GitHub and console auth on, by environment variable.
const FUNCTION_SECRETS: [(&str, &str); 4] = [
    ("PACER_GITHUB_WEBHOOK_SECRET", "github.webhook_secret"),
    (
        "PACER_GITHUB_CALLBACK_HMAC_SECRET",
        "github.callback_hmac_secret",
    ),
    ("PACER_GITHUB_PRIVATE_KEY", "github.private_key"),
    ("PACER_AUTH_JWT_SECRET", "auth.jwt_secret"),
];

/// A function's environment (no file, as in Lambda) holding every secret but `without`.
fn function_env(without: Option<&str>) -> Vec<(String, String)> {
    let mut vars = env(&[
        ("PACER_AWS_DISABLED", "true"),
        ("PACER_FLEET_ENGINE", "simulated"),
        ("PACER_GITHUB_APP_ID", "12345"),
    ]);
    let values = ["webhook-secret", CALLBACK_SECRET, FAKE_PEM, JWT_SECRET];
    for ((name, _), value) in FUNCTION_SECRETS.iter().zip(values) {
        if Some(*name) != without {
            vars.push((name.to_string(), value.to_string()));
        }
    }
    vars
}

#[test]
fn each_function_requires_only_the_secrets_of_its_own_work() {
    let functions = [
        Function::Serve,
        Function::Webhook,
        Function::Runner,
        Function::Api,
        Function::Orchestrator,
        Function::Reaper,
    ];
    let mut refused = 0;
    for function in functions {
        let all = Config::load_for(function, None, &function_env(None)).unwrap();
        assert_eq!(all.function, function);
        for (var, key) in FUNCTION_SECRETS {
            let loaded = Config::load_for(function, None, &function_env(Some(var)));
            if function.needs_secret(key) {
                let err = loaded.expect_err(&format!("{} without {key}", function.name()));
                // Without either form of the App key, the error points at the file form.
                assert_names_key(
                    &err,
                    if key == "github.private_key" {
                        "github.private_key_path"
                    } else {
                        key
                    },
                );
                let who = if function == Function::Serve {
                    "pacer ".to_string()
                } else {
                    format!("the {} function ", function.name())
                };
                assert!(err.to_string().contains(&who), "{err}");
                refused += 1;
            } else {
                let cfg =
                    loaded.unwrap_or_else(|e| panic!("{} without {key}: {e}", function.name()));
                assert_eq!(cfg.function, function);
            }
        }
    }
    // serve needs all four; webhook 2 (webhook, key), runner 2 (callback, key), api 2 (key, jwt),
    // orchestrator 1 (callback), reaper 1 (key).
    assert_eq!(refused, 4 + 2 + 2 + 2 + 1 + 1);
}

#[test]
fn a_secret_a_function_does_not_need_is_still_checked_when_given() {
    let mut vars = function_env(None);
    vars.retain(|(name, _)| name != "PACER_AUTH_JWT_SECRET");
    vars.push(("PACER_AUTH_JWT_SECRET".into(), "short".into()));
    let err = Config::load_for(Function::Webhook, None, &vars).unwrap_err();
    assert_names_key(&err, "auth.jwt_secret");
}

#[test]
fn sso_needs_its_client_secret_only_where_the_console_is_served() {
    let mut vars = function_env(None);
    vars.extend(env(&[
        ("PACER_SERVER_PUBLIC_URL", "https://pacer.example.com"),
        ("PACER_AUTH_OIDC_ENABLED", "true"),
        ("PACER_AUTH_OIDC_ISSUER", "https://idp.example.com"),
        ("PACER_AUTH_OIDC_CLIENT_ID", "pacer"),
        (
            "PACER_AUTH_OIDC_REDIRECT_URL",
            "https://pacer.example.com/api/auth/oidc/callback",
        ),
    ]));
    assert_names_key(
        &Config::load_for(Function::Api, None, &vars).unwrap_err(),
        "auth.oidc.client_secret",
    );
    Config::load_for(Function::Reaper, None, &vars).unwrap();
}

/// Found by any_yaml_loads_or_is_refused_by_key: an unknown key holding a
/// line break was printed as it was, and the one-line error took two.
#[test]
fn an_unknown_key_or_variable_with_a_line_break_is_named_on_one_line() {
    let err = load("\"server\\nx\": 1\n").unwrap_err();
    assert_eq!(err.to_string(), "config invalid: server\\nx: unknown key");
    let err = load_with_env(LOCAL, &[("PACER_SERVER\nX", "1")]).unwrap_err();
    assert_eq!(err.key(), Some("PACER_SERVER\\nX"));
    assert!(!err.to_string().contains('\n'), "{err}");
}

// ------------------------------------------------------------------------------ any input at all

mod properties {
    use super::*;
    use crate::arbitrary::{any_json, hostile_text, object_with};
    use proptest::prelude::*;
    use serde_json::json;

    /// Every secret the properties set starts with this, so an error that
    /// quotes one is easy to catch.
    const SECRET_MARK: &str = "S3cr3t";

    /// A key of the table and a value for it: its default, a secret,
    /// something loosely typed, or any text at all.
    fn key_and_text() -> impl Strategy<Value = (&'static schema::Key, String)> {
        let key = proptest::sample::select(KEYS.iter().collect::<Vec<_>>());
        (
            key,
            prop_oneof![
                Just(None),
                hostile_text().prop_map(Some),
                proptest::sample::select(vec![
                    "",
                    "0",
                    "1",
                    "true",
                    "-1",
                    "99999999999999999999",
                    "10/5m",
                    "1h",
                    "[\"a\", 1]",
                    "ssm:",
                    "https://x"
                ])
                .prop_map(|s| Some(s.to_string())),
            ],
        )
            .prop_map(|(key, value)| {
                let value = value.unwrap_or_else(|| key.default.to_string());
                let value = if key.kind == schema::Kind::Secret {
                    format!("{SECRET_MARK}{value}")
                } else {
                    value
                };
                (key, value)
            })
    }

    /// YAML documents: the valid local base with a few keys set to any
    /// value, raw text, and constructs YAML parsers get wrong.
    fn any_yaml() -> impl Strategy<Value = String> {
        let patched_keys = proptest::collection::vec(
            (
                proptest::sample::select(KEYS.iter().collect::<Vec<_>>()),
                prop_oneof![any_json(), hostile_text().prop_map(Value::String)],
            ),
            0..4,
        )
        .prop_map(|keys| {
            let mut tree: Value = serde_norway::from_str(LOCAL).expect("the base is YAML");
            for (key, value) in keys {
                let value = match value {
                    Value::String(s) if key.kind == schema::Kind::Secret => {
                        Value::String(format!("{SECRET_MARK}{s}"))
                    }
                    other => other,
                };
                let mut section = &mut tree;
                for name in key.path.split('.') {
                    if !section.is_object() {
                        *section = Value::Object(Default::default());
                    }
                    section = section
                        .as_object_mut()
                        .expect("made an object")
                        .entry(name)
                        .or_insert(Value::Null);
                }
                *section = value;
            }
            serde_norway::to_string(&tree).unwrap_or_default()
        });
        let tricky = vec![
            "a: &a [1]\nb: *a\n<<: *a\n",
            "<<: {server: {addr: ':1'}}\n",
            "? [1, 2]\n: x\n",
            "1: x\n",
            "server: !!binary aGVsbG8=\n",
            "server:\n  addr: *nope\n",
            "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\n",
            "---\naws: {}\n---\nauth: {}\n",
            "server: {addr: .nan}\n",
            "server:\n\taddr: x\n",
            "\"server\\nx\": 1\n",
            "server: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
        ];
        prop_oneof![
            3 => patched_keys,
            1 => hostile_text(),
            1 => proptest::sample::select(tricky).prop_map(str::to_string),
        ]
    }

    /// What every refusal must be: one line, naming the key (or, for text
    /// that is not YAML, the file), never quoting a secret.
    fn clean_refusal(err: &ConfigError) -> Result<(), TestCaseError> {
        let message = err.to_string();
        prop_assert!(!message.contains('\n'), "spans lines: {message}");
        prop_assert!(!message.contains(SECRET_MARK), "quotes a secret: {message}");
        match err {
            ConfigError::Yaml { .. } => prop_assert!(
                message.starts_with("config file (inline YAML): not valid YAML"),
                "{message}"
            ),
            _ => {
                let key = err.key().unwrap_or_default();
                prop_assert!(!key.is_empty(), "names no key: {message}");
                prop_assert!(
                    message.starts_with(&format!("config invalid: {key}")),
                    "{message}"
                );
            }
        }
        Ok(())
    }

    /// A budget whose every field is absent, plausible or anything at all.
    fn any_budget() -> impl Strategy<Value = Value> {
        object_with(vec![
            ("name", vec![json!("ci"), json!("a".repeat(65)), json!("")]),
            ("project", vec![Value::Null, json!("acme"), json!("a/b")]),
            (
                "pool",
                vec![Value::Null, json!("acme/linux"), json!("/"), json!("acme/")],
            ),
            (
                "monthly_usd",
                vec![
                    json!(500),
                    json!(0.000_000_1),
                    json!(-1),
                    json!(1e300),
                    json!("5"),
                ],
            ),
            (
                "warn_percent",
                vec![json!(80), json!(0), json!(101), json!(-3), json!(1e10)],
            ),
            ("enforce", vec![json!(true), json!("yes"), Value::Null]),
        ])
        .prop_map(Value::Object)
    }

    /// Text for a rule: anything at all, or what a real rule holds.
    fn any_rule_text() -> impl Strategy<Value = String> {
        prop_oneof![1 => hostile_text(), 3 => "[a-z0-9:/._-]{1,20}"]
    }

    /// A claim rule as written: any JSON at all, or one of a rule's shapes with any text in it.
    fn any_claim_rule() -> impl Strategy<Value = Value> {
        let pattern = prop_oneof![
            3 => any_rule_text(),
            1 => proptest::sample::select(vec!["(", "a{1000}{1000}", ".*", "[^:]+", "\\", "(?i)x|"])
                .prop_map(str::to_string),
        ];
        prop_oneof![
            1 => any_json(),
            2 => any_rule_text().prop_map(Value::String),
            1 => pattern.prop_map(|pattern| json!({ "regex": pattern })),
            1 => any_rule_text().prop_map(|prefix| json!({ "prefix": prefix })),
        ]
    }

    /// A `claims` mapping: any claim names, the ones that matter among them, and any rules.
    fn any_claims() -> impl Strategy<Value = Value> {
        let name = prop_oneof![
            1 => hostile_text(),
            5 => proptest::sample::select(vec!["sub", "aud", "repository_owner_id", "workflow_ref"])
                .prop_map(str::to_string),
        ];
        proptest::collection::vec((name, any_claim_rule()), 0..4)
            .prop_map(|rules| Value::Object(rules.into_iter().collect()))
    }

    /// A trusted identity: the valid `IDENTITY` under another issuer and any claims, or one
    /// whose every field is absent, plausible or anything at all.
    fn any_identity() -> impl Strategy<Value = Value> {
        let issuers = vec![
            GITHUB_ISSUER.to_owned(),
            format!("{GITHUB_ISSUER}/octo-enterprise"),
            "https://idp.example".to_owned(),
            "http://127.0.0.1:9".to_owned(),
        ];
        let plausible =
            (proptest::sample::select(issuers), any_claims()).prop_map(|(issuer, claims)| {
                let mut identity: Value =
                    serde_norway::from_str(IDENTITY).expect("IDENTITY is YAML");
                let fields = identity.as_object_mut().expect("IDENTITY is a mapping");
                fields.insert("issuer".into(), Value::String(issuer));
                fields.insert("claims".into(), claims);
                identity
            });
        let fields = object_with(vec![
            (
                "name",
                vec![json!("ci"), json!("gpu-2"), json!("a".repeat(32))],
            ),
            (
                "issuer",
                vec![
                    json!(GITHUB_ISSUER),
                    json!("https://idp.example"),
                    json!("http://idp.example"),
                ],
            ),
            (
                "jwks_url",
                vec![Value::Null, json!("https://idp.example/keys")],
            ),
            (
                "audience",
                vec![
                    json!("pacer-runners"),
                    json!("sts.amazonaws.com"),
                    json!("https://github.com/o"),
                ],
            ),
            ("identity_claim", vec![json!("sub"), json!("repository")]),
            (
                "source_cidrs",
                vec![json!([]), json!(["10.0.0.0/8", "::1"])],
            ),
            (
                "max_token_lifetime",
                vec![json!("15m"), json!("24h"), json!("0s")],
            ),
            (
                "runners",
                vec![
                    json!({ "scope": "org", "org": "octo-org" }),
                    json!({ "scope": "repo", "repo": "octo-org/infra", "name_prefix": "x-" }),
                    json!({ "scope": "org" }),
                ],
            ),
            (
                "label_policy",
                vec![
                    Value::Null,
                    json!({ "allowed_labels": ["gpu", "cuda-*"], "max_live_runners": 2 }),
                    json!({ "allowed_labels": ["["] }),
                ],
            ),
        ]);
        let anything = (fields, prop_oneof![3 => any_claims(), 1 => any_json()]).prop_map(
            |(mut identity, claims)| {
                identity.insert("claims".into(), claims);
                Value::Object(identity)
            },
        );
        prop_oneof![2 => plausible, 1 => anything]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever the identities hold, loading answers without a panic; and what it accepts
        /// keeps the promises the rules make.
        #[test]
        fn any_trusted_identities_load_or_are_refused_by_key(
            enabled in any::<bool>(),
            entries in proptest::collection::vec(prop_oneof![6 => any_identity(), 1 => any_json()], 0..3),
        ) {
            let mut tree: Value = serde_norway::from_str(LOCAL).expect("the base is YAML");
            tree.as_object_mut().expect("the base is a mapping").insert(
                "self_service".into(),
                json!({ "enabled": enabled, "trusted_identities": entries }),
            );
            let yaml = serde_norway::to_string(&tree).unwrap_or_default();
            let config = match Config::from_yaml(&yaml, &[]) {
                Ok(config) => config,
                Err(err) => return clean_refusal(&err),
            };
            let section = &config.self_service;
            prop_assert_eq!(section.identities().len(), section.trusted_identities.len());
            prop_assert!(!enabled || !section.identities().is_empty());
            for identity in section.identities() {
                prop_assert!(identity.claims.iter().any(|rule| rule.claim != "aud"));
                if identity.issuer.starts_with(GITHUB_ISSUER) {
                    let owner_claims = ["repository_owner_id", "repository_id", "repository_owner", "repository", "sub", "enterprise_id"];
                    prop_assert!(identity.claims.iter().any(|rule| owner_claims.contains(&rule.claim.as_str())));
                }
                prop_assert!(identity.issuer.starts_with("https://") || identity.issuer.starts_with("http://127.0.0.1"));
                prop_assert!(identity.audience == "pacer-runners", "{}", identity.audience);
                prop_assert!((1..=32).contains(&identity.runners.name_prefix.len()));
            }
        }

        /// Whatever the budgets hold, loading answers without a panic; what it accepts is a
        /// positive amount with a warning line inside it.
        #[test]
        fn any_budgets_load_or_are_refused_by_key(
            entries in proptest::collection::vec(prop_oneof![4 => any_budget(), 1 => any_json()], 0..3),
        ) {
            let mut tree: Value = serde_norway::from_str(LOCAL).expect("the base is YAML");
            tree.as_object_mut().expect("the base is a mapping").insert("budgets".into(), json!(entries));
            let yaml = serde_norway::to_string(&tree).unwrap_or_default();
            let config = match Config::from_yaml(&yaml, &[]) {
                Ok(config) => config,
                Err(err) => return clean_refusal(&err),
            };
            prop_assert_eq!(config.monthly_budgets().len(), config.budgets.len());
            for budget in config.monthly_budgets() {
                prop_assert!(budget.monthly_micro_usd > 0);
                prop_assert!((1..=100).contains(&budget.warn_percent));
                prop_assert!(budget.warn_micro_usd() <= budget.monthly_micro_usd);
            }
        }

        #[test]
        fn any_pacer_variables_load_or_are_refused_by_key(vars in proptest::collection::vec(key_and_text(), 0..5)) {
            let vars: Vec<(String, String)> = vars.into_iter().map(|(key, value)| (key.env_name(), value)).collect();
            if let Err(err) = Config::from_yaml(LOCAL, &vars) {
                clean_refusal(&err)?;
            }
        }

        #[test]
        fn any_yaml_loads_or_is_refused_by_key(yaml in any_yaml()) {
            if let Err(err) = Config::from_yaml(&yaml, &[]) {
                clean_refusal(&err)?;
            }
        }
    }
}
