//! Monthly budgets on the embedded store, with a clock the test moves: the
//! reaper counts each budget's spend from the month's roll-ups, audits each
//! line once a month, and an enforced budget that is spent holds its pool's
//! launches — the job stays queued and says why — until the month ends or
//! the budget is raised. Spend is added to the roll-ups with known figures,
//! as a settled job adds it (how jobs reach the roll-ups is in `cost`).

use std::sync::Arc;
use std::time::Duration;

use pacer_shared::clock::ManualClock;
use pacer_shared::domain::budget::{Budget, BudgetScope};
use pacer_shared::domain::labels::Label;
use pacer_shared::domain::usage::{Contribution, UsageDims, UsageFigures};
use pacer_shared::domain::{JobState, Pool, Time};
use pacer_shared::service::dispatch::{Dispatched, dispatch};
use pacer_shared::service::{Ports, Settings, budgets, reaper};
use pacer_shared::store::{AuditFilter, PageRequest, conformance};
use serde_json::json;

use crate::support::{deliver_queued, local_ports, seed_acme};

struct World {
    ports: Ports,
    clock: Arc<ManualClock>,
    project_id: String,
    linux: Pool,
    arm: Pool,
    _dir: tempfile::TempDir,
}

/// `linux-cap`: $1 a month for pool acme/linux, warned at half, enforced.
/// `acme-watch`: $2 a month for all of project acme, warned at 80%, not
/// enforced. `gone`: a budget for a project that does not exist.
fn budgets(linux_usd: u64) -> Vec<Budget> {
    vec![
        Budget {
            name: "linux-cap".into(),
            scope: BudgetScope::Pool {
                project: "acme".into(),
                pool: "linux".into(),
            },
            monthly_micro_usd: linux_usd * 1_000_000,
            warn_percent: 50,
            enforce: true,
        },
        Budget {
            name: "acme-watch".into(),
            scope: BudgetScope::Project {
                project: "ACME".into(),
            },
            monthly_micro_usd: 2_000_000,
            warn_percent: 80,
            enforce: false,
        },
        Budget {
            name: "gone".into(),
            scope: BudgetScope::Project {
                project: "nobody".into(),
            },
            monthly_micro_usd: 1_000_000,
            warn_percent: 80,
            enforce: true,
        },
    ]
}

fn with_budgets(ports: &Ports, budgets: Vec<Budget>) -> Ports {
    let settings = Settings {
        budgets,
        ..(*ports.settings).clone()
    };
    Ports {
        settings: Arc::new(settings),
        ..ports.clone()
    }
}

/// Project `acme` bound to `acme/app`, with pools `linux` and `arm`, on
/// 30 March 2026 at noon.
async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let (ports, _) = local_ports(dir.path());
    let now: Time = "2026-03-30T12:00:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock::new(now));
    let ports = with_budgets(
        &Ports {
            clock: clock.clone(),
            ..ports
        },
        budgets(1),
    );
    let (project, linux) = seed_acme(&*ports.store, 5, now).await;
    let mut arm = conformance::pool(&project.id, "arm", 5, now + chrono::Duration::seconds(1));
    arm.spec.labels = [Label::parse("arm64").unwrap()].into();
    ports.store.create_pool(&arm).await.unwrap();
    World {
        ports,
        clock,
        project_id: project.id,
        linux,
        arm,
        _dir: dir,
    }
}

impl World {
    /// A settled job of `micro_usd` in `pool`, added to the roll-ups now.
    async fn spend(&self, id: &str, pool: &Pool, micro_usd: u64) {
        let c = Contribution {
            id: format!("job:{id}"),
            at: pacer_shared::clock::Clock::now(&*self.clock),
            dims: UsageDims {
                project_id: self.project_id.clone(),
                pool_id: pool.id.clone(),
                repo: "acme/app".into(),
                sender: "octocat".into(),
                market: "on-demand".into(),
                conclusion: "success".into(),
            },
            figures: UsageFigures {
                jobs: 1,
                succeeded: 1,
                job_seconds: 600,
                job_micro_usd: micro_usd,
                ..UsageFigures::default()
            },
        };
        assert!(self.ports.store.add_usage(&c).await.unwrap());
    }

    async fn audited(&self, action: &str) -> Vec<String> {
        let filter = AuditFilter {
            action: Some(action.into()),
            ..AuditFilter::default()
        };
        let page = PageRequest {
            limit: 100,
            cursor: None,
        };
        let events = self.ports.store.list_audit(&filter, &page).await.unwrap();
        events
            .items
            .into_iter()
            .map(|e| e.target.unwrap_or_default())
            .collect()
    }

    /// A signed queued delivery for `labels`; returns the job id.
    async fn deliver(&self, github_job_id: i64, labels: &[&str]) -> String {
        match deliver_queued(&self.ports, github_job_id, "acme/app", labels).await {
            pacer_shared::service::webhook::Outcome::Accepted { job_id } => job_id,
            other => panic!("not accepted: {other:?}"),
        }
    }

    async fn status(&self) -> serde_json::Value {
        serde_json::to_value(budgets::list(&self.ports).await.unwrap()).unwrap()
    }
}

fn budget<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no budget {name}: {list}"))
}

#[tokio::test]
async fn each_line_is_audited_once_a_month_and_a_spent_enforced_budget_holds_its_pool() {
    let w = world().await;
    let before = w.status().await;
    assert_eq!(before["month"], "2026-03");
    assert_eq!(
        budget(&before, "linux-cap")["status"],
        "ok",
        "nothing counted yet"
    );
    assert_eq!(budget(&before, "linux-cap")["found"], true);
    assert_eq!(
        budget(&before, "gone")["found"],
        false,
        "a budget for a project that does not exist is shown as such"
    );

    // $0.60 in pool linux: past linux-cap's warning line ($0.50), under acme-watch's ($1.60).
    w.spend("1", &w.linux, 600_000).await;
    reaper::reconcile(&w.ports).await.unwrap();
    assert_eq!(w.audited("budget.warning").await, ["linux-cap"]);
    let warned = w.status().await;
    let cap = budget(&warned, "linux-cap");
    assert_eq!(
        (cap["status"].clone(), cap["spent_micro_usd"].clone()),
        (json!("warning"), json!(600_000))
    );
    assert_eq!(cap["warn_micro_usd"], 500_000);
    assert_eq!(budget(&warned, "acme-watch")["spent_micro_usd"], 600_000);
    assert_eq!(budget(&warned, "acme-watch")["status"], "ok");

    // Another pass: the same lines, no second entry.
    reaper::reconcile(&w.ports).await.unwrap();
    assert_eq!(w.audited("budget.warning").await.len(), 1);

    // $0.50 more: linux-cap is spent, and holds pool linux.
    w.spend("2", &w.linux, 500_000).await;
    reaper::reconcile(&w.ports).await.unwrap();
    assert_eq!(w.audited("budget.exceeded").await, ["linux-cap"]);
    let held = w.status().await;
    let cap = budget(&held, "linux-cap");
    assert_eq!(cap["status"], "held");
    assert_eq!(cap["spent_micro_usd"], 1_100_000);
    assert!(cap["warned_at"].is_string() && cap["exceeded_at"].is_string());

    let job = w.deliver(7001, &["self-hosted", "linux"]).await;
    assert_eq!(dispatch(&w.ports, &job).await.unwrap(), Dispatched::Held);
    let stored = w.ports.store.get_job(&job).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Queued, "a held job stays queued");
    let note = stored.transitions.last().unwrap().note.clone().unwrap();
    assert!(
        note.contains("held by budget linux-cap") && note.contains("$1.00"),
        "the timeline says why: {note}"
    );
    // Told once, however often it is looked at.
    assert_eq!(dispatch(&w.ports, &job).await.unwrap(), Dispatched::Held);
    let again = w.ports.store.get_job(&job).await.unwrap().unwrap();
    assert_eq!(again.transitions.len(), stored.transitions.len());

    // Pool arm is not held: acme-watch warns only.
    let arm_job = w.deliver(7002, &["self-hosted", "arm64"]).await;
    assert!(matches!(
        dispatch(&w.ports, &arm_job).await.unwrap(),
        Dispatched::Launched { .. }
    ));

    // Past reaper.redrive_after, the held job is not redriven.
    w.clock.advance(Duration::from_secs(600));
    let report = reaper::reconcile(&w.ports).await.unwrap();
    assert!(
        !report.actions.iter().any(|a| a.target == job),
        "a held job waits for its budget: {report:?}"
    );
    assert_eq!(w.audited("budget.exceeded").await.len(), 1);

    // $1.00 in pool arm: project acme passes $2, which warns and audits, and holds nothing.
    w.spend("3", &w.arm, 1_000_000).await;
    reaper::reconcile(&w.ports).await.unwrap();
    let watch = budget(&w.status().await, "acme-watch").clone();
    assert_eq!(
        (watch["status"].clone(), watch["spent_micro_usd"].clone()),
        (json!("exceeded"), json!(2_100_000))
    );
    let mut exceeded = w.audited("budget.exceeded").await;
    exceeded.sort();
    assert_eq!(exceeded, ["acme-watch", "linux-cap"]);
    let arm_job = w.deliver(7003, &["self-hosted", "arm64"]).await;
    assert!(matches!(
        dispatch(&w.ports, &arm_job).await.unwrap(),
        Dispatched::Launched { .. }
    ));

    // April: a new month's budgets start at nothing; the held job is handed back and launches.
    w.clock.advance(Duration::from_secs(2 * 86_400));
    let report = reaper::reconcile(&w.ports).await.unwrap();
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.action == "reaper.redrive" && a.target == job),
        "{report:?}"
    );
    let april = w.status().await;
    assert_eq!(april["month"], "2026-04");
    assert_eq!(budget(&april, "linux-cap")["status"], "ok");
    assert_eq!(budget(&april, "linux-cap")["spent_micro_usd"], 0);
    assert!(matches!(
        dispatch(&w.ports, &job).await.unwrap(),
        Dispatched::Launched { .. }
    ));
}

#[tokio::test]
async fn a_raised_budget_lets_its_pool_launch_at_once() {
    let w = world().await;
    w.spend("1", &w.linux, 1_500_000).await;
    reaper::reconcile(&w.ports).await.unwrap();
    let job = w.deliver(7101, &["self-hosted", "linux"]).await;
    assert_eq!(dispatch(&w.ports, &job).await.unwrap(), Dispatched::Held);

    // The operator raises linux-cap to $5 and restarts pacer.
    let raised = with_budgets(&w.ports, budgets(5));
    let list = serde_json::to_value(budgets::list(&raised).await.unwrap()).unwrap();
    assert_eq!(
        budget(&list, "linux-cap")["status"],
        "ok",
        "$1.50 of $5 is under half"
    );
    assert!(matches!(
        dispatch(&raised, &job).await.unwrap(),
        Dispatched::Launched { .. }
    ));
}

#[tokio::test]
async fn without_budgets_nothing_is_counted_or_held() {
    let w = world().await;
    let none = with_budgets(&w.ports, Vec::new());
    w.spend("1", &w.linux, 50_000_000).await;
    reaper::reconcile(&none).await.unwrap();
    assert!(w.audited("budget.exceeded").await.is_empty());
    assert_eq!(
        serde_json::to_value(budgets::list(&none).await.unwrap()).unwrap()["budgets"],
        json!([])
    );
    let job = w.deliver(7201, &["self-hosted", "linux"]).await;
    assert!(matches!(
        dispatch(&none, &job).await.unwrap(),
        Dispatched::Launched { .. }
    ));
}
