//! What every request handler and connection shares.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::auth::User;
use crate::broker::Broker;
use crate::config::{TopicSettings, WsSettings};
use crate::domain::{NotificationId, UserId};
use crate::hub::Hub;
use crate::ingest::amqp::Consumers;
use crate::mirror::RedisMirror;
use crate::store::directory::DirectoryStore;
use crate::store::topics::TopicStore;
use crate::store::{MarkReadOutcome, Store, StoreError};
use crate::topics::TopicName;

/// Shared by every handler and connection. Cloning it (axum does, per request) is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Arc<dyn Store>,
    /// Topic state and history (a file of its own beside the inbox's, with SQLite).
    pub topics: Arc<dyn TopicStore>,
    pub topic_settings: Arc<TopicSettings>,
    /// The GraphQL schema (its resolvers get this state per request).
    pub graphql: crate::transport::graphql::HeraldSchema,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    /// The RabbitMQ consumers, when a broker is configured.
    pub amqp: Option<Arc<Consumers>>,
    /// The email channel, when an SMTP server is configured.
    pub email: Option<Arc<crate::workers::email::EmailChannel>>,
    /// What Herald knows of users (email, display name) and their preferences.
    pub directory: Arc<dyn DirectoryStore>,
    /// The user-sync worker, when a graph database is configured.
    pub sync: Option<Arc<crate::workers::sync::UserSync>>,
    /// The copy of topic statuses in Redis, when Redis is configured.
    pub mirror: Option<Arc<RedisMirror>>,
    pub auth: Arc<Authenticator>,
    pub ws: Arc<WsSettings>,
    /// The rate limits (`[limits]`): frames per connection, calls per API key, connects per address.
    pub limits: Arc<crate::limits::Limits>,
    pub max_body_bytes: usize,
    /// `None` when this process has no Prometheus recorder (a second app in one test process).
    pub prometheus: Option<PrometheusHandle>,
    /// Cancelled when the server starts to stop; live connections close with 1001.
    pub stopping: CancellationToken,
    /// Every live connection's task, so that shutdown can wait for them to finish closing.
    pub connections: TaskTracker,
    /// Backlogs being read or sent at once. Each can hold up to `store::BACKLOG_BYTES` twice (rows, then the
    /// encoded frame), so a reconnect storm waits here instead of growing memory.
    pub backlogs: Arc<tokio::sync::Semaphore>,
    /// The web inbox may mint development tokens: the JWT secret was generated here and the server listens
    /// on loopback only (see `transport::web`).
    pub dev_tokens: bool,
}

impl Shared {
    /// Marks notifications read: committed (and pushed to the user's connections) by the store, then their
    /// pending "if unread after" emails cancelled. Every transport marks read through here.
    pub async fn mark_read(&self, user: &UserId, ids: Vec<NotificationId>) -> Result<MarkReadOutcome, StoreError> {
        let outcome = self.store.mark_read(user, ids).await?;
        if let (Some(email), false) = (&self.email, outcome.newly_read.is_empty()) {
            email.notifications_read(user, Some(&outcome.newly_read)).await;
        }
        Ok(outcome)
    }

    /// Marks every notification of the user read, as [`Shared::mark_read`] does; returns how many changed.
    pub async fn mark_all_read(&self, user: &UserId) -> Result<u64, StoreError> {
        let updated = self.store.mark_all_read(user).await?;
        if let (Some(email), true) = (&self.email, updated > 0) {
            email.notifications_read(user, None).await;
        }
        Ok(updated)
    }

    /// Whether `user` (or anyone, with `None`) may watch `topic`: its namespace is public, or the user's
    /// token grants it. Every transport asks this before subscribing or reading a topic.
    pub fn may_watch(&self, user: Option<&User>, topic: &TopicName) -> bool {
        self.topic_settings.namespaces.of(topic).public || user.is_some_and(|u| u.may_watch(topic))
    }
}
