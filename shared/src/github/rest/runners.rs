//! Self-hosted runners: JIT registration, listing, lookup and deletion.

use super::*;

impl RestGitHub {
    pub(super) fn target_segments(target: &RunnerTarget) -> Vec<String> {
        match target {
            RunnerTarget::Repo(repo) => {
                vec!["repos".into(), repo.owner().into(), repo.name().into()]
            }
            RunnerTarget::Org(org) => vec!["orgs".into(), org.clone()],
        }
    }
}

impl RestGitHub {
    #[tracing::instrument(skip(self, req), fields(target = %target, runner_name = %req.name))]
    pub(super) async fn generate_jit_config(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
        req: &JitRequest,
    ) -> GitHubResult<JitConfig> {
        #[derive(Deserialize)]
        struct Wire {
            runner: WireRunnerRef,
            encoded_jit_config: String,
        }
        #[derive(Deserialize)]
        struct WireRunnerRef {
            id: i64,
            name: String,
        }
        let endpoint = match target {
            RunnerTarget::Repo(_) => &REPO_JITCONFIG,
            RunnerTarget::Org(_) => &ORG_JITCONFIG,
        };
        let mut segments = Self::target_segments(target);
        segments.extend(["actions", "runners", "generate-jitconfig"].map(String::from));
        let body = serde_json::to_value(req).context("serialising the JIT request")?;
        let call = Call::new(endpoint, Method::POST, segments)
            .auth(Auth::Installation(installation_id))
            .body(body);
        let wire: Wire = self.call(&call).await?.json(&call)?;
        tracing::info!(runner_id = wire.runner.id, "JIT runner registered");
        Ok(JitConfig {
            runner_id: wire.runner.id,
            runner_name: wire.runner.name,
            encoded_jit_config: wire.encoded_jit_config,
        })
    }

    #[tracing::instrument(skip(self), fields(target = %target))]
    pub(super) async fn delete_runner(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
        runner_id: i64,
    ) -> GitHubResult<()> {
        let endpoint = match target {
            RunnerTarget::Repo(_) => &REPO_RUNNER_DELETE,
            RunnerTarget::Org(_) => &ORG_RUNNER_DELETE,
        };
        let mut segments = Self::target_segments(target);
        segments.extend(["actions".into(), "runners".into(), runner_id.to_string()]);
        let call = Call::new(endpoint, Method::DELETE, segments)
            .auth(Auth::Installation(installation_id))
            .not_found_ok();
        let reply = self.call(&call).await?;
        if reply.status == StatusCode::NOT_FOUND {
            tracing::debug!("runner already gone");
        }
        Ok(())
    }

    #[tracing::instrument(skip(self), fields(target = %target))]
    pub(super) async fn list_runners(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
    ) -> GitHubResult<Vec<GhRunner>> {
        #[derive(Deserialize)]
        struct Wire {
            total_count: usize,
            runners: Vec<WireRunner>,
        }
        let endpoint = match target {
            RunnerTarget::Repo(_) => &REPO_RUNNERS,
            RunnerTarget::Org(_) => &ORG_RUNNERS,
        };
        let mut segments = Self::target_segments(target);
        segments.extend(["actions", "runners"].map(String::from));
        let mut runners = Vec::new();
        for page in 1..=MAX_PAGES {
            let call = Call::new(endpoint, Method::GET, segments.clone())
                .auth(Auth::Installation(installation_id))
                .query("per_page", PER_PAGE.to_string())
                .query("page", page.to_string());
            let reply = self.call(&call).await?;
            let wire: Wire = reply.json(&call)?;
            let on_page = wire.runners.len();
            runners.extend(wire.runners.into_iter().map(GhRunner::from));
            if !more_pages(
                &reply.headers,
                on_page,
                PER_PAGE,
                runners.len(),
                wire.total_count,
            ) {
                return Ok(runners);
            }
        }
        tracing::warn!(
            pages = MAX_PAGES,
            listed = runners.len(),
            "runner list truncated at the page limit"
        );
        Ok(runners)
    }

    #[tracing::instrument(skip(self), fields(target = %target))]
    pub(super) async fn get_runner(
        &self,
        installation_id: i64,
        target: &RunnerTarget,
        runner_id: i64,
    ) -> GitHubResult<Option<GhRunner>> {
        let endpoint = match target {
            RunnerTarget::Repo(_) => &REPO_RUNNER,
            RunnerTarget::Org(_) => &ORG_RUNNER,
        };
        let mut segments = Self::target_segments(target);
        segments.extend(["actions".into(), "runners".into(), runner_id.to_string()]);
        let call = Call::new(endpoint, Method::GET, segments)
            .auth(Auth::Installation(installation_id))
            .not_found_ok();
        let reply = self.call(&call).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(reply.json::<WireRunner>(&call)?.into()))
    }
}

/// A runner as the REST API returns it: labels are objects there.
#[derive(Deserialize)]
pub(super) struct WireRunner {
    pub(super) id: i64,
    pub(super) name: String,
    pub(super) status: String,
    pub(super) busy: bool,
    #[serde(default)]
    pub(super) labels: Vec<WireLabel>,
}

#[derive(Deserialize)]
pub(super) struct WireLabel {
    pub(super) name: String,
}

impl From<WireRunner> for GhRunner {
    fn from(w: WireRunner) -> Self {
        GhRunner {
            id: w.id,
            name: w.name,
            status: w.status,
            busy: w.busy,
            labels: w.labels.into_iter().map(|l| l.name).collect(),
        }
    }
}
