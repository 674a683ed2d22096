//! Topic storage: each topic's latest state and bounded history, behind a trait.
//!
//! Architecture invariant (as for the inbox): an event is committed before it is acknowledged or streamed.
//! A backend checks each event against its namespace's lifecycle at the point where appends are serialized,
//! gives it the topic's next sequence number, and after the commit emits a [`TopicChange`] per event, in
//! commit order, on the feed it was opened with.

use async_trait::async_trait;

use super::{StoreError, StoreHealth};
use crate::topics::{CorrelationKey, NewTopicEvent, Refusal, TopicEvent, TopicName, TopicState};

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

    async fn health(&self) -> StoreHealth;

    /// Finishes every accepted append, then stops. Idempotent.
    async fn shutdown(&self);
}
