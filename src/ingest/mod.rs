//! Ingestion: the ways producers say that something happened for someone.
//!
//! The HTTP publish API (`http`) and RabbitMQ consumers (`amqp`); both turn what arrives into the same
//! validated `NewNotification`s and hand them to the store.

pub mod amqp;
pub mod http;
