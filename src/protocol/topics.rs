//! The frames of topic streams: on `/ws` and `/ws/topics/{topic}` (`subscribed`, `event`, topic errors),
//! and the flattened frames of a route alias, which reproduce a design's own messages (the order-streaming
//! design's `connection`, `subscribed` and `{"type": <status>, "orderId", …}`).

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use super::encode_value;
use crate::domain::Timestamp;
use crate::error::TopicError;
use crate::topics::{TopicEvent, TopicName, TopicState};

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TopicFrame<'a> {
    Subscribed { topic: &'a TopicName, state: Option<&'a TopicState> },
    Unsubscribed { topic: &'a TopicName },
    Event { topic: &'a TopicName, seq: u64, event: &'a TopicEvent },
    Error { code: &'a str, message: &'a str, topic: &'a TopicName },
}

pub fn subscribed(topic: &TopicName, state: Option<&TopicState>) -> Bytes {
    encode_value(&TopicFrame::Subscribed { topic, state })
}

pub fn unsubscribed(topic: &TopicName) -> Bytes {
    encode_value(&TopicFrame::Unsubscribed { topic })
}

/// An event, encoded once per event and shared by every `/ws` subscriber.
pub fn event(topic: &TopicName, event: &TopicEvent) -> Bytes {
    encode_value(&TopicFrame::Event { topic, seq: event.seq, event })
}

/// An error about one topic (`forbidden`, `history_gone`, `too_many_subscriptions`); the connection stays.
pub fn error(error: &TopicError, topic: &TopicName) -> Bytes {
    encode_value(&TopicFrame::Error { code: error.code(), message: &error.to_string(), topic })
}

/// The frames of a route alias: every frame names the topic's id under the alias's key (`orderId`) and
/// carries a `timestamp`.
pub struct Alias<'a> {
    pub id_key: &'a str,
    pub label: &'a str,
}

impl Alias<'_> {
    fn frame(&self, kind: &str, topic: &TopicName, at: Timestamp) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("type".into(), Value::from(kind));
        map.insert(self.id_key.into(), Value::from(topic.id()));
        map.insert("timestamp".into(), Value::from(at.to_rfc3339()));
        map
    }

    pub fn connection(&self, topic: &TopicName) -> Bytes {
        let mut map = self.frame("connection", topic, Timestamp::now());
        map.insert("message".into(), Value::from(format!("Connected to {} status stream", self.label)));
        encode_value(&map)
    }

    /// `subscribed`, with the current state's status, progress and data (when the topic exists).
    pub fn subscribed(&self, topic: &TopicName, state: Option<&TopicState>) -> Bytes {
        let mut map = self.frame("subscribed", topic, Timestamp::now());
        map.insert(
            "message".into(),
            Value::from(format!("Subscribed to real-time updates for {} {}", self.label, topic.id())),
        );
        if let Some(state) = state {
            map.insert("status".into(), Value::from(state.status.clone()));
            map.insert("progress".into(), Value::from(state.progress));
            map.insert("seq".into(), Value::from(state.seq));
            map.insert("state".into(), Value::Object(state.data.clone()));
        }
        encode_value(&map)
    }

    /// An event flattened: `{"type": <event type>, <id_key>, "status", "progress", "timestamp", "seq",
    /// …data}`; data keys never replace those.
    pub fn event(&self, topic: &TopicName, event: &TopicEvent) -> Bytes {
        let mut map = event.data.clone();
        for (key, value) in self.frame(&event.kind, topic, event.at) {
            map.insert(key, value);
        }
        map.insert("status".into(), Value::from(event.status.clone()));
        map.insert("progress".into(), Value::from(event.progress));
        map.insert("seq".into(), Value::from(event.seq));
        encode_value(&map)
    }

    pub fn error(&self, error: &TopicError, topic: &TopicName) -> Bytes {
        let mut map = self.frame("error", topic, Timestamp::now());
        map.insert("code".into(), Value::from(error.code()));
        map.insert("message".into(), Value::from(error.to_string()));
        encode_value(&map)
    }
}
