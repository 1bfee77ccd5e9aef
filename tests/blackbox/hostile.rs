//! The hostile-input suite an outside security review asked for: every route
//! of the real `pacer serve`, over HTTP, with malformed and hostile requests.
//!
//! A release build aborts on any panic, so one hostile request must never
//! reach one. This is a debug build, which catches a handler's panic and keeps
//! serving, so "the process is alive" proves little: the suite also reads the
//! process's stderr, which must never say `panicked`.
//!
//! After every request: no 5xx and no hang, and a 4xx that is JSON has pacer's
//! `{"error", "message"}` shape. After every batch: `/healthz` answers `ok`, the
//! process runs, and nothing was written. "Nothing written" means every project,
//! pool, repo binding, job, runner and user reads back exactly as before the
//! batch, and the audit log gained no entry but the ones the batch allows: a
//! failed sign-in is audited (that is what the log is for), and so is a
//! GitHub-signed job of a repository no project serves; nothing else.
//!
//! Which routes exist is not left to this file alone: [`ROUTES`] must equal the
//! `.route(…)` calls in `shared/src/http`, read from the source, and the running
//! process must answer each of its entries as a route, not as "no route".

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use futures::StreamExt;
use pacer_shared::http::self_service::WORKLOAD_BODY_LIMIT;
use pacer_shared::http::{API_BODY_LIMIT, webhook::WEBHOOK_BODY_LIMIT};
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::{BOOTSTRAP_EMAIL, Served};

const WEBHOOK_SECRET: &str = "hostile-suite-webhook-secret-0123456789abcdef";
const SELF_SERVICE: &str = r#"
self_service:
  enabled: true
  trusted_identities:
    - name: hostile
      issuer: http://127.0.0.1:9
      audience: pacer-runners
      claims:
        sub: { regex: "repo:hostile/[^:]+:ref:refs/heads/main" }
      runners: { scope: org, org: hostile }
      label_policy: { allowed_labels: ["probe-*"], max_live_runners: 1 }
"#;

/// Known to the suite so it can mint well-formed callback tokens for runners
/// that do not exist.
const CALLBACK_SECRET: &str = "hostile-suite-callback-secret-0123456789abcdef";

// ------------------------------------------------------------------ the routes

/// Who may call a route.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Guard {
    /// Anyone: health, version, sign-in.
    Open,
    /// A console session (the suite holds an admin's).
    Session,
    /// GitHub's HMAC signature.
    Signature,
    /// A runner's callback token.
    Callback,
    /// A workload OIDC token (self-service runners). The suite holds none:
    /// every request is refused at the token, the one door to these routes.
    Workload,
}

/// What a field of a JSON body holds, with a valid sample where it is text:
/// hostile text is made from the sample, so the hostile part is the only fault.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Text with a strict shape (names, ids, enums, durations).
    Strict(&'static str),
    /// Text pacer takes nearly as it comes (labels, emails, passwords, logs).
    Free(&'static str),
    /// A whole number in `min..=max`.
    Int(i64, i64),
    Bool,
    /// A list of strict text.
    List(&'static str),
    /// A list of free text (labels).
    FreeList(&'static str),
}

#[derive(Clone, Copy)]
enum Body {
    /// The handler reads no body.
    Ignored,
    /// A JSON object. `base` is a valid body (`{}` for a PATCH), `fields`
    /// every field it may hold; `checked` when a body that does not say it is
    /// JSON is refused with 415 before anything else.
    Json {
        base: fn(&Seeded) -> Value,
        fields: &'static [(&'static str, Kind)],
        checked: bool,
    },
    /// GitHub's deliveries: a batch of their own.
    Webhook,
}

pub(crate) struct Route {
    pub(crate) method: &'static str,
    /// As the router spells it, `{id}` included.
    pub(crate) path: &'static str,
    guard: Guard,
    /// The query parameters a GET route reads.
    pub(crate) query: &'static [&'static str],
    body: Body,
}

const fn get(path: &'static str, guard: Guard, query: &'static [&'static str]) -> Route {
    Route {
        method: "GET",
        path,
        guard,
        query,
        body: Body::Ignored,
    }
}

const fn write(method: &'static str, path: &'static str, guard: Guard, body: Body) -> Route {
    Route {
        method,
        path,
        guard,
        query: &[],
        body,
    }
}

const fn checked(base: fn(&Seeded) -> Value, fields: &'static [(&'static str, Kind)]) -> Body {
    Body::Json {
        base,
        fields,
        checked: true,
    }
}

const PAGE: &[&str] = &["limit", "cursor"];
const BY_PROJECT: &[&str] = &["limit", "cursor", "project_id"];

const PROJECT: &[(&str, Kind)] = &[
    ("name", Kind::Strict("probe")),
    ("scope", Kind::Strict("repo")),
    ("org", Kind::Strict("acme")),
    ("label", Kind::Free("probe-label")),
    ("runner_group_id", Kind::Int(1, i32::MAX as i64)),
    ("allow_public_repos", Kind::Bool),
];
const POOL: &[(&str, Kind)] = &[
    ("project_id", Kind::Strict("prj_01J0000000000000000000000")),
    ("name", Kind::Strict("probe")),
    ("labels", Kind::FreeList("probe-label")),
    ("instance_types", Kind::List("m7g.large")),
    ("subnets", Kind::List("subnet-0abc1234")),
    ("security_groups", Kind::List("sg-0abc1234")),
    ("ami", Kind::Strict("ami-0123456789abcdef0")),
    ("instance_profile", Kind::Strict("probe-profile")),
    ("market", Kind::Strict("spot")),
    ("max_runners", Kind::Int(1, 10_000)),
    ("root_volume_gb", Kind::Int(8, 16_384)),
    ("boot_timeout", Kind::Strict("10m")),
    ("max_lifetime", Kind::Strict("6h")),
    ("idle_timeout", Kind::Strict("5m")),
    ("priority", Kind::Int(-1000, 1000)),
];
const BINDING: &[(&str, Kind)] = &[
    ("repo", Kind::Strict("hostile/probe")),
    ("project_id", Kind::Strict("prj_01J0000000000000000000000")),
];
const LOGIN: &[(&str, Kind)] = &[
    ("email", Kind::Free(BOOTSTRAP_EMAIL)),
    ("password", Kind::Free("not-the-password")),
];
const PASSWORD: &[(&str, Kind)] = &[
    ("current_password", Kind::Free("not-the-password")),
    ("new_password", Kind::Free("a-brand-new-password")),
];
const NEW_USER: &[(&str, Kind)] = &[
    ("email", Kind::Free("probe@example.com")),
    ("role", Kind::Strict("viewer")),
];
const USER_CHANGE: &[(&str, Kind)] = &[("role", Kind::Strict("admin")), ("disabled", Kind::Bool)];
const REGISTRATION: &[(&str, Kind)] = &[("os", Kind::Free("linux")), ("arch", Kind::Free("x64"))];
const BOOTSTRAP_ERROR: &[(&str, Kind)] = &[("log_tail", Kind::Free("probe log"))];
const PROVISION: &[(&str, Kind)] = &[
    ("runner_name", Kind::Strict("probe")),
    ("labels", Kind::FreeList("probe-gpu")),
    ("ephemeral", Kind::Bool),
];
const LABEL_POLICY: &[(&str, Kind)] = &[
    ("identity", Kind::Free("hostile:probe")),
    ("allowed_labels", Kind::FreeList("probe-*")),
    ("required_labels", Kind::FreeList("req")),
    ("max_live_runners", Kind::Int(0, 1000)),
];

fn new_project(_: &Seeded) -> Value {
    json!({"name": "probe"})
}
fn new_pool(s: &Seeded) -> Value {
    crate::api_crud::pool_body(&s.project, "probe")
}
fn new_binding(s: &Seeded) -> Value {
    json!({"repo": "hostile/probe", "project_id": s.project})
}
fn no_change(_: &Seeded) -> Value {
    json!({})
}
fn wrong_login(_: &Seeded) -> Value {
    json!({"email": BOOTSTRAP_EMAIL, "password": "not-the-password"})
}
fn wrong_password_change(_: &Seeded) -> Value {
    json!({"current_password": "not-the-password", "new_password": "a-brand-new-password"})
}
fn new_user(_: &Seeded) -> Value {
    json!({"email": "probe@example.com", "role": "viewer"})
}
fn registration(_: &Seeded) -> Value {
    json!({"os": "linux", "arch": "x64"})
}
fn bootstrap_error(_: &Seeded) -> Value {
    json!({"log_tail": "probe log"})
}
fn provision(_: &Seeded) -> Value {
    json!({"runner_name": "probe", "labels": ["probe-gpu"], "ephemeral": true})
}
fn label_policy(_: &Seeded) -> Value {
    json!({"identity": "hostile:probe", "allowed_labels": ["probe-*"], "max_live_runners": 1})
}

/// Every route pacer serves, as `shared/src/http` declares them.
pub(crate) const ROUTES: &[Route] = &[
    get("/healthz", Guard::Open, &[]),
    get("/api/version", Guard::Open, &[]),
    get("/api/projects", Guard::Session, PAGE),
    write(
        "POST",
        "/api/projects",
        Guard::Session,
        checked(new_project, PROJECT),
    ),
    get("/api/projects/{id}", Guard::Session, &[]),
    write(
        "PATCH",
        "/api/projects/{id}",
        Guard::Session,
        checked(no_change, PROJECT),
    ),
    write(
        "DELETE",
        "/api/projects/{id}",
        Guard::Session,
        Body::Ignored,
    ),
    get("/api/pools", Guard::Session, BY_PROJECT),
    write(
        "POST",
        "/api/pools",
        Guard::Session,
        checked(new_pool, POOL),
    ),
    get("/api/pools/{id}", Guard::Session, &[]),
    write(
        "PATCH",
        "/api/pools/{id}",
        Guard::Session,
        checked(no_change, POOL),
    ),
    write("DELETE", "/api/pools/{id}", Guard::Session, Body::Ignored),
    get("/api/repos", Guard::Session, BY_PROJECT),
    write(
        "POST",
        "/api/repos",
        Guard::Session,
        checked(new_binding, BINDING),
    ),
    get("/api/repos/{id}", Guard::Session, &[]),
    write(
        "PATCH",
        "/api/repos/{id}",
        Guard::Session,
        checked(no_change, BINDING),
    ),
    write("DELETE", "/api/repos/{id}", Guard::Session, Body::Ignored),
    get(
        "/api/audit",
        Guard::Session,
        &["limit", "cursor", "action", "actor", "from", "to"],
    ),
    write("POST", "/api/webhook", Guard::Signature, Body::Webhook),
    write(
        "POST",
        "/api/runner/register",
        Guard::Callback,
        Body::Json {
            base: registration,
            fields: REGISTRATION,
            checked: false,
        },
    ),
    write(
        "POST",
        "/api/runner/complete",
        Guard::Callback,
        Body::Ignored,
    ),
    write(
        "POST",
        "/api/runner/error",
        Guard::Callback,
        checked(bootstrap_error, BOOTSTRAP_ERROR),
    ),
    get(
        "/api/jobs",
        Guard::Session,
        &[
            "limit",
            "cursor",
            "status",
            "project_id",
            "pool_id",
            "repo",
            "github_job_id",
            "from",
            "to",
            "order",
        ],
    ),
    get("/api/jobs/{id}", Guard::Session, &[]),
    get(
        "/api/runners",
        Guard::Session,
        &["limit", "cursor", "pool_id", "state"],
    ),
    get("/api/runners/{id}", Guard::Session, &[]),
    write(
        "POST",
        "/api/runners/{id}/terminate",
        Guard::Session,
        Body::Ignored,
    ),
    get("/api/budgets", Guard::Session, &[]),
    get("/api/stats", Guard::Session, &["from", "to", "group_by"]),
    get(
        "/api/stats/series",
        Guard::Session,
        &["from", "to", "step", "split_by"],
    ),
    get(
        "/api/stats/top-users",
        Guard::Session,
        &["from", "to", "limit"],
    ),
    get(
        "/api/stats/export",
        Guard::Session,
        &["from", "to", "format", "limit", "cursor"],
    ),
    get("/api/auth/info", Guard::Open, &[]),
    write(
        "POST",
        "/api/auth/login",
        Guard::Open,
        checked(wrong_login, LOGIN),
    ),
    write("POST", "/api/auth/logout", Guard::Session, Body::Ignored),
    get("/api/auth/me", Guard::Session, &[]),
    write(
        "POST",
        "/api/auth/password",
        Guard::Session,
        checked(wrong_password_change, PASSWORD),
    ),
    get("/api/users", Guard::Session, PAGE),
    write(
        "POST",
        "/api/users",
        Guard::Session,
        checked(new_user, NEW_USER),
    ),
    write(
        "PATCH",
        "/api/users/{id}",
        Guard::Session,
        checked(no_change, USER_CHANGE),
    ),
    get("/api/auth/oidc/start", Guard::Open, &[]),
    get(
        "/api/auth/oidc/callback",
        Guard::Open,
        &["code", "state", "error"],
    ),
    write(
        "POST",
        "/api/v1/runners/provision",
        Guard::Workload,
        // The token is checked before the body: 401 comes before 415.
        Body::Json {
            base: provision,
            fields: PROVISION,
            checked: false,
        },
    ),
    get("/api/v1/runners", Guard::Workload, PAGE),
    get("/api/v1/runners/{name}", Guard::Workload, &[]),
    write(
        "DELETE",
        "/api/v1/runners/{name}",
        Guard::Workload,
        Body::Ignored,
    ),
    write(
        "POST",
        "/api/v1/runners/{name}/refresh",
        Guard::Workload,
        Body::Ignored,
    ),
    get("/api/v1/admin/label-policies", Guard::Session, PAGE),
    write(
        "POST",
        "/api/v1/admin/label-policies",
        Guard::Session,
        checked(label_policy, LABEL_POLICY),
    ),
    get(
        "/api/v1/admin/label-policies/{identity}",
        Guard::Session,
        &[],
    ),
    write(
        "DELETE",
        "/api/v1/admin/label-policies/{identity}",
        Guard::Session,
        Body::Ignored,
    ),
    get(
        "/api/v1/admin/security-events",
        Guard::Session,
        &["type", "identity", "since", "until", "limit", "cursor"],
    ),
    get("/api/v1/admin/trusted-identities", Guard::Session, &[]),
    get(
        "/api/v1/admin/runners",
        Guard::Session,
        &["owner", "status", "limit", "cursor"],
    ),
];

/// Every `METHOD path` the `.route(…)` calls of `shared/src/http` declare,
/// read from the source: a route added there and not here fails the suite.
fn declared_routes() -> BTreeSet<String> {
    let dir = pacer_test_support::in_repo("shared/src/http");
    let mut declared = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests build routers of their own; only the served ones count.
        let served = text.split("#[cfg(test)]").next().unwrap_or_default();
        for call in served.split(".route(").skip(1) {
            // `"/path", get(a).post(b))`: what lies at the call's own depth
            // is `"/path", get.post`.
            let (mut depth, mut outer) = (1, String::new());
            for c in call.chars() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 1 => break,
                    ')' => depth -= 1,
                    _ if depth == 1 => outer.push(c),
                    _ => {}
                }
            }
            let (path, methods) = outer
                .split_once(',')
                .unwrap_or_else(|| panic!("cannot read .route({outer}) in {}", file.display()));
            // (rustfmt may break the call over lines, with a trailing comma)
            for method in methods
                .trim()
                .trim_end_matches(',')
                .split('.')
                .map(str::trim)
                .filter(|m| !m.is_empty())
            {
                declared.insert(format!(
                    "{} {}",
                    method.to_uppercase(),
                    path.trim().trim_matches('"')
                ));
            }
        }
    }
    declared
}

#[test]
fn the_hostile_suite_covers_every_route_the_router_declares() {
    let declared = declared_routes();
    assert!(declared.len() > 30, "the routes were read: {declared:?}");
    let covered: BTreeSet<String> = ROUTES
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let missing: Vec<&String> = declared.difference(&covered).collect();
    let stale: Vec<&String> = covered.difference(&declared).collect();
    assert!(
        missing.is_empty(),
        "routes the hostile suite does not send anything to; add them to ROUTES: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "ROUTES lists routes the router no longer has: {stale:?}"
    );
}

// ------------------------------------------------------------ hostile values

/// Text every field must refuse, made from a field's valid `sample`, as raw
/// JSON (a lone surrogate cannot be held by a Rust string).
fn hostile_text(sample: &str) -> Vec<(&'static str, String)> {
    let (head, tail) = sample.split_at(sample.len() / 2);
    let quoted = |s: String| serde_json::to_string(&s).unwrap();
    vec![
        ("NUL inside", quoted(format!("{head}\0{tail}"))),
        ("an ANSI escape", quoted(format!("{head}\u{1b}[31m{tail}"))),
        ("CR LF", quoted(format!("{head}\r\nX-Injected: 1{tail}"))),
        ("an RTL override", quoted(format!("\u{202e}{sample}"))),
        (
            "a bidi isolate",
            quoted(format!("{head}\u{2066}{tail}\u{2069}")),
        ),
        (
            "a zero-width space",
            quoted(format!("{head}\u{200b}{tail}")),
        ),
        ("a BOM", quoted(format!("\u{feff}{sample}"))),
        ("a lone surrogate", format!("\"{head}\\ud800{tail}\"")),
        (
            "a reversed surrogate pair",
            format!("\"{head}\\udc00\\ud800{tail}\""),
        ),
        ("1 MB", quoted(format!("{sample}{}", "x".repeat(1_000_000)))),
        (
            "1 MB of 3-byte characters",
            quoted(format!("{sample}{}", "€".repeat(333_000))),
        ),
    ]
}

/// Text a strict field must refuse, though free text may hold it.
fn injection_text() -> Vec<(&'static str, String)> {
    [
        "' OR 1=1 --",
        "../../../etc/passwd",
        "<script>alert(1)</script>",
        "${jndi:ldap://x}",
        "%00",
        "\\",
        "*",
    ]
    .iter()
    .map(|s| ("injection-shaped text", serde_json::to_string(s).unwrap()))
    .collect()
}

/// Numbers no JSON reader should take for anything.
const HOSTILE_NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "18446744073709551616",
    "-9223372036854775809",
    "1.5",
    "1e-400",
    "-0.0",
];

/// Values of the wrong type for a field of `kind`, and hostile values of the right one.
fn hostile_values(kind: Kind) -> Vec<(String, String)> {
    let mut values: Vec<(String, String)> = Vec::new();
    let mut add = |what: &str, raw: String| values.push((what.to_string(), raw));
    let not_text = [
        "true",
        "false",
        "[]",
        "[\"x\"]",
        "{}",
        "{\"a\":1}",
        "-1",
        "0",
    ];
    match kind {
        Kind::Strict(sample) | Kind::Free(sample) => {
            for raw in not_text.iter().chain(HOSTILE_NUMBERS) {
                add("a non-string", raw.to_string());
            }
            for (what, raw) in hostile_text(sample) {
                add(what, raw);
            }
            if let Kind::Strict(_) = kind {
                for (what, raw) in injection_text() {
                    add(what, raw);
                }
            }
        }
        Kind::Int(min, max) => {
            for raw in [
                "\"1\"",
                "true",
                "[]",
                "[1]",
                "{}",
                "\"NaN\"",
                "\"Infinity\"",
            ]
            .iter()
            .chain(HOSTILE_NUMBERS)
            {
                add("a non-integer", raw.to_string());
            }
            add("below the minimum", (min - 1).to_string());
            add("above the maximum", (max + 1).to_string());
            add("the smallest i64", i64::MIN.to_string());
            add("the largest i64", i64::MAX.to_string());
            add("the largest u64", u64::MAX.to_string());
        }
        Kind::Bool => {
            for raw in ["\"true\"", "\"yes\"", "1", "0", "[]", "{}", "[true]"]
                .iter()
                .chain(HOSTILE_NUMBERS)
            {
                add("a non-boolean", raw.to_string());
            }
        }
        Kind::List(sample) | Kind::FreeList(sample) => {
            if let Kind::FreeList(_) = kind {
                let many: Vec<String> = (0..50_000).map(|n| format!("{sample}-{n}")).collect();
                add(
                    "50 000 different entries",
                    serde_json::to_string(&many).unwrap(),
                );
            }
            for raw in [
                "\"x\"", "1", "true", "{}", "[1]", "[null]", "[[]]", "[{}]", "[true]", "[1e400]",
            ] {
                add("not a list of strings", raw.to_string());
            }
            for (what, raw) in hostile_text(sample) {
                add(what, format!("[\"{sample}\",{raw}]"));
            }
            if let Kind::List(_) = kind {
                add(
                    "the same entry twice",
                    serde_json::to_string(&[sample, sample]).unwrap(),
                );
                add(
                    "the same entry 50 000 times",
                    serde_json::to_string(&vec![sample; 50_000]).unwrap(),
                );
                for (what, raw) in injection_text() {
                    add(what, format!("[{raw}]"));
                }
            }
        }
    }
    values
}

/// Stands in for a field's value until [`with_raw`] swaps in raw JSON.
const SENTINEL: &str = "\u{1}hostile\u{1}";

/// `body` with the field at `pointer` (`/a/b`) set to `raw` JSON text.
fn with_raw(body: &Value, pointer: &str, raw: &str) -> Vec<u8> {
    let mut body = body.clone();
    let (parent, name) = pointer.rsplit_once('/').unwrap();
    let slot = if parent.is_empty() {
        &mut body
    } else {
        body.pointer_mut(parent).unwrap()
    };
    slot.as_object_mut()
        .unwrap()
        .insert(name.to_string(), Value::from(SENTINEL));
    let text = serde_json::to_string(&body).unwrap();
    text.replacen(&serde_json::to_string(SENTINEL).unwrap(), raw, 1)
        .into_bytes()
}

/// Bodies that are not one well-formed JSON object of known fields, around
/// a valid `base` whose first field is `first`.
fn hostile_bodies(base: &Value, first: &str, limit: usize) -> Vec<(String, Vec<u8>)> {
    let text = serde_json::to_string(base).unwrap();
    let unknown = |name: &str, raw: &str| with_raw(base, &format!("/{name}"), raw);
    let nested = |open: &str, close: &str, levels: usize| {
        format!("{}{}", open.repeat(levels), close.repeat(levels)).into_bytes()
    };
    let mut utf16 = vec![0xff, 0xfe];
    utf16.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    let mut bodies: Vec<(&str, Vec<u8>)> = vec![
        ("an empty body", vec![]),
        ("only whitespace", b" \r\n\t ".to_vec()),
        ("an unclosed object", b"{".to_vec()),
        ("a trailing comma", b"{\"a\":1,}".to_vec()),
        ("single quotes", b"{'a':'b'}".to_vec()),
        ("an unquoted key", b"{a:1}".to_vec()),
        ("a comment", b"{/* hi */}".to_vec()),
        ("NaN", b"{\"a\":NaN}".to_vec()),
        (
            "the valid body cut in half",
            text.as_bytes()[..text.len() / 2].to_vec(),
        ),
        ("an array", b"[]".to_vec()),
        (
            "the valid body in an array",
            format!("[{text}]").into_bytes(),
        ),
        ("a string", b"\"text\"".to_vec()),
        ("a number", b"42".to_vec()),
        ("1e400", b"1e400".to_vec()),
        ("null", b"null".to_vec()),
        ("true", b"true".to_vec()),
        ("two objects", format!("{text}{text}").into_bytes()),
        (
            "the valid body then garbage",
            format!("{text}garbage").into_bytes(),
        ),
        ("100 000 open brackets", "[".repeat(100_000).into_bytes()),
        (
            "100 000 open objects",
            "{\"a\":".repeat(100_000).into_bytes(),
        ),
        ("100 000 nested arrays, closed", nested("[", "]", 100_000)),
        (
            "100 000 nested arrays in a field",
            unknown(
                first,
                &String::from_utf8(nested("[", "]", 100_000)).unwrap(),
            ),
        ),
        (
            "non-UTF-8 bytes in a string",
            b"{\"a\":\"\xff\xfe\"}".to_vec(),
        ),
        ("a non-UTF-8 key", b"{\"\xc3\x28\":1}".to_vec()),
        ("overlong UTF-8", b"{\"a\":\"\xc0\xaf\"}".to_vec()),
        ("a raw NUL in a string", b"{\"a\":\"x\x00y\"}".to_vec()),
        ("a raw NUL between tokens", b"{\x00}".to_vec()),
        (
            "a UTF-8 byte order mark",
            format!("\u{feff}{text}").into_bytes(),
        ),
        ("UTF-16", utf16),
        ("a lone surrogate as a key", b"{\"\\ud800\":1}".to_vec()),
        ("only an unknown field", b"{\"surprise\":1}".to_vec()),
        (
            "an unknown field beside valid ones",
            unknown("surprise", "1"),
        ),
        ("__proto__", unknown("__proto__", "{\"admin\":true}")),
        (
            "an id of its own",
            unknown("id", "\"prj_01J0000000000000000000000\""),
        ),
        (
            "created_at of its own",
            unknown("created_at", "\"1970-01-01T00:00:00Z\""),
        ),
        ("the first field twice, the second NUL", {
            let mut twice = text.clone();
            twice.pop();
            let comma = if base.as_object().is_some_and(|o| o.is_empty()) {
                ""
            } else {
                ","
            };
            format!("{twice}{comma}\"{first}\":\"x\\u0000\"}}").into_bytes()
        }),
    ];
    // Read whole at exactly the limit (refused for its content, not its size).
    let (open, close) = ("{\"surprise\":\"", "\"}");
    let at_limit = format!(
        "{open}{}{close}",
        "x".repeat(limit - open.len() - close.len())
    )
    .into_bytes();
    assert_eq!(at_limit.len(), limit);
    bodies.push((AT_LIMIT, at_limit));
    bodies
        .into_iter()
        .map(|(what, bytes)| (what.to_string(), bytes))
        .collect()
}

/// The largest body a route reads.
fn body_limit(route: &Route) -> usize {
    match route.guard {
        Guard::Workload => WORKLOAD_BODY_LIMIT,
        _ => API_BODY_LIMIT,
    }
}

/// The body of exactly the API's limit.
const AT_LIMIT: &str = "exactly the body limit";

/// Path segments that name nothing, as they go on the wire (what an HTTP
/// client cannot send, [`Suite::hostile_path_ids`] sends raw).
fn hostile_ids(real: &str) -> Vec<String> {
    vec![
        "x".repeat(10_000),
        "%00".into(),
        format!("{real}%00"),
        format!("{real}%20"),
        real.to_uppercase(),
        format!("{real}{real}"),
        "..%2f..%2fetc%2fpasswd".into(),
        "%2e%2e".into(),
        "%E2%80%AE".to_string() + real,
        "%F0%9F%92%A9".into(),
        "%FF%FE".into(),
        "%C0%AE%C0%AE".into(),
        "%27%20OR%201=1%20--".into(),
        "%2A".into(),
        "%25".into(),
        "prj_01J0000000000000000000000".into(),
        "-1".into(),
        "99999999999999999999999999".into(),
    ]
}

/// Values of a query parameter, by its name, as they go on the wire.
fn hostile_params(name: &str) -> Vec<String> {
    let mut values: Vec<String> = [
        "",
        "%00",
        "%FF",
        "%FF%FE",
        "%C0%AE",
        "%E2%80%AE",
        "%F0%9F%92%A9",
        "-1",
        "1e400",
        "1.5",
        "NaN",
        "99999999999999999999999",
        "%27%20OR%201=1--",
        "..%2F..%2Fetc",
        "a%26b%3Dc",
        "%2A",
        "%25",
    ]
    .iter()
    .map(|v| v.to_string())
    .collect();
    values.push("x".repeat(10_000));
    let specific: &[&str] = match name {
        "limit" => &[
            "0",
            "4294967295",
            "4294967296",
            "-0",
            "%2B1",
            "0x10",
            "1%20",
        ],
        "cursor" => &["!!!", "Li4vLi4veA", "YQ", "cHJqXw", "%3D%3D%3D", "AAAA"],
        "from" | "to" => &[
            "not-a-time",
            "2024-02-30T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-12-31T23:59:60Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "%2B275760-09-13T00:00:00Z",
            "-262143-01-01T00:00:00Z",
            "%2B262143-12-31T23:59:59Z",
            "2024-01-01T00:00:00%2B99:99",
            "2024-01-01T00:00:00-23:59",
            "1e9",
            "2024-01-01",
        ],
        "github_job_id" => &[
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
        ],
        "state" => &[",,,", "running,%00", "running,running"],
        _ => &[],
    };
    values.extend(specific.iter().map(|v| v.to_string()));
    if name == "cursor" {
        values.push(B64.encode("x".repeat(1000)));
    }
    values
}

// --------------------------------------------------------------- the process

/// What the suite made before its first hostile request.
struct Seeded {
    project: String,
    pool: String,
    binding: String,
    /// A viewer the admin made.
    viewer: String,
    /// A job no pool matched: it stays as it is.
    job: String,
}

impl Seeded {
    /// A real id for the `{id}` of `path`, where something of that kind exists.
    fn id_for(&self, path: &str) -> String {
        let kind = path.split('/').nth(2).unwrap_or_default();
        match kind {
            "projects" => self.project.clone(),
            "pools" => self.pool.clone(),
            "repos" => self.binding.clone(),
            "users" => self.viewer.clone(),
            "jobs" => self.job.clone(),
            // `/api/v1/runners/{name}`, `/api/v1/admin/label-policies/{identity}`
            "v1" if path.contains("label-policies") => "hostile%3Aprobe".into(),
            "v1" => "hostile-probe".into(),
            _ => "run_01J0000000000000000000000".into(),
        }
    }
}

/// `path` with its one `{…}` parameter (`{id}`, `{name}`, `{identity}`) set
/// to `value`.
fn fill(path: &str, value: &str) -> String {
    match (path.find('{'), path.find('}')) {
        (Some(open), Some(close)) if open < close => {
            format!("{}{value}{}", &path[..open], &path[close + 1..])
        }
        _ => path.to_string(),
    }
}

/// What a hostile request may be answered with.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Anything but a 5xx: the request may be harmless (an unknown query
    /// parameter of a route that reads no query).
    Answer,
    /// A 4xx.
    Refusal,
    /// A 4xx, or the connection closed without one: bytes that are not HTTP.
    RefusalOrClose,
    Status(u16),
}

impl Expect {
    fn allows(self, status: u16) -> bool {
        match self {
            Expect::Answer => status < 500,
            Expect::Refusal => (400..500).contains(&status),
            Expect::RefusalOrClose => status == 0 || (400..500).contains(&status),
            Expect::Status(s) => status == s,
        }
    }
}

/// What is readable through the API, to tell whether a batch wrote anything.
#[derive(Clone, PartialEq)]
struct Snapshot {
    objects: Vec<(&'static str, Vec<Value>)>,
    newest_audit: Option<String>,
}

const OBJECT_LISTS: &[&str] = &[
    "/api/projects",
    "/api/pools",
    "/api/repos",
    "/api/jobs",
    "/api/runners",
    "/api/users",
    "/api/v1/admin/label-policies",
];

/// Shortens what a request was, for a failure message.
fn short(text: &str) -> String {
    if text.chars().count() <= 160 {
        text.to_string()
    } else {
        format!(
            "{}… ({} bytes)",
            text.chars().take(160).collect::<String>(),
            text.len()
        )
    }
}

/// A JWT of `header` and `claims` with `signature`, all base64url.
fn jwt(header: &Value, claims: &Value, signature: &[u8]) -> String {
    let part = |v: &Value| B64.encode(serde_json::to_vec(v).unwrap());
    format!(
        "{}.{}.{}",
        part(header),
        part(claims),
        B64.encode(signature)
    )
}

struct Suite {
    served: Served,
    http: reqwest::Client,
    /// `127.0.0.1:port`, for requests no HTTP client would send.
    addr: String,
    token: String,
    seeded: Seeded,
    failures: Vec<String>,
    sent: usize,
}

impl Suite {
    async fn start(dir: &Path) -> Suite {
        let config = dir.join("data/pacer.yaml");
        // The local configuration `--init` would write, with self-service on
        // for one identity whose issuer nothing serves: every token fails,
        // and the routes behind it are reached as far as a token goes.
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let yaml = format!(
            "{}{SELF_SERVICE}",
            pacer_shared::config::generate_local_config(&dir.join("data"))
        );
        std::fs::write(&config, yaml).unwrap();
        let env = [
            ("PACER_GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("PACER_GITHUB_CALLBACK_HMAC_SECRET", CALLBACK_SECRET),
            // Every hostile sign-in reaches the password check rather than the limiter.
            ("PACER_AUTH_LOGIN_RATE_LIMIT", "1000000/5m"),
            // No background pass changes the store while the suite compares it.
            ("PACER_REAPER_INTERVAL", "1h"),
        ];
        let mut served = Served::start(&config, &env).await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        served.http = http.clone();
        let token = served
            .token
            .clone()
            .expect("console auth is on and the admin signed in");
        let addr = served.base.trim_start_matches("http://").to_string();
        let seeded = seed(&served).await;
        Suite {
            served,
            http,
            addr,
            token,
            seeded,
            failures: Vec::new(),
            sent: 0,
        }
    }

    fn request(&self, method: &str, path: &str) -> RequestBuilder {
        self.http.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.served.base),
        )
    }

    fn as_admin(&self, method: &str, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(&self.token)
    }

    fn fail(&mut self, failure: String) {
        eprintln!("HOSTILE FAILURE: {failure}");
        self.failures.push(failure);
    }

    /// Sends `req` and checks its answer; the status, if there was one.
    async fn send(&mut self, what: &str, expect: Expect, req: RequestBuilder) -> Option<u16> {
        self.sent += 1;
        let res = match req.send().await {
            Ok(res) => res,
            Err(e) => {
                self.fail(format!("{}: no answer ({e})", short(what)));
                return None;
            }
        };
        let status = res.status().as_u16();
        let json = res
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
        let body = res.bytes().await.unwrap_or_default();
        self.judge(what, expect, status, json, &body);
        Some(status)
    }

    fn judge(&mut self, what: &str, expect: Expect, status: u16, json: bool, body: &[u8]) {
        let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        if !expect.allows(status) {
            self.fail(format!(
                "{}: answered {status}, expected {expect:?}: {shown}",
                short(what)
            ));
        }
        if json && (400..500).contains(&status) {
            let error: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if !(error["error"].is_string() && error["message"].is_string()) {
                self.fail(format!(
                    "{}: a {status} without pacer's error shape: {shown}",
                    short(what)
                ));
            }
        }
    }

    /// Sends `request` as it is, on a new connection, and checks the answer.
    async fn send_raw(&mut self, what: &str, expect: Expect, request: Vec<u8>) -> Option<u16> {
        self.sent += 1;
        let answer = raw_exchange(&self.addr, request)
            .await
            .map(|bytes| parse_answer(&bytes));
        self.judge_answer(what, expect, answer)
    }

    /// Sends requests that carry bodies, a few at once (signed deliveries
    /// and password checks are slow on purpose), then checks each answer.
    async fn send_all(&mut self, planned: &[Planned]) -> Vec<Option<u16>> {
        self.sent += planned.len();
        let answers: Vec<Result<Answer, String>> = {
            let (http, base, addr) = (&self.http, &self.served.base, &self.addr);
            futures::stream::iter(planned)
                .map(|p| p.exchange(http, base, addr))
                .buffered(4)
                .collect()
                .await
        };
        planned
            .iter()
            .zip(answers)
            .map(|(p, answer)| self.judge_answer(&p.what, p.expect, answer))
            .collect()
    }

    fn judge_answer(
        &mut self,
        what: &str,
        expect: Expect,
        answer: Result<Answer, String>,
    ) -> Option<u16> {
        match answer {
            Ok(Answer { status: 0, .. }) if !expect.allows(0) => {
                self.fail(format!("{}: closed without an answer", short(what)));
                Some(0)
            }
            Ok(Answer { status, json, body }) => {
                self.judge(what, expect, status, json, &body);
                Some(status)
            }
            Err(e) => {
                self.fail(format!("{}: {e}", short(what)));
                None
            }
        }
    }

    /// Everything the API shows, but the audit log's past.
    async fn snapshot(&self) -> Snapshot {
        let mut objects = Vec::new();
        for list in OBJECT_LISTS {
            objects.push((*list, self.all(list).await));
        }
        let (_, newest) = self.served.get("/api/audit?limit=1").await;
        Snapshot {
            objects,
            newest_audit: newest["items"][0]["id"].as_str().map(str::to_string),
        }
    }

    async fn all(&self, list: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut url = format!("{list}?limit=500");
        loop {
            let (status, page) = self.served.get(&url).await;
            assert_eq!(status, 200, "{url}: {page}");
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(cursor) => url = format!("{list}?limit=500&cursor={cursor}"),
                None => return items,
            }
        }
    }

    /// Audit entries newer than `newest`, newest first (one a page: a failed
    /// sign-in's entry may carry a megabyte-long email).
    async fn audit_since(&self, newest: Option<&str>) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut url = "/api/audit?limit=1".to_string();
        loop {
            let (_, page) = self.served.get(&url).await;
            let Some(entry) = page["items"].get(0).cloned() else {
                return entries;
            };
            if entry["id"].as_str() == newest {
                return entries;
            }
            entries.push(entry);
            match page["next_cursor"].as_str() {
                Some(cursor) => url = format!("/api/audit?limit=1&cursor={cursor}"),
                None => return entries,
            }
        }
    }

    /// Runs one batch: then `/healthz` answers, the process runs, nothing
    /// but audit entries of the `allowed` actions was written.
    async fn batch(&mut self, name: &str, allowed: &[&str], before: Snapshot) -> Snapshot {
        let health = self
            .http
            .get(format!("{}/healthz", self.served.base))
            .send()
            .await;
        match health {
            Ok(res) if res.status() == 200 => {
                let text = res.text().await.unwrap_or_default();
                if text != "ok" {
                    self.fail(format!("after {name}: /healthz said {text:?}"));
                }
            }
            other => self.fail(format!(
                "after {name}: /healthz did not answer ok: {other:?}"
            )),
        }
        if let Ok(Some(status)) = self.served.child.try_wait() {
            panic!(
                "pacer exited during {name}: {status:?}\n{}",
                self.served.stderr()
            );
        }
        let after = self.snapshot().await;
        for ((list, was), (_, is)) in before.objects.iter().zip(&after.objects) {
            if was != is {
                self.fail(format!(
                    "{name} wrote to {list}: before {}, after {}",
                    short(&json!(was).to_string()),
                    short(&json!(is).to_string())
                ));
            }
        }
        for entry in self.audit_since(before.newest_audit.as_deref()).await {
            let action = entry["action"].as_str().unwrap_or_default();
            if !allowed.contains(&action) {
                self.fail(format!(
                    "{name} wrote an audit entry: {}",
                    short(&entry.to_string())
                ));
            }
        }
        after
    }
}

/// Makes what hostile requests must leave alone: a project with a pool and a
/// repo binding, a viewer, and a job no pool matches.
async fn seed(served: &Served) -> Seeded {
    let created = |(status, body): (u16, Value)| {
        assert!(status == 201 || status == 202, "seeding: {status} {body}");
        body[if status == 202 { "job_id" } else { "id" }]
            .as_str()
            .unwrap()
            .to_string()
    };
    let project = created(
        served
            .post("/api/projects", json!({"name": "seeded"}))
            .await,
    );
    let pool = created(
        served
            .post("/api/pools", crate::api_crud::pool_body(&project, "seeded"))
            .await,
    );
    let binding = created(
        served
            .post(
                "/api/repos",
                json!({"repo": "seeded/app", "project_id": project}),
            )
            .await,
    );
    let viewer = created(
        served
            .post(
                "/api/users",
                json!({"email": "viewer@example.com", "role": "viewer"}),
            )
            .await,
    );
    let payload =
        crate::support::queued_payload(1, "seeded/app", &["self-hosted", "offered-by-no-pool"]);
    let job = created(
        signed_webhook(
            served,
            "workflow_job",
            &serde_json::to_vec(&payload).unwrap(),
        )
        .await,
    );
    Seeded {
        project,
        pool,
        binding,
        viewer,
        job,
    }
}

async fn signed_webhook(served: &Served, event: &str, body: &[u8]) -> (u16, Value) {
    let res = served
        .http
        .post(format!("{}/api/webhook", served.base))
        .header("x-github-event", event)
        .header(
            "x-hub-signature-256",
            pacer_shared::github::webhook::sign(WEBHOOK_SECRET.as_bytes(), body),
        )
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

/// What pacer answered: its status (0 when it closed without one), whether
/// the body is JSON, and the body.
struct Answer {
    status: u16,
    json: bool,
    body: Vec<u8>,
}

/// Reads an HTTP/1.1 answer as it came off the wire.
fn parse_answer(bytes: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(bytes);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let json = head
        .to_ascii_lowercase()
        .contains("content-type: application/json");
    Answer {
        status,
        json,
        body: body.as_bytes().to_vec(),
    }
}

/// A request with a body, planned to be sent beside others.
struct Planned {
    what: String,
    expect: Expect,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Arc<[u8]>,
}

impl Planned {
    fn new(
        what: String,
        expect: Expect,
        method: &'static str,
        path: &str,
        body: &Arc<[u8]>,
    ) -> Planned {
        Planned {
            what,
            expect,
            method,
            path: path.to_string(),
            headers: Vec::new(),
            body: body.clone(),
        }
    }

    fn header(mut self, name: &'static str, value: impl AsRef<[u8]>) -> Planned {
        self.headers.push((name, value.as_ref().to_vec()));
        self
    }

    /// Sends it. A large body goes raw, read while it is written: pacer
    /// refuses it (415, 401) before reading it, and a client still writing
    /// would see the connection close instead of the answer. A small one
    /// goes through the HTTP client, and raw again if the client saw no
    /// answer: pacer may refuse before the client has written the body (on
    /// a busy machine the client's two writes can be far apart), and the
    /// client then reports its failed write, not the answer pacer sent.
    async fn exchange(
        &self,
        http: &reqwest::Client,
        base: &str,
        addr: &str,
    ) -> Result<Answer, String> {
        if self.body.len() <= 64 * 1024 {
            let mut req = http.request(
                Method::from_bytes(self.method.as_bytes()).unwrap(),
                format!("{base}{}", self.path),
            );
            for (name, value) in &self.headers {
                req = req.header(*name, HeaderValue::from_bytes(value).unwrap());
            }
            if let Ok(res) = req.body(self.body.to_vec()).send().await {
                let status = res.status().as_u16();
                let json = res
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|c| c.starts_with("application/json"));
                return Ok(Answer {
                    status,
                    json,
                    body: res.bytes().await.unwrap_or_default().to_vec(),
                });
            }
        }
        let mut request = format!(
            "{} {} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.method,
            self.path,
            self.body.len()
        )
        .into_bytes();
        for (name, value) in &self.headers {
            request.extend([name.as_bytes(), b": ", value, b"\r\n"].concat());
        }
        request.extend(b"\r\n");
        request.extend_from_slice(&self.body);
        raw_exchange(addr, request)
            .await
            .map(|bytes| parse_answer(&bytes))
    }
}

/// Writes `request` on a new connection while reading the answer (pacer may
/// answer a body over its limit before it is all sent) until the connection
/// closes, or stays quiet for a moment after an answer began.
async fn raw_exchange(addr: &str, request: Vec<u8>) -> Result<Vec<u8>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut answer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let started = Instant::now();
    loop {
        let wait = if answer.is_empty() {
            Duration::from_secs(20)
        } else {
            Duration::from_millis(500)
        };
        match tokio::time::timeout(wait, reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) if answer.is_empty() => {
                return Err(format!("no answer in {:?}: a hang", started.elapsed()));
            }
            Err(_) => break,
        }
    }
    writing.abort();
    Ok(answer)
}

// ---------------------------------------------------------------- the batches

impl Suite {
    /// The path of `route` with `{id}` filled in.
    fn path_of(&self, route: &Route) -> String {
        fill(route.path, &self.seeded.id_for(route.path))
    }

    /// Each table entry is a route the process serves, not "no route": asked
    /// without credentials, so nothing can happen.
    async fn every_listed_route_is_served(&mut self) {
        for route in ROUTES {
            let path = self.path_of(route);
            let mut req = self.request(route.method, &path);
            if route.method != "GET" {
                req = req.header(CONTENT_TYPE, "application/json").body("{}");
            }
            let what = format!("{} {path} (is it a route?)", route.method);
            let Ok(res) = req.send().await else {
                self.fail(format!("{what}: no answer"));
                continue;
            };
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            let unrouted = status == 405
                || body["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("no route"));
            if unrouted || status >= 500 {
                self.fail(format!("{what}: answered {status} {body}"));
            }
        }
    }

    /// Credentials that are not a session: each is refused with 401 by every
    /// route that needs one, and changes nothing anywhere.
    async fn hostile_credentials(&mut self, route: &Route) {
        let admin_claims: Value =
            serde_json::from_slice(&B64.decode(self.token.split('.').nth(1).unwrap()).unwrap())
                .unwrap();
        let mut forged_claims = admin_claims.clone();
        forged_claims["exp"] = json!(i64::MAX);
        let tampered = {
            let mut t = self.token.clone();
            let last = t.pop().unwrap();
            t.push(if last == 'A' { 'B' } else { 'A' });
            t
        };
        let wrong_key = {
            let key =
                jsonwebtoken::EncodingKey::from_secret(b"not pacer's secret, 0123456789abcdef");
            jsonwebtoken::encode(&jsonwebtoken::Header::default(), &admin_claims, &key).unwrap()
        };
        let alg_none = jwt(&json!({"alg": "none", "typ": "JWT"}), &forged_claims, b"");
        let headers: Vec<(&str, &str, Vec<u8>)> = vec![
            ("no credentials", "x-nothing", b"".to_vec()),
            (
                "a garbage bearer",
                "authorization",
                b"Bearer garbage".to_vec(),
            ),
            ("an empty bearer", "authorization", b"Bearer ".to_vec()),
            (
                "three dots of a JWT",
                "authorization",
                b"Bearer a.b.c".to_vec(),
            ),
            (
                "an alg-none JWT",
                "authorization",
                format!("Bearer {alg_none}").into_bytes(),
            ),
            (
                "a JWT signed with another key",
                "authorization",
                format!("Bearer {wrong_key}").into_bytes(),
            ),
            (
                "the admin's session with its signature changed",
                "authorization",
                format!("Bearer {tampered}").into_bytes(),
            ),
            (
                "a lower-case scheme",
                "authorization",
                format!("bearer {tampered}").into_bytes(),
            ),
            (
                "Basic credentials",
                "authorization",
                b"Basic YWRtaW46YWRtaW4=".to_vec(),
            ),
            (
                "a 100 KB bearer",
                "authorization",
                format!("Bearer {}", "A".repeat(100_000)).into_bytes(),
            ),
            (
                "non-ASCII bytes",
                "authorization",
                b"Bearer \xff\xfe\xfd".to_vec(),
            ),
            (
                "UTF-8 text",
                "authorization",
                "Bearer ünïcödé\u{202e}".as_bytes().to_vec(),
            ),
            (
                "a callback token for a session",
                "authorization",
                format!(
                    "Bearer {}",
                    self.callback_token("run_01J0000000000000000000000", 3600)
                )
                .into_bytes(),
            ),
            (
                "a garbage cookie",
                "cookie",
                b"pacer_session=garbage".to_vec(),
            ),
            (
                "a tampered session cookie",
                "cookie",
                format!("pacer_session={tampered}").into_bytes(),
            ),
            (
                "a 100 KB cookie",
                "cookie",
                format!("pacer_session={}", "A".repeat(100_000)).into_bytes(),
            ),
            (
                "5 000 cookies",
                "cookie",
                "a=b; ".repeat(5_000).into_bytes(),
            ),
            (
                "a cookie of separators",
                "cookie",
                b";;;===;; pacer_session; =pacer_session".to_vec(),
            ),
            (
                "non-ASCII cookie bytes",
                "cookie",
                b"pacer_session=\xff\xfe".to_vec(),
            ),
        ];
        let path = self.path_of(route);
        for (what, name, value) in headers {
            let mut req = self.request(route.method, &path);
            if route.method != "GET" {
                req = req.header(CONTENT_TYPE, "application/json").body("{}");
            }
            if !value.is_empty() {
                req = req.header(
                    HeaderName::from_static(name),
                    HeaderValue::from_bytes(&value).unwrap(),
                );
            }
            let expect = match route.guard {
                Guard::Session | Guard::Signature | Guard::Callback | Guard::Workload => {
                    Expect::Status(401)
                }
                Guard::Open => Expect::Answer,
            };
            self.send(&format!("{} {path} with {what}", route.method), expect, req)
                .await;
        }
        // The admin's own session, from a page of another site: refused
        // before the request is read, whatever it would have done.
        if route.method != "GET" && matches!(route.guard, Guard::Session | Guard::Open) {
            let body = match route.body {
                Body::Json { base, .. } => base(&self.seeded),
                _ => json!({}),
            };
            for (name, value) in [
                ("origin", &b"https://evil.example"[..]),
                ("origin", b"null"),
                ("origin", b"\xff"),
                ("sec-fetch-site", b"cross-site"),
            ] {
                let req = self.as_admin(route.method, &path).json(&body).header(
                    HeaderName::from_static(name),
                    HeaderValue::from_bytes(value).unwrap(),
                );
                let what = format!(
                    "{} {path} from another site ({name}: {})",
                    route.method,
                    String::from_utf8_lossy(value)
                );
                self.send(&what, Expect::Status(403), req).await;
            }
        }
    }

    /// A callback token pacer's key signs, for `runner`, valid `ttl` seconds more.
    fn callback_token(&self, runner: &str, ttl: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = pacer_shared::auth::callback_token::Claims {
            runner_id: runner.into(),
            token_id: "tok_hostile".into(),
            issued_at: now - 60,
            register_by: now + ttl,
            expires_at: now + ttl,
        };
        pacer_shared::auth::callback_token::mint(CALLBACK_SECRET.as_bytes(), &claims)
    }

    /// Methods the route's path does not serve.
    async fn wrong_methods(&mut self, route: &Route) {
        let path = self.path_of(route);
        let served: Vec<&str> = ROUTES
            .iter()
            .filter(|r| r.path == route.path)
            .map(|r| r.method)
            .collect();
        for method in [
            "GET",
            "POST",
            "PUT",
            "PATCH",
            "DELETE",
            "OPTIONS",
            "TRACE",
            "PROPFIND",
            "X-HOSTILE",
        ] {
            if served.contains(&method) {
                continue;
            }
            let req = self
                .as_admin(method, &path)
                .header(CONTENT_TYPE, "application/json")
                .body("{}");
            self.send(&format!("{method} {path}"), Expect::Refusal, req)
                .await;
        }
    }

    /// `{id}`s that name nothing.
    async fn hostile_path_ids(&mut self, route: &Route) {
        if !route.path.contains('{') {
            return;
        }
        for id in hostile_ids(&self.seeded.id_for(route.path)) {
            let path = fill(route.path, &id);
            let req = self
                .as_admin(route.method, &path)
                .header(CONTENT_TYPE, "application/json")
                .body("{}");
            self.send(&format!("{} {path}", route.method), Expect::Refusal, req)
                .await;
        }
        // What a client would normalise away, sent as it is.
        let real = self.seeded.id_for(route.path);
        let long = "x".repeat(100_000);
        for id in [
            "..",
            "../../../../etc/passwd",
            "\u{202e}evil",
            "\u{0}",
            "%",
            &long,
        ] {
            let path = fill(route.path, id);
            let request = format!(
                "{} {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}",
                route.method, self.addr, self.token
            );
            self.send_raw(
                &format!("{} {path:?} (raw)", route.method),
                Expect::Refusal,
                request.into_bytes(),
            )
            .await;
        }
        let bytes = [
            route.method.as_bytes(),
            b" ",
            fill(route.path, &real).as_bytes(),
            b"\xff\xfe HTTP/1.1\r\nconnection: close\r\n\r\n",
        ]
        .concat();
        self.send_raw(
            &format!("{} {} with raw non-UTF-8 bytes", route.method, route.path),
            Expect::Refusal,
            bytes,
        )
        .await;
    }

    /// Query strings for a GET route: unknown, repeated, malformed and
    /// hostile parameters.
    async fn hostile_queries(&mut self, route: &Route) {
        if route.method != "GET" {
            return;
        }
        let path = self.path_of(route);
        // A route that reads its query into its own type refuses what it does
        // not know; the SSO callback takes whatever the IdP adds.
        let strict = !route.query.is_empty() && route.path != "/api/auth/oidc/callback";
        let unknown = if route.guard == Guard::Workload {
            // The token is checked before the query is read.
            Expect::Status(401)
        } else if strict {
            Expect::Status(400)
        } else {
            Expect::Answer
        };
        for query in [
            "surprise=1",
            "__proto__=x",
            "%00=1",
            "=x",
            "a[]=1",
            "limit[]=1",
        ] {
            let req = self.as_admin("GET", &format!("{path}?{query}"));
            self.send(&format!("GET {path}?{query}"), unknown, req)
                .await;
        }
        for query in ["&&&", "&=&=", "%", "%%%", "x=%ZZ", "a=1;b=2", "+=+"] {
            let req = self.as_admin("GET", &format!("{path}?{query}"));
            self.send(&format!("GET {path}?{query}"), Expect::Answer, req)
                .await;
        }
        let long = format!("{path}?{}", "a=1&".repeat(10_000));
        let req = self.as_admin("GET", &long);
        self.send(
            &format!("GET {path} with 10 000 parameters"),
            Expect::Answer,
            req,
        )
        .await;
        for name in route.query {
            let req = self.as_admin("GET", &format!("{path}?{name}=1&{name}=2"));
            self.send(&format!("GET {path} with {name} twice"), unknown, req)
                .await;
            for value in hostile_params(name) {
                let query = format!("{path}?{name}={value}");
                let req = self.as_admin("GET", &query);
                self.send(&format!("GET {query}"), Expect::Answer, req)
                    .await;
            }
        }
        let name = route.query.first().unwrap_or(&"q");
        let tail = format!(
            " HTTP/1.1\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
            self.token
        );
        let bytes = [
            format!("GET {path}?{name}=").as_bytes(),
            b"\xff\xfe",
            tail.as_bytes(),
        ]
        .concat();
        self.send_raw(
            &format!("GET {path} with a raw non-UTF-8 query"),
            Expect::Answer,
            bytes,
        )
        .await;
    }

    /// The bodies of a JSON route: each under three media types. Refused,
    /// every one: 415 where the route checks the media type and the body does
    /// not say it is JSON, else a 4xx.
    async fn hostile_json_bodies(&mut self, route: &Route) {
        let Body::Json {
            base,
            fields,
            checked,
        } = route.body
        else {
            return;
        };
        let path = self.path_of(route);
        let base = base(&self.seeded);
        let first = fields.first().map_or("a", |(name, _)| name);
        let mut bodies = hostile_bodies(&base, first, body_limit(route));
        for (name, kind) in fields {
            for (what, raw) in hostile_values(*kind) {
                bodies.push((
                    format!("{name}: {what} ({})", short(&raw)),
                    with_raw(&base, &format!("/{name}"), &raw),
                ));
            }
        }
        let authorization = match route.guard {
            Guard::Session => Some(format!("Bearer {}", self.token)),
            Guard::Callback => Some(format!(
                "Bearer {}",
                self.callback_token("run_01J0000000000000000000000", 3600)
            )),
            Guard::Open | Guard::Signature | Guard::Workload => None,
        };
        let mut planned = Vec::new();
        for (what, body) in bodies {
            let body: Arc<[u8]> = body.into();
            for media in [Some("application/json"), None, Some("text/plain")] {
                let json = media == Some("application/json");
                let expect = if checked && !json {
                    Expect::Status(415)
                } else {
                    Expect::Refusal
                };
                let described = format!(
                    "{} {path} ({}) with {what}",
                    route.method,
                    media.unwrap_or("no content type")
                );
                let mut request = Planned::new(described, expect, route.method, &path, &body);
                if let Some(authorization) = &authorization {
                    request = request.header("authorization", authorization);
                }
                if let Some(media) = media {
                    request = request.header("content-type", media);
                }
                planned.push(request);
            }
        }
        let statuses = self.send_all(&planned).await;
        for (request, status) in planned.iter().zip(statuses) {
            let json = request
                .headers
                .iter()
                .any(|(_, value)| value == b"application/json");
            if json && request.what.ends_with(AT_LIMIT) && status == Some(413) {
                self.fail(format!(
                    "{}: a body of exactly the limit was refused as too large",
                    request.what
                ));
            }
        }
        // A body that arrives in chunks is read only once the caller is
        // known: a workload route refuses the token first.
        let chunked = match route.guard {
            Guard::Workload => Expect::Status(401),
            _ => Expect::Status(413),
        };
        self.over_the_limit(route.method, &path, body_limit(route), &[], chunked)
            .await;
    }

    /// A body one byte over `limit`: 413, whether its length is declared or
    /// it comes in chunks.
    async fn over_the_limit(
        &mut self,
        method: &str,
        path: &str,
        limit: usize,
        headers: &[(&str, &str)],
        chunked_expect: Expect,
    ) {
        let extra: String = headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\nconnection: close\r\n{extra}",
            self.addr, self.token
        );
        // The length declared, a little of the body sent: pacer answers
        // from the declaration, before reading on.
        let mut declared = format!("{head}content-length: {}\r\n\r\n", limit + 1).into_bytes();
        declared.extend(vec![b' '; 64 * 1024]);
        self.send_raw(
            &format!("{method} {path} declaring {} bytes", limit + 1),
            Expect::Status(413),
            declared,
        )
        .await;
        // No length, chunks past the limit: refused once the limit is passed.
        let mut chunked = format!("{head}transfer-encoding: chunked\r\n\r\n").into_bytes();
        let piece = 64 * 1024;
        for _ in 0..=(limit / piece) {
            chunked.extend(format!("{piece:x}\r\n").into_bytes());
            chunked.extend(vec![b' '; piece]);
            chunked.extend(b"\r\n");
        }
        chunked.extend(b"0\r\n\r\n");
        self.send_raw(
            &format!("{method} {path} sending more than {limit} bytes in chunks"),
            chunked_expect,
            chunked,
        )
        .await;
    }

    /// GitHub's route: unsigned and wrongly signed bodies, hostile event
    /// names, and a valid signature over hostile bodies.
    async fn hostile_webhooks(&mut self) {
        let queued = crate::support::queued_payload(4242, "hostile/unbound", &["self-hosted"]);
        let ping = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#.to_vec();
        let sign =
            |body: &[u8]| pacer_shared::github::webhook::sign(WEBHOOK_SECRET.as_bytes(), body);

        let mut bodies = hostile_bodies(&queued, "action", API_BODY_LIMIT);
        for (pointer, kind) in [
            ("/action", Kind::Free("queued")),
            ("/workflow_job/id", Kind::Int(i64::MIN + 1, i64::MAX - 1)),
            (
                "/workflow_job/run_id",
                Kind::Int(i64::MIN + 1, i64::MAX - 1),
            ),
            ("/workflow_job/labels", Kind::FreeList("self-hosted")),
            (
                "/workflow_job/created_at",
                Kind::Strict("2024-01-01T00:00:00Z"),
            ),
            ("/workflow_job/runner_name", Kind::Free("pacer-x")),
            ("/repository/full_name", Kind::Strict("hostile/unbound")),
            ("/repository/private", Kind::Bool),
            ("/repository/visibility", Kind::Free("private")),
            ("/repository/owner", Kind::Strict("hostile")),
            ("/installation/id", Kind::Int(i64::MIN + 1, i64::MAX - 1)),
            ("/sender/login", Kind::Free("octocat")),
        ] {
            for (what, raw) in hostile_values(kind) {
                bodies.push((
                    format!("{pointer}: {what} ({})", short(&raw)),
                    with_raw(&queued, pointer, &raw),
                ));
            }
        }
        let webhook = |what: String,
                       expect: Expect,
                       event: &[u8],
                       signature: Option<&[u8]>,
                       media: Option<&str>,
                       body: &Arc<[u8]>| {
            let mut request = Planned::new(what, expect, "POST", "/api/webhook", body)
                .header("x-github-event", event);
            if let Some(signature) = signature {
                request = request.header("x-hub-signature-256", signature);
            }
            if let Some(media) = media {
                request = request.header("content-type", media);
            }
            request
        };
        let mut planned = Vec::new();
        for (what, body) in bodies {
            let body: Arc<[u8]> = body.into();
            let signature = sign(&body);
            for media in [Some("application/json"), None, Some("text/plain")] {
                let shown = media.unwrap_or("no content type");
                let unsigned = format!("an unsigned webhook ({shown}) with {what}");
                planned.push(webhook(
                    unsigned,
                    Expect::Status(401),
                    b"workflow_job",
                    None,
                    media,
                    &body,
                ));
                // GitHub's own signature vouches for the sender, not the
                // body: still no 5xx, and no job taken in (checked below).
                let signed = format!("a signed webhook ({shown}) with {what}");
                planned.push(webhook(
                    signed,
                    Expect::Answer,
                    b"workflow_job",
                    Some(signature.as_bytes()),
                    media,
                    &body,
                ));
            }
        }
        let ping: Arc<[u8]> = ping.into();
        let signature = sign(&ping);
        for (what, event) in [
            ("an empty event", b"".to_vec()),
            ("a 10 KB event", vec![b'x'; 10_000]),
            ("a capitalised event", b"PING".to_vec()),
            ("a path as the event", b"../../workflow_job".to_vec()),
            ("non-ASCII bytes as the event", b"workflow_job\xff".to_vec()),
            (
                "an RTL override in the event",
                "workflow_job\u{202e}".as_bytes().to_vec(),
            ),
        ] {
            planned.push(webhook(
                format!("a signed ping with {what}"),
                Expect::Answer,
                &event,
                Some(signature.as_bytes()),
                Some("application/json"),
                &ping,
            ));
        }
        let other_key = pacer_shared::github::webhook::sign(b"another secret", &ping);
        let other_body = sign(b"another body");
        for (what, signature) in [
            ("an empty signature", b"".to_vec()),
            ("sha256= alone", b"sha256=".to_vec()),
            ("a short signature", b"sha256=00".to_vec()),
            ("zeros", format!("sha256={}", "0".repeat(64)).into_bytes()),
            ("non-hex", format!("sha256={}", "g".repeat(64)).into_bytes()),
            ("sha1", format!("sha1={}", "0".repeat(40)).into_bytes()),
            ("another key's", other_key.into_bytes()),
            ("another body's", other_body.into_bytes()),
            (
                "a 100 KB signature",
                format!("sha256={}", "0".repeat(100_000)).into_bytes(),
            ),
            ("non-ASCII bytes", b"sha256=\xff\xfe".to_vec()),
        ] {
            planned.push(webhook(
                format!("a ping with {what}"),
                Expect::Status(401),
                b"ping",
                Some(&signature),
                Some("application/json"),
                &ping,
            ));
        }
        // Exactly the limit is read (and refused for what it is); one more byte is not.
        let mut at_limit = b"{\"action\": ".to_vec();
        at_limit.resize(WEBHOOK_BODY_LIMIT, b'[');
        let signature = sign(&at_limit);
        let what = "a signed webhook of exactly 25 MiB of brackets".to_string();
        planned.push(webhook(
            what,
            Expect::Status(400),
            b"workflow_job",
            Some(signature.as_bytes()),
            Some("application/json"),
            &at_limit.into(),
        ));
        let statuses = self.send_all(&planned).await;
        for (request, status) in planned.iter().zip(statuses) {
            if status == Some(202) {
                self.fail(format!("{}: took a job in", request.what));
            }
        }
        self.over_the_limit(
            "POST",
            "/api/webhook",
            WEBHOOK_BODY_LIMIT,
            &[("x-github-event", "ping")],
            Expect::Status(413),
        )
        .await;
    }

    /// Runner callbacks with tokens that are not one, and bodies around one
    /// pacer signed for a runner that does not exist.
    async fn hostile_callbacks(&mut self, route: &Route) {
        let wrong_key = {
            let mut t = self.callback_token("run_01J0000000000000000000000", 3600);
            t.push('A');
            t
        };
        let junk_claims = {
            // Signed right, but what it carries is not a token's claims.
            let signed = format!("pcr1.{}", B64.encode(b"[1,2,3]"));
            let mac =
                pacer_shared::mac::hmac_sha256_of(CALLBACK_SECRET.as_bytes(), &[signed.as_bytes()]);
            format!(
                "{signed}.{}",
                B64.encode(hmac::Mac::finalize(mac).into_bytes())
            )
        };
        let tokens = vec![
            ("no token", String::new()),
            ("Bearer alone", "Bearer".to_string()),
            ("a garbage token", "Bearer garbage".to_string()),
            (
                "pcr1 and garbage",
                "Bearer pcr1.garbage.garbage".to_string(),
            ),
            (
                "a token with a wrong signature",
                format!("Bearer {wrong_key}"),
            ),
            (
                "a signed token of junk claims",
                format!("Bearer {junk_claims}"),
            ),
            (
                "an expired token",
                format!(
                    "Bearer {}",
                    self.callback_token("run_01J0000000000000000000000", -10)
                ),
            ),
            (
                "a token for no runner",
                format!(
                    "Bearer {}",
                    self.callback_token("run_01J0000000000000000000000", 3600)
                ),
            ),
            (
                "a token for a path",
                format!("Bearer {}", self.callback_token("../../etc/passwd", 3600)),
            ),
            (
                "a token for a 50 KB runner id",
                format!("Bearer {}", self.callback_token(&"r".repeat(50_000), 3600)),
            ),
            ("the admin's session", format!("Bearer {}", self.token)),
            ("a 100 KB token", format!("Bearer {}", "A".repeat(100_000))),
        ];
        for (what, value) in tokens {
            let mut req = self
                .request("POST", route.path)
                .header(CONTENT_TYPE, "application/json")
                .body("{}");
            if !value.is_empty() {
                req = req.header("authorization", value);
            }
            self.send(
                &format!("POST {} with {what}", route.path),
                Expect::Status(401),
                req,
            )
            .await;
        }
        let req = self
            .request("POST", route.path)
            .header(
                "authorization",
                HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
            )
            .header(CONTENT_TYPE, "application/json")
            .body("{}");
        self.send(
            &format!("POST {} with non-ASCII token bytes", route.path),
            Expect::Status(401),
            req,
        )
        .await;
        self.hostile_json_bodies(route).await;
        if matches!(route.body, Body::Ignored) {
            for (what, body) in hostile_bodies(&json!({}), "a", API_BODY_LIMIT) {
                let req = self
                    .request("POST", route.path)
                    .bearer_auth("garbage")
                    .body(body);
                self.send(
                    &format!("POST {} with {what}", route.path),
                    Expect::Status(401),
                    req,
                )
                .await;
            }
        }
    }

    /// Bytes that are barely HTTP, each on its own connection.
    async fn protocol_garbage(&mut self) {
        let host = self.addr.clone();
        let requests: Vec<(&str, Vec<u8>)> = vec![
            ("not HTTP at all", b"GARBAGE\r\n\r\n".to_vec()),
            ("HTTP/9.9", b"GET /healthz HTTP/9.9\r\n\r\n".to_vec()),
            ("a NUL in a header", format!("GET /api/auth/info HTTP/1.1\r\nhost: {host}\r\nx-a: a\0b\r\nconnection: close\r\n\r\n").into_bytes()),
            ("a header without a colon", format!("GET /api/auth/info HTTP/1.1\r\nhost: {host}\r\nno colon here\r\nconnection: close\r\n\r\n").into_bytes()),
            ("a 100 KB path", format!("GET /api/{} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n", "a".repeat(100_000)).into_bytes()),
            ("200 headers", format!("GET /api/auth/info HTTP/1.1\r\nhost: {host}\r\n{}connection: close\r\n\r\n", (0..200).map(|i| format!("x-h{i}: v\r\n")).collect::<String>()).into_bytes()),
            ("a 1 MB header", format!("GET /api/auth/info HTTP/1.1\r\nhost: {host}\r\nx-big: {}\r\nconnection: close\r\n\r\n", "a".repeat(1_000_000)).into_bytes()),
            ("a length and chunks", format!("POST /api/auth/login HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n").into_bytes()),
            ("a negative length", format!("POST /api/auth/login HTTP/1.1\r\nhost: {host}\r\ncontent-length: -1\r\nconnection: close\r\n\r\n").into_bytes()),
            ("a 30-digit length", format!("POST /api/auth/login HTTP/1.1\r\nhost: {host}\r\ncontent-length: 999999999999999999999999999999\r\nconnection: close\r\n\r\n").into_bytes()),
            ("two lengths", format!("POST /api/auth/login HTTP/1.1\r\nhost: {host}\r\ncontent-length: 2\r\ncontent-length: 3\r\nconnection: close\r\n\r\n{{}}").into_bytes()),
            ("a bad chunk size", format!("POST /api/auth/login HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n").into_bytes()),
            ("a request line of spaces", b"         \r\n\r\n".to_vec()),
            ("a space in the path", format!("GET /api/auth info HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").into_bytes()),
        ];
        for (what, bytes) in requests {
            self.send_raw(what, Expect::RefusalOrClose, bytes).await;
        }
        // A path climbing out, as a client would not send it: the API's
        // fallback or the console, never a file from outside the console.
        for path in [
            "/api/../../../../etc/passwd",
            "/../../../../etc/passwd",
            "/assets/../../../Cargo.toml",
        ] {
            let request =
                format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
            self.sent += 1;
            match raw_exchange(&self.addr, request.into_bytes()).await {
                Ok(answer) => {
                    let text = String::from_utf8_lossy(&answer).into_owned();
                    if text.contains("root:x:0")
                        || text.contains("[workspace]")
                        || !text.starts_with("HTTP/1.1 ")
                        || text.starts_with("HTTP/1.1 5")
                    {
                        self.fail(format!("GET {path} (raw): {}", short(&text)));
                    }
                }
                Err(e) => self.fail(format!("GET {path} (raw): {e}")),
            }
        }
    }

    /// Paths no route claims: JSON 404s under `/api`, the console elsewhere.
    async fn unrouted_paths(&mut self) {
        for path in [
            "/api",
            "/api/",
            "/api/%00",
            "/api/projects/x/y/z",
            "/api/%E2%80%AE",
            "/api/..%2f..%2fetc%2fpasswd",
            "/api/webhook/x",
        ] {
            for method in ["GET", "POST", "DELETE"] {
                let req = self
                    .as_admin(method, path)
                    .header(CONTENT_TYPE, "application/json")
                    .body("{}");
                self.send(&format!("{method} {path}"), Expect::Status(404), req)
                    .await;
            }
        }
        for path in [
            "/",
            "/jobs/01J",
            "/..%2f..%2fCargo.toml",
            "/assets/..%2f..%2f..%2fCargo.toml",
            "/%00",
            "/index.html%00.js",
            "/%FF%FE",
            "/%E2%80%AE",
            "/assets/%2e%2e/%2e%2e/Cargo.toml",
        ] {
            let Ok(res) = self.request("GET", path).send().await else {
                self.fail(format!("GET {path}: no answer"));
                continue;
            };
            self.sent += 1;
            let status = res.status().as_u16();
            let text = res.text().await.unwrap_or_default();
            if status >= 500 || text.contains("[workspace]") || text.contains("root:x:0") {
                self.fail(format!(
                    "GET {path}: {status} {} (build the console with `make web` first)",
                    short(&text)
                ));
            }
            let req = self
                .request("POST", path)
                .header(CONTENT_TYPE, "application/json")
                .body("{}");
            self.send(&format!("POST {path}"), Expect::Refusal, req)
                .await;
        }
    }
}

/// What one route's batch may add to the audit log.
fn allowed_audit(route: &Route) -> &'static [&'static str] {
    match (route.method, route.path) {
        // A failed sign-in is what the audit log is for.
        ("POST", "/api/auth/login") => &["auth.login_failed"],
        // GitHub signed it: a job of a repository no project serves is recorded.
        ("POST", "/api/webhook") => &["job.repo_not_bound"],
        _ => &[],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_to_every_route_get_a_refusal_never_a_5xx_a_panic_or_a_write() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut suite = Suite::start(dir.path()).await;
    let mut snapshot = suite.snapshot().await;

    suite.every_listed_route_is_served().await;
    snapshot = suite.batch("the route probe", &[], snapshot).await;
    for route in ROUTES {
        let name = format!("{} {}", route.method, route.path);
        let batch_started = Instant::now();
        suite.hostile_credentials(route).await;
        suite.wrong_methods(route).await;
        suite.hostile_path_ids(route).await;
        suite.hostile_queries(route).await;
        match (route.guard, route.body) {
            (_, Body::Webhook) => suite.hostile_webhooks().await,
            (Guard::Callback, _) => suite.hostile_callbacks(route).await,
            _ => suite.hostile_json_bodies(route).await,
        }
        snapshot = suite.batch(&name, allowed_audit(route), snapshot).await;
        eprintln!("hostile: {name} in {:?}", batch_started.elapsed());
    }
    suite.protocol_garbage().await;
    snapshot = suite.batch("protocol garbage", &[], snapshot).await;
    suite.unrouted_paths().await;
    suite.batch("unrouted paths", &[], snapshot).await;

    let stderr = suite.served.stderr();
    let panics: Vec<&str> = stderr.lines().filter(|l| l.contains("panicked")).collect();
    assert!(panics.is_empty(), "pacer panicked:\n{}", panics.join("\n"));
    assert!(
        suite.served.child.try_wait().unwrap().is_none(),
        "pacer is still running"
    );
    eprintln!(
        "hostile: {} requests in {:?}",
        suite.sent,
        started.elapsed()
    );
    assert!(
        suite.failures.is_empty(),
        "{} of {} hostile requests failed:\n{}",
        suite.failures.len(),
        suite.sent,
        suite.failures.join("\n")
    );

    // The valid bodies the suite mutated were valid: each is taken now, so
    // every refusal above was about the hostile part.
    for route in ROUTES {
        if let Body::Json {
            base,
            checked: true,
            ..
        } = route.body
        {
            if matches!(route.guard, Guard::Session) && route.path != "/api/auth/password" {
                let (status, body) = {
                    let res = suite
                        .as_admin(route.method, &suite.path_of(route))
                        .json(&base(&suite.seeded))
                        .send()
                        .await
                        .unwrap();
                    (res.status().as_u16(), res.text().await.unwrap_or_default())
                };
                assert!(
                    (200..300).contains(&status),
                    "{} {}: the valid body was refused: {status} {body}",
                    route.method,
                    route.path
                );
            }
        }
    }
}
