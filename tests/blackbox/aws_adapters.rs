//! The small AWS adapters against moto_server with the real SDK clients:
//! secret references resolved at start, and the SQS jobs queue.

use std::time::Duration;

use pacer_shared::config::Config;
use pacer_shared::queue::Queue;
use pacer_shared::queue::sqs::SqsQueue;

use crate::moto::Moto;

const JWT: &str = "0123456789abcdef0123456789abcdef-from-ssm";
const WEBHOOK: &str = "webhook-secret-from-secrets-manager";

fn yaml(moto: &Moto, jwt: &str, webhook: &str) -> String {
    format!(
        "aws:\n  endpoint_url: {}\n  region: us-east-1\ndatabase:\n  engine: sqlite\nqueue:\n  engine: memory\nfleet:\n  engine: simulated\n\
         github:\n  disabled: true\n  webhook_secret: \"{webhook}\"\nauth:\n  jwt_secret: \"{jwt}\"\npricing:\n  enabled: false\n",
        moto.endpoint
    )
}

async fn seed(moto: &Moto) -> aws_config::SdkConfig {
    let aws = moto.sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&aws);
    ssm.put_parameter()
        .name("/pacer/jwt")
        .value(JWT)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    ssm.put_parameter()
        .name("/pacer/short")
        .value("too-short")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    aws_sdk_secretsmanager::Client::new(&aws)
        .create_secret()
        .name("pacer/webhook")
        .secret_string(WEBHOOK)
        .send()
        .await
        .unwrap();
    aws
}

#[tokio::test]
async fn secret_references_resolve_once_from_ssm_and_secrets_manager() {
    let moto = Moto::start().await;
    let aws = seed(&moto).await;
    let mut cfg = Config::from_yaml(
        &yaml(&moto, "ssm:/pacer/jwt", "secretsmanager:pacer/webhook"),
        &[],
    )
    .expect("references pass loading");
    assert!(cfg.has_secret_references());
    cfg.resolve_secrets(&aws).await.expect("resolved");
    assert_eq!(cfg.auth.jwt_secret.as_ref().unwrap().expose(), JWT);
    assert_eq!(
        cfg.github.webhook_secret.as_ref().unwrap().expose(),
        WEBHOOK
    );
    assert!(
        !format!("{cfg:?}").contains(JWT),
        "resolved secrets stay redacted"
    );
}

#[tokio::test]
async fn a_missing_or_weak_referenced_secret_names_its_key_and_never_its_value() {
    let moto = Moto::start().await;
    let aws = seed(&moto).await;
    let mut missing = Config::from_yaml(
        &yaml(&moto, "ssm:/pacer/nope", "secretsmanager:pacer/webhook"),
        &[],
    )
    .unwrap();
    let err = missing.resolve_secrets(&aws).await.unwrap_err().to_string();
    assert!(
        err.contains("auth.jwt_secret") && err.contains("/pacer/nope"),
        "{err}"
    );

    let mut weak = Config::from_yaml(
        &yaml(&moto, "ssm:/pacer/short", "secretsmanager:pacer/webhook"),
        &[],
    )
    .unwrap();
    let err = weak.resolve_secrets(&aws).await.unwrap_err().to_string();
    assert!(err.contains("auth.jwt_secret"), "{err}");
    assert!(!err.contains("too-short"), "the value never appears: {err}");
}

#[tokio::test]
async fn the_sqs_queue_hides_received_messages_until_acknowledged() {
    let moto = Moto::start().await;
    let aws = moto.sdk_config().await;
    let client = aws_sdk_sqs::Client::new(&aws);
    let url = client
        .create_queue()
        .queue_name("pacer-jobs")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue = SqsQueue::new(client, url);

    queue.send("job_a", None).await.unwrap();
    let got = queue.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].job_id.as_str(), got[0].receive_count), ("job_a", 1));
    assert!(
        queue.receive(10, Duration::ZERO).await.unwrap().is_empty(),
        "hidden while in flight"
    );

    // Handed back: visible again, received a second time.
    queue.retry_later(&got[0], Duration::ZERO).await.unwrap();
    let again = queue.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(again[0].receive_count, 2);
    queue.ack(&again[0]).await.unwrap();
    queue.retry_later(&again[0], Duration::ZERO).await.ok();
    assert!(
        queue.receive(10, Duration::ZERO).await.unwrap().is_empty(),
        "an acknowledged message is gone"
    );
}
