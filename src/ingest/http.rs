//! The publish API: `POST /api/v1/notifications` and its batch form.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::{EmailDelivery, NewNotification, Notification, NotificationInput};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::InsertOutcome;
use crate::transport::http::extract::{parse_json, Json, Publisher};
use crate::workers::email::notifications::EmailSummary;

pub const MAX_BATCH: usize = 1000;

/// A stored notification and, when it asked for the email channel, what became of its email (`email`).
struct Published<'a> {
    notification: &'a Notification,
    email: Option<EmailSummary>,
}

impl Serialize for Published<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct WithEmail<'a> {
            #[serde(flatten)]
            notification: &'a Notification,
            email: &'a EmailSummary,
        }
        match &self.email {
            // The common case stays a plain notification, without flatten's detour through a map.
            None => self.notification.serialize(serializer),
            Some(email) => WithEmail { notification: self.notification, email }.serialize(serializer),
        }
    }
}

/// Refuses, before anything is stored, a notification whose email could never be sent.
fn check_email(state: &AppState, item: &NewNotification) -> Result<(), ApiError> {
    if item.email.is_none() {
        return Ok(());
    }
    let channel = state.email.as_deref().ok_or(ApiError::EmailDisabled)?;
    channel.check_notification(item).map_err(|e| ApiError::InvalidEmail { code: e.code(), message: e.to_string() })
}

/// Queues the emails of stored notifications that asked for them, in order; `None` for the others.
/// A notification is stored before its email is queued: if queueing fails, the publisher's retry with
/// the same idempotency key finds the notification and queues the email then.
async fn queue_emails(
    state: &AppState,
    deliveries: Vec<Option<EmailDelivery>>,
    outcomes: &[InsertOutcome],
) -> Result<Vec<Option<EmailSummary>>, ApiError> {
    let mut summaries = Vec::with_capacity(outcomes.len());
    for (delivery, outcome) in deliveries.into_iter().zip(outcomes) {
        summaries.push(match (delivery, state.email.as_deref()) {
            (Some(delivery), Some(channel)) => Some(channel.notification(outcome.notification(), &delivery).await?),
            _ => None,
        });
    }
    Ok(summaries)
}

pub async fn publish(
    State(state): State<AppState>,
    _: Publisher,
    Json(input): Json<NotificationInput>,
) -> Result<Response, ApiError> {
    let received_at = Instant::now();
    let item = NewNotification::parse(input, received_at).map_err(|e| ApiError::invalid_request(e.to_string()))?;
    check_email(&state, &item)?;
    let delivery = item.email.clone();
    let mut outcomes = state.store.insert(vec![item]).await?;
    let outcome =
        outcomes.pop().ok_or_else(|| ApiError::Store(crate::store::StoreError::Internal("no outcome".into())))?;
    let status = match outcome {
        InsertOutcome::Created(_) => StatusCode::CREATED,
        InsertOutcome::Existing(_) => StatusCode::OK,
    };
    if delivery.is_none() {
        return Ok((status, axum::Json(outcome.notification())).into_response());
    }
    let email = queue_emails(&state, vec![delivery], std::slice::from_ref(&outcome)).await?.pop().flatten();
    Ok((status, axum::Json(Published { notification: outcome.notification(), email })).into_response())
}

/// The batch body. Items stay raw until each is checked, so an error can name the item's index.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    notifications: Vec<Box<RawValue>>,
}

#[derive(Serialize)]
struct BatchBody<'a> {
    items: Vec<Published<'a>>,
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
        let item = NewNotification::parse(parsed, received_at).map_err(|e| at_index(e.to_string()))?;
        check_email(&state, &item).map_err(|e| match e {
            ApiError::InvalidEmail { code, message } => {
                ApiError::InvalidEmail { code, message: format!("notifications[{index}]: {message}") }
            }
            other => other,
        })?;
        items.push(item);
    }
    let deliveries: Vec<Option<EmailDelivery>> = items.iter().map(|i| i.email.clone()).collect();
    let outcomes = state.store.insert(items).await?;
    let emails = queue_emails(&state, deliveries, &outcomes).await?;
    let body = BatchBody {
        items: outcomes
            .iter()
            .zip(emails)
            .map(|(outcome, email)| Published { notification: outcome.notification(), email })
            .collect(),
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}
