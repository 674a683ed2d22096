//! The cluster broker's link to NATS: core NATS subjects over one client connection (`async-nats`), which
//! reconnects by itself and subscribes again to every live subscription before sending anything else.
//!
//! No JetStream: what a node missed while away is found by the audit (see the module above), from the store,
//! so nothing needs keeping in the broker.
//!
//! - **Subjects**: `herald.<cluster>.control`, `herald.<cluster>.node.<node>`,
//!   `herald.<cluster>.user.<user>` and `herald.<cluster>.topic.<topic>`, the user id or topic escaped (`%XX` for every byte but letters, digits, `-` and
//!   `_`), so that no user id can name a wildcard or another subject.
//! - **When a subscription is active.** A `SUB` is only sent; NATS does not acknowledge it. The server reads a
//!   connection's commands in order, so once a marker this node publishes to its own barrier subject after
//!   its `SUB`s comes back, the server has them all (the *barrier*). `subscribe` returns after it, and
//!   [`Incoming::Up`] is reported after it on every (re)connect. On a NATS cluster the interest reaches the
//!   other servers shortly after; an event missed in that moment is caught as a gap.
//! - **A subscription dropping messages** (a slow consumer) reports [`Incoming::Lost`]: every user here is
//!   checked against the store.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, ServerAddr, Subscriber};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use super::{Channel, Incoming, Link};
use crate::broker::BrokerError;
use crate::config::Secret;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const PING_EVERY: Duration = Duration::from_secs(1);
/// How long a batch of publishes, or a barrier, may take before the link is taken to be away.
const SEND_TIMEOUT: Duration = Duration::from_secs(3);
/// Messages a subscription holds before NATS's client drops them (and reports a slow consumer).
const SUBSCRIPTION_CAPACITY: usize = 8_192;

pub struct NatsLink {
    client: Client,
    prefix: String,
    barrier_subject: async_nats::Subject,
    /// This node's own barrier subscription; one barrier at a time.
    barrier: Mutex<Subscriber>,
    next_marker: AtomicU64,
    /// What each live subscription's forwarding task stops on.
    subscriptions: Mutex<HashMap<String, CancellationToken>>,
    incoming: mpsc::Sender<Incoming>,
    up: AtomicBool,
    closing: CancellationToken,
}

impl NatsLink {
    /// Starts the link: the client connects (and reconnects) in the background, reporting to `incoming`.
    /// Fails only on a URL the client refuses; an unreachable NATS is reported as down.
    pub async fn start(
        url: &Secret,
        cluster: &str,
        node: &str,
        always: &[Channel],
        incoming: mpsc::Sender<Incoming>,
        closing: CancellationToken,
    ) -> Result<Arc<Self>, BrokerError> {
        let addr: ServerAddr = url.expose().parse().map_err(|e| BrokerError::Unavailable(format!("{e}")))?;
        let (events, events_rx) = mpsc::unbounded_channel();
        let options = match (addr.username(), addr.password()) {
            (Some(user), Some(password)) => ConnectOptions::with_user_and_password(user.into(), password.into()),
            (Some(token), None) => ConnectOptions::with_token(token.into()),
            _ => ConnectOptions::new(),
        }
        .name(format!("herald {cluster}/{node}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(PING_EVERY)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(100u64.saturating_mul(1 << attempts.min(6) as u64)).min(Duration::from_secs(5))
        })
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let _ = events.send(event);
            }
        });
        let client = options.connect(addr).await.map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let prefix = format!("herald.{cluster}.");
        let barrier_subject = async_nats::Subject::from(format!("{prefix}barrier.{node}"));
        let barrier =
            client.subscribe(barrier_subject.clone()).await.map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let link = Arc::new(Self {
            client,
            prefix,
            barrier_subject,
            barrier: Mutex::new(barrier),
            next_marker: AtomicU64::new(1),
            subscriptions: Mutex::new(HashMap::new()),
            incoming,
            up: AtomicBool::new(false),
            closing,
        });
        link.add(always).await;
        tokio::spawn(link.clone().follow(events_rx));
        Ok(link)
    }

    fn subject(&self, channel: &Channel) -> String {
        let mut subject = self.prefix.clone();
        match channel {
            Channel::Control => subject.push_str("control"),
            Channel::Node(node) => {
                subject.push_str("node.");
                escape_into(&mut subject, node);
            }
            Channel::User(user) => {
                subject.push_str("user.");
                escape_into(&mut subject, user.as_str());
            }
            Channel::Topic(topic) => {
                subject.push_str("topic.");
                escape_into(&mut subject, topic.as_str());
            }
        }
        subject
    }

    /// Follows the client's connection events: up (after a barrier) on each connect, down on each loss.
    async fn follow(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<Event>) {
        loop {
            let event = tokio::select! {
                () = self.closing.cancelled() => return,
                event = events.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
            };
            let report = match event {
                Event::Connected => match self.barrier().await {
                    Ok(()) => {
                        self.up.store(true, Ordering::Relaxed);
                        Incoming::Up
                    }
                    // Gone again already: the next connect reports up.
                    Err(e) => {
                        tracing::warn!(error = e, "connected to the cluster broker (NATS), but it did not answer");
                        continue;
                    }
                },
                Event::Disconnected => {
                    tracing::warn!("lost the cluster broker (NATS); reconnecting");
                    self.up.store(false, Ordering::Relaxed);
                    Incoming::Down
                }
                Event::SlowConsumer(_) => {
                    tracing::warn!("this node read too slowly from NATS, which dropped messages; checking its users");
                    Incoming::Lost
                }
                other => {
                    tracing::debug!(event = %other, "NATS client event");
                    continue;
                }
            };
            if self.incoming.send(report).await.is_err() {
                return;
            }
        }
    }

    /// Publishes a marker to this node's barrier subject and waits for it to come back: then the server has
    /// every command this client sent before it.
    async fn barrier(&self) -> Result<(), String> {
        let mut barrier = self.barrier.lock().await;
        let marker = self.next_marker.fetch_add(1, Ordering::Relaxed).to_string();
        let wait = async {
            self.client
                .publish(self.barrier_subject.clone(), Bytes::from(marker.clone()))
                .await
                .map_err(|e| e.to_string())?;
            while let Some(message) = barrier.next().await {
                // Markers of an earlier barrier that timed out are passed over.
                if message.payload == marker.as_bytes() {
                    return Ok(());
                }
            }
            Err("the client closed".to_owned())
        };
        tokio::time::timeout(SEND_TIMEOUT, wait).await.map_err(|_| "NATS did not answer in time".to_owned())?
    }

    /// Sends a `SUB` for each channel not yet subscribed, each read by a task of its own.
    async fn add(&self, channels: &[Channel]) {
        let mut subscriptions = self.subscriptions.lock().await;
        for channel in channels {
            let subject = self.subject(channel);
            if subscriptions.contains_key(&subject) {
                continue;
            }
            match self.client.subscribe(subject.clone()).await {
                Ok(subscriber) => {
                    let stop = self.closing.child_token();
                    tokio::spawn(forward(subscriber, self.incoming.clone(), stop.clone()));
                    subscriptions.insert(subject, stop);
                }
                Err(e) => {
                    // Only when the client has closed, which happens only at exit.
                    tracing::warn!(error = %e, "could not subscribe on NATS");
                    return;
                }
            }
        }
    }
}

/// Hands a subscription's messages on until told to stop; dropping the subscriber unsubscribes.
async fn forward(mut subscriber: Subscriber, incoming: mpsc::Sender<Incoming>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            message = subscriber.next() => match message {
                Some(message) => {
                    if incoming.send(Incoming::Message(message.payload)).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
        }
    }
}

/// Appends `word` as one subject token: letters, digits, `-` and `_` as they are, every other byte `%XX`.
fn escape_into(subject: &mut String, word: &str) {
    for byte in word.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            subject.push(char::from(byte));
        } else {
            let _ = write!(subject, "%{byte:02X}");
        }
    }
}

#[async_trait]
impl Link for NatsLink {
    async fn publish(&self, messages: &[(Channel, Bytes)]) -> Result<(), BrokerError> {
        // While the client reconnects its queue only grows: the cluster keeps the messages and retries.
        if self.client.connection_state() != State::Connected {
            return Err(BrokerError::Unavailable("NATS is away".into()));
        }
        let send = async {
            for (channel, payload) in messages {
                self.client
                    .publish(self.subject(channel), payload.clone())
                    .await
                    .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
            }
            Ok(())
        };
        tokio::time::timeout(SEND_TIMEOUT, send)
            .await
            .map_err(|_| BrokerError::Unavailable("publishing to NATS timed out".into()))?
    }

    async fn subscribe(&self, channels: &[Channel]) {
        self.add(channels).await;
        if let Err(e) = self.barrier().await {
            // The connection is going: the reconnect subscribes again and reports up after a barrier.
            tracing::debug!(error = e, "no barrier after subscribing; the reconnect will report up");
        }
    }

    async fn unsubscribe(&self, channels: &[Channel]) {
        let mut subscriptions = self.subscriptions.lock().await;
        for channel in channels {
            if let Some(stop) = subscriptions.remove(&self.subject(channel)) {
                stop.cancel();
            }
        }
    }

    fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed) && self.client.connection_state() == State::Connected
    }

    fn backend(&self) -> &'static str {
        "nats"
    }
}

#[cfg(test)]
mod tests {
    use super::escape_into;

    fn escaped(word: &str) -> String {
        let mut subject = String::new();
        escape_into(&mut subject, word);
        subject
    }

    #[test]
    fn user_ids_become_one_plain_token() {
        assert_eq!(escaped("alice-1_B"), "alice-1_B");
        assert_eq!(escaped("a.b"), "a%2Eb");
        assert_eq!(escaped("*"), "%2A");
        assert_eq!(escaped(">"), "%3E");
        assert_eq!(escaped("a b"), "a%20b");
        assert_eq!(escaped("%2E"), "%252E");
        assert_eq!(escaped("é"), "%C3%A9");
    }
}
