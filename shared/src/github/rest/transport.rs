//! One call to the API: authentication, retries, rate limits and error
//! mapping, and the `Link` header pages are read from.

use super::*;

impl RestGitHub {
    /// One API call with authentication, retries and error mapping (see the module docs).
    /// Answers 2xx replies, and a 404 reply when the call allows it.
    #[tracing::instrument(level = "debug", skip_all, fields(endpoint = call.endpoint.route))]
    pub(super) async fn call(&self, call: &Call<'_>) -> GitHubResult<Reply> {
        let url = self.url(call);
        let started = tokio::time::Instant::now();
        let mut refreshed_token = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let credential = match call.auth {
                Auth::None => None,
                Auth::App => Some(
                    self.app_jwt()
                        .map_err(|e| anyhow::anyhow!("signing the App JWT: {e}"))?,
                ),
                Auth::Installation(id) => Some(self.installation_token(id).await?),
            };
            let failure = match self.send(call, &url, credential.as_ref()).await {
                Ok(reply) if reply.status.is_success() => return Ok(reply),
                Ok(reply) if reply.status == StatusCode::NOT_FOUND && call.not_found_ok => {
                    return Ok(reply);
                }
                Ok(reply) => classify(call, &reply, self.clock.now()),
                Err(e) => {
                    Failure::Transient(format!("{}: {}", call.describe(), transport_error(&e)))
                }
            };
            let wait = match failure {
                Failure::Final(err) => return Err(err),
                Failure::Unauthorized(err) => match (call.auth, credential) {
                    // A revoked or expired token: fetch a new one, once.
                    (Auth::Installation(id), Some(stale)) if !refreshed_token => {
                        refreshed_token = true;
                        self.forget_token(id, &stale).await;
                        tracing::info!(
                            installation_id = id,
                            "GitHub refused the installation token; fetching a new one"
                        );
                        continue;
                    }
                    _ => return Err(err),
                },
                Failure::RateLimited(wait) => {
                    if attempt >= self.retry.max_attempts || wait > self.retry.max_rate_limit_wait {
                        return Err(GitHubError::RateLimited { retry_after: wait });
                    }
                    tracing::warn!(
                        endpoint = call.endpoint.route,
                        ?wait,
                        attempt,
                        "GitHub rate limit; waiting as asked"
                    );
                    wait
                }
                Failure::Transient(message) => {
                    let wait = self.retry.backoff(attempt);
                    if attempt >= self.retry.max_attempts
                        || started.elapsed() + wait > self.retry.max_elapsed
                    {
                        return Err(GitHubError::Unavailable(format!(
                            "{message} (gave up after {attempt} attempts)"
                        )));
                    }
                    tracing::warn!(endpoint = call.endpoint.route, ?wait, attempt, %message, "GitHub call failed; retrying");
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    pub(super) async fn send(
        &self,
        call: &Call<'_>,
        url: &Url,
        credential: Option<&Secret>,
    ) -> reqwest::Result<Reply> {
        let mut request = self
            .http
            .request(call.method.clone(), url.clone())
            .timeout(self.retry.request_timeout);
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some(credential) = credential {
            // pacer's App JWT is base64url; an installation token is whatever GitHub sent. One
            // that cannot be a header value goes unsent, and GitHub's 401 says what is wrong.
            match HeaderValue::try_from(format!("Bearer {}", credential.expose())) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    request = request.header(header::AUTHORIZATION, value);
                }
                Err(_) => tracing::error!(
                    endpoint = call.endpoint.route,
                    "the GitHub credential holds characters a header cannot carry; sending the call without it"
                ),
            }
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        self.calls.count(calls::Call::GitHub);
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    pub(super) fn url(&self, call: &Call<'_>) -> Url {
        let mut url = self.base.clone();
        // `github.api_url` is validated as an http(s) URL, and those always have a path.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(&call.segments);
        }
        url
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Auth {
    None,
    App,
    Installation(i64),
}

/// One request as the retry loop sees it.
pub(super) struct Call<'e> {
    pub(super) endpoint: &'e Endpoint,
    pub(super) method: Method,
    pub(super) segments: Vec<String>,
    pub(super) query: Vec<(&'static str, String)>,
    pub(super) body: Option<serde_json::Value>,
    pub(super) auth: Auth,
    pub(super) not_found_ok: bool,
}

impl<'e> Call<'e> {
    pub(super) fn new<S: Into<String>>(
        endpoint: &'e Endpoint,
        method: Method,
        segments: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            endpoint,
            method,
            segments: segments.into_iter().map(Into::into).collect(),
            query: Vec::new(),
            body: None,
            auth: Auth::None,
            not_found_ok: false,
        }
    }

    pub(super) fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    pub(super) fn body(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    pub(super) fn query(mut self, name: &'static str, value: String) -> Self {
        self.query.push((name, value));
        self
    }

    /// A 404 is an answer ("gone"), not an error.
    pub(super) fn not_found_ok(mut self) -> Self {
        self.not_found_ok = true;
        self
    }

    /// `POST /orgs/acme/actions/runners/generate-jitconfig`: names what failed, with no secret.
    pub(super) fn describe(&self) -> String {
        format!("{} /{}", self.method, self.segments.join("/"))
    }
}

pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
}

impl Reply {
    /// Parses the body. A parse error names the endpoint and the position only: serde's own
    /// message can quote values, and a value here may be a token or a JIT config.
    pub(super) fn json<T: DeserializeOwned>(&self, call: &Call<'_>) -> GitHubResult<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            GitHubError::Other(anyhow::anyhow!(
                "{}: unexpected response body ({:?} error at line {}, column {})",
                call.describe(),
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }

    /// GitHub's error text: `message`, plus the field errors of a 422, cut short.
    pub(super) fn message(&self) -> String {
        #[derive(Deserialize)]
        struct Wire {
            message: Option<String>,
            #[serde(default)]
            errors: Vec<serde_json::Value>,
        }
        let reason = self.status.canonical_reason().unwrap_or("error").to_owned();
        let Ok(wire) = serde_json::from_slice::<Wire>(&self.body) else {
            return format!("{} {reason}", self.status.as_u16());
        };
        let mut message = wire.message.unwrap_or(reason);
        let details: Vec<String> = wire
            .errors
            .iter()
            .filter_map(describe_field_error)
            .collect();
        if !details.is_empty() {
            message = format!("{message} ({})", details.join("; "));
        }
        if message.chars().count() > MAX_MESSAGE_CHARS {
            message = message
                .chars()
                .take(MAX_MESSAGE_CHARS)
                .chain("…".chars())
                .collect();
        }
        message
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }
}

/// One entry of a 422's `errors`: a string, or `{resource, field, code, message}`.
pub(super) fn describe_field_error(error: &serde_json::Value) -> Option<String> {
    if let Some(text) = error.as_str() {
        return Some(text.to_owned());
    }
    if let Some(message) = error.get("message").and_then(|m| m.as_str()) {
        return Some(message.to_owned());
    }
    let part = |k: &str| error.get(k).and_then(|v| v.as_str());
    let code = part("code")?;
    Some(match (part("resource"), part("field")) {
        (Some(resource), Some(field)) => format!("{resource}.{field} {code}"),
        (None, Some(field)) => format!("{field} {code}"),
        _ => code.to_owned(),
    })
}

/// What to do about a reply that is neither 2xx nor an allowed 404.
pub(super) enum Failure {
    Final(GitHubError),
    Unauthorized(GitHubError),
    RateLimited(Duration),
    Transient(String),
}

pub(super) fn classify(call: &Call<'_>, reply: &Reply, now: Time) -> Failure {
    let status = reply.status;
    let message = reply.message();
    let what = call.describe();
    if let Some(wait) = rate_limit_wait(reply, &message, now) {
        return Failure::RateLimited(wait);
    }
    match status {
        StatusCode::UNAUTHORIZED => Failure::Unauthorized(GitHubError::Unauthorized(format!(
            "{what}: {message} (check github.app_id and the App's private key)"
        ))),
        StatusCode::FORBIDDEN => match call.endpoint.permission {
            Some(permission) if message.contains("Resource not accessible by integration") => {
                Failure::Final(GitHubError::MissingPermission {
                    permission: permission.to_owned(),
                    message: format!("{what}: {message}"),
                })
            }
            _ => Failure::Final(GitHubError::Refused(format!("{what}: 403 {message}"))),
        },
        StatusCode::NOT_FOUND => {
            Failure::Final(GitHubError::NotFound(match call.endpoint.not_found_hint {
                Some(hint) => format!("{what}: {message}; {hint}"),
                None => format!("{what}: {message}"),
            }))
        }
        StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => {
            Failure::Final(GitHubError::Refused(format!("{what}: {message}")))
        }
        StatusCode::REQUEST_TIMEOUT => {
            Failure::Transient(format!("{what}: {} {message}", status.as_u16()))
        }
        s if s.is_server_error() => {
            Failure::Transient(format!("{what}: {} {message}", status.as_u16()))
        }
        _ => Failure::Final(GitHubError::Refused(format!(
            "{what}: {} {message}",
            status.as_u16()
        ))),
    }
}

/// How long GitHub asks pacer to wait, when `reply` is a rate limit: `retry-after` seconds, else
/// the primary limit's `x-ratelimit-reset` when `x-ratelimit-remaining` is 0, else a minute for a
/// secondary limit that names no wait.
pub(super) fn rate_limit_wait(reply: &Reply, message: &str, now: Time) -> Option<Duration> {
    if reply.status != StatusCode::FORBIDDEN && reply.status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    if let Some(seconds) = reply
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Some(Duration::from_secs(seconds));
    }
    if reply.header("x-ratelimit-remaining") == Some("0") {
        if let Some(reset) = reply
            .header("x-ratelimit-reset")
            .and_then(|v| v.parse::<i64>().ok())
        {
            let seconds = (reset - now.timestamp()).max(0);
            return Some(Duration::from_secs(seconds.unsigned_abs()));
        }
    }
    if reply.status == StatusCode::TOO_MANY_REQUESTS
        || message.to_ascii_lowercase().contains("rate limit")
    {
        return Some(DEFAULT_RATE_LIMIT_WAIT);
    }
    None
}

/// Whether the `Link` header has a link with `rel`, or `None` when there is no `Link` header.
pub(super) fn link_rel(headers: &HeaderMap, rel: &str) -> Option<bool> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    let wanted = format!("rel=\"{rel}\"");
    Some(
        link.split(',')
            .any(|part| part.split(';').skip(1).any(|p| p.trim() == wanted)),
    )
}

/// Whether a page-numbered list has another page: the `Link` header is GitHub's word; without
/// one, a full page short of `total_count` means there is more.
pub(super) fn more_pages(
    headers: &HeaderMap,
    on_page: usize,
    per_page: usize,
    listed: usize,
    total_count: usize,
) -> bool {
    match link_rel(headers, "next") {
        Some(next) => next,
        None => on_page == per_page && listed < total_count,
    }
}

/// The target of the `Link` header's link with `rel`.
pub(super) fn link_target(headers: &HeaderMap, rel: &str) -> Option<Url> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    let wanted = format!("rel=\"{rel}\"");
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim().strip_prefix('<')?.strip_suffix('>')?;
        pieces
            .any(|p| p.trim() == wanted)
            .then(|| Url::parse(target).ok())
            .flatten()
    })
}

/// A transport error in words, without the URL's query (harmless today, but kept short).
pub(super) fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    format!("{kind}: {}", crate::error_text::display_chain(e))
}
