//! `GET /api/v1/users/{id}/presence` (publisher): whether a user is connected, on any node.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::extract::Publisher;
use crate::domain::UserId;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn presence(
    State(state): State<AppState>,
    _publisher: Publisher,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let user = UserId::parse(&id).map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let count = state.broker.presence(&user).await.map_err(|e| ApiError::BrokerUnavailable(e.to_string()))?;
    Ok(axum::Json(json!({
        "user_id": user,
        "online": count.connections > 0,
        "connections": count.connections,
        // Nodes that answered, of those asked (this one included): fewer means the count may be short.
        "nodes": count.nodes,
        "nodes_asked": count.nodes_asked,
    }))
    .into_response())
}
