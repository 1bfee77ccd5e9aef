//! The administrators' view of self-service runners, over HTTP: the
//! configured trusted identities, every owner's runners and the security
//! events, each for an admin's session alone, with the filters the console's
//! Self-service page sends. The world (test IdP, fake GitHub, pacer on
//! SQLite) is `self_service.rs`'s.

use reqwest::Method;
use serde_json::{Value, json};

use crate::self_service::{INFRA, ORG, World, actions_token, world, world_with};

const VIEWER: &str = "viewer@example.com";

/// A viewer's console session, made by the admin.
async fn viewer(w: &World) -> String {
    let (status, made) = w
        .json(
            Method::POST,
            "/api/users",
            Some(&w.admin),
            Some(json!({"email": VIEWER, "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let (status, login) = w
        .json(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": VIEWER, "password": made["password"]})),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    login["token"].as_str().unwrap().to_string()
}

fn owner_of(repo: &str) -> String {
    format!("ci:repo:{repo}:ref:refs/heads/main")
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["runner_name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reads_the_trusted_identities_as_configured_and_nothing_more() {
    let w = world().await;
    let (status, body) = w.admin_get("/api/v1/admin/trusted-identities").await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    let ci = &items[0];
    let mut keys: Vec<&str> = ci.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "audience",
            "claims",
            "identity_claim",
            "issuer",
            "label_policy",
            "max_token_lifetime",
            "name",
            "runners",
            "source_cidrs",
        ],
        "the view's fields, and no other"
    );
    assert_eq!(ci["name"], "ci");
    assert!(
        ci["issuer"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{ci}"
    );
    assert_eq!(ci["audience"], "pacer-runners");
    assert_eq!(ci["identity_claim"], "sub");
    assert_eq!(
        ci["claims"],
        json!([
            {"claim": "repository_owner_id", "kind": "exact", "value": "123456"},
            {"claim": "workflow_ref", "kind": "prefix", "value": "octo-org/"},
            {"claim": "sub", "kind": "regex", "value": "repo:octo-org/[^:]+:ref:refs/heads/main"},
        ])
    );
    assert_eq!(ci["source_cidrs"], json!([]));
    assert_eq!(ci["max_token_lifetime"], "15m");
    assert_eq!(
        ci["runners"],
        json!({"scope": "org", "org": ORG, "repo": null, "runner_group_id": 1, "name_prefix": "ci-"})
    );
    assert_eq!(
        ci["label_policy"],
        json!({"allowed_labels": ["gpu", "linux", "cuda-*"], "required_labels": ["on-prem"], "max_live_runners": 2})
    );

    let viewer = viewer(&w).await;
    let (status, body) = w
        .json(
            Method::GET,
            "/api/v1/admin/trusted-identities",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.get("items").is_none());
    let (status, _) = w
        .json(Method::GET, "/api/v1/admin/trusted-identities", None, None)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_rules_are_shown_as_cidrs_and_an_off_switch_is_a_404_saying_what_to_set() {
    let w = world_with(|s| {
        s.identities[0].source_cidrs = vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        s.identities[0].label_policy = None;
    })
    .await;
    let (status, body) = w.admin_get("/api/v1/admin/trusted-identities").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["items"][0]["source_cidrs"],
        json!(["10.0.0.0/8", "2001:db8::/32"])
    );
    assert_eq!(body["items"][0]["label_policy"], Value::Null);

    let off = world_with(|s| s.enabled = false).await;
    let (status, body) = off
        .json(
            Method::GET,
            "/api/v1/admin/trusted-identities",
            Some(&off.admin),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "not_found");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("set self_service.enabled"),
        "{body}"
    );
    // A viewer learns only that the page is not theirs.
    let viewer = viewer(&off).await;
    let (status, _) = off
        .json(
            Method::GET,
            "/api/v1/admin/trusted-identities",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_lists_every_owners_runners_filtered_by_owner_and_status_page_by_page() {
    let w = world().await;
    let tools = "octo-org/tools";
    let (status, body) = w.provision(&w.token(), "gpu-1", &["gpu"]).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = w
        .provision(&w.mint(actions_token(tools)), "gpu-2", &["linux"])
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = w.provision(&w.token(), "gpu-3", &["cuda-12"]).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = w
        .json(
            Method::DELETE,
            "/api/v1/runners/ci-gpu-3",
            Some(&w.token()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, all) = w.admin_get("/api/v1/admin/runners").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        names(&all),
        ["ci-gpu-3", "ci-gpu-2", "ci-gpu-1"],
        "every owner's, newest first"
    );
    let second = &all["items"][1];
    assert_eq!(second["owner"], owner_of(tools));
    assert_eq!(second["trusted_identity"], "ci");
    assert_eq!(second["status"], "pending");
    assert_eq!(second["labels"], json!(["linux", "on-prem", "self-hosted"]));
    assert_eq!(second["placement"]["org"], ORG);
    assert_eq!(second["source_ip"], "127.0.0.1");
    assert!(second["id"].as_str().unwrap().starts_with("ssr_"));
    assert!(second["github_runner_id"].is_i64());
    for internal in ["installation_id", "version", "encoded_jit_config"] {
        assert!(second.get(internal).is_none(), "{internal}: {second}");
    }

    let owner = owner_of(INFRA);
    let query = |q: &str| format!("/api/v1/admin/runners?{q}");
    let by_owner = format!("owner={}", urlencode(&owner));
    let (status, mine) = w.admin_get(&query(&by_owner)).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(names(&mine), ["ci-gpu-3", "ci-gpu-1"]);
    let (_, deleted) = w.admin_get(&query("status=deleted")).await;
    assert_eq!(names(&deleted), ["ci-gpu-3"]);
    assert_eq!(deleted["items"][0]["status"], "deleted");
    assert!(deleted["items"][0]["deleted_at"].is_string());
    let (_, pending_of_infra) = w
        .admin_get(&query(&format!("{by_owner}&status=pending")))
        .await;
    assert_eq!(names(&pending_of_infra), ["ci-gpu-1"]);
    let (_, nobody) = w.admin_get(&query("owner=ci%3Anobody")).await;
    assert_eq!(nobody["items"], json!([]));
    assert_eq!(nobody["next_cursor"], Value::Null);

    // Page by page, each runner once.
    let (_, first) = w.admin_get(&query("limit=2")).await;
    assert_eq!(names(&first), ["ci-gpu-3", "ci-gpu-2"]);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (_, rest) = w
        .json(
            Method::GET,
            &query(&format!("limit=2&cursor={}", urlencode(&cursor))),
            Some(&w.admin),
            None,
        )
        .await;
    assert_eq!(names(&rest), ["ci-gpu-1"]);
    assert_eq!(rest["next_cursor"], Value::Null);

    let (status, body) = w.admin_get(&query("status=Active")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("pending, active, offline, deleted"),
        "{body}"
    );
    let (status, _) = w.admin_get(&query("state=active")).await;
    assert_eq!(status, 400, "an unknown parameter is refused");

    let viewer = viewer(&w).await;
    let (status, body) = w
        .json(Method::GET, "/api/v1/admin/runners", Some(&viewer), None)
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.get("items").is_none());
    // A workload token is no console session, even for its own runners.
    let (status, _) = w
        .json(Method::GET, "/api/v1/admin/runners", Some(&w.token()), None)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_events_filter_by_type_identity_and_time_newest_first_for_admins_only() {
    let w = world().await;
    // A garbage bearer: refused before any identity is known.
    let (status, _) = w
        .json(Method::GET, "/api/v1/runners", Some("garbage"), None)
        .await;
    assert_eq!(status, 401);
    // A label outside the policy: refused for a known owner.
    let (status, body) = w.provision(&w.token(), "win-1", &["windows"]).await;
    assert_eq!(status, 403, "{body}");

    let events = |q: String| {
        let w = &w;
        async move {
            let (status, body) = w
                .admin_get(&format!("/api/v1/admin/security-events?{q}"))
                .await;
            assert_eq!(status, 200, "{q}: {body}");
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["kind"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        events(String::new()).await,
        ["label_policy", "invalid_token"],
        "newest first"
    );
    let owner = owner_of(INFRA);
    assert_eq!(
        events(format!("identity={}", urlencode(&owner))).await,
        ["label_policy"]
    );
    assert_eq!(events("type=invalid_token".into()).await, ["invalid_token"]);
    assert!(
        events(format!("type=invalid_token&identity={}", urlencode(&owner)))
            .await
            .is_empty()
    );
    // Times as the console sends them; "since" is at or after, "until" before.
    let an_hour = chrono::Duration::hours(1);
    let now = chrono::Utc::now();
    let at = |t: chrono::DateTime<chrono::Utc>| {
        urlencode(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    assert_eq!(
        events(format!("since={}", at(now - an_hour))).await.len(),
        2
    );
    assert!(
        events(format!("since={}", at(now + an_hour)))
            .await
            .is_empty()
    );
    assert!(
        events(format!("until={}", at(now - an_hour)))
            .await
            .is_empty()
    );
    assert_eq!(
        events(format!(
            "since={}&until={}&type=label_policy",
            at(now - an_hour),
            at(now + an_hour)
        ))
        .await,
        ["label_policy"]
    );
    let (status, body) = w
        .admin_get("/api/v1/admin/security-events?since=yesterday")
        .await;
    assert_eq!(status, 400, "{body}");

    let viewer = viewer(&w).await;
    for path in [
        "/api/v1/admin/security-events",
        "/api/v1/admin/label-policies",
    ] {
        let (status, body) = w.json(Method::GET, path, Some(&viewer), None).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
}

/// Percent-encodes a query value (owners hold ':' and '/', cursors '=').
fn urlencode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
