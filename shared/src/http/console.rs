//! The web console's files (the built Svelte app, `web/dist`) and what
//! answers a path no route claims.
//!
//! Where the files come from is the host's business: the `pacer` binary
//! embeds them, the Lambda functions have none (CloudFront serves them from
//! S3). Every host answers an unknown `/api/…` path with JSON, never HTML.
//! A `GET` of any other unknown path is a deep link into the console
//! (`/jobs/01J…`) and gets `index.html`, whose router draws the page; a
//! missing file with an extension (`/assets/gone.js`) stays a 404, so a
//! stale bundle fails loudly instead of parsing HTML as JavaScript.

use std::borrow::Cow;

use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;

/// One file of the console.
pub struct ConsoleFile {
    pub bytes: Cow<'static, [u8]>,
    pub content_type: String,
}

/// The console's files, by path relative to `web/dist` (`index.html`,
/// `assets/index-3f9a.js`).
pub trait ConsoleFiles: Send + Sync + 'static {
    fn file(&self, path: &str) -> Option<ConsoleFile>;
}

/// Vite names everything under `assets/` by its content hash, so those can be
/// cached for good; `index.html` names the current ones and must be revalidated.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

/// Scripts and styles only from pacer's own origin; no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'";

const NOT_BUILT: &str = "The pacer console has not been built into this binary or directory.\n\
     Build it with `make web` (npm ci --prefix web && npm run build --prefix web), then restart pacer.\n\
     The API answers under /api meanwhile.\n";

/// The router's fallback: JSON 404 under `/api`, console files elsewhere.
pub async fn fallback(state: AppState, req: Request) -> Response {
    let path = req.uri().path();
    if path == "/api" || path.starts_with("/api/") {
        return ApiError::NotFound(format!("no route {} {path}", req.method())).into_response();
    }
    let Some(files) = state.console.as_deref() else {
        return ApiError::NotFound(format!("no route {} {path}", req.method())).into_response();
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res =
            ApiError::MethodNotAllowed(format!("{} is not allowed on {path}", req.method()))
                .into_response();
        res.headers_mut().insert(
            axum::http::header::ALLOW,
            HeaderValue::from_static("GET, HEAD"),
        );
        return res;
    }
    serve(files, path)
}

fn serve(files: &dyn ConsoleFiles, path: &str) -> Response {
    let relative = path.trim_start_matches('/');
    if !relative.is_empty() && !relative.split('/').any(|seg| seg == "..") {
        if let Some(file) = files.file(relative) {
            let cache = if relative.starts_with("assets/") {
                IMMUTABLE
            } else {
                REVALIDATE
            };
            return respond(file, cache);
        }
        let last = relative.rsplit('/').next().unwrap_or_default();
        if last.contains('.') {
            return (
                StatusCode::NOT_FOUND,
                [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{path} is not part of the console\n"),
            )
                .into_response();
        }
    }
    match files.file("index.html") {
        Some(index) => respond(index, REVALIDATE),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            NOT_BUILT,
        )
            .into_response(),
    }
}

fn respond(file: ConsoleFile, cache: &'static str) -> Response {
    // Vite writes UTF-8; say so, so no browser has to guess.
    let textual = file.content_type.starts_with("text/")
        || file.content_type.ends_with("javascript")
        || file.content_type.ends_with("json");
    let content_type = if textual && !file.content_type.contains("charset") {
        format!("{}; charset=utf-8", file.content_type)
    } else {
        file.content_type.clone()
    };
    let content_type = HeaderValue::from_str(&content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut res = (StatusCode::OK, file.bytes.into_owned()).into_response();
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    res
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Files(HashMap<&'static str, &'static str>);

    impl ConsoleFiles for Files {
        fn file(&self, path: &str) -> Option<ConsoleFile> {
            let body = self.0.get(path)?;
            let content_type = if path.ends_with(".js") {
                "text/javascript"
            } else {
                "text/html"
            };
            Some(ConsoleFile {
                bytes: Cow::Borrowed(body.as_bytes()),
                content_type: content_type.into(),
            })
        }
    }

    fn built() -> Files {
        Files(HashMap::from([
            ("index.html", "<main>console</main>"),
            ("assets/app-1a2b.js", "run()"),
        ]))
    }

    async fn body(res: Response) -> String {
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_deep_link_gets_the_console_page_revalidated() {
        let res = serve(&built(), "/jobs/01JABC");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[CACHE_CONTROL], REVALIDATE);
        assert!(
            res.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(body(res).await, "<main>console</main>");
    }

    #[tokio::test]
    async fn hashed_assets_are_cached_for_good() {
        let res = serve(&built(), "/assets/app-1a2b.js");
        assert_eq!(res.headers()[CACHE_CONTROL], IMMUTABLE);
        assert_eq!(
            res.headers()[CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(body(res).await, "run()");
    }

    #[tokio::test]
    async fn a_missing_asset_is_a_404_not_the_page() {
        let res = serve(&built(), "/assets/app-old.js");
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert!(body(res).await.contains("not part of the console"));
    }

    #[tokio::test]
    async fn a_path_climbing_out_gets_the_page_not_a_file() {
        let res = serve(&built(), "/../../etc/passwd");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body(res).await, "<main>console</main>");
    }

    #[tokio::test]
    async fn an_unbuilt_console_says_how_to_build_it() {
        let res = serve(&Files(HashMap::new()), "/");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body(res).await.contains("make web"));
    }
}
