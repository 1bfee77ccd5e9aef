//! Runners, and the pool capacity they hold.

use super::*;

#[async_trait]
impl RunnerStore for DynamoStore {
    // --- capacity ---

    #[instrument(level = "debug", skip_all, fields(table = %self.table, pool_id = %pool_id))]
    async fn reserve_capacity(&self, pool_id: &str) -> StoreResult<bool> {
        let cond =
            Cond::exists_and(|e| format!("{} < {}", e.name(ACTIVE_RUNNERS), e.name(MAX_RUNNERS)));
        self.add_if(
            POOL.key(pool_id),
            ACTIVE_RUNNERS,
            1,
            cond,
            "reserve_capacity",
        )
        .await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, pool_id = %pool_id))]
    async fn release_capacity(&self, pool_id: &str) -> StoreResult<bool> {
        let cond = Cond::exists_and(|e| format!("{} > {}", e.name(ACTIVE_RUNNERS), e.value(n(0))));
        self.add_if(
            POOL.key(pool_id),
            ACTIVE_RUNNERS,
            -1,
            cond,
            "release_capacity",
        )
        .await
    }

    async fn set_capacity(&self, pool_id: &str, expected: u32, actual: u32) -> StoreResult<bool> {
        let cond = Cond::exists_and(|e| {
            format!(
                "{} = {}",
                e.name(ACTIVE_RUNNERS),
                e.value(n(i64::from(expected)))
            )
        });
        self.add_if(
            POOL.key(pool_id),
            ACTIVE_RUNNERS,
            i64::from(actual) - i64::from(expected),
            cond,
            "set_capacity",
        )
        .await
    }

    // --- runners ---

    #[instrument(level = "debug", skip_all, fields(table = %self.table, runner_id = %runner.id, pool_id = %runner.pool_id))]
    async fn insert_runner(&self, runner: &Runner) -> StoreResult<()> {
        if self
            .put_if(runner_item(runner)?.item, Cond::absent(), "insert_runner")
            .await?
        {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "runner {} exists already",
                runner.id
            )))
        }
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, runner_id = %id))]
    async fn get_runner(&self, id: &str) -> StoreResult<Option<Runner>> {
        self.get(&RUNNER, id, "get_runner").await
    }

    /// The sparse index gives the runner's key; the runner itself is then
    /// read consistently, so its state is never an index's stale copy.
    #[instrument(level = "debug", skip_all, fields(table = %self.table, instance_id = %instance_id))]
    async fn runner_by_instance(&self, instance_id: &str) -> StoreResult<Option<Runner>> {
        self.runner_by_sparse_key(
            INSTANCE_INDEX,
            INSTANCE_ID,
            instance_id,
            "runner_by_instance",
        )
        .await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, name = %name))]
    async fn runner_by_name(&self, name: &str) -> StoreResult<Option<Runner>> {
        self.runner_by_sparse_key(RUNNER_NAME_INDEX, RUNNER_REG_NAME, name, "runner_by_name")
            .await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn list_runners(
        &self,
        filter: &RunnerFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Runner>> {
        let mut listing = if filter.states.is_empty() {
            Listing::new("list_runners", GSI1, RUNNER.collection, true)
        } else {
            // One partition per state, merged newest first.
            let mut partitions: Vec<String> = filter
                .states
                .iter()
                .map(|s| format!("RUNNERSTATE#{s}"))
                .collect();
            partitions.sort();
            partitions.dedup();
            let mut l = Listing::new("list_runners", GSI2, "", true);
            l.partitions = partitions;
            l
        };
        listing.filter = Cond::all_equal(
            filter
                .pool_id
                .iter()
                .map(|p| ("runner_pool_id", s(p)))
                .collect(),
        );
        self.list_as(listing, page).await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, runner_id = %runner.id, from = %from, to = %runner.state))]
    async fn transition_runner(&self, from: RunnerState, runner: &Runner) -> StoreResult<()> {
        let cond = Cond::in_state_before(from.as_str(), runner.version);
        if self
            .put_if(runner_item(runner)?.item, cond, "transition_runner")
            .await?
        {
            Ok(())
        } else {
            Err(StoreError::Stale)
        }
    }
}
