//! The floor's HTTP API: Herald's publish endpoints in the same shape (no API key checked,
//! nothing stored), the assumed topic endpoint, and health.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::encode;
use super::Floor;

/// Herald's limit on one batch.
const MAX_BATCH: usize = 1000;

/// The body of `POST /api/v1/notifications`, and of each batch item. `idempotency_key`, like
/// any other field, is accepted and ignored: the floor stores nothing to compare it with.
#[derive(Deserialize)]
pub struct NewNotification<'a> {
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub title: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub message: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
}

impl NewNotification<'_> {
    fn validate(&self, index: Option<usize>) -> Result<(), ApiError> {
        let invalid = |message: &str| ApiError::Invalid { index, message: message.to_owned() };
        if self.user_id.is_empty() {
            return Err(invalid("user_id must not be empty"));
        }
        if self.kind.is_empty() {
            return Err(invalid("type must not be empty"));
        }
        if self.data.is_some_and(|d| !d.get().starts_with('{')) {
            return Err(invalid("data must be an object"));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    notifications: Vec<NewNotification<'a>>,
}

/// The body of `POST /api/v1/topics/{name}/events`.
#[derive(Deserialize)]
pub struct NewEvent<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
}

/// Every way a floor request can fail, and the one place that maps each to its status and
/// code, in Herald's `{"error":{"code","message"}}` shape.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON: {0}")]
    BadJson(String),
    #[error("{}{message}", index.map(|i| format!("notifications[{i}]: ")).unwrap_or_default())]
    Invalid { index: Option<usize>, message: String },
    #[error("a batch holds at most {MAX_BATCH} notifications (got {0})")]
    BatchTooLarge(usize),
    #[error("missing token")]
    Unauthorized,
    #[error("the server is at its connection limit")]
    AtCapacity,
    #[error("ids exhausted for this millisecond")]
    IdsExhausted,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::BatchTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::AtCapacity => (StatusCode::SERVICE_UNAVAILABLE, "at_capacity"),
            ApiError::IdsExhausted => (StatusCode::SERVICE_UNAVAILABLE, "ids_exhausted"),
        };
        json(status, encode::error(code, &self.to_string()))
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

fn bad_json(e: serde_json::Error) -> ApiError {
    ApiError::BadJson(e.to_string())
}

pub async fn publish(State(floor): State<Arc<Floor>>, body: Bytes) -> Result<Response, ApiError> {
    let created = publish_body(&floor, &body)?;
    Ok(json(StatusCode::CREATED, created.as_str().to_owned()))
}

/// What `POST /api/v1/notifications` does with its body, and the AMQP consumer with each
/// message: parse, validate, assign the id and push. Returns the notification's JSON.
pub fn publish_body(floor: &Floor, body: &[u8]) -> Result<Utf8Bytes, ApiError> {
    let new: NewNotification = serde_json::from_slice(body).map_err(bad_json)?;
    new.validate(None)?;
    floor.publish_notification(&new)
}

/// Validated as a whole first, as Herald does: one bad item and nothing is published.
pub async fn publish_batch(State(floor): State<Arc<Floor>>, body: Bytes) -> Result<Response, ApiError> {
    let batch: Batch = serde_json::from_slice(&body).map_err(bad_json)?;
    if batch.notifications.len() > MAX_BATCH {
        return Err(ApiError::BatchTooLarge(batch.notifications.len()));
    }
    for (index, new) in batch.notifications.iter().enumerate() {
        new.validate(Some(index))?;
    }
    let created =
        batch.notifications.iter().map(|new| floor.publish_notification(new)).collect::<Result<Vec<_>, _>>()?;
    Ok(json(StatusCode::CREATED, encode::items(created.iter().map(Utf8Bytes::as_str))))
}

pub async fn publish_event(
    State(floor): State<Arc<Floor>>,
    Path(topic): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !crate::topic::is_valid(&topic) {
        return Err(ApiError::Invalid { index: None, message: "a topic is namespace:id (e.g. order:42)".to_owned() });
    }
    let new: NewEvent = serde_json::from_slice(&body).map_err(bad_json)?;
    if new.kind.is_empty() {
        return Err(ApiError::Invalid { index: None, message: "type must not be empty".to_owned() });
    }
    let created = floor.publish_event(&topic, &new)?;
    Ok(json(StatusCode::CREATED, created.as_str().to_owned()))
}

pub async fn health(State(floor): State<Arc<Floor>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "server": "herald-bench floor",
        "connections": { "total": floor.open_connections(), "users": floor.registry.connected_users() },
    });
    json(StatusCode::OK, body.to_string())
}
