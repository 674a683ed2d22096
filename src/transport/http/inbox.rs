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
/// page with the cursor (`before`), or reconnect the WebSocket with `since`.
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
    /// The cursor: the page after the one that ended with this id (`next_before`).
    #[serde(default)]
    before: Option<String>,
}

#[derive(Serialize)]
struct PageBody {
    items: Vec<Notification>,
    /// Only with offset paging.
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<u32>,
    limit: u32,
    total: u64,
    unread_count: u64,
    /// The cursor of the next page (its `before`): the last id of this one, or null when no page follows.
    next_before: Option<NotificationId>,
}

/// `GET /api/v1/notifications`: newest first, by cursor (`before`, which does not shift while notifications
/// arrive) or by offset (`page`, kept for compatibility); not both.
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let limit = params.limit.unwrap_or(10);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let before = params
        .before
        .as_deref()
        .map(NotificationId::parse)
        .transpose()
        .map_err(|_| ApiError::InvalidQuery("before must be a notification id".into()))?;
    if before.is_some() && params.page.is_some() {
        return Err(ApiError::InvalidQuery("page and before cannot be combined: use one way of paging".into()));
    }
    let page = params.page.unwrap_or(0);
    if u64::from(page) * u64::from(limit) > MAX_OFFSET {
        return Err(ApiError::InvalidQuery(format!("page × limit must be at most {MAX_OFFSET}; page with before")));
    }
    let query = ListQuery { page, limit, unread_only: params.unread.unwrap_or(false), before };
    let result = state.store.list(&user.id, query).await?;
    let next_before = if result.more { result.items.last().map(|n| n.id) } else { None };
    let body = PageBody {
        page: before.is_none().then_some(page),
        limit,
        total: result.total,
        unread_count: result.unread_count,
        next_before,
        items: result.items,
    };
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
    let outcome = state.mark_read(&user.id, vec![id]).await?;
    let notification = outcome.found.into_iter().next().ok_or(ApiError::NotFound("no such notification"))?;
    Ok(axum::Json(notification).into_response())
}

pub async fn mark_all_read(State(state): State<AppState>, AuthUser(user): AuthUser) -> Result<Response, ApiError> {
    let updated = state.mark_all_read(&user.id).await?;
    Ok(axum::Json(serde_json::json!({ "updated": updated })).into_response())
}
