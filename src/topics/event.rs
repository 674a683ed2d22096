//! What a topic holds: the events appended to it, and the state they add up to.
//!
//! A publisher's event is parsed once into a [`NewTopicEvent`]; the store gives it the topic's next
//! sequence number and folds it into the [`TopicState`]: the newest status and progress, and `data` merged
//! key by key (a key set to `null` is removed).

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::correlation::{CorrelationInput, CorrelationKey};
use super::TopicName;
use crate::domain::{InvalidField, Timestamp};

/// The most a topic event's `data`, or a topic's merged `data`, may hold as JSON.
pub const DATA_MAX: usize = 64 * 1024;
/// The longest `type` or `status`.
pub const WORD_MAX: usize = 64;

/// An event as a publisher sends it: `{"type", "status"?, "progress"?, "data"?, "correlate"?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicEventInput {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub progress: Option<i64>,
    #[serde(default)]
    pub data: Option<Value>,
    /// A chain transaction to bind to this topic, committed with the event (see `topics::correlation`).
    #[serde(default)]
    pub correlate: Option<CorrelationInput>,
}

/// An event checked and ready to append.
#[derive(Debug, Clone)]
pub struct NewTopicEvent {
    pub topic: TopicName,
    pub kind: String,
    pub status: Option<String>,
    pub progress: Option<u8>,
    pub data: Map<String, Value>,
    /// Bound to the topic in the same transaction as the event, so the append stays atomic.
    pub correlate: Option<CorrelationKey>,
    /// When the request carrying it arrived, for the publish-to-push latency metric.
    pub received_at: Instant,
}

fn word(field: &'static str, value: &str) -> Result<(), InvalidField> {
    let ok = !value.is_empty()
        && value.len() <= WORD_MAX
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(InvalidField { field, reason: format!("must be 1..={WORD_MAX} letters, digits or . _ : -") })
    }
}

impl NewTopicEvent {
    pub fn parse(topic: TopicName, input: TopicEventInput, received_at: Instant) -> Result<Self, InvalidField> {
        word("type", &input.kind)?;
        if let Some(status) = &input.status {
            word("status", status)?;
        }
        let progress = match input.progress {
            None => None,
            Some(p @ 0..=100) => Some(p as u8),
            Some(_) => return Err(InvalidField { field: "progress", reason: "must be a whole number 0–100".into() }),
        };
        let data = match input.data {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(InvalidField { field: "data", reason: "must be a JSON object".into() }),
        };
        if encoded_len(&data) > DATA_MAX {
            return Err(InvalidField { field: "data", reason: format!("must be at most {DATA_MAX} bytes as JSON") });
        }
        let correlate = input
            .correlate
            .as_ref()
            .map(CorrelationKey::from_input)
            .transpose()
            .map_err(|e| InvalidField { field: "correlate", reason: e.to_string() })?;
        Ok(Self { topic, kind: input.kind, status: input.status, progress, data, correlate, received_at })
    }
}

pub fn encoded_len(data: &Map<String, Value>) -> usize {
    serde_json::to_vec(data).map_or(usize::MAX, |v| v.len())
}

/// One appended event, as stored, recovered and streamed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicEvent {
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: Option<String>,
    pub progress: Option<u8>,
    pub data: Map<String, Value>,
    pub at: Timestamp,
}

/// A topic's latest state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicState {
    pub topic: TopicName,
    pub seq: u64,
    pub status: Option<String>,
    pub progress: Option<u8>,
    pub data: Map<String, Value>,
    pub updated_at: Timestamp,
    pub expires_at: Timestamp,
}

impl TopicState {
    /// The state a first event starts.
    pub fn empty(topic: TopicName) -> Self {
        Self {
            topic,
            seq: 0,
            status: None,
            progress: None,
            data: Map::new(),
            updated_at: Timestamp(0),
            expires_at: Timestamp(0),
        }
    }

    /// Folds an event in. Progress is kept within a status and reset by a new status without one.
    pub fn apply(&mut self, event: &TopicEvent, expires_at: Timestamp) {
        let status_changed = event.status.is_some() && event.status != self.status;
        if let Some(status) = &event.status {
            self.status = Some(status.clone());
        }
        match event.progress {
            Some(p) => self.progress = Some(p),
            None if status_changed => self.progress = None,
            None => {}
        }
        for (key, value) in &event.data {
            if value.is_null() {
                self.data.remove(key);
            } else {
                self.data.insert(key.clone(), value.clone());
            }
        }
        self.seq = event.seq;
        self.updated_at = event.at;
        self.expires_at = expires_at;
    }
}

/// A committed event with the state it produced: what the hub streams, and what GraphQL and the Redis
/// mirror read.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicChange {
    pub topic: TopicName,
    pub event: TopicEvent,
    pub state: TopicState,
    /// Whether this event changed the topic's status.
    pub status_changed: bool,
    pub received_at: Option<Instant>,
}

pub type SharedChange = Arc<TopicChange>;

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> TopicEventInput {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn events_are_checked() {
        let t = TopicName::parse("order:1").unwrap();
        let now = Instant::now();
        let ok = NewTopicEvent::parse(t.clone(), input(r#"{"type":"routing","progress":10,"data":{"a":1}}"#), now);
        assert_eq!(ok.unwrap().progress, Some(10));
        let bound = input(r#"{"type":"status","status":"broadcast","correlate":{"chain_id":"1","tx_hash":"0xAB"}}"#);
        let key = NewTopicEvent::parse(t.clone(), bound, now).unwrap().correlate.unwrap();
        assert_eq!((key.chain_id, key.tx_hash.as_str(), key.kind.as_str()), (1, "0xab", "mint"));
        let bad = input(r#"{"type":"status","correlate":{"chain_id":1,"tx_hash":"0x a"}}"#);
        assert_eq!(NewTopicEvent::parse(t.clone(), bad, now).unwrap_err().field, "correlate");
        for bad in [
            r#"{"type":""}"#,
            r#"{"type":"a b"}"#,
            r#"{"type":"x","progress":101}"#,
            r#"{"type":"x","progress":-1}"#,
            r#"{"type":"x","data":[1]}"#,
            r#"{"type":"x","status":"ü"}"#,
        ] {
            assert!(NewTopicEvent::parse(t.clone(), input(bad), now).is_err(), "{bad}");
        }
    }

    #[test]
    fn state_merges_data_and_resets_progress_on_a_new_status() {
        let mut s = TopicState::empty(TopicName::parse("intent:1").unwrap());
        let event = |seq, status: Option<&str>, progress, data: Value| TopicEvent {
            seq,
            kind: "status".into(),
            status: status.map(Into::into),
            progress,
            data: data.as_object().cloned().unwrap(),
            at: Timestamp(seq as i64),
        };
        s.apply(&event(1, Some("pending"), Some(5), serde_json::json!({"a": 1, "b": 2})), Timestamp(9));
        s.apply(&event(2, None, None, serde_json::json!({"b": null, "c": 3})), Timestamp(9));
        assert_eq!((s.status.as_deref(), s.progress, s.seq), (Some("pending"), Some(5), 2));
        assert_eq!(Value::Object(s.data.clone()), serde_json::json!({"a": 1, "c": 3}));
        s.apply(&event(3, Some("ready"), None, serde_json::json!({})), Timestamp(9));
        assert_eq!((s.status.as_deref(), s.progress), (Some("ready"), None));
    }
}
