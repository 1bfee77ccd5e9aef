//! The runner lifecycle end to end on the embedded adapters: webhook →
//! job → queue → orchestrator → simulated instance → callbacks → done.

use pacer_shared::domain::{Runner, RunnerState, peak_overlap};
use serde_json::{Value, json};

use crate::support::{LocalPacer, queued_payload};

fn states(job: &Value) -> Vec<String> {
    job["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_runs_to_completion_on_the_simulated_fleet() {
    let pacer = LocalPacer::start().await;
    let (_, pool_id) = pacer.seed(2).await;

    let (status, accepted) = pacer
        .webhook(
            "workflow_job",
            &queued_payload(101, "acme/app", &["self-hosted", "linux"]),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let job_id = accepted["job_id"].as_str().unwrap().to_string();

    // GitHub's completed webhook comes first, then the runner's /complete.
    let job = pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            j["state"] == "completed" && j["runner"]["state"] == "done"
        })
        .await;
    assert_eq!(
        states(&job),
        ["queued", "claimed", "starting", "running", "completed"]
    );
    assert_eq!(job["conclusion"], "success");
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["runner"]["state"], "done", "{job}");
    assert!(
        job["runner"]["name"]
            .as_str()
            .unwrap()
            .starts_with("pacer-")
    );
    pacer
        .wait_for(&format!("/api/pools/{pool_id}"), |p| {
            p["active_runners"] == 0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_deliveries_of_one_job_make_one_job_and_one_instance() {
    let pacer = LocalPacer::start().await;
    pacer.seed(5).await;
    let payload = queued_payload(202, "acme/app", &["self-hosted", "linux"]);
    let sends: Vec<_> = (0..10)
        .map(|_| pacer.webhook("workflow_job", &payload))
        .collect();
    let answers = futures::future::join_all(sends).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(s, b)| {
            assert_eq!(*s, 202, "{b}");
            b["job_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every delivery names the same job");

    let (_, jobs) = pacer.get("/api/jobs?github_job_id=202").await;
    assert_eq!(jobs["items"].as_array().unwrap().len(), 1);
    let id = ids.into_iter().next().unwrap();
    pacer
        .wait_for(&format!("/api/jobs/{id}"), |j| j["state"] == "completed")
        .await;
    assert_eq!(
        pacer.fleet.counters().launched,
        1,
        "one instance for one job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_jobs_on_a_pool_of_fifteen_never_exceed_fifteen_live_runners() {
    let pacer = LocalPacer::start().await;
    let (_, pool_id) = pacer.seed(15).await;
    for n in 0..50 {
        let (s, b) = pacer
            .webhook(
                "workflow_job",
                &queued_payload(1000 + n, "acme/app", &["self-hosted", "linux"]),
            )
            .await;
        assert_eq!(s, 202, "{b}");
    }
    pacer
        .wait_for("/api/jobs?status=completed&limit=100", |page| {
            page["items"].as_array().is_some_and(|i| i.len() == 50)
        })
        .await;
    assert_eq!(
        pacer.fleet.counters().launched,
        50,
        "every job got exactly one runner"
    );
    pacer
        .wait_for(&format!("/api/pools/{pool_id}"), |p| {
            p["active_runners"] == 0
        })
        .await;

    // The most instances live at once, from each launch (after its
    // reservation) to its runner's end (before its release). A runner's
    // creation time is taken before its claim waits for the store, so it
    // may precede a slot freed meanwhile: it is not the start.
    let (_, runners) = pacer.get("/api/runners?limit=100").await;
    let runners: Vec<Runner> = serde_json::from_value(runners["items"].clone()).unwrap();
    assert_eq!(runners.len(), 50);
    for r in &runners {
        assert_eq!(r.state, RunnerState::Done, "{r:?}");
        assert!(r.launched_at.is_some(), "every runner launched: {r:?}");
    }
    let peak = peak_overlap(&runners);
    assert!(
        peak <= 15,
        "{peak} runners were live at once on a pool of max_runners 15"
    );
    assert!(peak > 1, "the burst ran runners side by side ({peak})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_pacer_does_not_serve_are_answered_and_audited_as_the_design_says() {
    let pacer = LocalPacer::start().await;
    pacer.seed(2).await;

    // GitHub-hosted: 200, no row, no audit.
    let (s, _) = pacer
        .webhook(
            "workflow_job",
            &queued_payload(301, "acme/app", &["ubuntu-latest"]),
        )
        .await;
    assert_eq!(s, 200);
    // A repo no project serves: 200 and audited.
    let (s, _) = pacer
        .webhook(
            "workflow_job",
            &queued_payload(302, "stranger/repo", &["self-hosted"]),
        )
        .await;
    assert_eq!(s, 200);
    // Served, but no pool offers gpu: unmatched and audited.
    let (s, b) = pacer
        .webhook(
            "workflow_job",
            &queued_payload(303, "acme/app", &["self-hosted", "gpu"]),
        )
        .await;
    assert_eq!(s, 202);
    let (_, job) = pacer
        .get(&format!("/api/jobs/{}", b["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(job["state"], "unmatched");

    let (_, jobs) = pacer.get("/api/jobs").await;
    let ids: Vec<i64> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["github_job_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [303], "only the served job has a row");
    let (_, audit) = pacer.get("/api/audit?action=job.repo_not_bound").await;
    assert_eq!(audit["items"][0]["target"], "stranger/repo");
    assert_eq!(
        audit["items"][0]["actor"]["id"], "pacer-send-test-job",
        "the GitHub sender is the actor"
    );
    let (_, audit) = pacer.get("/api/audit?action=job.no_pool_match").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1);
    let (s, _) = pacer
        .webhook("ping", &json!({"zen": "Keep it logically awesome."}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = pacer
        .webhook("push", &json!({"ref": "refs/heads/main"}))
        .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_or_wrongly_signed_deliveries_are_401() {
    let pacer = LocalPacer::start().await;
    let body = serde_json::to_vec(&queued_payload(401, "acme/app", &["self-hosted"])).unwrap();
    for signature in [
        None,
        Some("sha256=00"),
        Some("sha1=abc"),
        Some(format!("sha256={}", "0".repeat(64)).leak() as &str),
    ] {
        // A legacy SHA-1 header rides along every time: pacer never reads it,
        // so alone it is never enough.
        let legacy = format!("sha1={}", "ab".repeat(20));
        let mut req = pacer
            .http
            .post(format!("{}/api/webhook", pacer.base))
            .header("x-github-event", "workflow_job")
            .header("x-hub-signature", legacy)
            .body(body.clone());
        if let Some(sig) = signature {
            req = req.header("x-hub-signature-256", sig);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), 401, "{signature:?}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"], "unauthorized");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_deliveries_never_move_a_job_backwards() {
    let pacer = LocalPacer::start().await;
    // No pool can serve "windows": the job stays put while we play GitHub.
    pacer.seed(1).await;
    let mut queued = queued_payload(501, "acme/app", &["self-hosted", "linux", "windows"]);
    let (_, b) = pacer.webhook("workflow_job", &queued).await;
    let id = b["job_id"].as_str().unwrap().to_string();

    let mut completed = queued.clone();
    completed["action"] = "completed".into();
    completed["workflow_job"]["conclusion"] = "failure".into();
    completed["workflow_job"]["runner_name"] = "pacer-elsewhere".into();
    let (s, _) = pacer.webhook("workflow_job", &completed).await;
    assert_eq!(s, 200);
    let mut in_progress = completed.clone();
    in_progress["action"] = "in_progress".into();
    let (s, _) = pacer.webhook("workflow_job", &in_progress).await;
    assert_eq!(s, 200, "a refused backward move still answers 2xx");
    queued["action"] = "queued".into();
    let (s, _) = pacer.webhook("workflow_job", &queued).await;
    assert!(s == 200 || s == 202);

    let (_, job) = pacer.get(&format!("/api/jobs/{id}")).await;
    assert_eq!(job["state"], "completed");
    assert_eq!(job["conclusion"], "failure");
    assert_eq!(states(&job), ["unmatched", "completed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_for_a_job_pacer_never_saw_is_recorded_only_for_its_own_runners() {
    let pacer = LocalPacer::start().await;
    pacer.seed(1).await;
    let mut ours = queued_payload(601, "acme/app", &["self-hosted", "linux"]);
    ours["action"] = "in_progress".into();
    ours["workflow_job"]["runner_name"] = "pacer-01jzzzzzzzzzzzzzzzzzzzzzzz".into();
    let mut theirs = queued_payload(602, "acme/app", &["self-hosted", "linux"]);
    theirs["action"] = "completed".into();
    theirs["workflow_job"]["runner_name"] = "other-deployment-runner".into();
    assert_eq!(pacer.webhook("workflow_job", &ours).await.0, 200);
    assert_eq!(pacer.webhook("workflow_job", &theirs).await.0, 200);

    let (_, jobs) = pacer.get("/api/jobs").await;
    let jobs = jobs["items"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(
        (jobs[0]["github_job_id"].as_i64(), jobs[0]["state"].as_str()),
        (Some(601), Some("running"))
    );
    assert_eq!(
        pacer.fleet.counters().launched,
        0,
        "a job already running elsewhere needs no runner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_body_over_25_mb_is_a_413() {
    let pacer = LocalPacer::start().await;
    let status = pacer
        .status_for_declared_length(
            "/api/webhook",
            25 * 1024 * 1024 + 1,
            &[("x-github-event", "workflow_job")],
        )
        .await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
}

/// EC2's account limits cannot be produced by moto: a fleet that answers
/// `LimitExceeded` for its first launches stands in front of the simulated one.
struct LimitedFleet {
    inner: std::sync::Arc<pacer_shared::fleet::simulated::SimulatedFleet>,
    refusals: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl pacer_shared::fleet::Fleet for LimitedFleet {
    async fn prepare_pool(
        &self,
        pool: &pacer_shared::domain::Pool,
    ) -> pacer_shared::fleet::FleetResult<Option<String>> {
        self.inner.prepare_pool(pool).await
    }
    async fn forget_pool(
        &self,
        pool: &pacer_shared::domain::Pool,
    ) -> pacer_shared::fleet::FleetResult<()> {
        self.inner.forget_pool(pool).await
    }
    async fn launch(
        &self,
        req: &pacer_shared::fleet::LaunchRequest,
    ) -> pacer_shared::fleet::FleetResult<pacer_shared::fleet::Launched> {
        use std::sync::atomic::Ordering;
        if self
            .refusals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(pacer_shared::fleet::FleetError::LimitExceeded("VcpuLimitExceeded: you have requested more vCPU capacity than your current vCPU limit of 32 allows".into()));
        }
        self.inner.launch(req).await
    }
    async fn instance_for_runner(
        &self,
        runner_id: &str,
    ) -> pacer_shared::fleet::FleetResult<Option<pacer_shared::fleet::Instance>> {
        self.inner.instance_for_runner(runner_id).await
    }
    async fn list_instances(
        &self,
    ) -> pacer_shared::fleet::FleetResult<Vec<pacer_shared::fleet::Instance>> {
        self.inner.list_instances().await
    }
    async fn terminate(&self, instance_id: &str) -> pacer_shared::fleet::FleetResult<()> {
        self.inner.terminate(instance_id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_limit_degrades_the_pool_visibly_and_launches_resume_after_the_cooldown() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ports, simulated) = crate::support::local_ports(dir.path());
    ports.fleet = std::sync::Arc::new(LimitedFleet {
        inner: simulated.clone(),
        refusals: 1.into(),
    });
    let mut settings = (*ports.settings).clone();
    settings.degraded_cooldown = std::time::Duration::from_millis(300);
    ports.settings = std::sync::Arc::new(settings);
    let pacer = LocalPacer::serve(ports, simulated, dir).await;
    let (_, pool_id) = pacer.seed(2).await;

    let (_, b) = pacer
        .webhook(
            "workflow_job",
            &queued_payload(701, "acme/app", &["self-hosted", "linux"]),
        )
        .await;
    let job_id = b["job_id"].as_str().unwrap().to_string();
    let job = pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            j["state"] == "completed"
        })
        .await;
    assert_eq!(
        job["attempts"], 1,
        "an account limit is not the job's attempt"
    );
    let (_, audit) = pacer.get("/api/audit?action=pool.degraded").await;
    let degraded = &audit["items"][0];
    assert_eq!(degraded["target"], pool_id.as_str());
    assert!(
        degraded["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("VcpuLimitExceeded")
    );
    let (_, pool) = pacer.get(&format!("/api/pools/{pool_id}")).await;
    assert!(
        pool.get("degraded").is_none(),
        "recovered after a launch: {pool}"
    );
    let (_, audit) = pacer.get("/api/audit?action=pool.recovered").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_pool_shows_its_reason_in_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ports, simulated) = crate::support::local_ports(dir.path());
    ports.fleet = std::sync::Arc::new(LimitedFleet {
        inner: simulated.clone(),
        refusals: 1000.into(),
    });
    let pacer = LocalPacer::serve(ports, simulated, dir).await;
    let (_, pool_id) = pacer.seed(2).await;
    let (_, b) = pacer
        .webhook(
            "workflow_job",
            &queued_payload(702, "acme/app", &["self-hosted", "linux"]),
        )
        .await;
    let pool = pacer
        .wait_for(&format!("/api/pools/{pool_id}"), |p| {
            !p["degraded"].is_null()
        })
        .await;
    assert!(
        pool["degraded"]["reason"]
            .as_str()
            .unwrap()
            .contains("vCPU"),
        "{pool}"
    );
    assert!(pool["degraded"]["retry_at"].is_string());
    let (_, job) = pacer
        .get(&format!("/api/jobs/{}", b["job_id"].as_str().unwrap()))
        .await;
    assert_eq!(job["state"], "queued", "waiting for the pool, not failed");
    assert_eq!(pool["active_runners"], 0);
}

#[tokio::test]
async fn a_message_that_is_no_job_id_is_acknowledged_one_whose_job_never_came_after_three_tries() {
    use pacer_shared::queue::Queue;
    use pacer_shared::queue::memory::MemoryQueue;
    use pacer_shared::service::dispatch::{NOT_STORED_RECEIVES, settle};
    let dir = tempfile::tempdir().unwrap();
    let (ports, _) = crate::support::local_ports(dir.path());
    let queue = MemoryQueue::new(std::time::Duration::from_secs(300));
    queue.send("{\"not\": \"a job\"}", None).await.unwrap();
    let never = "job_01jzzzzzzzzzzzzzzzzzzzzzzz";
    queue.send(never, None).await.unwrap();
    let received = queue.receive(10, std::time::Duration::ZERO).await.unwrap();
    assert_eq!(received.len(), 2);
    for delivery in &received {
        settle(&ports, &queue, delivery).await;
    }
    assert!(
        !queue.is_empty(),
        "the job id is kept: its row may be on its way"
    );
    // Received again until its third delivery, then dropped.
    for expected in 2..=NOT_STORED_RECEIVES {
        let again = queue
            .receive(10, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(
            (again[0].job_id.as_str(), again[0].receive_count),
            (never, expected)
        );
        settle(&ports, &queue, &again[0]).await;
    }
    assert!(
        queue.is_empty(),
        "dropped after {NOT_STORED_RECEIVES} deliveries"
    );
}
