//! Hostile input through the whole router, in process: every field of
//! GitHub's real `workflow_job` deliveries replaced by any JSON value (and
//! signed, so the full intake path runs), and any query string on the list
//! routes. A release build aborts on a panic, so what counts is the answer:
//! never a 5xx, a refusal is a 4xx with pacer's `{error, message}` body, and
//! pacer still answers `/healthz` afterwards.

use std::sync::atomic::{AtomicI64, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::api_crud::TestApp;
use pacer_test_support::arbitrary::{any_json, hostile_text};

/// One pacer on its own runtime, for properties whose cases share it (a
/// fresh store per case would cost more than the case).
struct Served {
    rt: tokio::runtime::Runtime,
    app: TestApp,
}

impl Served {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = rt.block_on(async { TestApp::new() });
        Self { rt, app }
    }

    /// Checks `property` on `cases` values of `strategy`, as `proptest!`
    /// does: a failure is shrunk to its smallest case and recorded under
    /// `proptest-regressions/`, so the next run tries it first.
    fn check<S: Strategy>(
        &self,
        cases: u32,
        strategy: S,
        property: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) {
        let mut runner = TestRunner::new(Config {
            cases,
            source_file: Some(file!()),
            ..Config::default()
        });
        if let Err(failure) = runner.run(&strategy, property) {
            panic!("{failure}");
        }
    }

    fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        self.rt.block_on(self.app.send(req))
    }

    fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.rt.block_on(self.app.post(path, body))
    }

    /// A `workflow_job` delivery of `body`, signed with the webhook secret.
    fn webhook(&self, body: Vec<u8>) -> (StatusCode, Value) {
        let signature =
            pacer_shared::github::webhook::sign(crate::support::WEBHOOK_SECRET.as_bytes(), &body);
        let req = Request::post("/api/webhook")
            .header("x-github-event", "workflow_job")
            .header("x-github-delivery", "hostile")
            .header("x-hub-signature-256", signature)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        self.send(req)
    }

    fn still_healthy(&self) -> Result<(), TestCaseError> {
        let (status, body) = self.send(Request::get("/healthz").body(Body::empty()).unwrap());
        prop_assert_eq!((status, body), (StatusCode::OK, Value::String("ok".into())));
        Ok(())
    }
}

/// Never a 5xx; a refusal is a 4xx saying what is wrong in pacer's error body.
fn clean_answer(status: StatusCode, body: &Value, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(!status.is_server_error(), "{what}: {status} {body}");
    if status.is_client_error() {
        let said = |field: &str| body[field].as_str().is_some_and(|text| !text.is_empty());
        prop_assert!(
            said("error") && said("message"),
            "{what}: {status} without pacer's error body: {body}"
        );
    }
    Ok(())
}

// --------------------------------------------------------------------------------- webhooks

/// What replaces a field: any JSON value, or a number too large or too
/// precise for any Rust integer or float, written as raw JSON text.
#[derive(Debug, Clone)]
enum Replacement {
    Json(Value),
    RawNumber(&'static str),
}

const RAW_NUMBER_PLACEHOLDER: &str = "pacer-raw-number-placeholder";

fn replacement() -> impl Strategy<Value = Replacement> {
    let raw_numbers = vec![
        "1e400",
        "-1e400",
        "123456789012345678901234567890",
        "-9223372036854775809",
        "18446744073709551616",
        "0.000000000000000000000000000000000000001",
        "-0",
    ];
    prop_oneof![
        9 => any_json().prop_map(Replacement::Json),
        1 => proptest::sample::select(raw_numbers).prop_map(Replacement::RawNumber),
    ]
}

/// Job ids no example uses, one per delivery, so each one takes the path of
/// a job pacer has not seen.
static NEXT_JOB_ID: AtomicI64 = AtomicI64::new(9_000_000_000);

/// The JSON Pointer of every value in `value`, the root's (empty) first and
/// parents before their children.
fn json_pointers(value: &Value) -> Vec<String> {
    fn walk(value: &Value, here: &str, out: &mut Vec<String>) {
        out.push(here.to_string());
        let children: Vec<(String, &Value)> = match value {
            Value::Object(map) => map
                .iter()
                .map(|(key, child)| (key.replace('~', "~0").replace('/', "~1"), child))
                .collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(index, child)| (index.to_string(), child))
                .collect(),
            _ => Vec::new(),
        };
        for (step, child) in children {
            walk(child, &format!("{here}/{step}"), out);
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out
}

/// `example` with a fresh job id and `replacement` at `path`, as bytes.
fn tampered(example: &Value, path: &str, replacement: &Replacement) -> Vec<u8> {
    let mut delivery = example.clone();
    delivery["workflow_job"]["id"] = NEXT_JOB_ID.fetch_add(1, Ordering::Relaxed).into();
    let value = match replacement {
        Replacement::Json(value) => value.clone(),
        Replacement::RawNumber(_) => Value::String(RAW_NUMBER_PLACEHOLDER.into()),
    };
    *delivery
        .pointer_mut(path)
        .expect("the path is the example's") = value;
    let text = delivery.to_string();
    match replacement {
        Replacement::RawNumber(raw) => text.replace(&format!("\"{RAW_NUMBER_PLACEHOLDER}\""), raw),
        Replacement::Json(_) => text,
    }
    .into_bytes()
}

/// The examples' repository, bound to a project (allowing public
/// repositories, as it is one) whose pool offers their `k8s` label: each
/// delivery runs the whole intake path, down to a queued job.
fn serving_the_examples(served: &Served) {
    let (_, project) = served.post(
        "/api/projects",
        json!({"name": "elastic", "allow_public_repos": true}),
    );
    let project = project["id"].as_str().unwrap();
    let mut pool = crate::api_crud::pool_body(project, "k8s");
    pool["labels"] = json!(["k8s"]);
    assert_eq!(served.post("/api/pools", pool).0, StatusCode::CREATED);
    let bind = json!({"repo": "lineville/elastic-machines-testing", "project_id": project});
    assert_eq!(served.post("/api/repos", bind).0, StatusCode::CREATED);
}

#[test]
fn any_json_in_any_field_of_a_signed_delivery_is_taken_in_or_refused_with_a_400() {
    let served = Served::new();
    serving_the_examples(&served);
    let examples = crate::webhook_examples::examples();
    let paths: Vec<Vec<String>> = examples.iter().map(json_pointers).collect();
    // Each case puts its values, in turn, at every path of every example.
    served.check(
        4,
        proptest::collection::vec(replacement(), 1..32),
        |values| {
            let mut turn = values.iter().cycle();
            for (example, paths) in examples.iter().zip(&paths) {
                for path in paths {
                    let value = turn.next().expect("at least one value");
                    let (status, answer) = served.webhook(tampered(example, path, value));
                    let what = format!("{path:?} = {value:?}");
                    prop_assert!(
                        matches!(status.as_u16(), 200 | 202 | 400),
                        "{what}: {status} {answer}"
                    );
                    clean_answer(status, &answer, &what)?;
                }
            }
            served.still_healthy()
        },
    );
}

// ----------------------------------------------------------------------------- query strings

/// The list routes and the parameters each reads: the GET routes with a
/// query in the hostile suite's table, which a test holds to the router.
fn list_routes() -> Vec<(&'static str, &'static [&'static str])> {
    crate::hostile::ROUTES
        .iter()
        .filter(|route| {
            route.method == "GET" && !route.query.is_empty() && !route.path.contains('{')
        })
        .map(|route| (route.path, route.query))
        .collect()
}

/// Values `parameter` might be given: numbers at the edges of their types,
/// times at the edges of the calendar, cursors real and forged, words the
/// route knows and does not, and any text at all.
fn parameter_value(parameter: &str) -> impl Strategy<Value = String> {
    let edges = match parameter {
        "limit" | "github_job_id" => vec![
            "0",
            "1",
            "500",
            "501",
            "4294967296",
            "-1",
            "1.5",
            "9223372036854775808",
            "",
        ],
        "from" | "to" => vec![
            "2026-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "+262142-12-31T23:59:59Z",
            "+262143-12-31T23:59:59Z",
            "-262143-01-01T00:00:00Z",
            "-262143-01-01T23:59:59Z",
            "-262144-01-01T00:00:00Z",
            "2026-01-01T00:00:00+25:00",
            "",
        ],
        "cursor" => vec![
            "",
            "cnVuXzE",
            "am9iXw",
            "!!",
            "eyJwayI6IiIsInNrIjoiIn0",
            "cnVuXzE=",
        ],
        _ => vec![
            "",
            "queued",
            "pending,busy,",
            "oldest",
            "day",
            "runner.*",
            "*",
            "job.no_pool_match",
            "acme/app",
        ],
    };
    prop_oneof![
        3 => proptest::sample::select(edges).prop_map(str::to_string),
        1 => hostile_text(),
    ]
}

/// Percent-encodes everything but the unreserved characters.
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A query for a list route reading `own`: those parameters with any
/// values, now and then another route's or an unknown one, encoded; or raw
/// text of the characters a URI allows in a query (stray `%`s included).
fn query_for(own: &'static [&'static str]) -> impl Strategy<Value = String> {
    let all: Vec<&str> = list_routes()
        .iter()
        .flat_map(|(_, names)| names.iter().copied())
        .collect();
    let name = prop_oneof![6 => proptest::sample::select(own), 1 => proptest::sample::select(all)];
    let known = name.prop_flat_map(|name| (Just(name.to_string()), parameter_value(name)));
    let pair = prop_oneof![6 => known, 1 => (hostile_text(), parameter_value(""))];
    let pairs = proptest::collection::vec(pair, 1..4).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(n, v)| format!("{}={}", encoded(n), encoded(v)))
            .collect::<Vec<_>>()
            .join("&")
    });
    prop_oneof![4 => pairs, 1 => "[A-Za-z0-9%&=_.~+,;:@/?!$'()*-]{0,80}"]
}

#[test]
fn any_query_string_on_a_list_route_is_answered_or_refused_with_a_4xx() {
    let served = Served::new();
    served.rt.block_on(served.app.seed());
    let queued = crate::support::queued_payload(77, "acme/app", &["self-hosted", "linux"]);
    assert_eq!(
        served.webhook(queued.to_string().into_bytes()).0,
        StatusCode::ACCEPTED
    );
    // Each case asks every list route, each with a query of its own.
    let routes = list_routes();
    assert!(routes.len() >= 7, "the list routes were found: {routes:?}");
    let queries: Vec<_> = routes.iter().map(|(_, own)| query_for(own)).collect();
    served.check(192, queries, |queries| {
        for ((route, _), query) in routes.iter().zip(&queries) {
            let uri = format!("{route}?{query}");
            let Ok(req) = Request::get(&uri).body(Body::empty()) else {
                // Not a URI at all: no HTTP client could send it.
                return Err(TestCaseError::reject("not a URI"));
            };
            let (status, answer) = served.send(req);
            clean_answer(status, &answer, &uri)?;
        }
        served.still_healthy()
    });
}
