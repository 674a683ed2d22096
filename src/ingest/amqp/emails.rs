//! The email consumer (`email_queue` by default): each message is an email request for the email channel,
//! as the social platform's NestJS services send them — `{"pattern":"email_request","data":{"type","data"}}`
//! — or the bare request `{"type","data","to"?,"idempotency_key"?}` of `POST /api/v1/emails`.
//!
//! A message is acked once its request is stored in the outbox (the sender takes it from there). A request
//! that can never be sent (an unknown type, a missing variable, no valid recipient) is poison: it goes to
//! `email_queue.dlq` at once with the reason. A redelivered or replayed message sends no second email: its
//! request has an idempotency key (its own, else derived from the message as notifications' are), and a
//! known key returns the stored request instead of storing another.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::consumer::{Handler, Outcome};
use super::message::Message;
use super::notifications::MAX_MESSAGE_BYTES;
use crate::store::StoreError;
use crate::workers::email::{EmailChannel, EmailInput, SubmitError};

pub struct EmailHandler {
    channel: Arc<EmailChannel>,
    /// The NestJS pattern accepted (`email_request`).
    pattern: String,
}

impl EmailHandler {
    pub fn new(channel: Arc<EmailChannel>, pattern: String) -> Self {
        Self { channel, pattern }
    }

    /// The request a message holds, with its idempotency key.
    fn decode(&self, message: &Message) -> Result<EmailInput, String> {
        if message.body.len() > MAX_MESSAGE_BYTES {
            return Err(format!("the body is {} bytes, over the limit of {MAX_MESSAGE_BYTES}", message.body.len()));
        }
        let value: Value = serde_json::from_slice(&message.body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let Value::Object(mut fields) = value else { return Err("the body is not a JSON object".into()) };
        let request = match fields.remove("pattern") {
            None => Value::Object(fields),
            Some(Value::String(p)) if p == self.pattern => match fields.remove("data") {
                Some(data @ Value::Object(_)) => data,
                _ => return Err("the message has no data object".into()),
            },
            Some(other) => return Err(format!("pattern {other} is not {:?}", self.pattern)),
        };
        let mut input: EmailInput =
            serde_json::from_value(request).map_err(|e| format!("not an email request: {e}"))?;
        if input.idempotency_key.is_none() {
            input.idempotency_key = Some(message.derived_key(None));
        }
        Ok(input)
    }
}

#[async_trait]
impl Handler for EmailHandler {
    async fn handle(&self, group: &[Message]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(group.len());
        for message in group {
            let outcome = match self.decode(message) {
                Err(reason) => Outcome::Poison(reason),
                Ok(input) => match self.channel.submit(input).await {
                    Ok(_) => Outcome::Done,
                    Err(SubmitError::Request(e)) => {
                        metrics::counter!("herald_emails_dead_lettered_total", "type" => "refused", "reason" => e.code())
                            .increment(1);
                        Outcome::Poison(e.to_string())
                    }
                    Err(SubmitError::Store(StoreError::Closed)) => Outcome::Requeue,
                    Err(SubmitError::Store(e)) => Outcome::Transient(e.to_string()),
                },
            };
            outcomes.push(outcome);
        }
        outcomes
    }
}
