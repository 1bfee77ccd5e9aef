//! Cross-site request forgery. The session cookie is `SameSite=Strict`,
//! which modern browsers honour; this is the second lock, for the browsers
//! and proxies that do not: a request that changes something (any method
//! but GET, HEAD and OPTIONS) is refused with 403 when the browser says it
//! comes from another site. Browsers send `Origin` with every such request
//! and `Sec-Fetch-Site` with most; scripts and the CLI send neither, and
//! authenticate with a bearer token a page on another site cannot attach.
//!
//! pacer's own origin is the one of `server.public_url` (where people open
//! the console; in AWS, the CloudFront address), and whatever address the
//! browser reached this server by (its `Host`), so `http://localhost:3000`
//! works as well as `http://127.0.0.1:3000`.

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;

/// The middleware: see the module docs.
pub async fn same_origin_writes(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    // HTTP/2 carries the address in the request's authority, not a Host header.
    let reached_as = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or(req.uri().authority().map(|a| a.as_str()));
    match from_another_site(
        req.headers(),
        reached_as,
        &state.ports.settings.callback_url,
    ) {
        Some(why) => {
            tracing::warn!(path = %req.uri().path(), method = %req.method(), why, "cross-site request refused");
            ApiError::Forbidden(format!(
                "pacer refuses changes sent from another site ({why}); use the console at its own address, or a bearer token"
            ))
            .into_response()
        }
        None => next.run(req).await,
    }
}

/// Why a request that changes something looks sent by another site's page,
/// or `None` when it does not. `reached_as` is the host (and port) the
/// request was sent to; `public_url` is pacer's own address.
pub fn from_another_site(
    headers: &HeaderMap,
    reached_as: Option<&str>,
    public_url: &str,
) -> Option<String> {
    let text = |name| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("(not text)"))
    };
    if text("sec-fetch-site").is_some_and(|site| site.eq_ignore_ascii_case("cross-site")) {
        return Some("Sec-Fetch-Site: cross-site".into());
    }
    let origin = text(ORIGIN.as_str())?;
    let own = url::Url::parse(public_url)
        .ok()
        .map(|u| u.origin().ascii_serialization());
    if own.as_deref() == Some(origin) {
        return None;
    }
    // The address the browser used, whatever public_url says: a host and
    // port, compared without the scheme (a TLS-terminating proxy may sit in
    // between, and the scheme is not what tells two sites apart here).
    let authority = url::Url::parse(origin)
        .ok()
        .filter(|u| u.has_host())
        .map(|u| match u.port() {
            Some(port) => format!("{}:{port}", u.host_str().unwrap_or_default()),
            None => u.host_str().unwrap_or_default().to_owned(),
        });
    let host = reached_as.map(str::to_ascii_lowercase);
    match (authority, host) {
        (Some(a), Some(h))
            if a == h || a == h.trim_end_matches(":80") || a == h.trim_end_matches(":443") =>
        {
            None
        }
        _ => Some(format!("Origin {origin:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// Checks a request with these headers, reached as its `host` header says.
    fn check(pairs: &[(&'static str, &str)], public_url: &str) -> Option<String> {
        let h = headers(pairs);
        let host = pairs.iter().find(|(n, _)| *n == "host").map(|(_, v)| *v);
        from_another_site(&h, host, public_url)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    const PUBLIC: &str = "https://pacer.example.com";

    #[test]
    fn pacer_s_own_pages_and_scripts_without_an_origin_may_write() {
        assert_eq!(check(&[], PUBLIC), None, "curl, the CLI");
        assert_eq!(
            check(
                &[("origin", PUBLIC), ("sec-fetch-site", "same-origin")],
                PUBLIC
            ),
            None
        );
        let local = [
            ("origin", "http://localhost:3000"),
            ("host", "localhost:3000"),
        ];
        assert_eq!(
            check(&local, "http://127.0.0.1:3000"),
            None,
            "reached by another name for itself"
        );
        assert_eq!(
            check(
                &[
                    ("origin", "https://pacer.internal"),
                    ("host", "pacer.internal")
                ],
                PUBLIC
            ),
            None
        );
        let h2 = headers(&[("origin", "https://localhost:3000")]);
        assert_eq!(
            from_another_site(&h2, Some("localhost:3000"), "https://127.0.0.1:3000"),
            None,
            "HTTP/2's authority"
        );
    }

    #[test]
    fn another_site_is_refused_whatever_it_claims() {
        let evil = check(
            &[
                ("origin", "https://evil.example"),
                ("host", "pacer.example.com"),
            ],
            PUBLIC,
        );
        assert!(evil.unwrap().contains("evil.example"));
        assert!(
            check(&[("sec-fetch-site", "cross-site")], PUBLIC).is_some(),
            "even without an Origin"
        );
        let sibling = [
            ("origin", "https://other.example.com"),
            ("sec-fetch-site", "same-site"),
            ("host", "pacer.example.com"),
        ];
        assert!(
            check(&sibling, PUBLIC).is_some(),
            "a sibling subdomain is another site's page"
        );
        for origin in [
            "null",
            "",
            "pacer.example.com",
            "https://pacer.example.com.evil.example",
        ] {
            assert!(
                check(&[("origin", origin), ("host", "pacer.example.com")], PUBLIC).is_some(),
                "{origin:?}"
            );
        }
    }
}
