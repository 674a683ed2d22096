//! The chain-event consumer: a domain event about a transaction on a chain (the minting system's
//! `mints.domain` `upserted.*`, say) is matched to the intent that sent the transaction, and the intent's
//! topic is taken to `ready` with what the chain says: `contract`, `tokenIds`, `txHash`, `chainId`.
//!
//! Architecture invariant: **a chain event is never dropped.** Each message ends one of three ways:
//! - **matched**: appended to its topic (or found there already: a redelivery appends nothing), then acked;
//! - **retried**: no intent is known for it yet (the event raced ahead of the intent's registration or its
//!   row), or the store or the lookup failed: it goes through the consumer's delay queues with backoff, so
//!   it never holds up the messages behind it, and after the last attempt it is dead-lettered with the
//!   reason;
//! - **dead-lettered at once**: it can never be matched (not JSON, no hash, an intent already `failed`).
//!
//! An intent may be behind the chain (still `pending`, `broadcast` or `confirming`, or unknown): the statuses
//! on its lifecycle's shortest path to `ready` are appended first, each with `data.inferred = true`, all in
//! one atomic append with `ready` itself (which clears `inferred` from the merged state again).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures_util::StreamExt;
use metrics::Counter;
use serde_json::{Map, Value};

use super::consumer::{Handler, Outcome};
use super::message::{json_path, Message};
use super::notifications::MAX_MESSAGE_BYTES;
use crate::config::amqp::ChainFields;
use crate::correlation::{FindError, Finder};
use crate::store::topics::{Rejection, TopicStore};
use crate::store::StoreError;
use crate::topics::event::{encoded_len, DATA_MAX};
use crate::topics::{CorrelationKey, Lifecycle, Namespaces, NewTopicEvent, TopicName};

/// The type of every event this consumer appends.
pub const EVENT_TYPE: &str = "chain";
/// Messages of one group matched at once (each is a read, maybe a lookup, and an append).
const CONCURRENCY: usize = 8;
/// How often an append is computed again when the topic moved between reading its state and appending.
const RACES: usize = 3;
/// The longest contract address taken.
const CONTRACT_MAX: usize = 256;

/// A chain event, decoded and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainEvent {
    pub key: CorrelationKey,
    pub contract: String,
    pub token_ids: Vec<Value>,
}

/// Reads a message with the configured fields (dotted paths); the error is the reason it is poison.
pub fn decode(fields: &ChainFields, body: &[u8]) -> Result<ChainEvent, String> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(format!("the body is {} bytes, over the limit of {MAX_MESSAGE_BYTES}", body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
    let object: Value = serde_json::from_str(text).map_err(|e| format!("the body is not JSON: {e}"))?;
    if !object.is_object() {
        return Err("the body is not a JSON object".into());
    }
    let required = |path: &str| {
        json_path(&object, path).filter(|v| !v.is_null()).ok_or_else(|| format!("the event has no {path:?} field"))
    };
    let chain_id = required(&fields.chain_id)?;
    let tx_hash = required(&fields.tx_hash)?;
    let kind = match &fields.kind_field {
        Some(path) => required(path)?.clone(),
        None => Value::String(fields.kind.clone()),
    };
    let key = CorrelationKey::parse(chain_id, tx_hash, Some(&kind)).map_err(|e| {
        let path = match e.field {
            "chain_id" => fields.chain_id.as_str(),
            "tx_hash" => fields.tx_hash.as_str(),
            _ => fields.kind_field.as_deref().unwrap_or("kind"),
        };
        format!("field {path:?} {}", e.reason)
    })?;
    let contract = match required(&fields.contract)? {
        Value::String(c) if !c.is_empty() && c.len() <= CONTRACT_MAX && !c.chars().any(char::is_control) => c.clone(),
        _ => return Err(format!("field {:?} must be 1..={CONTRACT_MAX} bytes of text", fields.contract)),
    };
    let token_ids = match required(&fields.token_ids)? {
        Value::Array(ids) if ids.iter().all(|id| id.is_string() || id.is_number()) => ids.clone(),
        _ => return Err(format!("field {:?} must be an array of token ids (strings or numbers)", fields.token_ids)),
    };
    Ok(ChainEvent { key, contract, token_ids })
}

/// What a chain event does to a topic now at `current`.
#[derive(Debug)]
pub enum Plan {
    /// The topic is at the target status already: a redelivery, or another event of the same transaction.
    Nothing,
    /// These events, in one append.
    Append(Vec<NewTopicEvent>),
}

/// The events that take `topic` from `current` to `target` with `event`'s data; the error is why the event
/// can never be applied (a final status other than the target, or no way there).
pub fn plan(
    topic: &TopicName,
    lifecycle: Option<&Lifecycle>,
    current: Option<&str>,
    target: &str,
    event: &ChainEvent,
    received_at: Instant,
) -> Result<Plan, String> {
    if current == Some(target) {
        return Ok(Plan::Nothing);
    }
    let path = match lifecycle {
        None => vec![target.to_owned()],
        Some(lifecycle) => lifecycle.path(current, target).ok_or_else(|| match current {
            Some(now) if lifecycle.is_terminal(now) => {
                format!("{topic} is {now}, a final status: the chain event cannot make it {target}")
            }
            Some(now) => format!("{topic}'s lifecycle has no way from {now} to {target}"),
            None => format!("{topic}'s lifecycle has no way to {target}"),
        })?,
    };
    let inferred = path.len() - 1;
    let new = |status: String, data: Map<String, Value>| NewTopicEvent {
        topic: topic.clone(),
        kind: EVENT_TYPE.to_owned(),
        status: Some(status),
        progress: None,
        data,
        correlate: None,
        received_at,
    };
    let mut events: Vec<NewTopicEvent> = path
        .into_iter()
        .take(inferred)
        .map(|status| new(status, Map::from_iter([("inferred".to_owned(), Value::Bool(true))])))
        .collect();
    let mut data = Map::new();
    data.insert("contract".into(), Value::String(event.contract.clone()));
    data.insert("tokenIds".into(), Value::Array(event.token_ids.clone()));
    data.insert("txHash".into(), Value::String(event.key.tx_hash.clone()));
    data.insert("chainId".into(), Value::from(event.key.chain_id));
    if inferred > 0 {
        // The merged state says what the intent is now; the history keeps which steps were inferred.
        data.insert("inferred".into(), Value::Null);
    }
    if encoded_len(&data) > DATA_MAX {
        return Err(format!("the event's data would be over {DATA_MAX} bytes"));
    }
    events.push(new(target.to_owned(), data));
    Ok(Plan::Append(events))
}

/// `herald_chain_events_total{outcome}`, resolved once.
struct ChainMetrics {
    matched: Counter,
    duplicate: Counter,
    retried: Counter,
    not_found_dead_lettered: Counter,
    error: Counter,
    poison: Counter,
}

impl ChainMetrics {
    fn new() -> Self {
        let counter = |outcome: &'static str| metrics::counter!("herald_chain_events_total", "outcome" => outcome);
        Self {
            matched: counter("matched"),
            duplicate: counter("duplicate"),
            retried: counter("retried"),
            not_found_dead_lettered: counter("not_found_dead_lettered"),
            error: counter("error"),
            poison: counter("poison"),
        }
    }
}

pub struct ChainHandler {
    topics: Arc<dyn TopicStore>,
    finder: Arc<Finder>,
    namespaces: Arc<Namespaces>,
    fields: ChainFields,
    /// The consumer's retry attempts, to tell a miss that comes back from the last one.
    attempts: u32,
    metrics: ChainMetrics,
}

impl ChainHandler {
    pub fn new(
        topics: Arc<dyn TopicStore>,
        finder: Arc<Finder>,
        namespaces: Arc<Namespaces>,
        fields: ChainFields,
        attempts: u32,
    ) -> Self {
        Self { topics, finder, namespaces, fields, attempts, metrics: ChainMetrics::new() }
    }

    async fn settle(&self, message: &Message) -> Outcome {
        let event = match decode(&self.fields, &message.body) {
            Ok(event) => event,
            Err(reason) => return self.poison(reason),
        };
        let topic = match self.finder.find(&event.key).await {
            Ok(Some((topic, via))) => {
                tracing::debug!(key = %event.key, %topic, via = via.as_str(), "matched a chain event");
                topic
            }
            Ok(None) => return self.not_found(message, &event),
            Err(FindError::Store(StoreError::Closed)) => return Outcome::Requeue,
            Err(e @ FindError::BadId { .. }) => return self.poison(e.to_string()),
            Err(e) => return self.failed(e.to_string()),
        };
        self.apply(&topic, &event, message.received_at).await
    }

    /// Appends what takes `topic` to the target status. If the topic moved between the read and the append
    /// (the append is checked against the lifecycle where appends are serialized, and refused whole), it is
    /// planned again from the new state.
    async fn apply(&self, topic: &TopicName, event: &ChainEvent, received_at: Instant) -> Outcome {
        let lifecycle = self.namespaces.of(topic).lifecycle.as_ref();
        for _ in 0..RACES {
            let state = match self.topics.state(topic).await {
                Ok(state) => state,
                Err(StoreError::Closed) => return Outcome::Requeue,
                Err(e) => return self.failed(e.to_string()),
            };
            let current = state.as_ref().and_then(|s| s.status.as_deref());
            let events = match plan(topic, lifecycle, current, &self.fields.status, event, received_at) {
                Ok(Plan::Nothing) => {
                    self.metrics.duplicate.increment(1);
                    return Outcome::Done;
                }
                Ok(Plan::Append(events)) => events,
                Err(reason) => return self.poison(reason),
            };
            match self.topics.append(events).await {
                Ok(Ok(_)) => {
                    self.metrics.matched.increment(1);
                    return Outcome::Done;
                }
                Ok(Err(refused)) if matches!(refused.rejection, Rejection::Lifecycle(_)) => continue,
                Ok(Err(refused)) => return self.poison(format!("{topic} refused the event: {:?}", refused.rejection)),
                Err(StoreError::Closed) => return Outcome::Requeue,
                Err(e) => return self.failed(e.to_string()),
            }
        }
        self.failed(format!("{topic} kept changing while the chain event was applied"))
    }

    fn not_found(&self, message: &Message, event: &ChainEvent) -> Outcome {
        // The consumer dead-letters once the attempts are used up (`retry::next_step`).
        if message.attempt.saturating_add(1) >= self.attempts {
            self.metrics.not_found_dead_lettered.increment(1);
        } else {
            self.metrics.retried.increment(1);
        }
        let tried = if self.finder.has_lookup() {
            "no correlation is registered and the PostgreSQL lookup found no row"
        } else {
            "no correlation is registered (and no lookup is configured)"
        };
        Outcome::Transient(format!("no intent found yet for {}: {tried}", event.key))
    }

    fn failed(&self, reason: String) -> Outcome {
        self.metrics.error.increment(1);
        Outcome::Transient(reason)
    }

    fn poison(&self, reason: String) -> Outcome {
        self.metrics.poison.increment(1);
        Outcome::Poison(reason)
    }
}

#[async_trait]
impl Handler for ChainHandler {
    async fn handle(&self, group: &[Message]) -> Vec<Outcome> {
        // A few at a time, in order: one event waiting on a slow lookup does not hold up the rest of the group,
        // and two deliveries of one event race harmlessly (the second append is refused and planned again).
        // (The futures are made first: a stream with a closure in it would not be `Send` for every lifetime.)
        let settling: Vec<_> = group.iter().map(|m| self.settle(m)).collect();
        futures_util::stream::iter(settling).buffered(CONCURRENCY).collect().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lapin::BasicProperties;
    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;
    use crate::config::{CorrelationSettings, Synchronous};
    use crate::store::sqlite::SqliteTopics;

    fn fields() -> ChainFields {
        ChainFields {
            chain_id: "chain_id".into(),
            tx_hash: "tx_hash".into(),
            contract: "contract".into(),
            token_ids: "tokenIds".into(),
            kind_field: None,
            kind: "mint".into(),
            status: "ready".into(),
        }
    }

    fn body(value: Value) -> Vec<u8> {
        value.to_string().into_bytes()
    }

    fn mint(tx: &str) -> Value {
        json!({"chain_id": 1, "tx_hash": tx, "contract": "0xC0", "tokenIds": ["7", 8]})
    }

    #[test]
    fn events_are_read_with_the_configured_fields() {
        let e = decode(&fields(), &body(mint("0xAB"))).unwrap();
        assert_eq!((e.key.chain_id, e.key.tx_hash.as_str(), e.key.kind.as_str()), (1, "0xab", "mint"));
        assert_eq!((e.contract.as_str(), e.token_ids.clone()), ("0xC0", vec![json!("7"), json!(8)]));
        let nested = ChainFields {
            chain_id: "tx.chain".into(),
            tx_hash: "tx.hash".into(),
            kind_field: Some("op".into()),
            ..fields()
        };
        let e = decode(
            &nested,
            &body(json!({"tx": {"chain": "137", "hash": "0xcd"}, "op": "burn", "contract": "c", "tokenIds": []})),
        )
        .unwrap();
        assert_eq!((e.key.chain_id, e.key.kind.as_str()), (137, "burn"));
    }

    #[test]
    fn poison_says_what_is_wrong() {
        let reason = |v: Value| decode(&fields(), &body(v)).unwrap_err();
        assert!(reason(json!({"chain_id": 1, "contract": "c", "tokenIds": []})).contains("\"tx_hash\""));
        assert!(
            reason(json!({"chain_id": -1, "tx_hash": "0xab", "contract": "c", "tokenIds": []})).contains("chain_id")
        );
        assert!(reason(json!({"chain_id": 1, "tx_hash": "0x a", "contract": "c", "tokenIds": []})).contains("tx_hash"));
        assert!(reason(json!({"chain_id": 1, "tx_hash": "0xab", "contract": 5, "tokenIds": []})).contains("contract"));
        assert!(
            reason(json!({"chain_id": 1, "tx_hash": "0xab", "contract": "c", "tokenIds": "7"})).contains("tokenIds")
        );
        assert!(reason(json!([1])).contains("not a JSON object"));
        assert!(decode(&fields(), b"nope").unwrap_err().contains("not JSON"));
    }

    fn topic(name: &str) -> TopicName {
        TopicName::parse(name).unwrap()
    }

    fn statuses(plan: Plan) -> Vec<(String, Value)> {
        let Plan::Append(events) = plan else { panic!("nothing to append") };
        events.into_iter().map(|e| (e.status.unwrap(), Value::Object(e.data))).collect()
    }

    #[test]
    fn an_intent_behind_the_chain_catches_up_with_inferred_steps() {
        let l = Lifecycle::intent();
        let event = decode(&fields(), &body(mint("0xab"))).unwrap();
        let t = topic("intent:42");
        let now = Instant::now();
        let from_broadcast = statuses(plan(&t, Some(&l), Some("broadcast"), "ready", &event, now).unwrap());
        assert_eq!(from_broadcast[0], ("confirming".into(), json!({"inferred": true})));
        assert_eq!(
            from_broadcast[1],
            (
                "ready".into(),
                json!({"contract": "0xC0", "tokenIds": ["7", 8], "txHash": "0xab", "chainId": 1, "inferred": null})
            )
        );
        let from_nothing = statuses(plan(&t, Some(&l), None, "ready", &event, now).unwrap());
        let names: Vec<&str> = from_nothing.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["pending", "broadcast", "confirming", "ready"]);
        let direct = statuses(plan(&t, Some(&l), Some("confirming"), "ready", &event, now).unwrap());
        assert_eq!(direct.len(), 1);
        assert!(direct[0].1.get("inferred").is_none(), "nothing was inferred: {direct:?}");
        assert!(matches!(plan(&t, Some(&l), Some("ready"), "ready", &event, now), Ok(Plan::Nothing)));
        let failed = plan(&t, Some(&l), Some("failed"), "ready", &event, now).unwrap_err();
        assert!(failed.contains("intent:42 is failed, a final status"), "{failed}");
        assert_eq!(statuses(plan(&t, None, Some("whatever"), "ready", &event, now).unwrap()).len(), 1);
    }

    fn message(value: Value, attempt: u32) -> Message {
        Message {
            body: body(value),
            properties: BasicProperties::default(),
            exchange: "mints.domain".into(),
            routing_key: "upserted.mint".into(),
            attempt,
            redelivered: false,
            received_at: Instant::now(),
            delivery_tag: 1,
        }
    }

    #[tokio::test]
    async fn a_group_is_matched_retried_or_dead_lettered_message_by_message() {
        let dir = tempfile::tempdir().unwrap();
        let namespaces = Arc::new(Namespaces::default());
        let (feed, mut changes) = mpsc::channel(64);
        tokio::spawn(async move { while changes.recv().await.is_some() {} });
        let topics: Arc<dyn TopicStore> = Arc::new(
            SqliteTopics::open(
                &dir.path().join("t.db"),
                Synchronous::Normal,
                Duration::from_secs(1),
                namespaces.clone(),
                feed,
            )
            .unwrap(),
        );
        let finder = Arc::new(Finder::new(topics.clone(), &CorrelationSettings::default()).unwrap());
        let handler = ChainHandler::new(topics.clone(), finder, namespaces, fields(), 3);
        let key = CorrelationKey::new(1, "0xAA", "mint").unwrap();
        assert!(topics.correlate(key, topic("intent:1")).await.unwrap().is_ok());

        let group = [
            message(mint("0xaa"), 0),
            message(mint("0xbb"), 0),
            message(json!({"chain_id": 1}), 0),
            message(mint("0xAA"), 0),
        ];
        let outcomes = handler.handle(&group).await;
        assert_eq!(outcomes[0], Outcome::Done);
        assert!(matches!(&outcomes[1], Outcome::Transient(r) if r.contains("no intent found yet")), "{outcomes:?}");
        assert!(matches!(&outcomes[2], Outcome::Poison(r) if r.contains("tx_hash")), "{outcomes:?}");
        assert_eq!(outcomes[3], Outcome::Done, "the same transaction again appends nothing");
        let state = topics.state(&topic("intent:1")).await.unwrap().unwrap();
        assert_eq!((state.status.as_deref(), state.seq), (Some("ready"), 4));
        assert_eq!(
            state.data,
            Map::from_iter([
                ("contract".to_owned(), json!("0xC0")),
                ("tokenIds".to_owned(), json!(["7", 8])),
                ("txHash".to_owned(), json!("0xaa")),
                ("chainId".to_owned(), json!(1)),
            ])
        );
        topics.shutdown().await;
    }
}
