//! Sign-in, health and status, and the admin endpoints: models, jobs, users, API tokens.

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::Role;
use super::error::{ApiJson, ApiPath};
use super::jobs::{CancelError, JobRequest, StartError};
use super::{ApiError, ApiResult, ApiState, Caller, SESSION_COOKIE};

pub async fn health(State(s): State<ApiState>) -> Response {
    let cams = s.server.ingest.status();
    let live = cams
        .iter()
        .filter(|c| c.state == crate::ingest::CameraState::Live)
        .count();
    axum::Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": s.started.elapsed().as_secs(),
        "cameras": cams.len(),
        "cameras_live": live,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub user: String,
    pub password: String,
}

pub async fn login(
    State(s): State<ApiState>,
    super::ClientAddr(addr): super::ClientAddr,
    ApiJson(b): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    if b.user.len() > 64 || b.password.len() > 1024 {
        return Err(ApiError::invalid("user name or password too long"));
    }
    let shown = crate::config::secrets::clip(&b.user, 64);
    if let Some(wait) = s.limiter.blocked(&addr, &b.user) {
        tracing::warn!(user = %shown, %addr, "login refused: too many failed attempts");
        s.http.limited("login");
        return Err(ApiError::rate_limited(wait));
    }
    let hours = s.cfg.api.session_hours;
    let user = b.user.clone();
    let issued = s
        .blocking(move |s| {
            Ok(match s.auth.check_login(&b.user, &b.password)? {
                Some(role) => Some((
                    role,
                    s.auth.issue(
                        &b.user,
                        "session",
                        "web login",
                        Some(Duration::from_secs(hours * 3600)),
                    )?,
                )),
                None => None,
            })
        })
        .await?;
    let Some((role, (_, token, expires))) = issued else {
        s.limiter.failed(&addr, &user);
        tracing::warn!(user = %shown, %addr, "failed login");
        return Err(ApiError::unauthorized("wrong user name or password"));
    };
    s.limiter.succeeded(&addr, &user);
    tracing::info!(user = %user, role = %role, "signed in");
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        hours * 3600,
        if s.tls { "; Secure" } else { "" }
    );
    Ok((
        [(header::SET_COOKIE, cookie)],
        axum::Json(json!({"token": token, "user": user, "role": role, "expires_ms": expires})),
    )
        .into_response())
}

pub async fn logout(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    let id = caller.token_id;
    s.blocking(move |s| Ok(s.auth.revoke(id)?)).await?;
    Ok((
        [(
            header::SET_COOKIE,
            format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
        StatusCode::NO_CONTENT,
    )
        .into_response())
}

pub async fn me(Extension(caller): Extension<Caller>) -> Response {
    axum::Json(json!({"user": caller.user, "role": caller.role})).into_response()
}

pub async fn status(State(s): State<ApiState>) -> Response {
    axum::Json(json!({
        "pipeline": s.server.status(),
        "queues": s.server.queue_depths(),
        "serving_model": s.server.model(),
        "model": s.server.switcher.model_json(),
        "model_switch_last": s.server.switcher.last(),
        "outputs": s.server.outputs_status(),
        "retune_schedule": s.scheduler.status(),
    }))
    .into_response()
}

fn registry(s: &ApiState) -> ApiResult<crate::jobs::Registry> {
    let manifest =
        crate::models::Manifest::load(&s.cfg.models.manifest).map_err(ApiError::internal)?;
    let initial = match manifest.get(&s.cfg.models.embedder) {
        Ok(m) => manifest.file_of(m),
        Err(_) => std::path::PathBuf::from(&s.cfg.models.embedder),
    };
    crate::jobs::Registry::open_or_init(&s.cfg.server.data_dir, &initial)
        .map_err(|e| ApiError::internal(format!("{e:#}")))
}

pub async fn models(State(s): State<ApiState>) -> ApiResult<Response> {
    let serving = s.server.embedder.current().version.id.clone();
    s.blocking(move |s| {
        let reg = registry(s)?;
        Ok(axum::Json(json!({
            "serving": serving,
            "switch": s.server.switcher.progress(),
            "current": reg.current().map(|v| &v.id),
            "previous": reg.previous().map(|v| &v.id),
            "versions": reg.versions(),
        }))
        .into_response())
    })
    .await
}

pub async fn model(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult<Response> {
    s.blocking(move |s| {
        let reg = registry(s)?;
        let v = reg
            .get(&id)
            .ok_or_else(|| ApiError::not_found(format!("no model version {id:?}")))?;
        Ok(axum::Json(json!({
            "version": v,
            "current": reg.current().map(|c| c.id == v.id).unwrap_or(false),
            "parent": v.parent.as_ref().and_then(|p| reg.get(p)),
        }))
        .into_response())
    })
    .await
}

fn no_job_running(s: &ApiState) -> ApiResult<()> {
    if let Some(j) = s.jobs.running().first() {
        return Err(ApiError::conflict(format!(
            "job {} is running and may change the registry; wait for it or cancel it",
            j.id
        )));
    }
    Ok(())
}

/// Starts a live switch (refused while a job runs: a job may change the registry); answers 202
/// with the switch (`to`, `phase`, `done`, `total`), which `GET /api/v1/status` then follows in
/// `model.switch` until it ends (`model_switch_last`).
async fn start_switch(
    s: ApiState,
    caller: Caller,
    req: crate::server::switch::SwitchRequest,
) -> ApiResult<Response> {
    use crate::server::switch::SwitchError;
    no_job_running(&s)?;
    let from = s.server.embedder.current().version.id.clone();
    let sw = s
        .blocking(move |s| {
            s.server
                .switcher
                .request(req, &caller.user)
                .map_err(|e| match e {
                    SwitchError::Busy(m) | SwitchError::Refused(m) => ApiError::conflict(m),
                    SwitchError::NotFound(m) => ApiError::not_found(m),
                    SwitchError::Internal(m) => ApiError::internal(m),
                })
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"from": from, "switch": sw})),
    )
        .into_response())
}

pub async fn promote(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    start_switch(s, caller, crate::server::switch::SwitchRequest::Promote(id)).await
}

pub async fn rollback(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    start_switch(s, caller, crate::server::switch::SwitchRequest::Rollback).await
}

pub async fn jobs(State(s): State<ApiState>) -> ApiResult<Response> {
    let list = s.blocking(|s| Ok(s.jobs.list())).await?;
    Ok(axum::Json(json!({ "jobs": list })).into_response())
}

pub async fn job(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult<Response> {
    let j = s
        .blocking(move |s| {
            s.jobs
                .get(&id)
                .ok_or_else(|| ApiError::not_found(format!("no job {id:?}")))
        })
        .await?;
    Ok(axum::Json(j).into_response())
}

pub async fn start_job(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<JobRequest>,
) -> ApiResult<Response> {
    let j = s
        .blocking(move |s| {
            s.jobs.start(req, &caller.user).map_err(|e| match e {
                StartError::Invalid(d) => ApiError::invalid(d),
                StartError::Busy(id) => ApiError::conflict(format!(
                    "job {id} is running; one job runs at a time (cancel it or wait)"
                )),
                StartError::Spawn(d) => ApiError::internal(d),
            })
        })
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(j)).into_response())
}

pub async fn cancel_job(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let j = s.jobs.cancel(&id).map_err(|e| match e {
        CancelError::NotFound => ApiError::not_found(format!("no running job {id:?}")),
        CancelError::NotRunning(st) => ApiError::conflict(format!("job {id} is {st}, not running")),
    })?;
    tracing::info!(job = %id, user = %caller.user, "job cancel requested");
    Ok((StatusCode::ACCEPTED, axum::Json(j)).into_response())
}

pub async fn users(State(s): State<ApiState>) -> ApiResult<Response> {
    let u = s.blocking(|s| Ok(s.auth.users()?)).await?;
    Ok(axum::Json(json!({ "users": u })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    pub name: String,
    pub role: Role,
    pub password: String,
}

pub async fn add_user(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<UserBody>,
) -> ApiResult<Response> {
    let name = b.name.clone();
    s.blocking(move |s| Ok(s.auth.add_user(&b.name, b.role, &b.password)?))
        .await?;
    tracing::info!(user = %name, by = %caller.user, "user added");
    Ok((StatusCode::CREATED, axum::Json(json!({"name": name}))).into_response())
}

pub async fn delete_user(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let n2 = name.clone();
    s.blocking(move |s| {
        let users = s.auth.users()?;
        let admins = users.iter().filter(|u| u.role == Role::Admin).count();
        if admins == 1 && users.iter().any(|u| u.name == n2 && u.role == Role::Admin) {
            return Err(ApiError::conflict(
                "this is the last admin; add another admin before removing it",
            ));
        }
        Ok(s.auth.remove_user(&n2)?)
    })
    .await?;
    tracing::info!(user = %name, by = %caller.user, "user removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn tokens(State(s): State<ApiState>) -> ApiResult<Response> {
    let t = s.blocking(|s| Ok(s.auth.tokens()?)).await?;
    Ok(axum::Json(json!({ "tokens": t })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// What the token is for (e.g. `prometheus`).
    pub label: String,
    /// Whose token it is (default: the caller); it has that user's role.
    pub user: Option<String>,
}

pub async fn create_token(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<TokenBody>,
) -> ApiResult<Response> {
    if b.label.is_empty() || b.label.len() > 100 {
        return Err(ApiError::invalid("`label`: 1 to 100 bytes"));
    }
    crate::config::secrets::check_text(&b.label, 100)
        .map_err(|m| ApiError::invalid(format!("`label`: {m}")))?;
    let user = b.user.unwrap_or(caller.user.clone());
    let u2 = user.clone();
    let (id, token, _) = s
        .blocking(move |s| Ok(s.auth.issue(&u2, "api", &b.label, None)?))
        .await?;
    tracing::info!(token = id, user = %user, by = %caller.user, "API token issued");
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"id": id, "user": user, "token": token,
            "note": "shown once: store it now; only its hash is kept"})),
    )
        .into_response())
}

pub async fn delete_token(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    if !s.blocking(move |s| Ok(s.auth.revoke(id)?)).await? {
        return Err(ApiError::not_found(format!("no token {id}")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
