//! Runner labels and the rule that decides which pool serves a job
//! (docs/architecture.md, "Label matching").

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// The label every job pacer serves must carry.
pub const SELF_HOSTED: &str = "self-hosted";

/// The longest label pacer keeps, in bytes of UTF-8.
pub const MAX_LABEL_BYTES: usize = 256;

/// A runner label, lower-cased: GitHub compares labels case-insensitively,
/// so pacer keeps one spelling and never compares two.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(test, derive(ts_rs::TS), ts(type = "string"))]
pub struct Label(String);

impl Label {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("a label cannot be empty".into());
        }
        // Measured lower-cased, as it is kept: a few capitals grow when
        // lower-cased ('İ' is 2 bytes, 'i̇' 3), and a label kept longer than
        // the limit would not parse when read back.
        let lower = s.to_lowercase();
        if lower.len() > MAX_LABEL_BYTES {
            // The first characters only: enough to recognise it, and never a
            // cut through a multi-byte character.
            let start: String = s.chars().take(32).collect();
            return Err(format!(
                "label \"{start}…\" is longer than {MAX_LABEL_BYTES} bytes"
            ));
        }
        if s.chars().any(|c| super::text::is_invisible(c) || c == ',') {
            return Err(format!(
                "label {s:?} contains a comma, a control character or an invisible formatting character"
            ));
        }
        Ok(Self(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Label {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Label::parse(&s)
    }
}

impl From<Label> for String {
    fn from(l: Label) -> String {
        l.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A set of labels, case-folded.
pub type LabelSet = BTreeSet<Label>;

/// Parses the labels of a request field, naming the field on error.
pub fn parse_labels(field: &str, raw: &[String]) -> Result<LabelSet, Invalid> {
    raw.iter()
        .map(|l| Label::parse(l).map_err(|m| Invalid::new(field, m)))
        .collect()
}

/// Case-folds a job's labels as GitHub sent them. `None` when one of them
/// could never be a pool's label (empty, over [`MAX_LABEL_BYTES`], a comma
/// or a control or invisible formatting character): no runner pacer launches could carry it, so
/// such a job matches no pool rather than a pool that lacks that label.
pub fn job_labels(raw: &[String]) -> Option<LabelSet> {
    raw.iter().map(|l| Label::parse(l).ok()).collect()
}

/// Whether a job is pacer's at all: one of its labels, as GitHub sent them,
/// is `self-hosted` (in any case).
pub fn asks_for_self_hosted(raw: &[String]) -> bool {
    raw.iter()
        .any(|l| l.trim().eq_ignore_ascii_case(SELF_HOSTED))
}

/// Whether a job is pacer's at all: it must ask for a self-hosted runner.
pub fn wants_self_hosted(labels: &LabelSet) -> bool {
    labels.iter().any(|l| l.as_str() == SELF_HOSTED)
}

/// What a candidate pool offers a job: the pool's own labels plus
/// `self-hosted` and its project's label.
pub fn offered_labels(pool_labels: &LabelSet, project_label: &Label) -> LabelSet {
    let mut all = pool_labels.clone();
    all.insert(Label(SELF_HOSTED.into()));
    all.insert(project_label.clone());
    all
}

/// A pool that could serve a job, as matching sees it.
#[derive(Debug, Clone)]
pub struct PoolCandidate<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub priority: i32,
    /// The pool's labels ∪ {self-hosted, project label}.
    pub offered: LabelSet,
}

/// The pool chosen for a job and how loosely it fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMatch {
    pub pool_id: String,
    /// Labels the pool offers that the job did not ask for.
    pub extra_labels: usize,
}

/// Picks the pool for a job: among pools offering every label the job asks
/// for, the tightest fit (fewest labels the job did not ask for), then the
/// higher priority, then the name, so the choice is deterministic.
pub fn match_pool(job: &LabelSet, candidates: &[PoolCandidate<'_>]) -> Option<PoolMatch> {
    if !wants_self_hosted(job) {
        return None;
    }
    candidates
        .iter()
        .filter(|c| job.is_subset(&c.offered))
        .map(|c| (c.offered.len() - job.len(), c))
        .min_by(|(extra_a, a), (extra_b, b)| {
            extra_a
                .cmp(extra_b)
                .then(b.priority.cmp(&a.priority))
                .then(a.name.cmp(b.name))
        })
        .map(|(extra, c)| PoolMatch {
            pool_id: c.id.to_string(),
            extra_labels: extra,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(labels: &[&str]) -> LabelSet {
        labels.iter().map(|l| Label::parse(l).unwrap()).collect()
    }

    fn pool<'a>(id: &'a str, labels: &[&str], priority: i32) -> PoolCandidate<'a> {
        PoolCandidate {
            id,
            name: id,
            priority,
            offered: offered_labels(&set(labels), &Label::parse("acme").unwrap()),
        }
    }

    #[test]
    fn a_job_without_self_hosted_matches_nothing_even_when_labels_fit() {
        let pools = [pool("linux", &["linux"], 0)];
        assert_eq!(match_pool(&set(&["linux"]), &pools), None);
        assert!(!wants_self_hosted(&set(&["ubuntu-latest"])));
    }

    #[test]
    fn a_pool_matches_when_its_labels_cover_every_job_label() {
        let pools = [pool("linux-arm", &["linux", "arm64"], 0)];
        let m = match_pool(&set(&["self-hosted", "linux"]), &pools).expect("superset matches");
        assert_eq!(m.pool_id, "linux-arm");
        assert_eq!(
            m.extra_labels, 2,
            "arm64 and the project label were not asked for"
        );
        assert_eq!(
            match_pool(&set(&["self-hosted", "linux", "gpu"]), &pools),
            None
        );
    }

    #[test]
    fn the_project_label_is_offered_by_every_pool_of_the_project() {
        let pools = [pool("linux", &["linux"], 0)];
        assert!(match_pool(&set(&["self-hosted", "acme", "linux"]), &pools).is_some());
        assert!(match_pool(&set(&["self-hosted", "other-project"]), &pools).is_none());
    }

    #[test]
    fn the_most_specific_pool_wins() {
        let pools = [
            pool("big", &["linux", "x64", "gpu", "large"], 100),
            pool("small", &["linux", "x64"], 0),
        ];
        let m = match_pool(&set(&["self-hosted", "linux", "x64"]), &pools).unwrap();
        assert_eq!(
            m.pool_id, "small",
            "fewest unasked-for labels beats priority"
        );
    }

    #[test]
    fn priority_breaks_a_tie_then_the_name() {
        let pools = [
            pool("b", &["linux"], 1),
            pool("a", &["linux"], 5),
            pool("c", &["linux"], 5),
        ];
        let m = match_pool(&set(&["self-hosted", "linux"]), &pools).unwrap();
        assert_eq!(
            m.pool_id, "a",
            "priority 5 beats 1; among the two at 5, the name decides"
        );
    }

    #[test]
    fn labels_compare_case_insensitively() {
        let pools = [pool("linux", &["Linux", "ARM64"], 0)];
        assert!(match_pool(&set(&["Self-Hosted", "LINUX", "arm64"]), &pools).is_some());
        assert_eq!(Label::parse("  GPU ").unwrap().as_str(), "gpu");
    }

    #[test]
    fn a_long_label_of_multibyte_characters_is_refused_naming_its_start() {
        // Byte 32 of 100 × '€' (3 bytes each) falls inside a character.
        let err = Label::parse(&"€".repeat(100)).unwrap_err();
        assert!(
            err.starts_with(&format!("label \"{}…\"", "€".repeat(32))),
            "{err}"
        );
        assert!(Label::parse(&"€".repeat(85)).is_ok(), "255 bytes fit");
    }

    #[test]
    fn a_label_that_grows_when_lower_cased_is_measured_as_kept() {
        // 'İ' is 2 bytes and lower-cases to 3: 200 bytes given, 300 kept,
        // which would be refused when read back from the store.
        assert!(Label::parse(&"İ".repeat(100)).is_err());
        let kept = Label::parse(&"İ".repeat(85)).unwrap();
        assert_eq!(Label::parse(kept.as_str()), Ok(kept.clone()));
    }

    #[test]
    fn a_job_with_a_label_no_pool_can_carry_matches_nothing() {
        let pools = [pool("linux", &["linux"], 0)];
        let raw: Vec<String> = ["self-hosted", "linux", &"€".repeat(100)]
            .iter()
            .map(|l| l.to_string())
            .collect();
        assert!(asks_for_self_hosted(&raw));
        assert_eq!(job_labels(&raw), None);
        let fitting: Vec<String> = vec!["Self-Hosted".into(), "linux".into()];
        assert!(match_pool(&job_labels(&fitting).unwrap(), &pools).is_some());
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_a_label_or_a_clean_refusal(raw in "\\PC{0,300}|[\\x00-\\x7f€,]{0,300}") {
            match Label::parse(&raw) {
                Ok(label) => {
                    proptest::prop_assert!(!label.as_str().is_empty() && label.as_str().len() <= MAX_LABEL_BYTES);
                    proptest::prop_assert!(!label.as_str().contains(','));
                    proptest::prop_assert_eq!(Label::parse(label.as_str()), Ok(label.clone()), "parsing is idempotent");
                }
                Err(message) => proptest::prop_assert!(!message.is_empty()),
            }
        }

        #[test]
        fn any_labels_a_job_carries_match_or_not_without_a_panic(raw in proptest::collection::vec("\\PC{0,300}", 0..8)) {
            let pools = [pool("linux", &["linux"], 0)];
            if let Some(labels) = job_labels(&raw) {
                let _ = match_pool(&labels, &pools);
            }
            let _ = asks_for_self_hosted(&raw);
        }
    }

    /// A label of `xunil` behind a right-to-left override (U+202E) showed in
    /// the console as `linux`, and `li\u{200b}nux` looked like `linux` while
    /// matching no job that asks for it.
    #[test]
    fn a_label_with_an_invisible_formatting_character_is_refused() {
        for raw in [
            "\u{202e}xunil",
            "li\u{200b}nux",
            "linux\u{2066}",
            "\u{feff}linux",
            "x64\u{200d}",
        ] {
            let refused = Label::parse(raw).unwrap_err();
            assert!(
                refused.contains("invisible formatting character"),
                "{raw:?}: {refused}"
            );
        }
        assert!(
            Label::parse("gpu-€-中文").is_ok(),
            "visible non-ASCII text stays a label"
        );
    }

    #[test]
    fn empty_and_malformed_labels_are_refused() {
        assert!(Label::parse("  ").is_err());
        assert!(Label::parse("a,b").is_err());
        let err = parse_labels("labels", &["ok".into(), "".into()]).unwrap_err();
        assert_eq!(err.field, "labels");
    }
}
