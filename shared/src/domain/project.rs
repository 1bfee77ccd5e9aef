//! Projects (who a runner registers for: one repo at a time, or a whole
//! org) and repo bindings (which project serves a repo).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fields::Fields;
use super::labels::{Label, SELF_HOSTED};
use super::{Invalid, Time};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Runners register per bound repo (`/repos/{owner}/{repo}/…`).
    Repo,
    /// Runners register for the org (`/orgs/{org}/…`) and serve any of its repos.
    Org,
}

/// The fields of a project a client may write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ProjectSpec {
    pub name: String,
    pub scope: Scope,
    pub org: Option<String>,
    pub label: Label,
    pub runner_group_id: i64,
    /// Serve jobs of public repositories too. Off unless an operator turns
    /// it on: anyone can open a pull request on a public repository, and a
    /// workflow it runs would get a machine inside the operator's network.
    #[serde(default)]
    pub allow_public_repos: bool,
}

/// Who can see a repository, as GitHub reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
    /// Visible to the members of an enterprise (GitHub reports it private).
    Internal,
}

impl Visibility {
    /// From a repository's `visibility` (newer) and `private` (always sent)
    /// fields. With neither, or with values pacer does not know, the
    /// repository counts as public: the kind that must be allowed.
    pub fn from_github(private: Option<bool>, visibility: Option<&str>) -> Self {
        match (visibility, private) {
            (Some("private"), _) => Visibility::Private,
            (Some("internal"), _) => Visibility::Internal,
            (Some("public"), _) => Visibility::Public,
            (_, Some(true)) => Visibility::Private,
            _ => Visibility::Public,
        }
    }

    pub fn is_public(self) -> bool {
        self == Visibility::Public
    }

    /// As GitHub writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Project {
    pub id: String,
    #[serde(flatten)]
    pub spec: ProjectSpec,
    pub created_at: Time,
    pub updated_at: Time,
}

/// Names of pacer objects (projects, pools): short, readable in URLs and
/// runner names.
pub fn parse_name(field: &str, raw: &str) -> Result<String, Invalid> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(Invalid::new(
            field,
            "must be 1–64 characters of letters, digits, '-', '_' or '.', starting with a letter or digit",
        ))
    }
}

/// A GitHub account (user or org) login.
pub fn parse_login(field: &str, raw: &str) -> Result<String, Invalid> {
    let ok = !raw.is_empty()
        && raw.len() <= 39
        && !raw.starts_with('-')
        && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(raw.to_string())
    } else {
        Err(Invalid::new(
            field,
            format!("{raw:?} is not a GitHub account name (letters, digits and '-', at most 39)"),
        ))
    }
}

impl ProjectSpec {
    /// Validates a create body (or an existing spec merged with a PATCH).
    pub fn parse(body: Map<String, Value>) -> Result<Self, Invalid> {
        let mut f = Fields::new(body);
        let name = parse_name("name", &f.required("name", Fields::string)?)?;
        let scope = match f.string("scope")?.as_deref() {
            None | Some("repo") => Scope::Repo,
            Some("org") => Scope::Org,
            Some(other) => {
                return Err(Invalid::new(
                    "scope",
                    format!("must be \"repo\" or \"org\", not {other:?}"),
                ));
            }
        };
        let org = f.string("org")?.filter(|s| !s.is_empty());
        let org = match (scope, org) {
            (Scope::Org, None) => {
                return Err(Invalid::new("org", "is required for an org-scoped project"));
            }
            (Scope::Org, Some(o)) => Some(parse_login("org", &o)?),
            (Scope::Repo, Some(_)) => {
                return Err(Invalid::new(
                    "org",
                    "only applies to org-scoped projects; bind repos to a repo-scoped project instead",
                ));
            }
            (Scope::Repo, None) => None,
        };
        let label = match f.string("label")? {
            Some(raw) => Label::parse(&raw).map_err(|m| Invalid::new("label", m))?,
            None => Label::parse(&name).map_err(|m| Invalid::new("name", m))?,
        };
        if label.as_str() == SELF_HOSTED {
            return Err(Invalid::new(
                "label",
                "cannot be \"self-hosted\": every runner carries it already",
            ));
        }
        let runner_group_id = f
            .int("runner_group_id", 1, i64::from(i32::MAX))?
            .unwrap_or(1);
        let allow_public_repos = f.bool("allow_public_repos")?.unwrap_or(false);
        f.finish()?;
        Ok(Self {
            name,
            scope,
            org,
            label,
            runner_group_id,
            allow_public_repos,
        })
    }
}

/// `owner/name` of a GitHub repository, as GitHub spells it. Compared
/// case-insensitively (GitHub does), through [`RepoName::key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(test, derive(ts_rs::TS), ts(type = "string"))]
pub struct RepoName {
    owner: String,
    name: String,
}

impl RepoName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let (owner, name) = raw
            .split_once('/')
            .ok_or_else(|| format!("{raw:?} is not owner/name"))?;
        parse_login("repo", owner).map_err(|e| e.message)?;
        let name_ok = !name.is_empty()
            && name.len() <= 100
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(format!(
                "{raw:?} is not owner/name (a repository name is letters, digits, '-', '_' or '.')"
            ));
        }
        Ok(Self {
            owner: owner.into(),
            name: name.into(),
        })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lookup key: lower-cased `owner/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.owner, self.name).to_lowercase()
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl TryFrom<String> for RepoName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        RepoName::parse(&s)
    }
}

impl From<RepoName> for String {
    fn from(r: RepoName) -> String {
        r.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct BindingSpec {
    pub repo: RepoName,
    pub project_id: String,
}

impl BindingSpec {
    pub fn parse(body: Map<String, Value>) -> Result<Self, Invalid> {
        let mut f = Fields::new(body);
        let repo = f.required("repo", Fields::string)?;
        let repo = RepoName::parse(&repo).map_err(|m| Invalid::new("repo", m))?;
        let project_id = f.required("project_id", Fields::string)?;
        f.finish()?;
        Ok(Self { repo, project_id })
    }

    /// A repo bound to an org-scoped project must belong to that org: its
    /// runners register at the org.
    pub fn check_against(&self, project: &Project) -> Result<(), Invalid> {
        match (&project.spec.scope, &project.spec.org) {
            (Scope::Org, Some(org)) if !org.eq_ignore_ascii_case(self.repo.owner()) => {
                Err(Invalid::new(
                    "repo",
                    format!(
                        "{} is not in org {org}, which project {} serves",
                        self.repo, project.spec.name
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct RepoBinding {
    pub id: String,
    #[serde(flatten)]
    pub spec: BindingSpec,
    pub created_at: Time,
    pub updated_at: Time,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_repo_project_defaults_its_label_to_its_name_and_group_to_1() {
        let p = ProjectSpec::parse(body(json!({"name": "Acme"}))).unwrap();
        assert_eq!(
            (p.scope, p.label.as_str(), p.runner_group_id),
            (Scope::Repo, "acme", 1)
        );
    }

    #[test]
    fn an_org_project_needs_its_org() {
        let err = ProjectSpec::parse(body(json!({"name": "a", "scope": "org"}))).unwrap_err();
        assert_eq!(err.field, "org");
        let p = ProjectSpec::parse(body(
            json!({"name": "a", "scope": "org", "org": "acme-org", "runner_group_id": 3}),
        ))
        .unwrap();
        assert_eq!((p.org.as_deref(), p.runner_group_id), (Some("acme-org"), 3));
    }

    #[test]
    fn public_repos_are_refused_unless_a_project_allows_them() {
        let p = ProjectSpec::parse(body(json!({"name": "a"}))).unwrap();
        assert!(!p.allow_public_repos, "off by default");
        let p = ProjectSpec::parse(body(json!({"name": "a", "allow_public_repos": true}))).unwrap();
        assert!(p.allow_public_repos);
        let err = ProjectSpec::parse(body(json!({"name": "a", "allow_public_repos": "yes"})))
            .unwrap_err();
        assert_eq!(err.field, "allow_public_repos");
    }

    #[test]
    fn a_repository_of_unknown_visibility_counts_as_public() {
        assert_eq!(
            Visibility::from_github(Some(true), None),
            Visibility::Private
        );
        assert_eq!(
            Visibility::from_github(Some(true), Some("internal")),
            Visibility::Internal
        );
        assert_eq!(
            Visibility::from_github(Some(false), Some("public")),
            Visibility::Public
        );
        assert_eq!(
            Visibility::from_github(Some(false), None),
            Visibility::Public
        );
        assert_eq!(Visibility::from_github(None, None), Visibility::Public);
        assert_eq!(
            Visibility::from_github(Some(true), Some("something-new")),
            Visibility::Private
        );
        assert_eq!(
            Visibility::from_github(None, Some("something-new")),
            Visibility::Public
        );
    }

    #[test]
    fn bad_project_fields_are_named() {
        for (b, field) in [
            (json!({"name": ""}), "name"),
            (json!({"name": "a b"}), "name"),
            (json!({"name": "a", "scope": "team"}), "scope"),
            (json!({"name": "a", "org": "x"}), "org"),
            (json!({"name": "a", "label": "self-hosted"}), "label"),
            (
                json!({"name": "a", "runner_group_id": 0}),
                "runner_group_id",
            ),
            (json!({"name": "a", "colour": "red"}), "colour"),
        ] {
            assert_eq!(
                ProjectSpec::parse(body(b.clone())).unwrap_err().field,
                field,
                "{b}"
            );
        }
    }

    #[test]
    fn repo_names_are_validated_and_keyed_case_insensitively() {
        let r = RepoName::parse("Octo-Org/Hello.World").unwrap();
        assert_eq!(r.key(), "octo-org/hello.world");
        assert_eq!(r.to_string(), "Octo-Org/Hello.World");
        for bad in ["noslash", "/x", "a/", "a/b/c", "-a/b", "a/..", "a b/c"] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
    }

    /// Owner/name pairs of GitHub's alphabet, so many cases get past the slash.
    fn repo_like() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::prop_oneof![
            crate::arbitrary::hostile_text(),
            "[A-Za-z0-9._-]{0,42}/[A-Za-z0-9._-]{0,102}",
            "[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}",
        ]
    }

    fn project_fields() -> Vec<(&'static str, Vec<Value>)> {
        vec![
            (
                "name",
                vec![
                    json!("acme"),
                    json!("Acme.Web-1"),
                    json!("-acme"),
                    json!("x".repeat(64)),
                    json!("x".repeat(65)),
                ],
            ),
            ("scope", vec![json!("repo"), json!("org"), json!("team")]),
            (
                "org",
                vec![
                    json!("acme-org"),
                    json!("-acme"),
                    json!(""),
                    json!("x".repeat(40)),
                ],
            ),
            (
                "label",
                vec![
                    json!("gpu"),
                    json!("Self-Hosted"),
                    json!("€".repeat(100)),
                    json!("a,b"),
                ],
            ),
            (
                "runner_group_id",
                vec![
                    json!(1),
                    json!(3),
                    json!(0),
                    json!(i32::MAX),
                    json!(i64::from(i32::MAX) + 1),
                ],
            ),
            (
                "allow_public_repos",
                vec![json!(true), json!(false), json!("yes")],
            ),
        ]
    }

    fn binding_fields() -> Vec<(&'static str, Vec<Value>)> {
        vec![
            (
                "repo",
                vec![
                    json!("acme/app"),
                    json!("Acme/Hello.World"),
                    json!("acme/.."),
                    json!("acme"),
                    json!(" acme/app "),
                ],
            ),
            ("project_id", vec![json!("prj_1"), json!(""), json!("  ")]),
        ]
    }

    use crate::domain::fields::properties::{refusal_names_a_field, round_trips};
    use proptest::prelude::ProptestConfig;

    proptest::proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_text_is_a_repo_name_or_a_clean_refusal(raw in repo_like()) {
            match RepoName::parse(&raw) {
                Ok(repo) => {
                    proptest::prop_assert!(repo.owner().len() <= 39 && repo.name().len() <= 100);
                    proptest::prop_assert_eq!(RepoName::parse(&repo.to_string()), Ok(repo.clone()), "written back, it reads the same");
                    proptest::prop_assert_eq!(repo.key(), repo.to_string().to_lowercase());
                }
                Err(message) => proptest::prop_assert!(!message.is_empty()),
            }
        }

        #[test]
        fn any_text_is_a_login_or_a_refusal_naming_the_field(raw in repo_like()) {
            match parse_login("org", &raw) {
                Ok(login) => proptest::prop_assert_eq!(login, raw, "a login is kept as GitHub spells it"),
                Err(e) => proptest::prop_assert!(e.field == "org" && !e.message.is_empty()),
            }
        }

        #[test]
        fn any_text_is_an_object_name_or_a_refusal_naming_the_field(raw in repo_like()) {
            match parse_name("name", &raw) {
                Ok(name) => proptest::prop_assert!(name == raw && name.len() <= 64),
                Err(e) => proptest::prop_assert!(e.field == "name" && !e.message.is_empty()),
            }
        }

        #[test]
        fn any_project_body_is_a_project_or_a_refusal_naming_a_field(body in crate::arbitrary::object_with(project_fields())) {
            let known: Vec<&str> = project_fields().iter().map(|(name, _)| *name).collect();
            match ProjectSpec::parse(body.clone()) {
                Ok(spec) => round_trips(&spec, ProjectSpec::parse)?,
                Err(e) => refusal_names_a_field(&e, &body, &known)?,
            }
        }

        #[test]
        fn any_binding_body_is_a_binding_or_a_refusal_naming_a_field(body in crate::arbitrary::object_with(binding_fields())) {
            let known: Vec<&str> = binding_fields().iter().map(|(name, _)| *name).collect();
            match BindingSpec::parse(body.clone()) {
                Ok(spec) => round_trips(&spec, BindingSpec::parse)?,
                Err(e) => refusal_names_a_field(&e, &body, &known)?,
            }
        }
    }
}
