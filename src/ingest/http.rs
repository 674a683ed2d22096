//! The publish API: `POST /api/v1/notifications` and its batch form.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::{NewNotification, Notification, NotificationInput};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::InsertOutcome;
use crate::transport::http::extract::{parse_json, Json, Publisher};

pub const MAX_BATCH: usize = 1000;

pub async fn publish(
    State(state): State<AppState>,
    _: Publisher,
    Json(input): Json<NotificationInput>,
) -> Result<Response, ApiError> {
    let received_at = Instant::now();
    let item = NewNotification::parse(input, received_at).map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let mut outcomes = state.store.insert(vec![item]).await?;
    let outcome =
        outcomes.pop().ok_or_else(|| ApiError::Store(crate::store::StoreError::Internal("no outcome".into())))?;
    let status = match outcome {
        InsertOutcome::Created(_) => StatusCode::CREATED,
        InsertOutcome::Existing(_) => StatusCode::OK,
    };
    Ok((status, axum::Json(outcome.notification())).into_response())
}

/// The batch body. Items stay raw until each is checked, so an error can name the item's index.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    notifications: Vec<Box<RawValue>>,
}

#[derive(Serialize)]
struct BatchBody<'a> {
    items: Vec<&'a Notification>,
}

pub async fn publish_batch(
    State(state): State<AppState>,
    _: Publisher,
    Json(input): Json<BatchInput>,
) -> Result<Response, ApiError> {
    let received_at = Instant::now();
    let count = input.notifications.len();
    if count > MAX_BATCH {
        return Err(ApiError::BatchTooLarge { max: MAX_BATCH, got: count });
    }
    if count == 0 {
        return Err(ApiError::invalid_request("notifications must hold at least one notification"));
    }
    // Everything is validated before anything is stored: one bad item refuses the whole batch.
    let mut items = Vec::with_capacity(count);
    for (index, raw) in input.notifications.iter().enumerate() {
        let at_index = |message: String| ApiError::InvalidRequest {
            message: format!("notifications[{index}]: {message}"),
            index: Some(index),
        };
        let parsed: NotificationInput = parse_json(raw.get().as_bytes()).map_err(|e| at_index(e.to_string()))?;
        items.push(NewNotification::parse(parsed, received_at).map_err(|e| at_index(e.to_string()))?);
    }
    let outcomes = state.store.insert(items).await?;
    let body = BatchBody { items: outcomes.iter().map(InsertOutcome::notification).collect() };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}
