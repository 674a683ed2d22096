//! The small Herald client: it publishes one order event to `POST /api/v1/topics/order:{id}/events` and
//! retries what is worth retrying.
//!
//! Architecture invariant: only this module knows Herald's wire format (the event body, the `{"seq": n}`
//! answer and the `{"error": {"code", "message"}}` refusals).
//!
//! Which failures are retried is decided by [`classify`] from the HTTP status alone: a 5xx, 408 or 429 or
//! a connection error is retried up to [`Retry::retries`] times with a doubling backoff; 401 and 403 mean
//! the API key is wrong, and any other 4xx (409 `invalid_transition` above all) is Herald refusing this
//! event. Neither of those improves with a retry.

use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::order::{OrderId, Status};

/// Herald's API key. It never prints: `Debug` shows a placeholder.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// How often a publish that failed for a passing reason is tried again, and how long to wait first.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Retries after the first try.
    pub retries: u32,
    /// The wait before the first retry; it doubles for each one after.
    pub first_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self { retries: 5, first_backoff: Duration::from_millis(50) }
    }
}

/// One step of an order, as it is published to the order's topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub status: Status,
    /// 0 to 100.
    pub progress: u8,
    pub message: String,
    /// More fields for the watcher (`quotes`, `txHash`, ...), beside `message` in the event's data.
    pub data: Map<String, Value>,
}

impl Event {
    pub fn new(status: Status, progress: u8, message: impl Into<String>) -> Self {
        Self { status, progress, message: message.into(), data: Map::new() }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.data.insert(key.to_owned(), value.into());
        self
    }
}

/// The body Herald takes: the event type is the status for every order step.
#[derive(Serialize)]
struct Body {
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    progress: u8,
    data: Map<String, Value>,
}

impl Body {
    fn of(event: &Event) -> Self {
        let mut data = Map::with_capacity(event.data.len() + 1);
        data.insert("message".to_owned(), Value::String(event.message.clone()));
        data.extend(event.data.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self { kind: event.status.as_str(), status: event.status.as_str(), progress: event.progress, data }
    }
}

#[derive(Deserialize)]
struct Accepted {
    seq: u64,
}

#[derive(Deserialize)]
struct Refusal {
    error: RefusalDetail,
}

#[derive(Deserialize)]
struct RefusalDetail {
    code: String,
    message: String,
}

/// Why an event was not published.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublishError {
    /// Herald answered and will not take this event; 409 `invalid_transition` is a lifecycle refusal.
    #[error("Herald refused the event ({status} {code}): {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("Herald refused the API key ({status}): {message}")]
    Unauthorized { status: u16, message: String },
    #[error("Herald was unavailable for {attempts} attempts; the last: {last}")]
    Unavailable { attempts: u32, last: String },
    /// Herald said it took the event but its answer was not `{"seq": n}`: the URL is probably not Herald's.
    #[error("Herald's answer ({status}) was not {{\"seq\": n}}: {reason}")]
    UnexpectedAnswer { status: u16, reason: String },
}

impl PublishError {
    pub fn is_invalid_transition(&self) -> bool {
        matches!(self, PublishError::Refused { status: 409, code, .. } if code == "invalid_transition")
    }
}

/// Where events go. [`Herald`] is the real one; tests record instead.
pub trait Publish: Send + Sync {
    /// Publishes `event` to the order's topic and returns the sequence number Herald gave it.
    fn publish(&self, order: &OrderId, event: &Event) -> impl Future<Output = Result<u64, PublishError>> + Send;
}

/// What to do with an answer, from its status alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Retry,
    Unauthorized,
    Refused,
}

pub fn classify(status: StatusCode) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Accepted,
        401 | 403 => Verdict::Unauthorized,
        408 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Refused,
    }
}

/// A client for one Herald.
#[derive(Debug, Clone)]
pub struct Herald {
    http: reqwest::Client,
    base: String,
    api_key: ApiKey,
    retry: Retry,
}

/// How one try ended, when it did not succeed.
enum Failure {
    Passing(String),
    Final(PublishError),
}

impl Herald {
    /// `base` is Herald's HTTP address, e.g. `http://127.0.0.1:8004`.
    pub fn new(base: &Url, api_key: ApiKey, retry: Retry) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self { http, base: base.as_str().trim_end_matches('/').to_owned(), api_key, retry })
    }

    pub fn events_url(&self, order: &OrderId) -> String {
        format!("{}/api/v1/topics/{}/events", self.base, order.topic())
    }

    async fn try_once(&self, url: &str, body: &Body) -> Result<u64, Failure> {
        let answer = self
            .http
            .post(url)
            .bearer_auth(&self.api_key.0)
            .json(body)
            .send()
            .await
            .map_err(|e| Failure::Passing(with_sources(&e)))?;
        let status = answer.status();
        let verdict = classify(status);
        // A body that cannot be read is only worth a retry when the status already said so.
        let text = match answer.text().await {
            Ok(text) => text,
            Err(e) if verdict == Verdict::Accepted || verdict == Verdict::Retry => {
                return Err(Failure::Passing(with_sources(&e)));
            }
            Err(_) => String::new(),
        };
        let code = status.as_u16();
        match verdict {
            Verdict::Accepted => serde_json::from_str::<Accepted>(&text)
                .map(|a| a.seq)
                .map_err(|e| Failure::Final(PublishError::UnexpectedAnswer { status: code, reason: e.to_string() })),
            Verdict::Retry => Err(Failure::Passing(format!("{status}: {}", refusal(&text).1))),
            Verdict::Unauthorized => {
                Err(Failure::Final(PublishError::Unauthorized { status: code, message: refusal(&text).1 }))
            }
            Verdict::Refused => {
                let (error_code, message) = refusal(&text);
                Err(Failure::Final(PublishError::Refused { status: code, code: error_code, message }))
            }
        }
    }
}

impl Publish for Herald {
    async fn publish(&self, order: &OrderId, event: &Event) -> Result<u64, PublishError> {
        let url = self.events_url(order);
        let body = Body::of(event);
        let mut backoff = self.retry.first_backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.try_once(&url, &body).await {
                Ok(seq) => return Ok(seq),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Passing(last)) if attempts > self.retry.retries => {
                    return Err(PublishError::Unavailable { attempts, last });
                }
                Err(Failure::Passing(reason)) => {
                    let status = event.status.as_str();
                    tracing::warn!(%order, status, attempts, ?backoff, %reason, "publish failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
            }
        }
    }
}

/// The code and message of a refusal body, or what can be said without one.
fn refusal(text: &str) -> (String, String) {
    match serde_json::from_str::<Refusal>(text) {
        Ok(Refusal { error }) => (error.code, error.message),
        Err(_) => {
            let mut shown: String = text.chars().take(200).collect();
            if shown.is_empty() {
                shown = "(no body)".to_owned();
            }
            ("unknown".to_owned(), shown)
        }
    }
}

/// reqwest's top-level message ("error sending request") says little; its sources say why.
fn with_sources(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_passing_failures_are_retried() {
        let verdict = |code| classify(StatusCode::from_u16(code).unwrap());
        assert_eq!(verdict(201), Verdict::Accepted);
        for code in [500, 502, 503, 504, 408, 429] {
            assert_eq!(verdict(code), Verdict::Retry, "{code}");
        }
        assert_eq!(verdict(401), Verdict::Unauthorized);
        assert_eq!(verdict(403), Verdict::Unauthorized);
        for code in [400, 404, 409, 413, 422] {
            assert_eq!(verdict(code), Verdict::Refused, "{code}");
        }
    }

    #[test]
    fn the_body_carries_the_status_as_type_and_the_message_in_data() {
        let event = Event::new(Status::Routing, 30, "Received 2 quotes").with("quotesFetched", 2);
        let body = serde_json::to_value(Body::of(&event)).unwrap();
        assert_eq!(
            body,
            json!({
                "type": "routing",
                "status": "routing",
                "progress": 30,
                "data": {"message": "Received 2 quotes", "quotesFetched": 2}
            })
        );
    }

    #[test]
    fn refusals_are_read_when_herald_explains_them() {
        let text = r#"{"error":{"code":"invalid_transition","message":"\"confirmed\" is final"}}"#;
        assert_eq!(refusal(text), ("invalid_transition".to_owned(), "\"confirmed\" is final".to_owned()));
        assert_eq!(refusal("Bad Gateway").0, "unknown");
        assert_eq!(refusal("").1, "(no body)");
        let e = PublishError::Refused { status: 409, code: "invalid_transition".into(), message: String::new() };
        assert!(e.is_invalid_transition());
    }

    #[test]
    fn the_key_never_prints() {
        let key = ApiKey::new("s3cret");
        assert!(!format!("{key:?}").contains("s3cret"));
    }
}
