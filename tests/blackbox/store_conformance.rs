//! The store conformance suite (`pacer_shared::store::conformance`) against
//! every adapter: each case a test of its own, per adapter.

use std::sync::Arc;

use pacer_shared::store::conformance;
use pacer_shared::store::sqlite::SqliteStore;
use pacer_shared::store::{ConfigStore as _, Store};

/// Expands to one test per conformance case for an adapter. The list must
/// name every case: `every_case_is_run` checks it against `CASES`.
#[macro_export]
macro_rules! store_conformance {
    ($adapter:ident, $make:expr) => {
        $crate::store_conformance!(@cases $adapter, $make, [
            projects_crud,
            project_names_are_unique_ignoring_case,
            project_with_pools_or_bindings_cannot_be_deleted,
            pools_need_an_existing_project,
            pool_names_are_unique_within_a_project,
            updating_a_pool_keeps_its_reserved_capacity,
            pool_holding_capacity_cannot_be_deleted,
            bindings_are_unique_per_repo_and_found_by_repo_key,
            capacity_never_exceeds_max_with_50_concurrent_reservers,
            capacity_is_repaired_only_from_the_value_read,
            runners_are_found_by_instance_and_transition_conditionally,
            inserting_a_job_twice_keeps_the_first,
            job_transitions_are_conditional,
            a_job_write_from_an_older_copy_in_the_same_state_is_refused,
            a_launch_claims_its_job_capacity_and_runner_at_once_or_not_at_all,
            jobs_page_newest_first_without_gaps_or_repeats,
            jobs_filter_by_state_repo_pool_and_time,
            users_are_unique_by_email,
            counters_count_every_hit_once_per_window,
            revoked_sessions_stay_revoked,
            audit_events_append_and_filter,
            a_token_is_used_once_even_by_ten_concurrent_requests,
            an_owner_never_holds_more_live_runners_than_its_limit,
            self_runners_are_unique_by_name_and_updated_conditionally,
            a_deleted_runners_name_is_free_again,
            self_runners_list_newest_first_by_owner_and_status,
            label_policies_are_kept_per_identity,
            security_events_append_and_filter,
            a_sweep_keeps_what_has_not_expired,
            a_contribution_counts_once_even_added_by_ten_at_once,
            usage_adds_up_per_hour_and_day_and_reads_by_window,
            a_histogram_keeps_every_bucket_through_the_store,
            a_budget_line_is_marked_once_a_month_and_spend_is_kept_beside_it,
            a_bad_cursor_is_refused,
            lookups_by_an_oversized_value_find_nothing,
        ]);
    };
    (@cases $adapter:ident, $make:expr, [$($case:ident),* $(,)?]) => {
        mod $adapter {
            #[allow(unused_imports)]
            use super::*;

            pub const NAMES: &[&str] = &[$(stringify!($case)),*];

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, _guard) = $make.await;
                    pacer_shared::store::conformance::$case(store).await;
                }
            )*
        }
    };
}

/// A fresh SQLite store in its own temporary directory (WAL needs a file).
async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("nested/pacer.db")).expect("open sqlite");
    (Arc::new(store), dir)
}

store_conformance!(sqlite_store, sqlite());

#[test]
fn every_case_is_run() {
    let listed: Vec<&str> = conformance::CASES.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        sqlite_store::NAMES,
        listed.as_slice(),
        "the macro's list must match conformance::CASES"
    );
}

#[tokio::test]
async fn sqlite_data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pacer.db");
    let project = conformance::project("acme", conformance::t0());
    {
        let store = SqliteStore::open(&path).unwrap();
        store.create_project(&project).await.unwrap();
    }
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(
        reopened.get_project(&project.id).await.unwrap(),
        Some(project)
    );
}
