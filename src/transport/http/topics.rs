//! Reading topics over REST: `GET /api/v1/topics/{topic}` (the state), `GET /api/v1/topics/{topic}/events`
//! (history after `since`, the polling fallback), and a route alias's state path (`/api/orders/{id}`).
//!
//! A publisher key may read any topic; a user token only what it may watch; no credential only a public
//! namespace's topics.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::extract::{bearer, Query};
use crate::config::topics::RouteAlias;
use crate::error::ApiError;
use crate::state::AppState;
use crate::topics::namespace::MAX_HISTORY_EVENTS;
use crate::topics::{TopicName, TopicState};

/// Checks that the caller may read `topic`.
async fn authorize(state: &AppState, topic: &TopicName, token: Option<&str>) -> Result<(), ApiError> {
    match token {
        Some(key) if state.auth.is_api_key(key) => Ok(()),
        Some(token) => {
            let user =
                state.auth.user(token).await.map_err(|_| ApiError::Unauthorized("the token is invalid or expired"))?;
            if state.may_watch(Some(&user), topic) {
                Ok(())
            } else {
                Err(ApiError::Forbidden("this token may not read this topic"))
            }
        }
        None if state.may_watch(None, topic) => Ok(()),
        None => Err(ApiError::Unauthorized("an Authorization: Bearer token or API key is required")),
    }
}

fn parse(topic: &str) -> Result<TopicName, ApiError> {
    TopicName::parse(topic).map_err(|e| ApiError::InvalidQuery(e.to_string()))
}

pub async fn get_state(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let topic = parse(&topic)?;
    state_response(&state, &topic, None, &headers, None).await
}

/// The state of `topic` as JSON: Herald's form, or with an alias the design's (`{"success", "orderId",
/// "status", "progress", …data}`).
pub async fn state_response(
    state: &AppState,
    topic: &TopicName,
    alias: Option<&Arc<RouteAlias>>,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Response, ApiError> {
    authorize(state, topic, bearer(headers).or(query_token)).await?;
    let current = state.topics.state(topic).await?.ok_or(ApiError::NotFound("no such topic, or it has expired"))?;
    Ok(match alias {
        None => axum::Json(current).into_response(),
        Some(alias) => axum::Json(alias_state(alias, &current)).into_response(),
    })
}

fn alias_state(alias: &RouteAlias, state: &TopicState) -> Value {
    let mut map: Map<String, Value> = state.data.clone();
    map.insert("success".into(), Value::Bool(true));
    map.insert("id".into(), Value::from(state.topic.id()));
    map.insert(alias.id_key.clone(), Value::from(state.topic.id()));
    map.insert("status".into(), Value::from(state.status.clone()));
    map.insert("progress".into(), Value::from(state.progress));
    map.insert("seq".into(), Value::from(state.seq));
    map.insert("updatedAt".into(), serde_json::to_value(state.updated_at).unwrap_or(Value::Null));
    map.insert("expiresAt".into(), serde_json::to_value(state.expires_at).unwrap_or(Value::Null));
    Value::Object(map)
}

#[derive(Deserialize)]
pub struct HistoryParams {
    since: Option<u64>,
}

/// `GET /api/v1/topics/{topic}/events?since=N` (default 0): the state and the events after `since`, or
/// `gone: true` (and no events) when history no longer reaches back; then start again from the state.
pub async fn history(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Query(params): Query<HistoryParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let topic = parse(&topic)?;
    authorize(&state, &topic, bearer(&headers)).await?;
    let recovery = state.topics.recover(&topic, Some(params.since.unwrap_or(0)), MAX_HISTORY_EVENTS).await?;
    let body = json!({ "topic": topic, "state": recovery.state, "events": recovery.events, "gone": recovery.gone });
    Ok(axum::Json(body).into_response())
}

/// A route alias's state path.
pub async fn alias_state_route(
    alias: Arc<RouteAlias>,
    state: AppState,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let topic = TopicName::from_parts(&alias.namespace, &id).map_err(|e| ApiError::InvalidQuery(e.to_string()))?;
    state_response(&state, &topic, Some(&alias), &headers, None).await
}
