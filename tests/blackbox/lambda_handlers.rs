//! The Lambda functions' handlers, in process, fed the events AWS sends
//! them — API Gateway HTTP API (payload 2.0) requests, SQS batches and
//! EventBridge scheduled events — over DynamoDB, SQS and EC2 on moto.
//! `lambda_runtime.rs` runs the built binaries under a Runtime API stub.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use pacer_shared::auth::workload::WorkloadVerifier;
use pacer_shared::clock::{Clock, ManualClock};
use pacer_shared::config::{Function, RunnerConfig, Secret};
use pacer_shared::domain::JobState;
use pacer_shared::fleet::ec2::Ec2Fleet;
use pacer_shared::github::absent::NoAppKey;
use pacer_shared::github::rest::RestGitHub;
use pacer_shared::host::lambda::{self, ORIGIN_SECRET_HEADER, VIEWER_ADDRESS_HEADER};
use pacer_shared::http::AppState;
use pacer_shared::pricing::NoPricing;
use pacer_shared::queue::sqs::SqsQueue;
use pacer_shared::service::Ports;
use pacer_shared::store::dynamodb::DynamoStore;
use pacer_shared::store::{AuditFilter, PageRequest};
use pacer_test_support::events::{github_delivery, http_event, scheduled_event, sqs_record};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::ec2_fleet::Aws;
use crate::fake_github::FakeGitHub;
use crate::fault_proxy::{Fault, FaultProxy};
use crate::support::{WEBHOOK_SECRET, queued_payload, settings};

const ORIGIN_SECRET: &str = "origin-secret-from-the-distribution-0123";

/// pacer's ports as the functions build them in AWS: DynamoDB, SQS and EC2
/// (through a fault proxy) on one moto, GitHub faked. Nothing consumes the
/// queue: the test plays Lambda's SQS poller.
struct Cloud {
    aws: Aws,
    proxy: FaultProxy,
    _github: FakeGitHub,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    clock: Arc<ManualClock>,
    ports: Ports,
    /// The api function's workload token verifier, when a test turns
    /// self-service on.
    workload: Option<Arc<WorkloadVerifier>>,
}

impl Cloud {
    async fn start() -> Cloud {
        pacer_shared::http_client::install_crypto_provider();
        let aws = Aws::start().await;
        let proxy = FaultProxy::start(&aws.moto).await;
        let sdk = aws.moto.sdk_config().await;
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), "pacer-lambda".into());
        store.create_table().await.unwrap();
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let queue_url = sqs
            .create_queue()
            .queue_name("pacer-jobs")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let github = FakeGitHub::start().await;
        github.install_on_repo("acme/app", 77);
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let fleet = Ec2Fleet::new(proxy.ec2_client(&aws.moto).await, "pacer".into())
            .with_retry_policy(pacer_shared::fleet::ec2::launch::RetryPolicy {
                throttled: 2,
                unknown: 1,
                base: Duration::from_millis(10),
                cap: Duration::from_millis(20),
            });
        let pinned_runner = RunnerConfig {
            version: "2.330.0".into(),
            ..RunnerConfig::default()
        };
        let ports = Ports {
            store: Arc::new(store),
            clock: clock.clone(),
            ids: Arc::new(pacer_shared::domain::Ulids::default()),
            queue: Arc::new(SqsQueue::new(sqs.clone(), queue_url.clone())),
            fleet: Arc::new(fleet),
            github: Arc::new(
                RestGitHub::new(
                    &github.github_config(),
                    &pinned_runner,
                    clock.clone() as Arc<dyn Clock>,
                )
                .unwrap(),
            ),
            pricing: Arc::new(NoPricing),
            settings: Arc::new(settings(
                "https://abc123.execute-api.us-east-1.amazonaws.com",
            )),
            catalog: Default::default(),
        };
        Cloud {
            aws,
            proxy,
            _github: github,
            sqs,
            queue_url,
            clock,
            ports,
            workload: None,
        }
    }

    fn router(&self, function: Function) -> axum::Router {
        let state = AppState {
            ports: self.ports.clone(),
            trusted_proxies: Arc::new(vec![]),
            auth: None,
            sso: None,
            console: None,
            workload: self.workload.clone(),
        };
        lambda::http_router(function, state, Some(Secret::new(ORIGIN_SECRET))).unwrap()
    }

    /// Sends `event` (an API Gateway payload 2.0) to `function`'s router, as
    /// `lambda_http` hands it over.
    async fn invoke(&self, function: Function, event: Value) -> (u16, Value) {
        let request =
            lambda_http::request::from_str(&event.to_string()).expect("a payload 2.0 event");
        let response = self.router(function).oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// A project bound to `acme/app` with a pool on moto's network, made
    /// through the api function; returns the pool id.
    async fn seed(&self, name: &str, labels: &[&str], instance_types: &[&str]) -> String {
        let (s, project) = self
            .invoke(
                Function::Api,
                api_event("POST", "/api/projects", json!({"name": name})),
            )
            .await;
        assert_eq!(s, 201, "{project}");
        let (s, pool) = self
            .invoke(
                Function::Api,
                api_event(
                    "POST",
                    "/api/pools",
                    json!({"project_id": project["id"], "name": "linux", "labels": labels,
                        "instance_types": instance_types, "subnets": self.aws.subnets,
                        "security_groups": [self.aws.sg], "ami": self.aws.ami, "max_runners": 5}),
                ),
            )
            .await;
        assert_eq!(s, 201, "{pool}");
        let repo = format!("acme/{name}");
        let (s, binding) = self
            .invoke(
                Function::Api,
                api_event(
                    "POST",
                    "/api/repos",
                    json!({"repo": repo, "project_id": project["id"]}),
                ),
            )
            .await;
        assert_eq!(s, 201, "{binding}");
        pool["id"].as_str().unwrap().to_string()
    }

    /// A signed queued `workflow_job` for `repo` through the webhook
    /// function; returns pacer's job id.
    async fn queue_job(&self, github_job_id: i64, repo: &str, labels: &[&str]) -> String {
        let (s, accepted) = self
            .invoke(
                Function::Webhook,
                webhook_event(&queued_payload(github_job_id, repo, labels), "192.0.2.10"),
            )
            .await;
        assert_eq!(s, 202, "{accepted}");
        accepted["job_id"].as_str().unwrap().to_string()
    }

    /// What Lambda's poller would hand the orchestrator: every message on
    /// the queue now, as an SQS event.
    async fn poll(&self, extra: &[Value]) -> SqsEvent {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        let mut records: Vec<Value> = out
            .messages()
            .iter()
            .map(|m| {
                let attrs: serde_json::Map<String, Value> = m
                    .attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.as_str().to_string(), json!(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                sqs_record(
                    m.message_id().unwrap(),
                    m.receipt_handle().unwrap(),
                    m.body().unwrap(),
                    Value::Object(attrs),
                )
            })
            .collect();
        records.extend(extra.iter().cloned());
        serde_json::from_value(json!({"Records": records})).expect("an SQS event")
    }

    async fn queued_messages(&self) -> Vec<String> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
        out.messages()
            .iter()
            .filter_map(|m| m.body().map(str::to_string))
            .collect()
    }
}

fn api_event(method: &str, path: &str, body: Value) -> Value {
    http_event(
        method,
        path,
        json!({"content-type": "application/json"}),
        Some(&body.to_string()),
        "198.51.100.20",
    )
}

fn webhook_event(payload: &Value, source_ip: &str) -> Value {
    let body = payload.to_string();
    let signature = pacer_shared::github::webhook::sign(WEBHOOK_SECRET.as_bytes(), body.as_bytes());
    github_delivery("workflow_job", &body, &signature, source_ip)
}

async fn audit(ports: &Ports, action: &str) -> Vec<pacer_shared::domain::AuditEvent> {
    let filter = AuditFilter {
        action: Some(action.into()),
        ..Default::default()
    };
    ports
        .store
        .list_audit(&filter, &PageRequest::first(50))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn the_webhook_function_takes_a_signed_delivery_from_api_gateway() {
    let cloud = Cloud::start().await;
    cloud.seed("app", &["linux"], &["t3.micro"]).await;

    // A queued job is written to DynamoDB and announced on SQS.
    let job_id = cloud
        .queue_job(4001, "acme/app", &["self-hosted", "linux"])
        .await;
    let job = cloud
        .ports
        .store
        .get_job(&job_id)
        .await
        .unwrap()
        .expect("the job is in DynamoDB");
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(cloud.queued_messages().await, [job_id]);
    cloud
        .sqs
        .purge_queue()
        .queue_url(&cloud.queue_url)
        .send()
        .await
        .unwrap();

    // API Gateway may hand the body over base64-encoded; the signature is
    // checked on the bytes GitHub sent either way.
    let mut encoded = webhook_event(
        &queued_payload(4004, "acme/app", &["self-hosted", "linux"]),
        "192.0.2.10",
    );
    let raw = encoded["body"].as_str().unwrap().to_string();
    encoded["body"] = json!(crate::b64::encode(raw.as_bytes()));
    encoded["isBase64Encoded"] = json!(true);
    let (s, body) = cloud.invoke(Function::Webhook, encoded).await;
    assert_eq!(s, 202, "{body}");

    // A bad signature is refused with 401 and writes nothing.
    let mut forged = webhook_event(
        &queued_payload(4002, "acme/app", &["self-hosted", "linux"]),
        "192.0.2.10",
    );
    forged["headers"]["x-hub-signature-256"] = json!("sha256=00");
    let (s, body) = cloud.invoke(Function::Webhook, forged).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");

    // The client address in the audit log is API Gateway's sourceIp, not
    // whatever X-Forwarded-For the sender wrote.
    let mut unbound = webhook_event(
        &queued_payload(4003, "other/repo", &["self-hosted"]),
        "192.0.2.77",
    );
    unbound["headers"]["x-forwarded-for"] = json!("10.9.9.9");
    let (s, body) = cloud.invoke(Function::Webhook, unbound).await;
    assert_eq!(s, 200, "{body}");
    let events = audit(&cloud.ports, "job.repo_not_bound").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].client_ip.as_deref(), Some("192.0.2.77"));

    // Paths the function does not serve answer JSON, not HTML.
    let (s, body) = cloud
        .invoke(
            Function::Webhook,
            api_event("GET", "/api/projects", json!({})),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn behind_cloudfront_the_api_function_believes_the_viewer_address_only_with_the_origin_secret()
 {
    let cloud = Cloud::start().await;
    let create = |name: &str, headers: Value| {
        let mut event = api_event("POST", "/api/projects", json!({"name": name}));
        for (k, v) in headers.as_object().unwrap() {
            event["headers"][k] = v.clone();
        }
        event["requestContext"]["http"]["sourceIp"] = json!("130.176.0.9");
        event
    };
    let (s, _) = cloud
        .invoke(Function::Api, create("via-cloudfront", json!({ORIGIN_SECRET_HEADER: ORIGIN_SECRET, VIEWER_ADDRESS_HEADER: "203.0.113.5:50000"})))
        .await;
    assert_eq!(s, 201);
    let (s, _) = cloud
        .invoke(
            Function::Api,
            create(
                "forged",
                json!({VIEWER_ADDRESS_HEADER: "203.0.113.66:50000"}),
            ),
        )
        .await;
    assert_eq!(s, 201);

    let events = audit(&cloud.ports, "project.created").await;
    let mut ips: Vec<_> = events
        .iter()
        .map(|e| e.client_ip.clone().unwrap_or_default())
        .collect();
    ips.sort();
    // The forged header counts for nothing (API Gateway's peer stands); the
    // request carrying the origin secret names CloudFront's viewer.
    assert_eq!(ips, ["130.176.0.9", "203.0.113.5"], "{events:?}");

    let (s, body) = cloud
        .invoke(
            Function::Api,
            http_event("GET", "/healthz", json!({}), None, "198.51.100.1"),
        )
        .await;
    assert_eq!((s, body), (200, Value::Null), "healthz answers plain ok");
}

#[tokio::test]
async fn an_sqs_batch_reports_only_the_message_that_failed_transiently() {
    let cloud = Cloud::start().await;
    cloud.seed("app", &["linux"], &["t3.micro"]).await;
    cloud.seed("busy", &["gpu"], &["t3.nano"]).await;
    // EC2 throttles every launch of t3.nano, beyond the fleet's retries.
    cloud.proxy.inject(
        Fault::run_instances()
            .when("InstanceType", "t3.nano")
            .always()
            .refuse("RequestLimitExceeded"),
    );

    let good = cloud
        .queue_job(5001, "acme/app", &["self-hosted", "linux"])
        .await;
    let throttled = cloud
        .queue_job(5002, "acme/busy", &["self-hosted", "gpu"])
        .await;
    let malformed = sqs_record(
        "msg-malformed",
        "receipt-malformed",
        "{\"not\": \"a job id\"}",
        json!({"ApproximateReceiveCount": "1"}),
    );
    let event = cloud.poll(&[malformed]).await;
    assert_eq!(event.records.len(), 3);
    let id_of = |job: &str| {
        event
            .records
            .iter()
            .find(|r| r.body.as_deref() == Some(job))
            .and_then(|r| r.message_id.clone())
            .expect("a message per job")
    };
    let throttled_message = id_of(&throttled);

    let response = lambda::handle_batch(&cloud.ports, event).await;

    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(
        failed,
        [throttled_message],
        "only the throttled launch comes back"
    );
    let good = cloud.ports.store.get_job(&good).await.unwrap().unwrap();
    assert_eq!(
        good.state,
        JobState::Starting,
        "the good job got its instance"
    );
    let throttled = cloud
        .ports
        .store
        .get_job(&throttled)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        throttled.state,
        JobState::Queued,
        "the throttled job waits for the next try"
    );
    // The response is what Lambda reads: camelCase, the failures only.
    let wire = serde_json::to_value(&response).unwrap();
    assert_eq!(
        wire["batchItemFailures"][0]["itemIdentifier"],
        json!(failed[0])
    );
}

#[tokio::test]
async fn the_orchestrator_launches_without_the_github_app_key() {
    // Given the orchestrator as deployed: no App key, so a GitHub port that
    // refuses every call
    let cloud = Cloud::start().await;
    cloud.seed("app", &["linux"], &["t3.micro"]).await;
    let job = cloud
        .queue_job(5101, "acme/app", &["self-hosted", "linux"])
        .await;
    let orchestrator = Ports {
        github: Arc::new(NoAppKey {
            function: Function::Orchestrator,
        }),
        ..cloud.ports.clone()
    };

    // When it handles the job's message
    let response = lambda::handle_batch(&orchestrator, cloud.poll(&[]).await).await;

    // Then the job got its instance, and nothing needed GitHub
    assert!(response.batch_item_failures.is_empty());
    let job = cloud.ports.store.get_job(&job).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Starting, "{job:?}");
    assert!(job.runner_id.is_some());
}

#[tokio::test]
async fn a_scheduled_event_runs_one_reaper_pass_and_a_failed_pass_fails_the_invocation() {
    let cloud = Cloud::start().await;
    cloud.seed("app", &["linux"], &["t3.micro"]).await;
    let job = cloud
        .queue_job(6001, "acme/app", &["self-hosted", "linux"])
        .await;
    // The queue lost the hint: the job sits queued past reaper.redrive_after.
    cloud
        .sqs
        .purge_queue()
        .queue_url(&cloud.queue_url)
        .send()
        .await
        .unwrap();
    cloud.clock.advance(Duration::from_secs(301));

    let scheduled = scheduled_event();
    let answer = lambda::handle_schedule(&cloud.ports, scheduled.clone())
        .await
        .expect("the pass succeeds");
    assert!(answer["actions"].as_u64().unwrap() >= 1, "{answer}");
    assert_eq!(audit(&cloud.ports, "reaper.redrive").await.len(), 1);
    assert_eq!(
        cloud.queued_messages().await,
        [job],
        "the job is on the queue again"
    );

    // With its table gone the pass cannot run, and the invocation says so.
    let sdk = cloud.aws.moto.sdk_config().await;
    aws_sdk_dynamodb::Client::new(&sdk)
        .delete_table()
        .table_name("pacer-lambda")
        .send()
        .await
        .unwrap();
    let err = lambda::handle_schedule(&cloud.ports, scheduled)
        .await
        .expect_err("a failed pass is an error");
    assert!(!err.to_string().is_empty());
}

#[tokio::test]
async fn the_api_function_serves_self_service_and_judges_the_address_api_gateway_saw() {
    // Given self-service on, for an identity that admits only 10.0.0.0/8
    let mut cloud = Cloud::start().await;
    let idp = crate::test_idp::TestIdp::start(crate::self_service::AUDIENCE, "unused").await;
    let mut identity = crate::self_service::identity(&idp.issuer);
    identity.source_cidrs = vec!["10.0.0.0/8".parse().unwrap()];
    let mut settings = (*cloud.ports.settings).clone();
    settings.self_service = pacer_shared::service::self_service::SelfServiceSettings {
        enabled: true,
        identities: vec![identity.clone()],
        registration_timeout: Duration::from_secs(600),
    };
    cloud.ports.settings = Arc::new(settings);
    cloud.workload = Some(Arc::new(WorkloadVerifier::new(vec![identity]).unwrap()));
    let list = |token: String, source_ip: &str| {
        http_event(
            "GET",
            "/api/v1/runners",
            json!({"authorization": format!("Bearer {token}"), "x-forwarded-for": "10.1.2.3"}),
            None,
            source_ip,
        )
    };
    let token = || {
        idp.script(crate::self_service::actions_token(
            crate::self_service::INFRA,
        ));
        idp.mint_id_token(None)
    };

    // When a machine outside the range claims, by a forwarded header, to be in it
    let (s, body) = cloud
        .invoke(Function::Api, list(token(), "198.51.100.20"))
        .await;

    // Then API Gateway's source address is the one judged
    assert_eq!(s, 403, "{body}");
    let events = cloud
        .ports
        .store
        .list_security_events(&Default::default(), &PageRequest::first(10))
        .await
        .unwrap()
        .items;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].source_ip.as_deref(), Some("198.51.100.20"));
    // and a machine inside it, on DynamoDB, is served
    let (s, body) = cloud.invoke(Function::Api, list(token(), "10.9.8.7")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["items"], json!([]));
}
