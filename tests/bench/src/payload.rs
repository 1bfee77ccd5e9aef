//! The deliveries the benchmarks send: GitHub's own `queued` workflow_job
//! example from npm `@octokit/webhooks-examples` (installed under
//! tests/node_modules by `make test-deps`), with only what must change
//! rewritten — the job id (each delivery is a new job), the repository (a
//! private one the bench's project serves) and the labels (which pool it asks for) —
//! then serialised and signed as GitHub does.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::Value;

/// Where `npm ci --prefix tests` puts the examples.
pub fn examples_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../node_modules/@octokit/webhooks-examples/api.github.com/index.json")
}

/// GitHub's `queued` example for a self-hosted job (11.9 KB of JSON).
pub fn queued_example() -> anyhow::Result<Value> {
    let path = examples_path();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {}: run `make test-deps`, which installs tests/node_modules",
            path.display()
        )
    })?;
    let index: Vec<Value> =
        serde_json::from_str(&text).context("parsing the webhook examples index")?;
    let examples = index
        .into_iter()
        .find(|e| e["name"] == "workflow_job")
        .and_then(|e| e["examples"].as_array().cloned())
        .context("the examples have no workflow_job entry")?;
    let Some(queued) = examples.into_iter().find(|e| {
        e["action"] == "queued"
            && e["workflow_job"]["labels"]
                .as_array()
                .is_some_and(|l| l.iter().any(|l| l == "self-hosted"))
    }) else {
        bail!(
            "no self-hosted `queued` workflow_job example in {}",
            path.display()
        );
    };
    Ok(queued)
}

/// One signed delivery: what GitHub would POST.
#[derive(Clone)]
pub struct Delivery {
    pub body: axum::body::Bytes,
    pub signature: String,
}

/// Builds deliveries from the example for one repository.
pub struct Deliveries {
    example: Value,
    repo: String,
    secret: Vec<u8>,
}

impl Deliveries {
    pub fn new(example: Value, repo: &str, secret: &str) -> Self {
        Self {
            example,
            repo: repo.to_string(),
            secret: secret.as_bytes().to_vec(),
        }
    }

    /// The example as a new job `github_job_id` of this repository asking
    /// for `labels`, signed with the webhook secret.
    pub fn queued(&self, github_job_id: i64, labels: &[&str]) -> Delivery {
        let mut payload = self.example.clone();
        let (owner, name) = self.repo.split_once('/').expect("owner/name");
        payload["workflow_job"]["id"] = github_job_id.into();
        payload["workflow_job"]["labels"] = labels.iter().map(|l| Value::from(*l)).collect();
        payload["repository"]["full_name"] = self.repo.clone().into();
        payload["repository"]["name"] = name.into();
        payload["repository"]["owner"]["login"] = owner.into();
        // The example's repository is public, and pacer refuses public
        // repositories unless their project opts in; a fleet serves private ones.
        payload["repository"]["private"] = true.into();
        payload["repository"]["visibility"] = "private".into();
        let body = serde_json::to_vec(&payload).expect("a JSON value serialises");
        let signature = pacer_shared::github::webhook::sign(&self.secret, &body);
        Delivery {
            body: body.into(),
            signature,
        }
    }
}
