//! RabbitMQ, as both ends of the `amqp` mode use it: the bench's publisher (`publish.rs`) and
//! the floor's consumer (`floor/amqp.rs`). Both connect the same way, with no TLS, on the
//! process's tokio runtime.

pub mod publish;

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind};

/// How long connecting (TCP, AMQP handshake, opening the virtual host) may take before the
/// run gives up: a broker that accepts the TCP connection but never answers must not hang it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("cannot connect to RabbitMQ at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error(
        "queue {queue:?} does not exist at {url}: start the server under test with its AMQP \
         consumer on this virtual host first (Herald: HERALD_AMQP_URL; the floor: --amqp-url)"
    )]
    NoQueue { queue: String, url: String },
    #[error(
        "nobody consumes queue {queue:?} at {url}: start the server under test with its AMQP \
         consumer on this virtual host first (Herald: HERALD_AMQP_URL; the floor: --amqp-url)"
    )]
    NoConsumer { queue: String, url: String },
    #[error("{what}: {source}")]
    Protocol {
        what: &'static str,
        #[source]
        source: lapin::Error,
    },
}

impl AmqpError {
    pub fn protocol(what: &'static str) -> impl FnOnce(lapin::Error) -> Self {
        move |source| Self::Protocol { what, source }
    }
}

/// Connects to `url`, naming the connection `name` in the broker's management views.
pub async fn connect(url: &str, name: &str) -> Result<Connection, AmqpError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let failed = |reason: String| AmqpError::Connect { url: redact(url), reason };
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(failed(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))),
    }
}

/// Declares `queue` durable, as Herald does, so that what is published to it survives a
/// broker restart and both servers can consume the same queue shape.
pub async fn declare_durable(channel: &Channel, queue: &str) -> Result<(), AmqpError> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() },
            FieldTable::default(),
        )
        .await
        .map(drop)
        .map_err(AmqpError::protocol("declaring the queue"))
}

/// How many consumers `queue` has, or `None` when it does not exist, asked with a passive
/// declare, which never creates the queue and so cannot disagree with the arguments its
/// consumer declared it with. The broker closes the channel when the queue is missing, so
/// each question needs a channel of its own.
pub async fn queue_consumers(connection: &Connection, queue: &str) -> Result<Option<u32>, AmqpError> {
    let channel = connection.create_channel().await.map_err(AmqpError::protocol("opening a channel"))?;
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    match channel.queue_declare(queue.into(), passive, FieldTable::default()).await {
        Ok(found) => {
            // The channel was only for the question; a failure to close it changes nothing.
            let _ = channel.close(200, "OK".into()).await;
            Ok(Some(found.consumer_count()))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(AmqpError::Protocol { what: "looking the queue up", source: e }),
    }
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(amqp) if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}

/// `url` with its password replaced by `***`, for messages: the URL is printed in errors, and
/// a password must never be.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    // The credentials are in the authority, which ends at the path's first '/'.
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact("amqp://127.0.0.1:5672/v"), "amqp://127.0.0.1:5672/v");
        assert_eq!(redact("amqp://user@host/v"), "amqp://user@host/v");
        assert_eq!(redact("amqp://u:p@host/a@b"), "amqp://u:***@host/a@b");
    }
}
