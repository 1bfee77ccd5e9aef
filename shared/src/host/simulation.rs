//! GitHub's part for the simulated fleet, played offline: a runner whose
//! JIT configuration the offline GitHub issued (`github.disabled`) gets its
//! job the way GitHub would hand it one — signed `workflow_job` deliveries,
//! `in_progress` and then `completed`. The fleet and the GitHub adapter know
//! nothing of each other; the host joins them here.

use serde_json::{Value, json};

use crate::config::Secret;
use crate::domain::Time;
use crate::fleet::JobRef;
use crate::fleet::simulated::{Delivery, GitHubPart, RunnerIdentity};
use crate::github::offline::decode_offline_jit_config;
use crate::github::webhook;

/// Deliveries signed with the App's webhook secret, for runners the offline
/// GitHub registered.
#[derive(Debug)]
pub struct OfflineGitHubPart {
    secret: Secret,
}

impl OfflineGitHubPart {
    pub fn new(secret: Secret) -> Self {
        Self { secret }
    }
}

impl GitHubPart for OfflineGitHubPart {
    fn runner_id(&self, encoded_jit_config: &str) -> Option<i64> {
        decode_offline_jit_config(encoded_jit_config).map(|jit| jit.runner_id)
    }

    fn job_delivery(
        &self,
        job: &JobRef,
        runner: &RunnerIdentity,
        action: &str,
        now: Time,
    ) -> Delivery {
        let body = workflow_job_payload(job, runner, action, now)
            .to_string()
            .into_bytes();
        let headers = vec![
            (webhook::EVENT_HEADER, "workflow_job".to_owned()),
            (
                webhook::DELIVERY_HEADER,
                format!("sim-{:032x}", rand::random::<u128>()),
            ),
            (
                webhook::SIGNATURE_HEADER,
                webhook::sign(self.secret.expose().as_bytes(), &body),
            ),
        ];
        Delivery { headers, body }
    }
}

/// The body of a `workflow_job` webhook for `action` (`in_progress` or
/// `completed`, which concludes `success`), shaped like GitHub's.
pub fn workflow_job_payload(
    job: &JobRef,
    runner: &RunnerIdentity,
    action: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let (owner, name) = job
        .repo
        .split_once('/')
        .unwrap_or((job.repo.as_str(), job.repo.as_str()));
    let repo = &job.repo;
    let completed = action == "completed";
    let stamp = Value::from(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let conclusion = if completed {
        Value::from("success")
    } else {
        Value::Null
    };
    let completed_at = if completed {
        stamp.clone()
    } else {
        Value::Null
    };
    let mut payload = json!({
        "action": action,
        "workflow_job": {
            "id": job.github_job_id,
            "run_id": job.run_id,
            "run_attempt": 1,
            "run_url": format!("https://api.github.com/repos/{repo}/actions/runs/{}", job.run_id),
            "html_url": format!("https://github.com/{repo}/actions/runs/{}/job/{}", job.run_id, job.github_job_id),
            "status": action,
            "conclusion": conclusion,
            "name": "simulated job",
            "workflow_name": "pacer simulation",
            "head_branch": "main",
            "started_at": stamp,
            "completed_at": completed_at,
            "labels": job.labels,
            "runner_id": runner.id,
            "runner_name": runner.name,
            "runner_group_id": 1,
            "runner_group_name": "Default",
            "steps": [],
        },
        "repository": {
            "full_name": repo,
            "name": name,
            "owner": {"login": owner},
            "private": true,
        },
        "sender": {"login": "pacer-simulator"},
    });
    if let (Some(id), Some(fields)) = (job.installation_id, payload.as_object_mut()) {
        fields.insert("installation".into(), json!({"id": id}));
    }
    payload
}
