//! The web UI: plain HTML, CSS and JavaScript from `ui/` in the repository, compiled into the
//! binary (no build step, no separate server, nothing fetched from elsewhere).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiPath;

const INDEX: &str = include_str!("../../ui/index.html");
const FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
];

/// Headers every UI answer carries: no framing by other sites, no sniffing, scripts only from here.
const SECURITY: [(header::HeaderName, &str); 3] = [
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self' ws: wss:",
    ),
];

/// `body` with its content type and the security headers (`revalidate`: `Cache-Control: no-cache`).
fn page(content_type: &'static str, revalidate: bool, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = r.headers_mut();
    if revalidate {
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
    }
    for (k, v) in SECURITY {
        h.insert(k, header::HeaderValue::from_static(v));
    }
    r
}

pub async fn index() -> Response {
    page("text/html; charset=utf-8", false, INDEX)
}

pub async fn file(ApiPath(name): ApiPath<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, ct, body)) => page(ct, true, body),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
