//! The WebSocket transport: `GET /ws?token=JWT[&since=ID]`.
//!
//! The upgrade is refused with an HTTP error (and no socket) for a bad token (401), a malformed `since`
//! (400), or a full server (503). Accepted connections run in [`session`].

mod session;
pub(crate) mod socket;
pub mod topic_socket;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::domain::NotificationId;
use crate::error::ApiError;
use crate::state::AppState;
use crate::transport::http::extract::Query;
use crate::transport::live;

#[derive(Deserialize)]
pub struct WsParams {
    token: Option<String>,
    since: Option<String>,
}

/// The tungstenite read buffer. Its 128 KiB default would be most of an idle connection's cost; frames
/// larger than this are still read, in more steps.
const READ_BUFFER_BYTES: usize = 512;

pub async fn upgrade(
    State(state): State<AppState>,
    Query(params): Query<WsParams>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let user = live::user_of(&state, params.token.as_deref(), &headers, "a token is required: /ws?token=JWT").await?;
    let since = params
        .since
        .as_deref()
        .map(NotificationId::parse)
        .transpose()
        .map_err(|_| ApiError::InvalidQuery("since must be a notification id".into()))?;
    let upgrade =
        upgrade.map_err(|e| ApiError::invalid_request(format!("not a WebSocket upgrade: {}", e.body_text())))?;
    // Checked before the upgrade, so a user over a limit gets an HTTP answer.
    let permit = live::place_for(&state, &user)?;
    let ws = state.ws.clone();
    let tracked = state.connections.token();
    let response = upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(ws.write_buffer_bytes)
        .max_message_size(ws.max_frame_bytes)
        .max_frame_size(ws.max_frame_bytes)
        .on_upgrade(move |socket| session::run(socket, state, user, since, permit, tracked));
    Ok(response.into_response())
}
