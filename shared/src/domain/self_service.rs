//! Self-service runners: a machine outside EC2 (another team's GPU box, a
//! job in another CI system) gets a just-in-time runner configuration for
//! itself by presenting an OIDC token from a **trusted identity**. What it may
//! ask for is a **label policy**; what it holds is a [`SelfServiceRunner`];
//! every refusal is a [`SecurityEvent`]. `docs/self-service.md` is the
//! operator's guide.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::labels::{Label, LabelSet, MAX_LABEL_BYTES, SELF_HOSTED};
use super::project::{RepoName, Scope};
use super::{Invalid, Time};

/// Who may ask for runners: an OIDC issuer, the audience its tokens must
/// name, and the claim rules that pick which of the issuer's subjects count.
#[derive(Debug, Clone)]
pub struct TrustedIdentity {
    /// `[a-z0-9-]+`, unique: the first half of every owner this identity
    /// admits (`<name>:<claim value>`).
    pub name: String,
    /// Compared byte for byte with a token's `iss`.
    pub issuer: String,
    /// Where the signing keys are; `None`: from the issuer's discovery
    /// document.
    pub jwks_url: Option<String>,
    /// A token's `aud` must contain it.
    pub audience: String,
    /// The claim whose value names the owner of a runner.
    pub identity_claim: String,
    /// Every rule must hold.
    pub claims: Vec<ClaimRule>,
    /// When not empty, the caller's address must be in one of them.
    pub source_cidrs: Vec<IpNet>,
    /// `exp - iat` may not exceed it.
    pub max_token_lifetime: Duration,
    /// Where this identity's runners register on GitHub.
    pub runners: Placement,
    /// The policy for an owner that has none of its own.
    pub label_policy: Option<LabelPolicy>,
}

impl TrustedIdentity {
    /// Whether `address` may call for this identity.
    pub fn admits_address(&self, address: Option<IpAddr>) -> bool {
        self.source_cidrs.is_empty()
            || address.is_some_and(|ip| self.source_cidrs.iter().any(|net| net.contains(&ip)))
    }

    /// The first rule the claims break, as a reason a security event can
    /// hold; `Ok` when all hold.
    pub fn check_claims(&self, claims: &serde_json::Map<String, Value>) -> Result<(), String> {
        self.claims.iter().try_for_each(|rule| rule.check(claims))
    }

    /// The owner a token with `claims` speaks for: `<name>:<value of the
    /// identity claim>`, or why there is none.
    pub fn owner(&self, claims: &serde_json::Map<String, Value>) -> Result<String, String> {
        let value = claim_text(claims, &self.identity_claim)?;
        if value.is_empty() {
            return Err(format!("claim {:?} is empty", self.identity_claim));
        }
        Ok(format!("{}:{value}", self.name))
    }
}

/// A claim's value as text: a string as it is, a number or a boolean as JSON
/// writes it. Anything else (absent, null, an array, an object) fails: a rule
/// never guesses which element of a list was meant.
fn claim_text(claims: &serde_json::Map<String, Value>, claim: &str) -> Result<String, String> {
    match claims.get(claim) {
        None | Some(Value::Null) => Err(format!("claim {claim:?} is missing")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
        Some(_) => Err(format!("claim {claim:?} is not a single value")),
    }
}

/// One condition on one claim.
#[derive(Debug, Clone)]
pub struct ClaimRule {
    pub claim: String,
    pub test: ClaimTest,
}

#[derive(Debug, Clone)]
pub enum ClaimTest {
    /// The value is exactly this text.
    Exact(String),
    /// The value starts with this text.
    Prefix(String),
    /// The whole value matches (the pattern is anchored at both ends).
    Regex(AnchoredRegex),
}

impl ClaimRule {
    /// `Ok` when the claim is present and passes; otherwise what failed,
    /// naming the claim and the rule's kind but not the value it wanted.
    pub fn check(&self, claims: &serde_json::Map<String, Value>) -> Result<(), String> {
        let value = claim_text(claims, &self.claim)?;
        let (holds, kind) = match &self.test {
            ClaimTest::Exact(want) => (value == *want, "is not the value required"),
            ClaimTest::Prefix(prefix) => (value.starts_with(prefix.as_str()), "lacks the prefix"),
            ClaimTest::Regex(re) => (re.is_match(&value), "does not match the pattern"),
        };
        if holds {
            Ok(())
        } else {
            Err(format!("claim {:?} {kind}", self.claim))
        }
    }
}

/// A regular expression that must match a whole value: written `a|b`, it
/// means `^(?:a|b)$`, never "contains a or b".
#[derive(Clone)]
pub struct AnchoredRegex {
    source: String,
    compiled: regex::Regex,
}

/// The largest compiled pattern pacer accepts (regex's size limit), so a
/// configured pattern cannot make matching expensive.
const REGEX_SIZE_LIMIT: usize = 1 << 16;

impl AnchoredRegex {
    pub fn new(source: &str) -> Result<Self, String> {
        let compiled = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("not a valid regular expression: {e}"))?;
        Ok(Self {
            source: source.to_string(),
            compiled,
        })
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.compiled.is_match(value)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for AnchoredRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AnchoredRegex({:?})", self.source)
    }
}

/// Where an identity's runners register on GitHub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Placement {
    pub scope: Scope,
    /// The organisation (scope `org`).
    pub org: Option<String>,
    /// The repository (scope `repo`).
    pub repo: Option<RepoName>,
    pub runner_group_id: i64,
    /// Put before every runner name the caller asks for.
    pub name_prefix: String,
}

/// A label glob of a policy: `*` stands for any run of characters, and the
/// pattern is compared with the whole label, case-folded like labels are.
/// It serialises as the pattern, case-folded.
#[derive(Clone)]
#[cfg_attr(test, derive(ts_rs::TS), ts(type = "string"))]
pub struct LabelGlob {
    pattern: String,
    /// globset's expressions match bytes.
    matcher: regex::bytes::Regex,
}

impl LabelGlob {
    /// globset turns the glob into a regular expression; pacer compiles it
    /// itself, under a size limit, so no pattern can fail (or panic) later.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let folded = pattern.trim().to_lowercase();
        if folded.is_empty() {
            return Err("a label pattern cannot be empty".into());
        }
        if folded.len() > MAX_LABEL_BYTES {
            return Err(format!(
                "a label pattern may be at most {MAX_LABEL_BYTES} bytes, like a label"
            ));
        }
        // What a label may not hold, a pattern may not either: it could only
        // be there to make the pattern read as something else.
        if folded.chars().any(super::text::is_invisible) {
            return Err(
                "a label pattern contains a control character or an invisible formatting character"
                    .into(),
            );
        }
        let glob = globset::GlobBuilder::new(&folded)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("label pattern {folded:?} is not a valid glob: {e}"))?;
        let matcher = regex::bytes::RegexBuilder::new(glob.regex())
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|_| format!("label pattern {folded:?} is too complex"))?;
        Ok(Self {
            pattern: folded,
            matcher,
        })
    }

    pub fn matches(&self, label: &Label) -> bool {
        self.matcher.is_match(label.as_str().as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

impl fmt::Debug for LabelGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LabelGlob({:?})", self.pattern)
    }
}

impl PartialEq for LabelGlob {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Serialize for LabelGlob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.pattern)
    }
}

impl<'de> Deserialize<'de> for LabelGlob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        LabelGlob::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The most patterns, and the most required labels, one policy holds.
pub const MAX_POLICY_LABELS: usize = 100;

/// What an owner may ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct LabelPolicy {
    /// Every requested label must match one.
    pub allowed_labels: Vec<LabelGlob>,
    /// Added to every runner, asked for or not.
    pub required_labels: Vec<Label>,
    /// Runners pending or active at once.
    pub max_live_runners: u32,
}

/// Why a request breaks a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    #[error("label {0:?} is not allowed by the label policy")]
    LabelNotAllowed(String),
    #[error("the label policy allows no runners (max_live_runners is 0)")]
    NoRunners,
}

/// Labels pacer gives every self-service runner itself; a caller asking
/// for one is asking for what it gets anyway, so it is dropped, not matched.
pub const COMPUTED_LABELS: &[&str] = &[SELF_HOSTED];

impl LabelPolicy {
    /// The labels a runner gets for `requested`: every requested label
    /// allowed, plus the required ones and those pacer computes.
    pub fn decide(&self, requested: &LabelSet) -> Result<LabelSet, PolicyViolation> {
        if self.max_live_runners == 0 {
            return Err(PolicyViolation::NoRunners);
        }
        let mut labels = LabelSet::new();
        for label in requested {
            if COMPUTED_LABELS.contains(&label.as_str()) {
                continue;
            }
            if !self.allowed_labels.iter().any(|glob| glob.matches(label)) {
                return Err(PolicyViolation::LabelNotAllowed(label.to_string()));
            }
            labels.insert(label.clone());
        }
        labels.extend(self.required_labels.iter().cloned());
        for computed in COMPUTED_LABELS {
            if let Ok(label) = Label::parse(computed) {
                labels.insert(label);
            }
        }
        Ok(labels)
    }
}

/// A label policy an administrator set for one owner, which wins over its
/// trusted identity's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct IdentityPolicy {
    /// `<trusted identity name>:<claim value>`.
    pub identity: String,
    #[serde(flatten)]
    pub policy: LabelPolicy,
    pub updated_at: Time,
    /// Who set it (a console user's id).
    pub updated_by: String,
}

/// The longest runner name a caller may ask for, before the prefix.
pub const MAX_RUNNER_NAME: usize = 64;

/// A requested runner name: `[A-Za-z0-9._-]{1,64}`.
pub fn parse_runner_name(raw: &str) -> Result<String, Invalid> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_RUNNER_NAME
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(Invalid::new(
            "runner_name",
            format!("must be 1 to {MAX_RUNNER_NAME} of A-Z, a-z, 0-9, '.', '_' and '-'"),
        ))
    }
}

/// Where a self-service runner is in its life, as pacer last learnt it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum SelfRunnerStatus {
    /// Registered on GitHub by its configuration, not yet seen online.
    Pending,
    /// Online on GitHub.
    Active,
    /// Known to GitHub, not connected.
    Offline,
    /// Gone from GitHub: deleted by its owner, by the reaper, or after its
    /// one job.
    Deleted,
}

impl SelfRunnerStatus {
    pub const ALL: [SelfRunnerStatus; 4] = [
        SelfRunnerStatus::Pending,
        SelfRunnerStatus::Active,
        SelfRunnerStatus::Offline,
        SelfRunnerStatus::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SelfRunnerStatus::Pending => "pending",
            SelfRunnerStatus::Active => "active",
            SelfRunnerStatus::Offline => "offline",
            SelfRunnerStatus::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Counted against an owner's `max_live_runners`.
    pub fn is_live(self) -> bool {
        matches!(self, SelfRunnerStatus::Pending | SelfRunnerStatus::Active)
    }
}

/// A runner a machine outside EC2 asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfServiceRunner {
    /// `ssr_<ULID>`: sorts by creation.
    pub id: String,
    /// The name on GitHub, prefix included; unique in the deployment.
    pub name: String,
    /// `<trusted identity name>:<claim value>`.
    pub owner: String,
    pub trusted_identity: String,
    pub labels: Vec<String>,
    pub github_runner_id: Option<i64>,
    /// The App installation the runner was registered through.
    pub installation_id: i64,
    pub placement: Placement,
    pub status: SelfRunnerStatus,
    /// The caller's address when it asked.
    pub source_ip: Option<String>,
    pub created_at: Time,
    /// When pacer first saw it online.
    pub registered_at: Option<Time>,
    pub updated_at: Time,
    pub deleted_at: Option<Time>,
    /// Bumped by every write; a write that finds another version is stale.
    pub version: u64,
}

/// How long a deleted self-service runner stays listed before the store
/// forgets it.
pub const DELETED_RUNNER_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a security event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum SecurityEventKind {
    /// The token failed a check (signature, issuer, audience, time…).
    InvalidToken,
    /// The token's `jti` was used before.
    Replay,
    /// A claim rule of the trusted identity failed.
    ClaimMismatch,
    /// The caller's address is outside the identity's `source_cidrs`.
    CidrRefused,
    /// A requested label is outside the policy, or there is no policy.
    LabelPolicy,
    /// The owner holds `max_live_runners` live runners already.
    OverLimit,
    /// The caller named a runner another owner holds.
    OtherOwner,
}

impl SecurityEventKind {
    pub const ALL: [SecurityEventKind; 7] = [
        SecurityEventKind::InvalidToken,
        SecurityEventKind::Replay,
        SecurityEventKind::ClaimMismatch,
        SecurityEventKind::CidrRefused,
        SecurityEventKind::LabelPolicy,
        SecurityEventKind::OverLimit,
        SecurityEventKind::OtherOwner,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SecurityEventKind::InvalidToken => "invalid_token",
            SecurityEventKind::Replay => "replay",
            SecurityEventKind::ClaimMismatch => "claim_mismatch",
            SecurityEventKind::CidrRefused => "cidr_refused",
            SecurityEventKind::LabelPolicy => "label_policy",
            SecurityEventKind::OverLimit => "over_limit",
            SecurityEventKind::OtherOwner => "other_owner",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A refused self-service request, kept for administrators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SecurityEvent {
    pub id: String,
    pub at: Time,
    pub kind: SecurityEventKind,
    /// The trusted identity the token named, when one did.
    pub trusted_identity: Option<String>,
    /// The owner the token spoke for, when it got that far.
    pub identity: Option<String>,
    pub source_ip: Option<String>,
    /// `METHOD /path` of the request.
    pub endpoint: String,
    /// Which check failed; never the token or a secret.
    pub reason: String,
    /// SHA-256 of the token, hex: enough to find the same token again,
    /// useless to replay.
    pub token_sha256: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test claims are an object"),
        }
    }

    fn rule(claim: &str, test: ClaimTest) -> ClaimRule {
        ClaimRule {
            claim: claim.into(),
            test,
        }
    }

    fn labels(raw: &[&str]) -> LabelSet {
        raw.iter().map(|l| Label::parse(l).unwrap()).collect()
    }

    fn policy(allowed: &[&str], required: &[&str], max: u32) -> LabelPolicy {
        LabelPolicy {
            allowed_labels: allowed
                .iter()
                .map(|g| LabelGlob::parse(g).unwrap())
                .collect(),
            required_labels: required.iter().map(|l| Label::parse(l).unwrap()).collect(),
            max_live_runners: max,
        }
    }

    #[test]
    fn a_regex_rule_matches_the_whole_value_only() {
        let re = ClaimTest::Regex(
            AnchoredRegex::new("repo:octo-org/[^:]+:ref:refs/heads/main").unwrap(),
        );
        let r = rule("sub", re);
        assert!(
            r.check(&claims(
                json!({"sub": "repo:octo-org/infra:ref:refs/heads/main"})
            ))
            .is_ok()
        );
        for sneaky in [
            "repo:octo-org/infra:ref:refs/heads/main-evil",
            "xrepo:octo-org/infra:ref:refs/heads/main",
            "repo:evil/x:ref:refs/heads/main\nrepo:octo-org/a:ref:refs/heads/main",
        ] {
            assert!(
                r.check(&claims(json!({"sub": sneaky}))).is_err(),
                "{sneaky}"
            );
        }
        // An alternation is anchored as a whole, not only its first branch.
        let alt = rule("sub", ClaimTest::Regex(AnchoredRegex::new("a|b").unwrap()));
        assert!(alt.check(&claims(json!({"sub": "b"}))).is_ok());
        assert!(alt.check(&claims(json!({"sub": "ab"}))).is_err());
        assert!(alt.check(&claims(json!({"sub": "bx"}))).is_err());
    }

    #[test]
    fn exact_and_prefix_rules_and_what_a_missing_or_odd_claim_does() {
        let exact = rule("repository_owner_id", ClaimTest::Exact("123456".into()));
        assert!(
            exact
                .check(&claims(json!({"repository_owner_id": "123456"})))
                .is_ok()
        );
        // A number compares by its JSON text.
        assert!(
            exact
                .check(&claims(json!({"repository_owner_id": 123456})))
                .is_ok()
        );
        assert!(
            exact
                .check(&claims(json!({"repository_owner_id": "1234567"})))
                .is_err()
        );
        let err = exact.check(&claims(json!({}))).unwrap_err();
        assert!(err.contains("missing"), "{err}");
        for odd in [json!(null), json!(["123456"]), json!({"id": "123456"})] {
            assert!(
                exact
                    .check(&claims(json!({"repository_owner_id": odd})))
                    .is_err()
            );
        }
        let prefix = rule(
            "workflow_ref",
            ClaimTest::Prefix("octo-org/infra/.github/workflows/".into()),
        );
        assert!(prefix
            .check(&claims(json!({"workflow_ref": "octo-org/infra/.github/workflows/ci.yml@refs/heads/main"})))
            .is_ok());
        let err = prefix
            .check(&claims(
                json!({"workflow_ref": "octo-org/infra-evil/.github/workflows/ci.yml"}),
            ))
            .unwrap_err();
        assert_eq!(err, "claim \"workflow_ref\" lacks the prefix");
    }

    #[test]
    fn a_glob_too_long_or_too_complex_is_refused_not_a_panic() {
        assert!(LabelGlob::parse(&"x".repeat(MAX_LABEL_BYTES + 1)).is_err());
        for hidden in [
            "pro\u{0}be-*",
            "pro\r\nbe",
            "\u{202e}probe-*",
            "pro\u{200b}be-*",
        ] {
            assert!(LabelGlob::parse(hidden).is_err(), "{hidden:?}");
        }
        let nested = format!("{}a{}", "{a,".repeat(60), "}".repeat(60));
        let _ = LabelGlob::parse(&nested);
        let classes = "[a-z][0-9]".repeat(25);
        let _ = LabelGlob::parse(&classes);
        assert!(
            LabelGlob::parse("cuda-[0-9]*")
                .unwrap()
                .matches(&Label::parse("cuda-12").unwrap())
        );
    }

    #[test]
    fn a_regex_that_does_not_compile_or_is_too_large_is_refused() {
        assert!(AnchoredRegex::new("repo:(").is_err());
        assert!(AnchoredRegex::new("(a{1000}){1000}").is_err());
    }

    #[test]
    fn a_policy_keeps_allowed_labels_adds_required_and_computed_ones() {
        let p = policy(&["gpu", "linux", "cuda-*"], &["on-prem"], 2);
        let got = p
            .decide(&labels(&["GPU", "cuda-12", "self-hosted"]))
            .unwrap();
        assert_eq!(got, labels(&["gpu", "cuda-12", "on-prem", "self-hosted"]));
        assert_eq!(
            p.decide(&labels(&["gpu", "windows"])),
            Err(PolicyViolation::LabelNotAllowed("windows".into()))
        );
        // A glob matches the whole label.
        assert!(p.decide(&labels(&["xcuda-12"])).is_err());
        assert_eq!(
            policy(&["*"], &[], 0).decide(&labels(&["gpu"])),
            Err(PolicyViolation::NoRunners)
        );
    }

    #[test]
    fn owners_addresses_and_runner_names() {
        let id = TrustedIdentity {
            name: "ci".into(),
            issuer: "https://issuer.example".into(),
            jwks_url: None,
            audience: "pacer-runners".into(),
            identity_claim: "sub".into(),
            claims: vec![],
            source_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
            max_token_lifetime: Duration::from_secs(900),
            runners: Placement {
                scope: Scope::Org,
                org: Some("octo-org".into()),
                repo: None,
                runner_group_id: 1,
                name_prefix: "ci-".into(),
            },
            label_policy: None,
        };
        assert_eq!(
            id.owner(&claims(json!({"sub": "repo:a/b"}))).unwrap(),
            "ci:repo:a/b"
        );
        assert!(id.owner(&claims(json!({"sub": ""}))).is_err());
        assert!(id.admits_address(Some("10.1.2.3".parse().unwrap())));
        assert!(!id.admits_address(Some("192.168.1.1".parse().unwrap())));
        assert!(!id.admits_address(None));
        assert_eq!(
            parse_runner_name("gpu-worker_01.a").unwrap(),
            "gpu-worker_01.a"
        );
        for bad in ["", "a b", "../x", "ü", &"a".repeat(65)] {
            assert!(parse_runner_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kinds_and_statuses_read_back_what_they_write() {
        for k in SecurityEventKind::ALL {
            assert_eq!(SecurityEventKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
        }
        for s in SelfRunnerStatus::ALL {
            assert_eq!(SelfRunnerStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
        assert_eq!(SelfRunnerStatus::parse("Pending"), None);
    }

    proptest! {
        #[test]
        fn any_pattern_or_value_gets_an_answer_not_a_panic(pattern in "(.{0,40}|[{}\\[\\]*?,a-]{0,300})", value in ".{0,40}") {
            if let Ok(re) = AnchoredRegex::new(&pattern) {
                let r = rule("sub", ClaimTest::Regex(re));
                let _ = r.check(&claims(json!({"sub": value.clone()})));
            }
            if let (Ok(glob), Ok(label)) = (LabelGlob::parse(&pattern), Label::parse(&value)) {
                let _ = glob.matches(&label);
            }
            let _ = parse_runner_name(&value);
        }

        #[test]
        fn a_literal_regex_matches_exactly_itself(value in "[a-z0-9:/._-]{1,30}", extra in "[a-z]{1,5}") {
            let re = AnchoredRegex::new(&regex::escape(&value)).unwrap();
            prop_assert!(re.is_match(&value));
            let longer = format!("{value}{extra}");
            prop_assert!(!re.is_match(&longer));
            let earlier = format!("{extra}{value}");
            prop_assert!(!re.is_match(&earlier));
        }

        #[test]
        fn decided_labels_always_hold_the_required_and_computed_ones(
            asked in proptest::collection::vec("[a-z]{1,6}", 0..5),
        ) {
            let p = policy(&["*"], &["on-prem"], 1);
            let asked: LabelSet = asked.iter().map(|l| Label::parse(l).unwrap()).collect();
            let got = p.decide(&asked).unwrap();
            prop_assert!(got.contains(&Label::parse("on-prem").unwrap()));
            prop_assert!(got.contains(&Label::parse(SELF_HOSTED).unwrap()));
            prop_assert!(asked.iter().all(|l| got.contains(l)));
        }
    }
}
