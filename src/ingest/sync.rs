//! `POST /api/v1/sync/users/{id}` (publishers): re-syncs one user now, from the user document in the body
//! (as `update_user_request` does: the profile fields set, a missing user created), into the graph and the
//! user directory. The document's id must be the path's. Without a graph database configured, 503
//! `sync_disabled`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;
use crate::transport::http::extract::{Json, Publisher};
use crate::workers::sync::user::Profile;
use crate::workers::sync::{Operation, SyncError};

pub async fn resync(
    State(state): State<AppState>,
    _: Publisher,
    Path(id): Path<String>,
    Json(doc): Json<Value>,
) -> Result<Response, ApiError> {
    let sync = state.sync.as_deref().ok_or(ApiError::SyncDisabled)?;
    let profile = Profile::read(&doc, sync.fields()).map_err(ApiError::invalid_request)?;
    if profile.user_id != id {
        return Err(ApiError::invalid_request(format!(
            "the document's id {:?} is not the path's {id:?}",
            profile.user_id
        )));
    }
    match sync.apply(Operation::Update, &doc).await {
        Ok(written) => Ok(axum::Json(json!({"user_id": id, "result": written.as_str()})).into_response()),
        Err(SyncError::Malformed(message)) => Err(ApiError::invalid_request(message)),
        Err(SyncError::Directory(e)) => Err(ApiError::Store(e)),
        Err(SyncError::Graph(e)) => Err(ApiError::GraphUnavailable(e.to_string())),
    }
}
