//! Identities: list and filter, detail with crops per camera, timelines, search by image,
//! operator merge / split, and the audit trail.

use axum::Extension;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiBytes, ApiJson, ApiPath, ApiQuery};
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::report::{TimelineOptions, timeline_svg};
use crate::server::Control;
use crate::store::IdentityFilter;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only identities seen by this camera.
    pub camera: Option<String>,
    /// Only identities seen at or after this time (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Only identities seen at or before this time.
    pub until_ms: Option<i64>,
    #[serde(default)]
    pub include_retired: bool,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

pub async fn list(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be from 1 to 1000"));
    }
    let f = IdentityFilter {
        id: None,
        camera: q.camera,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        include_retired: q.include_retired,
        limit,
        offset: q.offset.unwrap_or(0),
    };
    let (rows, thumbs, total) = s
        .with_store(move |st| {
            let (rows, total) = st.identities_filtered(&f)?;
            let thumbs = rows
                .iter()
                .map(|r| best_crop(st, r.id))
                .collect::<ApiResult<Vec<_>>>()?;
            Ok((rows, thumbs, total))
        })
        .await?;
    // each identity with the URL of its best crop (`thumbnail`, none before its first crop)
    let identities: Vec<serde_json::Value> = rows
        .iter()
        .zip(thumbs)
        .map(|(r, t)| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["thumbnail"] = json!(t.map(|c| format!("/api/v1/crops/{}", c.id)));
            v
        })
        .collect();
    Ok(axum::Json(json!({ "identities": identities, "total": total })).into_response())
}

/// The identity's crop of the best quality (none when it has none stored).
fn best_crop(st: &crate::store::Store, id: i64) -> ApiResult<Option<crate::store::CropRef>> {
    Ok(st
        .crops_of_identity(id, 1)?
        .into_iter()
        .max_by(|a, b| a.quality.total_cmp(&b.quality)))
}

pub async fn get(State(s): State<ApiState>, ApiPath(id): ApiPath<i64>) -> ApiResult<Response> {
    let (row, sightings, crops) = s
        .with_store(move |st| {
            let row = st
                .identity(id)?
                .ok_or_else(|| ApiError::not_found(format!("no identity {id}")))?;
            Ok((row, st.sightings_of(id)?, st.crops_of_identity(id, 4)?))
        })
        .await?;
    let mut cameras: Vec<serde_json::Value> = Vec::new();
    let mut names: Vec<&str> = sightings.iter().map(|x| x.camera.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for cam in names {
        let cs: Vec<_> = crops
            .iter()
            .filter(|c| c.camera == cam)
            .map(|c| json!({"id": c.id, "tracklet": c.tracklet, "quality": c.quality, "url": format!("/api/v1/crops/{}", c.id)}))
            .collect();
        let seen: Vec<_> = sightings.iter().filter(|x| x.camera == cam).collect();
        cameras.push(json!({
            "camera": cam,
            "first_ms": seen.iter().map(|x| x.start_ms).min(),
            "last_ms": seen.iter().map(|x| x.end_ms).max(),
            "sightings": seen.len(),
            "crops": cs,
        }));
    }
    Ok(
        axum::Json(json!({ "identity": row, "cameras": cameras, "sightings": sightings }))
            .into_response(),
    )
}

pub async fn timeline(State(s): State<ApiState>, ApiPath(id): ApiPath<i64>) -> ApiResult<Response> {
    let sightings = sightings_of(&s, id).await?;
    let steps: Vec<_> = sightings
        .iter()
        .map(|x| json!({"camera": x.camera, "start_ms": x.start_ms, "end_ms": x.end_ms, "tracklet": x.tracklet, "decision": x.decision, "similarity": x.similarity}))
        .collect();
    Ok(axum::Json(json!({ "identity": id, "timeline": steps })).into_response())
}

/// An identity's sightings; 404 when there is no such identity.
async fn sightings_of(s: &ApiState, id: i64) -> ApiResult<Vec<crate::store::SightingRow>> {
    s.with_store(move |st| {
        st.identity(id)?
            .ok_or_else(|| ApiError::not_found(format!("no identity {id}")))?;
        Ok(st.sightings_of(id)?)
    })
    .await
}

fn svg(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

pub async fn timeline_svg_one(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    let sightings = sightings_of(&s, id).await?;
    Ok(svg(timeline_svg(
        &sightings,
        &site_cameras(&s, TimelineOptions::default()),
        &format!("identity {id}: sightings by camera"),
    )))
}

/// Timeline options with the site's cameras (their colours and names).
fn site_cameras(s: &ApiState, opts: TimelineOptions) -> TimelineOptions {
    let cams = s.server.cameras();
    TimelineOptions {
        cameras: cams.iter().map(|c| c.id.clone()).collect(),
        names: cams
            .into_iter()
            .map(|c| (c.id.clone(), c.name.unwrap_or(c.id)))
            .collect(),
        ..opts
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteTimelineQuery {
    pub since_ms: Option<i64>,
    /// Only identities seen by at least this many cameras.
    pub min_cameras: Option<usize>,
    pub max_rows: Option<usize>,
    /// Show wall-clock times at this offset from UTC, in minutes (default 0: UTC).
    pub utc_offset_min: Option<i32>,
}

pub async fn site_timeline_svg(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<SiteTimelineQuery>,
) -> ApiResult<Response> {
    let since = q.since_ms.unwrap_or(i64::MIN);
    let sightings = s
        .with_store(move |st| {
            Ok(st
                .sightings()?
                .into_iter()
                .filter(|x| x.end_ms >= since)
                .collect::<Vec<_>>())
        })
        .await?;
    let opts = site_cameras(
        &s,
        TimelineOptions {
            min_cameras: q.min_cameras.unwrap_or(1).max(1),
            max_rows: q.max_rows.unwrap_or(40).clamp(1, 500),
            utc_offset_min: q.utc_offset_min.unwrap_or(0).clamp(-14 * 60, 14 * 60),
            ..TimelineOptions::default()
        },
    );
    Ok(svg(timeline_svg(&sightings, &opts, "who went where, when")))
}

pub async fn crop(State(s): State<ApiState>, ApiPath(id): ApiPath<i64>) -> ApiResult<Response> {
    let bytes = s
        .with_store(move |st| {
            let p = st
                .crop_data(id)?
                .ok_or_else(|| ApiError::not_found(format!("no crop {id}")))?;
            p.read().map_err(|_| {
                ApiError::not_found(format!("crop {id}: its file is gone (crop retention)"))
            })
        })
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=86400"),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    /// The identity that becomes part of the one in the path.
    pub absorb: i64,
    #[serde(default)]
    pub reason: String,
}

pub async fn merge(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(keep): ApiPath<i64>,
    ApiJson(b): ApiJson<MergeBody>,
) -> ApiResult<Response> {
    check_reason(&b.reason)?;
    let user = caller.user.clone();
    s.control(move |reply| Control::Merge {
        keep,
        absorb: b.absorb,
        operator: user,
        reason: b.reason,
        reply,
    })
    .await?;
    tracing::info!(kept = keep, absorbed = b.absorb, user = %caller.user, "operator merge");
    Ok(axum::Json(json!({"kept": keep, "absorbed": b.absorb})).into_response())
}

fn check_reason(r: &str) -> ApiResult<()> {
    if r.len() > 500 {
        return Err(ApiError::invalid("`reason` is at most 500 bytes"));
    }
    crate::config::secrets::check_text(r, 500)
        .map_err(|m| ApiError::invalid(format!("`reason`: {m}")))
}

/// Decodes an uploaded JPEG or PNG, refusing (413) a picture of more than `max_pixels` from its
/// header's dimensions, before any pixel memory is allocated; the decoder's own allocation is
/// capped too, for files whose header undersells them.
pub fn decode_upload(body: &[u8], max_pixels: u64) -> ApiResult<image::RgbImage> {
    let bad = |e: &dyn std::fmt::Display| {
        ApiError::invalid(format!("the upload is not a JPEG or PNG picture: {e}"))
    };
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(body))
            .with_guessed_format()
            .map_err(|e| bad(&e))
    };
    let (w, h) = reader()?.into_dimensions().map_err(|e| bad(&e))?;
    let pixels = w as u64 * h as u64;
    if pixels > max_pixels {
        return Err(ApiError::too_large(format!(
            "the picture is {w}×{h} = {:.1} Mpx; at most {:.1} Mpx are accepted ([api] max_image_pixels): send a smaller picture (a crop of one person works best)",
            pixels as f64 / 1e6,
            max_pixels as f64 / 1e6
        )));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    // the decoded picture (at most 4 bytes a pixel, 16-bit channels twice that) and the RGB copy
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    let mut r = reader()?;
    r.limits(limits);
    Ok(r.decode().map_err(|e| bad(&e))?.to_rgb8())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitBody {
    /// Tracklet ids (from the identity's sightings) that become a new identity.
    pub tracklets: Vec<i64>,
    #[serde(default)]
    pub reason: String,
}

pub async fn split(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(identity): ApiPath<i64>,
    ApiJson(b): ApiJson<SplitBody>,
) -> ApiResult<Response> {
    check_reason(&b.reason)?;
    if b.tracklets.is_empty() || b.tracklets.len() > 10_000 {
        return Err(ApiError::invalid(
            "pick at least one sighting to split off (`tracklets` lists 1 to 10000 tracklet ids)",
        ));
    }
    let user = caller.user.clone();
    let to = s
        .control(move |reply| Control::Split {
            identity,
            tracklets: b.tracklets,
            operator: user,
            reason: b.reason,
            reply,
        })
        .await?;
    tracing::info!(from = identity, to, user = %caller.user, "operator split");
    Ok(axum::Json(json!({"from": identity, "to": to})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// How many identities to return (1–50, default 10).
    pub k: Option<usize>,
}

pub async fn search(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<SearchQuery>,
    headers: axum::http::HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Response> {
    let k = q.k.unwrap_or(10);
    if !(1..=50).contains(&k) {
        return Err(ApiError::bad_request("`k` must be from 1 to 50"));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("image/") && ct != "application/octet-stream" {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "upload the person's picture as the body, with Content-Type image/jpeg or image/png",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty: upload a JPEG or PNG picture",
        ));
    }
    let max_pixels = s.cfg.api.max_image_pixels;
    let descriptor = s
        .blocking(move |s| {
            let img = decode_upload(&body, max_pixels)?;
            if img.width() < 8 || img.height() < 16 {
                return Err(ApiError::invalid(
                    "the picture is too small (at least 8×16 pixels)",
                ));
            }
            // the serving model: its embeddings are the ones the gallery holds
            let e = s
                .server
                .embedder
                .current()
                .embed_images(&[img])
                .map_err(|e| ApiError::internal(format!("{e:#}")))?;
            Ok(e.row(0).to_vec())
        })
        .await?;
    let hits = s
        .control(move |reply| Control::Search {
            descriptor,
            k,
            reply,
        })
        .await?;
    let ids: Vec<i64> = hits.iter().map(|h| h.0).collect();
    let crops = s
        .with_store(move |st| {
            let mut v = Vec::new();
            for id in ids {
                v.push((best_crop(st, id)?, st.identity(id)?));
            }
            Ok(v)
        })
        .await?;
    let cal = Calibration::of(&s.server.linking());
    let matches: Vec<_> = hits
        .iter()
        .zip(crops)
        .map(|((id, sim), (c, row))| {
            json!({
                "identity": id,
                "similarity": sim,
                "band": cal.band(*sim),
                "crop": c.as_ref().map(|c| format!("/api/v1/crops/{}", c.id)),
                // where the crop was taken, and where and when the identity was last seen
                "crop_camera": c.map(|c| c.camera),
                "cameras": row.as_ref().map(|r| r.cameras.clone()).unwrap_or_default(),
                "last_seen_ms": row.map(|r| r.last_seen_ms),
            })
        })
        .collect();
    Ok(axum::Json(json!({ "matches": matches, "calibration": cal })).into_response())
}

/// How a search similarity compares with the serving embedder's linking calibration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Calibration {
    /// At or above: `likely` the same person (the linker links a tracklet this similar).
    pub likely_from: f32,
    /// At or above (and below `likely_from`): `possible`; below: `unlikely`.
    pub possible_from: f32,
    /// Where the threshold came from: `manifest` (the embedder's calibration), `config`,
    /// `default`.
    pub origin: crate::config::LinkingOrigin,
}

/// How far below the linking threshold a match is still `possible`.
const POSSIBLE_BELOW: f32 = 0.05;

impl Calibration {
    fn of(l: &crate::config::LinkingSettings) -> Calibration {
        Calibration {
            likely_from: l.threshold,
            possible_from: l.threshold - POSSIBLE_BELOW,
            origin: l.origin,
        }
    }

    fn band(&self, similarity: f32) -> &'static str {
        if similarity >= self.likely_from {
            "likely"
        } else if similarity >= self.possible_from {
            "possible"
        } else {
            "unlikely"
        }
    }
}

pub async fn audit(State(s): State<ApiState>) -> ApiResult<Response> {
    let rows = s.with_store(|st| Ok(st.audit()?)).await?;
    Ok(axum::Json(json!({ "audit": rows })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG whose header says `w`×`h`, with one short IDAT chunk: enough for a decoder to
    /// read the dimensions (decoding its pixels would fail, so a refusal must come first).
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            let mut body = kind.to_vec();
            body.extend(data);
            out.extend((data.len() as u32).to_be_bytes());
            out.extend(&body);
            out.extend(crc32(&body).to_be_bytes());
        };
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        chunk(b"IHDR", &ihdr);
        chunk(b"IDAT", &[0x78, 0x9c, 0, 0, 0]);
        chunk(b"IEND", &[]);
        out
    }

    fn crc32(b: &[u8]) -> u32 {
        let mut c = !0u32;
        for &x in b {
            c ^= x as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[test]
    fn a_huge_picture_is_refused_from_its_header() {
        let e = decode_upload(&png_header(13_000, 13_000), 16_000_000).unwrap_err();
        assert_eq!(e.status.as_u16(), 413, "{}", e.detail);
        assert!(
            e.detail.contains("13000×13000") && e.detail.contains("max_image_pixels"),
            "{}",
            e.detail
        );
        // a small real picture decodes
        let mut png = Vec::new();
        image::RgbImage::new(32, 64)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let img = decode_upload(&png, 16_000_000).unwrap();
        assert_eq!((img.width(), img.height()), (32, 64));
        assert_eq!(decode_upload(&png, 100).unwrap_err().status.as_u16(), 413);
        assert_eq!(
            decode_upload(b"not a picture", 100)
                .unwrap_err()
                .status
                .as_u16(),
            422
        );
    }
}
