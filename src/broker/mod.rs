//! The cluster broker: how committed inbox events reach the hub of every node.
//!
//! One node needs nothing more than handing events to its own hub ([`Memory`]). Several nodes sharing a
//! PostgreSQL store use [`Cluster`] (`cluster/`): each node delivers its own events to its own connections
//! and publishes them, per user, to the nodes holding that user's connections, which put them back in the
//! user's commit order.

pub mod cluster;
mod memory;

use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;
use tokio::sync::mpsc;

pub use cluster::{Cluster, Headcount};
pub use memory::Memory;

use crate::domain::{InboxEvent, UserId};
use crate::mirror::RedisMirror;
use crate::topics::{Namespaces, SharedChange};

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone)]
pub struct BrokerHealth {
    pub ok: bool,
    pub backend: &'static str,
    /// This node's id in the cluster.
    pub node: String,
    /// The other nodes heard from lately (`None` on one node).
    pub peers: Option<Vec<String>>,
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes events to every node, preserving their order.
    async fn publish(&self, events: Vec<InboxEvent>) -> Result<(), BrokerError>;

    /// Publishes committed topic events to every node, preserving their order.
    async fn publish_topics(&self, changes: Vec<SharedChange>) -> Result<(), BrokerError>;

    /// The user's live connections on every node.
    async fn presence(&self, user: &UserId) -> Result<Headcount, BrokerError>;

    fn health(&self) -> BrokerHealth;

    /// Sends on what is still queued for other nodes (for at most `limit`), then stops.
    async fn shutdown(&self, limit: std::time::Duration) {
        let _ = limit;
    }
}

/// Moves committed events from the store's feed to the broker, one group at a time, in commit order. Ends
/// when the store closes the feed.
pub async fn pump(mut feed: mpsc::Receiver<Vec<InboxEvent>>, broker: Arc<dyn Broker>) {
    while let Some(events) = feed.recv().await {
        let created = events.iter().filter(|e| matches!(e, InboxEvent::Created { .. })).count();
        crate::telemetry::metrics().notifications_created.increment(created as u64);
        if let Err(e) = broker.publish(events).await {
            // Clients recover what they miss by reconnecting with `since`; the store is the source of truth.
            tracing::error!(error = %e, "could not publish committed events");
        }
    }
}

/// Moves committed topic events from the topic store's feed to the broker, in commit order. Ends when the
/// topic store closes its feed.
///
/// The statuses go to the Redis mirror here, on the node that committed them (a broker delivers them to
/// every node; only one must write each), and before the fanout: `offer` only queues, it never waits.
pub async fn topic_pump(
    mut feed: mpsc::Receiver<Vec<SharedChange>>,
    broker: Arc<dyn Broker>,
    mirror: Option<Arc<RedisMirror>>,
    namespaces: Arc<Namespaces>,
) {
    while let Some(changes) = feed.recv().await {
        if let Some(mirror) = &mirror {
            mirror.offer(&changes, &namespaces);
        }
        if let Err(e) = broker.publish_topics(changes).await {
            // Subscribers recover what they miss by subscribing again with `since`.
            tracing::error!(error = %e, "could not publish committed topic events");
        }
    }
}
