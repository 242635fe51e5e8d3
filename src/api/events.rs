//! `GET /api/v1/events`: the event stream over a WebSocket, one JSON text message per event,
//! optionally only some cameras' (`?camera=a,b`) or some types (`?types=identity_created,…`).
//! A client that falls more than the bus's buffer behind gets `{"type":"lost","count":N}`
//! instead of the events it missed, so it knows to reload.

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiQuery;
use super::{ApiError, ApiResult, ApiState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Comma-separated camera ids (events about other cameras are left out; events about no
    /// camera — merges, jobs — always come).
    pub camera: Option<String>,
    /// Comma-separated event types.
    pub types: Option<String>,
}

fn list(s: &Option<String>) -> Option<Vec<String>> {
    s.as_ref().map(|v| {
        v.split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    })
}

pub async fn events(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let cameras = list(&q.camera);
    let types = list(&q.types);
    if let Some(t) = &types
        && let Some(bad) = t
            .iter()
            .find(|t| !crate::events::Event::KINDS.contains(&t.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown event type {bad:?}; known: {}",
            crate::events::Event::KINDS.join(", ")
        )));
    }
    // subscribe before the upgrade completes: nothing published after this answer is missed
    let rx = s.server.events.subscribe();
    let closing = s.closing.subscribe();
    s.http.ws_open(1);
    let st = s.clone();
    Ok(ws
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            run(socket, rx, closing, cameras, types).await;
            st.http.ws_open(-1);
        }))
}

async fn run(
    socket: WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<crate::events::Event>,
    mut closing: tokio::sync::watch::Receiver<bool>,
    cameras: Option<Vec<String>>,
    types: Option<Vec<String>>,
) {
    let (mut tx, mut incoming) = socket.split();
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(e) => {
                    if let (Some(cams), Some(c)) = (&cameras, e.camera())
                        && !cams.iter().any(|x| x == c)
                    {
                        continue;
                    }
                    if let Some(t) = &types
                        && !t.iter().any(|x| x == e.kind())
                    {
                        continue;
                    }
                    let Ok(text) = serde_json::to_string(&e) else { continue };
                    if tx.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    let msg = serde_json::json!({"type": "lost", "count": n}).to_string();
                    if tx.send(Message::Text(msg.into())).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Closed) => break,
            },
            m = incoming.next() => match m {
                // pings are answered by the library; anything else from the client is ignored
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = async { let _ = closing.wait_for(|c| *c).await; } => {
                let _ = tx.send(Message::Close(None)).await;
                break;
            }
        }
    }
}
