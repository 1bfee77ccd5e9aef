//! Pools: how a runner is launched on EC2, and how many at most.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::duration::go as serde_go;
use super::fields::Fields;
use super::labels::{
    LabelSet, PoolCandidate, SELF_HOSTED, job_labels, match_pool, offered_labels, parse_labels,
};
use super::project::{Project, parse_name};
use super::{Invalid, Time};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum Market {
    OnDemand,
    Spot,
    /// Spot first; on-demand when spot capacity is short.
    SpotFallback,
}

/// The fields of a pool a client may write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct PoolSpec {
    pub project_id: String,
    pub name: String,
    pub labels: LabelSet,
    pub instance_types: Vec<String>,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub ami: String,
    pub instance_profile: Option<String>,
    pub market: Market,
    pub max_runners: u32,
    pub root_volume_gb: u32,
    #[serde(with = "serde_go")]
    #[cfg_attr(test, ts(type = "string"))]
    pub boot_timeout: Duration,
    #[serde(with = "serde_go")]
    #[cfg_attr(test, ts(type = "string"))]
    pub max_lifetime: Duration,
    #[serde(with = "serde_go")]
    #[cfg_attr(test, ts(type = "string"))]
    pub idle_timeout: Duration,
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Pool {
    pub id: String,
    #[serde(flatten)]
    pub spec: PoolSpec,
    /// Runners holding a capacity reservation now (never above `max_runners`).
    pub active_runners: u32,
    /// Set while an account limit stops launches in this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<Degraded>,
    pub created_at: Time,
    pub updated_at: Time,
}

/// Why a pool launches nothing for now, and until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Degraded {
    /// What EC2 said, in words for the operator.
    pub reason: String,
    pub since: Time,
    /// Launches are tried again from this time (`reaper.degraded_cooldown`).
    pub retry_at: Time,
}

pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(6 * 3600);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

fn each_matches(
    field: &str,
    items: &[String],
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> Result<(), Invalid> {
    match items.iter().find(|i| !ok(i)) {
        Some(bad) => Err(Invalid::new(field, format!("{bad:?} is not {what}"))),
        None => Ok(()),
    }
}

fn aws_id(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|hex| {
        (8..=17).contains(&hex.len())
            && hex
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    })
}

/// Longer than any EC2 instance type (`u7inh-32tb.480xlarge` is 20).
const MAX_INSTANCE_TYPE_BYTES: usize = 64;

/// `family.size` as EC2 names instance types: lower-case letters, digits and `-`.
pub fn is_instance_type(s: &str) -> bool {
    if s.len() > MAX_INSTANCE_TYPE_BYTES {
        return false;
    }
    let mut parts = s.split('.');
    let (Some(family), Some(size), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let word = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    word(family) && word(size)
}

/// The longest SSM parameter name (its full path) SSM accepts.
const MAX_SSM_PARAMETER_BYTES: usize = 2048;

fn ami(s: &str) -> bool {
    aws_id("ami-", s)
        || s.strip_prefix("resolve:ssm:/").is_some_and(|p| {
            !p.is_empty()
                && p.len() < MAX_SSM_PARAMETER_BYTES
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_.-:".contains(c))
        })
}

fn instance_profile(s: &str) -> bool {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 128
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@-_/".contains(c))
    };
    match s.strip_prefix("arn:") {
        Some(rest) => {
            rest.contains(":iam::")
                && rest
                    .split_once(":instance-profile/")
                    .is_some_and(|(_, n)| name_ok(n))
        }
        None => name_ok(s) && !s.contains('/'),
    }
}

fn nonempty_unique(field: &str, items: Vec<String>, most: usize) -> Result<Vec<String>, Invalid> {
    if items.is_empty() {
        return Err(Invalid::new(field, "needs at least one entry"));
    }
    unique(field, items, most)
}

/// At most `most` entries, none twice: more than EC2 could use is a mistake
/// (or an attack on the store), refused by name.
fn unique(field: &str, items: Vec<String>, most: usize) -> Result<Vec<String>, Invalid> {
    if items.len() > most {
        return Err(Invalid::new(
            field,
            format!("lists {} entries; at most {most}", items.len()),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = items.iter().find(|i| !seen.insert(i.as_str())) {
        return Err(Invalid::new(field, format!("lists {dup:?} twice")));
    }
    Ok(items)
}

impl PoolSpec {
    /// Validates a create body (or an existing spec merged with a PATCH).
    /// Whether `project_id` names a project is the caller's check.
    pub fn parse(body: Map<String, Value>) -> Result<Self, Invalid> {
        let mut f = Fields::new(body);
        let project_id = f.required("project_id", Fields::string)?;
        let name = parse_name("name", &f.required("name", Fields::string)?)?;
        let labels = parse_labels("labels", &f.strings("labels")?.unwrap_or_default())?;
        if labels.iter().any(|l| l.as_str() == SELF_HOSTED) {
            return Err(Invalid::new(
                "labels",
                "need not list \"self-hosted\": every runner carries it",
            ));
        }
        if labels.len() > 90 {
            return Err(Invalid::new(
                "labels",
                "at most 90 labels (GitHub allows 100 per runner, pacer adds two)",
            ));
        }
        // Fallbacks tried in turn: a few dozen is already more than a launch waits for.
        let instance_types = nonempty_unique(
            "instance_types",
            f.required("instance_types", Fields::strings)?,
            40,
        )?;
        each_matches(
            "instance_types",
            &instance_types,
            "an EC2 instance type like m7g.large",
            is_instance_type,
        )?;
        // One per availability zone in reason; a region has at most a few dozen.
        let subnets = nonempty_unique("subnets", f.required("subnets", Fields::strings)?, 100)?;
        each_matches(
            "subnets",
            &subnets,
            "a subnet id like subnet-0abc1234",
            |s| aws_id("subnet-", s),
        )?;
        // EC2 takes at most 16 security groups on an instance's interface.
        let security_groups = unique(
            "security_groups",
            f.strings("security_groups")?.unwrap_or_default(),
            16,
        )?;
        each_matches(
            "security_groups",
            &security_groups,
            "a security group id like sg-0abc1234",
            |s| aws_id("sg-", s),
        )?;
        let ami_value = f.required("ami", Fields::string)?;
        if !ami(&ami_value) {
            return Err(Invalid::new(
                "ami",
                format!("{ami_value:?} is not an AMI id (ami-…) or resolve:ssm:/parameter/path"),
            ));
        }
        let profile = f.string("instance_profile")?.filter(|s| !s.is_empty());
        if let Some(p) = &profile {
            if !instance_profile(p) {
                return Err(Invalid::new(
                    "instance_profile",
                    format!("{p:?} is not an instance profile name or ARN"),
                ));
            }
        }
        let market = match f.string("market")?.as_deref() {
            None | Some("on-demand") => Market::OnDemand,
            Some("spot") => Market::Spot,
            Some("spot-fallback") => Market::SpotFallback,
            Some(other) => {
                return Err(Invalid::new(
                    "market",
                    format!("must be on-demand, spot or spot-fallback, not {other:?}"),
                ));
            }
        };
        let max_runners = f.int("max_runners", 1, 10_000)?.unwrap_or(10) as u32;
        let root_volume_gb = f.int("root_volume_gb", 8, 16_384)?.unwrap_or(30) as u32;
        let minute = Duration::from_secs(60);
        let boot_timeout = f
            .duration("boot_timeout", minute, 2 * 3600 * Duration::from_secs(1))?
            .unwrap_or(DEFAULT_BOOT_TIMEOUT);
        let max_lifetime = f
            .duration("max_lifetime", 5 * minute, Duration::from_secs(7 * 86400))?
            .unwrap_or(DEFAULT_MAX_LIFETIME);
        let idle_timeout = f
            .duration("idle_timeout", minute, Duration::from_secs(86400))?
            .unwrap_or(DEFAULT_IDLE_TIMEOUT);
        if max_lifetime <= boot_timeout {
            return Err(Invalid::new(
                "max_lifetime",
                "must be longer than boot_timeout",
            ));
        }
        let priority = f.int("priority", -1000, 1000)?.unwrap_or(0) as i32;
        f.finish()?;
        Ok(Self {
            project_id,
            name,
            labels,
            instance_types,
            subnets,
            security_groups,
            ami: ami_value,
            instance_profile: profile,
            market,
            max_runners,
            root_volume_gb,
            boot_timeout,
            max_lifetime,
            idle_timeout,
            priority,
        })
    }
}

/// The pool a job's labels (as GitHub sent them) pick among a project's
/// pools: the rule of `match_pool`, offered labels being each pool's own plus
/// `self-hosted` and the project's label. `None` when no pool serves them.
pub fn pick_pool<'a>(project: &Project, pools: &'a [Pool], labels: &[String]) -> Option<&'a Pool> {
    let candidates: Vec<PoolCandidate<'_>> = pools
        .iter()
        .map(|p| PoolCandidate {
            id: &p.id,
            name: &p.spec.name,
            priority: p.spec.priority,
            offered: offered_labels(&p.spec.labels, &project.spec.label),
        })
        .collect();
    let chosen = match_pool(&job_labels(labels)?, &candidates)?;
    pools.iter().find(|p| p.id == chosen.pool_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({"project_id": "prj_x", "name": "linux-arm64", "labels": ["Linux", "arm64"],
               "instance_types": ["m7g.large", "m6g.large"], "subnets": ["subnet-0abc1234"],
               "security_groups": ["sg-0abc1234"], "ami": "ami-0123456789abcdef0"})
    }

    fn with(field: &str, value: Value) -> Map<String, Value> {
        let mut b = minimal().as_object().unwrap().clone();
        b.insert(field.into(), value);
        b
    }

    #[test]
    fn a_minimal_pool_gets_the_documented_defaults() {
        let p = PoolSpec::parse(minimal().as_object().unwrap().clone()).unwrap();
        assert_eq!(p.market, Market::OnDemand);
        assert_eq!((p.max_runners, p.root_volume_gb, p.priority), (10, 30, 0));
        assert_eq!(p.boot_timeout, DEFAULT_BOOT_TIMEOUT);
        assert!(
            p.labels.iter().any(|l| l.as_str() == "linux"),
            "labels are case-folded"
        );
    }

    #[test]
    fn durations_round_trip_as_go_strings() {
        let p = PoolSpec::parse(with("max_lifetime", json!("1h30m"))).unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["max_lifetime"], "1h30m");
        assert_eq!(serde_json::from_value::<PoolSpec>(v).unwrap(), p);
    }

    #[test]
    fn each_bad_field_is_named() {
        for (field, value) in [
            ("instance_types", json!([])),
            ("instance_types", json!(["large"])),
            ("instance_types", json!(["m7g.large", "m7g.large"])),
            ("subnets", json!(["subnet-XYZ"])),
            ("security_groups", json!(["sg-"])),
            // Listed twice, a group was kept twice (and 50 000 times, 50 000).
            ("security_groups", json!(["sg-0abc1234", "sg-0abc1234"])),
            // A megabyte of lower-case letters after `m7g.` was an instance type.
            (
                "instance_types",
                json!([format!("m7g.{}", "x".repeat(1_000_000))]),
            ),
            // Lists and paths had no bound either.
            (
                "instance_types",
                json!((0..41).map(|n| format!("m{n}.large")).collect::<Vec<_>>()),
            ),
            (
                "subnets",
                json!(
                    (0..101)
                        .map(|n| format!("subnet-{n:08x}"))
                        .collect::<Vec<_>>()
                ),
            ),
            (
                "security_groups",
                json!((0..17).map(|n| format!("sg-{n:08x}")).collect::<Vec<_>>()),
            ),
            ("ami", json!(format!("resolve:ssm:/{}", "a".repeat(2048)))),
            ("ami", json!("ubuntu")),
            ("market", json!("cheap")),
            ("max_runners", json!(0)),
            ("max_runners", json!(1.5)),
            ("root_volume_gb", json!(2)),
            ("boot_timeout", json!("12hours")),
            ("idle_timeout", json!("10s")),
            ("labels", json!(["self-hosted"])),
            ("instance_profile", json!("arn:aws:s3:::bucket")),
            ("name", json!("has space")),
        ] {
            let err = PoolSpec::parse(with(field, value.clone())).unwrap_err();
            assert_eq!(err.field, field, "{field} = {value}: {err}");
        }
    }

    #[test]
    fn no_security_group_is_allowed_too() {
        PoolSpec::parse(with("security_groups", json!([]))).unwrap();
    }

    #[test]
    fn max_lifetime_must_outlast_the_boot_timeout() {
        let mut b = with("boot_timeout", json!("30m"));
        b.insert("max_lifetime".into(), json!("10m"));
        assert_eq!(PoolSpec::parse(b).unwrap_err().field, "max_lifetime");
    }

    #[test]
    fn ssm_amis_and_profile_arns_are_accepted() {
        let mut b = with(
            "ami",
            json!(
                "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
            ),
        );
        b.insert(
            "instance_profile".into(),
            json!("arn:aws:iam::123456789012:instance-profile/pacer-runner"),
        );
        PoolSpec::parse(b).unwrap();
    }

    fn pool_fields() -> Vec<(&'static str, Vec<Value>)> {
        vec![
            ("project_id", vec![json!("prj_x"), json!("")]),
            (
                "name",
                vec![
                    json!("linux-arm64"),
                    json!("has space"),
                    json!("x".repeat(65)),
                ],
            ),
            (
                "labels",
                vec![
                    json!(["Linux", "arm64"]),
                    json!([]),
                    json!(["self-hosted"]),
                    json!(["a,b"]),
                    json!(vec!["l"; 91]),
                    json!([1]),
                ],
            ),
            (
                "instance_types",
                vec![
                    json!(["m7g.large"]),
                    json!(["m7g.large", "m7g.large"]),
                    json!([]),
                    json!(["large"]),
                ],
            ),
            (
                "subnets",
                vec![json!(["subnet-0abc1234"]), json!(["subnet-XYZ"]), json!([])],
            ),
            (
                "security_groups",
                vec![json!(["sg-0abc1234"]), json!(["sg-"]), json!([])],
            ),
            (
                "ami",
                vec![
                    json!("ami-0123456789abcdef0"),
                    json!("resolve:ssm:/aws/service/x"),
                    json!("resolve:ssm:/"),
                    json!("ubuntu"),
                ],
            ),
            (
                "instance_profile",
                vec![
                    json!("pacer-runner"),
                    json!("arn:aws:iam::1:instance-profile/p"),
                    json!("arn:aws:s3:::b"),
                    json!(""),
                ],
            ),
            (
                "market",
                vec![
                    json!("on-demand"),
                    json!("spot"),
                    json!("spot-fallback"),
                    json!("cheap"),
                ],
            ),
            (
                "max_runners",
                vec![json!(1), json!(10_000), json!(10_001), json!(0)],
            ),
            ("root_volume_gb", vec![json!(8), json!(16_384), json!(7)]),
            (
                "boot_timeout",
                vec![
                    json!("1m"),
                    json!("2h"),
                    json!("30m"),
                    json!("59s"),
                    json!("9999999999999999999h"),
                ],
            ),
            (
                "max_lifetime",
                vec![json!("5m"), json!("168h"), json!("1h30m"), json!("169h")],
            ),
            (
                "idle_timeout",
                vec![json!("1m"), json!("24h"), json!("10s"), json!("1.5h")],
            ),
            (
                "priority",
                vec![json!(-1000), json!(1000), json!(0), json!(1001)],
            ),
        ]
    }

    use crate::domain::fields::properties::{refusal_names_a_field, round_trips};

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_pool_body_is_a_pool_or_a_refusal_naming_a_field(body in crate::arbitrary::object_with(pool_fields())) {
            let known: Vec<&str> = pool_fields().iter().map(|(name, _)| *name).collect();
            match PoolSpec::parse(body.clone()) {
                Ok(spec) => {
                    proptest::prop_assert!(spec.max_lifetime > spec.boot_timeout);
                    round_trips(&spec, PoolSpec::parse)?;
                }
                Err(e) => refusal_names_a_field(&e, &body, &known)?,
            }
        }
    }
}
