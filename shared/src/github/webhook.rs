//! GitHub webhook deliveries: signature verification and the payloads pacer reads.
//!
//! Verification is HMAC-SHA256 over the exact raw body, compared in constant time with the
//! `X-Hub-Signature-256` header, against every configured secret (the current one and, during a
//! rotation, the previous one). The payload types keep only the fields pacer uses and are lenient
//! where GitHub omits or nulls fields: a delivery that names a job must never be refused because a
//! field pacer does not need is missing.

use std::fmt;

use hmac::Mac;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::domain::{GithubJob, RepoName, Reported, Time, Visibility};
use crate::mac::{HmacSha256, hmac_sha256_of};

/// The header carrying the HMAC-SHA256 signature. The legacy `X-Hub-Signature` (SHA-1) is
/// deliberately not read: a delivery carrying only that one is refused as unsigned.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The event name (`workflow_job`, `ping`, …).
pub const EVENT_HEADER: &str = "x-github-event";
/// The delivery's unique id (a redelivery keeps it).
pub const DELIVERY_HEADER: &str = "x-github-delivery";

const SIGNATURE_PREFIX: &str = "sha256=";
/// Hex characters in a SHA-256 digest.
const SIGNATURE_HEX_LEN: usize = 64;

/// Why a delivery's signature was refused. Messages tell an operator what to check and never
/// contain a secret or the expected digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the delivery has no X-Hub-Signature-256 header; set a webhook secret on the GitHub App (the legacy SHA-1 signature alone is not accepted)"
    )]
    Missing,
    #[error("the X-Hub-Signature-256 header does not start with \"sha256=\"")]
    NotSha256,
    #[error("the X-Hub-Signature-256 header is not hexadecimal after \"sha256=\"")]
    BadHex,
    #[error(
        "the X-Hub-Signature-256 header has {hex_chars} hex characters after \"sha256=\", expected 64"
    )]
    WrongLength { hex_chars: usize },
    #[error(
        "the X-Hub-Signature-256 signature does not match; the GitHub App's webhook secret differs from github.webhook_secret"
    )]
    Mismatch,
    #[error("no webhook secret is configured (github.webhook_secret)")]
    NoSecret,
}

/// Checks `header` (the value of `X-Hub-Signature-256`) against the HMAC-SHA256 of `body` under
/// any of `secrets`. Every secret is tried, so the time taken does not say which one matched.
pub fn verify_signature(
    secrets: &[&[u8]],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_digest = header
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(SignatureError::NotSha256)?;
    if hex_digest.len() != SIGNATURE_HEX_LEN {
        return Err(if hex_digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            SignatureError::WrongLength {
                hex_chars: hex_digest.len(),
            }
        } else {
            SignatureError::BadHex
        });
    }
    let given = hex::decode(hex_digest).map_err(|_| SignatureError::BadHex)?;
    let usable: Vec<&[u8]> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    if usable.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let matched = usable.iter().fold(false, |matched, secret| {
        // `verify_slice` compares in constant time.
        let ok = mac(secret, body).verify_slice(&given).is_ok();
        matched | ok
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `X-Hub-Signature-256` value GitHub would send for `body` under `secret`: what tests, the
/// simulated runner and `pacer admin send-test-job` use to sign their deliveries.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!(
        "{SIGNATURE_PREFIX}{}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

fn mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    hmac_sha256_of(secret, &[body])
}

// ------------------------------------------------------------------------------------ payloads

/// A `workflow_job` delivery.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct WorkflowJobEvent {
    pub action: WorkflowJobAction,
    pub workflow_job: WorkflowJob,
    pub repository: Repository,
    /// Absent when the hook is not an App's (and in some of GitHub's own examples); the
    /// installation is then looked up by repository.
    #[serde(default)]
    pub installation: Option<InstallationRef>,
    #[serde(default)]
    pub sender: Option<Account>,
}

impl WorkflowJobEvent {
    /// The job as pacer describes it, and what GitHub reports of it.
    pub fn into_job(self) -> (GithubJob, Reported) {
        let reported = match self.action {
            WorkflowJobAction::Queued => Reported::Queued,
            WorkflowJobAction::Waiting => Reported::Waiting,
            WorkflowJobAction::InProgress => Reported::InProgress,
            WorkflowJobAction::Completed => Reported::Completed,
            WorkflowJobAction::Unknown(action) => Reported::Other(action),
        };
        let visibility = self.repository.visibility();
        let wj = self.workflow_job;
        let job = GithubJob {
            id: wj.id,
            run_id: wj.run_id,
            run_attempt: wj.run_attempt.unwrap_or(1),
            repo: self.repository.full_name,
            visibility,
            installation_id: self.installation.map(|i| i.id),
            labels: wj.labels,
            workflow_name: wj.workflow_name,
            name: wj.name,
            sender: self.sender.map(|s| s.login),
            html_url: wj.html_url,
            runner_name: wj.runner_name,
            conclusion: wj.conclusion,
        };
        (job, reported)
    }
}

/// What happened to the job. Actions GitHub may add later are kept, not refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum WorkflowJobAction {
    Queued,
    InProgress,
    Completed,
    Waiting,
    Unknown(String),
}

impl WorkflowJobAction {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Waiting => "waiting",
            Self::Unknown(other) => other,
        }
    }
}

impl From<String> for WorkflowJobAction {
    fn from(action: String) -> Self {
        match action.as_str() {
            "queued" => Self::Queued,
            "in_progress" => Self::InProgress,
            "completed" => Self::Completed,
            "waiting" => Self::Waiting,
            _ => Self::Unknown(action),
        }
    }
}

impl From<WorkflowJobAction> for String {
    fn from(action: WorkflowJobAction) -> String {
        action.as_str().to_owned()
    }
}

impl fmt::Display for WorkflowJobAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The job inside a `workflow_job` delivery. Everything but the ids may be missing or null
/// depending on the action and GitHub's version, so everything else is optional or defaulted.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct WorkflowJob {
    pub id: i64,
    pub run_id: i64,
    #[serde(default)]
    pub run_attempt: Option<i64>,
    /// `queued` | `in_progress` | `completed` | `waiting` | … — it can disagree with the action
    /// (a `queued` action with status `waiting`), so decisions go by the action.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: Vec<String>,
    #[serde(default)]
    pub runner_id: Option<i64>,
    #[serde(default)]
    pub runner_name: Option<String>,
    #[serde(default)]
    pub runner_group_id: Option<i64>,
    #[serde(default)]
    pub runner_group_name: Option<String>,
    /// The job's name in the workflow.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub workflow_name: Option<String>,
    #[serde(default)]
    pub head_branch: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub created_at: Option<Time>,
    #[serde(default)]
    pub started_at: Option<Time>,
    #[serde(default)]
    pub completed_at: Option<Time>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Repository {
    /// `owner/name`.
    pub full_name: String,
    pub name: String,
    pub owner: Account,
    /// GitHub always sends it; missing, the repository counts as public.
    #[serde(default)]
    pub private: Option<bool>,
    /// `public` | `private` | `internal`, on newer GitHub versions.
    #[serde(default)]
    pub visibility: Option<String>,
}

impl Repository {
    /// The repository as pacer names it, validated.
    pub fn repo_name(&self) -> Result<RepoName, String> {
        RepoName::parse(&self.full_name)
    }

    pub fn visibility(&self) -> Visibility {
        Visibility::from_github(self.private, self.visibility.as_deref())
    }
}

/// A user, bot or organisation: only its login matters to pacer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Account {
    pub login: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct InstallationRef {
    pub id: i64,
}

/// The `ping` GitHub sends when a hook is created or redelivered from the App's settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PingEvent {
    #[serde(default)]
    pub zen: Option<String>,
    #[serde(default)]
    pub hook_id: Option<i64>,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A `queued` workflow_job delivery shaped like GitHub's, for
/// `pacer admin send-test-job` and tests: the least a real one carries.
pub fn sample_queued_payload(
    github_job_id: i64,
    repo: &RepoName,
    labels: &[String],
    installation_id: i64,
) -> serde_json::Value {
    let run_id = github_job_id / 2 + 1;
    json!({
        "action": "queued",
        "workflow_job": {
            "id": github_job_id,
            "run_id": run_id,
            "run_attempt": 1,
            "status": "queued",
            "conclusion": null,
            "name": "pacer test job",
            "workflow_name": "pacer send-test-job",
            "html_url": format!("https://github.com/{repo}/actions/runs/{run_id}/job/{github_job_id}"),
            "labels": labels,
            "runner_id": null,
            "runner_name": null,
        },
        "repository": {
            "full_name": repo.to_string(), "name": repo.name(), "owner": {"login": repo.owner()},
            "private": true, "visibility": "private",
        },
        "installation": {"id": installation_id},
        "sender": {"login": "pacer-send-test-job"},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";

    #[test]
    fn githubs_documented_signature_verifies() {
        // The example from GitHub's "Validating webhook deliveries" documentation.
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(SECRET, BODY), header);
        assert_eq!(verify_signature(&[SECRET], BODY, Some(header)), Ok(()));
    }

    #[test]
    fn the_previous_secret_is_accepted_during_rotation() {
        let header = sign(b"old-secret", BODY);
        assert_eq!(
            verify_signature(&[b"new-secret", b"old-secret"], BODY, Some(&header)),
            Ok(())
        );
        assert_eq!(
            verify_signature(&[b"new-secret"], BODY, Some(&header)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_missing_header_is_refused() {
        assert_eq!(
            verify_signature(&[SECRET], BODY, None),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn a_sha1_signature_is_refused_as_not_sha256() {
        let header = "sha1=0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            verify_signature(&[SECRET], BODY, Some(header)),
            Err(SignatureError::NotSha256)
        );
    }

    #[test]
    fn malformed_digests_are_told_apart() {
        let good = sign(SECRET, BODY);
        let short = &good[..good.len() - 2];
        assert_eq!(
            verify_signature(&[SECRET], BODY, Some(short)),
            Err(SignatureError::WrongLength { hex_chars: 62 })
        );
        let not_hex = format!("sha256={}", "zz".repeat(32));
        assert_eq!(
            verify_signature(&[SECRET], BODY, Some(&not_hex)),
            Err(SignatureError::BadHex)
        );
    }

    #[test]
    fn a_changed_body_does_not_verify() {
        let header = sign(SECRET, BODY);
        assert_eq!(
            verify_signature(&[SECRET], b"Hello, World?", Some(&header)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let header = sign(SECRET, BODY)
            .to_uppercase()
            .replacen("SHA256=", "sha256=", 1);
        assert_eq!(verify_signature(&[SECRET], BODY, Some(&header)), Ok(()));
    }

    #[test]
    fn no_configured_secret_verifies_nothing() {
        let header = sign(b"", BODY);
        assert_eq!(
            verify_signature(&[b""], BODY, Some(&header)),
            Err(SignatureError::NoSecret)
        );
        assert_eq!(
            verify_signature(&[], BODY, Some(&header)),
            Err(SignatureError::NoSecret)
        );
    }

    #[test]
    fn error_messages_never_contain_the_secret_or_the_digest() {
        let expected = sign(SECRET, BODY);
        let wrong = sign(b"other", BODY);
        let err = verify_signature(&[SECRET], BODY, Some(&wrong))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("Secret to Everybody"));
        assert!(!err.contains(&expected[7..]));
    }

    #[test]
    fn an_unknown_action_is_kept_not_refused() {
        let action: WorkflowJobAction = serde_json::from_str("\"requested\"").unwrap();
        assert_eq!(action, WorkflowJobAction::Unknown("requested".into()));
        assert_eq!(serde_json::to_string(&action).unwrap(), "\"requested\"");
    }

    #[test]
    fn a_minimal_payload_with_nulls_parses() {
        let body = serde_json::json!({
            "action": "queued",
            "workflow_job": {"id": 1, "run_id": 2, "labels": null, "runner_id": null, "created_at": null},
            "repository": {"full_name": "acme/widgets", "name": "widgets", "owner": {"login": "acme"}}
        });
        let event: WorkflowJobEvent = serde_json::from_value(body).unwrap();
        assert!(event.workflow_job.labels.is_empty());
        assert_eq!(event.installation, None);
        assert_eq!(
            event.repository.repo_name().unwrap().to_string(),
            "acme/widgets"
        );
    }

    /// The `workflow_job` examples from npm `@octokit/webhooks-examples` (real payloads GitHub
    /// sent), installed by `make test` into `tests/node_modules`.
    fn octokit_examples(event: &str) -> Vec<Value> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/node_modules/@octokit/webhooks-examples/api.github.com/index.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}. Run `make test` (it installs tests/node_modules with `npm ci --prefix tests`)",
                path.display()
            )
        });
        let index: Vec<Value> = serde_json::from_str(&text).expect("the examples index is JSON");
        let entry = index
            .into_iter()
            .find(|e| e["name"] == event)
            .unwrap_or_else(|| panic!("no {event} entry in {}", path.display()));
        entry["examples"]
            .as_array()
            .expect("examples is an array")
            .clone()
    }

    fn time(v: &Value) -> Option<Time> {
        v.as_str().map(|s| s.parse().expect("an RFC 3339 time"))
    }

    #[test]
    fn every_octokit_workflow_job_example_parses_with_its_fields() {
        let examples = octokit_examples("workflow_job");
        assert_eq!(
            examples.len(),
            8,
            "webhooks-examples 7.6.1 carries 8 workflow_job examples"
        );
        let mut actions = Vec::new();
        for raw in &examples {
            let event: WorkflowJobEvent = serde_json::from_value(raw.clone()).unwrap_or_else(|e| {
                panic!("example {} does not parse: {e}", raw["workflow_job"]["id"])
            });
            let (job, raw_job) = (&event.workflow_job, &raw["workflow_job"]);
            assert_eq!(event.action.as_str(), raw["action"]);
            assert_eq!(Some(job.id), raw_job["id"].as_i64());
            assert_eq!(Some(job.run_id), raw_job["run_id"].as_i64());
            assert_eq!(job.run_attempt, raw_job["run_attempt"].as_i64());
            assert_eq!(job.status.as_deref(), raw_job["status"].as_str());
            assert_eq!(job.conclusion.as_deref(), raw_job["conclusion"].as_str());
            let labels: Vec<&str> = raw_job["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
                .collect();
            assert_eq!(job.labels, labels);
            assert_eq!(job.runner_id, raw_job["runner_id"].as_i64());
            assert_eq!(job.runner_name.as_deref(), raw_job["runner_name"].as_str());
            assert_eq!(job.runner_group_id, raw_job["runner_group_id"].as_i64());
            assert_eq!(job.name.as_deref(), raw_job["name"].as_str());
            assert_eq!(
                job.workflow_name.as_deref(),
                raw_job["workflow_name"].as_str()
            );
            assert_eq!(job.html_url.as_deref(), raw_job["html_url"].as_str());
            assert_eq!(job.created_at, time(&raw_job["created_at"]));
            assert_eq!(job.started_at, time(&raw_job["started_at"]));
            assert_eq!(job.completed_at, time(&raw_job["completed_at"]));
            assert_eq!(event.repository.full_name, raw["repository"]["full_name"]);
            assert_eq!(event.repository.name, raw["repository"]["name"]);
            assert_eq!(
                event.repository.owner.login,
                raw["repository"]["owner"]["login"]
            );
            assert!(event.repository.repo_name().is_ok());
            assert_eq!(
                event.installation.map(|i| i.id),
                raw["installation"]["id"].as_i64()
            );
            assert_eq!(
                event.sender.as_ref().map(|s| s.login.as_str()),
                raw["sender"]["login"].as_str()
            );
            actions.push(event.action);
        }
        use WorkflowJobAction::*;
        for action in [Queued, InProgress, Completed, Waiting] {
            assert!(actions.contains(&action), "no {action} example");
        }
        let without_installation = examples
            .iter()
            .filter(|e| e.get("installation").is_none())
            .count();
        assert_eq!(without_installation, 3);
    }

    #[test]
    fn the_queued_example_whose_status_says_waiting_is_still_queued() {
        let examples = octokit_examples("workflow_job");
        let event: WorkflowJobEvent = examples
            .iter()
            .map(|raw| serde_json::from_value::<WorkflowJobEvent>(raw.clone()).unwrap())
            .find(|e| {
                e.action == WorkflowJobAction::Queued
                    && e.workflow_job.status.as_deref() == Some("waiting")
            })
            .expect("webhooks-examples has a queued delivery with status waiting");
        assert_eq!(event.workflow_job.labels, ["self-hosted", "k8s"]);
    }

    #[test]
    fn the_octokit_ping_example_parses() {
        for raw in octokit_examples("ping") {
            let ping: PingEvent = serde_json::from_value(raw.clone()).unwrap();
            assert_eq!(ping.zen.as_deref(), raw["zen"].as_str());
            assert_eq!(ping.hook_id, raw["hook_id"].as_i64());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_header_verifies_only_as_the_bodys_own_signature(
            header in proptest::option::of(proptest::prop_oneof![
                crate::arbitrary::hostile_text(),
                "sha256=[0-9a-fA-F]{0,70}",
                "[ \\t]{0,2}sha256=[0-9a-zA-Z€]{62,66}[ \\t]{0,2}",
            ]),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        ) {
            let own = sign(SECRET, &body);
            match verify_signature(&[SECRET, b""], &body, header.as_deref()) {
                Ok(()) => {
                    let given = header.unwrap_or_default();
                    let given = given.trim();
                    proptest::prop_assert!(given.len() == own.len() && given.starts_with("sha256="));
                    proptest::prop_assert!(given.eq_ignore_ascii_case(&own), "{given} verified, the body's is {own}");
                }
                Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
            }
            proptest::prop_assert_eq!(verify_signature(&[SECRET], &body, Some(&own)), Ok(()));
        }
    }
}
