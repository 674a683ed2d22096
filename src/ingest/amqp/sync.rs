//! The user-sync consumer (`neo4j_sync_queue` by default): NestJS messages
//! `{"pattern": "create_user_request" | "update_user_request", "data": {…user}}` from the social platform's
//! user service, each synced into the graph and the user directory (`workers::sync`).
//!
//! A message is acked once both are written. The graph or the directory away is retried with the
//! consumer's backoff, then dead-lettered; a malformed message (not JSON, another pattern, no `_id`, a field
//! of the wrong type) goes to `neo4j_sync_queue.dlq` at once with the reason. Redelivery is harmless: every
//! write is a `MERGE` on `user_id` and `SET`s.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::consumer::{Handler, Outcome};
use super::message::Message;
use super::notifications::MAX_MESSAGE_BYTES;
use crate::workers::sync::{Operation, UserSync};

pub const CREATE_PATTERN: &str = "create_user_request";
pub const UPDATE_PATTERN: &str = "update_user_request";

pub struct SyncHandler {
    sync: Arc<UserSync>,
}

impl SyncHandler {
    pub fn new(sync: Arc<UserSync>) -> Self {
        Self { sync }
    }
}

/// The operation and the user document a message holds.
fn decode(message: &Message) -> Result<(Operation, Value), String> {
    if message.body.len() > MAX_MESSAGE_BYTES {
        return Err(format!("the body is {} bytes, over the limit of {MAX_MESSAGE_BYTES}", message.body.len()));
    }
    let value: Value = serde_json::from_slice(&message.body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(mut fields) = value else { return Err("the body is not a JSON object".into()) };
    let operation = match fields.get("pattern") {
        Some(Value::String(p)) if p == CREATE_PATTERN => Operation::Create,
        Some(Value::String(p)) if p == UPDATE_PATTERN => Operation::Update,
        Some(other) => return Err(format!("pattern {other} is not {CREATE_PATTERN:?} or {UPDATE_PATTERN:?}")),
        None => return Err("the message has no pattern".into()),
    };
    match fields.remove("data") {
        Some(user @ Value::Object(_)) => Ok((operation, user)),
        _ => Err("the message has no data object (the user)".into()),
    }
}

#[async_trait]
impl Handler for SyncHandler {
    async fn handle(&self, group: &[Message]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(group.len());
        // In order: two events of one user in a group apply as they were sent.
        for message in group {
            let outcome = match decode(message) {
                Err(reason) => Outcome::Poison(reason),
                Ok((operation, user)) => match self.sync.apply(operation, &user).await {
                    Ok(_) => Outcome::Done,
                    Err(e) if e.is_transient() => Outcome::Transient(e.to_string()),
                    Err(e) => Outcome::Poison(e.to_string()),
                },
            };
            outcomes.push(outcome);
        }
        outcomes
    }
}
