//! Jobs and workflow runs: one job, and the queued jobs of a repository's runs.

use super::*;

impl RestGitHub {
    #[tracing::instrument(skip(self), fields(repo = %repo))]
    pub(super) async fn get_job(
        &self,
        installation_id: i64,
        repo: &RepoName,
        job_id: i64,
    ) -> GitHubResult<Option<GhJob>> {
        let job = job_id.to_string();
        let call = Call::new(
            &JOB,
            Method::GET,
            ["repos", repo.owner(), repo.name(), "actions", "jobs", &job],
        )
        .auth(Auth::Installation(installation_id))
        .not_found_ok();
        let reply = self.call(&call).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        reply.json(&call).map(Some)
    }

    #[tracing::instrument(skip(self), fields(repo = %repo))]
    pub(super) async fn queued_jobs(
        &self,
        installation_id: i64,
        repo: &RepoName,
        max_runs: usize,
    ) -> GitHubResult<Vec<GhQueuedJob>> {
        // One page size for every page of a listing: page N is an offset of (N - 1) pages.
        let per_page = max_runs.min(PER_PAGE);
        let mut seen = HashSet::new();
        let mut runs = Vec::new();
        let mut calls = 0;
        for status in RUN_STATUSES_WITH_QUEUED_JOBS {
            let budget = max_runs - runs.len();
            if budget == 0 {
                break;
            }
            let (found, made) = self
                .runs_with_status(installation_id, repo, status, budget, per_page, &mut seen)
                .await?;
            runs.extend(found);
            calls += made;
        }
        let run_count = runs.len();
        let per_run: Vec<(Vec<GhQueuedJob>, u32)> = futures::stream::iter(runs)
            .map(|run| self.queued_jobs_of_run(installation_id, repo, run))
            .buffered(RUN_JOBS_CONCURRENCY)
            .try_collect()
            .await?;
        let mut jobs_seen = HashSet::new();
        let mut queued = Vec::new();
        for (jobs, made) in per_run {
            calls += made;
            queued.extend(jobs.into_iter().filter(|job| jobs_seen.insert(job.id)));
        }
        tracing::debug!(
            runs = run_count,
            queued = queued.len(),
            calls,
            "listed the queued jobs of the repository's runs"
        );
        Ok(queued)
    }
}

impl RestGitHub {
    /// Up to `budget` runs of `repo` with `status`, newest first, skipping those in `seen`
    /// (a run can change status between two listings). Answers the runs and the calls made.
    pub(super) async fn runs_with_status(
        &self,
        installation_id: i64,
        repo: &RepoName,
        status: &'static str,
        budget: usize,
        per_page: usize,
        seen: &mut HashSet<i64>,
    ) -> GitHubResult<(Vec<WireRun>, u32)> {
        let mut runs = Vec::new();
        let mut listed = 0;
        for page in 1..=MAX_PAGES {
            let call = Call::new(
                &REPO_RUNS,
                Method::GET,
                ["repos", repo.owner(), repo.name(), "actions", "runs"],
            )
            .auth(Auth::Installation(installation_id))
            .query("status", status.to_owned())
            .query("per_page", per_page.to_string())
            .query("page", page.to_string());
            let reply = self.call(&call).await?;
            let wire: WireRuns = reply.json(&call)?;
            let on_page = wire.workflow_runs.len();
            listed += on_page;
            for run in wire.workflow_runs {
                if runs.len() == budget {
                    return Ok((runs, page));
                }
                if seen.insert(run.id) {
                    runs.push(run);
                }
            }
            if runs.len() == budget
                || !more_pages(&reply.headers, on_page, per_page, listed, wire.total_count)
            {
                return Ok((runs, page));
            }
        }
        tracing::warn!(
            status,
            pages = MAX_PAGES,
            "workflow run list truncated at the page limit"
        );
        Ok((runs, MAX_PAGES))
    }

    /// The queued jobs of one run's latest attempt, and the calls made. A run GitHub no longer
    /// has (deleted since it was listed) has none.
    pub(super) async fn queued_jobs_of_run(
        &self,
        installation_id: i64,
        repo: &RepoName,
        run: WireRun,
    ) -> GitHubResult<(Vec<GhQueuedJob>, u32)> {
        let run_id = run.id.to_string();
        let mut queued = Vec::new();
        let mut listed = 0;
        for page in 1..=MAX_PAGES {
            let call = Call::new(
                &RUN_JOBS,
                Method::GET,
                [
                    "repos",
                    repo.owner(),
                    repo.name(),
                    "actions",
                    "runs",
                    &run_id,
                    "jobs",
                ],
            )
            .auth(Auth::Installation(installation_id))
            .query("filter", "latest".to_owned())
            .query("per_page", PER_PAGE.to_string())
            .query("page", page.to_string())
            .not_found_ok();
            let reply = self.call(&call).await?;
            if reply.status == StatusCode::NOT_FOUND {
                tracing::debug!(
                    run_id = run.id,
                    "workflow run gone before its jobs were listed"
                );
                return Ok((queued, page));
            }
            let wire: WireJobs = reply.json(&call)?;
            let on_page = wire.jobs.len();
            listed += on_page;
            queued.extend(
                wire.jobs
                    .into_iter()
                    .filter(|job| job.status == "queued")
                    .map(|job| job.into_queued(&run, self.clock.now())),
            );
            if !more_pages(&reply.headers, on_page, PER_PAGE, listed, wire.total_count) {
                return Ok((queued, page));
            }
        }
        tracing::warn!(
            run_id = run.id,
            pages = MAX_PAGES,
            "job list truncated at the page limit"
        );
        Ok((queued, MAX_PAGES))
    }
}

#[derive(Deserialize)]
pub(super) struct WireLogin {
    pub(super) login: String,
}

#[derive(Deserialize)]
pub(super) struct WireRuns {
    pub(super) total_count: usize,
    pub(super) workflow_runs: Vec<WireRun>,
}

/// A workflow run: what its jobs do not say themselves.
#[derive(Deserialize)]
pub(super) struct WireRun {
    pub(super) id: i64,
    /// The workflow's name.
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) run_attempt: Option<i64>,
    #[serde(default)]
    pub(super) head_branch: Option<String>,
    #[serde(default)]
    pub(super) created_at: Option<Time>,
    #[serde(default)]
    pub(super) actor: Option<WireLogin>,
    #[serde(default)]
    pub(super) triggering_actor: Option<WireLogin>,
    /// The repository the run belongs to (not its head's, which a fork's pull request names).
    #[serde(default)]
    pub(super) repository: Option<WireRunRepository>,
}

#[derive(Deserialize)]
pub(super) struct WireRunRepository {
    #[serde(default)]
    pub(super) private: Option<bool>,
    #[serde(default)]
    pub(super) visibility: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireJobs {
    pub(super) total_count: usize,
    pub(super) jobs: Vec<WireJob>,
}

#[derive(Deserialize)]
pub(super) struct WireJob {
    pub(super) id: i64,
    pub(super) run_id: i64,
    #[serde(default)]
    pub(super) run_attempt: Option<i64>,
    pub(super) status: String,
    #[serde(default)]
    pub(super) labels: Option<Vec<String>>,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) workflow_name: Option<String>,
    #[serde(default)]
    pub(super) head_branch: Option<String>,
    #[serde(default)]
    pub(super) html_url: Option<String>,
    #[serde(default)]
    pub(super) created_at: Option<Time>,
}

impl WireJob {
    /// The job as the port reports it, completed from its run where the job is silent.
    pub(super) fn into_queued(self, run: &WireRun, now: Time) -> GhQueuedJob {
        GhQueuedJob {
            id: self.id,
            run_id: self.run_id,
            run_attempt: self.run_attempt.or(run.run_attempt).unwrap_or(1),
            labels: self.labels.unwrap_or_default(),
            name: self.name.unwrap_or_default(),
            workflow_name: self.workflow_name.or_else(|| run.name.clone()),
            head_branch: self.head_branch.or_else(|| run.head_branch.clone()),
            html_url: self.html_url,
            created_at: self.created_at.or(run.created_at).unwrap_or(now),
            sender: run
                .triggering_actor
                .as_ref()
                .or(run.actor.as_ref())
                .map(|a| a.login.clone()),
            visibility: run.repository.as_ref().map_or(Visibility::Public, |r| {
                Visibility::from_github(r.private, r.visibility.as_deref())
            }),
        }
    }
}
