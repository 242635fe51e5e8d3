//! Operators' labels and the review queue.
//!
//! A label is an operator's verdict, "same person" or "not the same person", about a tracklet
//! and an identity (`confirm` / `reject`) or about two identities (`same` / `different`).
//! Labels are kept with who gave them and when; re-tuning uses them as must-link / cannot-link
//! constraints and the promotion gate as held-out evidence (docs/retuning.md). A `different`
//! (or a `reject` of a tracklet that belongs to another identity) also tells the gallery never
//! to merge the two identities on its own.
//!
//! The review queue lists the links worth asking about first (uncertain ones, then near-misses),
//! each with crops of both sides, so that the web UI can ask with one key per answer.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiJson, ApiPath, ApiQuery};
use super::{ApiError, ApiResult, ApiState, Caller};
use crate::server::Control;
use crate::store::{LabelKind, NewLabel};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelBody {
    /// `confirm`, `reject`, `same` or `different`.
    pub kind: String,
    /// The identity the tracklet is compared with, or the first of two identities.
    pub identity: i64,
    /// The tracklet (confirm / reject).
    pub tracklet: Option<i64>,
    /// The second identity (same / different).
    pub other: Option<i64>,
    #[serde(default)]
    pub note: String,
}

/// Checks a label request against the store and turns it into the label to record: 404 for
/// an identity or tracklet that does not exist, 422 for a request that cannot be a label.
fn resolve(st: &crate::store::Store, b: &LabelBody, user: &str) -> ApiResult<NewLabel> {
    let kind = match LabelKind::parse(&b.kind) {
        Some(
            k @ (LabelKind::Confirm | LabelKind::Reject | LabelKind::Same | LabelKind::Different),
        ) => k,
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "`kind` {:?} is recorded by the merge and split operations; here use confirm, reject, same or different",
                b.kind
            )));
        }
        None => {
            return Err(ApiError::invalid(format!(
                "`kind` must be confirm, reject (a tracklet vs an identity), same or different (two identities), not {:?}",
                b.kind
            )));
        }
    };
    if st.identity(b.identity)?.is_none() {
        return Err(ApiError::not_found(format!("no identity {}", b.identity)));
    }
    match kind {
        LabelKind::Confirm | LabelKind::Reject => {
            let Some(t) = b.tracklet else {
                return Err(ApiError::invalid(format!(
                    "a `{}` label needs `tracklet`: the tracklet that is or is not identity {}",
                    b.kind, b.identity
                )));
            };
            if b.other.is_some() {
                return Err(ApiError::invalid(
                    "`other` is for same / different labels; a confirm or reject names `tracklet`",
                ));
            }
            if st.tracklet_camera(t)?.is_none() {
                return Err(ApiError::not_found(format!("no tracklet {t}")));
            }
            let others: Vec<i64> = st
                .tracklets_of_identity(b.identity)?
                .into_iter()
                .filter(|&x| x != t)
                .collect();
            if others.is_empty() {
                return Err(ApiError::invalid(format!(
                    "identity {} has no sighting other than tracklet {t} to compare it with",
                    b.identity
                )));
            }
            // where the tracklet is now: a rejected tracklet of another identity makes the two
            // identities two people
            let now = st.identity_of(t)?.filter(|&i| i != b.identity);
            Ok(NewLabel {
                kind,
                identity: Some(b.identity),
                other: now,
                tracklet: Some(t),
                a: vec![t],
                b: others,
                actor: user.to_string(),
                note: b.note.clone(),
            })
        }
        _ => {
            let Some(o) = b.other else {
                return Err(ApiError::invalid(format!(
                    "a `{}` label needs `other`: the identity compared with identity {}",
                    b.kind, b.identity
                )));
            };
            if b.tracklet.is_some() {
                return Err(ApiError::invalid(
                    "`tracklet` is for confirm / reject labels; same or different name `other`",
                ));
            }
            if o == b.identity {
                return Err(ApiError::invalid(
                    "`identity` and `other` are the same identity: a label compares two",
                ));
            }
            if st.identity(o)?.is_none() {
                return Err(ApiError::not_found(format!("no identity {o}")));
            }
            let a = st.tracklets_of_identity(b.identity)?;
            let bb = st.tracklets_of_identity(o)?;
            if a.is_empty() || bb.is_empty() {
                return Err(ApiError::invalid(format!(
                    "identity {} has no sightings to label",
                    if a.is_empty() { b.identity } else { o }
                )));
            }
            Ok(NewLabel {
                kind,
                identity: Some(b.identity),
                other: Some(o),
                tracklet: None,
                a,
                b: bb,
                actor: user.to_string(),
                note: b.note.clone(),
            })
        }
    }
}

pub async fn create(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<LabelBody>,
) -> ApiResult<Response> {
    if b.note.len() > 500 {
        return Err(ApiError::invalid("`note` is at most 500 bytes"));
    }
    crate::config::secrets::check_text(&b.note, 500)
        .map_err(|m| ApiError::invalid(format!("`note`: {m}")))?;
    let user = caller.user.clone();
    let (id, label) = s
        .with_store(move |st| {
            let label = resolve(st, &b, &user)?;
            let id = st.add_label(&label)?;
            Ok((id, label))
        })
        .await?;
    // keep the gallery from merging two people on its own (the store remembers it across
    // restarts; this tells the running gallery now)
    let mut protected = false;
    if !label.kind.same()
        && let (Some(a), Some(o)) = (label.identity, label.other)
    {
        match s
            .control(move |reply| Control::MarkDifferent { a, b: o, reply })
            .await
        {
            Ok(p) => protected = p,
            Err(e) => tracing::warn!(
                label = id,
                "the gallery was not told of a different label: {}",
                e.detail
            ),
        }
    }
    tracing::info!(label = id, kind = label.kind.as_str(), identity = ?label.identity, other = ?label.other, tracklet = ?label.tracklet, user = %caller.user, "operator label");
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "id": id,
            "kind": label.kind,
            "same": label.kind.same(),
            "identity": label.identity,
            "other": label.other,
            "tracklet": label.tracklet,
            "a": label.a,
            "b": label.b,
            "user": caller.user,
            "note": label.note,
            "never_merged_automatically": protected,
        })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
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
    let rows = s.with_store(|st| Ok(st.labels()?)).await?;
    let same = rows.iter().filter(|r| r.same).count();
    let total = rows.len();
    let page: Vec<_> = rows
        .into_iter()
        .rev()
        .skip(q.offset.unwrap_or(0))
        .take(limit)
        .collect();
    Ok(axum::Json(json!({
        "labels": page,
        "total": total,
        "same": same,
        "different": total - same,
    }))
    .into_response())
}

pub async fn delete(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    let gone = s.with_store(move |st| Ok(st.delete_label(id)?)).await?;
    if !gone {
        return Err(ApiError::not_found(format!("no label {id}")));
    }
    tracing::info!(label = id, user = %caller.user, "label removed");
    Ok(axum::Json(json!({"deleted": id})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewQuery {
    /// 1–200, default 50.
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

/// The review queue: links to ask an operator about, most useful first, each with crops of the
/// tracklet and of the identity it was linked to.
pub async fn review(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<ReviewQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be from 1 to 200"));
    }
    let offset = q.offset.unwrap_or(0);
    let items = s
        .with_store(move |st| {
            let rows = st.review_candidates(limit, offset)?;
            let mut items = Vec::with_capacity(rows.len());
            for r in rows {
                let mine = st.best_crops_of_tracklet(r.tracklet, 3)?;
                let theirs: Vec<i64> = {
                    let mut cs: Vec<_> = st
                        .crops_of_identity(r.identity, 1)?
                        .into_iter()
                        .filter(|c| c.tracklet != r.tracklet)
                        .collect();
                    cs.sort_by(|a, b| b.quality.total_cmp(&a.quality));
                    cs.into_iter().take(3).map(|c| c.id).collect()
                };
                let url = |v: &[i64]| -> Vec<String> {
                    v.iter().map(|c| format!("/api/v1/crops/{c}")).collect()
                };
                items.push(json!({
                    "kind": if r.decision == crate::store::Decision::Uncertain { "uncertain" } else { "near_miss" },
                    "tracklet": r.tracklet,
                    "camera": r.camera,
                    "start_ms": r.start_ms,
                    "end_ms": r.end_ms,
                    "identity": r.identity,
                    "similarity": r.similarity,
                    "margin": r.margin,
                    "tracklet_crops": url(&mine),
                    "identity_crops": url(&theirs),
                }));
            }
            Ok(items)
        })
        .await?;
    Ok(axum::Json(json!({ "queue": items })).into_response())
}
