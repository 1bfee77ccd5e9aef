//! The fleet port: machines that become runners. Adapters: [`ec2::Ec2Fleet`]
//! (real EC2, or moto through `aws.endpoint_url`) and
//! [`simulated::SimulatedFleet`] (`fleet.engine: simulated`: instances that
//! "boot" in-process and play the runner's side of the protocol).

use async_trait::async_trait;

use crate::config::Secret;
use crate::domain::{Invalid, Pool, Time};

pub mod ec2;
pub mod simulated;
pub mod user_data;

/// Tag keys every instance carries.
pub const TAG_DEPLOYMENT: &str = "pacer:deployment";
pub const TAG_POOL: &str = "pacer:pool";
pub const TAG_JOB: &str = "pacer:job";
pub const TAG_RUNNER: &str = "pacer:runner";
/// The pool's project: with `pacer:pool` and `pacer:repo`, what the bill is split by once they
/// are activated as cost-allocation tags.
pub const TAG_PROJECT: &str = "pacer:project";
/// The repository of the job the runner was launched for (GitHub may give it another's job).
pub const TAG_REPO: &str = "pacer:repo";

/// One instance to launch for one runner.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub pool: Pool,
    pub runner_id: String,
    pub runner_name: String,
    /// The job the runner is launched for (GitHub may hand it another).
    pub job: Option<JobRef>,
    /// How the runner calls pacer back: what its bootstrap script is given.
    pub callback: RunnerCallback,
    /// Persisted by the caller before this call; with the runner id it
    /// derives the idempotency token, so a retried call never makes a
    /// second instance.
    pub attempt: u32,
    /// The caller recorded this runner moments ago and has never launched
    /// it (the orchestrator's claim makes a new runner every time): no
    /// earlier instance can exist, so the fleet does not look for one
    /// before launching — one AWS round trip less on every launch. False
    /// where a launch may repeat one whose answer was lost.
    pub first_launch: bool,
}

impl LaunchRequest {
    /// The instance's user data: the bootstrap script with the callback
    /// settings in its header. It holds the callback token: never log it.
    pub fn user_data(&self) -> String {
        user_data::render(&self.callback.url, &self.callback.token)
    }
}

/// Where and with what a runner calls pacer back.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerCallback {
    /// pacer's base URL as the runner reaches it (`server.callback_url`).
    pub url: String,
    /// The runner's callback token.
    pub token: Secret,
}

/// The job a runner is launched for, as a fleet needs it: its tag, and
/// (for the simulated fleet playing GitHub offline) what a webhook about it
/// would carry.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRef {
    pub id: String,
    pub github_job_id: i64,
    pub run_id: i64,
    pub repo: String,
    pub labels: Vec<String>,
    pub installation_id: Option<i64>,
}

/// What was actually launched.
#[derive(Debug, Clone, PartialEq)]
pub struct Launched {
    pub instance_id: String,
    pub instance_type: String,
    pub availability_zone: Option<String>,
    /// `on-demand` | `spot`.
    pub market: String,
}

/// An instance of this deployment, as the fleet sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub instance_id: String,
    /// `pending` | `running` | `shutting-down` | `terminated` | `stopping` | `stopped`.
    pub state: String,
    pub runner_id: Option<String>,
    pub pool_id: Option<String>,
    pub launched_at: Option<Time>,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The pool's configuration is wrong (bad AMI, subnet, profile…): the
    /// field is named; retrying will not help.
    #[error(transparent)]
    InvalidPool(Invalid),
    /// No capacity for any type/subnet/market the pool allows, right now.
    #[error("no capacity: {0}")]
    NoCapacity(String),
    /// An account limit (instances, vCPUs): the pool is degraded until it lifts.
    #[error("account limit: {0}")]
    LimitExceeded(String),
    /// Throttled beyond the adapter's own backoff.
    #[error("throttled: {0}")]
    Throttled(String),
    /// Any other permanent refusal, in words for the job's failure reason.
    #[error("{0}")]
    Permanent(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub type FleetResult<T> = Result<T, FleetError>;

#[async_trait]
pub trait Fleet: Send + Sync + 'static {
    /// Checks a pool against the cloud (AMI, instance types, subnets,
    /// security groups, profile) and creates or updates its launch
    /// template. Returns the template id, if the fleet uses one.
    async fn prepare_pool(&self, pool: &Pool) -> FleetResult<Option<String>>;
    /// Removes what `prepare_pool` made.
    async fn forget_pool(&self, pool: &Pool) -> FleetResult<()>;
    /// Launches one instance, falling back over the pool's instance types,
    /// subnets and (for `spot-fallback`) markets.
    async fn launch(&self, req: &LaunchRequest) -> FleetResult<Launched>;
    /// The instance launched for a runner, found by its tag (to learn the
    /// outcome of a launch whose answer was lost).
    async fn instance_for_runner(&self, runner_id: &str) -> FleetResult<Option<Instance>>;
    /// Every live instance tagged with this deployment.
    async fn list_instances(&self) -> FleetResult<Vec<Instance>>;
    /// Terminates an instance; one already gone is success.
    async fn terminate(&self, instance_id: &str) -> FleetResult<()>;
}
