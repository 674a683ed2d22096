//! `POST /api/v1/correlations`: a publisher binds a chain transaction to the topic of the intent that sent
//! it, so that the chain-event consumer (`ingest::amqp::chain`) can find the intent when the transaction's
//! domain event arrives. `{"key":{"chain_id","tx_hash","kind"?},"topic"}` → 201 with the key as stored
//! (normalized); a key bound to another live topic → 409 `correlation_conflict`, and nothing changes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::topics::Conflict;
use crate::topics::correlation::{CorrelationInput, CorrelationKey};
use crate::topics::TopicName;
use crate::transport::http::extract::{Json, Publisher};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationBody {
    key: CorrelationInput,
    topic: String,
}

pub async fn correlate(
    State(state): State<AppState>,
    _: Publisher,
    Json(body): Json<CorrelationBody>,
) -> Result<Response, ApiError> {
    let key = CorrelationKey::from_input(&body.key).map_err(|e| ApiError::invalid_request(format!("key.{e}")))?;
    let topic = TopicName::parse(&body.topic).map_err(|e| ApiError::invalid_request(e.to_string()))?;
    match state.topics.correlate(key.clone(), topic.clone()).await? {
        Ok(()) => Ok((StatusCode::CREATED, axum::Json(json!({ "key": key, "topic": topic }))).into_response()),
        Err(conflict) => Err(conflict_error(&conflict, "", None)),
    }
}

/// The 409 for a key bound to another topic; `prefix` and `index` place it in a batch.
pub fn conflict_error(conflict: &Conflict, prefix: &str, index: Option<usize>) -> ApiError {
    ApiError::CorrelationConflict {
        message: format!(
            "{prefix}{} is already bound to {} (until that topic expires)",
            conflict.key, conflict.bound_to
        ),
        index,
    }
}
