//! The harness: every test starts the real `herald` binary on an ephemeral port with its own SQLite file
//! in its own temp dir, and talks to it with a real HTTP client and a real WebSocket client. Nothing here
//! knows the server's internals; everything goes through the public protocol.

pub mod amqp;
mod app;
mod auth;
pub mod falkordb;
mod metrics;
pub mod postgres;
mod process;
pub mod smtp;
mod sse;
mod wait;
mod ws;

pub use app::TestApp;
pub use auth::{alg_none_token, claims_for, decode_unverified, now, sign, token_with_secret, unsigned_token};
pub use metrics::Metrics;
pub use process::{run_herald, Settings, API_KEY, JWT_SECRET};
pub use sse::SseClient;
pub use wait::{wait_until, WAIT};
pub use ws::WsClient;

use serde_json::Value;

/// The ids of a list of notifications, in the order given.
pub fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|n| id(n).to_owned()).collect()
}

/// The id of one notification.
pub fn id(notification: &Value) -> &str {
    notification["id"].as_str().unwrap_or_else(|| panic!("notification without a string id: {notification}"))
}

/// Asserts the body is `{"error":{"code": code, "message": <non-empty string>}}` and returns the error
/// object.
pub fn assert_error(body: &Value, code: &str) -> Value {
    let error = &body["error"];
    assert_eq!(error["code"], code, "unexpected error body: {body}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "error without a message: {body}");
    error.clone()
}

/// Reads a response as `(status, json body)`; panics with the raw text when the body is not JSON.
pub async fn status_and_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("read response body");
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// Asserts a response has this status and the JSON error code, and returns the error object.
pub async fn assert_error_response(response: reqwest::Response, status: u16, code: &str) -> Value {
    let (got, body) = status_and_json(response).await;
    assert_eq!(got, status, "unexpected status, body: {body}");
    assert_error(&body, code)
}

/// A string of `len` bytes, to make large notifications and frames.
pub fn filler(len: usize) -> String {
    "x".repeat(len)
}

/// The fields of a notification, exactly.
pub const NOTIFICATION_FIELDS: [&str; 11] =
    ["created_at", "data", "delivered", "delivered_at", "id", "message", "read", "read_at", "title", "type", "user_id"];

/// Asserts `n` has exactly the notification fields, a 26-character ULID id and RFC 3339 UTC times.
pub fn assert_notification_shape(n: &Value) {
    let mut keys: Vec<&str> =
        n.as_object().unwrap_or_else(|| panic!("not an object: {n}")).keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, NOTIFICATION_FIELDS, "fields of {n}");
    let id = id(n);
    assert_eq!(id.len(), 26, "id {id:?} is not 26 characters");
    ulid::Ulid::from_string(id).unwrap_or_else(|e| panic!("id {id:?} is not a ULID: {e}"));
    assert_rfc3339_utc(&n["created_at"]);
    for (flag, at) in [("delivered", "delivered_at"), ("read", "read_at")] {
        match n[flag].as_bool() {
            Some(true) => {
                assert_rfc3339_utc(&n[at]);
            }
            Some(false) => assert!(n[at].is_null(), "{at} set while {flag} is false: {n}"),
            None => panic!("{flag} is not a boolean: {n}"),
        }
    }
}

/// Asserts `value` is an RFC 3339 time in UTC and returns it.
pub fn assert_rfc3339_utc(value: &Value) -> time::OffsetDateTime {
    let text = value.as_str().unwrap_or_else(|| panic!("time is not a string: {value}"));
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
    assert_eq!(at.offset(), time::UtcOffset::UTC, "{text:?} is not UTC");
    at
}
