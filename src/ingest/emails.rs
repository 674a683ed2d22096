//! `POST /api/v1/emails` and `GET /api/v1/emails/{id}` (publishers): a request for the email channel,
//! `{"type","data","to"?,"idempotency_key"?}` → 202 `{"id","status":"queued",…}` once it is stored (200 with
//! the original for a known idempotency key); its status afterwards (for a notification's email, with its
//! `user_id`, `notification_id` and, once `cancelled`, the `cancel_reason`). A request that can never be sent is
//! refused with 422 and a code (`unknown_email_type`, `missing_variable`, `invalid_recipient`), and nothing
//! is stored. Without an SMTP server configured, 503 `email_disabled`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::Timestamp;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::emails::{EmailRecord, Enqueued};
use crate::transport::http::extract::{Json, Publisher};
use crate::workers::email::{EmailChannel, EmailInput, SubmitError};

/// An email's status, as the API shows it.
#[derive(Serialize)]
pub struct EmailStatusBody<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    to: &'a str,
    status: &'static str,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_at: Option<Timestamp>,
    created_at: Timestamp,
    message_id: &'a str,
    /// A notification's email: whose, and which notification.
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notification_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_reason: Option<&'a str>,
}

impl<'a> From<&'a EmailRecord> for EmailStatusBody<'a> {
    fn from(r: &'a EmailRecord) -> Self {
        Self {
            id: &r.id,
            kind: &r.kind,
            to: &r.to,
            status: r.status.as_str(),
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_error: r.last_error.as_deref(),
            sent_at: r.sent_at,
            created_at: r.created_at,
            message_id: &r.message_id,
            user_id: r.user_id.as_deref(),
            notification_id: r.notification_id.as_deref(),
            cancel_reason: r.cancel_reason.as_deref(),
        }
    }
}

fn channel(state: &AppState) -> Result<&EmailChannel, ApiError> {
    state.email.as_deref().ok_or(ApiError::EmailDisabled)
}

pub async fn submit(
    State(state): State<AppState>,
    _: Publisher,
    Json(input): Json<EmailInput>,
) -> Result<Response, ApiError> {
    let enqueued = channel(&state)?.submit(input).await.map_err(|e| match e {
        SubmitError::Request(e) => ApiError::InvalidEmail { code: e.code(), message: e.to_string() },
        SubmitError::Store(e) => ApiError::Store(e),
    })?;
    let status = match enqueued {
        Enqueued::Created(_) => StatusCode::ACCEPTED,
        Enqueued::Existing(_) => StatusCode::OK,
    };
    Ok((status, axum::Json(EmailStatusBody::from(enqueued.record()))).into_response())
}

pub async fn status(State(state): State<AppState>, _: Publisher, Path(id): Path<String>) -> Result<Response, ApiError> {
    let channel = channel(&state)?;
    if ulid::Ulid::from_string(&id).is_err() {
        return Err(ApiError::NotFound("no such email"));
    }
    match channel.store().get(&id).await? {
        Some(record) => Ok(axum::Json(EmailStatusBody::from(&record)).into_response()),
        None => Err(ApiError::NotFound("no such email")),
    }
}
