//! One consumer: a connection and a channel to one queue, read in groups, each group settled as a whole.
//!
//! The rules, in the order they matter:
//! - **A message is acked only after what it produced is committed** (or, for a message Herald gives up
//!   on or defers, after its copy in the dead-letter or delay queue is confirmed by the broker). A crash
//!   anywhere before the ack means redelivery, never loss; handlers make redelivery harmless.
//! - **Groups, in order, acked with `multiple`.** The prefetch window bounds what is in flight; whatever
//!   has arrived (up to half the window, so the rest keeps flowing meanwhile) is handed to the handler as
//!   one group, and the last delivery tag of a settled group is acked with `multiple`. Groups are settled
//!   strictly one after another, so every earlier tag is settled too.
//! - **A bad message never holds up the queue.** Poison goes straight to `<queue>.dlq`; a transient
//!   failure goes to a delay queue with its attempt count in a header, and comes back later; the next
//!   group is read as soon as this one is settled.
//! - **The broker going away is normal.** The consumer reports its state, reconnects with capped,
//!   jittered backoff, declares its topology again and resumes; unacked messages are redelivered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};
use metrics::{Counter, Histogram};
use tokio_util::sync::CancellationToken;

use super::message::{self, Message};
use super::retry::{self, Step};
use super::status::{State, Status};
use super::topology::{self, QueueTopology};
use super::AmqpError;
use crate::config::Secret;
use crate::domain::Timestamp;

/// How a handler settled one message of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: committed (or a harmless repeat).
    Done,
    /// It can never succeed (not JSON, no target user, …): dead-letter it now, with the reason.
    Poison(String),
    /// It may succeed later (storage busy or down): retry it with backoff, then dead-letter it.
    Transient(String),
    /// Herald is stopping: leave it (and its group) unacked, to be redelivered.
    Requeue,
}

/// What a consumer does with its messages. One implementation per kind of worker: notifications now;
/// email and user sync reuse the consumer with handlers of their own.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Settles a group of messages, in delivery order: one outcome per message, in the same order.
    async fn handle(&self, group: &[Message]) -> Vec<Outcome>;
}

/// The generic part of a consumer's settings.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub topology: QueueTopology,
    pub consumer_tag: String,
    pub prefetch: u16,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a group may wait for the broker to confirm the copies it moved; past it the session is
/// treated as broken (the group is redelivered).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A session that consumed this long without failing counts as healthy, even if no message came.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// Reasons are kept short in headers: they are for people reading `herald dlq list`.
const REASON_MAX: usize = 512;

/// Runs one consumer until `stop` is cancelled: connects, consumes, and reconnects after any failure.
pub async fn run(
    url: Secret,
    spec: ConsumerSpec,
    handler: Arc<dyn Handler>,
    status: Arc<Status>,
    stop: CancellationToken,
) {
    let queue = spec.topology.queue.clone();
    let redacted = crate::config::amqp::redact_url(url.expose());
    let mut backoff = BACKOFF_FIRST;
    loop {
        status.set(State::Connecting);
        let mut settled_any = false;
        let started = Instant::now();
        let result = session(&url, &spec, handler.as_ref(), &stop, &status, &mut settled_any).await;
        if stop.is_cancelled() {
            break;
        }
        // A session that settled a group, or consumed quietly for a while, starts the backoff over: this is
        // a new outage. One that failed before (a copy the broker keeps refusing, say) backs off further,
        // so it cannot spin.
        let stayed = status.state() == State::Consuming && started.elapsed() >= STABLE_SESSION;
        if settled_any || stayed {
            backoff = BACKOFF_FIRST;
        }
        let error = match result {
            Ok(()) => "the broker closed the connection".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(queue, url = redacted, error, retry_in_ms = backoff.as_millis() as u64, "AMQP consumer down");
        status.set(State::Down { error });
        // Jitter (50–100% of the backoff): many nodes reconnecting after a broker restart spread out.
        let wait = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    status.set(State::Stopped);
}

/// One connection's life. Returns `Ok` when stopped, or the error that ended it.
async fn session(
    url: &Secret,
    spec: &ConsumerSpec,
    handler: &dyn Handler,
    stop: &CancellationToken,
    status: &Status,
    settled_any: &mut bool,
) -> Result<(), AmqpError> {
    let queue = spec.topology.queue.as_str();
    let connection = connect(url, &format!("herald {} ({queue})", env!("CARGO_PKG_VERSION"))).await?;
    let result = async {
        let channel = connection.create_channel().await?;
        topology::declare(&channel, &spec.topology).await?;
        channel.basic_qos(spec.prefetch, BasicQosOptions::default()).await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                spec.consumer_tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        status.set(State::Consuming);
        tracing::info!(queue, prefetch = spec.prefetch, "AMQP consumer consuming");
        let result = consume(&channel, &mut consumer, spec, handler, stop, settled_any).await;
        if result.is_ok() {
            // Stop deliveries first, so that nothing more arrives while the connection closes; whatever
            // was prefetched and not acked is redelivered by the broker.
            let _ = channel.basic_cancel(spec.consumer_tag.as_str().into(), BasicCancelOptions::default()).await;
            // The channel before the connection: closing a connection with open channels makes lapin log
            // each of them as an error.
            let _ = tokio::time::timeout(Duration::from_secs(2), channel.close(200, "herald stopping".into())).await;
        }
        result
    }
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), connection.close(200, "herald stopping".into())).await;
    result
}

/// Connects, named so that the broker's connection list says what each connection is.
pub(crate) async fn connect(url: &Secret, name: &str) -> Result<Connection, AmqpError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url.expose(), properties))
        .await
        .map_err(|_| AmqpError::Timeout("connecting to the broker"))?
        .map_err(AmqpError::Connect)
}

/// Waits (bounded) for the broker to confirm a copy published to `target`; a nack, a return (the target
/// queue is gone) or no answer is an error.
pub(crate) async fn confirmed(confirm: lapin::PublisherConfirm, target: &str) -> Result<(), AmqpError> {
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| AmqpError::Timeout("waiting for a publisher confirm"))??;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        _ => Err(AmqpError::NotConfirmed { queue: target.to_owned() }),
    }
}

/// Per-queue metric handles, resolved once per session.
struct QueueMetrics {
    consumed: Counter,
    acked: Counter,
    retried: Counter,
    dead_lettered: Counter,
    processing: Histogram,
}

impl QueueMetrics {
    fn new(queue: &str) -> Self {
        let counter = |outcome: &'static str| metrics::counter!("herald_amqp_messages_total", "queue" => queue.to_owned(), "outcome" => outcome);
        Self {
            consumed: counter("consumed"),
            acked: counter("acked"),
            retried: counter("retried"),
            dead_lettered: counter("dead_lettered"),
            processing: metrics::histogram!("herald_amqp_processing_seconds", "queue" => queue.to_owned()),
        }
    }
}

async fn consume(
    channel: &Channel,
    consumer: &mut Consumer,
    spec: &ConsumerSpec,
    handler: &dyn Handler,
    stop: &CancellationToken,
    settled_any: &mut bool,
) -> Result<(), AmqpError> {
    let metrics = QueueMetrics::new(&spec.topology.queue);
    let group_max = usize::from(spec.prefetch / 2).max(1);
    loop {
        let first = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            next = consumer.next() => next,
        };
        let first = first.ok_or(AmqpError::ConsumerEnded)??;
        let mut group = vec![Message::from_delivery(first, Instant::now())];
        // Whatever else has already arrived joins the group; nothing waits for more.
        while group.len() < group_max {
            match consumer.next().now_or_never() {
                Some(Some(delivery)) => group.push(Message::from_delivery(delivery?, Instant::now())),
                Some(None) | None => break,
            }
        }
        metrics.consumed.increment(group.len() as u64);
        settle(channel, spec, handler, &group, &metrics).await?;
        *settled_any = true;
    }
}

/// Hands a group to the handler, moves what must be moved (confirmed), then acks the group.
async fn settle(
    channel: &Channel,
    spec: &ConsumerSpec,
    handler: &dyn Handler,
    group: &[Message],
    metrics: &QueueMetrics,
) -> Result<(), AmqpError> {
    let outcomes = handler.handle(group).await;
    if outcomes.len() != group.len() {
        return Err(AmqpError::Handler(format!("{} outcomes for {} messages", outcomes.len(), group.len())));
    }
    if outcomes.contains(&Outcome::Requeue) {
        return Err(AmqpError::Stopping);
    }
    let queue = spec.topology.queue.as_str();
    let mut confirms = Vec::new();
    for (message, outcome) in group.iter().zip(outcomes) {
        let moved = match outcome {
            Outcome::Done | Outcome::Requeue => continue,
            Outcome::Poison(reason) => {
                metrics.dead_lettered.increment(1);
                let reason = message::short(&reason, REASON_MAX);
                tracing::info!(queue, reason, "dead-lettering a message that cannot be processed");
                dead_letter(queue, message, &reason, message.attempt + 1)
            }
            Outcome::Transient(reason) => match retry::next_step(&spec.topology.retry, message.attempt, rand::random())
            {
                Step::Retry { attempt, base, wait } => {
                    metrics.retried.increment(1);
                    let reason = message::short(&reason, REASON_MAX);
                    tracing::debug!(queue, attempt, wait_ms = wait.as_millis() as u64, reason, "retrying later");
                    delay(queue, message, &reason, attempt, base, wait)
                }
                Step::DeadLetter { attempts } => {
                    metrics.dead_lettered.increment(1);
                    // The count first, so that shortening never cuts it off.
                    let reason = message::short(&format!("gave up after {attempts} attempts: {reason}"), REASON_MAX);
                    tracing::warn!(queue, reason, "dead-lettering a message that kept failing");
                    dead_letter(queue, message, &reason, attempts)
                }
            },
        };
        let confirm = channel
            .basic_publish(
                "".into(),
                moved.routing_key.as_str().into(),
                // Mandatory: if the target queue is gone, the broker returns the copy instead of dropping it.
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                &message.body,
                moved.properties,
            )
            .await?;
        confirms.push((confirm, moved.routing_key));
    }
    for (confirm, target) in confirms {
        confirmed(confirm, &target).await?;
    }
    let Some(last) = group.last() else { return Ok(()) };
    channel.basic_ack(last.delivery_tag, BasicAckOptions { multiple: true }).await?;
    let now = Instant::now();
    for message in group {
        metrics.processing.record(now.duration_since(message.received_at).as_secs_f64());
    }
    metrics.acked.increment(group.len() as u64);
    Ok(())
}

/// A copy of a message on its way to a delay or dead-letter queue.
struct Moved {
    routing_key: String,
    properties: BasicProperties,
}

/// The properties a moved copy keeps. Not `expiration` (a producer's TTL must not expire the copy in the
/// dead-letter queue) and not `user_id` (the broker checks it against the connection's user).
pub(crate) fn carried(p: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut out = BasicProperties::default().with_headers(headers).with_delivery_mode(2);
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    out
}

/// Headers every moved copy carries: where it first came from and how many attempts failed.
fn moved_headers(message: &Message, reason: &str, attempts: u32) -> FieldTable {
    let mut headers = message::without(message.properties.headers().as_ref(), &[message::REASON, message::ATTEMPT]);
    message::set_int(&mut headers, message::ATTEMPT, i64::from(attempts));
    message::set_str(&mut headers, message::REASON, reason);
    message::set_str(&mut headers, message::ORIGINAL_EXCHANGE, message.exchange.as_str());
    message::set_str(&mut headers, message::ORIGINAL_ROUTING_KEY, message.routing_key.as_str());
    headers
}

fn delay(queue: &str, message: &Message, reason: &str, attempt: u32, base: Duration, wait: Duration) -> Moved {
    let headers = moved_headers(message, reason, attempt);
    let properties = carried(&message.properties, headers).with_expiration(wait.as_millis().to_string().into());
    Moved { routing_key: retry::delay_queue(queue, base), properties }
}

fn dead_letter(queue: &str, message: &Message, reason: &str, attempts: u32) -> Moved {
    let mut headers = moved_headers(message, reason, attempts);
    message::set_str(&mut headers, message::QUEUE, queue);
    message::set_str(&mut headers, message::DLQ_ID, ulid::Ulid::new().to_string());
    message::set_str(&mut headers, message::DEAD_LETTERED_AT, Timestamp::now().to_rfc3339());
    Moved { routing_key: retry::dead_letter_queue(queue), properties: carried(&message.properties, headers) }
}
