//! The runner's side of the lifecycle — register, complete,
//! error — and the console's view of runners.
//!
//! A runner holds one callback token. `/register` trades it, once and before
//! the pool's boot deadline, for a JIT config minted on the spot (never
//! stored, never in user data). The same token then authenticates only
//! `/complete` and `/error`, until the pool's max lifetime. Capacity is
//! released exactly once: by whoever moves the runner out of a live state.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::audit::record;
use super::jobs::advance;
use super::runner_moves::{finish, update_runner};
use super::{Caller, Ports, ServiceError, ServiceResult};
use crate::auth::callback_token::{self, Claims, TokenError};
use crate::domain::job::JobChanges;
use crate::domain::labels::offered_labels;
use crate::domain::{JobState, Project, RepoName, Runner, RunnerState, Scope, TransitionCause};
use crate::github::{JitRequest, RunnerTarget};
use crate::store::{Page, PageRequest, RunnerFilter, StoreError};

/// How much of a bootstrap log pacer keeps.
pub const LOG_TAIL_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// Any reason to refuse a token; the reason is logged, the caller sees 401.
    #[error("the callback token is not valid: {0}")]
    Unauthorized(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for CallbackError {
    fn from(e: StoreError) -> Self {
        CallbackError::Service(e.into())
    }
}

impl From<TokenError> for CallbackError {
    fn from(e: TokenError) -> Self {
        CallbackError::Unauthorized(e.to_string())
    }
}

/// What the runner sends to `/register`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    pub os: Option<String>,
    pub arch: Option<String>,
}

/// What `/register` answers.
#[derive(Clone, Serialize)]
pub struct Registration {
    pub encoded_jit_config: String,
    pub runner_name: String,
    pub runner_version: String,
    pub download_url: String,
    /// The SHA-256 the download must match, lower-case hex; `null` only while GitHub is offline
    /// (`github.disabled`), and the bootstrap script then refuses to download.
    pub sha256: Option<String>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("runner_name", &self.runner_name)
            .finish_non_exhaustive()
    }
}

/// The audit entry of a registration GitHub's side refused.
async fn register_failed(
    ports: &Ports,
    runner: &Runner,
    detail: serde_json::Value,
) -> ServiceResult<()> {
    record(
        ports,
        &runner_caller(runner),
        "runner.register_failed",
        Some(&runner.id),
        detail,
    )
    .await
}

fn runner_caller(runner: &Runner) -> Caller {
    Caller::system(&format!("runner:{}", runner.name))
}

/// Checks a token and finds the runner it names.
async fn authenticate(ports: &Ports, token: &str) -> Result<(Claims, Runner), CallbackError> {
    let claims = callback_token::verify(
        ports.settings.callback_secret.expose().as_bytes(),
        token,
        ports.clock.now(),
    )?;
    let runner = ports
        .store
        .get_runner(&claims.runner_id)
        .await?
        .ok_or_else(|| CallbackError::Unauthorized("it names no runner".into()))?;
    if runner.callback_token_id.as_deref() != Some(claims.token_id.as_str()) {
        return Err(CallbackError::Unauthorized(
            "it was minted for an earlier launch".into(),
        ));
    }
    Ok((claims, runner))
}

/// Where the runner registers and with which installation.
pub(crate) async fn github_target(
    ports: &Ports,
    runner: &Runner,
) -> ServiceResult<(i64, RunnerTarget, i64)> {
    let project = ports
        .store
        .get_project(&runner.project_id)
        .await?
        .ok_or(ServiceError::NotFound("project"))?;
    github_target_of(ports, runner, &project).await
}

/// [`github_target`] of a runner of `project`, already read.
async fn github_target_of(
    ports: &Ports,
    runner: &Runner,
    project: &Project,
) -> ServiceResult<(i64, RunnerTarget, i64)> {
    // Recorded on the runner at launch; a runner launched before pacer
    // recorded them reads its job.
    let (repo, installation) = match (&runner.repo, &runner.job_id) {
        (Some(repo), _) => (Some(repo.clone()), runner.installation_id),
        (None, Some(id)) => match ports.store.get_job(id).await? {
            Some(job) => (Some(job.repo), job.installation_id),
            None => (None, None),
        },
        (None, None) => (None, None),
    };
    let repo = repo.and_then(|r| RepoName::parse(&r).ok()).ok_or_else(|| {
        ServiceError::Upstream("the runner has no job to tell which repository it serves".into())
    })?;
    let target = match (project.spec.scope, &project.spec.org) {
        (Scope::Org, Some(org)) => RunnerTarget::Org(org.clone()),
        _ => RunnerTarget::Repo(repo.clone()),
    };
    let installation_id = match installation {
        Some(id) => id,
        None => ports
            .github
            .repo_installation(&repo)
            .await
            .map_err(|source| ServiceError::GitHub {
                doing: "looking up the App's installation",
                source,
            })?,
    };
    Ok((installation_id, target, project.spec.runner_group_id))
}

pub async fn register(
    ports: &Ports,
    token: &str,
    body: RegisterBody,
) -> Result<Registration, CallbackError> {
    let (claims, runner) = authenticate(ports, token).await?;
    claims.check_register(ports.clock.now())?;
    if runner.state != RunnerState::Pending {
        return Err(CallbackError::Unauthorized(format!(
            "the runner is {} already: a token registers once",
            runner.state
        )));
    }
    let pool = ports
        .catalog
        .pool(ports, &runner.pool_id)
        .await?
        .ok_or(ServiceError::NotFound("pool"))?;
    let project = ports
        .catalog
        .project(ports, &runner.project_id)
        .await?
        .ok_or(ServiceError::NotFound("project"))?;
    let (installation_id, target, runner_group_id) =
        github_target_of(ports, &runner, &project).await?;
    let os = body
        .os
        .filter(|o| o == "linux" || o == "osx" || o == "win")
        .unwrap_or_else(|| "linux".into());
    let arch = body
        .arch
        .filter(|a| a == "x64" || a == "arm64" || a == "arm")
        .unwrap_or_else(|| "x64".into());
    // Before minting anything: a runner that cannot verify its download gets no registration.
    let download = match ports.github.runner_download(&os, &arch).await {
        Ok(download) => download,
        // The script retries a 502, so a GitHub outage costs a wait, not the attempt.
        Err(e) if e.is_transient() => {
            return Err(ServiceError::GitHub {
                doing: "cannot look up the actions/runner release",
                source: e,
            }
            .into());
        }
        // Fail closed: the script gives up on a 409 and reports it, and the job gets another attempt.
        Err(e) => {
            register_failed(ports, &runner, json!({"reason": e.to_string()})).await?;
            return Err(
                ServiceError::Conflict(format!("no verifiable runner download: {e}")).into(),
            );
        }
    };
    let labels: Vec<String> = offered_labels(&pool.spec.labels, &project.spec.label)
        .into_iter()
        .map(String::from)
        .collect();
    let request = JitRequest {
        name: runner.name.clone(),
        runner_group_id,
        labels,
        work_folder: None,
    };
    let jit = match ports
        .github
        .generate_jit_config(installation_id, &target, &request)
        .await
    {
        Ok(jit) => jit,
        Err(e) => {
            let detail = json!({"reason": e.to_string(), "target": target.to_string()});
            register_failed(ports, &runner, detail).await?;
            return Err(ServiceError::GitHub {
                doing: "GitHub did not issue a runner configuration",
                source: e,
            }
            .into());
        }
    };
    crate::failpoint::hit(crate::failpoint::Failpoint::AfterJitMint);
    let now = ports.clock.now();
    let registered = update_runner(ports, &runner, |r| {
        if r.state != RunnerState::Pending {
            return false;
        }
        r.state = RunnerState::Registered;
        r.github_runner_id = Some(jit.runner_id);
        r.registered_at = Some(now);
        true
    })
    .await;
    if !matches!(registered, Ok(Some(_))) {
        // Another register won the race (or the runner was reaped): the
        // registration just minted belongs to nobody — remove it.
        if let Err(del) = ports
            .github
            .delete_runner(installation_id, &target, jit.runner_id)
            .await
        {
            tracing::warn!(runner_id = %runner.id, error = %crate::error_text::display_chain(&del), "could not delete an unused GitHub runner registration");
        }
        return Err(match registered {
            Err(e) => e.into(),
            _ => CallbackError::Unauthorized("the runner registered already".into()),
        });
    }
    tracing::info!(runner_id = %runner.id, runner_name = %runner.name, github_runner_id = jit.runner_id, "runner registered");
    Ok(Registration {
        encoded_jit_config: jit.encoded_jit_config,
        runner_name: jit.runner_name,
        runner_version: download.version,
        download_url: download.url,
        sha256: download.sha256,
    })
}

/// `/complete`: the runner's job is over. Idempotent.
pub async fn complete(ports: &Ports, token: &str) -> Result<(), CallbackError> {
    let (_, runner) = authenticate(ports, token).await?;
    if let Some(done) = finish(ports, &runner, RunnerState::Done, |_| {}).await? {
        tracing::info!(runner_id = %done.id, "runner completed");
    }
    Ok(())
}

/// Removes secrets a bootstrap log may hold: the runner's own token, JIT
/// configs, bearer tokens; then keeps the last [`LOG_TAIL_BYTES`].
pub fn redact_log(log: &str, token: &str) -> String {
    let unredacted = log.replace(token, "[redacted]");
    // Words are what any whitespace separates (a log has line breaks and
    // tabs, and runs of spaces), each kept with the separator after it, so
    // the layout survives.
    let mut out = String::with_capacity(unredacted.len());
    let mut redact_next = false;
    for piece in unredacted.split_inclusive(char::is_whitespace) {
        let word = piece.trim_end_matches(char::is_whitespace);
        let separator = piece.get(word.len()..).unwrap_or_default();
        if !word.is_empty() {
            let secretish = word.len() >= 64
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+/=_-.".contains(c));
            out.push_str(if redact_next || secretish {
                "[redacted]"
            } else {
                word
            });
            redact_next =
                matches!(word, "--jitconfig" | "Bearer" | "--token") || word.ends_with("token:");
        }
        out.push_str(separator);
    }
    if out.len() > LOG_TAIL_BYTES {
        let mut cut = out.len() - LOG_TAIL_BYTES;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = out.get(cut..).unwrap_or_default().to_string();
    }
    out
}

/// `/error`: bootstrap failed. Stores the redacted log tail, fails the
/// runner, releases its capacity, removes its GitHub registration and gives
/// its job another attempt (or fails it, past `reaper.max_attempts`).
pub async fn error(ports: &Ports, token: &str, log_tail: &str) -> Result<(), CallbackError> {
    let (_, runner) = authenticate(ports, token).await?;
    let tail = redact_log(log_tail, token);
    let Some(failed) = finish(ports, &runner.id, RunnerState::Failed, |r| {
        r.error_tail = Some(tail.clone())
    })
    .await?
    else {
        return Ok(());
    };
    record(
        ports,
        &runner_caller(&failed),
        "runner.bootstrap_failed",
        Some(&failed.id),
        json!({"runner": failed.name}),
    )
    .await?;
    if let Some(github_runner_id) = failed.github_runner_id {
        match github_target(ports, &failed).await {
            Ok((installation, target, _)) => {
                if let Err(e) = ports
                    .github
                    .delete_runner(installation, &target, github_runner_id)
                    .await
                {
                    tracing::warn!(runner_id = %failed.id, error = %crate::error_text::display_chain(&e), "could not delete the failed runner's GitHub registration");
                }
            }
            Err(e) => {
                tracing::warn!(runner_id = %failed.id, error = %crate::error_text::display_chain(&e), "no GitHub target for the failed runner")
            }
        }
    }
    if let Some(job_id) = &failed.job_id {
        retry_job_after_failed_runner(ports, job_id, &failed, TransitionCause::Runner).await?;
    }
    Ok(())
}

/// Gives the job a failed or reaped runner was launched for another
/// attempt (or fails it past `reaper.max_attempts`), if nothing newer took
/// it over. `cause` is who noticed: the job's timeline says so.
pub(crate) async fn retry_job_after_failed_runner(
    ports: &Ports,
    job_id: &str,
    runner: &Runner,
    cause: TransitionCause,
) -> ServiceResult<()> {
    let Some(job) = ports.store.get_job(job_id).await? else {
        return Ok(());
    };
    // The runner was launched for this job and nothing newer replaced it
    // (the orchestrator may not have recorded it on the job yet).
    let launched_for_it = runner.job_id.as_deref() == Some(job.id.as_str())
        && job.runner_id.as_deref().is_none_or(|r| r == runner.id);
    if !launched_for_it || !matches!(job.state, JobState::Claimed | JobState::Starting) {
        return Ok(());
    }
    // Its launch counts as an attempt even when the orchestrator had not
    // recorded it yet (the job moving out of `claimed` with the runner named
    // counts it).
    let attempts = job.attempts + u32::from(job.state == JobState::Claimed);
    if attempts >= ports.settings.max_attempts {
        let changes = JobChanges {
            runner_id: Some(runner.id.clone()),
            failure_reason: Some(format!(
                "no runner came up after {} attempt{}; the last, {}, ended: {}",
                attempts,
                if attempts == 1 { "" } else { "s" },
                runner.name,
                runner
                    .error_tail
                    .as_deref()
                    .map_or("see its error tail", |t| t.lines().last().unwrap_or(t))
            )),
            ..Default::default()
        };
        advance(ports, &job, JobState::Failed, cause, &changes).await?;
        return Ok(());
    }
    let changes = JobChanges {
        runner_id: Some(runner.id.clone()),
        note: Some(format!("runner {} ended before running a job", runner.name)),
        ..Default::default()
    };
    if let super::jobs::Advanced::Moved(_) =
        advance(ports, &job, JobState::Queued, cause, &changes).await?
    {
        ports.queue.send(job_id, None).await?;
    }
    Ok(())
}

pub async fn list(
    ports: &Ports,
    filter: &RunnerFilter,
    page: &PageRequest,
) -> ServiceResult<Page<Runner>> {
    Ok(ports.store.list_runners(filter, page).await?)
}

pub async fn get(ports: &Ports, id: &str) -> ServiceResult<Runner> {
    ports
        .store
        .get_runner(id)
        .await?
        .ok_or(ServiceError::NotFound("runner"))
}

/// An operator's terminate: deregister from GitHub, terminate the
/// instance, release capacity, audit.
pub async fn terminate(ports: &Ports, caller: &Caller, id: &str) -> ServiceResult<Runner> {
    let runner = get(ports, id).await?;
    if !runner.state.is_live() {
        return Err(ServiceError::Conflict(format!(
            "runner {} is {} already",
            runner.name, runner.state
        )));
    }
    if let Some(github_runner_id) = runner.github_runner_id {
        let (installation, target, _) = github_target(ports, &runner).await?;
        ports
            .github
            .delete_runner(installation, &target, github_runner_id)
            .await
            .map_err(|source| ServiceError::GitHub {
                doing: "GitHub did not remove the runner registration",
                source,
            })?;
    }
    if let Some(instance) = &runner.instance_id {
        ports
            .fleet
            .terminate(instance)
            .await
            .map_err(|e| ServiceError::Upstream(format!("terminating {instance}: {e}")))?;
    }
    let done = finish(ports, id, RunnerState::Reaped, |r| {
        r.error_tail = r
            .error_tail
            .take()
            .or(Some("terminated by an operator".into()))
    })
    .await?
    .unwrap_or(runner);
    record(
        ports,
        caller,
        "runner.terminated",
        Some(id),
        json!({"runner": done.name, "instance_id": done.instance_id}),
    )
    .await?;
    // A job still waiting for this runner gets another; one it was running
    // ends when GitHub reports the job's end.
    if let Some(job_id) = &done.job_id {
        retry_job_after_failed_runner(ports, job_id, &done, TransitionCause::Operator).await?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &str = "pcr1.eyJyIjoicnVuXzEifQ.c2lnbmF0dXJl";

    /// 64 characters of a base64 alphabet: what a JIT config or a key looks like.
    fn token_like(n: usize) -> String {
        "A1b2+/=_-.".chars().cycle().take(n).collect()
    }

    #[test]
    fn the_runners_own_token_and_long_token_like_words_are_redacted() {
        let secret = token_like(64);
        let log = format!("register with {TOKEN} failed; config {secret} end");
        assert_eq!(
            redact_log(&log, TOKEN),
            "register with [redacted] failed; config [redacted] end"
        );
    }

    /// Found by no_credential_survives_in_a_kept_log_tail: words were split
    /// on single spaces only, so a JIT config on a line of its own was kept.
    #[test]
    fn a_token_like_word_next_to_a_newline_or_tab_is_redacted() {
        let secret = token_like(64);
        for log in [
            format!("config:\n{secret}\nexit 1"),
            format!("config:\t{secret}\texit 1"),
            format!("{secret}\r\n"),
        ] {
            let kept = redact_log(&log, TOKEN);
            assert!(!kept.contains(&secret), "{log:?} kept as {kept:?}");
            assert!(kept.contains("[redacted]"), "{kept:?}");
        }
        assert_eq!(
            redact_log(&format!("a\n{secret}\tb"), TOKEN),
            "a\n[redacted]\tb",
            "the layout stays"
        );
    }

    /// The same bug: `Bearer` and its token on two lines, or two spaces
    /// apart (the empty word between them took the redaction), kept it.
    #[test]
    fn the_word_after_bearer_is_redacted_whatever_space_comes_between() {
        for log in [
            "Authorization: Bearer s3cr3t",
            "Bearer  s3cr3t",
            "Bearer\ns3cr3t",
            "--token\ts3cr3t",
            "--jitconfig\r\ns3cr3t",
        ] {
            let kept = redact_log(log, TOKEN);
            assert!(!kept.contains("s3cr3t"), "{log:?} kept as {kept:?}");
        }
    }

    /// A piece of a bootstrap log: a plain word, a long token-like word, or
    /// a word that announces a credential followed by one.
    #[derive(Debug, Clone)]
    enum Piece {
        Plain(String),
        Secret(String),
        Announced(&'static str, String),
        RunnersToken,
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            4 => "[A-Za-z0-9:=/._,'€-]{1,20}".prop_map(Piece::Plain),
            1 => "[A-Za-z0-9+/=_.-]{64,100}".prop_map(Piece::Secret),
            1 => (proptest::sample::select(vec!["--jitconfig", "Bearer", "--token", "token:"]), "[a-z0-9]{8,20}")
                .prop_map(|(announces, secret)| Piece::Announced(announces, format!("x{secret}x"))),
            1 => Just(Piece::RunnersToken),
        ]
    }

    fn separator() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(vec![" ", "\n", "\t", "\r\n", "  ", " \n"])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn no_credential_survives_in_a_kept_log_tail(pieces in proptest::collection::vec((piece(), separator()), 0..400)) {
            let mut log = String::new();
            let mut secrets = Vec::new();
            for (piece, separator) in &pieces {
                match piece {
                    Piece::Plain(word) => log.push_str(word),
                    Piece::Secret(word) => {
                        log.push_str(word);
                        secrets.push(word.clone());
                    }
                    Piece::Announced(announces, secret) => {
                        log.push_str(&format!("{announces}{separator}{secret}"));
                        secrets.push(secret.clone());
                    }
                    Piece::RunnersToken => log.push_str(TOKEN),
                }
                log.push_str(separator);
            }
            let kept = redact_log(&log, TOKEN);
            prop_assert!(kept.len() <= LOG_TAIL_BYTES);
            prop_assert!(!kept.contains(TOKEN));
            for secret in &secrets {
                prop_assert!(!kept.contains(secret.as_str()), "{secret:?} kept in {kept:?}");
            }
            if secrets.is_empty() && !log.contains(TOKEN) && log.len() <= LOG_TAIL_BYTES {
                prop_assert_eq!(kept, log, "a log without credentials is kept as it was");
            }
        }

        #[test]
        fn any_text_is_redacted_to_a_tail_without_a_panic(log in crate::arbitrary::hostile_text(), token in "pcr1\\.[A-Za-z0-9_-]{1,40}\\.[A-Za-z0-9_-]{1,20}") {
            let kept = redact_log(&log, &token);
            prop_assert!(kept.len() <= LOG_TAIL_BYTES && !kept.contains(&token));
        }
    }
}
