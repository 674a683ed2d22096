//! The user's inbox over REST: page, count, mark read.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::extract::{AuthUser, Query};
use crate::domain::{Notification, NotificationId};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::ListQuery;

pub const MAX_LIMIT: u32 = 100;
/// Deep pages are refused rather than scanned (an offset walks every row before it): past this many rows,
/// reconnect the WebSocket with `since` instead.
pub const MAX_OFFSET: u64 = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    page: Option<u32>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    unread: Option<bool>,
}

#[derive(Serialize)]
struct PageBody {
    items: Vec<Notification>,
    page: u32,
    limit: u32,
    total: u64,
    unread_count: u64,
}

pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let page = params.page.unwrap_or(0);
    let limit = params.limit.unwrap_or(10);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    if u64::from(page) * u64::from(limit) > MAX_OFFSET {
        return Err(ApiError::InvalidQuery(format!("page × limit must be at most {MAX_OFFSET}")));
    }
    let query = ListQuery { page, limit, unread_only: params.unread.unwrap_or(false) };
    let result = state.store.list(&user.id, query).await?;
    let body = PageBody { items: result.items, page, limit, total: result.total, unread_count: result.unread_count };
    Ok(axum::Json(body).into_response())
}

pub async fn unread_count(State(state): State<AppState>, AuthUser(user): AuthUser) -> Result<Response, ApiError> {
    let unread_count = state.store.unread_count(&user.id).await?;
    Ok(axum::Json(serde_json::json!({ "unread_count": unread_count })).into_response())
}

pub async fn mark_read(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // An id that does not parse cannot name anything the user owns: the same 404 as an unknown id.
    let id = NotificationId::parse(&id).map_err(|_| ApiError::NotFound("no such notification"))?;
    let outcome = state.store.mark_read(&user.id, vec![id]).await?;
    let notification = outcome.found.into_iter().next().ok_or(ApiError::NotFound("no such notification"))?;
    Ok(axum::Json(notification).into_response())
}

pub async fn mark_all_read(State(state): State<AppState>, AuthUser(user): AuthUser) -> Result<Response, ApiError> {
    let updated = state.store.mark_all_read(&user.id).await?;
    Ok(axum::Json(serde_json::json!({ "updated": updated })).into_response())
}
