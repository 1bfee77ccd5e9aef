//! Jobs.

use super::*;

#[async_trait]
impl JobStore for DynamoStore {
    #[instrument(level = "debug", skip_all, fields(table = %self.table, job_id = %job.id, github_job_id = job.github_job_id))]
    async fn insert_job(&self, job: &Job) -> StoreResult<Inserted> {
        let github_id = job.github_job_id.to_string();
        let writes = vec![
            self.tx_put(job_item(job)?.item, Cond::absent())?,
            self.tx_put(GITHUB_JOB.item(&github_id, &job.id), Cond::absent())?,
        ];
        match self.transact(writes, "insert_job").await? {
            None => Ok(Inserted::Created),
            Some(c) if c.failed(1) => {
                // A redelivery: the guard names the job that came first.
                let owner = c
                    .old(1)
                    .and_then(|g| string_attr(g, OWNER))
                    .map(str::to_string);
                let existing = match owner {
                    Some(owner) => self.get::<Job>(&JOB, &owner, "insert_job").await?,
                    None => self.job_by_github_id(job.github_job_id).await?,
                };
                existing
                    .map(|j| Inserted::Existing(Box::new(j)))
                    .ok_or_else(|| {
                        StoreError::Backend(anyhow!(
                            "GitHub job {github_id} is taken by a job that does not exist"
                        ))
                    })
            }
            Some(_) => Err(StoreError::Conflict(format!(
                "job {} exists already",
                job.id
            ))),
        }
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, job_id = %id))]
    async fn get_job(&self, id: &str) -> StoreResult<Option<Job>> {
        self.get(&JOB, id, "get_job").await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, github_job_id = github_job_id))]
    async fn job_by_github_id(&self, github_job_id: i64) -> StoreResult<Option<Job>> {
        self.get_guarded(
            &GITHUB_JOB,
            &github_job_id.to_string(),
            &JOB,
            "job_by_github_id",
        )
        .await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table))]
    async fn list_jobs(&self, filter: &JobFilter, page: &PageRequest) -> StoreResult<Page<Job>> {
        if let Some(github_job_id) = filter.github_job_id {
            // At most one job: its guard finds it without a query. Such a
            // page never has a next cursor, so none can come back.
            if page.cursor.is_some() {
                return Err(StoreError::BadCursor);
            }
            let job = self
                .job_by_github_id(github_job_id)
                .await?
                .filter(|j| job_matches(filter, j));
            return Ok(Page {
                items: job.into_iter().collect(),
                next_cursor: None,
            });
        }
        let mut listing = match filter.state {
            Some(state) => Listing::new(
                "list_jobs",
                GSI2,
                format!("JOBSTATE#{state}"),
                !filter.oldest_first,
            ),
            None => Listing::new("list_jobs", GSI1, JOB.collection, !filter.oldest_first),
        };
        listing.lo = filter.from.as_ref().map(time_key);
        listing.hi = filter.to.as_ref().map(time_key);
        let mut tests = Vec::new();
        if let Some(p) = &filter.project_id {
            tests.push(("job_project_id", s(p)));
        }
        if let Some(p) = &filter.pool_id {
            tests.push(("job_pool_id", s(p)));
        }
        if let Some(r) = &filter.repo {
            tests.push(("job_repo_key", s(r.to_lowercase())));
        }
        listing.filter = Cond::all_equal(tests);
        self.list_as(listing, page).await
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, job_id = %job.id, from = %from, to = %job.state))]
    async fn transition_job(&self, from: JobState, job: &Job) -> StoreResult<()> {
        let cond = Cond::in_state_before(from.as_str(), job.version);
        if self
            .put_if(job_item(job)?.item, cond, "transition_job")
            .await?
        {
            Ok(())
        } else {
            Err(StoreError::Stale)
        }
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, job_id = %job.id, runner_id = %runner.id))]
    async fn claim_for_launch(
        &self,
        from: JobState,
        job: &Job,
        runner: &Runner,
    ) -> StoreResult<Claim> {
        let writes = vec![
            self.tx_put(
                job_item(job)?.item,
                Cond::in_state_before(from.as_str(), job.version),
            )?,
            self.tx_update(
                POOL.key(&runner.pool_id),
                Cond::exists_and(|e| {
                    format!("{} < {}", e.name(ACTIVE_RUNNERS), e.name(MAX_RUNNERS))
                }),
                |e| format!("ADD {} {}", e.name(ACTIVE_RUNNERS), e.value(n(1))),
            )?,
            self.tx_put(runner_item(runner)?.item, Cond::absent())?,
        ];
        Ok(match self.transact(writes, "claim_for_launch").await? {
            None => Claim::Claimed,
            Some(c) if c.failed(0) => Claim::Stale,
            Some(c) if c.failed(1) => Claim::PoolFull,
            Some(_) => {
                return Err(StoreError::Conflict(format!(
                    "runner {} exists already",
                    runner.id
                )));
            }
        })
    }

    #[instrument(level = "debug", skip_all, fields(table = %self.table, job_id = %job.id, runner_id = %runner.id))]
    async fn transition_job_and_runner(
        &self,
        job_from: JobState,
        job: &Job,
        runner_from: RunnerState,
        runner: &Runner,
    ) -> StoreResult<()> {
        let writes = vec![
            self.tx_put(
                job_item(job)?.item,
                Cond::in_state_before(job_from.as_str(), job.version),
            )?,
            self.tx_put(
                runner_item(runner)?.item,
                Cond::in_state_before(runner_from.as_str(), runner.version),
            )?,
        ];
        match self.transact(writes, "transition_job_and_runner").await? {
            None => Ok(()),
            Some(_) => Err(StoreError::Stale),
        }
    }
}

fn job_matches(filter: &JobFilter, job: &Job) -> bool {
    filter.state.is_none_or(|s| job.state == s)
        && filter
            .project_id
            .as_ref()
            .is_none_or(|p| job.project_id.as_ref() == Some(p))
        && filter
            .pool_id
            .as_ref()
            .is_none_or(|p| job.pool_id.as_ref() == Some(p))
        && filter
            .repo
            .as_ref()
            .is_none_or(|r| job.repo.eq_ignore_ascii_case(r))
        && filter.from.is_none_or(|from| job.created_at >= from)
        && filter.to.is_none_or(|to| job.created_at < to)
}
