//! A fault proxy for EC2: an HTTP server on 127.0.0.1 (a free port, stopped
//! on drop) in front of moto_server that makes the real SDK meet the EC2
//! errors moto never produces (capacity, limits, throttling, bad AMIs) and
//! answers that never arrive.
//!
//! Every request goes to moto unchanged (method, path, query, headers,
//! body) and moto's answer comes back unchanged, unless a scripted
//! [`Fault`] matches it: EC2's query protocol names the operation in the
//! form-encoded body (`Action=RunInstances&InstanceType=t3.micro&…`), and a
//! fault matches on the action and on any form fields. A matching fault
//! either refuses the call as EC2 does (its status and its XML error body,
//! read by the SDK's `ec2_query_errors`; moto never sees the call), or lets
//! moto act and then loses the answer (an error in its place, or a dropped
//! connection).
//!
//! The proxy records every EC2 call it saw with its form fields, what it
//! injected and when moto's answer passed back, so a test can check the
//! order of launches, their idempotency tokens and how many there were, and
//! the bench can time a launch from a webhook's delivery to its instance.
//! Calls of other services (DynamoDB, SQS: JSON bodies) pass through
//! unrecorded.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pacer_shared::fleet::ec2::sdk;

use crate::moto::Moto;

/// One EC2 call the proxy saw.
#[derive(Debug, Clone)]
pub struct Call {
    /// The query protocol's `Action` (`RunInstances`, `DescribeInstances`…).
    pub action: String,
    /// Every form field of the call (query string and body), decoded, in order.
    pub fields: Vec<(String, String)>,
    /// What the proxy did instead of passing moto's answer back: the error
    /// code it answered with, or "connection dropped"; `None` when moto answered.
    pub injected: Option<String>,
    /// Whether moto received the call.
    pub reached_moto: bool,
    /// When moto's own answer passed back through the proxy (`None` when
    /// the proxy answered in its place, or moto has not answered yet).
    pub answered_at: Option<Instant>,
}

impl Call {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn client_token(&self) -> Option<&str> {
        self.field("ClientToken")
    }

    pub fn instance_type(&self) -> Option<&str> {
        self.field("InstanceType")
    }

    pub fn subnet_id(&self) -> Option<&str> {
        self.field("SubnetId")
    }

    /// `spot` or `on-demand`, as RunInstances asks for it.
    pub fn market(&self) -> &str {
        match self.field("InstanceMarketOptions.MarketType") {
            Some("spot") => "spot",
            _ => "on-demand",
        }
    }
}

/// What a matching fault does with the call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// EC2 refuses: moto never sees the call.
    Refuse { code: String, message: String },
    /// moto acts on the call (an instance is made), then its answer is
    /// replaced by this EC2 error.
    ErrorAfterMoto { code: String, message: String },
    /// moto acts on the call, then the connection is dropped mid-answer.
    DropAfterMoto,
}

/// A scripted fault: which calls it hits, how many times, and the answer.
#[derive(Debug, Clone)]
pub struct Fault {
    action: String,
    when: Vec<(String, String)>,
    remaining: u32,
    answer: Answer,
}

impl Fault {
    /// Hits the next call of `action` ([`Fault::times`] for more), refusing
    /// it as EC2's `InternalError` unless an answer is chosen.
    pub fn on(action: &str) -> Fault {
        Fault {
            action: action.into(),
            when: Vec::new(),
            remaining: 1,
            answer: Answer::Refuse {
                code: "InternalError".into(),
                message: default_message("InternalError"),
            },
        }
    }

    pub fn run_instances() -> Fault {
        Fault::on("RunInstances")
    }

    /// Only calls whose form field `name` is `value` (`InstanceType`, `SubnetId`…).
    pub fn when(mut self, name: &str, value: &str) -> Fault {
        self.when.push((name.into(), value.into()));
        self
    }

    /// Only spot launches.
    pub fn spot(self) -> Fault {
        self.when("InstanceMarketOptions.MarketType", "spot")
    }

    /// The next `n` matching calls.
    pub fn times(mut self, n: u32) -> Fault {
        self.remaining = n;
        self
    }

    /// Every matching call from now on.
    pub fn always(self) -> Fault {
        self.times(u32::MAX)
    }

    /// Refused with EC2's error for `code` and EC2's usual message for it.
    pub fn refuse(self, code: &str) -> Fault {
        let message = default_message(code);
        self.refuse_with(code, &message)
    }

    /// Refused with EC2's error for `code`, in these words.
    pub fn refuse_with(mut self, code: &str, message: &str) -> Fault {
        self.answer = Answer::Refuse {
            code: code.into(),
            message: message.into(),
        };
        self
    }

    /// moto acts, then the answer is lost: EC2's `InternalError` (HTTP 500)
    /// comes back instead.
    pub fn error_after_moto(mut self) -> Fault {
        self.answer = Answer::ErrorAfterMoto {
            code: "InternalError".into(),
            message: default_message("InternalError"),
        };
        self
    }

    /// moto acts, then the connection drops before the answer is complete.
    pub fn drop_after_moto(mut self) -> Fault {
        self.answer = Answer::DropAfterMoto;
        self
    }

    fn matches(&self, action: &str, fields: &[(String, String)]) -> bool {
        self.remaining > 0
            && self.action == action
            && self
                .when
                .iter()
                .all(|(k, v)| fields.iter().any(|(fk, fv)| fk == k && fv == v))
    }
}

#[derive(Default)]
struct Script {
    faults: Vec<Fault>,
    calls: Vec<Call>,
    next_request_id: u64,
}

struct Shared {
    moto: String,
    http: reqwest::Client,
    script: Mutex<Script>,
}

/// The running proxy. See the module docs.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy in front of `moto`.
    pub async fn start(moto: &Moto) -> FaultProxy {
        pacer_shared::http_client::install_crypto_provider();
        let shared = Arc::new(Shared {
            moto: moto.endpoint.trim_end_matches('/').to_string(),
            // moto answers on loopback in well under this; a hung moto fails the test instead of hanging it.
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .expect("an HTTP client for the proxy"),
            script: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1 for the fault proxy");
        let port = listener.local_addr().expect("local address").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("the fault proxy serves");
        });
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            shared,
            stop: Some(stop),
            server,
        }
    }

    /// An EC2 client like moto's (region, credentials) that talks to the proxy.
    pub async fn ec2_client(&self, moto: &Moto) -> sdk::Client {
        let config = sdk::config::Builder::from(&moto.sdk_config().await)
            .endpoint_url(&self.endpoint)
            .build();
        sdk::Client::from_conf(config)
    }

    /// Adds a fault; faults are tried in the order they were added.
    pub fn inject(&self, fault: Fault) {
        self.shared.script.lock().unwrap().faults.push(fault);
    }

    /// Every call of `action` seen so far, in order.
    pub fn calls(&self, action: &str) -> Vec<Call> {
        self.shared
            .script
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.action == action)
            .cloned()
            .collect()
    }

    /// Every EC2 call seen so far, in order.
    pub fn all_calls(&self) -> Vec<Call> {
        self.shared.script.lock().unwrap().calls.clone()
    }

    pub fn run_instances(&self) -> Vec<Call> {
        self.calls("RunInstances")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("fault proxy: unreadable body: {e}"),
            )
                .into_response();
        }
    };
    let mut fields = decode_form(parts.uri.query().unwrap_or_default().as_bytes());
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        fields.extend(decode_form(&body));
    }
    let action = fields
        .iter()
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();

    // Take the fault (and the call's place in the record) under one lock,
    // so concurrent calls each consume a fault at most once.
    let (answer, request_id, recorded) = {
        let mut script = shared.script.lock().unwrap();
        let answer = script
            .faults
            .iter_mut()
            .find(|f| f.matches(&action, &fields))
            .map(|f| {
                f.remaining -= 1;
                f.answer.clone()
            });
        script.next_request_id += 1;
        let request_id = script.next_request_id;
        let reached_moto = !matches!(answer, Some(Answer::Refuse { .. }));
        let injected = match &answer {
            None => None,
            Some(Answer::Refuse { code, .. } | Answer::ErrorAfterMoto { code, .. }) => {
                Some(code.clone())
            }
            Some(Answer::DropAfterMoto) => Some("connection dropped".to_string()),
        };
        let recorded = (!action.is_empty()).then_some(script.calls.len());
        if recorded.is_some() {
            script.calls.push(Call {
                action: action.clone(),
                fields,
                injected,
                reached_moto,
                answered_at: None,
            });
        }
        (answer, request_id, recorded)
    };

    match answer {
        None => {
            let response = forward(&shared, parts, body).await;
            if let Some(n) = recorded {
                shared.script.lock().unwrap().calls[n].answered_at = Some(Instant::now());
            }
            response
        }
        Some(Answer::Refuse { code, message }) => ec2_error(&code, &message, request_id),
        Some(Answer::ErrorAfterMoto { code, message }) => {
            let _ = forward(&shared, parts, body).await;
            ec2_error(&code, &message, request_id)
        }
        Some(Answer::DropAfterMoto) => {
            let _ = forward(&shared, parts, body).await;
            // A body that fails before its first byte: the server gives up
            // on the connection and the client never gets a whole answer.
            let broken = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other(
                    "the fault proxy drops the connection",
                ))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/xml;charset=UTF-8")
                .body(Body::from_stream(broken))
                .expect("a response")
        }
    }
}

/// Headers that belong to one connection, not to the message.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "content-length",
];

async fn forward(shared: &Shared, parts: axum::http::request::Parts, body: Bytes) -> Response {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    let sent = shared
        .http
        .request(parts.method, format!("{}{path}", shared.moto))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(a) => a,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("fault proxy: moto did not answer: {e}"),
            )
                .into_response();
        }
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("fault proxy: moto's answer broke off: {e}"),
            )
                .into_response();
        }
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// EC2's error answer: the status EC2 uses for the code and its XML body.
fn ec2_error(code: &str, message: &str, request_number: u64) -> Response {
    let request_id = format!("f4017a5e-0000-4000-8000-{request_number:012x}");
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        xml_escape(code),
        xml_escape(message),
        request_id,
    );
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status_for(code);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml;charset=UTF-8"),
    );
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

/// The HTTP status EC2 answers a code with: throttling and unavailability
/// are 503, EC2's own failures (capacity among them) 500, the caller's
/// mistakes and account limits 400.
fn status_for(code: &str) -> StatusCode {
    match code {
        "RequestLimitExceeded" | "Unavailable" | "ServiceUnavailable" => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        "InsufficientInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientHostCapacity"
        | "InternalError" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// What EC2 says along with a code (close to its own words).
fn default_message(code: &str) -> String {
    match code {
        "RequestLimitExceeded" => "Request limit exceeded.".into(),
        "InsufficientInstanceCapacity" => {
            "We currently do not have sufficient capacity in the Availability Zone you \
            requested. Our system will be working on provisioning additional capacity."
                .into()
        }
        "VcpuLimitExceeded" => {
            "You have requested more vCPU capacity than your current vCPU limit of 32 allows for \
            the instance bucket that the specified instance type belongs to. Please visit \
            http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit."
                .into()
        }
        "InstanceLimitExceeded" => {
            "Your quota allows for 0 more running instance(s). You requested at least 1.".into()
        }
        "InternalError" => "An internal error has occurred".into(),
        other => format!("{other} (injected by the fault proxy)"),
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// `application/x-www-form-urlencoded` pairs, decoded (`+` is a space).
fn decode_form(raw: &[u8]) -> Vec<(String, String)> {
    raw.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut kv = pair.splitn(2, |&b| b == b'=');
            let key = percent_decode(kv.next().unwrap_or_default());
            let value = percent_decode(kv.next().unwrap_or_default());
            (key, value)
        })
        .collect()
}

fn percent_decode(raw: &[u8]) -> String {
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn form_fields_decode_as_the_sdk_encodes_them() {
    let fields =
        decode_form(b"Action=RunInstances&TagSpecification.1.Tag.1.Key=pacer%3Arunner&UserData=YQ%3D%3D&X=a+b&Y=%");
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("Action", "RunInstances"),
            ("TagSpecification.1.Tag.1.Key", "pacer:runner"),
            ("UserData", "YQ=="),
            ("X", "a b"),
            ("Y", "%"),
        ]
    );
}
