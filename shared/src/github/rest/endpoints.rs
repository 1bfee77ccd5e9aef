//! What pacer knows about each API operation it uses.

/// What pacer knows about one API operation: its route (for logs) and what it needs.
#[derive(Debug)]
pub(super) struct Endpoint {
    /// Method and path template, as in GitHub's REST reference.
    pub(super) route: &'static str,
    /// The App permission the operation needs, named when GitHub says it is missing.
    pub(super) permission: Option<&'static str>,
    /// What a 404 most likely means here.
    pub(super) not_found_hint: Option<&'static str>,
}

pub(super) const ACCESS_TOKEN: Endpoint = Endpoint {
    route: "POST /app/installations/{installation_id}/access_tokens",
    permission: None,
    not_found_hint: Some("the installation does not exist; was the App uninstalled?"),
};
pub(super) const REPO_INSTALLATION: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/installation",
    permission: None,
    not_found_hint: Some("the GitHub App is not installed on this repository"),
};
pub(super) const ORG_INSTALLATION: Endpoint = Endpoint {
    route: "GET /orgs/{org}/installation",
    permission: None,
    not_found_hint: Some("the GitHub App is not installed on this organization"),
};
pub(super) const REPO_JITCONFIG: Endpoint = Endpoint {
    route: "POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig",
    permission: Some("administration: write (repository)"),
    not_found_hint: Some("is the App installed on this repository?"),
};
pub(super) const ORG_JITCONFIG: Endpoint = Endpoint {
    route: "POST /orgs/{org}/actions/runners/generate-jitconfig",
    permission: Some("organization_self_hosted_runners: write (organization)"),
    not_found_hint: Some(
        "is the App installed on the organization itself, not only on some of its repositories?",
    ),
};
pub(super) const REPO_RUNNERS: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/actions/runners",
    permission: Some("administration: read (repository)"),
    not_found_hint: None,
};
pub(super) const ORG_RUNNERS: Endpoint = Endpoint {
    route: "GET /orgs/{org}/actions/runners",
    permission: Some("organization_self_hosted_runners: read (organization)"),
    not_found_hint: None,
};
pub(super) const REPO_RUNNER: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/actions/runners/{runner_id}",
    permission: Some("administration: read (repository)"),
    not_found_hint: None,
};
pub(super) const ORG_RUNNER: Endpoint = Endpoint {
    route: "GET /orgs/{org}/actions/runners/{runner_id}",
    permission: Some("organization_self_hosted_runners: read (organization)"),
    not_found_hint: None,
};
pub(super) const REPO_RUNNER_DELETE: Endpoint = Endpoint {
    route: "DELETE /repos/{owner}/{repo}/actions/runners/{runner_id}",
    permission: Some("administration: write (repository)"),
    not_found_hint: None,
};
pub(super) const ORG_RUNNER_DELETE: Endpoint = Endpoint {
    route: "DELETE /orgs/{org}/actions/runners/{runner_id}",
    permission: Some("organization_self_hosted_runners: write (organization)"),
    not_found_hint: None,
};
pub(super) const JOB: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/actions/jobs/{job_id}",
    permission: Some("actions: read (repository)"),
    not_found_hint: None,
};
pub(super) const REPO_RUNS: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/actions/runs",
    permission: Some("actions: read (repository)"),
    not_found_hint: Some("is the App installed on this repository?"),
};
pub(super) const RUN_JOBS: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
    permission: Some("actions: read (repository)"),
    not_found_hint: None,
};
pub(super) const HOOK_DELIVERIES: Endpoint = Endpoint {
    route: "GET /app/hook/deliveries",
    permission: None,
    not_found_hint: Some("does the GitHub App have a webhook?"),
};
pub(super) const REDELIVER: Endpoint = Endpoint {
    route: "POST /app/hook/deliveries/{delivery_id}/attempts",
    permission: None,
    not_found_hint: Some("GitHub keeps webhook deliveries for three days; this one may be gone"),
};
pub(super) const LATEST_RELEASE: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/releases/latest",
    permission: None,
    not_found_hint: Some(
        "actions/runner releases are looked up at github.api_url; if that host has none, pin runner.version and set runner.sha256",
    ),
};
pub(super) const RELEASE_BY_TAG: Endpoint = Endpoint {
    route: "GET /repos/{owner}/{repo}/releases/tags/{tag}",
    permission: None,
    not_found_hint: Some(
        "actions/runner releases are looked up at github.api_url; if that host has none, set runner.sha256",
    ),
};
