//! Everything a consumer needs on the broker, declared in one place, idempotently, at every (re)connect:
//! the exchange and its bindings, the work queue, one delay queue per retry delay, and the dead-letter
//! queue. All durable.
//!
//! The work queue is declared with no arguments, as producers (NestJS, say) declare it themselves: adding
//! a dead-letter argument would make their declarations fail. Herald moves messages to its delay and
//! dead-letter queues itself, with publisher confirms (see `consumer.rs`).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ErrorKind, ExchangeKind};

use super::retry;
use super::AmqpError;
use crate::config::amqp::{ExchangeKind as Kind, ExchangeSpec, RetryPolicy};

/// What one consumer's queue is: the generic part of a consumer's settings, shared by every worker that
/// reads a queue (notifications, and later email and user sync).
#[derive(Debug, Clone)]
pub struct QueueTopology {
    pub queue: String,
    pub exchange: Option<ExchangeSpec>,
    pub retry: RetryPolicy,
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

/// Declares what `topology` needs. A queue or exchange that exists with other arguments is an error that
/// names it (the broker closes the channel; the consumer reports it and tries again later).
pub async fn declare(channel: &Channel, topology: &QueueTopology) -> Result<(), AmqpError> {
    let queue = topology.queue.as_str();
    if let Some(exchange) = &topology.exchange {
        let kind = match exchange.kind {
            Kind::Topic => ExchangeKind::Topic,
            Kind::Direct => ExchangeKind::Direct,
            Kind::Fanout => ExchangeKind::Fanout,
            Kind::Headers => ExchangeKind::Headers,
        };
        let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel
            .exchange_declare(exchange.name.as_str().into(), kind, options, FieldTable::default())
            .await
            .map_err(|e| topology_error(format!("exchange {:?} ({})", exchange.name, exchange.kind.as_str()), e))?;
    }
    channel
        .queue_declare(queue.into(), durable(), FieldTable::default())
        .await
        .map_err(|e| topology_error(format!("queue {queue:?}"), e))?;
    if let Some(exchange) = &topology.exchange {
        for key in &exchange.binding_keys {
            let routing_key = ShortString::try_new(key.as_str())
                .map_err(|_| AmqpError::Config(format!("binding key of {queue:?} is over 255 bytes")))?;
            channel
                .queue_bind(
                    queue.into(),
                    exchange.name.as_str().into(),
                    routing_key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| topology_error(format!("binding {key:?} of queue {queue:?}"), e))?;
        }
    }
    for delay in retry::delays(&topology.retry) {
        let name = retry::delay_queue(queue, delay);
        let mut arguments = FieldTable::default();
        // Expired messages go back to the work queue through the default exchange.
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from("")));
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(queue)));
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(delay.as_millis() as i64));
        channel
            .queue_declare(name.as_str().into(), durable(), arguments)
            .await
            .map_err(|e| topology_error(format!("delay queue {name:?}"), e))?;
    }
    let dlq = retry::dead_letter_queue(queue);
    channel
        .queue_declare(dlq.as_str().into(), durable(), FieldTable::default())
        .await
        .map_err(|e| topology_error(format!("dead-letter queue {dlq:?}"), e))?;
    Ok(())
}

fn topology_error(what: String, source: lapin::Error) -> AmqpError {
    let clash = matches!(
        source.kind(),
        ErrorKind::ProtocolError(e) if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
    );
    if clash {
        AmqpError::Topology { what: format!("{what} exists with other arguments"), source }
    } else {
        AmqpError::Topology { what: format!("declaring {what}"), source }
    }
}
