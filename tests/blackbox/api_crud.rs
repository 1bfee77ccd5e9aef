//! The console API for projects, pools, repo bindings and the audit log,
//! in process through `app()` (docs/architecture.md, "Conventions": ids, PATCH,
//! `{items, next_cursor}` pages, `{error, message, field}` errors).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use pacer_shared::http::{AppState, app};
use serde_json::{Value, json};
use tower::ServiceExt;

pub struct TestApp {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ports, _) = crate::support::local_ports(dir.path());
        let state = AppState {
            ports,
            trusted_proxies: Arc::new(vec![]),
            auth: None,
            sso: None,
            console: None,
            workload: None,
        };
        Self {
            router: app(state),
            _dir: dir,
        }
    }

    pub async fn raw(&self, method: Method, path: &str, body: Body) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        self.send(req).await
    }

    /// Any request, answered by the whole router; a body that is not JSON comes back as a string.
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body
            .map(|b| Body::from(b.to_string()))
            .unwrap_or_else(Body::empty);
        self.raw(method, path, body).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a project, a pool and a binding; returns their ids.
    pub async fn seed(&self) -> (String, String, String) {
        let (s, p) = self
            .post("/api/projects", json!({"name": "acme", "label": "acme"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let project = p["id"].as_str().unwrap().to_string();
        let (s, pool) = self.post("/api/pools", pool_body(&project, "linux")).await;
        assert_eq!(s, StatusCode::CREATED, "{pool}");
        let (s, b) = self
            .post(
                "/api/repos",
                json!({"repo": "acme/app", "project_id": project}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        (
            project,
            pool["id"].as_str().unwrap().into(),
            b["id"].as_str().unwrap().into(),
        )
    }
}

pub fn pool_body(project_id: &str, name: &str) -> Value {
    json!({"project_id": project_id, "name": name, "labels": ["linux", "arm64"],
           "instance_types": ["m7g.large", "m6g.large"], "subnets": ["subnet-0abc1234"],
           "security_groups": ["sg-0abc1234"], "ami": "ami-0123456789abcdef0",
           "market": "spot-fallback", "max_runners": 10, "boot_timeout": "10m"})
}

#[tokio::test]
async fn health_and_version_answer_without_auth() {
    let app = TestApp::new();
    let (s, body) = app.get("/healthz").await;
    assert_eq!((s, body), (StatusCode::OK, Value::String("ok".into())));
    let (s, body) = app.get("/api/version").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body["version"].as_str().unwrap().starts_with("v0."),
        "{body}"
    );
}

#[tokio::test]
async fn a_project_is_created_read_listed_updated_and_deleted() {
    let app = TestApp::new();
    let (s, created) = app
        .post(
            "/api/projects",
            json!({"name": "acme", "scope": "org", "org": "acme-org"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("prj_"));
    assert_eq!(
        (
            created["label"].as_str(),
            created["runner_group_id"].as_i64()
        ),
        (Some("acme"), Some(1))
    );

    assert_eq!(
        app.get(&format!("/api/projects/{id}")).await,
        (StatusCode::OK, created.clone())
    );
    let (s, list) = app.get("/api/projects").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        list,
        json!({"items": [created.clone()], "next_cursor": null})
    );

    let (s, updated) = app
        .patch(
            &format!("/api/projects/{id}"),
            json!({"label": "acme-ci", "runner_group_id": 4}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(
        (
            updated["label"].as_str(),
            updated["runner_group_id"].as_i64()
        ),
        (Some("acme-ci"), Some(4))
    );
    assert_eq!(updated["name"], "acme", "fields not in the PATCH are kept");

    assert_eq!(
        app.delete(&format!("/api/projects/{id}")).await.0,
        StatusCode::NO_CONTENT
    );
    let (s, body) = app.get(&format!("/api/projects/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    assert_eq!(
        app.delete(&format!("/api/projects/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_malformed_body_is_a_400() {
    let app = TestApp::new();
    let (s, body) = app
        .raw(Method::POST, "/api/projects", Body::from("{not json"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "bad_request");
    assert!(body["message"].as_str().unwrap().contains("not valid JSON"));
    let (s, _) = app
        .raw(Method::POST, "/api/projects", Body::from("[1, 2]"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_invalid_field_is_a_422_naming_it() {
    let app = TestApp::new();
    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": "acme", "scope": "team"}), "scope"),
        (json!({"name": "acme", "scope": "org"}), "org"),
        (json!({"name": "acme", "nmae": "typo"}), "nmae"),
    ] {
        let (s, err) = app.post("/api/projects", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            (err["error"].as_str(), err["field"].as_str()),
            (Some("invalid"), Some(field)),
            "{body}"
        );
        assert!(err["message"].as_str().unwrap().starts_with(field));
    }
    let (project, _, _) = app.seed().await;
    let mut bad_pool = pool_body(&project, "gpu");
    bad_pool["subnets"] = json!(["not-a-subnet"]);
    let (s, err) = app.post("/api/pools", bad_pool).await;
    assert_eq!(
        (s, err["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("subnets"))
    );
    let (s, err) = app
        .post(
            "/api/pools",
            pool_body("prj_01jzzzzzzzzzzzzzzzzzzzzzzz", "gpu"),
        )
        .await;
    assert_eq!(
        (s, err["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("project_id"))
    );
}

#[tokio::test]
async fn duplicates_are_409_naming_the_field() {
    let app = TestApp::new();
    let (project, _, _) = app.seed().await;
    let (s, err) = app.post("/api/projects", json!({"name": "ACME"})).await;
    assert_eq!(
        (s, err["field"].as_str()),
        (StatusCode::CONFLICT, Some("name")),
        "{err}"
    );
    let (s, err) = app.post("/api/pools", pool_body(&project, "linux")).await;
    assert_eq!(
        (s, err["field"].as_str()),
        (StatusCode::CONFLICT, Some("name"))
    );
    let (s, err) = app
        .post(
            "/api/repos",
            json!({"repo": "ACME/App", "project_id": project}),
        )
        .await;
    assert_eq!(
        (s, err["field"].as_str()),
        (StatusCode::CONFLICT, Some("repo"))
    );
}

#[tokio::test]
async fn deleting_a_project_others_depend_on_is_a_409_naming_them() {
    let app = TestApp::new();
    let (project, pool, binding) = app.seed().await;
    let (s, err) = app.delete(&format!("/api/projects/{project}")).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("linux") && message.contains("acme/app"),
        "{message}"
    );

    assert_eq!(
        app.delete(&format!("/api/pools/{pool}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete(&format!("/api/repos/{binding}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete(&format!("/api/projects/{project}")).await.0,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn a_pool_patch_is_validated_like_a_create() {
    let app = TestApp::new();
    let (_, pool, _) = app.seed().await;
    let path = format!("/api/pools/{pool}");
    let (s, updated) = app
        .patch(&path, json!({"max_runners": 3, "max_lifetime": "2h30m"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(
        (
            updated["max_runners"].as_i64(),
            updated["max_lifetime"].as_str()
        ),
        (Some(3), Some("2h30m"))
    );
    assert_eq!(updated["market"], "spot-fallback");

    for (patch, field) in [
        (json!({"max_runners": 0}), "max_runners"),
        (json!({"boot_timeout": "12hours"}), "boot_timeout"),
        (json!({"project_id": "prj_other"}), "project_id"),
        (json!({"id": "pool_x"}), "id"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let (s, err) = app.patch(&path, patch.clone()).await;
        assert_eq!(
            (s, err["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{patch}"
        );
    }
    let (_, unchanged) = app.get(&path).await;
    assert_eq!(
        unchanged["max_runners"], 3,
        "a refused PATCH changes nothing"
    );
}

#[tokio::test]
async fn a_repo_bound_to_an_org_project_must_be_in_that_org() {
    let app = TestApp::new();
    let (_, p) = app
        .post(
            "/api/projects",
            json!({"name": "org", "scope": "org", "org": "acme-org"}),
        )
        .await;
    let id = p["id"].as_str().unwrap();
    let (s, err) = app
        .post(
            "/api/repos",
            json!({"repo": "someone-else/app", "project_id": id}),
        )
        .await;
    assert_eq!(
        (s, err["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("repo"))
    );
    let (s, _) = app
        .post(
            "/api/repos",
            json!({"repo": "acme-org/app", "project_id": id}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn lists_page_with_cursors_and_filter_by_project() {
    let app = TestApp::new();
    let (project, _, _) = app.seed().await;
    for n in 0..4 {
        assert_eq!(
            app.post("/api/pools", pool_body(&project, &format!("p{n}")))
                .await
                .0,
            StatusCode::CREATED
        );
    }
    let (_, other) = app.post("/api/projects", json!({"name": "other"})).await;
    let other = other["id"].as_str().unwrap();
    app.post("/api/pools", pool_body(other, "elsewhere")).await;

    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/pools?project_id={project}&limit=2&cursor={c}"),
            None => format!("/api/pools?project_id={project}&limit=2"),
        };
        let (s, page) = app.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert!(page["items"].as_array().unwrap().len() <= 2);
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(names, ["linux", "p0", "p1", "p2", "p3"]);
}

#[tokio::test]
async fn bad_query_parameters_are_a_400() {
    let app = TestApp::new();
    let (s, err) = app.get("/api/projects?limt=5").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(err["message"].as_str().unwrap().contains("limt"), "{err}");
    assert_eq!(
        app.get("/api/projects?limit=many").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.get("/api/projects?cursor=%21%21").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.get("/api/audit?from=yesterday").await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn an_oversized_body_is_a_413() {
    let app = TestApp::new();
    let huge = format!("{{\"name\": \"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let (s, err) = app
        .raw(Method::POST, "/api/projects", Body::from(huge))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
}

#[tokio::test]
async fn every_mutation_is_audited_and_the_log_filters() {
    let app = TestApp::new();
    let (project, pool, _) = app.seed().await;
    app.patch(&format!("/api/pools/{pool}"), json!({"max_runners": 2}))
        .await;
    app.post("/api/projects", json!({"name": "bad name"})).await; // refused: not audited

    let (s, log) = app.get("/api/audit").await;
    assert_eq!(s, StatusCode::OK);
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "pool.updated",
            "repo.bound",
            "pool.created",
            "project.created"
        ],
        "newest first"
    );
    let first = &log["items"][3];
    assert_eq!(
        (first["target"].as_str(), first["actor"]["id"].as_str()),
        (Some(project.as_str()), Some("anonymous"))
    );
    assert_eq!(log["items"][0]["detail"]["changed"], json!(["max_runners"]));

    let (_, only) = app.get("/api/audit?action=pool.created").await;
    assert_eq!(only["items"].as_array().unwrap().len(), 1);
    let (_, pools) = app.get("/api/audit?action=pool.*").await;
    let actions: Vec<&str> = pools["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["pool.updated", "pool.created"],
        "every pool event"
    );
    let (s, body) = app.get("/api/audit?action=*.created").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("runner.*"),
        "{body}"
    );
    let (_, page) = app.get("/api/audit?limit=3").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, rest) = app
        .get(&format!("/api/audit?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(rest["items"][0]["action"], "project.created");
    let (_, future) = app.get("/api/audit?from=2999-01-01T00:00:00Z").await;
    assert_eq!(future["items"], json!([]));
}

/// Ids come from the state like times do: with both fixed, a test knows
/// every id before it is made — the project's, then its audit entry's.
#[tokio::test]
async fn with_the_clock_and_ids_fixed_a_test_knows_each_id_in_advance() {
    use pacer_shared::domain::{IdKind, SequentialIds};
    use pacer_shared::service::{Caller, config_objects};

    let dir = tempfile::tempdir().unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .unwrap()
        .to_utc();
    let ports = pacer_shared::service::Ports {
        clock: Arc::new(pacer_shared::clock::ManualClock::new(at)),
        ids: Arc::new(SequentialIds::default()),
        ..crate::support::local_ports(dir.path()).0
    };
    let body = json!({"name": "acme"}).as_object().cloned().unwrap();
    let project = config_objects::create_project(&ports, &Caller::system("test"), body)
        .await
        .unwrap();
    assert_eq!(project.id, SequentialIds::nth(IdKind::Project, at, 1));
    let audit = ports
        .store
        .list_audit(
            &Default::default(),
            &pacer_shared::store::PageRequest::first(10),
        )
        .await
        .unwrap();
    let ids: Vec<&str> = audit.items.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        [SequentialIds::nth(IdKind::Audit, at, 2)],
        "{:?}",
        audit.items
    );
}
