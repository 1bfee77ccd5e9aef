//! Runners: one machine with one ephemeral JIT registration.

use serde::{Deserialize, Serialize};

use super::Time;
use super::cost::{Lifetime, MicroUsd, Price, RunnerCost};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum RunnerState {
    /// Launched; has not traded its callback token for a JIT config yet.
    Pending,
    /// Holds its JIT config; GitHub may hand it a job.
    Registered,
    Busy,
    Done,
    Failed,
    /// Terminated by the reaper (boot deadline, idle, lifetime, orphan).
    Reaped,
}

impl RunnerState {
    pub const ALL: [RunnerState; 6] = [
        RunnerState::Pending,
        RunnerState::Registered,
        RunnerState::Busy,
        RunnerState::Done,
        RunnerState::Failed,
        RunnerState::Reaped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunnerState::Pending => "pending",
            RunnerState::Registered => "registered",
            RunnerState::Busy => "busy",
            RunnerState::Done => "done",
            RunnerState::Failed => "failed",
            RunnerState::Reaped => "reaped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A live runner holds capacity in its pool.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            RunnerState::Pending | RunnerState::Registered | RunnerState::Busy
        )
    }

    /// Runners only move forward; the three end states are final.
    pub fn can_move_to(self, to: RunnerState) -> bool {
        use RunnerState::*;
        match (self, to) {
            (a, b) if a == b => false,
            (Pending, _) => true,
            (Registered, Busy | Done | Failed | Reaped) => true,
            (Busy, Done | Failed | Reaped) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for RunnerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Runner {
    pub id: String,
    pub pool_id: String,
    pub project_id: String,
    /// The job it was launched for (GitHub may give it another; see the job's `runner_id`).
    pub job_id: Option<String>,
    /// The repository and App installation of the job it was launched
    /// for, recorded at launch so that registering need not read the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<i64>,
    pub name: String,
    pub state: RunnerState,
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub market: Option<String>,
    /// The instance's hourly price, quoted at launch.
    #[serde(default)]
    pub price: Option<Price>,
    /// Its root volume's hourly price, set with the instance's.
    #[serde(default)]
    pub volume_micro_usd_per_hour: MicroUsd,
    pub github_runner_id: Option<i64>,
    pub callback_token_id: Option<String>,
    pub error_tail: Option<String>,
    /// When GitHub said the job this runner ran had ended; a runner still
    /// live long after is stuck (its `/complete` never came).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_ended_at: Option<Time>,
    /// When it traded its callback token for its JIT configuration.
    #[serde(default)]
    pub registered_at: Option<Time>,
    /// When its instance was launched (after its pool's capacity was
    /// reserved); `None` for a launch that did not happen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched_at: Option<Time>,
    /// The job GitHub gave it (`in_progress` named it), and when it started.
    #[serde(default)]
    pub ran_job_id: Option<String>,
    #[serde(default)]
    pub job_started_at: Option<Time>,
    /// Written when it ends: what its life cost, split by what it went to.
    #[serde(default)]
    pub cost: Option<RunnerCost>,
    pub created_at: Time,
    pub updated_at: Time,
    /// Bumped by every write; each write is conditional on the version it
    /// read, so concurrent writers (orchestrator, callbacks, webhooks,
    /// reaper) never erase each other's fields.
    #[serde(default)]
    pub version: u64,
}

impl Runner {
    /// A runner about to be launched in a pool of a project: pending, its
    /// instance not known yet.
    pub fn pending(
        id: String,
        name: String,
        (pool_id, project_id): (&str, &str),
        job_id: Option<String>,
        now: Time,
    ) -> Runner {
        Runner {
            id,
            pool_id: pool_id.to_owned(),
            project_id: project_id.to_owned(),
            job_id,
            name,
            state: RunnerState::Pending,
            instance_id: None,
            instance_type: None,
            availability_zone: None,
            market: None,
            price: None,
            volume_micro_usd_per_hour: 0,
            github_runner_id: None,
            callback_token_id: None,
            repo: None,
            installation_id: None,
            error_tail: None,
            job_ended_at: None,
            registered_at: None,
            launched_at: None,
            ran_job_id: None,
            job_started_at: None,
            cost: None,
            created_at: now,
            updated_at: now,
            version: 0,
        }
    }
}

impl Runner {
    /// Its life for costing, ending at `ended`: from its launch, with the
    /// job it ran if GitHub said it ran one.
    pub fn lifetime(&self, ended: Time) -> Lifetime {
        Lifetime {
            launched: self.created_at,
            ended,
            job: self
                .job_started_at
                .map(|started| (started, self.job_ended_at)),
        }
    }

    /// What its life cost, had it ended at `ended`.
    pub fn cost_until(&self, ended: Time) -> RunnerCost {
        RunnerCost::of(
            self.lifetime(ended),
            self.price,
            self.volume_micro_usd_per_hour,
        )
    }
}

/// The name a runner registers under on GitHub: `<deployment>-<ULID>`, the
/// deployment (so each install knows its own) and the ULID of the runner's
/// id (so it is unique).
pub fn runner_name(deployment: &str, runner_id: &str) -> String {
    let unique = runner_id.split_once('_').map_or(runner_id, |(_, u)| u);
    format!("{deployment}-{unique}")
}

/// Whether `name` is a runner name this deployment gives out: exactly
/// `<deployment>-` and a ULID, nothing between. Deployment names may hold
/// `-`, so a prefix test would make deployment `pacer` claim
/// `pacer-staging-01J…` — and record that install's jobs and deregister its
/// runners as ghosts. A ULID holds no `-`, so the split is exact.
pub fn is_runner_name_of(deployment: &str, name: &str) -> bool {
    name.strip_prefix(deployment)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|unique| {
            unique.len() == ulid::ULID_LEN && ulid::Ulid::from_string(unique).is_ok()
        })
}

/// The most runners whose instances' lifetimes overlapped, for runners
/// that have all finished. An instance is launched after its pool's
/// capacity is reserved and its runner leaves its live state before that
/// capacity is released, so its `launched_at..updated_at` lies inside the
/// time it held capacity: this never overstates how many runners a pool
/// held at once. Runners whose launch did not happen are left out.
pub fn peak_overlap<'a>(runners: impl IntoIterator<Item = &'a Runner>) -> usize {
    let mut edges: Vec<(Time, i64)> = runners
        .into_iter()
        .filter_map(|r| Some([(r.launched_at?, 1), (r.updated_at, -1)]))
        .flatten()
        .collect();
    // At the same instant an end sorts before a start.
    edges.sort();
    let (mut live, mut peak) = (0i64, 0i64);
    for (_, delta) in edges {
        live += delta;
        peak = peak.max(live);
    }
    peak as usize
}

#[cfg(test)]
mod tests {
    use super::RunnerState::*;

    #[test]
    fn the_peak_counts_only_lifetimes_that_overlap() {
        let at = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap();
        let runner = |from: i64, to: i64| super::Runner {
            state: Done,
            launched_at: Some(at(from)),
            updated_at: at(to),
            ..super::Runner::pending(
                format!("run_{from}_{to}"),
                "pacer-1".into(),
                ("pool_1", "prj_1"),
                None,
                at(from),
            )
        };
        // 0..10 overlaps 5..20; 10..30 starts as 0..10 ends; 20..30 follows 5..20.
        let runners = [runner(0, 10), runner(5, 20), runner(10, 30), runner(20, 30)];
        assert_eq!(super::peak_overlap(&runners), 2);
        assert_eq!(super::peak_overlap(&runners[..1]), 1);
        assert_eq!(super::peak_overlap(&[]), 0);
        let never_launched = super::Runner {
            launched_at: None,
            ..runner(0, 10)
        };
        assert_eq!(super::peak_overlap(&[never_launched, runner(5, 20)]), 1);
    }

    #[test]
    fn runners_move_forward_and_end_states_are_final() {
        assert!(Pending.can_move_to(Registered));
        assert!(Registered.can_move_to(Busy));
        assert!(Busy.can_move_to(Done));
        assert!(!Busy.can_move_to(Registered));
        for end in [Done, Failed, Reaped] {
            assert!(!end.is_live());
            for to in super::RunnerState::ALL {
                assert!(!end.can_move_to(to));
            }
        }
    }

    #[test]
    fn a_deployment_owns_exactly_its_own_runner_names() {
        let id = crate::domain::IdSource::new_id(
            &crate::domain::Ulids::default(),
            crate::domain::IdKind::Runner,
            chrono::Utc::now(),
        );
        let ours = super::runner_name("pacer", &id);
        let staging = super::runner_name("pacer-staging", &id);
        assert!(super::is_runner_name_of("pacer", &ours));
        assert!(
            !super::is_runner_name_of("pacer", &staging),
            "a longer deployment's runner is not ours"
        );
        assert!(super::is_runner_name_of("pacer-staging", &staging));
        assert!(!super::is_runner_name_of("pacer-staging", &ours));
        for other in [
            "pacer",
            "pacer-",
            "pacer-xyz",
            "pacer-01J000000000000000000000X",
            "pacer-01J00000000000000000000UUU",
            "paceR-staging",
            "ubuntu-latest",
            "pacer-staging-",
        ] {
            assert!(!super::is_runner_name_of("pacer", other), "{other}");
        }
    }

    proptest::proptest! {
        #[test]
        fn no_name_belongs_to_two_deployments(a in "[a-z][a-z0-9-]{0,31}", b in "[a-z][a-z0-9-]{0,31}", ms in 0u64..(1u64 << 47), rnd in proptest::prelude::any::<u128>()) {
            proptest::prop_assume!(a != b);
            let id = format!("run_{}", ulid::Ulid::from_parts(ms, rnd));
            let name = super::runner_name(&a, &id);
            proptest::prop_assert!(super::is_runner_name_of(&a, &name));
            proptest::prop_assert!(!super::is_runner_name_of(&b, &name));
        }
    }
}
