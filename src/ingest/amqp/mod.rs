//! RabbitMQ ingestion: consumers that read durable queues and hand each message to a [`Handler`].
//!
//! The consumer is generic (`consumer.rs`: groups, acks after commit, retries through delay queues,
//! dead-lettering with publisher confirms, reconnects); the notification mapping (`notifications.rs`) is
//! one handler of it, the chain events matched to intents (`chain.rs`) another, the email requests
//! (`emails.rs`) a third; the user-sync worker is meant to be another. `topology.rs` declares
//! what a queue needs, `retry.rs` decides what happens after a failure, `dlq.rs` holds the operator's
//! tools behind `herald dlq`.
//!
//! Architecture invariant: **a message is acked only after what it produced is committed** (or its copy
//! in a delay or dead-letter queue is confirmed by the broker).

pub mod chain;
pub mod consumer;
pub mod dlq;
pub mod emails;
pub mod message;
pub mod notifications;
pub mod retry;
pub mod status;
pub mod sync;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use consumer::{ConsumerSpec, Handler, Outcome};
pub use message::Message;
pub use status::ConsumerHealth;

use crate::config::amqp::{AmqpSettings, ConsumerSettings, Shape};
use crate::correlation::Finder;
use crate::store::topics::TopicStore;
use crate::store::Store;
use crate::topics::Namespaces;
use crate::workers::email::EmailChannel;
use chain::ChainHandler;
use emails::EmailHandler;
use notifications::{Mapping, NotificationHandler};
use status::Status;
use topology::QueueTopology;

#[derive(Debug, Error)]
pub enum AmqpError {
    #[error("cannot connect to the broker: {0}")]
    Connect(#[source] lapin::Error),
    #[error("{what}: {source}")]
    Topology { what: String, source: lapin::Error },
    #[error("{0}")]
    Broker(#[from] lapin::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("the broker did not confirm the copy sent to {queue}")]
    NotConfirmed { queue: String },
    #[error("the broker ended the consumer (the connection closed, or the queue was deleted)")]
    ConsumerEnded,
    #[error("the handler failed: {0}")]
    Handler(String),
    #[error("stopping")]
    Stopping,
    #[error("{0}")]
    Config(String),
}

/// What the handlers write to: the inbox for notifications; the topics, and the way to find an intent, for
/// chain events.
#[derive(Clone)]
pub struct Sinks {
    pub store: Arc<dyn Store>,
    pub topics: Arc<dyn TopicStore>,
    pub namespaces: Arc<Namespaces>,
    pub finder: Arc<Finder>,
    /// The email channel, when one is configured (an `email` consumer needs it).
    pub email: Option<Arc<EmailChannel>>,
    /// The user-sync worker, when a graph database is configured (a `user_sync` consumer needs it).
    pub sync: Option<Arc<crate::workers::sync::UserSync>>,
}

/// Every running consumer of this node: started with the server, stopped before the store.
pub struct Consumers {
    statuses: Vec<Arc<Status>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Consumers {
    /// Starts one consumer per configured queue, with the handler its shape calls for. Nothing here waits for
    /// the broker: a broker that is down shows as `connecting`/`down` in `/health` while Herald serves
    /// everything else.
    pub fn start(settings: &AmqpSettings, sinks: &Sinks) -> Self {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut statuses = Vec::with_capacity(settings.consumers.len());
        for consumer in &settings.consumers {
            let status = Arc::new(Status::new(&consumer.queue, consumer.required));
            let handler: Arc<dyn Handler> = match &consumer.shape {
                Shape::Chain(fields) => Arc::new(ChainHandler::new(
                    sinks.topics.clone(),
                    sinks.finder.clone(),
                    sinks.namespaces.clone(),
                    fields.clone(),
                    consumer.retry.attempts,
                )),
                Shape::Email { pattern } => match &sinks.email {
                    Some(channel) => Arc::new(EmailHandler::new(channel.clone(), pattern.clone())),
                    // The settings refuse an email consumer without the channel; this is the same check.
                    None => {
                        tracing::error!(
                            queue = consumer.queue,
                            "an email consumer without the email channel; not started"
                        );
                        continue;
                    }
                },
                Shape::UserSync => match &sinks.sync {
                    Some(sync) => Arc::new(sync::SyncHandler::new(sync.clone())),
                    // The settings refuse a user_sync consumer without the graph; this is the same check.
                    None => {
                        tracing::error!(queue = consumer.queue, "a user_sync consumer without the graph; not started");
                        continue;
                    }
                },
                shape => Arc::new(NotificationHandler::new(
                    sinks.store.clone(),
                    sinks.email.clone(),
                    Mapping { shape: shape.clone(), idempotency_field: consumer.idempotency_field.clone() },
                )),
            };
            tasks.spawn(consumer::run(
                settings.url.clone(),
                spec(consumer),
                handler,
                status.clone(),
                stop.child_token(),
            ));
            statuses.push(status);
        }
        tasks.close();
        Self { statuses, tasks, stop }
    }

    pub fn health(&self) -> Vec<ConsumerHealth> {
        self.statuses.iter().map(|s| s.health()).collect()
    }

    /// True unless a required consumer is not consuming.
    pub fn ok(&self) -> bool {
        self.statuses.iter().all(|s| s.ok())
    }

    /// Tells every consumer to stop taking messages; each finishes (and acks) the group it holds.
    pub fn begin_stop(&self) {
        self.stop.cancel();
    }

    /// Stops every consumer and waits (bounded) until they have closed their connections.
    pub async fn stop(&self, timeout: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(timeout, self.tasks.wait()).await.is_err() {
            tracing::warn!("some AMQP consumers did not stop in time");
        }
    }
}

/// The generic consumer settings of a consumer.
pub fn spec(consumer: &ConsumerSettings) -> ConsumerSpec {
    ConsumerSpec {
        topology: QueueTopology {
            queue: consumer.queue.clone(),
            exchange: consumer.exchange.clone(),
            retry: consumer.retry.clone(),
        },
        consumer_tag: consumer.consumer_tag.clone(),
        prefetch: consumer.prefetch,
    }
}
