//! The topic publish API: `POST /api/v1/topics/{topic}/events` and `POST /api/v1/topics/events/batch`.
//!
//! Each event is committed (state and history) before the 201; a lifecycle refusal is 409
//! `invalid_transition` naming the current status and the allowed next ones, and stores nothing. An event may
//! carry `correlate` (a chain transaction to bind to its topic), committed with it; a key bound to another
//! topic is 409 `correlation_conflict`, and stores nothing either.

use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::ingest::correlations::conflict_error;
use crate::state::AppState;
use crate::store::topics::{Refused, Rejection};
use crate::topics::correlation::CorrelationInput;
use crate::topics::event::{TopicEventInput, DATA_MAX};
use crate::topics::{NewTopicEvent, Refusal, TopicName};
use crate::transport::http::extract::{parse_json, Json, Publisher};

/// The most events one batch may hold.
pub const MAX_BATCH: usize = 1000;

pub async fn publish(
    State(state): State<AppState>,
    _: Publisher,
    Path(topic): Path<String>,
    Json(input): Json<TopicEventInput>,
) -> Result<Response, ApiError> {
    let received_at = Instant::now();
    let topic = TopicName::parse(&topic).map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let event = NewTopicEvent::parse(topic.clone(), input, received_at)
        .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let seqs = append(&state, vec![event], false).await?;
    let seq = seqs.first().copied().unwrap_or_default();
    Ok((StatusCode::CREATED, axum::Json(json!({ "topic": topic, "seq": seq }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    events: Vec<Value>,
}

/// One batch item: an event with its topic.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    topic: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    progress: Option<i64>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    correlate: Option<CorrelationInput>,
}

pub async fn publish_batch(
    State(state): State<AppState>,
    _: Publisher,
    Json(input): Json<BatchInput>,
) -> Result<Response, ApiError> {
    let received_at = Instant::now();
    let count = input.events.len();
    if count > MAX_BATCH {
        return Err(ApiError::BatchTooLarge { max: MAX_BATCH, got: count });
    }
    if count == 0 {
        return Err(ApiError::invalid_request("events must hold at least one event"));
    }
    let mut events = Vec::with_capacity(count);
    for (index, raw) in input.events.into_iter().enumerate() {
        let at = |message: String| ApiError::InvalidRequest {
            message: format!("events[{index}]: {message}"),
            index: Some(index),
        };
        let bytes = serde_json::to_vec(&raw).map_err(|e| at(e.to_string()))?;
        let item: BatchItem = parse_json(&bytes).map_err(|e| at(e.to_string()))?;
        let topic = TopicName::parse(&item.topic).map_err(|e| at(e.to_string()))?;
        let input = TopicEventInput {
            kind: item.kind,
            status: item.status,
            progress: item.progress,
            data: item.data,
            correlate: item.correlate,
        };
        events.push(NewTopicEvent::parse(topic, input, received_at).map_err(|e| at(e.to_string()))?);
    }
    let topics: Vec<TopicName> = events.iter().map(|e| e.topic.clone()).collect();
    let seqs = append(&state, events, true).await?;
    let items: Vec<Value> = topics.iter().zip(seqs).map(|(topic, seq)| json!({ "topic": topic, "seq": seq })).collect();
    Ok((StatusCode::CREATED, axum::Json(json!({ "items": items }))).into_response())
}

async fn append(state: &AppState, events: Vec<NewTopicEvent>, batch: bool) -> Result<Vec<u64>, ApiError> {
    match state.topics.append(events).await? {
        Ok(seqs) => Ok(seqs),
        Err(refused) => Err(refusal_error(refused, batch)),
    }
}

fn refusal_error(refused: Refused, batch: bool) -> ApiError {
    let index = batch.then_some(refused.index);
    let prefix = if batch { format!("events[{}] ({}): ", refused.index, refused.topic) } else { String::new() };
    match refused.rejection {
        Rejection::StateTooLarge => ApiError::InvalidRequest {
            message: format!("{prefix}the topic's merged data would exceed {DATA_MAX} bytes"),
            index,
        },
        Rejection::CorrelationConflict(conflict) => conflict_error(&conflict, &prefix, index),
        Rejection::Lifecycle(refusal) => {
            let allowed = match &refusal {
                Refusal::UnknownStatus { allowed, .. } | Refusal::Transition { allowed, .. } => allowed.clone(),
                Refusal::ProgressBackwards { status, .. } => vec![status.clone()],
            };
            ApiError::InvalidTransition {
                message: format!("{prefix}{refusal}"),
                topic: refused.topic.to_string(),
                current: refused.current,
                allowed,
                index,
            }
        }
    }
}
