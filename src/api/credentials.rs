//! Named camera credentials (admins only): register or replace one, list names, forget one.
//! Values go in and never come out: cameras refer to a credential by name (`credential`), and
//! the ingest reads it when the camera connects.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiJson, ApiPath};
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::config::secrets::{Credential, MAX_ID_CHARS, check_id, clip};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialBody {
    #[serde(default)]
    pub username: Option<String>,
    pub password: String,
}

pub async fn list(State(s): State<ApiState>) -> ApiResult<Response> {
    let rows = s.blocking(|s| Ok(s.credentials.list()?)).await?;
    let cams = s.server.cameras();
    let rows: Vec<_> = rows
        .into_iter()
        .map(|r| {
            let used_by: Vec<&str> = cams
                .iter()
                .filter(|c| c.credential.as_deref() == Some(r.name.as_str()))
                .map(|c| c.id.as_str())
                .collect();
            json!({
                "name": r.name,
                "has_username": r.has_username,
                "updated_ms": r.updated_ms,
                "updated_by": r.updated_by,
                "used_by": used_by,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "credentials": rows })).into_response())
}

pub async fn put(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(b): ApiJson<CredentialBody>,
) -> ApiResult<Response> {
    check_id(&name).map_err(|m| ApiError::invalid(format!("credential name: {m}")))?;
    let by = caller.user.clone();
    let n = name.clone();
    let added = s
        .blocking(move |s| {
            let c = Credential {
                username: b.username,
                password: b.password,
            };
            s.credentials.put(&n, &c, &by).map_err(|e| match e {
                crate::store::StoreError::Invalid(m) => ApiError::invalid(m),
                e => ApiError::from(e),
            })
        })
        .await?;
    tracing::info!(credential = %name, user = %caller.user, added, "camera credential registered");
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    // a camera using it picks the new values up when it next connects
    Ok((status, axum::Json(json!({"name": name}))).into_response())
}

pub async fn delete(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let users: Vec<String> = s
        .server
        .cameras()
        .into_iter()
        .filter(|c| c.credential.as_deref() == Some(name.as_str()))
        .map(|c| c.id)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "credential {name:?} is used by the cameras {}; change or remove them first",
            users.join(", ")
        )));
    }
    let n = name.clone();
    let removed = s.blocking(move |s| Ok(s.credentials.remove(&n)?)).await?;
    if !removed {
        return Err(ApiError::not_found(format!(
            "no credential {}",
            clip(&name, MAX_ID_CHARS)
        )));
    }
    tracing::info!(credential = %name, user = %caller.user, "camera credential removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}
