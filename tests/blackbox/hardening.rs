//! What an outside security review found, each as the test that would have
//! caught it: hostile or careless input that must get a clean refusal and
//! leave pacer running.

use serde_json::json;

use crate::support::{queued_payload, LocalPacer};

/// A `runs-on` label of 100 × '€' (300 bytes): building its error message
/// once cut through a character at byte 32 and panicked, which in a release
/// build aborted the whole process, and again on every reaper pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_multibyte_label_leaves_the_job_unmatched_and_pacer_up() {
    let pacer = LocalPacer::start().await;
    pacer.seed(2).await;
    let euro = "€".repeat(100);

    let (status, body) = pacer.webhook("workflow_job", &queued_payload(101, "acme/app", &["self-hosted", "linux", &euro])).await;
    assert_eq!(status, 202, "{body}");
    let (_, job) = pacer.get(&format!("/api/jobs/{}", body["job_id"].as_str().unwrap())).await;
    assert_eq!(job["state"], "unmatched", "no runner can carry a label no pool may have: {job}");
    let (_, audit) = pacer.get("/api/audit?action=job.no_pool_match").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");

    let (status, body) = pacer.webhook("workflow_job", &queued_payload(102, "acme/app", &[&euro])).await;
    assert_eq!((status, &body["ignored"]), (200, &json!("not self-hosted")), "{body}");
    assert_eq!(pacer.fleet.counters().launched, 0);
    let health = pacer.http.get(format!("{}/healthz", pacer.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
}
