//! EC2's faults through the real SDK on the wire: the [`FaultProxy`] sits
//! between pacer's `Ec2Fleet` and moto and answers some RunInstances calls
//! as EC2 does when capacity, limits, throttling or the pool's AMI fail, or
//! loses the answer to a launch moto made. The launch loop's decisions are
//! unit-tested over a scripted fake (`shared/src/fleet/ec2/launch.rs`);
//! these tests prove the same decisions survive the SDK's error parsing,
//! and, end to end in the in-process pacer, what the job and the pool show.

use std::sync::Arc;
use std::time::Duration;

use pacer_shared::clock::SystemClock;
use pacer_shared::domain::{Pool, PoolSpec};
use pacer_shared::fleet::ec2::launch::{
    Combination, MarketKind, RetryPolicy, client_token, combinations,
};
use pacer_shared::fleet::ec2::sdk::config::retry::RetryConfig;
use pacer_shared::fleet::ec2::sdk::error::{ProvideErrorMetadata, SdkError};
use pacer_shared::fleet::ec2::sdk::operation::RequestId;
use pacer_shared::fleet::ec2::{Ec2Fleet, sdk};
use pacer_shared::fleet::{Fleet, TAG_JOB, TAG_RUNNER};
use pacer_shared::service::dispatch::{Dispatched, dispatch};
use serde_json::{Value, json};

use crate::ec2_fleet::Aws;
use crate::ec2_fleet::launch_request;
use crate::fault_proxy::{Call, Fault, FaultProxy};
use crate::lifecycle_aws::{Backend, World, instance_of_job, world_on};
use crate::support::{LocalPacer, queued_payload};

/// The deployment the in-process pacer runs as (`support::settings`).
const DEPLOYMENT: &str = "pacer";

/// The launch loop's budget, with short pauses: the tests count calls, never time them.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        throttled: 5,
        unknown: 2,
        base: Duration::from_millis(10),
        cap: Duration::from_millis(50),
    }
}

/// moto, the proxy in front of it, and an `Ec2Fleet` whose client goes through the proxy.
async fn proxied() -> (Aws, FaultProxy, Ec2Fleet) {
    let aws = Aws::start().await;
    let proxy = FaultProxy::start(&aws.moto).await;
    let fleet = Ec2Fleet::new(proxy.ec2_client(&aws.moto).await, DEPLOYMENT.into())
        .with_retry_policy(quick_retries());
    (aws, proxy, fleet)
}

/// The in-process pacer on SQLite whose EC2 fleet goes through the proxy.
async fn proxied_pacer() -> (World, FaultProxy) {
    let (aws, proxy, fleet) = proxied().await;
    let world = world_on(aws, Arc::new(fleet), Backend::Sqlite, Arc::new(SystemClock)).await;
    (world, proxy)
}

/// A pool on moto's network (t3.micro then t3.small, both subnets), with `changes` laid over it.
fn pool(aws: &Aws, changes: Value) -> Pool {
    let mut body = json!({
        "project_id": "prj_1", "name": "linux", "labels": ["linux"],
        "instance_types": ["t3.micro", "t3.small"], "subnets": aws.subnets,
        "security_groups": [aws.sg], "ami": aws.ami,
    });
    for (k, v) in changes.as_object().unwrap() {
        body[k] = v.clone();
    }
    let spec = PoolSpec::parse(body.as_object().unwrap().clone()).expect("a well-formed pool");
    let now = chrono::Utc::now();
    Pool {
        id: "pool_1".into(),
        spec,
        active_runners: 0,
        degraded: None,
        created_at: now,
        updated_at: now,
    }
}

/// Instances carrying tag `key=value`, asked of moto directly (not through the proxy).
async fn instances_tagged(aws: &Aws, key: &str, value: &str) -> Vec<sdk::types::Instance> {
    let out = aws
        .ec2
        .describe_instances()
        .filters(
            sdk::types::Filter::builder()
                .name(format!("tag:{key}"))
                .values(value)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect()
}

/// (market, instance type, subnet, injected error) of each RunInstances the proxy saw.
fn launches(calls: &[Call]) -> Vec<(String, String, String, Option<String>)> {
    calls
        .iter()
        .map(|c| {
            (
                c.market().to_string(),
                c.instance_type().unwrap_or_default().to_string(),
                c.subnet_id().unwrap_or_default().to_string(),
                c.injected.clone(),
            )
        })
        .collect()
}

fn launch(
    market: &str,
    instance_type: &str,
    subnet: &str,
    injected: Option<&str>,
) -> (String, String, String, Option<String>) {
    (
        market.into(),
        instance_type.into(),
        subnet.into(),
        injected.map(str::to_string),
    )
}

/// Project `acme` bound to `acme/app` with one pool made from `pool` (laid
/// over a valid body on moto's network); returns the pool id.
async fn seed(aws: &Aws, pacer: &LocalPacer, pool: Value) -> String {
    let (s, project) = pacer.post("/api/projects", json!({"name": "acme"})).await;
    assert_eq!(s, 201, "{project}");
    let mut body = json!({"project_id": project["id"], "name": "linux", "labels": ["linux"],
        "instance_types": ["t3.micro", "t3.small"], "subnets": aws.subnets, "security_groups": [aws.sg],
        "ami": aws.ami, "max_runners": 2});
    for (k, v) in pool.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, pool) = pacer.post("/api/pools", body).await;
    assert_eq!(s, 201, "{pool}");
    let (s, binding) = pacer
        .post(
            "/api/repos",
            json!({"repo": "acme/app", "project_id": project["id"]}),
        )
        .await;
    assert_eq!(s, 201, "{binding}");
    pool["id"].as_str().unwrap().to_string()
}

/// A queued `workflow_job` for `acme/app`; returns pacer's job id.
async fn queue_job(pacer: &LocalPacer, github_job_id: i64) -> String {
    let (s, accepted) = pacer
        .webhook(
            "workflow_job",
            &queued_payload(github_job_id, "acme/app", &["self-hosted", "linux"]),
        )
        .await;
    assert_eq!(s, 202, "{accepted}");
    accepted["job_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_sdk_reads_each_injected_refusal_as_ec2s_code_status_and_message() {
    let aws = Aws::start().await;
    let proxy = FaultProxy::start(&aws.moto).await;
    let ec2 = proxy.ec2_client(&aws.moto).await;
    // One call each: the SDK's own retries would eat the next fault.
    let run_once = || {
        ec2.run_instances()
            .image_id(&aws.ami)
            .min_count(1)
            .max_count(1)
            .customize()
            .config_override(sdk::config::Builder::default().retry_config(RetryConfig::disabled()))
            .send()
    };
    for (code, status) in [
        ("RequestLimitExceeded", 503),
        ("InsufficientInstanceCapacity", 500),
        ("VcpuLimitExceeded", 400),
        ("InvalidAMIID.NotFound", 400),
    ] {
        proxy.inject(Fault::run_instances().refuse(code));
        let err = run_once().await.unwrap_err();
        assert!(matches!(err, SdkError::ServiceError(_)), "{code}: {err:?}");
        assert_eq!(err.code(), Some(code));
        assert_eq!(
            err.raw_response().map(|r| r.status().as_u16()),
            Some(status),
            "{code}"
        );
        assert!(
            err.message().is_some_and(|m| !m.is_empty()),
            "{code}: {err:?}"
        );
        assert!(
            err.request_id().is_some_and(|id| !id.is_empty()),
            "{code}: {err:?}"
        );
    }
    proxy.inject(Fault::run_instances().drop_after_moto());
    let err = run_once().await.unwrap_err();
    assert!(
        matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
        ),
        "no answer at all: {err:?}"
    );

    // Refused calls never reached moto; the dropped one did.
    let made = aws.ec2.describe_instances().send().await.unwrap();
    assert_eq!(
        made.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .count(),
        1
    );
    let reached: Vec<bool> = proxy
        .run_instances()
        .iter()
        .map(|c| c.reached_moto)
        .collect();
    assert_eq!(reached, [false, false, false, false, true]);
}

#[tokio::test]
async fn with_no_fault_scripted_the_proxy_passes_every_call_through_unchanged() {
    // Given a proxy whose only fault is for an instance type the pool does not use…
    let (aws, proxy, fleet) = proxied().await;
    proxy.inject(
        Fault::run_instances()
            .when("InstanceType", "m7g.large")
            .always()
            .refuse("InsufficientInstanceCapacity"),
    );
    let pool = pool(&aws, json!({}));
    fleet.prepare_pool(&pool).await.unwrap();
    let req = launch_request(&pool, "run_1");

    // …a launch through it…
    let launched = fleet.launch(&req).await.unwrap();

    // …is moto's own answer, and moto holds what the SDK sent.
    assert_eq!(
        (launched.instance_type.as_str(), launched.market.as_str()),
        ("t3.micro", "on-demand")
    );
    let tagged = instances_tagged(&aws, TAG_RUNNER, "run_1").await;
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0].instance_id(), Some(launched.instance_id.as_str()));
    assert_eq!(tagged[0].subnet_id(), Some(aws.subnets[0].as_str()));
    let stored = crate::lifecycle_aws::user_data_of(&aws, &launched.instance_id).await;
    assert_eq!(
        stored,
        req.user_data(),
        "the body reached moto byte for byte"
    );
    let calls = proxy.run_instances();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].reached_moto && calls[0].injected.is_none());
    assert_eq!(
        calls[0].field("TagSpecification.1.ResourceType"),
        Some("instance")
    );
    assert!(
        !proxy.calls("DescribeInstances").is_empty(),
        "the launch looked for an earlier instance first"
    );
}

#[tokio::test]
async fn throttled_launches_are_retried_with_the_same_client_token_and_make_one_instance() {
    // Given EC2 throttles the next two RunInstances…
    let (aws, proxy, fleet) = proxied().await;
    let pool = pool(&aws, json!({}));
    fleet.prepare_pool(&pool).await.unwrap();
    proxy.inject(
        Fault::run_instances()
            .times(2)
            .refuse("RequestLimitExceeded"),
    );

    // …a launch backs off and tries again…
    let launched = fleet.launch(&launch_request(&pool, "run_1")).await.unwrap();

    // …three times, the same combination with the same idempotency token…
    let calls = proxy.run_instances();
    let first = &combinations(&pool.spec)[0];
    let token = client_token("run_1", 0, first);
    assert_eq!(
        launches(&calls),
        [
            launch(
                "on-demand",
                "t3.micro",
                &first.subnet,
                Some("RequestLimitExceeded")
            ),
            launch(
                "on-demand",
                "t3.micro",
                &first.subnet,
                Some("RequestLimitExceeded")
            ),
            launch("on-demand", "t3.micro", &first.subnet, None),
        ]
    );
    assert!(
        calls
            .iter()
            .all(|c| c.client_token() == Some(token.as_str())),
        "one token for every retry: {calls:?}"
    );
    // …and there is one instance: the one the launch returned.
    let tagged = instances_tagged(&aws, TAG_RUNNER, "run_1").await;
    assert_eq!(tagged.len(), 1, "one instance for one runner");
    assert_eq!(tagged[0].instance_id(), Some(launched.instance_id.as_str()));
}

#[tokio::test]
async fn a_launch_whose_answer_is_lost_is_found_by_its_runner_tag_and_not_repeated() {
    // Given moto launches the instance but EC2's answer is a 500…
    let (aws, proxy, fleet) = proxied().await;
    let pool = pool(&aws, json!({}));
    fleet.prepare_pool(&pool).await.unwrap();
    proxy.inject(Fault::run_instances().error_after_moto());

    // …the launch still returns that instance…
    let launched = fleet.launch(&launch_request(&pool, "run_1")).await.unwrap();

    // …found by its tag, with no second RunInstances.
    let tagged = instances_tagged(&aws, TAG_RUNNER, "run_1").await;
    assert_eq!(tagged.len(), 1, "nothing launched twice");
    assert_eq!(tagged[0].instance_id(), Some(launched.instance_id.as_str()));
    let calls = proxy.run_instances();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].reached_moto);
    assert_eq!(calls[0].injected.as_deref(), Some("InternalError"));
    let lookups = proxy.calls("DescribeInstances");
    assert!(
        lookups
            .iter()
            .filter(|c| c.fields.iter().any(|(_, v)| v == "run_1"))
            .count()
            >= 2,
        "looked up by the runner's tag before and after the lost answer: {lookups:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_launch_goes_straight_to_run_instances_without_looking_for_an_earlier_one() {
    // Given pacer with EC2 behind the proxy…
    let (
        World {
            aws,
            github: _github,
            pacer,
        },
        proxy,
    ) = proxied_pacer().await;
    seed(&aws, &pacer, json!({})).await;

    // …a queued job…
    let job_id = queue_job(&pacer, 9503).await;
    pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            j["state"] == "starting" && !j["runner"]["instance_id"].is_null()
        })
        .await;

    // …is launched by its first EC2 call: the claim made its runner, so no
    // earlier instance can exist to look for.
    let calls = proxy.all_calls();
    let first_launch = calls
        .iter()
        .position(|c| c.action == "RunInstances")
        .expect("a RunInstances");
    let before: Vec<&str> = calls[..first_launch]
        .iter()
        .map(|c| c.action.as_str())
        .filter(|a| *a == "DescribeInstances")
        .collect();
    assert!(before.is_empty(), "looked before launching: {before:?}");
    assert_eq!(proxy.run_instances().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_first_instance_type_has_no_capacity_starts_on_the_second() {
    // Given EC2 has no t3.micro capacity in any zone…
    let (
        World {
            aws,
            github: _github,
            pacer,
        },
        proxy,
    ) = proxied_pacer().await;
    proxy.inject(
        Fault::run_instances()
            .when("InstanceType", "t3.micro")
            .always()
            .refuse("InsufficientInstanceCapacity"),
    );
    let pool_id = seed(&aws, &pacer, json!({})).await;

    // …a queued job…
    let job_id = queue_job(&pacer, 9501).await;

    // …starts on t3.small, after both subnets refused t3.micro.
    let job = pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            j["state"] == "starting" && !j["runner"]["instance_id"].is_null()
        })
        .await;
    assert_eq!(job["runner"]["instance_type"], "t3.small", "{job}");
    assert_eq!(job["attempts"], 1);
    let [s1, s2] = &aws.subnets;
    assert_eq!(
        launches(&proxy.run_instances()),
        [
            launch(
                "on-demand",
                "t3.micro",
                s1,
                Some("InsufficientInstanceCapacity")
            ),
            launch(
                "on-demand",
                "t3.micro",
                s2,
                Some("InsufficientInstanceCapacity")
            ),
            launch("on-demand", "t3.small", s1, None),
        ]
    );
    let instance = instance_of_job(&aws, &job_id).await;
    assert_eq!(
        instance.instance_id(),
        job["runner"]["instance_id"].as_str()
    );
    assert_eq!(
        instance.instance_type().map(|t| t.as_str()),
        Some("t3.small")
    );
    assert_eq!(instances_tagged(&aws, TAG_JOB, &job_id).await.len(), 1);
    let (_, pool) = pacer.get(&format!("/api/pools/{pool_id}")).await;
    assert_eq!(pool["active_runners"], 1);
    assert!(
        pool["degraded"].is_null(),
        "a capacity shortage is not an account limit: {pool}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_fallback_job_runs_on_demand_when_spot_has_no_capacity() {
    // Given a spot-fallback pool and no spot capacity anywhere…
    let (
        World {
            aws,
            github: _github,
            pacer,
        },
        proxy,
    ) = proxied_pacer().await;
    proxy.inject(
        Fault::run_instances()
            .spot()
            .always()
            .refuse("InsufficientInstanceCapacity"),
    );
    seed(
        &aws,
        &pacer,
        json!({"market": "spot-fallback", "instance_types": ["t3.micro"]}),
    )
    .await;

    // …a queued job…
    let job_id = queue_job(&pacer, 9502).await;

    // …gets an on-demand instance once every spot combination refused.
    let job = pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            j["state"] == "starting" && !j["runner"]["instance_id"].is_null()
        })
        .await;
    assert_eq!(job["runner"]["market"], "on-demand", "{job}");
    let [s1, s2] = &aws.subnets;
    assert_eq!(
        launches(&proxy.run_instances()),
        [
            launch("spot", "t3.micro", s1, Some("InsufficientInstanceCapacity")),
            launch("spot", "t3.micro", s2, Some("InsufficientInstanceCapacity")),
            launch("on-demand", "t3.micro", s1, None),
        ]
    );
    let instance = instance_of_job(&aws, &job_id).await;
    assert_eq!(instance.instance_lifecycle(), None, "not a spot instance");
    assert_eq!(instances_tagged(&aws, TAG_JOB, &job_id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vcpu_limit_degrades_the_pool_visibly_and_leaves_the_job_queued_without_an_attempt() {
    // Given the account is at its vCPU limit…
    let (
        World {
            aws,
            github: _github,
            pacer,
        },
        proxy,
    ) = proxied_pacer().await;
    proxy.inject(Fault::run_instances().always().refuse("VcpuLimitExceeded"));
    let pool_id = seed(&aws, &pacer, json!({})).await;

    // …a queued job's launch…
    let job_id = queue_job(&pacer, 9503).await;

    // …marks the pool degraded, with EC2's reason, in the API…
    let pool = pacer
        .wait_for(&format!("/api/pools/{pool_id}"), |p| {
            !p["degraded"].is_null()
        })
        .await;
    let degraded = &pool["degraded"];
    let reason = degraded["reason"].as_str().unwrap();
    assert!(
        reason.contains("VcpuLimitExceeded") && reason.contains("vCPU limit"),
        "{pool}"
    );
    let time = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(degraded[field].as_str().unwrap()).unwrap()
    };
    assert!(
        time("retry_at") > time("since"),
        "retried later, not at once: {pool}"
    );
    assert_eq!(pool["active_runners"], 0, "the reservation is given back");
    let (_, audit) = pacer.get("/api/audit?action=pool.degraded").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit["items"][0]["target"], pool_id.as_str());
    // …and the job waits, queued, its attempts untouched.
    let job = pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            j["transitions"]
                .as_array()
                .and_then(|t| t.last())
                .and_then(|t| t["note"].as_str())
                .is_some_and(|n| n.contains("pool degraded"))
        })
        .await;
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(
        job["attempts"], 0,
        "an account limit is not the job's attempt: {job}"
    );
    assert!(job["failure_reason"].is_null(), "{job}");
    // One call told pacer all it needed: the other combinations were not tried.
    let calls = proxy.run_instances();
    assert_eq!(calls.len(), 1, "{:?}", launches(&calls));
    assert!(instances_tagged(&aws, TAG_JOB, &job_id).await.is_empty());

    // And the next job waits for the pool's retry without a launch: the
    // process's copy of its pools saw the pool degraded at once.
    let next = queue_job(&pacer, 9513).await;
    assert_eq!(
        dispatch(&pacer.ports, &next).await.unwrap(),
        Dispatched::Deferred
    );
    let calls = proxy.run_instances();
    assert_eq!(calls.len(), 1, "{:?}", launches(&calls));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ami_ec2_no_longer_knows_fails_the_job_naming_the_ami_without_retrying() {
    // Given the pool's AMI was deregistered after the pool was saved…
    let (
        World {
            aws,
            github: _github,
            pacer,
        },
        proxy,
    ) = proxied_pacer().await;
    let message = format!("The image id '[{}]' does not exist", aws.ami);
    proxy.inject(
        Fault::run_instances()
            .always()
            .refuse_with("InvalidAMIID.NotFound", &message),
    );
    let pool_id = seed(&aws, &pacer, json!({})).await;

    // …a queued job's launch…
    let job_id = queue_job(&pacer, 9504).await;

    // …fails the job with a reason that names the AMI…
    let job = pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| j["state"] == "failed")
        .await;
    let reason = job["failure_reason"].as_str().expect("a failure reason");
    assert!(
        reason.contains("InvalidAMIID.NotFound") && reason.contains(&aws.ami),
        "{reason}"
    );
    assert!(reason.contains("ami"), "the pool field to fix: {reason}");
    // …after exactly one RunInstances: no other combination, no retry.
    let (_, audit) = pacer.get("/api/audit?action=job.launch_failed").await;
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{audit}");
    assert_eq!(items[0]["detail"]["final"], true);
    let calls = proxy.run_instances();
    assert_eq!(calls.len(), 1, "{:?}", launches(&calls));
    assert_eq!(calls[0].injected.as_deref(), Some("InvalidAMIID.NotFound"));
    let (_, pool) = pacer.get(&format!("/api/pools/{pool_id}")).await;
    assert_eq!(pool["active_runners"], 0);
    assert!(
        pool["degraded"].is_null(),
        "a bad AMI fails jobs, it does not degrade the pool: {pool}"
    );
    assert!(instances_tagged(&aws, TAG_JOB, &job_id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_launch_answer_is_dropped_gets_the_instance_moto_made_and_no_second() {
    // Given moto makes the instance but the connection drops before its answer…
    let (
        World {
            aws,
            github: _github,
            pacer,
        },
        proxy,
    ) = proxied_pacer().await;
    proxy.inject(Fault::run_instances().drop_after_moto());
    seed(&aws, &pacer, json!({})).await;

    // …a queued job…
    let job_id = queue_job(&pacer, 9505).await;

    // …starts on that instance, found by its runner tag…
    let job = pacer
        .wait_for(&format!("/api/jobs/{job_id}"), |j| {
            j["state"] == "starting" && !j["runner"]["instance_id"].is_null()
        })
        .await;
    let tagged = instances_tagged(&aws, TAG_JOB, &job_id).await;
    assert_eq!(tagged.len(), 1, "one instance for the job");
    assert_eq!(
        tagged[0].instance_id(),
        job["runner"]["instance_id"].as_str(),
        "{job}"
    );
    let runner_tag = tagged[0]
        .tags()
        .iter()
        .find(|t| t.key() == Some(TAG_RUNNER))
        .and_then(|t| t.value());
    assert_eq!(runner_tag, job["runner"]["id"].as_str());
    assert_eq!(job["attempts"], 1, "{job}");
    // …and nothing was launched again.
    let calls = proxy.run_instances();
    assert_eq!(calls.len(), 1, "{:?}", launches(&calls));
    assert_eq!(calls[0].injected.as_deref(), Some("connection dropped"));
    let runner_id = job["runner"]["id"].as_str().unwrap();
    let lookups = proxy
        .calls("DescribeInstances")
        .into_iter()
        .filter(|c| c.fields.iter().any(|(_, v)| v == runner_id));
    assert_eq!(
        lookups.count(),
        1,
        "looked up by the runner's tag after the lost answer (not before: a first launch has nothing to find)"
    );
    let combo = Combination {
        market: MarketKind::OnDemand,
        instance_type: "t3.micro".into(),
        subnet: aws.subnets[0].clone(),
    };
    assert_eq!(
        calls[0].client_token(),
        Some(client_token(runner_id, 1, &combo).as_str())
    );
}
