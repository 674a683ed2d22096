//! Every error a client can see, and how it is reported: HTTP status, stable code, WebSocket close code.
//!
//! Architecture invariant: this file is the only place that maps errors to statuses, codes and close codes,
//! and the README's protocol section lists the same table.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

use crate::store::StoreError;

/// An error answered to an HTTP client as `{"error":{"code","message"}}`.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    InvalidJson(String),
    #[error("{message}")]
    InvalidRequest { message: String, index: Option<usize> },
    #[error("{0}")]
    InvalidQuery(String),
    #[error("the body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("a batch holds at most {max} notifications, this one has {got}")]
    BatchTooLarge { max: usize, got: usize },
    #[error("the server is at its connection capacity; try again later")]
    AtCapacity,
    #[error("this user already has {0} live connections, the most allowed")]
    TooManyConnections(usize),
    #[error("{0}")]
    MethodNotAllowed(&'static str),
    /// Over a rate limit (`[limits]`); answered with `Retry-After` in whole seconds.
    #[error("{message}; try again in {retry_after_secs} s")]
    RateLimited { message: &'static str, retry_after_secs: u64 },
    /// A topic event broke its namespace's lifecycle: names the current status and the allowed next ones.
    #[error("{message}")]
    InvalidTransition {
        message: String,
        topic: String,
        current: Option<String>,
        allowed: Vec<String>,
        index: Option<usize>,
    },
    /// A correlation key is already bound to another live topic.
    #[error("{message}")]
    CorrelationConflict { message: String, index: Option<usize> },
    /// The cluster broker is away, so a cluster-wide answer (presence) cannot be given.
    #[error("{0}")]
    BrokerUnavailable(String),
    /// An email request that can never be sent; `code` says why (`unknown_email_type`, `missing_variable`,
    /// `invalid_recipient`, …).
    #[error("{message}")]
    InvalidEmail { code: &'static str, message: String },
    #[error("the email channel is off: no SMTP server is configured (HERALD_SMTP_HOST)")]
    EmailDisabled,
    #[error("user sync is off: no graph database is configured (HERALD_GRAPH_URL)")]
    SyncDisabled,
    /// The graph database cannot be reached (or refused the write).
    #[error("{0}")]
    GraphUnavailable(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl ApiError {
    /// A refusal by a rate limit that frees up after `wait`.
    pub fn rate_limited(message: &'static str, wait: std::time::Duration) -> Self {
        ApiError::RateLimited { message, retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        ApiError::InvalidRequest { message: message.into(), index: None }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::InvalidJson(_) | ApiError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidRequest { .. } | ApiError::BatchTooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::AtCapacity
            | ApiError::BrokerUnavailable(_)
            | ApiError::EmailDisabled
            | ApiError::SyncDisabled
            | ApiError::GraphUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InvalidEmail { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyConnections(_) | ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InvalidTransition { .. } | ApiError::CorrelationConflict { .. } => StatusCode::CONFLICT,
            ApiError::Store(StoreError::Unavailable(_) | StoreError::Closed) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::BatchTooLarge { .. } => "batch_too_large",
            ApiError::AtCapacity => "at_capacity",
            ApiError::BrokerUnavailable(_) => "broker_unavailable",
            ApiError::InvalidEmail { code, .. } => code,
            ApiError::EmailDisabled => "email_disabled",
            ApiError::SyncDisabled => "sync_disabled",
            ApiError::GraphUnavailable(_) => "graph_unavailable",
            ApiError::TooManyConnections(_) => "too_many_connections",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::InvalidTransition { .. } => "invalid_transition",
            ApiError::CorrelationConflict { .. } => "correlation_conflict",
            ApiError::Store(StoreError::Unavailable(_) | StoreError::Closed) => "store_unavailable",
            ApiError::Store(_) => "internal",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    /// The topic's status before the refused event (`null`: the topic is new).
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed: Option<&'a [String]>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        metrics::counter!("herald_errors_total", "code" => code).increment(1);
        // Internal errors are logged with their cause here and shown to the client without it.
        let message = match &self {
            ApiError::Store(e) => {
                tracing::error!(error = %e, "request failed in the store");
                "the request could not be completed; try again".to_owned()
            }
            other => other.to_string(),
        };
        let mut detail = ErrorDetail { code, message, index: None, topic: None, current: None, allowed: None };
        match &self {
            ApiError::InvalidRequest { index, .. } | ApiError::CorrelationConflict { index, .. } => {
                detail.index = *index
            }
            ApiError::InvalidTransition { topic, current, allowed, index, .. } => {
                detail.index = *index;
                detail.topic = Some(topic);
                detail.current = Some(current.as_deref());
                detail.allowed = Some(allowed);
            }
            _ => {}
        }
        let mut response = (status, axum::Json(ErrorBody { error: detail })).into_response();
        if let ApiError::RateLimited { retry_after_secs, .. } = &self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, (*retry_after_secs).into());
        }
        response
    }
}

/// Why the server closes a WebSocket: the close code and reason a client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The server is stopping.
    GoingAway,
    /// A client frame was larger than the frame limit.
    MessageTooBig,
    /// The server failed while serving the connection.
    Internal,
    /// The client did not answer pings for two intervals.
    IdleTimeout,
    /// The user's token expired while connected; reconnect with a fresh one.
    TokenExpired,
    /// The client fell behind and its outbound queue overflowed; reconnect with `since` to catch up.
    SlowConsumer,
    /// This node may have missed some of the user's events (the cluster broker was away, or an event did not
    /// arrive in time); reconnect with `since` to catch up. Preceded by a `{"type":"resync"}` frame.
    Resync,
    /// The client sent frames faster than `limits.frames_per_second` allows.
    RateLimited,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::GoingAway => 1001,
            CloseReason::MessageTooBig => 1009,
            CloseReason::Internal => 1011,
            CloseReason::IdleTimeout => 4000,
            CloseReason::TokenExpired => 4001,
            CloseReason::SlowConsumer => 4008,
            CloseReason::Resync => 4009,
            CloseReason::RateLimited => 4029,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            CloseReason::GoingAway => "going away",
            CloseReason::MessageTooBig => "frame too large",
            CloseReason::Internal => "internal error",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::TokenExpired => "token expired",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::Resync => "resync: reconnect with since",
            CloseReason::RateLimited => "too many frames",
        }
    }
}

/// An error answered on an open WebSocket as `{"type":"error","code","message"}`; the connection stays open.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("the frame is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("unknown frame type {0:?}; expected mark_read, mark_all_read, subscribe, unsubscribe or ping")]
    UnknownType(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("only text frames are accepted")]
    UnsupportedFrame,
    #[error("the request could not be completed; try again")]
    Internal,
}

impl FrameError {
    pub fn code(&self) -> &'static str {
        match self {
            FrameError::InvalidJson(_) => "invalid_json",
            FrameError::UnknownType(_) => "unknown_type",
            FrameError::InvalidRequest(_) => "invalid_request",
            FrameError::UnsupportedFrame => "unsupported_frame",
            FrameError::Internal => "internal",
        }
    }
}

/// An error about one topic on a live connection, answered as `{"type":"error","code","message","topic"}`
/// (or the alias's form); the connection stays open.
#[derive(Debug, Error)]
pub enum TopicError {
    #[error("this token may not watch this topic")]
    Forbidden,
    #[error("a connection may watch at most {0} topics")]
    TooManySubscriptions(usize),
    #[error("the history no longer reaches back to the given seq; start again from the state")]
    HistoryGone,
    #[error("the request could not be completed; try again")]
    Internal,
}

impl TopicError {
    pub fn code(&self) -> &'static str {
        match self {
            TopicError::Forbidden => "forbidden",
            TopicError::TooManySubscriptions(_) => "too_many_subscriptions",
            TopicError::HistoryGone => "history_gone",
            TopicError::Internal => "internal",
        }
    }
}
