//! Ingestion: the ways producers say that something happened for someone.
//!
//! The HTTP publish API (`http`) and RabbitMQ consumers (`amqp`) turn what arrives into the same validated
//! `NewNotification`s and hand them to the store; `topics` is the publish API of topic events (status
//! streams), which the topic store checks against lifecycles; `correlations` binds chain transactions to
//! topics, for the chain-event consumer (`amqp::chain`) to find the intent a transaction belongs to;
//! `emails` takes requests for the email channel (`workers::email`); `users` is the user directory a
//! publisher keeps (recipients and names for notifications' emails); `sync` re-syncs one user into the graph
//! (`workers::sync`; the `neo4j_sync_queue` consumer is `amqp::sync`).

pub mod amqp;
pub mod correlations;
pub mod emails;
pub mod http;
pub mod sync;
pub mod topics;
pub mod users;
