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

pub async fn index() -> Response {
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response();
    for (k, v) in SECURITY {
        r.headers_mut()
            .insert(k, header::HeaderValue::from_static(v));
    }
    r
}

pub async fn file(ApiPath(name): ApiPath<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, ct, body)) => {
            let mut r = (
                [
                    (header::CONTENT_TYPE, *ct),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                *body,
            )
                .into_response();
            for (k, v) in SECURITY {
                r.headers_mut()
                    .insert(k, header::HeaderValue::from_static(v));
            }
            r
        }
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
