//! Topic storage: each topic's latest state and bounded history, behind a trait.
//!
//! Architecture invariant (as for the inbox): an event is committed before it is acknowledged or streamed.
//! A backend checks each event against its namespace's lifecycle at the point where appends are serialized,
//! gives it the topic's next sequence number, and after the commit emits a [`TopicChange`] per event, in
//! commit order, on the feed it was opened with.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use super::{StoreError, StoreHealth};
use crate::domain::Timestamp;
use crate::topics::event::{encoded_len, DATA_MAX};
use crate::topics::lifecycle::Current;
use crate::topics::{
    CorrelationKey, Namespaces, NewTopicEvent, Refusal, TopicChange, TopicEvent, TopicName, TopicState,
};

/// The most event content one recovery holds; a history longer than this is treated as gone (the client
/// starts again from the state), so a subscribe costs bounded memory whatever the events hold.
pub const RECOVERY_BYTES: usize = 1024 * 1024;

/// Why an append was refused. Nothing of the append was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The event breaks its namespace's lifecycle.
    Lifecycle(Refusal),
    /// The topic's merged `data` would grow past [`crate::topics::event::DATA_MAX`].
    StateTooLarge,
    /// The event's `correlate` key is bound to another live topic.
    CorrelationConflict(Conflict),
}

/// A correlation key that is already bound to another topic, which has not expired: a key names one
/// transaction, and one transaction belongs to one intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub key: CorrelationKey,
    pub bound_to: TopicName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The position of the refused event in the append.
    pub index: usize,
    pub topic: TopicName,
    /// The topic's status before the refused event (after the append's earlier events).
    pub current: Option<String>,
    pub rejection: Rejection,
}

/// What a subscriber recovering from `since` is given, read at one point in time.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// `None`: the topic is unknown or has expired.
    pub state: Option<TopicState>,
    /// The events after `since`, oldest first (none when `since` was not given).
    pub events: Vec<TopicEvent>,
    /// The history no longer reaches back to `since`: the events are not all there, start from the state.
    pub gone: bool,
}

#[async_trait]
pub trait TopicStore: Send + Sync + 'static {
    /// Appends events in order, atomically: each gets its topic's next sequence number (returned, in order),
    /// or none is stored and the first refused one is named.
    async fn append(&self, events: Vec<NewTopicEvent>) -> Result<Result<Vec<u64>, Refused>, StoreError>;

    /// The topic's latest state; `None` when it is unknown or expired.
    async fn state(&self, topic: &TopicName) -> Result<Option<TopicState>, StoreError>;

    /// The state and, with `since`, the events after it (at most `limit`).
    async fn recover(&self, topic: &TopicName, since: Option<u64>, limit: usize) -> Result<Recovery, StoreError>;

    /// Binds a chain transaction to a topic, for as long as a topic of its namespace lives (the namespace's
    /// TTL from now). Binding a key to the topic it is bound to again renews it; binding it to another topic
    /// while the first binding lives is refused, and changes nothing.
    async fn correlate(&self, key: CorrelationKey, topic: TopicName) -> Result<Result<(), Conflict>, StoreError>;

    /// The topic a live correlation binds `key` to.
    async fn find_correlation(&self, key: &CorrelationKey) -> Result<Option<TopicName>, StoreError>;

    /// Topics that have not expired.
    async fn live_topics(&self) -> Result<u64, StoreError>;

    /// Each topic's position: the `seq` of its latest event, 0 for one unknown or expired.
    async fn positions(&self, topics: &[TopicName]) -> Result<Vec<u64>, StoreError> {
        let mut all = Vec::with_capacity(topics.len());
        for topic in topics {
            all.push(self.state(topic).await?.map_or(0, |state| state.seq));
        }
        Ok(all)
    }

    async fn health(&self) -> StoreHealth;

    /// Finishes every accepted append, then stops. Idempotent.
    async fn shutdown(&self);
}

/// An append's work, checked: the changes to write and stream, the topics whose stale rows go first, and
/// the correlations its events bind.
pub struct Checked {
    pub changes: Vec<TopicChange>,
    pub restarted: Vec<TopicName>,
    pub finals: HashMap<TopicName, TopicState>,
    pub correlations: Vec<(CorrelationKey, TopicName)>,
}

/// A topic's data as stored: the JSON object's text.
pub fn json(data: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned())
}

/// Stored data back to an object (anything else, which only a hand-edited row could hold, as empty).
pub fn object(text: &str) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// Queues `make()` on `commands` every `period` (skipped when the queue is full) while the queue lives;
/// without a runtime (a synchronous caller), nothing.
pub fn every<C: Send + 'static>(period: Duration, commands: tokio::sync::mpsc::WeakSender<C>, make: fn() -> C) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Some(commands) = commands.upgrade() else { return };
            let _ = commands.try_send(make());
        }
    });
}

/// A duration in milliseconds, as stored.
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Checks an append against the topics' states and lifecycles and the correlations' bindings, without
/// writing. `load` gives a topic's live state and whether a stale (expired, unswept) row is in its way;
/// `bound` the topic a live correlation binds a key to. Both must see the group's earlier appends.
pub fn check(
    namespaces: &Namespaces,
    events: &[NewTopicEvent],
    now: Timestamp,
    mut load: impl FnMut(&TopicName) -> Result<(Option<TopicState>, bool), StoreError>,
    mut bound: impl FnMut(&CorrelationKey) -> Result<Option<TopicName>, StoreError>,
) -> Result<Result<Checked, Refused>, StoreError> {
    let mut finals: HashMap<TopicName, TopicState> = HashMap::new();
    let mut restarted = Vec::new();
    let mut changes = Vec::with_capacity(events.len());
    let mut correlations: Vec<(CorrelationKey, TopicName)> = Vec::new();
    for (index, new) in events.iter().enumerate() {
        let policy = namespaces.of(&new.topic);
        if !finals.contains_key(&new.topic) {
            let (state, stale) = load(&new.topic)?;
            if stale {
                restarted.push(new.topic.clone());
            }
            finals.insert(new.topic.clone(), state.unwrap_or_else(|| TopicState::empty(new.topic.clone())));
        }
        let Some(state) = finals.get_mut(&new.topic) else {
            return Err(StoreError::Internal("a checked topic went missing".into()));
        };
        let refuse = |rejection| Refused { index, topic: new.topic.clone(), current: state.status.clone(), rejection };
        if let Some(lifecycle) = &policy.lifecycle {
            let current = Current { status: state.status.as_deref(), progress: state.progress };
            if let Err(refusal) = lifecycle.check(current, new.status.as_deref(), new.progress) {
                return Ok(Err(refuse(Rejection::Lifecycle(refusal))));
            }
        }
        let event = TopicEvent {
            seq: state.seq + 1,
            kind: new.kind.clone(),
            status: new.status.clone(),
            progress: new.progress,
            data: new.data.clone(),
            at: now,
        };
        let mut next = state.clone();
        next.apply(&event, Timestamp(now.0.saturating_add(ms(policy.ttl))));
        if encoded_len(&next.data) > DATA_MAX {
            return Ok(Err(refuse(Rejection::StateTooLarge)));
        }
        if let Some(key) = &new.correlate {
            // Bound earlier in this append, or before it (earlier appends of the group are written already).
            let earlier = correlations.iter().find(|(k, _)| k == key).map(|(_, t)| t.clone());
            let bound_to = match earlier {
                Some(topic) => Some(topic),
                None => bound(key)?,
            };
            match bound_to {
                Some(bound_to) if bound_to != new.topic => {
                    return Ok(Err(refuse(Rejection::CorrelationConflict(Conflict { key: key.clone(), bound_to }))));
                }
                _ => correlations.push((key.clone(), new.topic.clone())),
            }
        }
        let status_changed = next.status != state.status;
        *state = next.clone();
        changes.push(TopicChange {
            topic: new.topic.clone(),
            event,
            state: next,
            status_changed,
            received_at: Some(new.received_at),
        });
    }
    Ok(Ok(Checked { changes, restarted, finals, correlations }))
}

/// A recovery, in two steps: the state alone, then (when it does not answer) the events after `since`.
pub mod recovery {
    use super::{Recovery, RECOVERY_BYTES};
    use crate::topics::event::encoded_len;
    use crate::topics::{TopicEvent, TopicState};

    /// `Ok`: the state answers (no `since`, an unknown topic, or nothing after `since`). `Err`: the events
    /// after `since` must be read, then given to [`with_events`].
    #[allow(clippy::result_large_err)]
    pub fn from_state(state: Option<TopicState>, since: Option<u64>) -> Result<Recovery, (TopicState, u64)> {
        let Some(since) = since else {
            return Ok(Recovery { state, events: Vec::new(), gone: false });
        };
        let Some(current) = state else {
            // Unknown or expired: whatever the client saw is gone, unless it saw nothing.
            return Ok(Recovery { state: None, events: Vec::new(), gone: since > 0 });
        };
        if since >= current.seq {
            return Ok(Recovery { gone: since > current.seq, state: Some(current), events: Vec::new() });
        }
        Err((current, since))
    }

    /// The events read after `since` (oldest first), or none and `gone` if they do not reach from `since` to
    /// the state, or hold more than [`RECOVERY_BYTES`].
    pub fn with_events(state: TopicState, since: u64, events: Vec<TopicEvent>) -> Recovery {
        let size: usize = events.iter().map(|e| 128 + e.kind.len() + encoded_len(&e.data)).sum();
        let complete = size <= RECOVERY_BYTES
            && events.first().is_some_and(|e| e.seq == since + 1)
            && events.last().is_some_and(|e| e.seq == state.seq);
        if complete {
            Recovery { state: Some(state), events, gone: false }
        } else {
            Recovery { state: Some(state), events: Vec::new(), gone: true }
        }
    }
}
