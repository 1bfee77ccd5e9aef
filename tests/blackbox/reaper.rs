//! The reaper against the real parts: EC2 on moto, the fake GitHub, a
//! clock the test moves.

use std::sync::Arc;
use std::time::Duration;

use pacer_shared::clock::ManualClock;
use pacer_shared::fleet::ec2::sdk;
use pacer_shared::fleet::user_data;
use pacer_shared::service::reaper::reconcile;
use serde_json::{Value, json};

use crate::lifecycle_aws::{Backend, World, instance_of_job, seed, user_data_of, world_with_clock};
use crate::support::queued_payload;

async fn world() -> (World, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    (
        world_with_clock(Backend::Sqlite, clock.clone()).await,
        clock,
    )
}

async fn instance_state(w: &World, instance_id: &str) -> String {
    let out = w
        .aws
        .ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .unwrap();
    out.reservations()[0].instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .as_str()
        .to_string()
}

fn gone(state: &str) -> bool {
    state == "shutting-down" || state == "terminated"
}

/// Sends a queued job and waits until its runner's instance is recorded.
pub(crate) async fn launched(w: &World, github_job_id: i64) -> (String, Value) {
    let (s, accepted) = w
        .pacer
        .webhook(
            "workflow_job",
            &queued_payload(github_job_id, "acme/app", &["self-hosted"]),
        )
        .await;
    assert_eq!(s, 202, "{accepted}");
    let job_id = accepted["job_id"].as_str().unwrap().to_string();
    instance_of_job(&w.aws, &job_id).await;
    let job = w
        .pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            !j["runner"]["instance_id"].is_null()
        })
        .await;
    (job_id, job)
}

pub(crate) async fn register(w: &World, job: &Value) -> i64 {
    let script = user_data_of(&w.aws, job["runner"]["instance_id"].as_str().unwrap()).await;
    let token = user_data::parse(&script).unwrap().token;
    let res = w
        .pacer
        .http
        .post(format!("{}/api/runner/register", w.pacer.base))
        .bearer_auth(token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    w.github
        .runners()
        .iter()
        .find(|r| r.name == job["runner"]["name"].as_str().unwrap())
        .expect("registered at GitHub")
        .id
}

async fn pool_active(w: &World, pool_id: &str) -> i64 {
    w.pacer.get(&format!("/api/pools/{pool_id}")).await.1["active_runners"]
        .as_i64()
        .unwrap()
}

/// Waits until the pool's counter equals its live runners (the orchestrator
/// may be relaunching reaped runners' jobs meanwhile) and returns it. A
/// double release would leave the counter below the live runners for good.
async fn settled_capacity(w: &World, pool_id: &str) -> i64 {
    let mut last = (0, 0);
    for _ in 0..400 {
        let (_, live) = w
            .pacer
            .get(&format!(
                "/api/runners?pool_id={pool_id}&state=pending,registered,busy"
            ))
            .await;
        let live = live["items"].as_array().unwrap().len() as i64;
        let active = pool_active(w, pool_id).await;
        if active == live {
            return active;
        }
        last = (active, live);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the pool's counter {} never matched its {} live runners",
        last.0, last.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_past_its_boot_deadline_is_terminated_and_its_job_retried_then_failed() {
    let (w, clock) = world().await;
    let pool_id = seed(&w.aws, &w.pacer, 2).await;
    let (job_id, mut job) = launched(&w, 7001).await;

    for attempt in 1..=3 {
        let instance = job["runner"]["instance_id"].as_str().unwrap().to_string();
        clock.advance(Duration::from_secs(11 * 60));
        let report = reconcile(&w.pacer.ports).await.unwrap();
        assert_eq!(report.count("reaper.boot_deadline"), 1, "{report:?}");
        assert!(
            gone(&instance_state(&w, &instance).await),
            "attempt {attempt}: its instance is terminated"
        );
        if attempt < 3 {
            job = w
                .pacer
                .wait_for(&format!("/api/jobs/{job_id}"), |j| {
                    j["attempts"] == attempt + 1
                        && !j["runner"]["instance_id"].is_null()
                        && j["runner"]["instance_id"] != instance.as_str()
                })
                .await;
        }
    }
    let (_, job) = w.pacer.get(&format!("/api/jobs/{job_id}")).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["failure_reason"]
            .as_str()
            .unwrap()
            .contains("3 attempts"),
        "{job}"
    );
    assert_eq!(pool_active(&w, &pool_id).await, 0);
    let (_, audit) = w.pacer.get("/api/audit?action=reaper.boot_deadline").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 3);
    assert!(
        audit["items"][0]["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("not registered")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reapers_at_once_reap_a_runner_once() {
    let (w, clock) = world().await;
    let pool_id = seed(&w.aws, &w.pacer, 2).await;
    let (_, job) = launched(&w, 7002).await;
    let runner_id = job["runner"]["id"].as_str().unwrap().to_string();
    clock.advance(Duration::from_secs(11 * 60));
    let (a, b) = tokio::join!(reconcile(&w.pacer.ports), reconcile(&w.pacer.ports));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.count("reaper.boot_deadline") + b.count("reaper.boot_deadline"),
        1
    );
    let (_, audit) = w.pacer.get("/api/audit?action=reaper.boot_deadline").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1);
    let (_, runner) = w.pacer.get(&format!("/api/runners/{runner_id}")).await;
    assert_eq!(runner["state"], "reaped");
    // Its capacity came back once; the job's next attempt holds one unit.
    assert_eq!(
        settled_capacity(&w, &pool_id).await,
        1,
        "released once; the job's next attempt holds one unit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_racing_the_reaper_releases_capacity_once() {
    let (w, clock) = world().await;
    let pool_id = seed(&w.aws, &w.pacer, 3).await;
    let (_, first) = launched(&w, 7003).await;
    let (_, second) = launched(&w, 7004).await;
    register(&w, &first).await;
    register(&w, &second).await;
    assert_eq!(pool_active(&w, &pool_id).await, 2);

    // Past the max lifetime, the first runner reports completion as the reaper runs.
    clock.advance(Duration::from_secs(7 * 3600));
    let token = user_data::parse(
        &user_data_of(&w.aws, first["runner"]["instance_id"].as_str().unwrap()).await,
    )
    .unwrap()
    .token;
    let complete = w
        .pacer
        .http
        .post(format!("{}/api/runner/complete", w.pacer.base))
        .bearer_auth(token.expose())
        .send();
    let (report, _) = tokio::join!(reconcile(&w.pacer.ports), complete);
    let report = report.unwrap();
    assert!(report.count("reaper.max_lifetime") >= 1, "{report:?}");
    let (_, first_runner) = w
        .pacer
        .get(&format!(
            "/api/runners/{}",
            first["runner"]["id"].as_str().unwrap()
        ))
        .await;
    assert!(
        first_runner["state"] == "done" || first_runner["state"] == "reaped",
        "{first_runner}"
    );
    settled_capacity(&w, &pool_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_runner_is_deregistered_then_terminated_but_a_busy_one_is_kept() {
    let (w, clock) = world().await;
    let pool_id = seed(&w.aws, &w.pacer, 3).await;
    let (_, idle_job) = launched(&w, 7005).await;
    let (_, busy_job) = launched(&w, 7006).await;
    let idle_gh = register(&w, &idle_job).await;
    let busy_gh = register(&w, &busy_job).await;
    // GitHub handed the second one a job whose webhook has not arrived.
    w.github.set_runner_status(busy_gh, "online", true);

    clock.advance(Duration::from_secs(6 * 60)); // idle timeout 5m
    let report = reconcile(&w.pacer.ports).await.unwrap();
    assert_eq!(report.count("reaper.idle"), 1, "{report:?}");
    assert!(w.github.runner(idle_gh).is_none(), "deregistered at GitHub");
    assert!(
        w.github.runner(busy_gh).is_some(),
        "a busy runner keeps its registration"
    );
    assert!(gone(
        &instance_state(&w, idle_job["runner"]["instance_id"].as_str().unwrap()).await
    ));
    assert!(!gone(
        &instance_state(&w, busy_job["runner"]["instance_id"].as_str().unwrap()).await
    ));
    let (_, busy) = w
        .pacer
        .get(&format!(
            "/api/runners/{}",
            busy_job["runner"]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(busy["state"], "busy");
    // The idle runner's job never ran on it: it gets another runner.
    assert_eq!(settled_capacity(&w, &pool_id).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deregistration_means_no_termination() {
    let (w, clock) = world().await;
    seed(&w.aws, &w.pacer, 2).await;
    let (_, job) = launched(&w, 7007).await;
    register(&w, &job).await;
    w.github.fail_next(
        crate::fake_github::Endpoint::DeleteRepoRunner,
        10,
        crate::fake_github::Failure::status(422),
    );
    clock.advance(Duration::from_secs(6 * 60));
    let report = reconcile(&w.pacer.ports).await.unwrap();
    assert_eq!(report.count("reaper.idle"), 0, "{report:?}");
    assert!(!report.deferred.is_empty());
    assert!(!gone(
        &instance_state(&w, job["runner"]["instance_id"].as_str().unwrap()).await
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_this_deployments_orphans_are_terminated_after_the_grace() {
    let (w, clock) = world().await;
    let run = |tags: Vec<(&'static str, &'static str)>| {
        let (ec2, ami, subnet) = (
            w.aws.ec2.clone(),
            w.aws.ami.clone(),
            w.aws.subnets[0].clone(),
        );
        async move {
            let mut spec = sdk::types::TagSpecification::builder()
                .resource_type(sdk::types::ResourceType::Instance);
            for (k, v) in tags {
                spec = spec.tags(sdk::types::Tag::builder().key(k).value(v).build());
            }
            let out = ec2
                .run_instances()
                .image_id(ami)
                .instance_type(sdk::types::InstanceType::T3Micro)
                .subnet_id(subnet)
                .min_count(1)
                .max_count(1)
                .tag_specifications(spec.build())
                .send()
                .await
                .unwrap();
            out.instances()[0].instance_id().unwrap().to_string()
        }
    };
    let ours = run(vec![
        ("pacer:deployment", "pacer"),
        ("pacer:runner", "run_01jzzzzzzzzzzzzzzzzzzzzzzz"),
    ])
    .await;
    let theirs = run(vec![("pacer:deployment", "other")]).await;
    let untagged = run(vec![("Name", "someone's box")]).await;

    let report = reconcile(&w.pacer.ports).await.unwrap();
    assert_eq!(
        report.count("reaper.orphan"),
        0,
        "within the grace: {report:?}"
    );
    clock.advance(Duration::from_secs(11 * 60));
    let report = reconcile(&w.pacer.ports).await.unwrap();
    assert_eq!(report.count("reaper.orphan"), 1, "{report:?}");
    assert!(gone(&instance_state(&w, &ours).await));
    assert!(
        !gone(&instance_state(&w, &theirs).await),
        "another deployment's instance is never touched"
    );
    assert!(!gone(&instance_state(&w, &untagged).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stored_but_never_enqueued_is_redriven() {
    let (w, clock) = world().await;
    let pool_id = seed(&w.aws, &w.pacer, 2).await;
    // As if pacer died between the job's insert and its enqueue.
    let mut job = pacer_shared::store::conformance::job(7008, "acme/app", clock_now(&clock));
    job.pool_id = Some(pool_id.clone());
    job.installation_id = Some(77);
    w.pacer.ports.store.insert_job(&job).await.unwrap();

    clock.advance(Duration::from_secs(6 * 60)); // redrive_after 5m
    let report = reconcile(&w.pacer.ports).await.unwrap();
    assert_eq!(report.count("reaper.redrive"), 1, "{report:?}");
    instance_of_job(&w.aws, &job.id).await;
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    use pacer_shared::clock::Clock;
    clock.now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_reservation_is_repaired_without_touching_held_capacity() {
    let (w, _clock) = world().await;
    let pool_id = seed(&w.aws, &w.pacer, 5).await;
    launched(&w, 7009).await;
    // Two reservations whose holders died before recording a runner.
    assert!(
        w.pacer
            .ports
            .store
            .reserve_capacity(&pool_id)
            .await
            .unwrap()
    );
    assert!(
        w.pacer
            .ports
            .store
            .reserve_capacity(&pool_id)
            .await
            .unwrap()
    );
    assert_eq!(pool_active(&w, &pool_id).await, 3);
    let report = reconcile(&w.pacer.ports).await.unwrap();
    assert_eq!(report.count("reaper.capacity_repaired"), 1, "{report:?}");
    assert_eq!(
        pool_active(&w, &pool_id).await,
        1,
        "the live runner keeps its unit"
    );
    let (_, audit) = w
        .pacer
        .get("/api/audit?action=reaper.capacity_repaired")
        .await;
    assert!(
        audit["items"][0]["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("said 3")
    );
    let _ = json!({});
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghost_registrations_of_this_deployment_are_removed_and_no_one_elses() {
    let (w, _clock) = world().await;
    seed(&w.aws, &w.pacer, 2).await;
    let (_, job) = launched(&w, 7010).await;
    let live = register(&w, &job).await;
    let repo = crate::fake_github::FakeTarget::repo("acme/app");
    let ghost_id = w
        .pacer
        .ports
        .ids
        .new_id(pacer_shared::domain::IdKind::Runner, chrono::Utc::now());
    let ghost_name = pacer_shared::service::dispatch::runner_name("pacer", &ghost_id);
    let ghost = w
        .github
        .add_runner(repo.clone(), &ghost_name, &["self-hosted"]);
    let foreign = w
        .github
        .add_runner(repo, "other-deployment-runner", &["self-hosted"]);

    let report = reconcile(&w.pacer.ports).await.unwrap();
    assert_eq!(report.count("reaper.ghost"), 1, "{report:?}");
    assert!(
        w.github.runner(ghost).is_none(),
        "the ghost is deregistered"
    );
    assert!(
        w.github.runner(foreign).is_some(),
        "another deployment's runner is never touched"
    );
    assert!(
        w.github.runner(live).is_some(),
        "a live runner's registration stays"
    );
}

/// What a crash right after RunInstances leaves: the job claimed, a pending
/// runner holding a reservation, an instance tagged for it, no record of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_whose_answer_was_lost_is_found_by_its_tag_and_not_relaunched() {
    use pacer_shared::config::Secret;
    use pacer_shared::domain::{JobState, RunnerState};
    use pacer_shared::fleet::{JobRef, LaunchRequest, RunnerCallback};
    use pacer_shared::store::conformance;

    let (w, clock) = world().await;
    let pool_id = seed(&w.aws, &w.pacer, 2).await;
    let ports = &w.pacer.ports;
    let pool = ports.store.get_pool(&pool_id).await.unwrap().unwrap();
    let now = clock_now(&clock);
    let mut job = conformance::job(7011, "acme/app", now);
    job.pool_id = Some(pool_id.clone());
    job.project_id = Some(pool.spec.project_id.clone());
    job.state = JobState::Claimed;
    ports.store.insert_job(&job).await.unwrap();
    assert!(ports.store.reserve_capacity(&pool_id).await.unwrap());
    let mut runner = conformance::runner(&pool, "unused", now);
    runner.instance_id = None;
    runner.job_id = Some(job.id.clone());
    runner.name = pacer_shared::service::dispatch::runner_name("pacer", &runner.id);
    ports.store.insert_runner(&runner).await.unwrap();
    let launched = ports
        .fleet
        .launch(&LaunchRequest {
            pool: pool.clone(),
            runner_id: runner.id.clone(),
            runner_name: runner.name.clone(),
            job: Some(JobRef {
                id: job.id.clone(),
                github_job_id: 7011,
                run_id: 1,
                repo: "acme/app".into(),
                labels: vec![],
                installation_id: Some(77),
            }),
            callback: RunnerCallback {
                url: "http://127.0.0.1:9".into(),
                token: Secret::new("unused"),
            },
            attempt: 1,
            first_launch: false,
        })
        .await
        .unwrap();

    clock.advance(Duration::from_secs(6 * 60));
    let report = reconcile(ports).await.unwrap();
    assert_eq!(report.count("reaper.recovered_launch"), 1, "{report:?}");
    let (_, view) = w.pacer.get(&format!("/api/jobs/{}", job.id)).await;
    assert_eq!(view["state"], "starting");
    assert_eq!(view["runner"]["instance_id"], launched.instance_id.as_str());
    let tagged = w
        .aws
        .ec2
        .describe_instances()
        .filters(
            sdk::types::Filter::builder()
                .name("tag:pacer:job")
                .values(&job.id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let count: usize = tagged
        .reservations()
        .iter()
        .map(|r| r.instances().len())
        .sum();
    assert_eq!(count, 1, "no second instance for one runner record");
    assert_eq!(
        ports
            .store
            .get_runner(&runner.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        RunnerState::Pending
    );
    assert_eq!(
        pool_active(&w, &pool_id).await,
        1,
        "its reservation is still held, once"
    );
}

/// What a crash right after GitHub minted a JIT config leaves: a
/// registration pacer never recorded. The runner is reaped at its boot
/// deadline; its registration is then a ghost, and removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_minted_before_a_crash_is_cleaned_up() {
    let (w, clock) = world().await;
    seed(&w.aws, &w.pacer, 2).await;
    let (_, job) = launched(&w, 7012).await;
    let name = job["runner"]["name"].as_str().unwrap();
    let minted = w.github.add_runner(
        crate::fake_github::FakeTarget::repo("acme/app"),
        name,
        &["self-hosted"],
    );

    clock.advance(Duration::from_secs(11 * 60));
    let first = reconcile(&w.pacer.ports).await.unwrap();
    assert_eq!(first.count("reaper.boot_deadline"), 1, "{first:?}");
    let second = reconcile(&w.pacer.ports).await.unwrap();
    assert!(
        first.count("reaper.ghost") + second.count("reaper.ghost") >= 1,
        "{first:?} {second:?}"
    );
    assert!(w.github.runner(minted).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_whose_webhook_never_arrived_is_found_and_launched_once() {
    use crate::fake_github::FakeRun;
    let (w, _clock) = world().await;
    seed(&w.aws, &w.pacer, 2).await;
    // GitHub has a run with a self-hosted job queued and a hosted one; no webhook came.
    w.github.add_run_with_jobs(
        FakeRun::new(880, "acme/app", "queued"),
        &[
            (8801, "queued", &["self-hosted", "linux"]),
            (8802, "queued", &["ubuntu-latest"]),
        ],
    );

    let report = reconcile(&w.pacer.ports).await.unwrap();
    assert_eq!(report.count("reaper.missed_webhook"), 1, "{report:?}");
    let (_, jobs) = w.pacer.get("/api/jobs?github_job_id=8801").await;
    let job_id = jobs["items"][0]["id"]
        .as_str()
        .expect("a row for the missed job")
        .to_string();
    instance_of_job(&w.aws, &job_id).await;
    let (_, hosted) = w.pacer.get("/api/jobs?github_job_id=8802").await;
    assert_eq!(
        hosted["items"],
        json!([]),
        "GitHub-hosted jobs are not pacer's"
    );

    let again = reconcile(&w.pacer.ports).await.unwrap();
    assert_eq!(
        again.count("reaper.missed_webhook"),
        0,
        "found once: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_redelivered_and_its_job_taken_in() {
    use crate::fake_github::FakeDelivery;
    let (w, _clock) = world().await;
    seed(&w.aws, &w.pacer, 2).await;
    let payload = queued_payload(8901, "acme/app", &["self-hosted"]);
    w.github.add_delivery(
        FakeDelivery::workflow_job(
            "guid-8901",
            "queued",
            502,
            chrono::Utc::now() - chrono::Duration::minutes(5),
        )
        .with_payload(payload),
    );
    w.github.forward_redeliveries_to(
        &format!("{}/api/webhook", w.pacer.base),
        crate::support::WEBHOOK_SECRET.as_bytes(),
    );

    let report = reconcile(&w.pacer.ports).await.unwrap();
    assert_eq!(report.count("reaper.redelivered"), 1, "{report:?}");
    assert_eq!(w.github.redeliveries().len(), 1);
    let jobs = w
        .pacer
        .wait_for("/api/jobs?github_job_id=8901", |j| {
            j["items"].as_array().is_some_and(|i| i.len() == 1)
        })
        .await;
    assert_eq!(
        jobs["items"][0]["sender"], "pacer-send-test-job",
        "the redelivered payload is the original one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_runner_github_no_longer_knows_is_terminated_without_a_deregistration() {
    use crate::fake_github::{Endpoint, Failure};
    let (w, clock) = world().await;
    seed(&w.aws, &w.pacer, 2).await;
    let (_, job) = launched(&w, 7013).await;
    register(&w, &job).await;
    w.github
        .fail_next(Endpoint::GetRepoRunner, 1, Failure::status(404));
    clock.advance(Duration::from_secs(6 * 60));
    let report = reconcile(&w.pacer.ports).await.unwrap();
    assert_eq!(report.count("reaper.idle"), 1, "{report:?}");
    let idle = report
        .actions
        .iter()
        .find(|a| a.action == "reaper.idle")
        .unwrap();
    assert!(idle.reason.contains("no longer knows"), "{report:?}");
    assert!(gone(
        &instance_state(&w, job["runner"]["instance_id"].as_str().unwrap()).await
    ));
}

/// GitHub said the job ended, but the runner never called `/complete` (its
/// machine hung after the job): the reaper reclaims it after the pool's idle
/// timeout instead of holding it until the max lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_job_ended_but_never_completed_is_reclaimed_after_the_idle_timeout() {
    use pacer_shared::fleet::JobRef;
    use pacer_shared::fleet::simulated::RunnerIdentity;
    use pacer_shared::host::simulation::workflow_job_payload;

    let (w, clock) = world().await;
    let pool_id = seed(&w.aws, &w.pacer, 2).await; // idle_timeout 5m
    let (job_id, job) = launched(&w, 7101).await;
    let github_id = register(&w, &job).await;
    let instance = job["runner"]["instance_id"].as_str().unwrap().to_string();
    let runner_id = job["runner"]["id"].as_str().unwrap().to_string();
    let job_ref = JobRef {
        id: job_id.clone(),
        github_job_id: 7101,
        run_id: 5000 + 7101,
        repo: "acme/app".into(),
        labels: vec!["self-hosted".into()],
        installation_id: Some(77),
    };
    let me = RunnerIdentity {
        id: github_id,
        name: job["runner"]["name"].as_str().unwrap().to_string(),
    };
    let now = chrono::Utc::now();
    for action in ["in_progress", "completed"] {
        let (s, _) = w
            .pacer
            .webhook(
                "workflow_job",
                &workflow_job_payload(&job_ref, &me, action, now),
            )
            .await;
        assert_eq!(s, 200, "{action}");
    }
    w.pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            j["state"] == "completed"
        })
        .await;

    // Within the idle timeout the runner may still be on its way out.
    clock.advance(Duration::from_secs(4 * 60));
    let report = reconcile(&w.pacer.ports).await.unwrap();
    assert_eq!(report.count("reaper.job_ended"), 0, "{report:?}");
    assert!(!gone(&instance_state(&w, &instance).await));

    clock.advance(Duration::from_secs(2 * 60));
    let report = reconcile(&w.pacer.ports).await.unwrap();
    assert_eq!(report.count("reaper.job_ended"), 1, "{report:?}");
    assert!(
        gone(&instance_state(&w, &instance).await),
        "its instance is terminated"
    );
    let (_, runner) = w.pacer.get(&format!("/api/runners/{runner_id}")).await;
    assert_eq!(runner["state"], "reaped");
    assert!(
        runner["error_tail"]
            .as_str()
            .unwrap()
            .contains("never reported /complete"),
        "{runner}"
    );
    assert_eq!(pool_active(&w, &pool_id).await, 0, "its capacity is back");
    let (_, job) = w.pacer.get(&format!("/api/jobs/{job_id}")).await;
    assert_eq!(
        job["state"], "completed",
        "the finished job is left as it is"
    );
}

/// The same rule for a job found by listing as for one that arrived by
/// webhook: a public repository's job gets no runner unless its project
/// allows it, and a refusal found again each pass is audited once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_job_of_a_public_repository_is_refused_like_its_webhook() {
    use crate::fake_github::FakeRun;
    let (w, _clock) = world().await;
    seed(&w.aws, &w.pacer, 2).await;
    let mut run = FakeRun::new(890, "acme/app", "queued");
    run.private = false;
    w.github
        .add_run_with_jobs(run, &[(8901, "queued", &["self-hosted", "linux"])]);

    for _ in 0..2 {
        let report = reconcile(&w.pacer.ports).await.unwrap();
        assert_eq!(report.count("reaper.missed_webhook"), 0, "{report:?}");
    }
    let (_, jobs) = w.pacer.get("/api/jobs?github_job_id=8901").await;
    assert_eq!(jobs["items"], json!([]));
    let (_, audit) = w
        .pacer
        .get("/api/audit?action=job.public_repo_refused")
        .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit["items"][0]["actor"]["id"], "reaper");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_launched_before_runners_recorded_their_repository_still_registers() {
    // Given a launched runner whose record, as an earlier pacer wrote it,
    // has no repository or installation of its own
    let (w, _clock) = world().await;
    seed(&w.aws, &w.pacer, 3).await;
    let (_, job) = launched(&w, 7101).await;
    let store = &w.pacer.ports.store;
    let runner_id = job["runner"]["id"].as_str().unwrap();
    let mut older = store.get_runner(runner_id).await.unwrap().unwrap();
    assert_eq!(
        older.repo.as_deref(),
        Some("acme/app"),
        "recorded at launch"
    );
    let from = older.state;
    older.repo = None;
    older.installation_id = None;
    older.version += 1;
    store.transition_runner(from, &older).await.unwrap();

    // When it registers, its job tells which repository it serves
    let github_runner_id = register(&w, &job).await;
    let registered = w
        .github
        .runners()
        .into_iter()
        .find(|r| r.id == github_runner_id)
        .unwrap();
    assert_eq!(registered.name, older.name);
    assert_eq!(
        registered.target,
        crate::fake_github::FakeTarget::Repo("acme/app".into())
    );
    let (_, runner) = w.pacer.get(&format!("/api/runners/{runner_id}")).await;
    assert_eq!(runner["state"], "registered", "{runner}");
}
