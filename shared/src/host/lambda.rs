//! pacer in AWS Lambda: what every function does at a cold start, and the
//! three kinds of event it answers — HTTP API requests (webhook, runner,
//! api), an SQS batch (orchestrator) and an EventBridge schedule (reaper).
//!
//! Each function's `main` calls [`run`]: a [`cold_start`] once, then one
//! `serve_*` here; the logic stays in `service` and `http`, shared with
//! local mode.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use futures::StreamExt as _;
use lambda_http::request::RequestContext;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::Booted;
use crate::config::{Config, Function, LogFormat, LogOutput, Secret};
use crate::http::{AppState, console};
use crate::queue::Delivery;
use crate::runtime::{self, LogGuard};
use crate::service::dispatch::{self, Settlement};
use crate::service::{Ports, reaper};

pub use lambda_runtime::Error;

/// The header pacer's CloudFront distribution adds to every request it
/// forwards, carrying `server.cloudfront_origin_secret`.
pub const ORIGIN_SECRET_HEADER: &str = "x-pacer-origin-secret";
/// Where CloudFront names the viewer: `address:port`.
pub const VIEWER_ADDRESS_HEADER: &str = "cloudfront-viewer-address";

/// SQS messages an orchestrator invocation handles at once.
pub const BATCH_CONCURRENCY: usize = 10;

/// A function's whole life: a cold start once, then answer events until
/// Lambda stops the process. This is all a function's `main` calls.
pub async fn run(function: Function) -> Result<(), Error> {
    let started = match cold_start(function).await {
        Ok(started) => started,
        Err(e) => {
            // Lambda shows stderr in the function's log; say it plainly
            // before the runtime prints the error's debug form.
            eprintln!("pacer {}: cannot start: {e}", function.name());
            return Err(e);
        }
    };
    match function {
        Function::Orchestrator => serve_queue(started.booted.ports).await,
        Function::Reaper => serve_schedule(started.booted.ports).await,
        Function::Webhook | Function::Runner | Function::Api => {
            serve_http(started.router().await?).await
        }
        Function::Serve => Err(not_a_lambda_function()),
    }
}

/// `pacer serve` is the single local process, never a Lambda function.
fn not_a_lambda_function() -> Error {
    "pacer serve is the local process, not a Lambda function".into()
}

/// What a cold start built, kept for every invocation.
pub struct ColdStart {
    pub function: Function,
    pub booted: Booted,
    _log: LogGuard,
}

/// The cold start: configuration from `PACER_*` (the loader local mode
/// uses, without a file), JSON logs, then [`host::boot`](super::boot):
/// secrets resolved once, every client built once.
pub async fn cold_start(function: Function) -> Result<ColdStart, Error> {
    if function == Function::Serve {
        return Err(not_a_lambda_function());
    }
    let started = Instant::now();
    let name = function.name();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut cfg = Config::load_for(function, None, &env)?;
    // CloudWatch reads one JSON object per line; colour codes would be noise.
    cfg.logging.format = LogFormat::Json;
    cfg.logging.output = LogOutput::Stdout;
    cfg.logging.color = false;
    let log = runtime::init_logging(&cfg.logging)?;
    for warning in cfg.warnings() {
        tracing::warn!(function = name, "{warning}");
    }
    let booted = super::boot(cfg).await?;
    tracing::info!(
        function = name,
        secrets_ms = booted.secrets_took.as_secs_f64() * 1000.0,
        boot_ms = started.elapsed().as_secs_f64() * 1000.0,
        store = booted.ports.store.engine(),
        queue = booted.ports.queue.engine(),
        "cold start done"
    );
    Ok(ColdStart {
        function,
        booted,
        _log: log,
    })
}

impl ColdStart {
    /// The router an HTTP function serves, as [`run`] serves it. Only the
    /// api function builds console auth (with OIDC discovery).
    pub async fn router(&self) -> Result<Router, Error> {
        let cfg = &self.booted.cfg;
        let (auth, sso, workload) = if self.function == Function::Api {
            (
                runtime::auth_settings(cfg).await?,
                runtime::sso(cfg).await?,
                runtime::workload_verifier(cfg)?,
            )
        } else {
            (None, None, None)
        };
        let state = AppState {
            ports: self.booted.ports.clone(),
            trusted_proxies: Arc::new(Vec::new()),
            auth,
            sso,
            console: None,
            workload,
        };
        http_router(
            self.function,
            state,
            cfg.server.cloudfront_origin_secret.clone(),
        )
    }
}

/// An HTTP function's router as Lambda runs it: its routes, the client
/// address taken from the event, and JSON for any path it does not know.
pub fn http_router(
    function: Function,
    state: AppState,
    origin_secret: Option<Secret>,
) -> Result<Router, Error> {
    let router = match function {
        Function::Webhook => crate::http::webhook_router(state.clone()),
        Function::Runner => crate::http::runner_router(state.clone()),
        Function::Api => crate::http::health_router()
            .merge(crate::http::workload_router(state.clone()))
            .merge(crate::http::api_router(state.clone())),
        Function::Orchestrator | Function::Reaper => {
            return Err(format!("the {} function does not serve HTTP", function.name()).into());
        }
        Function::Serve => return Err(not_a_lambda_function()),
    };
    let fallback_state = state;
    let origin_secret = Arc::new(origin_secret);
    let router = router
        .fallback(move |req: Request| console::fallback(fallback_state.clone(), req))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let origin_secret = origin_secret.clone();
            async move { with_client_address(req, next, origin_secret.as_ref().as_ref()).await }
        }))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    Ok(router)
}

/// Serves `router` for API Gateway until the runtime stops the process.
pub async fn serve_http(router: Router) -> Result<(), Error> {
    lambda_http::run(router).await
}

/// Gives the request the peer address local mode gets from its socket, so
/// the rate limit and the audit log key on the real client: API Gateway's
/// `sourceIp` — or, only when the request proves it came through pacer's
/// own distribution, CloudFront's viewer address. A forged
/// `CloudFront-Viewer-Address` without the secret is ignored.
async fn with_client_address(
    mut req: Request,
    next: Next,
    origin_secret: Option<&Secret>,
) -> Response {
    if let Some(addr) = client_address(&req, origin_secret) {
        req.extensions_mut().insert(ConnectInfo(addr));
    }
    next.run(req).await
}

/// The client address of a Lambda HTTP request (see [`with_client_address`]).
pub fn client_address<B>(
    req: &http::Request<B>,
    origin_secret: Option<&Secret>,
) -> Option<SocketAddr> {
    if let Some(secret) = origin_secret {
        let presented = req
            .headers()
            .get(ORIGIN_SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            presented,
            secret.expose().as_bytes(),
        )) {
            if let Some(viewer) = req
                .headers()
                .get(VIEWER_ADDRESS_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_viewer_address)
            {
                return Some(viewer);
            }
        }
    }
    let source = match req.extensions().get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.clone()?,
        RequestContext::ApiGatewayV1(ctx) => ctx.identity.source_ip.clone()?,
        _ => return None,
    };
    source
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 0))
}

/// `198.51.100.10:46532`, `2001:db8::1:46532` or `[2001:db8::1]:46532`.
fn parse_viewer_address(raw: &str) -> Option<SocketAddr> {
    let raw = raw.trim();
    if let Ok(addr) = raw.parse::<SocketAddr>() {
        return Some(addr);
    }
    let (ip, port) = raw.rsplit_once(':')?;
    Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
}

/// The orchestrator's event loop: SQS batches until the runtime stops it.
pub async fn serve_queue(ports: Ports) -> Result<(), Error> {
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let ports = ports.clone();
        async move { Ok::<_, Error>(handle_batch(&ports, event.payload).await) }
    }))
    .await
}

/// One SQS batch: each message dispatched, concurrently, under its own
/// span. Only the messages to try again are reported as failures — their
/// visibility already set to the retry delay — so Lambda deletes the rest;
/// a malformed message is logged and deleted, never retried forever.
pub async fn handle_batch(ports: &Ports, event: SqsEvent) -> SqsBatchResponse {
    let outcomes: Vec<Option<String>> = futures::stream::iter(event.records)
        .map(|message| async move {
            let id = message.message_id.clone().unwrap_or_default();
            let span = tracing::info_span!("sqs_message", message_id = %id);
            async move { handle_message(ports, message).await.then_some(id) }
                .instrument(span)
                .await
        })
        .buffer_unordered(BATCH_CONCURRENCY)
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    for id in outcomes.into_iter().flatten() {
        let mut failure = aws_lambda_events::event::sqs::BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    response
}

/// Handles one message; true when it must come back.
async fn handle_message(ports: &Ports, message: SqsMessage) -> bool {
    let delivery = Delivery {
        job_id: message.body.unwrap_or_default(),
        receipt: message.receipt_handle.unwrap_or_default(),
        receive_count: message
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1),
    };
    match dispatch::handle(ports, &delivery).await {
        Settlement::Done => false,
        Settlement::RetryAfter(after) => {
            // Best effort: without it the message returns after the queue's
            // visibility timeout, which is merely slower.
            if let Err(e) = ports.queue.retry_later(&delivery, after).await {
                tracing::warn!(error = %crate::error_text::display_chain(&e), "could not set the message's retry delay");
            }
            true
        }
    }
}

/// The reaper's event loop: one reconciliation pass per scheduled event.
pub async fn serve_schedule(ports: Ports) -> Result<(), Error> {
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let ports = ports.clone();
        async move { handle_schedule(&ports, event.payload).await }
    }))
    .await
}

/// One reaper pass. A pass that fails fails the invocation, so the error
/// shows in the function's metrics and alarms instead of being swallowed.
pub async fn handle_schedule(ports: &Ports, event: Value) -> Result<Value, Error> {
    tracing::debug!(source = ?event.get("source"), time = ?event.get("time"), "scheduled event");
    let report = reaper::reconcile(ports).await?;
    if !report.deferred.is_empty() {
        tracing::warn!(deferred = ?report.deferred, "reaper pass left work for the next one");
    }
    Ok(json!({
        "actions": report.actions.len(),
        "deferred": report.deferred,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], source_ip: &str) -> http::Request<()> {
        let mut req = http::Request::builder();
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let mut req = req.body(()).unwrap();
        let mut ctx = aws_lambda_events::event::apigw::ApiGatewayV2httpRequestContext::default();
        ctx.http.source_ip = Some(source_ip.to_string());
        req.extensions_mut()
            .insert(RequestContext::ApiGatewayV2(ctx));
        req
    }

    fn ip(addr: Option<SocketAddr>) -> String {
        addr.map(|a| a.ip().to_string()).unwrap_or_default()
    }

    #[tokio::test]
    async fn the_local_process_is_refused_as_a_lambda_function() {
        let Err(err) = cold_start(Function::Serve).await else {
            panic!("booted pacer serve as a Lambda function");
        };
        assert_eq!(
            err.to_string(),
            "pacer serve is the local process, not a Lambda function"
        );
    }

    #[test]
    fn the_source_ip_of_api_gateway_is_the_client() {
        let req = request(&[("x-forwarded-for", "203.0.113.9")], "198.51.100.7");
        assert_eq!(ip(client_address(&req, None)), "198.51.100.7");
    }

    #[test]
    fn the_viewer_address_counts_only_with_the_origin_secret() {
        let secret = Secret::new("s3cret-origin-value");
        let viewer = [(VIEWER_ADDRESS_HEADER, "203.0.113.9:46532")];
        let forged = request(&viewer, "130.176.0.1");
        assert_eq!(ip(client_address(&forged, Some(&secret))), "130.176.0.1");

        let wrong = request(&[viewer[0], (ORIGIN_SECRET_HEADER, "guess")], "130.176.0.1");
        assert_eq!(ip(client_address(&wrong, Some(&secret))), "130.176.0.1");

        let through_cloudfront = request(
            &[viewer[0], (ORIGIN_SECRET_HEADER, "s3cret-origin-value")],
            "130.176.0.1",
        );
        assert_eq!(
            ip(client_address(&through_cloudfront, Some(&secret))),
            "203.0.113.9"
        );
        // Without a configured secret the header is never believed.
        assert_eq!(ip(client_address(&through_cloudfront, None)), "130.176.0.1");
    }

    #[test]
    fn viewer_addresses_of_both_families_parse() {
        assert_eq!(
            parse_viewer_address("198.51.100.10:46532")
                .unwrap()
                .ip()
                .to_string(),
            "198.51.100.10"
        );
        assert_eq!(
            parse_viewer_address("2001:db8::1:46532")
                .unwrap()
                .ip()
                .to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            parse_viewer_address("[2001:db8::2]:443")
                .unwrap()
                .ip()
                .to_string(),
            "2001:db8::2"
        );
        assert_eq!(parse_viewer_address("not-an-address"), None);
    }
}
