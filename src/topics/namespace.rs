//! Per-namespace rules: the lifecycle, how long a topic lives, how much history it keeps, who may watch it,
//! and where its status is mirrored in Redis. Built from the `[topics]` configuration; namespaces nobody
//! configured get the defaults.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Lifecycle, TopicName};

/// Six hours: how long a topic lives after its last event, unless its namespace says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(6 * 3600);
/// The events a topic keeps for recovery, unless its namespace says otherwise.
pub const DEFAULT_HISTORY_EVENTS: usize = 100;
/// The most events a namespace may keep per topic.
pub const MAX_HISTORY_EVENTS: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub lifecycle: Option<Lifecycle>,
    /// Refreshed by each event; an expired topic is unknown (404) and swept.
    pub ttl: Duration,
    pub history_events: usize,
    /// Events older than this are dropped from the history even if fewer than `history_events` remain.
    pub history_age: Duration,
    /// Anyone may watch, without a token.
    pub public: bool,
    /// `SET <key> <status> EX <ttl>` on each status change when Redis is configured; `{id}` is the topic id.
    pub redis_key: Option<String>,
    pub redis_ttl: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            lifecycle: None,
            ttl: DEFAULT_TTL,
            history_events: DEFAULT_HISTORY_EVENTS,
            history_age: DEFAULT_TTL,
            public: false,
            redis_key: None,
            redis_ttl: DEFAULT_TTL,
        }
    }
}

impl Policy {
    /// The Redis key for a topic of this namespace, if it is mirrored.
    pub fn redis_key_for(&self, topic: &TopicName) -> Option<String> {
        self.redis_key.as_ref().map(|template| template.replace("{id}", topic.id()))
    }
}

/// Every namespace's policy.
#[derive(Debug, Clone)]
pub struct Namespaces {
    configured: HashMap<String, Arc<Policy>>,
    default: Arc<Policy>,
}

impl Default for Namespaces {
    fn default() -> Self {
        Self::new(Self::built_in(), Policy::default())
    }
}

impl Namespaces {
    pub fn new(configured: HashMap<String, Policy>, default: Policy) -> Self {
        Self {
            configured: configured.into_iter().map(|(name, policy)| (name, Arc::new(policy))).collect(),
            default: Arc::new(default),
        }
    }

    /// `intent` and `order`, with the lifecycles of the minting and order-routing designs; `intent`'s status
    /// is mirrored at `intent:status:{id}` for six hours, as the minting system's services read it.
    pub fn built_in() -> HashMap<String, Policy> {
        HashMap::from([
            (
                "intent".to_owned(),
                Policy {
                    lifecycle: Some(Lifecycle::intent()),
                    redis_key: Some("intent:status:{id}".into()),
                    ..Policy::default()
                },
            ),
            ("order".to_owned(), Policy { lifecycle: Some(Lifecycle::order()), ..Policy::default() }),
        ])
    }

    pub fn policy(&self, namespace: &str) -> &Arc<Policy> {
        self.configured.get(namespace).unwrap_or(&self.default)
    }

    pub fn of(&self, topic: &TopicName) -> &Arc<Policy> {
        self.policy(topic.namespace())
    }

    /// Every policy, configured ones and the default, to size sweeps and limits.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.configured.values().chain(std::iter::once(&self.default))
    }
}
