//! Publishing through RabbitMQ: a fixed number of numbered messages to one queue, on one
//! channel in confirm mode, with up to `in_flight` publishes awaiting their confirm at once,
//! optionally paced to a target rate.
//!
//! Messages are numbered 0..total (the `seq` in their payload). A message counts as
//! acknowledged when the broker confirms it with an ack and did not return it as unroutable;
//! a nack, a return or a broken channel acknowledges nothing, and nothing is retried, since a
//! retry could make a second copy that the receivers would then count as a duplicate.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt as _;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use super::AmqpError;
use crate::clock;
use crate::histogram::new_histogram;
use crate::publish::PublishOutcome;

/// How long the publisher waits for the server under test to declare and consume the queue
/// before it gives up: a server that has just printed its address may still be connecting
/// its consumer (Herald starts its consumers after its listener).
const QUEUE_WAIT: Duration = Duration::from_secs(10);
const QUEUE_POLL: Duration = Duration::from_millis(100);

/// AMQP's `delivery_mode` for a message the broker writes to disk, and for one it keeps in memory.
const PERSISTENT: u8 = 2;
const TRANSIENT: u8 = 1;

/// What to publish.
pub struct AmqpJob<B> {
    /// Messages to send, numbered 0..total.
    pub total: u64,
    /// Publishes awaiting their confirm, at most.
    pub in_flight: usize,
    /// Messages per second to pace to; `None` sends as fast as the window allows.
    pub rate: Option<f64>,
    /// Each message's `message_id` is this, a dash and its number: unique across runs.
    pub message_id_prefix: String,
    /// Writes the JSON body of message `seq` stamped with `now_us`.
    pub body: B,
    /// Publish with delivery mode 1 (kept in the broker's memory only).
    pub transient: bool,
}

type Pending = Pin<Box<dyn Future<Output = (u64, Instant, lapin::Result<Confirmation>)> + Send>>;

/// A channel in confirm mode to a queue that exists, ready to publish.
pub struct Publisher {
    connection: Connection,
    channel: Channel,
    queue: ShortString,
}

impl Publisher {
    /// Connects, waits (bounded) until `queue` exists and has a consumer, and enables
    /// publisher confirms. This is the setup, done before the users connect: a broker that
    /// cannot be reached or a queue that nobody consumes ends the run at once (every message
    /// would otherwise count as lost), and none of it is timed.
    pub async fn open(url: &str, queue: &str) -> Result<Self, AmqpError> {
        let connection = super::connect(url, "herald-bench amqp").await?;
        let deadline = Instant::now() + QUEUE_WAIT;
        loop {
            let consumers = super::queue_consumers(&connection, queue).await?;
            if consumers.is_some_and(|n| n > 0) {
                break;
            }
            if Instant::now() >= deadline {
                let (queue, url) = (queue.to_owned(), super::redact(url));
                return Err(match consumers {
                    None => AmqpError::NoQueue { queue, url },
                    Some(_) => AmqpError::NoConsumer { queue, url },
                });
            }
            tokio::time::sleep(QUEUE_POLL).await;
        }
        let channel = connection.create_channel().await.map_err(AmqpError::protocol("opening a channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(AmqpError::protocol("enabling publisher confirms"))?;
        Ok(Self { connection, channel, queue: queue.into() })
    }

    /// Publishes `job`, calling `on_ack` with each confirmed message's range. What fails from
    /// here on is counted in the outcome, not returned.
    pub async fn run<B, A>(self, job: AmqpJob<B>, on_ack: A) -> PublishOutcome
    where
        B: Fn(u64, u64, &mut BytesMut),
        A: Fn(Range<u64>),
    {
        // Mandatory: a message the default exchange cannot route (no such queue) comes back
        // instead of being confirmed and silently dropped.
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let started_us = clock::unix_micros();
        let mut tally = Settled::new();
        let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
        let mut body = BytesMut::with_capacity(256);
        let start = Instant::now();
        let mut published = 0;
        for seq in 0..job.total {
            if let Some(rate) = job.rate {
                let due = tokio::time::Instant::from_std(start + Duration::from_secs_f64(seq as f64 / rate));
                // Confirms that arrive while waiting are settled as they come, so that their
                // round trip is not stretched by the pacing.
                loop {
                    tokio::select! {
                        biased;
                        Some(done) = pending.next() => tally.settle(done, &on_ack),
                        () = tokio::time::sleep_until(due) => break,
                    }
                }
            }
            while pending.len() >= job.in_flight {
                match pending.next().await {
                    Some(done) => tally.settle(done, &on_ack),
                    None => break,
                }
            }
            body.clear();
            (job.body)(seq, clock::unix_micros(), &mut body);
            let properties = BasicProperties::default()
                .with_message_id(format!("{}-{seq}", job.message_id_prefix).into())
                .with_content_type("application/json".into())
                .with_delivery_mode(if job.transient { TRANSIENT } else { PERSISTENT });
            let sent = Instant::now();
            match self.channel.basic_publish("".into(), self.queue.clone(), options, &body, properties).await {
                Ok(confirm) => {
                    published += 1;
                    pending.push(Box::pin(async move { (seq, sent, confirm.await) }));
                }
                Err(e) => {
                    // The channel is closed: nothing more can be published on it. (The report
                    // puts "publish: " in front of this.)
                    tally.note(e.to_string());
                    tally.fail(seq..job.total);
                    break;
                }
            }
            // Settle whatever has been confirmed meanwhile without waiting, so that acks
            // reach the tally (and the drain) while publishing goes on.
            while let Some(Some(done)) = pending.next().now_or_never() {
                tally.settle(done, &on_ack);
            }
        }
        while let Some(done) = pending.next().await {
            tally.settle(done, &on_ack);
        }
        let finished_us = clock::unix_micros();
        // The run is over either way; a failure to close cleanly changes no figure.
        let _ = self.connection.close(200, "OK".into()).await;
        PublishOutcome {
            requests: published,
            published,
            acked: tally.acked,
            rtt: tally.rtt,
            started_us,
            finished_us,
            unacked: tally.unacked,
            first_error: tally.first_error,
        }
    }
}

/// What the confirms have said so far.
struct Settled {
    acked: u64,
    rtt: hdrhistogram::Histogram<u64>,
    unacked: Vec<Range<u64>>,
    first_error: Option<String>,
}

impl Settled {
    fn new() -> Self {
        Self { acked: 0, rtt: new_histogram(), unacked: Vec::new(), first_error: None }
    }

    fn settle(
        &mut self,
        (seq, sent, confirmation): (u64, Instant, lapin::Result<Confirmation>),
        on_ack: impl Fn(Range<u64>),
    ) {
        match confirmation {
            Ok(Confirmation::Ack(None)) => {
                self.acked += 1;
                self.rtt.saturating_record(sent.elapsed().as_micros() as u64);
                on_ack(seq..seq + 1);
            }
            Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => {
                self.note(format!(
                    "the broker returned a message: {} {} (does the queue exist?)",
                    returned.reply_code, returned.reply_text
                ));
                self.fail(seq..seq + 1);
            }
            Ok(Confirmation::Nack(None)) => {
                self.note("the broker nacked a message".to_owned());
                self.fail(seq..seq + 1);
            }
            Ok(Confirmation::NotRequested) => {
                self.note("the broker did not confirm a message".to_owned());
                self.fail(seq..seq + 1);
            }
            Err(e) => {
                self.note(format!("confirm: {e}"));
                self.fail(seq..seq + 1);
            }
        }
    }

    /// Records `seqs` as not acknowledged, merged with the previous range when they adjoin
    /// (confirms mostly settle in order), so that a broken channel leaves a few ranges rather
    /// than one per message.
    fn fail(&mut self, seqs: Range<u64>) {
        match self.unacked.last_mut() {
            Some(last) if last.end == seqs.start => last.end = seqs.end,
            _ => self.unacked.push(seqs),
        }
    }

    fn note(&mut self, message: String) {
        if self.first_error.is_none() {
            self.first_error = Some(message);
        }
    }
}
