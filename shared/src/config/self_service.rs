//! The `self_service` section's rules, and the trusted identities it turns into domain values.
//!
//! A trusted identity decides who on the internet may get a runner inside an operator's GitHub
//! organisation, so its mistakes are refused at load rather than found by an attacker: an issuer
//! reached over plain http, an audience other systems' tokens carry too, claim rules that admit
//! every subject of a shared issuer. The identities are parsed here once, when the configuration
//! is loaded, and handed out by [`SelfServiceConfig::identities`]; the domain never sees the
//! configuration's types.

use super::error::ConfigError;
use super::sections::{
    ClaimRuleConfig, LabelPolicyConfig, RunnersConfig, SelfServiceConfig, TrustedIdentityConfig,
};
use super::validate::is_loopback;
use crate::domain::duration::format_go_duration;
use crate::domain::labels::Label;
use crate::domain::project::{RepoName, Scope, parse_login};
use crate::domain::self_service::{
    AnchoredRegex, ClaimRule, ClaimTest, LabelGlob, LabelPolicy, Placement, TrustedIdentity,
};
use crate::domain::text::is_invisible;
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

/// The longest identity name: it starts every owner the identity admits.
const MAX_NAME: usize = 32;

/// The longest runner name prefix; the caller's part of the name comes after it.
const MAX_NAME_PREFIX: usize = 32;

/// The longest claim name pacer accepts in a rule.
const MAX_CLAIM_NAME: usize = 128;

/// The longest a token may live (`exp - iat`): a stolen token is worth at most this much.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// GitHub Actions' issuer host. It signs tokens for every workflow of every repository on
/// GitHub, with or without an enterprise path after it.
const GITHUB_ACTIONS_HOST: &str = "token.actions.githubusercontent.com";

/// The claims of a GitHub Actions token that say whose workflow it is; one of them must be ruled
/// on, or every repository on GitHub would be admitted.
const GITHUB_OWNER_CLAIMS: [&str; 6] = [
    "repository_owner_id",
    "repository_id",
    "repository_owner",
    "repository",
    "sub",
    "enterprise_id",
];

/// The audience claim: a rule on it says nothing about whose token it is.
const AUDIENCE_CLAIM: &str = "aud";

impl SelfServiceConfig {
    /// The trusted identities, checked and parsed when the configuration was loaded. Empty for a
    /// configuration that did not come from [`Config::load`](super::Config::load) (or its
    /// siblings), which is never one pacer runs with.
    pub fn identities(&self) -> &[TrustedIdentity] {
        &self.identities
    }
}

type Parsed<T> = Result<T, ConfigError>;

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, message)
}

/// Checks the section and parses every identity, in order; the first broken rule is the error.
pub(super) fn trusted_identities(section: &SelfServiceConfig) -> Parsed<Vec<TrustedIdentity>> {
    if section.registration_timeout.is_zero() {
        return Err(invalid(
            "self_service.registration_timeout",
            "must be longer than zero",
        ));
    }
    if section.enabled && section.trusted_identities.is_empty() {
        return Err(invalid(
            "self_service.trusted_identities",
            "is empty while self_service.enabled is true, so self-service admits no one: add an identity, or set self_service.enabled to false",
        ));
    }
    let mut identities: Vec<TrustedIdentity> = Vec::with_capacity(section.trusted_identities.len());
    for (index, written) in section.trusted_identities.iter().enumerate() {
        let entry = Entry(index);
        let identity = identity(&entry, written)?;
        if let Some(first) = identities.iter().position(|i| i.name == identity.name) {
            return Err(invalid(
                &entry.key("name"),
                format!(
                    "{:?} is already the name of self_service.trusted_identities[{first}]; every identity needs its own, since it starts the owner of each runner",
                    identity.name
                ),
            ));
        }
        identities.push(identity);
    }
    Ok(identities)
}

/// The position of one identity in the list, which names the keys of its errors.
struct Entry(usize);

impl Entry {
    /// `self_service.trusted_identities[<index>].<field>`.
    fn key(&self, field: &str) -> String {
        format!("self_service.trusted_identities[{}].{field}", self.0)
    }
}

fn identity(entry: &Entry, written: &TrustedIdentityConfig) -> Parsed<TrustedIdentity> {
    identity_name(entry, &written.name)?;
    let issuer = issuer(entry, &written.issuer)?;
    if let Some(jwks_url) = &written.jwks_url {
        key_url(&entry.key("jwks_url"), jwks_url)?;
    }
    audience(entry, &written.audience)?;
    claim_name(&entry.key("identity_claim"), &written.identity_claim)?;
    let claims = claim_rules(entry, &written.claims, &issuer)?;
    token_lifetime(entry, written.max_token_lifetime)?;
    let runners = placement(entry, &written.runners, &written.name)?;
    let label_policy = written
        .label_policy
        .as_ref()
        .map(|policy| label_policy(entry, policy))
        .transpose()?;
    Ok(TrustedIdentity {
        name: written.name.clone(),
        issuer: written.issuer.clone(),
        jwks_url: written.jwks_url.clone(),
        audience: written.audience.clone(),
        identity_claim: written.identity_claim.clone(),
        claims,
        source_cidrs: written.source_cidrs.clone(),
        max_token_lifetime: written.max_token_lifetime,
        runners,
        label_policy,
    })
}

fn identity_name(entry: &Entry, name: &str) -> Parsed<()> {
    let well_formed = (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if well_formed {
        return Ok(());
    }
    let message = if name.is_empty() {
        "required: a short name for the identity, such as ci".to_owned()
    } else {
        format!("{name:?} must be 1 to {MAX_NAME} characters of a-z, 0-9 and '-'")
    };
    Err(invalid(&entry.key("name"), message))
}

/// The issuer: where the signing keys are found, so it must be reached over TLS, and the text
/// tokens carry in `iss`, so it must be written exactly as they do.
fn issuer(entry: &Entry, text: &str) -> Parsed<Url> {
    let key = entry.key("issuer");
    if text.is_empty() {
        return Err(invalid(
            &key,
            "required: the issuer URL its tokens carry in iss, such as https://token.actions.githubusercontent.com",
        ));
    }
    let url = key_url(&key, text)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            &key,
            format!("{text:?} must not have a query or a fragment (OIDC issuers have neither)"),
        ));
    }
    Ok(url)
}

/// A URL pacer fetches signing keys through (the issuer's discovery document, or the key set
/// itself): https, since anyone on the path of plain http could hand pacer keys of their own and
/// sign any token they like; plain http only for a loopback host, for tests and local use.
fn key_url(key: &str, text: &str) -> Parsed<Url> {
    if text.trim() != text {
        return Err(invalid(
            key,
            format!("{text:?} has spaces around it; write the URL alone"),
        ));
    }
    let url = Url::parse(text).map_err(|e| invalid(key, format!("invalid URL {text:?} ({e})")))?;
    let secure = match url.scheme() {
        "https" => true,
        "http" => is_loopback(&url),
        _ => false,
    };
    if !secure || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(
            key,
            format!(
                "{text:?} must be an https:// URL with a host (plain http only for a loopback host: 127.0.0.1, ::1 or localhost), because the keys that sign tokens are fetched through it"
            ),
        ));
    }
    Ok(url)
}

/// The audience must be pacer's own: a value other systems' tokens carry too would let a token
/// minted for them be replayed at pacer.
fn audience(entry: &Entry, audience: &str) -> Parsed<()> {
    let key = entry.key("audience");
    let choose = "choose an audience for pacer alone, such as pacer-runners, and ask for it when minting the token";
    if audience.trim().is_empty() {
        return Err(invalid(
            &key,
            format!("required: the value tokens must carry in aud; {choose}"),
        ));
    }
    if audience.eq_ignore_ascii_case("sts.amazonaws.com") {
        return Err(invalid(
            &key,
            format!(
                "{audience:?} is the audience of tokens exchanged for AWS credentials, so every workflow that assumes an AWS role holds one; {choose}"
            ),
        ));
    }
    let github_default = Url::parse(audience)
        .is_ok_and(|url| url.host_str().is_some_and(|host| host == "github.com"));
    if github_default {
        return Err(invalid(
            &key,
            format!(
                "{audience:?} has the form of GitHub's default audience (https://github.com/<owner>), which every workflow of that owner gets without asking; {choose}"
            ),
        ));
    }
    Ok(())
}

/// A claim name: 1 to [`MAX_CLAIM_NAME`] characters with no spaces, control or invisible
/// characters (it is printed in errors and in security events).
fn claim_name(key: &str, name: &str) -> Parsed<()> {
    let well_formed = !name.is_empty()
        && name.chars().count() <= MAX_CLAIM_NAME
        && !name.chars().any(|c| c.is_whitespace() || is_invisible(c));
    if well_formed {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!(
                "{name:?} is not a claim name (1 to {MAX_CLAIM_NAME} characters, no spaces, control or invisible characters)"
            ),
        ))
    }
}

fn claim_rules(
    entry: &Entry,
    written: &BTreeMap<String, ClaimRuleConfig>,
    issuer: &Url,
) -> Parsed<Vec<ClaimRule>> {
    let key = entry.key("claims");
    let mut rules = Vec::with_capacity(written.len());
    for (claim, rule) in written {
        claim_name(&key, claim)?;
        rules.push(ClaimRule {
            claim: claim.clone(),
            test: claim_test(&format!("{key}.{claim}"), rule)?,
        });
    }
    if !rules.iter().any(|rule| rule.claim != AUDIENCE_CLAIM) {
        return Err(invalid(
            &key,
            "needs a rule on at least one claim besides aud: the audience says a token was minted for pacer, not whose it is",
        ));
    }
    let owner_ruled = rules
        .iter()
        .any(|rule| GITHUB_OWNER_CLAIMS.contains(&rule.claim.as_str()));
    if issuer.host_str() == Some(GITHUB_ACTIONS_HOST) && !owner_ruled {
        return Err(invalid(
            &key,
            format!(
                "needs a rule on one of {}: GitHub Actions' issuer signs tokens for every repository on GitHub, and any of them can ask for this audience, so without one anyone's workflow could get runners",
                GITHUB_OWNER_CLAIMS.join(", ")
            ),
        ));
    }
    Ok(rules)
}

fn claim_test(key: &str, rule: &ClaimRuleConfig) -> Parsed<ClaimTest> {
    let (text, kind) = match rule {
        ClaimRuleConfig::Exact(value) => (value, "value"),
        ClaimRuleConfig::Prefix(prefix) => (prefix, "prefix"),
        ClaimRuleConfig::Regex(pattern) => (pattern, "pattern"),
    };
    if text.is_empty() {
        return Err(invalid(
            key,
            format!("the {kind} is empty: a rule must say what the claim holds"),
        ));
    }
    // Such a character can make the rule read as other text than it is.
    if text.chars().any(is_invisible) {
        return Err(invalid(
            key,
            format!("the {kind} {text:?} holds a control or invisible character"),
        ));
    }
    Ok(match rule {
        ClaimRuleConfig::Exact(value) => ClaimTest::Exact(value.clone()),
        ClaimRuleConfig::Prefix(prefix) => ClaimTest::Prefix(prefix.clone()),
        ClaimRuleConfig::Regex(pattern) => {
            ClaimTest::Regex(AnchoredRegex::new(pattern).map_err(|e| invalid(key, e))?)
        }
    })
}

fn token_lifetime(entry: &Entry, lifetime: Duration) -> Parsed<()> {
    if lifetime.is_zero() || lifetime > MAX_TOKEN_LIFETIME {
        return Err(invalid(
            &entry.key("max_token_lifetime"),
            format!(
                "must be longer than zero and at most {} (got {})",
                format_go_duration(MAX_TOKEN_LIFETIME),
                format_go_duration(lifetime)
            ),
        ));
    }
    Ok(())
}

fn placement(entry: &Entry, written: &RunnersConfig, identity_name: &str) -> Parsed<Placement> {
    let key = |field: &str| entry.key(&format!("runners.{field}"));
    let scope = written
        .scope
        .ok_or_else(|| invalid(&key("scope"), "required: org or repo"))?;
    let (org, repo) = match scope {
        Scope::Org => {
            if written.repo.is_some() {
                return Err(invalid(
                    &key("repo"),
                    "is for scope repo; with scope org the runners serve the repositories of runners.org",
                ));
            }
            let org = written
                .org
                .as_deref()
                .ok_or_else(|| invalid(&key("org"), "required when runners.scope is org"))?;
            parse_login("org", org).map_err(|e| invalid(&key("org"), e.message))?;
            (Some(org.to_owned()), None)
        }
        Scope::Repo => {
            if written.org.is_some() {
                return Err(invalid(
                    &key("org"),
                    "is for scope org; with scope repo, runners.repo names the owner",
                ));
            }
            let repo = written
                .repo
                .as_deref()
                .ok_or_else(|| invalid(&key("repo"), "required when runners.scope is repo"))?;
            let repo = RepoName::parse(repo).map_err(|e| invalid(&key("repo"), e))?;
            (None, Some(repo))
        }
    };
    if written.runner_group_id < 1 {
        return Err(invalid(
            &key("runner_group_id"),
            format!(
                "must be a runner group id, 1 or more (1 is the default group; got {})",
                written.runner_group_id
            ),
        ));
    }
    let name_prefix = name_prefix(&key("name_prefix"), written, identity_name)?;
    Ok(Placement {
        scope,
        org,
        repo,
        runner_group_id: written.runner_group_id,
        name_prefix,
    })
}

/// The prefix of every runner name, written or the default `<name>-`: characters GitHub takes in
/// a runner name, and short enough to leave room for the caller's part.
fn name_prefix(key: &str, written: &RunnersConfig, identity_name: &str) -> Parsed<String> {
    let prefix = written
        .name_prefix
        .clone()
        .unwrap_or_else(|| format!("{identity_name}-"));
    let well_formed = (1..=MAX_NAME_PREFIX).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if well_formed {
        return Ok(prefix);
    }
    let message = match written.name_prefix {
        Some(_) => {
            format!("{prefix:?} must be 1 to {MAX_NAME_PREFIX} of A-Z, a-z, 0-9, '.', '_' and '-'")
        }
        None => format!(
            "the default, {prefix:?} (the identity's name and '-'), is longer than {MAX_NAME_PREFIX} characters: set a shorter one"
        ),
    };
    Err(invalid(key, message))
}

fn label_policy(entry: &Entry, written: &LabelPolicyConfig) -> Parsed<LabelPolicy> {
    let key = |field: &str| entry.key(&format!("label_policy.{field}"));
    let allowed_labels = written
        .allowed_labels
        .iter()
        .enumerate()
        .map(|(index, glob)| {
            LabelGlob::parse(glob)
                .map_err(|e| invalid(&format!("{}[{index}]", key("allowed_labels")), e))
        })
        .collect::<Parsed<Vec<_>>>()?;
    let required_labels = written
        .required_labels
        .iter()
        .enumerate()
        .map(|(index, label)| {
            Label::parse(label)
                .map_err(|e| invalid(&format!("{}[{index}]", key("required_labels")), e))
        })
        .collect::<Parsed<Vec<_>>>()?;
    let max_live_runners = written.max_live_runners.ok_or_else(|| {
        invalid(
            &key("max_live_runners"),
            "required when label_policy is given: how many runners an owner may hold at once",
        )
    })?;
    Ok(LabelPolicy {
        allowed_labels,
        required_labels,
        max_live_runners,
    })
}
