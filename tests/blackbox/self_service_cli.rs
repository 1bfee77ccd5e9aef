//! The operator's self-service commands in the `pacer` binary, against the
//! configured store (SQLite here) and GitHub (the offline stand-in of a
//! local configuration, which knows none of these runners).

use chrono::Utc;
use pacer_shared::domain::self_service::SelfRunnerStatus;
use pacer_shared::store::conformance::self_runner;
use pacer_shared::store::sqlite::SqliteStore;
use pacer_shared::store::{AuditFilter, PageRequest, SelfServiceStore as _};
use serde_json::Value;

use crate::process::{Served, pacer, run};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_sync_clean_up_and_export_from_the_command_line() {
    // Given a local pacer's store holding a runner provisioned an hour ago
    // and never seen online, and one that is online
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("data/pacer.yaml");
    let served = Served::start(&config, &[]).await;
    assert!(served.terminate().await.success());
    let store = SqliteStore::open(&dir.path().join("data/pacer.db")).unwrap();
    let an_hour_ago = Utc::now() - chrono::Duration::hours(1);
    let stale = self_runner("ci-stale", "ci:alice", an_hour_ago);
    assert!(store.create_self_runner(&stale, 5).await.unwrap());
    let mut online = self_runner("ci-online", "ci:bob", Utc::now());
    online.status = SelfRunnerStatus::Active;
    online.registered_at = Some(Utc::now());
    assert!(store.create_self_runner(&online, 5).await.unwrap());
    let admin = |args: &[&str]| run(pacer().arg("admin").args(args).arg("--config").arg(&config));

    // list-runners: a table, JSON lines, filters
    let out = admin(&["list-runners"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("ci-stale") && stdout(&out).contains("ci-online"));
    let out = admin(&["list-runners", "--json", "--state", "pending"]);
    let listed: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "ci-stale");
    let out = admin(&["list-runners", "--json", "--owner", "ci:bob"]);
    assert_eq!(stdout(&out).lines().count(), 1);
    let out = admin(&["list-runners", "--state", "sideways"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pending, active, offline, deleted"));

    // sync-github --dry-run says what GitHub reports and writes nothing
    let out = admin(&["sync-github", "--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = stdout(&out);
    assert!(
        said.contains("ci-online would move active -> deleted"),
        "{said}"
    );
    assert_eq!(
        store
            .get_self_runner("ci-online")
            .await
            .unwrap()
            .unwrap()
            .status,
        SelfRunnerStatus::Active
    );

    // cleanup-stale-runners: dry run first, then for real
    let out = admin(&["cleanup-stale-runners", "--dry-run"]);
    assert!(
        stdout(&out).contains("would remove ci-stale"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("ci-online"));
    assert_eq!(
        store
            .get_self_runner("ci-stale")
            .await
            .unwrap()
            .unwrap()
            .status,
        SelfRunnerStatus::Pending
    );
    let out = admin(&["cleanup-stale-runners"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("removed ci-stale"));
    assert_eq!(
        store
            .get_self_runner("ci-stale")
            .await
            .unwrap()
            .unwrap()
            .status,
        SelfRunnerStatus::Deleted
    );
    let audited = pacer_shared::store::AuditStore::list_audit(
        &store,
        &AuditFilter {
            action: Some("self_service.runner_expired".into()),
            ..Default::default()
        },
        &PageRequest::first(10),
    )
    .await
    .unwrap();
    assert_eq!(audited.items.len(), 1);

    // export-audit-log: CSV with a header, JSON lines, a window
    let out = admin(&["export-audit-log", "--format", "csv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = stdout(&out);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("id,at,actor_kind,actor,client_ip,action,target,detail")
    );
    assert!(csv.contains("self_service.runner_expired"), "{csv}");
    let out = admin(&["export-audit-log"]);
    let events: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "self_service.runner_expired")
    );
    let times: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "oldest first");
    let tomorrow = (Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let out = admin(&["export-audit-log", "--since", &tomorrow]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
    let out = admin(&["export-audit-log", "--since", "yesterday"]);
    assert!(
        !out.status.success(),
        "a time that is not RFC 3339 is refused"
    );
}
