//! The operator's tools for dead-letter queues (`herald dlq list | replay | purge`).
//!
//! Listing reads messages without acking them on a channel of its own and then closes it, so the broker
//! puts every one back. Replaying publishes a message back to its work queue (with confirms) before acking
//! it in the dead-letter queue, so a crash in between duplicates at worst, and the consumer's idempotency
//! keys make that harmless.

use std::collections::HashSet;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde::Serialize;

use super::message::{self, int_header, str_header};
use super::retry::dead_letter_queue;
use super::AmqpError;
use crate::config::Secret;

/// How many replayed copies wait for their confirms at once.
const REPLAY_WINDOW: usize = 200;
const PREVIEW: usize = 160;

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: Option<String>,
    pub reason: Option<String>,
    pub attempts: Option<i64>,
    pub dead_lettered_at: Option<String>,
    pub routing_key: Option<String>,
    pub bytes: usize,
    /// The start of the body, as text (invalid UTF-8 replaced).
    pub body: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub queue: String,
    pub count: u32,
    pub entries: Vec<Entry>,
}

/// Which dead-lettered messages to replay.
pub enum Selection {
    All,
    Ids(HashSet<String>),
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ReplayReport {
    pub replayed: u64,
    /// Messages left in the dead-letter queue (not selected).
    pub kept: u64,
    /// Ids asked for that were not found.
    pub missing: Vec<String>,
}

/// The work queue a name refers to: `q` and `q.dlq` both mean `q`. Refuses names the broker cannot take.
pub fn work_queue(name: &str) -> Result<&str, AmqpError> {
    let work = name.strip_suffix(".dlq").unwrap_or(name);
    if work.is_empty() || work.len() > 200 {
        return Err(AmqpError::Config(format!("{name:?} is not a queue name (1..=200 bytes)")));
    }
    Ok(work)
}

pub async fn connect(url: &Secret) -> Result<Connection, AmqpError> {
    super::consumer::connect(url, "herald dlq").await
}

/// The number of messages in a queue; an error naming it if it does not exist.
async fn count(channel: &Channel, queue: &str) -> Result<u32, AmqpError> {
    let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let declared = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .map_err(|source| AmqpError::Topology { what: format!("queue {queue:?} (does Herald consume it?)"), source })?;
    Ok(declared.message_count())
}

/// Up to `limit` messages of `queue`'s dead-letter queue, oldest first, and how many it holds.
pub async fn list(connection: &Connection, queue: &str, limit: usize) -> Result<Listing, AmqpError> {
    let dlq = dead_letter_queue(work_queue(queue)?);
    let channel = connection.create_channel().await?;
    let total = count(&channel, &dlq).await?;
    let mut entries = Vec::new();
    while entries.len() < limit {
        let Some(got) = channel.basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false }).await? else { break };
        let delivery = got.delivery;
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        entries.push(Entry {
            id: str_header(&headers, message::DLQ_ID)
                .or_else(|| delivery.properties.message_id().as_ref().map(|m| m.to_string())),
            reason: str_header(&headers, message::REASON),
            attempts: int_header(&headers, message::ATTEMPT),
            dead_lettered_at: str_header(&headers, message::DEAD_LETTERED_AT),
            routing_key: str_header(&headers, message::ORIGINAL_ROUTING_KEY),
            bytes: delivery.data.len(),
            body: message::short(&String::from_utf8_lossy(&delivery.data), PREVIEW),
        });
    }
    // Closing the channel returns every message it got, unacked, to the queue.
    channel.close(200, "listed".into()).await?;
    Ok(Listing { queue: dlq, count: total, entries })
}

/// Publishes the selected messages back to their work queue and removes them from the dead-letter queue.
/// `progress(done, total)` is called as it goes.
pub async fn replay(
    connection: &Connection,
    queue: &str,
    selection: &Selection,
    mut progress: impl FnMut(u64, u64),
) -> Result<ReplayReport, AmqpError> {
    let work = work_queue(queue)?;
    let dlq = dead_letter_queue(work);
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let total = u64::from(count(&channel, &dlq).await?);
    let mut report = ReplayReport::default();
    let mut found = HashSet::new();
    let mut window = Vec::with_capacity(REPLAY_WINDOW);
    // At most the messages there were at the start: a replayed message that fails again is dead-lettered
    // anew at the tail while this runs, and must not be replayed twice by one replay.
    for _ in 0..total {
        let got = channel.basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false }).await?;
        let Some(got) = got else { break };
        let delivery = got.delivery;
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let id = str_header(&headers, message::DLQ_ID);
        let selected = match selection {
            Selection::All => true,
            Selection::Ids(ids) => id.as_ref().is_some_and(|id| ids.contains(id)),
        };
        if !selected {
            // Left unacked until the channel closes, so this loop does not get it again.
            report.kept += 1;
            continue;
        }
        if let Some(id) = id {
            found.insert(id);
        }
        // Always back to the queue named: a header is the producer's to forge, the queue is the operator's.
        let target = work.to_owned();
        // A fresh start: no attempts, no reason; where it came from stays, and the replay is counted.
        let mut fresh = message::without(
            Some(&headers),
            &[
                message::ATTEMPT,
                message::REASON,
                message::QUEUE,
                message::DLQ_ID,
                message::DEAD_LETTERED_AT,
                message::REPLAYS,
            ],
        );
        message::set_int(&mut fresh, message::REPLAYS, int_header(&headers, message::REPLAYS).unwrap_or(0) + 1);
        let properties = super::consumer::carried(&delivery.properties, fresh);
        let confirm = channel
            .basic_publish(
                "".into(),
                target.as_str().into(),
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                &delivery.data,
                properties,
            )
            .await?;
        window.push((confirm, delivery.delivery_tag, target));
        if window.len() >= REPLAY_WINDOW {
            settle(&channel, &mut window, &mut report).await?;
            progress(report.replayed, total);
        }
    }
    settle(&channel, &mut window, &mut report).await?;
    progress(report.replayed, total);
    channel.close(200, "replayed".into()).await?;
    if let Selection::Ids(ids) = selection {
        report.missing = ids.iter().filter(|id| !found.contains(*id)).cloned().collect();
        report.missing.sort();
    }
    Ok(report)
}

/// Waits for the confirms of a window of replayed copies, then acks each original.
async fn settle(
    channel: &Channel,
    window: &mut Vec<(lapin::PublisherConfirm, u64, String)>,
    report: &mut ReplayReport,
) -> Result<(), AmqpError> {
    for (confirm, tag, target) in window.drain(..) {
        super::consumer::confirmed(confirm, &target).await?;
        // One by one, not `multiple`: unselected messages in between stay where they are.
        channel.basic_ack(tag, BasicAckOptions::default()).await?;
        report.replayed += 1;
    }
    Ok(())
}

/// Empties `queue`'s dead-letter queue; returns how many messages it held.
pub async fn purge(connection: &Connection, queue: &str) -> Result<u32, AmqpError> {
    let dlq = dead_letter_queue(work_queue(queue)?);
    let channel = connection.create_channel().await?;
    count(&channel, &dlq).await?;
    let purged = channel.queue_purge(dlq.as_str().into(), QueuePurgeOptions::default()).await?;
    channel.close(200, "purged".into()).await?;
    Ok(purged)
}
