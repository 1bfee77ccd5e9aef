//! Self-service runners: a machine outside EC2 presents a workload token
//! and gets a just-in-time runner configuration for itself, within its
//! label policy and live-runner limit (`docs/self-service.md`).
//!
//! The edge verifies the token (`auth::workload`) and hands over what it
//! proved as a [`Presented`] token; [`admit`] then checks the caller's
//! address and uses the token's `jti` once, before anything else happens.
//! Every refusal from here on is a [`SecurityEvent`]; every provision and
//! delete is in the audit log.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::audit::record;
use super::{Caller, Ports, ServiceError, ServiceResult};
use crate::domain::fields::Fields;
use crate::domain::labels::parse_labels;
use crate::domain::runner::is_runner_name_of;
use crate::domain::self_service::{
    ClaimTest, IdentityPolicy, LabelPolicy, MAX_POLICY_LABELS, Placement, PolicyViolation,
    SecurityEvent, SecurityEventKind, SelfRunnerStatus, SelfServiceRunner, TrustedIdentity,
    parse_runner_name,
};
use crate::domain::{Actor, ActorKind, IdKind, Invalid, Role, Scope, Time};
use crate::github::{GitHubError, JitRequest, RunnerTarget};
use crate::store::{
    Page, PageRequest, SecurityEventFilter, SelfRunnerFilter, StoreError, all_pages,
};

/// `self_service.*`: who may ask, and how long a runner may take to come
/// online.
#[derive(Debug, Clone)]
pub struct SelfServiceSettings {
    pub enabled: bool,
    pub identities: Vec<TrustedIdentity>,
    /// A runner not seen online this long after it was provisioned is
    /// deregistered by the reaper.
    pub registration_timeout: Duration,
}

impl Default for SelfServiceSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            identities: Vec::new(),
            registration_timeout: Duration::from_secs(600),
        }
    }
}

impl SelfServiceSettings {
    pub fn identity(&self, name: &str) -> Option<&TrustedIdentity> {
        self.identities.iter().find(|i| i.name == name)
    }
}

/// What the edge proved about a token: it is signed by a trusted identity's
/// key, current, for pacer's audience, and its claims hold.
#[derive(Debug, Clone)]
pub struct Presented {
    pub trusted_identity: String,
    /// `<trusted identity>:<claim value>`.
    pub owner: String,
    pub issuer: String,
    pub jti: String,
    pub expires_at: Time,
    pub token_sha256: String,
}

/// A caller admitted to the self-service API.
#[derive(Debug, Clone)]
pub struct Workload {
    pub trusted_identity: String,
    pub owner: String,
    pub source_ip: Option<IpAddr>,
    pub token_sha256: String,
    /// `METHOD /path`, for security events and the audit log.
    pub endpoint: String,
}

impl Workload {
    fn caller(&self) -> Caller {
        Caller {
            actor: Actor {
                kind: ActorKind::Workload,
                id: self.owner.clone(),
            },
            client_ip: self.source_ip,
            role: Role::Viewer,
        }
    }

    fn event(&self, kind: SecurityEventKind, reason: String) -> Refusal {
        Refusal {
            kind,
            trusted_identity: Some(self.trusted_identity.clone()),
            identity: Some(self.owner.clone()),
            source_ip: self.source_ip,
            endpoint: self.endpoint.clone(),
            reason,
            token_sha256: Some(self.token_sha256.clone()),
        }
    }
}

/// A refused self-service request, before it is recorded.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub kind: SecurityEventKind,
    pub trusted_identity: Option<String>,
    pub identity: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub endpoint: String,
    pub reason: String,
    pub token_sha256: Option<String>,
}

/// At most this many security events a minute from tokens pacer could not
/// verify (anyone can send one); past it they are logged, not stored. Events
/// about verified tokens are always stored: each token is used once and was
/// issued by an identity the operator trusts.
pub const UNVERIFIED_EVENTS_PER_MINUTE: u64 = 120;

/// Stores a refusal as a security event and logs it, one structured line.
/// A refusal that cannot be stored is still logged, and the request still
/// refused: the caller learns nothing from the store's trouble.
pub async fn record_refusal(ports: &Ports, refusal: Refusal) {
    let at = ports.clock.now();
    let event = SecurityEvent {
        id: ports.ids.new_id(IdKind::SecurityEvent, at),
        at,
        kind: refusal.kind,
        trusted_identity: refusal.trusted_identity,
        identity: refusal.identity,
        source_ip: refusal.source_ip.map(|ip| ip.to_string()),
        endpoint: refusal.endpoint,
        reason: refusal.reason,
        token_sha256: refusal.token_sha256,
    };
    tracing::warn!(
        target: "pacer::security",
        kind = event.kind.as_str(),
        trusted_identity = event.trusted_identity.as_deref(),
        identity = event.identity.as_deref(),
        source_ip = event.source_ip.as_deref(),
        endpoint = %event.endpoint,
        reason = %event.reason,
        token_sha256 = event.token_sha256.as_deref(),
        "self-service request refused"
    );
    let unverified = matches!(
        event.kind,
        SecurityEventKind::InvalidToken | SecurityEventKind::ClaimMismatch
    );
    if unverified {
        match super::limits::hit(ports, "security:unverified", Duration::from_secs(60)).await {
            Ok((count, _)) if count > UNVERIFIED_EVENTS_PER_MINUTE => {
                if count == UNVERIFIED_EVENTS_PER_MINUTE + 1 {
                    tracing::warn!(
                        target: "pacer::security",
                        limit = UNVERIFIED_EVENTS_PER_MINUTE,
                        "more unverified tokens this minute than the security events take; the rest are logged, not stored"
                    );
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(
                    error = format!("{:#}", anyhow::Error::from(e)),
                    "counting security events failed"
                );
            }
        }
    }
    if let Err(e) = ports.store.append_security_event(&event).await {
        tracing::error!(
            error = format!("{:#}", anyhow::Error::from(e)),
            "storing a security event failed"
        );
    }
}

/// Why a self-service request was refused, for the edge to answer.
#[derive(Debug, thiserror::Error)]
pub enum SelfServiceError {
    /// 401: the token failed a check (the text says which).
    #[error("{0}")]
    Unauthorized(String),
    /// 403: an address outside the allowlist, a label outside the policy, a
    /// full quota.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<Invalid> for SelfServiceError {
    fn from(e: Invalid) -> Self {
        SelfServiceError::Service(e.into())
    }
}

impl From<StoreError> for SelfServiceError {
    fn from(e: StoreError) -> Self {
        SelfServiceError::Service(e.into())
    }
}

pub type SelfServiceResult<T> = Result<T, SelfServiceError>;

/// Admits a verified token: the caller's address must be in the identity's
/// `source_cidrs` (when it has any) and the token unused. The use is
/// recorded before anything else happens, so a token serves one request of
/// any endpoint, however many arrive together.
pub async fn admit(
    ports: &Ports,
    token: Presented,
    source_ip: Option<IpAddr>,
    endpoint: String,
) -> SelfServiceResult<Workload> {
    let workload = Workload {
        trusted_identity: token.trusted_identity.clone(),
        owner: token.owner.clone(),
        source_ip,
        token_sha256: token.token_sha256.clone(),
        endpoint,
    };
    let Some(identity) = ports
        .settings
        .self_service
        .identity(&token.trusted_identity)
    else {
        return Err(SelfServiceError::Unauthorized(
            "the token's trusted identity is not configured".into(),
        ));
    };
    if !identity.admits_address(source_ip) {
        let refusal = workload.event(
            SecurityEventKind::CidrRefused,
            "the caller's address is outside the identity's source_cidrs".into(),
        );
        record_refusal(ports, refusal).await;
        return Err(SelfServiceError::Forbidden(
            "this address may not use the trusted identity".into(),
        ));
    }
    let now = ports.clock.now();
    if !ports
        .store
        .use_token(&token.issuer, &token.jti, token.expires_at, now)
        .await?
    {
        let refusal = workload.event(
            SecurityEventKind::Replay,
            "the token's jti was used before".into(),
        );
        record_refusal(ports, refusal).await;
        return Err(SelfServiceError::Unauthorized(
            "the token was used before; each token serves one request".into(),
        ));
    }
    Ok(workload)
}

/// The body of `POST /api/v1/runners/provision`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionRequest {
    pub runner_name: String,
    pub labels: Vec<String>,
    /// Must be true (the default): see [`provision`].
    pub ephemeral: bool,
}

impl ProvisionRequest {
    /// Reads the body field by field: every refusal names its field, and an
    /// unknown field is refused rather than ignored.
    pub fn from_body(body: serde_json::Map<String, serde_json::Value>) -> Result<Self, Invalid> {
        let mut f = Fields::new(body);
        let request = Self {
            runner_name: f.required("runner_name", Fields::string)?,
            labels: f.strings("labels")?.unwrap_or_default(),
            ephemeral: f.bool("ephemeral")?.unwrap_or(true),
        };
        f.finish()?;
        Ok(request)
    }
}

/// A provisioned runner and its configuration, which the caller passes to
/// `run.sh --jitconfig` once. The configuration is a credential: pacer
/// hands it over and keeps no copy.
#[derive(Clone)]
pub struct Provisioned {
    pub runner: SelfServiceRunner,
    pub encoded_jit_config: String,
    /// The runner must come online before this, or the reaper removes it.
    pub expires_at: Time,
}

impl std::fmt::Debug for Provisioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioned")
            .field("runner", &self.runner)
            .field("encoded_jit_config", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The most labels a caller may ask for (GitHub takes at most 100 on a
/// runner, and pacer adds its own).
pub const MAX_REQUESTED_LABELS: usize = 64;

/// Registers a just-in-time runner for the caller's own machine.
pub async fn provision(
    ports: &Ports,
    caller: &Workload,
    request: ProvisionRequest,
) -> SelfServiceResult<Provisioned> {
    let identity = configured(ports, caller)?;
    if !request.ephemeral {
        return Err(ServiceError::Invalid(Invalid::new(
            "ephemeral",
            "pacer issues single-job just-in-time runners only: a runner that stays would need a \
             registration token, with which the machine could give itself any labels",
        ))
        .into());
    }
    let name = format!(
        "{}{}",
        identity.runners.name_prefix,
        parse_runner_name(&request.runner_name)?
    );
    if is_runner_name_of(&ports.settings.deployment, &name) {
        // The reaper would take it for a lost EC2 runner of pacer's own.
        return Err(Invalid::new(
            "runner_name",
            "has the form of pacer's own EC2 runner names; choose another",
        )
        .into());
    }
    if request.labels.len() > MAX_REQUESTED_LABELS {
        return Err(Invalid::new(
            "labels",
            format!("may hold at most {MAX_REQUESTED_LABELS} labels"),
        )
        .into());
    }
    let requested = parse_labels("labels", &request.labels)?;
    let Some(policy) = policy_for(ports, identity, &caller.owner).await? else {
        return Err(refuse(
            ports,
            caller,
            SecurityEventKind::LabelPolicy,
            "no label policy admits this identity".into(),
        )
        .await);
    };
    let labels = match policy.decide(&requested) {
        Ok(labels) => labels,
        Err(violation @ (PolicyViolation::LabelNotAllowed(_) | PolicyViolation::NoRunners)) => {
            return Err(refuse(
                ports,
                caller,
                SecurityEventKind::LabelPolicy,
                violation.to_string(),
            )
            .await);
        }
    };
    let placement = identity.runners.clone();
    let (target, installation_id) = installation(ports, identity).await?;

    // The place under the owner's limit is taken before GitHub is asked,
    // so concurrent requests cannot pass it.
    let now = ports.clock.now();
    let mut runner = SelfServiceRunner {
        id: ports.ids.new_id(IdKind::SelfServiceRunner, now),
        name: name.clone(),
        owner: caller.owner.clone(),
        trusted_identity: caller.trusted_identity.clone(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        github_runner_id: None,
        installation_id,
        placement,
        status: SelfRunnerStatus::Pending,
        source_ip: caller.source_ip.map(|ip| ip.to_string()),
        created_at: now,
        registered_at: None,
        updated_at: now,
        deleted_at: None,
        version: 1,
    };
    match ports
        .store
        .create_self_runner(&runner, policy.max_live_runners)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            let reason = format!(
                "the identity holds its {} live runners already",
                policy.max_live_runners
            );
            return Err(refuse(ports, caller, SecurityEventKind::OverLimit, reason).await);
        }
        Err(StoreError::Conflict(_)) => {
            return Err(name_taken(&name));
        }
        Err(e) => return Err(e.into()),
    }

    let request = JitRequest {
        name: name.clone(),
        runner_group_id: runner.placement.runner_group_id,
        labels: runner.labels.clone(),
        work_folder: None,
    };
    let jit = match ports
        .github
        .generate_jit_config(installation_id, &target, &request)
        .await
    {
        Ok(jit) => jit,
        Err(e) => {
            // The place goes back; the record stays, deleted, to show what happened.
            forget(ports, &runner).await;
            return Err(match e {
                GitHubError::Refused(m) if m.to_lowercase().contains("already exists") => {
                    name_taken(&name)
                }
                source => ServiceError::GitHub {
                    doing: "registering the runner",
                    source,
                }
                .into(),
            });
        }
    };
    let from = runner.status;
    runner.github_runner_id = Some(jit.runner_id);
    runner.version += 1;
    ports.store.update_self_runner(from, &runner).await?;
    record(
        ports,
        &caller.caller(),
        "self_service.runner_provisioned",
        Some(&runner.name),
        json!({
            "trusted_identity": runner.trusted_identity,
            "labels": runner.labels,
            "github_runner_id": jit.runner_id,
            "endpoint": caller.endpoint,
        }),
    )
    .await?;
    let timeout = chrono::Duration::from_std(ports.settings.self_service.registration_timeout)
        .unwrap_or(chrono::TimeDelta::MAX);
    Ok(Provisioned {
        expires_at: now.checked_add_signed(timeout).unwrap_or(now),
        runner,
        encoded_jit_config: jit.encoded_jit_config,
    })
}

/// The caller's own runners, newest first.
pub async fn list(
    ports: &Ports,
    caller: &Workload,
    page: &PageRequest,
) -> SelfServiceResult<Page<SelfServiceRunner>> {
    configured(ports, caller)?;
    let filter = SelfRunnerFilter {
        owner: Some(caller.owner.clone()),
        status: None,
    };
    Ok(ports.store.list_self_runners(&filter, page).await?)
}

/// One of the caller's runners. Another owner's is "not found", exactly as
/// one that does not exist, and leaves a security event.
pub async fn get(
    ports: &Ports,
    caller: &Workload,
    name: &str,
) -> SelfServiceResult<SelfServiceRunner> {
    configured(ports, caller)?;
    let found = ports.store.get_self_runner(name).await?;
    match found {
        Some(runner) if runner.owner == caller.owner => Ok(runner),
        Some(_) => {
            let reason = "asked for a runner another identity owns".into();
            let refusal = caller.event(SecurityEventKind::OtherOwner, reason);
            record_refusal(ports, refusal).await;
            Err(ServiceError::NotFound("runner").into())
        }
        None => Err(ServiceError::NotFound("runner").into()),
    }
}

/// One of the caller's runners, its status read from GitHub now.
pub async fn refresh(
    ports: &Ports,
    caller: &Workload,
    name: &str,
) -> SelfServiceResult<SelfServiceRunner> {
    let runner = get(ports, caller, name).await?;
    Ok(sync(ports, runner).await?)
}

/// Deregisters one of the caller's runners on GitHub and marks it deleted.
pub async fn delete(
    ports: &Ports,
    caller: &Workload,
    name: &str,
) -> SelfServiceResult<SelfServiceRunner> {
    let runner = get(ports, caller, name).await?;
    if runner.status == SelfRunnerStatus::Deleted {
        return Ok(runner);
    }
    let runner = deregister(ports, runner).await?;
    record(
        ports,
        &caller.caller(),
        "self_service.runner_deleted",
        Some(&runner.name),
        json!({"trusted_identity": runner.trusted_identity, "endpoint": caller.endpoint}),
    )
    .await?;
    Ok(runner)
}

/// What GitHub says of `runner` now: online is `active`, offline is
/// `offline` once it has been online (before that, a JIT runner GitHub lists
/// offline has simply not connected yet), gone is `deleted`.
pub async fn observe(ports: &Ports, runner: &SelfServiceRunner) -> ServiceResult<SelfRunnerStatus> {
    if runner.status == SelfRunnerStatus::Deleted {
        return Ok(runner.status);
    }
    let Some(runner_id) = runner.github_runner_id else {
        return Ok(runner.status);
    };
    let target = target_of(runner)?;
    let seen = ports
        .github
        .get_runner(runner.installation_id, &target, runner_id)
        .await
        .map_err(|source| ServiceError::GitHub {
            doing: "reading the runner's status",
            source,
        })?;
    Ok(match &seen {
        None => SelfRunnerStatus::Deleted,
        Some(gh) if gh.status == "online" => SelfRunnerStatus::Active,
        Some(_) if runner.registered_at.is_some() => SelfRunnerStatus::Offline,
        Some(_) => SelfRunnerStatus::Pending,
    })
}

/// [`observe`], written back.
pub async fn sync(ports: &Ports, runner: SelfServiceRunner) -> ServiceResult<SelfServiceRunner> {
    let status = observe(ports, &runner).await?;
    record_status(ports, runner, status).await
}

/// Writes the status GitHub reported for `runner`, when it changed.
async fn record_status(
    ports: &Ports,
    runner: SelfServiceRunner,
    status: SelfRunnerStatus,
) -> ServiceResult<SelfServiceRunner> {
    if status == runner.status {
        return Ok(runner);
    }
    let now = ports.clock.now();
    let mut next = runner.clone();
    next.status = status;
    next.updated_at = now;
    next.version += 1;
    if status == SelfRunnerStatus::Active && next.registered_at.is_none() {
        next.registered_at = Some(now);
    }
    if status == SelfRunnerStatus::Deleted {
        next.deleted_at = Some(now);
    }
    ports.store.update_self_runner(runner.status, &next).await?;
    Ok(next)
}

/// Removes the runner from GitHub (gone already is fine) and marks it
/// deleted.
pub async fn deregister(
    ports: &Ports,
    runner: SelfServiceRunner,
) -> ServiceResult<SelfServiceRunner> {
    if let Some(runner_id) = runner.github_runner_id {
        let target = target_of(&runner)?;
        ports
            .github
            .delete_runner(runner.installation_id, &target, runner_id)
            .await
            .map_err(|source| ServiceError::GitHub {
                doing: "deregistering the runner",
                source,
            })?;
    }
    let now = ports.clock.now();
    let mut next = runner.clone();
    next.status = SelfRunnerStatus::Deleted;
    next.updated_at = now;
    next.deleted_at = Some(now);
    next.version += 1;
    ports.store.update_self_runner(runner.status, &next).await?;
    Ok(next)
}

/// What one reaper pass did to self-service runners.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Status changes read from GitHub.
    pub synced: usize,
    /// Never came online within the registration timeout.
    pub expired: usize,
    /// Old token uses and deleted runners forgotten.
    pub swept: u64,
}

/// A status GitHub reports that the store does not hold yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub runner: String,
    pub owner: String,
    pub from: SelfRunnerStatus,
    pub to: SelfRunnerStatus,
}

/// Every runner not yet deleted, oldest status first.
async fn undeleted(ports: &Ports) -> ServiceResult<Vec<SelfServiceRunner>> {
    let mut runners = Vec::new();
    for status in [
        SelfRunnerStatus::Pending,
        SelfRunnerStatus::Active,
        SelfRunnerStatus::Offline,
    ] {
        let filter = SelfRunnerFilter {
            owner: None,
            status: Some(status),
        };
        runners.extend(all_pages!(|p| ports.store.list_self_runners(&filter, p)));
    }
    Ok(runners)
}

/// Reads the status of every runner not yet deleted from GitHub and, unless
/// `dry_run`, writes what changed. A runner GitHub cannot be asked about, or
/// that changed while it was asked, is left as it is (and logged).
pub async fn sync_all(ports: &Ports, dry_run: bool) -> ServiceResult<Vec<StatusChange>> {
    let mut changes = Vec::new();
    for runner in undeleted(ports).await? {
        let to = match observe(ports, &runner).await {
            Ok(to) => to,
            Err(e) => {
                tracing::warn!(runner = %runner.name, error = format!("{:#}", anyhow::Error::from(e)), "reading a self-service runner's status failed");
                continue;
            }
        };
        if to == runner.status {
            continue;
        }
        let change = StatusChange {
            runner: runner.name.clone(),
            owner: runner.owner.clone(),
            from: runner.status,
            to,
        };
        if !dry_run {
            // GitHub was asked once; a runner that changed meanwhile (its
            // owner deleted it, say) is left for the next pass, not the
            // end of this one.
            if let Err(e) = record_status(ports, runner, to).await {
                tracing::warn!(runner = %change.runner, error = format!("{:#}", anyhow::Error::from(e)), "recording a self-service runner's status failed");
                continue;
            }
        }
        changes.push(change);
    }
    Ok(changes)
}

/// The runners never seen online within `self_service.registration_timeout`
/// of their provisioning: unless `dry_run`, each is deregistered on GitHub,
/// marked deleted and audited. A runner GitHub cannot be asked about is left
/// for the next try (and logged).
pub async fn cleanup_stale(ports: &Ports, dry_run: bool) -> ServiceResult<Vec<SelfServiceRunner>> {
    let timeout = chrono::Duration::from_std(ports.settings.self_service.registration_timeout)
        .unwrap_or(chrono::TimeDelta::MAX);
    let now = ports.clock.now();
    let mut stale = Vec::new();
    for runner in undeleted(ports).await? {
        let overdue = runner.status == SelfRunnerStatus::Pending
            && runner.registered_at.is_none()
            && runner
                .created_at
                .checked_add_signed(timeout)
                .is_some_and(|deadline| deadline <= now);
        if !overdue {
            continue;
        }
        if dry_run {
            stale.push(runner);
            continue;
        }
        let name = runner.name.clone();
        match deregister(ports, runner).await {
            Ok(gone) => {
                record(
                    ports,
                    &Caller::system("reaper"),
                    "self_service.runner_expired",
                    Some(&gone.name),
                    json!({"owner": gone.owner, "reason": "never came online within self_service.registration_timeout"}),
                )
                .await?;
                stale.push(gone);
            }
            Err(e) => {
                tracing::warn!(runner = %name, error = format!("{:#}", anyhow::Error::from(e)), "removing an expired self-service runner failed");
            }
        }
    }
    Ok(stale)
}

/// One reaper pass: statuses from GitHub, runners that never came online
/// removed, then expired token uses and long-deleted runners forgotten.
pub async fn reap(ports: &Ports) -> ServiceResult<Reaped> {
    let synced = sync_all(ports, false).await?.len();
    let expired = cleanup_stale(ports, false).await?.len();
    let now = ports.clock.now();
    let retention =
        chrono::Duration::from_std(crate::domain::self_service::DELETED_RUNNER_RETENTION)
            .unwrap_or(chrono::TimeDelta::MAX);
    let cutoff = now.checked_sub_signed(retention).unwrap_or(now);
    let swept = ports.store.sweep_self_service(now, cutoff).await?;
    Ok(Reaped {
        synced,
        expired,
        swept,
    })
}

/// Every self-service runner the filter selects, newest first, in one list:
/// for the operator's commands.
pub async fn every_runner(
    ports: &Ports,
    filter: &SelfRunnerFilter,
) -> ServiceResult<Vec<SelfServiceRunner>> {
    Ok(all_pages!(|p| ports.store.list_self_runners(filter, p)))
}

// ------------------------------------------------------------------ administration

/// The body of `POST /api/v1/admin/label-policies`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRequest {
    pub identity: String,
    pub allowed_labels: Vec<String>,
    pub required_labels: Vec<String>,
    pub max_live_runners: u32,
}

impl PolicyRequest {
    pub fn from_body(body: serde_json::Map<String, serde_json::Value>) -> Result<Self, Invalid> {
        let mut f = Fields::new(body);
        let request = Self {
            identity: f.required("identity", Fields::string)?,
            allowed_labels: f.required("allowed_labels", Fields::strings)?,
            required_labels: f.strings("required_labels")?.unwrap_or_default(),
            max_live_runners: f.required("max_live_runners", |f, name| {
                f.int(name, 0, i64::from(MAX_LIVE_RUNNERS))
            })? as u32,
        };
        f.finish()?;
        Ok(request)
    }
}

/// The most live runners a policy may grant one identity.
pub const MAX_LIVE_RUNNERS: u32 = 1000;
/// The longest identity a policy may name, in bytes.
pub const MAX_IDENTITY_BYTES: usize = 512;

/// Creates or replaces the label policy of one identity
/// (`<trusted identity>:<claim value>`, of a configured trusted identity).
pub async fn put_policy(
    ports: &Ports,
    caller: &Caller,
    request: PolicyRequest,
) -> ServiceResult<IdentityPolicy> {
    admin_only(caller)?;
    let identity = request.identity.trim().to_string();
    let known = identity.split_once(':').is_some_and(|(name, value)| {
        !value.is_empty() && ports.settings.self_service.identity(name).is_some()
    });
    if !known || identity.len() > MAX_IDENTITY_BYTES {
        return Err(Invalid::new(
            "identity",
            format!(
                "must be <trusted identity name>:<claim value>, naming a configured trusted identity, at most {MAX_IDENTITY_BYTES} bytes"
            ),
        )
        .into());
    }
    for (field, count) in [
        ("allowed_labels", request.allowed_labels.len()),
        ("required_labels", request.required_labels.len()),
    ] {
        if count > MAX_POLICY_LABELS {
            return Err(Invalid::new(
                field,
                format!("may hold at most {MAX_POLICY_LABELS} entries"),
            )
            .into());
        }
    }
    let allowed_labels = request
        .allowed_labels
        .iter()
        .map(|g| {
            crate::domain::self_service::LabelGlob::parse(g)
                .map_err(|m| Invalid::new("allowed_labels", m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let required_labels = parse_labels("required_labels", &request.required_labels)?
        .into_iter()
        .collect();
    let policy = IdentityPolicy {
        identity: identity.clone(),
        policy: LabelPolicy {
            allowed_labels,
            required_labels,
            max_live_runners: request.max_live_runners,
        },
        updated_at: ports.clock.now(),
        updated_by: caller.actor.id.clone(),
    };
    ports.store.put_label_policy(&policy).await?;
    record(
        ports,
        caller,
        "self_service.policy_set",
        Some(&identity),
        serde_json::to_value(&policy.policy).unwrap_or_default(),
    )
    .await?;
    Ok(policy)
}

pub async fn get_policy(
    ports: &Ports,
    caller: &Caller,
    identity: &str,
) -> ServiceResult<IdentityPolicy> {
    admin_only(caller)?;
    ports
        .store
        .get_label_policy(identity)
        .await?
        .ok_or(ServiceError::NotFound("label policy"))
}

pub async fn list_policies(
    ports: &Ports,
    caller: &Caller,
    page: &PageRequest,
) -> ServiceResult<Page<IdentityPolicy>> {
    admin_only(caller)?;
    Ok(ports.store.list_label_policies(page).await?)
}

pub async fn delete_policy(ports: &Ports, caller: &Caller, identity: &str) -> ServiceResult<()> {
    admin_only(caller)?;
    match ports.store.delete_label_policy(identity).await {
        Err(StoreError::NotFound) => return Err(ServiceError::NotFound("label policy")),
        other => other?,
    }
    record(
        ports,
        caller,
        "self_service.policy_deleted",
        Some(identity),
        serde_json::Value::Null,
    )
    .await
}

pub async fn security_events(
    ports: &Ports,
    caller: &Caller,
    filter: &SecurityEventFilter,
    page: &PageRequest,
) -> ServiceResult<Page<SecurityEvent>> {
    admin_only(caller)?;
    Ok(ports.store.list_security_events(filter, page).await?)
}

/// A trusted identity as administrators see it: who it admits, where its
/// runners go and what they may ask for. Spelled out field by field, so
/// nothing the configuration gains later is shown without a decision (the
/// key set's URL, for one, is left out).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct TrustedIdentityView {
    pub name: String,
    /// Compared byte for byte with a token's `iss`.
    pub issuer: String,
    /// A token's `aud` must contain it.
    pub audience: String,
    /// The claim whose value names a runner's owner: `<name>:<value>`.
    pub identity_claim: String,
    /// Every rule must hold.
    pub claims: Vec<ClaimRuleView>,
    /// Empty: any address.
    pub source_cidrs: Vec<String>,
    /// The longest `exp - iat` a token may have, as a Go duration.
    #[serde(with = "crate::domain::duration::go")]
    #[cfg_attr(test, ts(type = "string"))]
    pub max_token_lifetime: Duration,
    /// Where the identity's runners register on GitHub.
    pub runners: Placement,
    /// The policy of an owner that has none of its own; null: such an
    /// owner gets no runner.
    pub label_policy: Option<LabelPolicy>,
}

/// One claim rule: the claim equals `value`, starts with it, or matches it
/// as a whole (`regex`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ClaimRuleView {
    pub claim: String,
    pub kind: ClaimKind,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    Exact,
    Prefix,
    Regex,
}

impl From<&TrustedIdentity> for TrustedIdentityView {
    fn from(i: &TrustedIdentity) -> Self {
        let claims = i
            .claims
            .iter()
            .map(|rule| {
                let (kind, value) = match &rule.test {
                    ClaimTest::Exact(v) => (ClaimKind::Exact, v.clone()),
                    ClaimTest::Prefix(v) => (ClaimKind::Prefix, v.clone()),
                    ClaimTest::Regex(re) => (ClaimKind::Regex, re.as_str().to_string()),
                };
                ClaimRuleView {
                    claim: rule.claim.clone(),
                    kind,
                    value,
                }
            })
            .collect();
        Self {
            name: i.name.clone(),
            issuer: i.issuer.clone(),
            audience: i.audience.clone(),
            identity_claim: i.identity_claim.clone(),
            claims,
            source_cidrs: i.source_cidrs.iter().map(|n| n.to_string()).collect(),
            max_token_lifetime: i.max_token_lifetime,
            runners: i.runners.clone(),
            label_policy: i.label_policy.clone(),
        }
    }
}

/// The configured trusted identities, in the configuration's order;
/// `None` while self-service is off.
pub async fn trusted_identities(
    ports: &Ports,
    caller: &Caller,
) -> ServiceResult<Option<Vec<TrustedIdentityView>>> {
    admin_only(caller)?;
    let settings = &ports.settings.self_service;
    if !settings.enabled {
        return Ok(None);
    }
    Ok(Some(
        settings
            .identities
            .iter()
            .map(TrustedIdentityView::from)
            .collect(),
    ))
}

/// A self-service runner as administrators see it: whose it is, where it
/// registered and when, from which address it was asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SelfRunnerView {
    /// `ssr_<ULID>`.
    pub id: String,
    /// The name on GitHub, prefix included.
    pub runner_name: String,
    /// `<trusted identity name>:<claim value>`.
    pub owner: String,
    pub trusted_identity: String,
    pub labels: Vec<String>,
    pub status: SelfRunnerStatus,
    pub github_runner_id: Option<i64>,
    pub placement: Placement,
    /// The caller's address when it asked.
    pub source_ip: Option<String>,
    pub created_at: Time,
    /// When pacer first saw it online.
    pub registered_at: Option<Time>,
    pub updated_at: Time,
    pub deleted_at: Option<Time>,
}

impl From<SelfServiceRunner> for SelfRunnerView {
    fn from(r: SelfServiceRunner) -> Self {
        Self {
            id: r.id,
            runner_name: r.name,
            owner: r.owner,
            trusted_identity: r.trusted_identity,
            labels: r.labels,
            status: r.status,
            github_runner_id: r.github_runner_id,
            placement: r.placement,
            source_ip: r.source_ip,
            created_at: r.created_at,
            registered_at: r.registered_at,
            updated_at: r.updated_at,
            deleted_at: r.deleted_at,
        }
    }
}

/// Every owner's self-service runners, newest first.
pub async fn all_runners(
    ports: &Ports,
    caller: &Caller,
    filter: &SelfRunnerFilter,
    page: &PageRequest,
) -> ServiceResult<Page<SelfRunnerView>> {
    admin_only(caller)?;
    let page = ports.store.list_self_runners(filter, page).await?;
    Ok(Page {
        items: page.items.into_iter().map(SelfRunnerView::from).collect(),
        next_cursor: page.next_cursor,
    })
}

// ------------------------------------------------------------------ helpers

fn admin_only(caller: &Caller) -> ServiceResult<()> {
    if caller.role == Role::Admin {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(
            "self-service administration needs the admin role".into(),
        ))
    }
}

/// The caller's trusted identity, while self-service is on and it is still
/// configured.
fn configured<'a>(ports: &'a Ports, caller: &Workload) -> SelfServiceResult<&'a TrustedIdentity> {
    let settings = &ports.settings.self_service;
    match settings.identity(&caller.trusted_identity) {
        Some(identity) if settings.enabled => Ok(identity),
        _ => Err(SelfServiceError::Unauthorized(
            "self-service runners are not enabled for this identity".into(),
        )),
    }
}

/// The owner's own policy, else its trusted identity's; `None`: no policy.
async fn policy_for(
    ports: &Ports,
    identity: &TrustedIdentity,
    owner: &str,
) -> ServiceResult<Option<LabelPolicy>> {
    Ok(match ports.store.get_label_policy(owner).await? {
        Some(own) => Some(own.policy),
        None => identity.label_policy.clone(),
    })
}

async fn refuse(
    ports: &Ports,
    caller: &Workload,
    kind: SecurityEventKind,
    reason: String,
) -> SelfServiceError {
    record_refusal(ports, caller.event(kind, reason.clone())).await;
    SelfServiceError::Forbidden(reason)
}

fn name_taken(name: &str) -> SelfServiceError {
    ServiceError::Duplicate(Invalid::new(
        "runner_name",
        format!("a runner named {name:?} exists already"),
    ))
    .into()
}

/// Marks a runner whose registration failed deleted, freeing its place.
async fn forget(ports: &Ports, runner: &SelfServiceRunner) {
    let mut gone = runner.clone();
    let now = ports.clock.now();
    gone.status = SelfRunnerStatus::Deleted;
    gone.deleted_at = Some(now);
    gone.updated_at = now;
    gone.version += 1;
    if let Err(e) = ports.store.update_self_runner(runner.status, &gone).await {
        tracing::error!(runner = %runner.name, error = format!("{:#}", anyhow::Error::from(e)), "freeing the place of a runner GitHub refused failed");
    }
}

/// Where the identity's runners register, and the App installation there.
async fn installation(
    ports: &Ports,
    identity: &TrustedIdentity,
) -> ServiceResult<(RunnerTarget, i64)> {
    let placement = &identity.runners;
    let (target, found) = match (placement.scope, &placement.org, &placement.repo) {
        (Scope::Org, Some(org), _) => (
            RunnerTarget::Org(org.clone()),
            ports.github.org_installation(org).await,
        ),
        (Scope::Repo, _, Some(repo)) => (
            RunnerTarget::Repo(repo.clone()),
            ports.github.repo_installation(repo).await,
        ),
        _ => {
            return Err(ServiceError::Internal(anyhow::anyhow!(
                "trusted identity {} has no org or repo for its runners",
                identity.name
            )));
        }
    };
    let id = found.map_err(|source| ServiceError::GitHub {
        doing: "finding the GitHub App's installation",
        source,
    })?;
    Ok((target, id))
}

fn target_of(runner: &SelfServiceRunner) -> ServiceResult<RunnerTarget> {
    let p = &runner.placement;
    match (p.scope, &p.org, &p.repo) {
        (Scope::Org, Some(org), _) => Ok(RunnerTarget::Org(org.clone())),
        (Scope::Repo, _, Some(repo)) => Ok(RunnerTarget::Repo(repo.clone())),
        _ => Err(ServiceError::Internal(anyhow::anyhow!(
            "self-service runner {} has no org or repo",
            runner.name
        ))),
    }
}
