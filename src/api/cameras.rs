//! Cameras: list with state and counters, live snapshots (JPEG with boxes, or JSON with
//! identity labels), and run-time add / change / remove for integrators.

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::error::{ApiJson, ApiPath};
use super::{ApiError, ApiResult, ApiState, Caller, Role};
use crate::config::CameraSettings;
use crate::config::secrets::{MAX_ID_CHARS, clip};
use crate::ingest::camera::redact;

/// A camera as the API shows it: settings without secrets, plus its live status.
#[derive(Debug, Serialize)]
pub struct CameraView {
    pub id: String,
    pub name: String,
    /// The source URL with any password replaced by `***`.
    pub url: String,
    pub enabled: bool,
    pub fps: Option<u32>,
    pub realtime: bool,
    pub loop_file: bool,
    /// The registered credential the camera uses (its name; values are never shown).
    pub credential: Option<String>,
    /// Names of the environment variables holding credentials (never their values); shown to
    /// admins only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Where its settings come from: `config` (the config file), `api` (added or changed through
    /// the API; kept across restarts until the file's entry is edited) or `site` (an edge: the
    /// site's core assigned it).
    pub origin: &'static str,
    pub status: Option<crate::ingest::CameraStatus>,
}

fn view(s: &ApiState, c: &CameraSettings, caller: &Caller) -> CameraView {
    let admin = caller.role == Role::Admin;
    CameraView {
        id: c.id.clone(),
        name: c.name.clone().unwrap_or_else(|| c.id.clone()),
        url: redact(&c.url),
        enabled: c.enabled,
        fps: c.fps,
        realtime: c.realtime,
        loop_file: c.loop_file,
        credential: c.credential.clone(),
        username_env: c.username_env.clone().filter(|_| admin),
        password_env: c.password_env.clone().filter(|_| admin),
        origin: s.server.camera_origin(&c.id),
        status: s.server.ingest.camera_status(&c.id),
    }
}

fn find(s: &ApiState, id: &str) -> ApiResult<CameraSettings> {
    s.server
        .cameras()
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no camera {}", clip(id, MAX_ID_CHARS))))
}

pub async fn list(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    let cams: Vec<CameraView> = s
        .server
        .cameras()
        .iter()
        .map(|c| view(&s, c, &caller))
        .collect();
    Ok(axum::Json(json!({ "cameras": cams })).into_response())
}

pub async fn get(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let c = find(&s, &id)?;
    Ok(axum::Json(view(&s, &c, &caller)).into_response())
}

/// Parses and checks a camera from a request body; relative `file:` URLs are taken against the
/// config file's directory, as in the config.
fn parse_camera(s: &ApiState, mut body: Value, path_id: Option<&str>) -> ApiResult<CameraSettings> {
    let obj = body
        .as_object_mut()
        .ok_or_else(|| ApiError::invalid("expected a JSON object describing the camera"))?;
    if let Some(pid) = path_id {
        match obj.get("id") {
            None => {
                obj.insert("id".into(), Value::String(pid.to_string()));
            }
            Some(Value::String(b)) if b == pid => {}
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "`id` in the body ({}) differs from the id in the path ({}); a camera's id cannot change",
                    clip(&other.to_string(), MAX_ID_CHARS),
                    clip(pid, MAX_ID_CHARS)
                )));
            }
        }
    }
    // the daemon's environment is not the API's to name: cameras added or changed through the
    // API use credentials an admin registered
    for k in ["username_env", "password_env"] {
        if obj.contains_key(k) {
            return Err(ApiError::invalid(format!(
                "`{k}`: environment variables can only be named in the config file; through the API, \
                 give `credential`: the name of a credential an admin registered with PUT /api/v1/credentials/{{name}}"
            )));
        }
    }
    let mut c: CameraSettings = serde_path_to_error::deserialize(body)
        .map_err(|e| ApiError::invalid(format!("`{}`: {}", e.path(), e.inner())))?;
    let base = s
        .cfg
        .source
        .as_deref()
        .and_then(|p| p.parent())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    c.resolve(&base);
    // before any check that looks at the file: a path outside the media folders gets the same
    // answer whether or not it exists
    s.server
        .check_api_source(&c)
        .map_err(|m| ApiError::invalid(format!("`url`: {m}")))?;
    c.check(&s.cfg.ingest.env_policy())
        .map_err(|(k, m)| ApiError::invalid(format!("`{k}`: {m}")))?;
    Ok(c)
}

/// Refuses a camera naming a credential that is not registered.
fn check_credential(s: &ApiState, c: &CameraSettings) -> ApiResult<()> {
    if let Some(name) = &c.credential
        && !s.credentials.exists(name)?
    {
        return Err(ApiError::invalid(format!(
            "`credential`: no credential {name:?} is registered; an admin registers it with PUT /api/v1/credentials/{name}"
        )));
    }
    Ok(())
}

pub async fn create(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let c = parse_camera(&s, body, None)?;
    if s.server.cameras().iter().any(|x| x.id == c.id) {
        return Err(ApiError::conflict(format!(
            "camera {:?} exists; PUT /api/v1/cameras/{} changes it",
            c.id, c.id
        )));
    }
    let id = c.id.clone();
    let user = caller.user.clone();
    s.blocking(move |s| {
        check_credential(s, &c)?;
        s.server
            .put_camera(c, &user)
            .map_err(|e| ApiError::invalid(format!("{e:#}")))
    })
    .await?;
    tracing::info!(camera = %id, user = %caller.user, "camera added through the API");
    let c = find(&s, &id)?;
    Ok((StatusCode::CREATED, axum::Json(view(&s, &c, &caller))).into_response())
}

pub async fn put(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let c = parse_camera(&s, body, Some(&id))?;
    let user = caller.user.clone();
    let added = s
        .blocking(move |s| {
            check_credential(s, &c)?;
            s.server
                .put_camera(c, &user)
                .map_err(|e| ApiError::invalid(format!("{e:#}")))
        })
        .await?;
    tracing::info!(camera = %id, user = %caller.user, added, "camera set through the API");
    let c = find(&s, &id)?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(view(&s, &c, &caller))).into_response())
}

pub async fn delete(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    if s.server.camera_assigned(&id) {
        return Err(ApiError::conflict(format!(
            "camera {} was assigned to this edge by the site's core; remove it at the core",
            clip(&id, MAX_ID_CHARS)
        )));
    }
    let (id2, user) = (id.clone(), caller.user.clone());
    let removed = s
        .blocking(move |s| {
            s.server
                .remove_camera(&id2, &user)
                .map_err(ApiError::internal)
        })
        .await?;
    if !removed {
        return Err(ApiError::not_found(format!(
            "no camera {}",
            clip(&id, MAX_ID_CHARS)
        )));
    }
    tracing::info!(camera = %id, user = %caller.user, "camera removed through the API");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveQuery {
    /// Also return the frame itself (`frame_jpeg`, base64 JPEG without boxes), so that a client
    /// draws the boxes on the very frame they belong to.
    #[serde(default)]
    pub frame: bool,
}

pub async fn live(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    super::error::ApiQuery(q): super::error::ApiQuery<LiveQuery>,
) -> ApiResult<Response> {
    find(&s, &id)?;
    let v =
        s.server.live.view(&id).ok_or_else(|| {
            ApiError::unavailable(format!("camera {id:?} has no analysed frame yet"))
        })?;
    let mut body = json!({
        "camera": id,
        "t_ms": v.t_ms,
        "width": v.frame.width,
        "height": v.frame.height,
        "boxes": v.boxes,
    });
    if q.frame {
        let frame = v.frame.clone();
        let jpeg = s.blocking(move |_| jpeg(&frame.to_image())).await?;
        body["frame_jpeg"] = json!(base64(&jpeg));
    }
    Ok(axum::Json(body).into_response())
}

fn jpeg(img: &image::RgbImage) -> ApiResult<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(img)
        .map_err(ApiError::internal)?;
    Ok(out)
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= c.len() {
                out.push(A[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Colour of an identity's boxes (unlabelled tracks are grey); the web UI draws the same.
pub fn colour(identity: Option<i64>) -> [u8; 3] {
    crate::plot::identity_colour(identity)
}

fn draw_rect(img: &mut image::RgbImage, b: [f32; 4], c: [u8; 3], thick: u32) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    if w == 0 || h == 0 {
        return;
    }
    let cl = |v: f32, m: i64| (v.round() as i64).clamp(0, m - 1);
    let (x1, y1, x2, y2) = (cl(b[0], w), cl(b[1], h), cl(b[2], w), cl(b[3], h));
    for t in 0..thick as i64 {
        for x in x1..=x2 {
            for y in [y1 + t, y2 - t] {
                if (0..h).contains(&y) {
                    img.put_pixel(x as u32, y as u32, image::Rgb(c));
                }
            }
        }
        for y in y1..=y2 {
            for x in [x1 + t, x2 - t] {
                if (0..w).contains(&x) {
                    img.put_pixel(x as u32, y as u32, image::Rgb(c));
                }
            }
        }
    }
}

pub async fn snapshot(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    find(&s, &id)?;
    let v =
        s.server.live.view(&id).ok_or_else(|| {
            ApiError::unavailable(format!("camera {id:?} has no analysed frame yet"))
        })?;
    let jpeg = s
        .blocking(move |_| {
            let mut img = v.frame.to_image();
            for b in &v.boxes {
                draw_rect(&mut img, b.bbox, colour(b.identity), 2);
            }
            jpeg(&img)
        })
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar\xff"), "Zm9vYmFy/w==");
    }
}
