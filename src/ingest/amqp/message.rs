//! One consumed message as handlers see it, and the headers Herald adds when it moves a message.

use std::time::Instant;

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use sha2::{Digest, Sha256};

use crate::domain::IdempotencyKey;

/// Failed attempts so far; absent on a first delivery.
pub const ATTEMPT: &str = "x-herald-attempt";
/// Why a message was dead-lettered, or why its last attempt failed.
pub const REASON: &str = "x-herald-reason";
/// The exchange and routing key the message first arrived with, kept across delay and dead-letter queues.
pub const ORIGINAL_EXCHANGE: &str = "x-herald-original-exchange";
pub const ORIGINAL_ROUTING_KEY: &str = "x-herald-original-routing-key";
/// The work queue a dead-lettered message belongs to, so that a replay knows where it goes back.
pub const QUEUE: &str = "x-herald-queue";
/// A dead-lettered message's id, for `herald dlq replay --id`.
pub const DLQ_ID: &str = "x-herald-dlq-id";
/// When it was dead-lettered (RFC 3339).
pub const DEAD_LETTERED_AT: &str = "x-herald-dead-lettered-at";
/// How many times it was replayed from the dead-letter queue.
pub const REPLAYS: &str = "x-herald-replays";

/// A delivery, read once: the body and what handlers and the retry logic need to know about it.
pub struct Message {
    pub body: Vec<u8>,
    pub properties: BasicProperties,
    /// The exchange and routing key it was first published with (from the headers once it was moved).
    pub exchange: String,
    pub routing_key: String,
    /// Attempts that already failed transiently before this delivery.
    pub attempt: u32,
    pub redelivered: bool,
    pub received_at: Instant,
    pub(crate) delivery_tag: u64,
}

impl Message {
    pub(crate) fn from_delivery(delivery: Delivery, received_at: Instant) -> Self {
        let headers = delivery.properties.headers().as_ref();
        let attempt = headers.and_then(|h| int_header(h, ATTEMPT)).map_or(0, |n| n.clamp(0, 1_000) as u32);
        let exchange = headers
            .and_then(|h| str_header(h, ORIGINAL_EXCHANGE))
            .unwrap_or_else(|| delivery.exchange.as_str().to_owned());
        let routing_key = headers
            .and_then(|h| str_header(h, ORIGINAL_ROUTING_KEY))
            .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
        Self {
            body: delivery.data,
            properties: delivery.properties,
            exchange,
            routing_key,
            attempt,
            redelivered: delivery.redelivered,
            received_at,
            delivery_tag: delivery.delivery_tag,
        }
    }

    /// The AMQP `message_id` property, if the producer set one.
    pub fn message_id(&self) -> Option<&str> {
        self.properties.message_id().as_ref().map(ShortString::as_str).filter(|id| !id.is_empty())
    }

    /// The idempotency key of a message that carries none of its own, so that a redelivery is recognized:
    /// its AMQP `message_id` (`amqp-id:<id>`); else `configured`, a field the consumer's settings name
    /// (`field:<value>`); else a hash of the body (`sha256:<hex>`). Long ids and values are hashed to fit a
    /// key's 128 bytes.
    pub fn derived_key(&self, configured: Option<&str>) -> String {
        if let Some(id) = self.message_id() {
            bounded("amqp-id:", id)
        } else if let Some(value) = configured {
            bounded("field:", value)
        } else {
            format!("sha256:{}", hex(&Sha256::digest(&self.body)))
        }
    }

    pub fn header_str(&self, name: &str) -> Option<String> {
        self.properties.headers().as_ref().and_then(|h| str_header(h, name))
    }
}

/// An integer header of any AMQP integer type (other clients write them differently).
pub fn int_header(headers: &FieldTable, name: &str) -> Option<i64> {
    match headers.inner().get(name)? {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        _ => None,
    }
}

pub fn str_header(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Sets (or replaces) a string header.
pub fn set_str(headers: &mut FieldTable, name: &'static str, value: impl Into<Vec<u8>>) {
    headers.insert(ShortString::from(name), AMQPValue::LongString(LongString::from(value.into())));
}

pub fn set_int(headers: &mut FieldTable, name: &'static str, value: i64) {
    headers.insert(ShortString::from(name), AMQPValue::LongLongInt(value));
}

/// A copy of the headers without the given names.
pub fn without(headers: Option<&FieldTable>, names: &[&str]) -> FieldTable {
    let mut out = FieldTable::default();
    if let Some(headers) = headers {
        for (k, v) in headers {
            if !names.contains(&k.as_str()) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// The value at a dotted path (`order.id`) in a message's JSON, as the field settings of every handler name
/// them.
pub fn json_path<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(value, |v, part| v.get(part))
}

/// A header value cut to a length RabbitMQ and log viewers handle well.
pub fn short(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `prefix` + `value`, or + a hash of it when that would not fit a key or holds control characters.
fn bounded(prefix: &str, value: &str) -> String {
    if prefix.len() + value.len() <= IdempotencyKey::MAX_LEN && !value.chars().any(char::is_control) {
        format!("{prefix}{value}")
    } else {
        format!("{prefix}sha256:{}", hex(&Sha256::digest(value.as_bytes())))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
