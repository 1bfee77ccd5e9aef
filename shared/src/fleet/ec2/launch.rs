//! The launch loop of [`super::Ec2Fleet`]: which (market, instance type,
//! subnet) to try next, what each EC2 refusal means, when to back off, and
//! how a launch whose answer was lost is found instead of repeated.
//!
//! It talks to EC2 through [`RunApi`], two calls wide, so the paths moto
//! cannot produce (capacity, limits, throttling, lost answers) are tested
//! here with a scripted fake.

use std::time::Duration;

use async_trait::async_trait;
use rand::Rng as _;
use sha2::{Digest, Sha256};

use crate::domain::{Invalid, Market, PoolSpec};
use crate::fleet::{FleetError, FleetResult, Launched};

/// The two markets a launch can use (a pool's `spot-fallback` is both, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarketKind {
    OnDemand,
    Spot,
}

impl MarketKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MarketKind::OnDemand => "on-demand",
            MarketKind::Spot => "spot",
        }
    }
}

/// One way to launch: a market, an instance type, a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combination {
    pub market: MarketKind,
    pub instance_type: String,
    pub subnet: String,
}

/// Every combination a pool allows, best first: markets in the pool's order
/// (spot before on-demand for `spot-fallback`, so the cheap market is
/// exhausted first), then instance types in the pool's order, then subnets.
pub fn combinations(spec: &PoolSpec) -> Vec<Combination> {
    let markets: &[MarketKind] = match spec.market {
        Market::OnDemand => &[MarketKind::OnDemand],
        Market::Spot => &[MarketKind::Spot],
        Market::SpotFallback => &[MarketKind::Spot, MarketKind::OnDemand],
    };
    let mut out = Vec::new();
    for &market in markets {
        for instance_type in &spec.instance_types {
            for subnet in &spec.subnets {
                out.push(Combination {
                    market,
                    instance_type: instance_type.clone(),
                    subnet: subnet.clone(),
                });
            }
        }
    }
    out
}

/// RunInstances' idempotency token: the same runner, attempt and
/// combination always give the same token, so EC2 answers a repeated call
/// with the instance it already made. 64 ASCII characters at most.
pub fn client_token(runner_id: &str, attempt: u32, combo: &Combination) -> String {
    let mut hash = Sha256::new();
    for part in [
        runner_id,
        &attempt.to_string(),
        &combo.instance_type,
        &combo.subnet,
        combo.market.as_str(),
    ] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    let mut digest = hex::encode(hash.finalize());
    digest.truncate(48);
    format!("pacer-{digest}")
}

/// Why one EC2 call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// EC2 answered with an error code.
    #[error("EC2 refused it: {code}: {message}")]
    Refused { code: String, message: String },
    /// No answer (timeout, lost connection): the instance may or may not exist.
    #[error("no answer from EC2: {0}")]
    Unknown(String),
}

impl Failure {
    pub fn refused(code: &str, message: &str) -> Self {
        Failure::Refused {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// What the loop needs from EC2.
#[async_trait]
pub trait RunApi: Send + Sync {
    /// RunInstances for one combination, with this idempotency token.
    async fn run(&self, combo: &Combination, client_token: &str) -> Result<Launched, Failure>;
    /// The runner's live instance, found by its `pacer:runner` tag.
    async fn find(&self) -> Result<Option<Launched>, Failure>;
}

/// How long and how often the loop retries the same combination.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries of a throttled call (RequestLimitExceeded) before `Throttled`.
    pub throttled: u32,
    /// Retries of a call whose outcome is unknown before giving up.
    pub unknown: u32,
    /// First backoff; each retry doubles it, up to `cap`, with full jitter.
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            throttled: 5,
            unknown: 2,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: a uniform pause in `[0, min(cap, base·2ⁿ)]`, so many
    /// throttled orchestrators spread out instead of retrying in step.
    fn pause(&self, retry: u32) -> Duration {
        let ceiling = self.base.saturating_mul(1 << retry.min(16)).min(self.cap);
        ceiling.mul_f64(rand::rng().random_range(0.0..=1.0))
    }
}

/// What an EC2 error code means for the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// No capacity for this combination: try the next.
    NextCombination,
    /// An account limit; in `spot-fallback` a spot limit still leaves on-demand.
    Limit,
    Throttled,
    /// EC2 failed on its side; the call may have launched something.
    Unknown,
    /// The pool names something EC2 does not accept.
    InvalidPool(&'static str),
    Permanent,
}

fn verdict(code: &str, message: &str) -> Verdict {
    let has = |needle: &str| message.to_ascii_lowercase().contains(needle);
    match code {
        "InsufficientInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "InsufficientFreeAddressesInSubnet"
        | "Unsupported"
        | "SpotMaxPriceTooLow"
        | "capacity-not-available" => Verdict::NextCombination,
        "InstanceLimitExceeded" | "VcpuLimitExceeded" | "MaxSpotInstanceCountExceeded" => {
            Verdict::Limit
        }
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" => Verdict::Throttled,
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable" => {
            Verdict::Unknown
        }
        c if c.starts_with("InvalidAMIID") => Verdict::InvalidPool("ami"),
        c if c.starts_with("InvalidSubnet") => Verdict::InvalidPool("subnets"),
        c if c.starts_with("InvalidGroup") || c.starts_with("InvalidSecurityGroup") => {
            Verdict::InvalidPool("security_groups")
        }
        "InvalidInstanceType" => Verdict::InvalidPool("instance_types"),
        "InvalidParameterValue" | "InvalidParameterCombination"
            if has("iaminstanceprofile") || has("instance profile") =>
        {
            Verdict::InvalidPool("instance_profile")
        }
        "InvalidParameterValue" if has("instancetype") || has("instance type") => {
            Verdict::InvalidPool("instance_types")
        }
        _ => Verdict::Permanent,
    }
}

/// Launches one instance: each combination in order until one works.
///
/// Within a combination the token stays the same, so a retry after
/// throttling or a lost answer can only ever return the instance EC2 made
/// already. Where tokens are not honoured (moto), a lost answer is first
/// looked up by the runner's tag.
pub async fn run_plan(
    api: &dyn RunApi,
    runner_id: &str,
    attempt: u32,
    plan: &[Combination],
    policy: &RetryPolicy,
) -> FleetResult<Launched> {
    let mut refusals: Vec<String> = Vec::new();
    let mut spot_limited = false;
    let has_on_demand = plan.iter().any(|c| c.market == MarketKind::OnDemand);

    for combo in plan {
        if spot_limited && combo.market == MarketKind::Spot {
            continue;
        }
        let token = client_token(runner_id, attempt, combo);
        let what = format!(
            "{} {} in {}",
            combo.market.as_str(),
            combo.instance_type,
            combo.subnet
        );
        let (mut throttled, mut unknown) = (0u32, 0u32);
        loop {
            let (code, message) = match api.run(combo, &token).await {
                Ok(launched) => return Ok(launched),
                Err(Failure::Unknown(why)) => ("no answer".to_string(), why),
                Err(Failure::Refused { code, message }) => (code, message),
            };
            let verdict = if code == "no answer" {
                Verdict::Unknown
            } else {
                verdict(&code, &message)
            };
            match verdict {
                Verdict::NextCombination => {
                    tracing::info!(combination = %what, %code, "no capacity; trying the next combination");
                    refusals.push(format!("{what}: {code}"));
                    break;
                }
                Verdict::Limit if combo.market == MarketKind::Spot && has_on_demand => {
                    tracing::info!(combination = %what, %code, "spot limit reached; falling back to on-demand");
                    refusals.push(format!("{what}: {code}"));
                    spot_limited = true;
                    break;
                }
                Verdict::Limit => {
                    return Err(FleetError::LimitExceeded(format!(
                        "{what}: {code}: {message}"
                    )));
                }
                Verdict::Throttled => {
                    if throttled == policy.throttled {
                        return Err(FleetError::Throttled(format!(
                            "{what}: {code} after {} retries",
                            policy.throttled
                        )));
                    }
                    tokio::time::sleep(policy.pause(throttled)).await;
                    throttled += 1;
                }
                Verdict::Unknown => {
                    // The instance may exist: look before asking again.
                    match api.find().await {
                        Ok(Some(launched)) => return Ok(launched),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %crate::error_text::display_chain(&e), "could not look the runner's instance up; retrying with the same token")
                        }
                    }
                    if unknown == policy.unknown {
                        return Err(FleetError::Other(anyhow::anyhow!(
                            "launching {what}: no usable answer after {} tries: {code}: {message}",
                            policy.unknown + 1
                        )));
                    }
                    tokio::time::sleep(policy.pause(unknown)).await;
                    unknown += 1;
                }
                Verdict::InvalidPool(field) => {
                    return Err(FleetError::InvalidPool(Invalid::new(
                        field,
                        format!("EC2 refused {what}: {code}: {message}"),
                    )));
                }
                Verdict::Permanent => {
                    return Err(FleetError::Permanent(format!(
                        "EC2 refused {what}: {code}: {message}"
                    )));
                }
            }
        }
    }
    Err(FleetError::NoCapacity(if refusals.is_empty() {
        "the pool allows no combination".into()
    } else {
        refusals.join("; ")
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    /// A fake EC2 that answers each RunInstances from a script and records
    /// every call.
    struct Scripted {
        answers: Mutex<VecDeque<Result<Launched, Failure>>>,
        found: Mutex<Option<Launched>>,
        calls: Mutex<Vec<(Combination, String)>>,
        finds: Mutex<u32>,
    }

    impl Scripted {
        fn new(answers: Vec<Result<Launched, Failure>>) -> Self {
            Self {
                answers: Mutex::new(answers.into()),
                found: Mutex::new(None),
                calls: Mutex::default(),
                finds: Mutex::new(0),
            }
        }
        fn calls(&self) -> Vec<(Combination, String)> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl RunApi for Scripted {
        async fn run(&self, combo: &Combination, token: &str) -> Result<Launched, Failure> {
            self.calls
                .lock()
                .unwrap()
                .push((combo.clone(), token.to_string()));
            self.answers
                .lock()
                .unwrap()
                .pop_front()
                .expect("the script ran out of answers")
        }
        async fn find(&self) -> Result<Option<Launched>, Failure> {
            *self.finds.lock().unwrap() += 1;
            Ok(self.found.lock().unwrap().clone())
        }
    }

    fn launched(combo: &Combination) -> Launched {
        Launched {
            instance_id: "i-0123456789abcdef0".into(),
            instance_type: combo.instance_type.clone(),
            availability_zone: Some("us-east-1a".into()),
            market: combo.market.as_str().into(),
        }
    }

    fn combo(market: MarketKind, instance_type: &str, subnet: &str) -> Combination {
        Combination {
            market,
            instance_type: instance_type.into(),
            subnet: subnet.into(),
        }
    }

    fn plan(markets: &[MarketKind]) -> Vec<Combination> {
        let mut out = Vec::new();
        for &m in markets {
            for t in ["m7g.large", "m6g.large"] {
                for s in ["subnet-a", "subnet-b"] {
                    out.push(combo(m, t, s));
                }
            }
        }
        out
    }

    fn refused(code: &str) -> Result<Launched, Failure> {
        Err(Failure::refused(code, "scripted"))
    }

    const FAST: RetryPolicy = RetryPolicy {
        throttled: 3,
        unknown: 2,
        base: Duration::from_millis(100),
        cap: Duration::from_secs(1),
    };

    #[test]
    fn spot_fallback_tries_every_spot_combination_before_on_demand() {
        let spec = serde_json::from_value::<PoolSpec>(serde_json::json!({
            "project_id": "p", "name": "n", "labels": [], "instance_types": ["m7g.large", "m6g.large"],
            "subnets": ["subnet-a", "subnet-b"], "security_groups": [], "ami": "ami-12345678",
            "instance_profile": null, "market": "spot-fallback", "max_runners": 1, "root_volume_gb": 30,
            "boot_timeout": "10m", "max_lifetime": "1h", "idle_timeout": "5m", "priority": 0
        }))
        .unwrap();
        assert_eq!(
            combinations(&spec),
            plan(&[MarketKind::Spot, MarketKind::OnDemand])
        );
    }

    #[test]
    fn tokens_are_stable_per_combination_and_differ_between_them() {
        let a = combo(MarketKind::Spot, "m7g.large", "subnet-a");
        let b = combo(MarketKind::OnDemand, "m7g.large", "subnet-a");
        assert_eq!(client_token("run_1", 0, &a), client_token("run_1", 0, &a));
        assert_ne!(client_token("run_1", 0, &a), client_token("run_1", 0, &b));
        assert_ne!(client_token("run_1", 0, &a), client_token("run_1", 1, &a));
        assert_ne!(client_token("run_1", 0, &a), client_token("run_2", 0, &a));
        assert!(client_token("run_1", 0, &a).len() <= 64);
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_errors_walk_subnets_then_types_in_order() {
        let plan = plan(&[MarketKind::OnDemand]);
        let api = Scripted::new(vec![
            refused("InsufficientInstanceCapacity"),
            refused("Unsupported"),
            Ok(launched(&plan[2])),
        ]);
        let got = run_plan(&api, "run_1", 0, &plan, &FAST).await.unwrap();
        assert_eq!(got.instance_type, "m6g.large");
        let tried: Vec<_> = api.calls().into_iter().map(|(c, _)| c).collect();
        assert_eq!(tried, plan[..3].to_vec());
    }

    #[tokio::test(start_paused = true)]
    async fn spot_shortage_falls_back_to_on_demand() {
        let plan = plan(&[MarketKind::Spot, MarketKind::OnDemand]);
        let mut answers: Vec<_> = (0..4).map(|_| refused("SpotMaxPriceTooLow")).collect();
        answers.push(Ok(launched(&plan[4])));
        let api = Scripted::new(answers);
        let got = run_plan(&api, "run_1", 0, &plan, &FAST).await.unwrap();
        assert_eq!(got.market, "on-demand");
        assert_eq!(api.calls().len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spot_limit_skips_the_other_spot_combinations() {
        let plan = plan(&[MarketKind::Spot, MarketKind::OnDemand]);
        let api = Scripted::new(vec![
            refused("MaxSpotInstanceCountExceeded"),
            Ok(launched(&plan[4])),
        ]);
        let got = run_plan(&api, "run_1", 0, &plan, &FAST).await.unwrap();
        assert_eq!(got.market, "on-demand");
        assert_eq!(api.calls()[1].0, plan[4]);
    }

    #[tokio::test(start_paused = true)]
    async fn exhausting_every_combination_is_no_capacity_naming_each() {
        let plan = plan(&[MarketKind::OnDemand]);
        let api = Scripted::new(
            (0..4)
                .map(|_| refused("InsufficientInstanceCapacity"))
                .collect(),
        );
        match run_plan(&api, "run_1", 0, &plan, &FAST).await {
            Err(FleetError::NoCapacity(why)) => {
                assert!(
                    why.contains("m6g.large in subnet-b: InsufficientInstanceCapacity"),
                    "{why}"
                )
            }
            other => panic!("expected NoCapacity, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn account_limits_stop_the_launch() {
        for code in ["VcpuLimitExceeded", "InstanceLimitExceeded"] {
            let api = Scripted::new(vec![refused(code)]);
            let err = run_plan(&api, "run_1", 0, &plan(&[MarketKind::OnDemand]), &FAST)
                .await
                .unwrap_err();
            assert!(
                matches!(err, FleetError::LimitExceeded(ref m) if m.contains(code)),
                "{err:?}"
            );
            assert_eq!(api.calls().len(), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_retries_the_same_combination_with_the_same_token() {
        let plan = plan(&[MarketKind::OnDemand]);
        let api = Scripted::new(vec![
            refused("RequestLimitExceeded"),
            refused("RequestLimitExceeded"),
            Ok(launched(&plan[0])),
        ]);
        run_plan(&api, "run_1", 0, &plan, &FAST).await.unwrap();
        let calls = api.calls();
        assert_eq!(calls.len(), 3);
        assert!(
            calls.iter().all(|c| c == &calls[0]),
            "same combination and token every time"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_beyond_the_budget_is_reported_as_throttled() {
        let api = Scripted::new((0..4).map(|_| refused("RequestLimitExceeded")).collect());
        let err = run_plan(&api, "run_1", 0, &plan(&[MarketKind::OnDemand]), &FAST)
            .await
            .unwrap_err();
        assert!(matches!(err, FleetError::Throttled(_)), "{err:?}");
        assert_eq!(api.calls().len(), 4, "one call and three retries");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_answer_is_looked_up_and_not_launched_again() {
        let plan = plan(&[MarketKind::OnDemand]);
        let api = Scripted::new(vec![Err(Failure::Unknown("timed out".into()))]);
        *api.found.lock().unwrap() = Some(launched(&plan[0]));
        let got = run_plan(&api, "run_1", 0, &plan, &FAST).await.unwrap();
        assert_eq!(got.instance_id, "i-0123456789abcdef0");
        assert_eq!(api.calls().len(), 1, "RunInstances was not repeated");
        assert_eq!(*api.finds.lock().unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_answer_with_no_instance_retries_with_the_same_token() {
        let plan = plan(&[MarketKind::OnDemand]);
        let api = Scripted::new(vec![refused("InternalError"), Ok(launched(&plan[0]))]);
        run_plan(&api, "run_1", 0, &plan, &FAST).await.unwrap();
        let calls = api.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0], calls[1]);
        assert_eq!(*api.finds.lock().unwrap(), 1, "looked before retrying");
    }

    #[tokio::test(start_paused = true)]
    async fn configuration_errors_name_the_pool_field() {
        for (code, message, field) in [
            (
                "InvalidAMIID.NotFound",
                "The image id '[ami-1]' does not exist",
                "ami",
            ),
            (
                "InvalidSubnetID.NotFound",
                "The subnet ID 'subnet-1' does not exist",
                "subnets",
            ),
            (
                "InvalidGroup.NotFound",
                "The security group 'sg-1' does not exist",
                "security_groups",
            ),
            (
                "InvalidParameterValue",
                "Value (pacer-runner) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name",
                "instance_profile",
            ),
        ] {
            let api = Scripted::new(vec![Err(Failure::refused(code, message))]);
            match run_plan(&api, "run_1", 0, &plan(&[MarketKind::OnDemand]), &FAST).await {
                Err(FleetError::InvalidPool(invalid)) => assert_eq!(invalid.field, field, "{code}"),
                other => panic!("{code}: expected InvalidPool, got {other:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn other_refusals_are_permanent_with_the_reason() {
        let api = Scripted::new(vec![Err(Failure::refused(
            "UnauthorizedOperation",
            "You are not authorized",
        ))]);
        let err = run_plan(&api, "run_1", 0, &plan(&[MarketKind::OnDemand]), &FAST)
            .await
            .unwrap_err();
        assert!(
            matches!(err, FleetError::Permanent(ref m) if m.contains("UnauthorizedOperation")),
            "{err:?}"
        );
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let policy = RetryPolicy::default();
        for retry in 0..40 {
            assert!(policy.pause(retry) <= policy.cap);
        }
    }
}
