//! The floor's AMQP consumer, the baseline for Herald's: each message on the queue is a
//! publish body, handled exactly as `POST /api/v1/notifications` handles one (id assigned,
//! pushed to the user's connections, nothing stored), then acknowledged.
//!
//! The broker may send up to `prefetch` unacknowledged messages. Whatever has arrived is
//! handled in one go and acknowledged with a single `multiple` ack up to the last of it, at
//! the latest every half window, so that the broker keeps sending while the floor works.

use std::sync::Arc;

use futures_util::{FutureExt as _, StreamExt as _};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use lapin::{Acker, Connection, Consumer};
use tokio::task::JoinHandle;

use super::{api, Floor};
use crate::amqp::{self, AmqpError};

/// Rejected messages are reported on stderr, the first few of them only.
const REPORTED_REJECTS: u64 = 5;

/// Connects, declares `queue` durable and starts consuming it. Returns once the consumer is
/// registered, so that a message published after the floor has printed its address is
/// consumed; the task runs until the connection ends.
pub async fn start(floor: Arc<Floor>, url: &str, queue: &str, prefetch: u16) -> Result<JoinHandle<()>, AmqpError> {
    let connection = amqp::connect(url, "herald-bench floor").await?;
    let channel = connection.create_channel().await.map_err(AmqpError::protocol("opening a channel"))?;
    amqp::declare_durable(&channel, queue).await?;
    channel
        .basic_qos(prefetch.max(1), BasicQosOptions::default())
        .await
        .map_err(AmqpError::protocol("setting the prefetch window"))?;
    let consumer = channel
        .basic_consume(queue.into(), "herald-bench-floor".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(AmqpError::protocol("starting the consumer"))?;
    eprintln!("herald-bench floor: consuming {queue:?} at {}, prefetch {prefetch}", amqp::redact(url));
    let ack_every = (usize::from(prefetch) / 2).max(1);
    Ok(tokio::spawn(consume(floor, connection, consumer, ack_every)))
}

/// Handles deliveries until the consumer ends. The connection is held here: dropping it
/// would close the consumer's channel.
async fn consume(floor: Arc<Floor>, _connection: Connection, mut consumer: Consumer, ack_every: usize) {
    let mut batch = Batch { floor, pending: None, rejected: 0 };
    let outcome = async {
        loop {
            let Some(first) = consumer.next().await else { return Ok(()) };
            batch.handle(first?).await?;
            let mut handled = 1;
            // Take what has already arrived without waiting, then acknowledge all of it.
            while handled < ack_every {
                match consumer.next().now_or_never() {
                    Some(Some(delivery)) => batch.handle(delivery?).await?,
                    Some(None) => {
                        batch.ack().await?;
                        return Ok(());
                    }
                    None => break,
                }
                handled += 1;
            }
            batch.ack().await?;
        }
    };
    let ended: Result<(), lapin::Error> = outcome.await;
    match ended {
        Ok(()) => eprintln!("herald-bench floor: the AMQP consumer was cancelled"),
        Err(e) => eprintln!("herald-bench floor: the AMQP consumer stopped: {e}"),
    }
}

/// Handled messages not acknowledged yet.
struct Batch {
    floor: Arc<Floor>,
    /// The last handled message's acker: a `multiple` ack with it covers every one before.
    pending: Option<Acker>,
    rejected: u64,
}

impl Batch {
    async fn handle(&mut self, delivery: Delivery) -> Result<(), lapin::Error> {
        match api::publish_body(&self.floor, &delivery.data) {
            Ok(_) => self.pending = Some(delivery.acker),
            Err(e) => {
                // A `multiple` ack later would cover this message too, so everything before
                // it is acknowledged first and it is rejected on its own. Requeueing it would
                // only bring it back: it is a bad message, not a failure of the floor's.
                self.ack().await?;
                self.rejected += 1;
                if self.rejected <= REPORTED_REJECTS {
                    eprintln!("herald-bench floor: rejected AMQP message {}: {e}", delivery.delivery_tag);
                }
                delivery.acker.reject(BasicRejectOptions { requeue: false }).await?;
            }
        }
        Ok(())
    }

    async fn ack(&mut self) -> Result<(), lapin::Error> {
        if let Some(acker) = self.pending.take() {
            acker.ack(BasicAckOptions { multiple: true }).await?;
        }
        Ok(())
    }
}
