//! Every `workflow_job` example of npm `@octokit/webhooks-examples` (real
//! payloads GitHub sent), signed and delivered to pacer's webhook.

use serde_json::{Value, json};

use crate::support::LocalPacer;

pub(crate) fn examples() -> Vec<Value> {
    let path = pacer_test_support::in_repo(
        "tests/node_modules/@octokit/webhooks-examples/api.github.com/index.json",
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run `make test`, which installs tests/node_modules",
            path.display()
        )
    });
    let index: Vec<Value> = serde_json::from_str(&text).unwrap();
    let entry = index
        .into_iter()
        .find(|e| e["name"] == "workflow_job")
        .expect("a workflow_job entry");
    entry["examples"].as_array().unwrap().clone()
}

/// The self-hosted examples' repository, bound to a project whose pool
/// offers their `k8s` label. The repository is public, so the project
/// allows public repositories.
async fn pacer_serving_the_examples() -> LocalPacer {
    pacer_serving_the_examples_as(json!({"name": "elastic", "allow_public_repos": true}))
        .await
        .0
}

/// The same with the project created from `project`; answers its id too.
pub(crate) async fn pacer_serving_the_examples_as(project: Value) -> (LocalPacer, String) {
    let pacer = LocalPacer::start().await;
    let (_, project) = pacer.post("/api/projects", project).await;
    let project = project["id"].as_str().unwrap().to_string();
    let mut pool = crate::api_crud::pool_body(&project, "k8s");
    pool["labels"] = json!(["k8s"]);
    assert_eq!(pacer.post("/api/pools", pool).await.0, 201);
    let bind = json!({"repo": "lineville/elastic-machines-testing", "project_id": project});
    assert_eq!(pacer.post("/api/repos", bind).await.0, 201);
    (pacer, project)
}

/// The example delivery of `action` for the self-hosted job.
pub(crate) fn self_hosted_example(action: &str) -> Value {
    examples()
        .into_iter()
        .find(|e| e["action"] == action && e["workflow_job"]["labels"][0] == "self-hosted")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_is_answered_and_only_the_self_hosted_job_is_taken_in() {
    let pacer = pacer_serving_the_examples().await;
    let all = examples();
    assert_eq!(all.len(), 8);
    // Each twice: a redelivery changes nothing.
    for example in all.iter().chain(all.iter()) {
        let (status, body) = pacer.webhook("workflow_job", example).await;
        let self_hosted = example["workflow_job"]["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "self-hosted");
        match (self_hosted, example["action"].as_str().unwrap()) {
            (true, "queued" | "waiting") => assert_eq!(status, 202, "{body}"),
            _ => assert_eq!(
                status, 200,
                "{} {}: {body}",
                example["action"], example["workflow_job"]["labels"]
            ),
        }
    }
    let (_, jobs) = pacer.get("/api/jobs").await;
    let jobs = jobs["items"].as_array().unwrap();
    assert_eq!(
        jobs.len(),
        1,
        "one row, for the one self-hosted job: {jobs:?}"
    );
    assert_eq!(jobs[0]["github_job_id"], 12877621891i64);
    assert_eq!(jobs[0]["repo"], "lineville/elastic-machines-testing");
    assert_ne!(
        jobs[0]["state"], "waiting",
        "`queued` wins whatever its status field says"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_job_launches_nothing_until_github_queues_it() {
    let pacer = pacer_serving_the_examples().await;
    let (waiting, queued) = (
        &self_hosted_example("waiting"),
        &self_hosted_example("queued"),
    );

    let (s, body) = pacer.webhook("workflow_job", waiting).await;
    assert_eq!(s, 202);
    let path = format!("/api/jobs/{}", body["job_id"].as_str().unwrap());
    let (_, job) = pacer.get(&path).await;
    assert_eq!(job["state"], "waiting");
    assert_eq!(
        pacer.fleet.counters().launched,
        0,
        "waiting launches nothing"
    );

    assert_eq!(pacer.webhook("workflow_job", queued).await.0, 202);
    let job = pacer.wait_for(&path, |j| j["state"] == "completed").await;
    let states: Vec<&str> = job["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(&states[..2], ["waiting", "queued"]);
    assert_eq!(pacer.fleet.counters().launched, 1);
}

/// A waiting job no pool serves stayed `waiting` for good once GitHub
/// released it: `waiting → unmatched` was refused as not moving forward, so
/// it was never audited and never re-matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_waiting_job_no_pool_serves_becomes_unmatched() {
    let pacer = LocalPacer::start().await;
    let (_, project) = pacer
        .post(
            "/api/projects",
            json!({"name": "elastic", "allow_public_repos": true}),
        )
        .await;
    let bind = json!({"repo": "lineville/elastic-machines-testing", "project_id": project["id"]});
    assert_eq!(
        pacer.post("/api/repos", bind).await.0,
        201,
        "bound, but no pool offers k8s"
    );
    let (waiting, queued) = (
        &self_hosted_example("waiting"),
        &self_hosted_example("queued"),
    );

    let (_, body) = pacer.webhook("workflow_job", waiting).await;
    let path = format!("/api/jobs/{}", body["job_id"].as_str().unwrap());
    assert_eq!(pacer.get(&path).await.1["state"], "waiting");
    assert_eq!(pacer.webhook("workflow_job", queued).await.0, 202);
    let (_, job) = pacer.get(&path).await;
    assert_eq!(job["state"], "unmatched", "{job}");
    let (_, audit) = pacer.get("/api/audit?action=job.no_pool_match").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit["items"][0]["detail"]["project"], "elastic");
}
