//! The events AWS hands pacer's functions, as JSON: API Gateway HTTP API
//! requests (payload 2.0), SQS records and EventBridge scheduled events.

use serde_json::{Value, json};

/// An API Gateway HTTP API request as the integration (payload 2.0) sends it.
pub fn http_event(
    method: &str,
    path: &str,
    headers: Value,
    body: Option<&str>,
    source_ip: &str,
) -> Value {
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": source_ip, "userAgent": "test"},
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "22/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1_795_000_000_000_i64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// A GitHub webhook delivery (`event`, its `body` and the body's
/// `X-Hub-Signature-256`) as API Gateway hands it to the webhook function.
pub fn github_delivery(event: &str, body: &str, signature: &str, source_ip: &str) -> Value {
    let headers = json!({
        "content-type": "application/json",
        "x-github-event": event,
        "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "x-hub-signature-256": signature,
        "user-agent": "GitHub-Hookshot/044aadd",
    });
    http_event("POST", "/api/webhook", headers, Some(body), source_ip)
}

/// One message of the SQS batch Lambda's poller hands the orchestrator.
pub fn sqs_record(message_id: &str, receipt: &str, body: &str, attributes: Value) -> Value {
    json!({
        "messageId": message_id,
        "receiptHandle": receipt,
        "body": body,
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": "7b270e59b47ff90a553787216d55d91d",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:pacer-jobs",
        "awsRegion": "us-east-1"
    })
}

/// The EventBridge schedule's event that starts a reaper pass.
pub fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-22T12:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/pacer-reaper"],
        "detail": {}
    })
}
