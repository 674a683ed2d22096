//! The cluster broker's link to Redis: `PUBLISH` over the client's self-reconnecting `ConnectionManager`
//! (pipelined, one round trip per batch), and one pub/sub connection, supervised here, for what this node
//! subscribes to.
//!
//! The subscriptions wanted are kept here, so that a reconnect subscribes to all of them again before it
//! reports [`Incoming::Up`]; a subscribe while Redis is away is only recorded. A `PING` every second on the
//! pub/sub connection notices a Redis that stopped answering without closing the socket.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use ::redis::Client;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use super::{Channel, Incoming, Link};
use crate::broker::BrokerError;
use crate::config::Secret;
use crate::mirror::Backoff;

/// Channels per `SUBSCRIBE` when subscribing again after a reconnect.
const SUBSCRIBE_CHUNK: usize = 1000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const PING_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

struct Subscriptions {
    wanted: HashSet<Vec<u8>>,
    /// The live pub/sub connection's command side, while it is up.
    sink: Option<PubSubSink>,
}

pub struct RedisLink {
    prefix: String,
    publisher: ConnectionManager,
    subscriptions: Mutex<Subscriptions>,
    up: AtomicBool,
}

impl RedisLink {
    /// Starts the link: the pub/sub connection is made (and remade) in the background, reporting to
    /// `incoming`. Fails only on a URL the client refuses; an unreachable Redis is reported as down.
    pub fn start(
        url: &Secret,
        cluster: &str,
        always: &[Channel],
        incoming: mpsc::Sender<Incoming>,
        closing: CancellationToken,
    ) -> Result<Arc<Self>, BrokerError> {
        let client = Client::open(url.expose()).map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_millis(400))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let publisher = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let link = Arc::new(Self {
            prefix: format!("herald:{cluster}:"),
            publisher,
            subscriptions: Mutex::new(Subscriptions { wanted: HashSet::new(), sink: None }),
            up: AtomicBool::new(false),
        });
        {
            let mut subs = link.subscriptions.try_lock().map_err(|_| BrokerError::Unavailable("busy".into()))?;
            subs.wanted.extend(always.iter().map(|c| link.name(c)));
        }
        tokio::spawn(link.clone().supervise(client, incoming, closing));
        Ok(link)
    }

    fn name(&self, channel: &Channel) -> Vec<u8> {
        let mut name = self.prefix.clone().into_bytes();
        match channel {
            Channel::Control => name.extend_from_slice(b"control"),
            Channel::Node(node) => {
                name.extend_from_slice(b"node:");
                name.extend_from_slice(node.as_bytes());
            }
            Channel::User(user) => {
                name.extend_from_slice(b"user:");
                name.extend_from_slice(user.as_str().as_bytes());
            }
            Channel::Topic(topic) => {
                name.extend_from_slice(b"topic:");
                name.extend_from_slice(topic.as_str().as_bytes());
            }
        }
        name
    }

    /// Connects, subscribes to everything wanted, reports up, forwards messages until the connection ends
    /// or stops answering, reports down, and again after a backoff.
    async fn supervise(self: Arc<Self>, client: Client, incoming: mpsc::Sender<Incoming>, closing: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.connect(&client).await {
                Ok(mut stream) => {
                    backoff.reset();
                    self.up.store(true, Ordering::Relaxed);
                    if incoming.send(Incoming::Up).await.is_err() {
                        return;
                    }
                    let mut ping = tokio::time::interval(PING_EVERY);
                    let reason = loop {
                        tokio::select! {
                            () = closing.cancelled() => return,
                            message = stream.next() => match message {
                                Some(message) => {
                                    let payload = Bytes::copy_from_slice(message.get_payload_bytes());
                                    if incoming.send(Incoming::Message(payload)).await.is_err() {
                                        return;
                                    }
                                }
                                None => break "the connection closed".to_owned(),
                            },
                            _ = ping.tick() => {
                                if let Err(e) = self.ping().await {
                                    break e;
                                }
                            }
                        }
                    };
                    self.subscriptions.lock().await.sink = None;
                    self.up.store(false, Ordering::Relaxed);
                    tracing::warn!(reason, "lost the cluster broker (Redis); reconnecting");
                    if incoming.send(Incoming::Down).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not connect to the cluster broker (Redis)"),
            }
            tokio::select! {
                () = closing.cancelled() => return,
                () = tokio::time::sleep(backoff.failed()) => {}
            }
        }
    }

    async fn connect(&self, client: &Client) -> Result<::redis::aio::PubSubStream, String> {
        let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| "timed out connecting".to_owned())?
            .map_err(|e| e.to_string())?;
        let (mut sink, stream) = pubsub.split();
        // Under the lock: a subscribe that comes meanwhile waits, then goes to this connection.
        let mut subs = self.subscriptions.lock().await;
        let wanted: Vec<Vec<u8>> = subs.wanted.iter().cloned().collect();
        for chunk in wanted.chunks(SUBSCRIBE_CHUNK) {
            sink.subscribe(chunk).await.map_err(|e| e.to_string())?;
        }
        subs.sink = Some(sink);
        Ok(stream)
    }

    async fn ping(&self) -> Result<(), String> {
        let Some(mut sink) = self.subscriptions.lock().await.sink.clone() else { return Err("no connection".into()) };
        match tokio::time::timeout(PING_TIMEOUT, sink.ping::<()>()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("Redis did not answer a PING".to_owned()),
        }
    }
}

#[async_trait]
impl Link for RedisLink {
    async fn publish(&self, messages: &[(Channel, Bytes)]) -> Result<usize, BrokerError> {
        let mut pipe = ::redis::pipe();
        for (channel, payload) in messages {
            pipe.cmd("PUBLISH").arg(self.name(channel)).arg(payload.as_ref()).ignore();
        }
        let mut conn = self.publisher.clone();
        // Answered once Redis has them all: nothing is dropped (a message may be up to 512 MB).
        pipe.query_async::<()>(&mut conn).await.map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        Ok(0)
    }

    async fn subscribe(&self, channels: &[Channel]) {
        let names: Vec<Vec<u8>> = channels.iter().map(|c| self.name(c)).collect();
        let mut subs = self.subscriptions.lock().await;
        subs.wanted.extend(names.iter().cloned());
        if let Some(sink) = subs.sink.as_mut() {
            for chunk in names.chunks(SUBSCRIBE_CHUNK) {
                // A failure means the connection is going: the reconnect subscribes to all that is wanted.
                if let Err(e) = sink.subscribe(chunk).await {
                    tracing::debug!(error = %e, "subscribe failed; the reconnect will subscribe again");
                    break;
                }
            }
        }
    }

    async fn unsubscribe(&self, channels: &[Channel]) {
        let names: Vec<Vec<u8>> = channels.iter().map(|c| self.name(c)).collect();
        let mut subs = self.subscriptions.lock().await;
        for name in &names {
            subs.wanted.remove(name);
        }
        if let Some(sink) = subs.sink.as_mut() {
            for chunk in names.chunks(SUBSCRIBE_CHUNK) {
                if sink.unsubscribe(chunk).await.is_err() {
                    break;
                }
            }
        }
    }

    fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
