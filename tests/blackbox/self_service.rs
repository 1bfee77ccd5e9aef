//! Self-service runners end to end, in process: workload tokens minted by
//! the scriptable test IdP (GitHub Actions' claim set, its JWKS on
//! 127.0.0.1), GitHub played by the OpenAPI-checked fake, pacer on SQLite.
//! What the store must guarantee under concurrency is specified by the
//! conformance suite; these tests hold the HTTP contract, the security
//! events and the audit log.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pacer_shared::auth::workload::WorkloadVerifier;
use pacer_shared::clock::{Clock, SystemClock};
use pacer_shared::config::RunnerConfig;
use pacer_shared::domain::self_service::{
    AnchoredRegex, ClaimRule, ClaimTest, LabelGlob, LabelPolicy, Placement, SecurityEventKind,
    SelfRunnerStatus, TrustedIdentity,
};
use pacer_shared::domain::{Label, Scope};
use pacer_shared::github::RunnerTarget;
use pacer_shared::github::rest::RestGitHub;
use pacer_shared::service::auth::{AuthSettings, bootstrap};
use pacer_shared::service::self_service::SelfServiceSettings;
use pacer_shared::store::{PageRequest, SecurityEventFilter};
use reqwest::Method;
use serde_json::{Value, json};

use crate::fake_github::{Endpoint, FakeGitHub, FakeTarget};
use crate::support::{Edge, LocalPacer, local_ports};
use crate::test_idp::{Signer, TestIdp, TokenScript};

pub(crate) const AUDIENCE: &str = "pacer-runners";
pub(crate) const ORG: &str = "octo-org";
const ORG_INSTALLATION: i64 = 91;
const ADMIN: &str = "admin@example.com";
pub(crate) const INFRA: &str = "octo-org/infra";

/// pacer with one trusted identity (`ci`, GitHub Actions' claims of
/// `octo-org` on `main`), the test IdP minting its tokens, the fake GitHub
/// registering its runners, and an admin signed in to the console.
pub(crate) struct World {
    pub(crate) pacer: LocalPacer,
    pub(crate) idp: TestIdp,
    pub(crate) github: FakeGitHub,
    /// An admin's console session.
    pub(crate) admin: String,
}

/// The identity every world trusts, before a test changes it.
pub(crate) fn identity(issuer: &str) -> TrustedIdentity {
    TrustedIdentity {
        name: "ci".into(),
        issuer: issuer.into(),
        jwks_url: None,
        audience: AUDIENCE.into(),
        identity_claim: "sub".into(),
        claims: vec![
            ClaimRule {
                claim: "repository_owner_id".into(),
                test: ClaimTest::Exact("123456".into()),
            },
            ClaimRule {
                claim: "workflow_ref".into(),
                test: ClaimTest::Prefix("octo-org/".into()),
            },
            ClaimRule {
                claim: "sub".into(),
                test: ClaimTest::Regex(
                    AnchoredRegex::new("repo:octo-org/[^:]+:ref:refs/heads/main").unwrap(),
                ),
            },
        ],
        source_cidrs: vec![],
        max_token_lifetime: Duration::from_secs(900),
        runners: Placement {
            scope: Scope::Org,
            org: Some(ORG.into()),
            repo: None,
            runner_group_id: 1,
            name_prefix: "ci-".into(),
        },
        label_policy: Some(LabelPolicy {
            allowed_labels: ["gpu", "linux", "cuda-*"]
                .iter()
                .map(|g| LabelGlob::parse(g).unwrap())
                .collect(),
            required_labels: vec![Label::parse("on-prem").unwrap()],
            max_live_runners: 2,
        }),
    }
}

pub(crate) async fn world() -> World {
    world_with(|_| {}).await
}

/// A world whose `self_service` settings (enabled, [`identity`] alone)
/// `change` first; the workload routes are served as `pacer serve` serves
/// them: only while self-service is enabled.
pub(crate) async fn world_with(change: impl FnOnce(&mut SelfServiceSettings)) -> World {
    world_on(Arc::new(SystemClock), change).await
}

/// [`world_with`], its pacer reading the time from `clock`.
pub(crate) async fn world_on(
    clock: Arc<dyn Clock>,
    change: impl FnOnce(&mut SelfServiceSettings),
) -> World {
    let idp = TestIdp::start(AUDIENCE, "unused-client-secret").await;
    let github = FakeGitHub::start().await;
    github.install_on_org(ORG, ORG_INSTALLATION);
    let mut self_service = SelfServiceSettings {
        enabled: true,
        identities: vec![identity(&idp.issuer)],
        registration_timeout: Duration::from_secs(600),
    };
    change(&mut self_service);

    let dir = tempfile::tempdir().unwrap();
    let (mut ports, fleet) = local_ports(dir.path());
    ports.clock = clock;
    let pinned = RunnerConfig {
        version: "2.330.0".into(),
        ..RunnerConfig::default()
    };
    ports.github = Arc::new(
        RestGitHub::new(
            &github.github_config(),
            &pinned,
            Arc::new(SystemClock) as Arc<dyn Clock>,
        )
        .unwrap(),
    );
    let workload = self_service
        .enabled
        .then(|| WorkloadVerifier::new(self_service.identities.clone()).unwrap());
    let mut settings = (*ports.settings).clone();
    settings.self_service = self_service;
    ports.settings = Arc::new(settings);
    let password = bootstrap(&ports, ADMIN).await.unwrap().unwrap();
    let edge = Edge {
        auth: Some(AuthSettings {
            jwt_secret: pacer_shared::config::Secret::new(
                "test-jwt-secret-0123456789abcdef-0123456789",
            ),
            session_ttl: Duration::from_secs(3600),
            local: true,
            login_attempts: 100,
            login_window: Duration::from_secs(300),
            oidc_issuer_host: None,
            secure_cookie: false,
        }),
        sso: None,
        workload,
    };
    let pacer = LocalPacer::serve_edge(crate::process::free_port(), ports, fleet, dir, edge).await;
    let login = pacer
        .http
        .post(format!("{}/api/auth/login", pacer.base))
        .json(&json!({"email": ADMIN, "password": password}))
        .send()
        .await
        .unwrap();
    let admin = login.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    World {
        pacer,
        idp,
        github,
        admin,
    }
}

static JTI: AtomicUsize = AtomicUsize::new(0);

/// GitHub Actions' claims for a workflow of `repo` on `main`, with a fresh
/// `jti`; `aud` is pacer's (the IdP's client id).
pub(crate) fn actions_token(repo: &str) -> TokenScript {
    let workflow = format!("{repo}/.github/workflows/gpu.yml@refs/heads/main");
    TokenScript::new()
        .set(
            "jti",
            json!(format!("jti-{}", JTI.fetch_add(1, Ordering::SeqCst))),
        )
        .set("sub", json!(format!("repo:{repo}:ref:refs/heads/main")))
        .set("repository", json!(repo))
        .set("repository_id", json!("987654"))
        .set("repository_owner", json!(ORG))
        .set("repository_owner_id", json!("123456"))
        .set("ref", json!("refs/heads/main"))
        .set("workflow_ref", json!(workflow))
        .set("job_workflow_ref", json!(workflow))
        .set("run_id", json!("4242"))
        .set("event_name", json!("push"))
}

impl World {
    pub(crate) fn mint(&self, script: TokenScript) -> String {
        self.idp.script(script);
        self.idp.mint_id_token(None)
    }

    /// A fresh token of a workflow of `octo-org/infra`.
    pub(crate) fn token(&self) -> String {
        self.mint(actions_token(INFRA))
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .pacer
            .http
            .request(method, format!("{}{path}", self.pacer.base));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    pub(crate) async fn json(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let res = self.call(method, path, bearer, body).await;
        (
            res.status().as_u16(),
            res.json().await.unwrap_or(Value::Null),
        )
    }

    /// `GET path` as the console's admin.
    pub(crate) async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.json(Method::GET, path, Some(&self.admin), None).await
    }

    pub(crate) async fn provision(&self, token: &str, name: &str, labels: &[&str]) -> (u16, Value) {
        self.json(
            Method::POST,
            "/api/v1/runners/provision",
            Some(token),
            Some(json!({"runner_name": name, "labels": labels, "ephemeral": true})),
        )
        .await
    }

    /// One provision per token, all sent at once; their statuses.
    async fn provision_at_once(&self, tokens: Vec<String>) -> Vec<u16> {
        let tries: Vec<_> = tokens
            .into_iter()
            .enumerate()
            .map(|(i, token)| {
                let (http, base) = (self.pacer.http.clone(), self.pacer.base.clone());
                tokio::spawn(async move {
                    http.post(format!("{base}/api/v1/runners/provision"))
                        .bearer_auth(token)
                        .json(&json!({"runner_name": format!("gpu-{i}"), "labels": ["gpu"]}))
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for t in tries {
            statuses.push(t.await.unwrap());
        }
        statuses
    }

    pub(crate) async fn events(
        &self,
        kind: SecurityEventKind,
    ) -> Vec<pacer_shared::domain::self_service::SecurityEvent> {
        let filter = SecurityEventFilter {
            kind: Some(kind),
            ..Default::default()
        };
        self.pacer
            .ports
            .store
            .list_security_events(&filter, &PageRequest::first(100))
            .await
            .unwrap()
            .items
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_provisions_lists_refreshes_and_deletes_its_own_runner() {
    let w = world().await;

    let res = w
        .call(
            Method::POST,
            "/api/v1/runners/provision",
            Some(&w.token()),
            Some(json!({"runner_name": "gpu-1", "labels": ["GPU", "cuda-12"]})),
        )
        .await;
    assert_eq!(res.status().as_u16(), 201);
    assert_eq!(
        res.headers()["cache-control"],
        "no-store",
        "no cache keeps a credential"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["runner_name"], "ci-gpu-1");
    assert_eq!(
        body["labels"],
        json!(["cuda-12", "gpu", "on-prem", "self-hosted"]),
        "the requested labels, the required one and self-hosted"
    );
    assert_eq!(body["status"], "pending");
    let config = body["encoded_jit_config"].as_str().unwrap();
    // GitHub registered exactly this runner, in the identity's org and group.
    let registered = w.github.runner_by_jit_config(config).unwrap();
    assert_eq!(registered.target, FakeTarget::org(ORG));
    assert_eq!(registered.name, "ci-gpu-1");
    assert_eq!(Some(registered.id), body["github_runner_id"].as_i64());
    let jit_request = &w.github.requests_to(Endpoint::OrgJitConfig)[0];
    assert_eq!(jit_request.body.as_ref().unwrap()["runner_group_id"], 1);

    // Each call needs a token of its own.
    let (status, listed) = w
        .json(Method::GET, "/api/v1/runners", Some(&w.token()), None)
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["runner_name"], "ci-gpu-1");
    assert_eq!(
        listed["items"][0]["owner"],
        format!("ci:repo:{INFRA}:ref:refs/heads/main")
    );
    assert!(
        listed["items"][0].get("encoded_jit_config").is_none(),
        "the configuration is shown once"
    );

    // Refresh follows GitHub: online is active.
    w.github.set_runner_status(registered.id, "online", false);
    let (status, refreshed) = w
        .json(
            Method::POST,
            "/api/v1/runners/ci-gpu-1/refresh",
            Some(&w.token()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(refreshed["status"], "active");
    assert!(refreshed["registered_at"].is_string());

    let (status, deleted) = w
        .json(
            Method::DELETE,
            "/api/v1/runners/ci-gpu-1",
            Some(&w.token()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["status"], "deleted");
    assert!(
        w.github.runner(registered.id).is_none(),
        "deregistered on GitHub"
    );

    // GitHub freed the name, and so does pacer: the same machine asks again.
    let (status, again) = w.provision(&w.token(), "gpu-1", &["gpu"]).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["runner_name"], "ci-gpu-1");
    assert_ne!(again["id"], body["id"], "a new runner, not the deleted one");
    let (status, twice) = w.provision(&w.token(), "gpu-1", &["gpu"]).await;
    assert_eq!(
        status, 409,
        "a name is held while its runner lives: {twice}"
    );
    let (status, shown) = w
        .json(
            Method::GET,
            "/api/v1/runners/ci-gpu-1",
            Some(&w.token()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        shown["id"], again["id"],
        "the name finds the runner holding it"
    );
    assert_eq!(shown["status"], "pending");
    let (_, listed) = w
        .json(Method::GET, "/api/v1/runners", Some(&w.token()), None)
        .await;
    let statuses: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["status"])
        .collect();
    assert_eq!(statuses, [&json!("pending"), &json!("deleted")], "{listed}");

    let audit = w
        .pacer
        .ports
        .store
        .list_audit(&Default::default(), &PageRequest::first(100))
        .await
        .unwrap()
        .items;
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"self_service.runner_provisioned"),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"self_service.runner_deleted"),
        "{actions:?}"
    );
    let text = serde_json::to_string(&audit).unwrap();
    assert!(
        !text.contains(config),
        "the configuration never reaches the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_serves_one_request_of_any_endpoint_even_ten_at_once() {
    let w = world().await;
    let token = w.token();
    let mut statuses = w.provision_at_once(vec![token.clone(); 10]).await;
    statuses.sort();
    assert_eq!(statuses, [201, 401, 401, 401, 401, 401, 401, 401, 401, 401]);

    // The used token on another endpoint is a replay too.
    let res = w
        .call(Method::GET, "/api/v1/runners", Some(&token), None)
        .await;
    assert_eq!(res.status().as_u16(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let replays = w.events(SecurityEventKind::Replay).await;
    assert_eq!(replays.len(), 10);
    assert!(replays.iter().any(|e| e.endpoint == "GET /api/v1/runners"));
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    assert!(
        replays
            .iter()
            .all(|e| e.token_sha256.as_deref() == Some(digest.as_str()))
    );
    let stored = serde_json::to_string(&replays).unwrap();
    assert!(!stored.contains(&token), "the token itself is never stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_outside_the_policy_and_a_full_quota_are_refused_with_security_events() {
    let w = world().await;
    let (status, body) = w.provision(&w.token(), "win-1", &["windows"]).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("windows"),
        "{body}"
    );
    assert_eq!(w.events(SecurityEventKind::LabelPolicy).await.len(), 1);

    // Ten concurrent requests, each with its own token, against a limit of two.
    let tokens: Vec<String> = (0..10).map(|_| w.token()).collect();
    let mut created = 0;
    for status in w.provision_at_once(tokens).await {
        assert!(status == 201 || status == 403, "{status}");
        created += usize::from(status == 201);
    }
    assert_eq!(created, 2, "exactly max_live_runners");
    assert_eq!(w.events(SecurityEventKind::OverLimit).await.len(), 8);
    assert_eq!(
        w.github.requests_to(Endpoint::OrgJitConfig).len(),
        2,
        "GitHub is asked only for the runners admitted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_owners_runner_is_not_found_and_left_alone() {
    let w = world().await;
    let (status, body) = w.provision(&w.token(), "gpu-1", &["gpu"]).await;
    assert_eq!(status, 201, "{body}");
    let other = || w.mint(actions_token("octo-org/tools"));
    for method in [Method::GET, Method::DELETE] {
        let (status, body) = w
            .json(method, "/api/v1/runners/ci-gpu-1", Some(&other()), None)
            .await;
        assert_eq!(status, 404, "{body}");
    }
    let (status, listed) = w
        .json(Method::GET, "/api/v1/runners", Some(&other()), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["items"], json!([]));
    assert_eq!(w.events(SecurityEventKind::OtherOwner).await.len(), 2);
    let runner = w
        .pacer
        .ports
        .store
        .get_self_runner("ci-gpu-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(runner.status, SelfRunnerStatus::Pending, "untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_a_401_naming_the_check_and_a_security_event() {
    let w = world().await;
    let now = chrono::Utc::now().timestamp();
    let cases: Vec<(&str, TokenScript, &str)> = vec![
        (
            "alg none",
            actions_token(INFRA).signer(Signer::AlgNone),
            "signed",
        ),
        (
            "HS256 signed with the public key",
            actions_token(INFRA).signer(Signer::Hs256WithPublicKey),
            "alg",
        ),
        (
            "expired",
            actions_token(INFRA)
                .set("iat", json!(now - 600))
                .set("exp", json!(now - 300)),
            "expired",
        ),
        (
            "not yet valid",
            actions_token(INFRA).set("nbf", json!(now + 600)),
            "not valid before",
        ),
        (
            "too long a lifetime",
            actions_token(INFRA).set("exp", json!(now + 3600)),
            "lives",
        ),
        (
            "another audience",
            actions_token(INFRA).set("aud", json!("sts.amazonaws.com")),
            "audience",
        ),
        ("no jti", actions_token(INFRA).remove("jti"), "jti"),
        (
            "another issuer",
            actions_token(INFRA).set("iss", json!("https://evil.example")),
            "issuer",
        ),
        (
            "an exact rule missed",
            actions_token(INFRA).set("repository_owner_id", json!("999")),
            "repository_owner_id",
        ),
        (
            "a prefix rule missed",
            actions_token(INFRA).set("workflow_ref", json!("evil/x/.github/workflows/a.yml")),
            "workflow_ref",
        ),
        (
            "a regex rule missed",
            actions_token(INFRA).set("sub", json!("repo:octo-org/infra:ref:refs/heads/dev")),
            "sub",
        ),
    ];
    for (what, script, says) in cases {
        let token = w.mint(script);
        let res = w
            .call(
                Method::POST,
                "/api/v1/runners/provision",
                Some(&token),
                Some(json!({"runner_name": "x", "labels": ["gpu"]})),
            )
            .await;
        assert_eq!(res.status().as_u16(), 401, "{what}");
        assert!(
            res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains(r#"error="invalid_token""#),
            "{what}"
        );
        let body: Value = res.json().await.unwrap();
        let message = body["message"].as_str().unwrap().to_lowercase();
        assert!(message.contains(says), "{what}: {message}");
        assert!(
            !message.contains(&token),
            "{what}: the token is never echoed"
        );
    }
    let invalid = w.events(SecurityEventKind::InvalidToken).await;
    let mismatched = w.events(SecurityEventKind::ClaimMismatch).await;
    assert_eq!(invalid.len() + mismatched.len(), 11);
    assert_eq!(mismatched.len(), 3, "one per claim rule kind");
    assert!(w.github.requests_to(Endpoint::OrgJitConfig).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_address_never_gets_past_the_source_allowlist() {
    let w =
        world_with(|s| s.identities[0].source_cidrs = vec!["10.0.0.0/8".parse().unwrap()]).await;
    let res = w
        .pacer
        .http
        .post(format!("{}/api/v1/runners/provision", w.pacer.base))
        .bearer_auth(w.token())
        .header("X-Forwarded-For", "10.1.2.3")
        .json(&json!({"runner_name": "gpu-1", "labels": ["gpu"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    let refused = w.events(SecurityEventKind::CidrRefused).await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].source_ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pacer_cannot_honour_are_refused_before_github_is_asked() {
    let w = world().await;
    let (status, body) = w
        .json(
            Method::POST,
            "/api/v1/runners/provision",
            Some(&w.token()),
            Some(json!({"runner_name": "keep-1", "labels": ["gpu"], "ephemeral": false})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "ephemeral");
    for (body, field) in [
        (
            json!({"runner_name": "a b", "labels": ["gpu"]}),
            "runner_name",
        ),
        (json!({"runner_name": "x".repeat(65)}), "runner_name"),
        (json!({"runner_name": "ok", "labels": "gpu"}), "labels"),
        (json!({"runner_name": "ok", "label": ["gpu"]}), "label"),
    ] {
        let (status, answer) = w
            .json(
                Method::POST,
                "/api/v1/runners/provision",
                Some(&w.token()),
                Some(body),
            )
            .await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
    }
    // A name GitHub has already.
    w.github
        .add_runner(FakeTarget::org(ORG), "ci-taken", &["gpu"]);
    let (status, body) = w.provision(&w.token(), "taken", &["gpu"]).await;
    assert_eq!(status, 409, "{body}");
    // Its place under the limit was given back.
    for i in 0..2 {
        let (status, body) = w.provision(&w.token(), &format!("gpu-{i}"), &["gpu"]).await;
        assert_eq!(status, 201, "{body}");
    }
    // A token over 16 KiB, and a body over the limit.
    let huge = format!(
        "{}.{}.{}",
        "a".repeat(8000),
        "b".repeat(8000),
        "c".repeat(1000)
    );
    let (status, _) = w
        .json(Method::GET, "/api/v1/runners", Some(&huge), None)
        .await;
    assert_eq!(status, 401);
    let (status, _) = w
        .json(
            Method::POST,
            "/api/v1/runners/provision",
            Some(&w.token()),
            Some(json!({"runner_name": "big", "labels": vec!["gpu"; 5000]})),
        )
        .await;
    assert_eq!(status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_tokens_and_console_sessions_never_stand_in_for_each_other() {
    let w = world().await;
    let (status, _) = w
        .json(Method::GET, "/api/projects", Some(&w.token()), None)
        .await;
    assert_eq!(status, 401, "a workload token is no console session");
    let (status, _) = w
        .json(Method::GET, "/api/v1/runners", Some(&w.admin), None)
        .await;
    assert_eq!(status, 401, "a console session provisions nothing");
    let (status, _) = w
        .json(
            Method::GET,
            "/api/v1/admin/security-events",
            Some(&w.token()),
            None,
        )
        .await;
    assert_eq!(status, 401, "nor administers");
    let res = w.call(Method::GET, "/api/v1/runners", None, None).await;
    assert_eq!(res.status().as_u16(), 401);
    assert!(res.headers().contains_key("www-authenticate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sets_an_owners_policy_which_wins_over_the_identitys() {
    let w = world().await;
    let owner = format!("ci:repo:{INFRA}:ref:refs/heads/main");
    let (status, policy) = w
        .json(
            Method::POST,
            "/api/v1/admin/label-policies",
            Some(&w.admin),
            Some(json!({
                "identity": owner,
                "allowed_labels": ["arm64"],
                "required_labels": ["infra"],
                "max_live_runners": 1,
            })),
        )
        .await;
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["allowed_labels"], json!(["arm64"]));

    // The identity's own default allowed gpu; the owner's policy does not.
    let (status, _) = w.provision(&w.token(), "gpu-1", &["gpu"]).await;
    assert_eq!(status, 403);
    let (status, body) = w.provision(&w.token(), "arm-1", &["arm64"]).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["labels"], json!(["arm64", "infra", "self-hosted"]));

    let path = format!(
        "/api/v1/admin/label-policies/{}",
        owner.replace(':', "%3A").replace('/', "%2F")
    );
    let (status, got) = w.json(Method::GET, &path, Some(&w.admin), None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["max_live_runners"], 1);
    let (status, listed) = w
        .json(
            Method::GET,
            "/api/v1/admin/label-policies",
            Some(&w.admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let (status, _) = w.json(Method::DELETE, &path, Some(&w.admin), None).await;
    assert_eq!(status, 204);
    let (status, _) = w.json(Method::DELETE, &path, Some(&w.admin), None).await;
    assert_eq!(status, 404);

    // A policy for an identity nobody configured is refused, naming the field.
    let (status, body) = w
        .json(
            Method::POST,
            "/api/v1/admin/label-policies",
            Some(&w.admin),
            Some(json!({"identity": "other:x", "allowed_labels": [], "max_live_runners": 1})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["field"], "identity");

    // Security events, filtered by type.
    let (status, events) = w
        .json(
            Method::GET,
            "/api/v1/admin/security-events?type=label_policy",
            Some(&w.admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{events}");
    assert_eq!(events["items"].as_array().unwrap().len(), 1);
    assert_eq!(events["items"][0]["kind"], "label_policy");
    let (status, _) = w
        .json(
            Method::GET,
            "/api/v1/admin/security-events?type=nonsense",
            Some(&w.admin),
            None,
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_removes_a_runner_that_never_came_online() {
    let w = world().await;
    let (status, body) = w.provision(&w.token(), "gpu-1", &["gpu"]).await;
    assert_eq!(status, 201, "{body}");
    let github_id = body["github_runner_id"].as_i64().unwrap();
    let (status, body) = w.provision(&w.token(), "gpu-2", &["gpu"]).await;
    assert_eq!(status, 201, "{body}");
    let online = body["github_runner_id"].as_i64().unwrap();
    w.github.set_runner_status(online, "online", false);

    // A registration timeout of zero: every runner not yet online is overdue.
    let mut ports = w.pacer.ports.clone();
    let mut settings = (*ports.settings).clone();
    settings.self_service.registration_timeout = Duration::ZERO;
    ports.settings = Arc::new(settings);
    let report = pacer_shared::service::reaper::reconcile(&ports)
        .await
        .unwrap();
    assert_eq!(report.self_service.expired, 1, "{report:?}");
    assert!(
        w.github.runner(github_id).is_none(),
        "deregistered on GitHub"
    );
    let store = &w.pacer.ports.store;
    let gone = store.get_self_runner("ci-gpu-1").await.unwrap().unwrap();
    assert_eq!(gone.status, SelfRunnerStatus::Deleted);
    let kept = store.get_self_runner("ci-gpu-2").await.unwrap().unwrap();
    assert_eq!(kept.status, SelfRunnerStatus::Active, "synced from GitHub");

    // A runner GitHub no longer knows is deleted at the next pass.
    w.pacer
        .ports
        .github
        .delete_runner(ORG_INSTALLATION, &RunnerTarget::Org(ORG.into()), online)
        .await
        .unwrap();
    let report = pacer_shared::service::reaper::reconcile(&ports)
        .await
        .unwrap();
    assert_eq!(report.self_service.expired, 0, "{report:?}");
    let gone = store.get_self_runner("ci-gpu-2").await.unwrap().unwrap();
    assert_eq!(gone.status, SelfRunnerStatus::Deleted);
    assert!(gone.deleted_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_with_client_credentials_from_oidc_provider_gets_a_runner() {
    // Given a real OpenID Provider issuing JWT access tokens to a machine
    let provider = crate::oidc_provider::OidcProvider::start_with_machine(
        crate::oidc_provider::MachineClient {
            client_id: "gpu-box-1".into(),
            client_secret: "gpu-box-1-secret-0123456789abcdef".into(),
            resource: "urn:pacer:runners".into(),
            audience: AUDIENCE.into(),
        },
    )
    .await;
    let issuer = provider.issuer.clone();
    let w = world_with(move |s| {
        let id = &mut s.identities[0];
        id.name = "lab".into();
        id.issuer = issuer;
        id.identity_claim = "client_id".into();
        id.claims = vec![ClaimRule {
            claim: "client_id".into(),
            test: ClaimTest::Regex(AnchoredRegex::new("gpu-box-[0-9]+").unwrap()),
        }];
        id.runners.name_prefix = "lab-".into();
    })
    .await;

    // When it provisions with one of its tokens
    let token = provider.machine_token().await;
    let (status, body) = w.provision(&token, "1", &["gpu"]).await;

    // Then it gets a runner registered under its own name
    assert_eq!(status, 201, "{body}\n{}", provider.logs());
    assert_eq!(body["runner_name"], "lab-1");
    let runner = w
        .pacer
        .ports
        .store
        .get_self_runner("lab-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(runner.owner, "lab:gpu-box-1");
    // and the same token is spent
    let (status, _) = w.provision(&token, "2", &["gpu"]).await;
    assert_eq!(status, 401);
    let (status, body) = w
        .json(
            Method::GET,
            "/api/v1/runners",
            Some(&provider.machine_token().await),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_tokens_fill_the_security_events_only_up_to_the_minutes_limit() {
    use pacer_shared::service::self_service::UNVERIFIED_EVENTS_PER_MINUTE;
    // pacer's clock stands still, so the whole test falls in one minute.
    let clock = Arc::new(pacer_shared::clock::ManualClock::new(chrono::Utc::now()));
    let w = world_on(clock, |_| {}).await;
    let limit = UNVERIFIED_EVENTS_PER_MINUTE as usize;
    for i in 0..limit + 10 {
        let res = w
            .call(
                Method::GET,
                "/api/v1/runners",
                Some(&format!("garbage-{i}")),
                None,
            )
            .await;
        assert_eq!(res.status().as_u16(), 401, "refused whether stored or not");
    }
    let stored = w
        .pacer
        .ports
        .store
        .list_security_events(&SecurityEventFilter::default(), &PageRequest::first(500))
        .await
        .unwrap()
        .items;
    assert_eq!(stored.len(), limit);
    // A verified token's refusal is stored all the same.
    let (status, _) = w.provision(&w.token(), "win", &["windows"]).await;
    assert_eq!(status, 403);
    assert_eq!(w.events(SecurityEventKind::LabelPolicy).await.len(), 1);
}
