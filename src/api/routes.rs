//! The route table. The router and the OpenAPI document (`/api/v1/openapi.json`) are both
//! built from it, so every documented route exists and every API route is documented.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use serde_json::{Value, json};

use super::auth::Need;
use super::limits::Cost;
use super::{ApiError, ApiState, admin, cameras, credentials, events, labels, metrics, people, ui};

/// What a route takes as its body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Body {
    None,
    /// A JSON object; the name is the schema's (documented in docs/api.md).
    Json(&'static str),
    /// A JPEG or PNG picture.
    Image,
}

pub struct Route {
    pub method: Method,
    /// axum syntax: `/api/v1/cameras/{id}`.
    pub path: &'static str,
    /// `None`: no sign-in needed.
    pub need: Option<Need>,
    pub tag: &'static str,
    pub summary: &'static str,
    /// Path parameter types (`integer` or `string`), in order.
    pub params: &'static [(&'static str, &'static str)],
    /// Query parameters: (name, type, description).
    pub query: &'static [(&'static str, &'static str, &'static str)],
    pub body: Body,
    /// Media type of a success (`application/json`, `image/jpeg`, …).
    pub produces: &'static str,
    /// An expensive request, limited per user (`[api] <class>_per_minute`).
    pub cost: Option<Cost>,
    pub handler: MethodRouter<ApiState>,
}

const ID: &[(&str, &str)] = &[("id", "string")];
const NUM: &[(&str, &str)] = &[("id", "integer")];
const JSON: &str = "application/json";

#[allow(clippy::too_many_arguments)]
fn r(
    method: Method,
    path: &'static str,
    need: Option<Need>,
    tag: &'static str,
    summary: &'static str,
    params: &'static [(&'static str, &'static str)],
    body: Body,
    produces: &'static str,
    handler: MethodRouter<ApiState>,
) -> Route {
    Route {
        method,
        path,
        need,
        tag,
        summary,
        params,
        query: &[],
        body,
        produces,
        cost: None,
        handler,
    }
}

/// Every route of the API.
pub fn table() -> Vec<Route> {
    use Need::*;
    let (g, p, u, d) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    vec![
        r(
            g.clone(),
            "/api/v1/health",
            None,
            "system",
            "Liveness: version, uptime, cameras live (no sign-in)",
            &[],
            Body::None,
            JSON,
            get(admin::health),
        ),
        r(
            p.clone(),
            "/api/v1/login",
            None,
            "auth",
            "Sign in with user name and password; returns a session token and sets the session cookie (rate-limited)",
            &[],
            Body::Json("Login"),
            JSON,
            post(admin::login),
        ),
        r(
            p.clone(),
            "/api/v1/logout",
            Some(Read),
            "auth",
            "End the session of the token used",
            &[],
            Body::None,
            JSON,
            post(admin::logout),
        ),
        r(
            g.clone(),
            "/api/v1/me",
            Some(Read),
            "auth",
            "Who the token belongs to and their role",
            &[],
            Body::None,
            JSON,
            get(admin::me),
        ),
        r(
            g.clone(),
            "/api/v1/openapi.json",
            Some(Read),
            "system",
            "This document",
            &[],
            Body::None,
            JSON,
            get(openapi),
        ),
        r(
            g.clone(),
            "/api/v1/status",
            Some(Read),
            "system",
            "Pipeline counters per stage and queue depths",
            &[],
            Body::None,
            JSON,
            get(admin::status),
        ),
        r(
            g.clone(),
            "/metrics",
            Some(Read),
            "system",
            "Prometheus metrics (text format)",
            &[],
            Body::None,
            "text/plain",
            get(metrics::metrics),
        ),
        r(
            g.clone(),
            "/api/v1/events",
            Some(Read),
            "events",
            "WebSocket: the event stream as JSON text messages",
            &[],
            Body::None,
            "websocket",
            get(events::events),
        )
        .query(&[
            ("camera", "string", "comma-separated camera ids"),
            ("types", "string", "comma-separated event types"),
        ]),
        r(
            g.clone(),
            "/api/v1/cameras",
            Some(Read),
            "cameras",
            "Cameras with state, health and counters",
            &[],
            Body::None,
            JSON,
            get(cameras::list),
        ),
        r(
            p.clone(),
            "/api/v1/cameras",
            Some(Cameras),
            "cameras",
            "Add a camera (it starts at once)",
            &[],
            Body::Json("Camera"),
            JSON,
            post(cameras::create),
        ),
        r(
            g.clone(),
            "/api/v1/cameras/{id}",
            Some(Read),
            "cameras",
            "One camera with state, health and counters",
            ID,
            Body::None,
            JSON,
            get(cameras::get),
        ),
        r(
            u.clone(),
            "/api/v1/cameras/{id}",
            Some(Cameras),
            "cameras",
            "Add or change a camera (a changed camera restarts; the others keep running)",
            ID,
            Body::Json("Camera"),
            JSON,
            put(cameras::put),
        ),
        r(
            d.clone(),
            "/api/v1/cameras/{id}",
            Some(Cameras),
            "cameras",
            "Stop and remove a camera (its identities and sightings stay)",
            ID,
            Body::None,
            JSON,
            delete(cameras::delete),
        ),
        r(
            g.clone(),
            "/api/v1/cameras/{id}/snapshot.jpg",
            Some(Read),
            "cameras",
            "The last analysed frame with boxes coloured by identity",
            ID,
            Body::None,
            "image/jpeg",
            get(cameras::snapshot),
        )
        .cost(Cost::Snapshot),
        r(
            g.clone(),
            "/api/v1/cameras/{id}/live",
            Some(Read),
            "cameras",
            "The last analysed frame's boxes with track and identity labels",
            ID,
            Body::None,
            JSON,
            get(cameras::live),
        )
        .query(&[(
            "frame",
            "boolean",
            "also the frame itself (frame_jpeg: base64 JPEG without boxes)",
        )]),
        r(
            g.clone(),
            "/api/v1/identities",
            Some(Read),
            "identities",
            "Identities, newest first, filtered by camera and time",
            &[],
            Body::None,
            JSON,
            get(people::list),
        )
        .query(&[
            ("camera", "string", "only identities seen by this camera"),
            (
                "since_ms",
                "integer",
                "seen at or after (ms since the epoch)",
            ),
            ("until_ms", "integer", "seen at or before"),
            (
                "include_retired",
                "boolean",
                "also retired and merged identities",
            ),
            ("limit", "integer", "1–1000, default 100"),
            ("offset", "integer", "skip this many"),
        ]),
        r(
            g.clone(),
            "/api/v1/identities/{id}",
            Some(Read),
            "identities",
            "One identity: sightings, and crops per camera",
            NUM,
            Body::None,
            JSON,
            get(people::get),
        ),
        r(
            g.clone(),
            "/api/v1/identities/{id}/timeline",
            Some(Read),
            "identities",
            "Where and when the identity was seen",
            NUM,
            Body::None,
            JSON,
            get(people::timeline),
        ),
        r(
            g.clone(),
            "/api/v1/identities/{id}/timeline.svg",
            Some(Read),
            "identities",
            "The identity's timeline as a picture",
            NUM,
            Body::None,
            "image/svg+xml",
            get(people::timeline_svg_one),
        )
        .cost(Cost::Export),
        r(
            p.clone(),
            "/api/v1/identities/{id}/merge",
            Some(Operate),
            "identities",
            "Merge another identity into this one",
            NUM,
            Body::Json("Merge"),
            JSON,
            post(people::merge),
        ),
        r(
            p.clone(),
            "/api/v1/identities/{id}/split",
            Some(Operate),
            "identities",
            "Split tracklets off into a new identity",
            NUM,
            Body::Json("Split"),
            JSON,
            post(people::split),
        ),
        r(
            g.clone(),
            "/api/v1/timeline.svg",
            Some(Read),
            "identities",
            "Who went where, when: every identity's sightings as a picture",
            &[],
            Body::None,
            "image/svg+xml",
            get(people::site_timeline_svg),
        )
        .cost(Cost::Export)
        .query(&[
            ("since_ms", "integer", "only sightings ending at or after"),
            (
                "min_cameras",
                "integer",
                "only identities seen by at least this many cameras",
            ),
            (
                "max_rows",
                "integer",
                "at most this many identities (default 40)",
            ),
            (
                "utc_offset_min",
                "integer",
                "times on the axis at this offset from UTC, in minutes (default 0)",
            ),
        ]),
        r(
            g.clone(),
            "/api/v1/crops/{id}",
            Some(Read),
            "identities",
            "A stored person crop (JPEG)",
            NUM,
            Body::None,
            "image/jpeg",
            get(people::crop),
        ),
        r(
            p.clone(),
            "/api/v1/search",
            Some(Read),
            "identities",
            "Search by image: upload a person picture, get the most similar identities",
            &[],
            Body::Image,
            JSON,
            post(people::search),
        )
        .cost(Cost::Search)
        .query(&[("k", "integer", "matches to return, 1–50 (default 10)")]),
        r(
            g.clone(),
            "/api/v1/audit",
            Some(Read),
            "identities",
            "Merges and splits with who made them and why",
            &[],
            Body::None,
            JSON,
            get(people::audit),
        ),
        r(
            p.clone(),
            "/api/v1/labels",
            Some(Operate),
            "labels",
            "Label a link: a tracklet is / is not an identity (confirm, reject), two identities are / are not one person (same, different)",
            &[],
            Body::Json("Label"),
            JSON,
            post(labels::create),
        ),
        r(
            g.clone(),
            "/api/v1/labels",
            Some(Read),
            "labels",
            "Operators' labels (merges and splits included), newest first, with user and time",
            &[],
            Body::None,
            JSON,
            get(labels::list),
        )
        .query(&[
            ("limit", "integer", "1–1000, default 100"),
            ("offset", "integer", "skip this many"),
        ]),
        r(
            d.clone(),
            "/api/v1/labels/{id}",
            Some(Operate),
            "labels",
            "Remove a label given by mistake",
            NUM,
            Body::None,
            JSON,
            delete(labels::delete),
        ),
        r(
            g.clone(),
            "/api/v1/review",
            Some(Operate),
            "labels",
            "The review queue: uncertain links, then near-misses, each with crops of both sides",
            &[],
            Body::None,
            JSON,
            get(labels::review),
        )
        .query(&[
            ("limit", "integer", "1–200, default 50"),
            ("offset", "integer", "skip this many"),
        ]),
        r(
            g.clone(),
            "/api/v1/models",
            Some(Admin),
            "models",
            "The model registry: versions with MACs, parameters, held-out scores; current and previous",
            &[],
            Body::None,
            JSON,
            get(admin::models),
        ),
        r(
            g.clone(),
            "/api/v1/models/{id}",
            Some(Admin),
            "models",
            "One model version and its parent",
            ID,
            Body::None,
            JSON,
            get(admin::model),
        ),
        r(
            p.clone(),
            "/api/v1/models/{id}/promote",
            Some(Admin),
            "models",
            "Make a version current in the registry",
            ID,
            Body::None,
            JSON,
            post(admin::promote),
        ),
        r(
            p.clone(),
            "/api/v1/models/rollback",
            Some(Admin),
            "models",
            "Make the previous version current again",
            &[],
            Body::None,
            JSON,
            post(admin::rollback),
        ),
        r(
            g.clone(),
            "/api/v1/jobs",
            Some(Admin),
            "jobs",
            "Prune / re-tune jobs, running and finished",
            &[],
            Body::None,
            JSON,
            get(admin::jobs),
        ),
        r(
            p.clone(),
            "/api/v1/jobs",
            Some(Admin),
            "jobs",
            "Start a prune / re-tune job on the site's stored crops",
            &[],
            Body::Json("JobRequest"),
            JSON,
            post(admin::start_job),
        ),
        r(
            g.clone(),
            "/api/v1/jobs/{id}",
            Some(Admin),
            "jobs",
            "A job's progress, or its report (old vs new held-out scores, decision)",
            ID,
            Body::None,
            JSON,
            get(admin::job),
        ),
        r(
            p.clone(),
            "/api/v1/jobs/{id}/cancel",
            Some(Admin),
            "jobs",
            "Cancel a running job (nothing changes)",
            ID,
            Body::None,
            JSON,
            post(admin::cancel_job),
        ),
        r(
            g.clone(),
            "/api/v1/users",
            Some(Admin),
            "users",
            "Users and roles",
            &[],
            Body::None,
            JSON,
            get(admin::users),
        ),
        r(
            p.clone(),
            "/api/v1/users",
            Some(Admin),
            "users",
            "Add a user",
            &[],
            Body::Json("User"),
            JSON,
            post(admin::add_user),
        ),
        r(
            d.clone(),
            "/api/v1/users/{id}",
            Some(Admin),
            "users",
            "Remove a user and their sessions and tokens",
            ID,
            Body::None,
            JSON,
            delete(admin::delete_user),
        ),
        r(
            g.clone(),
            "/api/v1/tokens",
            Some(Admin),
            "users",
            "API tokens (never their values)",
            &[],
            Body::None,
            JSON,
            get(admin::tokens),
        ),
        r(
            p.clone(),
            "/api/v1/tokens",
            Some(Admin),
            "users",
            "Issue an API token (its value is shown once)",
            &[],
            Body::Json("Token"),
            JSON,
            post(admin::create_token),
        ),
        r(
            g.clone(),
            "/api/v1/credentials",
            Some(Admin),
            "cameras",
            "Registered camera credentials: names only, never user names or passwords",
            &[],
            Body::None,
            JSON,
            get(credentials::list),
        ),
        r(
            u.clone(),
            "/api/v1/credentials/{id}",
            Some(Admin),
            "cameras",
            "Register or replace a named camera credential (cameras refer to it with `credential`)",
            ID,
            Body::Json("Credential"),
            JSON,
            put(credentials::put),
        ),
        r(
            d.clone(),
            "/api/v1/credentials/{id}",
            Some(Admin),
            "cameras",
            "Forget a camera credential (refused while a camera uses it)",
            ID,
            Body::None,
            JSON,
            delete(credentials::delete),
        ),
        r(
            d,
            "/api/v1/tokens/{id}",
            Some(Admin),
            "users",
            "Revoke a token",
            NUM,
            Body::None,
            JSON,
            delete(admin::delete_token),
        ),
    ]
}

impl Route {
    fn query(mut self, q: &'static [(&'static str, &'static str, &'static str)]) -> Route {
        self.query = q;
        self
    }

    fn cost(mut self, c: Cost) -> Route {
        self.cost = Some(c);
        self
    }
}

/// The whole application: API routes (with their sign-in and role checks), the web UI, JSON
/// errors for unknown routes and methods, body limits, request metrics.
pub fn router(state: ApiState) -> Router {
    let json_limit = state.cfg.api.max_body_kib * 1024;
    let image_limit = state.cfg.api.max_image_kib * 1024;
    let mut app = Router::new();
    for rt in table() {
        let mut h = rt.handler;
        if rt.body == Body::Image {
            h = h.layer(DefaultBodyLimit::max(image_limit));
        }
        // inside the sign-in check (which runs first and names the caller)
        if let Some(cost) = rt.cost {
            h = h.route_layer(from_fn_with_state(
                (state.clone(), cost),
                super::limits::limit,
            ));
        }
        if let Some(need) = rt.need {
            h = h.route_layer(from_fn_with_state((state.clone(), need), super::require));
        }
        app = app.route(rt.path, h);
    }
    app.route("/", get(ui::index))
        .route("/ui/{file}", get(ui::file))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}

async fn not_found(uri: Uri) -> Response {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "no_route",
        format!("no such endpoint: {}; see /api/v1/openapi.json", uri.path()),
    )
    .into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {}; see /api/v1/openapi.json",
            uri.path()
        ),
    )
    .into_response()
}

fn schemas() -> Value {
    let s = |props: Value, required: &[&str]| json!({"type": "object", "additionalProperties": false, "properties": props, "required": required});
    json!({
        "Error": s(json!({"error": {"type": "string", "description": "machine-readable code"}, "detail": {"type": "string", "description": "what went wrong and what to do"}}), &["error", "detail"]),
        "Login": s(json!({"user": {"type": "string"}, "password": {"type": "string"}}), &["user", "password"]),
        "Camera": s(json!({
            "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "maxLength": 64},
            "url": {"type": "string", "maxLength": 2048, "description": "rtsp://…, file:…, test:<pattern>, v4l2:///dev/videoN"},
            "name": {"type": "string", "maxLength": 200}, "enabled": {"type": "boolean"},
            "username": {"type": "string", "maxLength": 200},
            "credential": {"type": "string", "description": "name of a credential an admin registered (PUT /api/v1/credentials/{name}); username_env / password_env are config-file only"},
            "transport": {"enum": ["auto", "tcp", "udp"]}, "fps": {"type": "integer", "minimum": 1, "maximum": 60},
            "realtime": {"type": "boolean"}, "loop_file": {"type": "boolean"}, "start_s": {"type": "number", "minimum": 0, "maximum": 86400}
        }), &["id", "url"]),
        "Merge": s(json!({"absorb": {"type": "integer"}, "reason": {"type": "string", "maxLength": 500}}), &["absorb"]),
        "Split": s(json!({"tracklets": {"type": "array", "items": {"type": "integer"}, "minItems": 1}, "reason": {"type": "string", "maxLength": 500}}), &["tracklets"]),
        "Label": s(json!({
            "kind": {"enum": ["confirm", "reject", "same", "different"]},
            "identity": {"type": "integer"},
            "tracklet": {"type": "integer", "description": "confirm / reject: the tracklet compared with `identity`"},
            "other": {"type": "integer", "description": "same / different: the second identity"},
            "note": {"type": "string", "maxLength": 500}
        }), &["kind", "identity"]),
        "JobRequest": s(json!({
            "scenario": {"enum": ["S0", "S1", "S2", "S3", "S4", "S5"], "default": "S4"},
            "budget": {"type": "string", "default": "1ep", "description": "epochs (2ep) or time (10m)"},
            "target_macs": {"type": "number", "default": 1.0}, "cameras": {"type": "array", "items": {"type": "string"}},
            "holdout": {"type": "number", "default": 0.25}
        }), &[]),
        "User": s(json!({"name": {"type": "string"}, "role": {"enum": ["operator", "integrator", "admin"]}, "password": {"type": "string", "minLength": 8}}), &["name", "role", "password"]),
        "Credential": s(json!({"username": {"type": "string", "maxLength": 200}, "password": {"type": "string", "minLength": 1, "maxLength": 1024}}), &["password"]),
        "Token": s(json!({"label": {"type": "string"}, "user": {"type": "string"}}), &["label"]),
    })
}

/// The OpenAPI 3.1 document of [`table`].
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for rt in table() {
        let mut op = json!({
            "summary": rt.summary,
            "tags": [rt.tag],
            "operationId": format!("{}{}", rt.method.as_str().to_lowercase(), rt.path.replace(['/', '{', '}', '.'], "_")),
            "responses": {},
        });
        let mut params: Vec<Value> = rt
            .params
            .iter()
            .map(|(n, t)| json!({"name": n, "in": "path", "required": true, "schema": {"type": t}}))
            .collect();
        params.extend(
            rt.query
                .iter()
                .map(|(n, t, d)| json!({"name": n, "in": "query", "required": false, "description": d, "schema": {"type": t}})),
        );
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        match rt.body {
            Body::None => {}
            Body::Json(schema) => {
                op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
            }
            Body::Image => {
                op["requestBody"] =
                    json!({"required": true, "content": {"image/jpeg": {}, "image/png": {}}});
            }
        }
        let ok = if rt.produces == "websocket" {
            json!({"101": {"description": "switching to the WebSocket protocol"}})
        } else {
            json!({"200": {"description": "success", "content": {rt.produces: {}}}})
        };
        let err = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        let mut responses = ok.as_object().cloned().unwrap_or_default();
        responses.insert("4XX".into(), err.clone());
        responses.insert("5XX".into(), err);
        op["responses"] = Value::Object(responses);
        match rt.need {
            Some(need) => {
                op["security"] = json!([{"bearer": []}, {"session": []}]);
                op["x-roles"] = json!(need.roles());
                if let Some(cost) = rt.cost {
                    op["x-rate-limit"] = json!({"class": cost.as_str(), "per_user_per_minute": format!("[api] {}", cost.key())});
                }
            }
            None => op["security"] = json!([]),
        }
        let entry = paths
            .entry(rt.path.to_string())
            .or_insert_with(|| json!({}));
        entry[rt.method.as_str().to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "crosscam API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Cross-camera person re-identification server. Sign in with POST /api/v1/login and send the token as `Authorization: Bearer <token>` (the web UI uses the session cookie). Errors are JSON {error, detail}."
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": super::SESSION_COOKIE}
            },
            "schemas": schemas(),
        },
        "paths": paths,
    })
}

async fn openapi() -> Response {
    axum::Json(document()).into_response()
}
