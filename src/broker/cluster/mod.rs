//! The cluster broker: several nodes sharing one PostgreSQL, each delivering to its own connections the
//! events committed on any node, through Redis pub/sub or NATS.
//!
//! - **Only what a node needs.** Each user has a channel; a node subscribes to it while the user has a
//!   connection there (the registry tells it who arrived and who left), so an event travels only to the
//!   nodes holding the user. Besides, every node listens on the control channel (heartbeats, presence
//!   queries, audits) and on its own channel (presence replies).
//! - **In order, once.** Nodes publish after their commit, so events of one user from two nodes can arrive
//!   in either order. Each event carries its `seq` (the store numbers each user's events under the user's
//!   row lock), and the registry delivers each user's events in `seq` order, holding back one that arrives
//!   early and dropping one it has delivered (see `hub::registry`). A user's stream starts at the position
//!   read from the store *after* the subscription is active, so every later event reaches this node.
//! - **Nothing silently lost.** An event missing for longer than [`GAP_LIMIT`] (the broker lost it, or its
//!   publisher could not send it) makes the user's connections here resync (a `resync` frame, then close
//!   4009: reconnect with `since`). When the link to the broker comes back, every user here is checked against
//!   the store (an audit): one whose events went further than this node delivered must catch up within the
//!   limit, or resync. A node that had to drop events it could not publish asks every node to audit.
//! - **Two brokers.** The link to the broker is a [`Link`]: Redis pub/sub (`redis.rs`) or core NATS
//!   (`nats.rs`); everything above is the same for both.
//! - **Serving through an outage.** A node's own events go to its own connections directly, never through
//!   the broker, and publishing waits in a bounded queue; HTTP and WebSockets never wait for it.

mod nats;
mod redis;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use self::wire::Message;
use super::{Broker, BrokerError, BrokerHealth};
use crate::config::BrokerUrl;
use crate::domain::{InboxEvent, UserId};
use crate::hub::registry::Presence;
use crate::hub::{Frame, Hub, Registry, TopicHub};
use crate::mirror::Backoff;
use crate::store::topics::TopicStore;
use crate::store::{Store, StoreError};
use crate::telemetry::metrics;
use crate::topics::{SharedChange, TopicName};

/// How long a user's delivery here may be short of where it must be (an event missing, the stream not yet
/// started, short of what an audit found) before their connections are told to resync.
pub const GAP_LIMIT: Duration = Duration::from_secs(3);
/// Events waiting to be published; past this, events are dropped (and every node audits afterwards).
const OUTGOING: usize = 65_536;
/// Messages received and not yet handled; when full, reading from the broker waits.
const INCOMING: usize = 8_192;
const PUBLISH_BATCH: usize = 512;
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A peer not heard from for this long is taken to be gone.
const PEER_EXPIRY: Duration = Duration::from_secs(5);
/// How long a presence query waits for the other nodes' answers.
const PRESENCE_WAIT: Duration = Duration::from_millis(500);
/// Users whose positions are read from the store in one query.
const POSITIONS_CHUNK: usize = 10_000;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    Control,
    Node(String),
    User(UserId),
    Topic(TopicName),
}

/// What a link reports to the cluster.
#[derive(Debug)]
pub enum Incoming {
    Message(Bytes),
    /// Connected, and subscribed to everything wanted.
    Up,
    Down,
    /// The broker dropped messages meant for this node (it read too slowly).
    Lost,
}

/// A pub/sub connection to the broker between nodes.
#[async_trait]
pub trait Link: Send + Sync + 'static {
    /// Publishes the messages in order; returns how many it had to drop (too large for the broker). An error
    /// means some may not have been sent: the batch is sent again (receivers drop repeats).
    async fn publish(&self, messages: &[(Channel, Bytes)]) -> Result<usize, BrokerError>;
    /// Subscribes. Once this returns, every message later published on these channels reaches this node,
    /// or the link reports `Down` (and later `Up`, after subscribing again).
    async fn subscribe(&self, channels: &[Channel]);
    async fn unsubscribe(&self, channels: &[Channel]);
    fn up(&self) -> bool;
    fn backend(&self) -> &'static str;
}

/// Users' connections across the cluster, as `GET /api/v1/users/{id}/presence` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Headcount {
    pub connections: u64,
    /// The nodes that answered (this one included), and those that were asked.
    pub nodes: usize,
    pub nodes_asked: usize,
}

/// Answers to a presence query: the node, and its count.
type Replies = mpsc::Sender<(String, u32)>;

pub struct Cluster {
    node: String,
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    topics: Arc<dyn TopicStore>,
    link: Arc<dyn Link>,
    outgoing: mpsc::Sender<(Channel, Bytes)>,
    /// An event could not be queued for publishing: the others must audit once the queue drains.
    lost: AtomicBool,
    audit: Notify,
    peers: Mutex<HashMap<String, Instant>>,
    queries: Mutex<HashMap<u64, Replies>>,
    next_query: AtomicU64,
    closing: CancellationToken,
}

impl Cluster {
    /// Starts the cluster broker over Redis or NATS at `url`: the link connects in the background (an
    /// unreachable broker is reported, never fatal). `hub` must have an ordered registry.
    pub async fn join(
        url: &BrokerUrl,
        cluster: &str,
        node: String,
        hub: Arc<Hub>,
        store: Arc<dyn Store>,
        topics: Arc<dyn TopicStore>,
    ) -> Result<Arc<Self>, BrokerError> {
        let closing = CancellationToken::new();
        let (incoming, incoming_rx) = mpsc::channel(INCOMING);
        let always = [Channel::Control, Channel::Node(node.clone())];
        let link: Arc<dyn Link> = match url {
            BrokerUrl::Redis(url) => redis::RedisLink::start(url, cluster, &always, incoming, closing.clone())?,
            BrokerUrl::Nats(url) => {
                nats::NatsLink::start(url, cluster, &node, &always, incoming, closing.clone()).await?
            }
            BrokerUrl::Memory => return Err(BrokerError::Unavailable("memory is one node's broker".into())),
        };
        Ok(Self::start(node, hub, store, topics, link, incoming_rx, closing))
    }

    fn start(
        node: String,
        hub: Arc<Hub>,
        store: Arc<dyn Store>,
        topics: Arc<dyn TopicStore>,
        link: Arc<dyn Link>,
        incoming: mpsc::Receiver<Incoming>,
        closing: CancellationToken,
    ) -> Arc<Self> {
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING);
        let cluster = Arc::new(Self {
            node,
            hub,
            store,
            topics,
            link,
            outgoing,
            lost: AtomicBool::new(false),
            audit: Notify::new(),
            peers: Mutex::new(HashMap::new()),
            queries: Mutex::new(HashMap::new()),
            next_query: AtomicU64::new(1),
            closing,
        });
        tokio::spawn(cluster.clone().receive(incoming));
        tokio::spawn(cluster.clone().follow_presence());
        tokio::spawn(cluster.clone().publish_queued(outgoing_rx));
        tokio::spawn(cluster.clone().tick());
        cluster
    }

    fn queue(&self, channel: Channel, payload: Bytes) {
        if self.outgoing.try_send((channel, payload)).is_err() {
            metrics().cluster_publish_dropped.increment(1);
            self.lost.store(true, Ordering::Relaxed);
        }
    }

    fn peers(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        lock(&self.peers)
    }

    fn resync(&self, user: &UserId) {
        tracing::info!(user = %user, "events for this user may have been missed here; their connections resync");
        self.hub.registry.resync(user);
    }

    fn resync_topic(&self, topic: &TopicName) {
        tracing::info!(%topic, "events of this topic may have been missed here; its subscribers resync");
        self.hub.topics.resync(topic);
    }

    /// Handles what the link reports, in order.
    async fn receive(self: Arc<Self>, mut incoming: mpsc::Receiver<Incoming>) {
        while let Some(report) = incoming.recv().await {
            match report {
                Incoming::Up => {
                    tracing::info!("connected to the cluster broker; checking this node's users against the store");
                    metrics::gauge!("herald_cluster_broker_up").set(1.0);
                    self.audit.notify_one();
                }
                Incoming::Down => metrics::gauge!("herald_cluster_broker_up").set(0.0),
                Incoming::Lost => self.audit.notify_one(),
                Incoming::Message(bytes) => match Message::decode(bytes) {
                    Ok(message) => self.handle(message),
                    Err(e) => tracing::warn!(error = %e, "ignored a malformed message from the cluster broker"),
                },
            }
        }
    }

    fn handle(&self, message: Message) {
        match message {
            Message::Event { origin, user, seq, notification, frame } => {
                if origin == self.node {
                    // Delivered here at commit already.
                    return;
                }
                metrics().cluster_received.increment(1);
                let frame = || Frame { bytes: frame, notification, received_at: None, topic: None };
                if self.hub.registry.deliver_in_order(&user, seq, frame) {
                    self.resync(&user);
                }
            }
            Message::Heartbeat { node } => {
                if node != self.node {
                    self.peers().insert(node, Instant::now());
                }
            }
            Message::PresenceQuery { node, request, user } => {
                if node != self.node {
                    let connections = self.hub.registry.connections_of(&user) as u32;
                    let reply = Message::PresenceReply { node: self.node.clone(), request, connections };
                    self.queue(Channel::Node(node), reply.encode());
                }
            }
            Message::PresenceReply { node, request, connections } => {
                if let Some(replies) = lock(&self.queries).get(&request) {
                    let _ = replies.try_send((node.clone(), connections));
                }
                self.peers().insert(node, Instant::now());
            }
            Message::Audit { node } => {
                if node != self.node {
                    tracing::info!(node, "a node could not publish some events; checking this node's users");
                    self.audit.notify_one();
                }
            }
            Message::TopicEvent { origin, change } => {
                if origin == self.node {
                    return;
                }
                metrics().cluster_received.increment(1);
                if self.hub.topics.dispatch_in_order(&change) {
                    self.resync_topic(&change.topic);
                }
            }
        }
    }

    /// Keeps the subscriptions to users' and topics' channels in step with who is connected and what is
    /// watched here, starts each new stream at its position in the store, and runs the audits asked for.
    async fn follow_presence(self: Arc<Self>) {
        let users = Users(&self.hub.registry);
        let topics = Topics(&self.hub.topics);
        let (mut subscribed_users, mut subscribed_topics) = (HashSet::new(), HashSet::new());
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            tokio::select! {
                () = self.closing.cancelled() => return,
                changed = self.hub.registry.changes() => {
                    self.follow(&users, changed, &mut subscribed_users, &mut backoff).await;
                }
                changed = self.hub.topics.changes() => {
                    self.follow(&topics, changed, &mut subscribed_topics, &mut backoff).await;
                }
                () = self.audit.notified() => self.run_audit().await,
            }
            metrics().cluster_subscriptions.set((subscribed_users.len() + subscribed_topics.len()) as f64);
        }
    }

    /// Subscribes to the channels of the users (or topics) that arrived, unsubscribes from those that left,
    /// and starts the new streams at the store's positions, read after the subscriptions are active.
    async fn follow<F: Followed>(
        &self,
        followed: &F,
        changed: Vec<F::Key>,
        subscribed: &mut HashSet<F::Key>,
        backoff: &mut Backoff,
    ) {
        let mut starting = Vec::new();
        let mut gone = Vec::new();
        for key in changed {
            match followed.presence(&key) {
                Presence::Absent => {
                    if subscribed.remove(&key) {
                        gone.push(F::channel(&key));
                    }
                }
                Presence::Starting(generation) => starting.push((key, generation)),
                Presence::Started => {}
            }
        }
        if !gone.is_empty() {
            self.link.unsubscribe(&gone).await;
        }
        if starting.is_empty() {
            return;
        }
        let new: Vec<Channel> =
            starting.iter().filter(|(key, _)| subscribed.insert(key.clone())).map(|(key, _)| F::channel(key)).collect();
        self.link.subscribe(&new).await;
        // Read after the subscription is active: every event after these positions reaches this node.
        let keys: Vec<F::Key> = starting.iter().map(|(key, _)| key.clone()).collect();
        match self.positions(followed, &keys).await {
            Ok(positions) => {
                backoff.reset();
                for ((key, generation), position) in starting.iter().zip(positions) {
                    followed.start(key, *generation, position);
                }
            }
            Err(e) => {
                // They wait, and resync if this lasts past the gap limit.
                tracing::warn!(error = %e, streams = keys.len(), "could not read positions from the store; retrying");
                for key in &keys {
                    followed.touch(key);
                }
                tokio::time::sleep(backoff.failed()).await;
            }
        }
    }

    async fn positions<F: Followed>(&self, followed: &F, keys: &[F::Key]) -> Result<Vec<u64>, StoreError> {
        let mut all = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(POSITIONS_CHUNK) {
            all.extend(followed.positions(self, chunk).await?);
        }
        Ok(all)
    }

    /// Checks every user and topic here against the store: delivery must reach where their events stand now.
    async fn run_audit(&self) {
        let users: Vec<UserId> = self.hub.registry.positions().into_iter().map(|(user, _)| user).collect();
        self.audit_all(&Users(&self.hub.registry), users).await;
        self.audit_all(&Topics(&self.hub.topics), self.hub.topics.watched()).await;
    }

    async fn audit_all<F: Followed>(&self, followed: &F, keys: Vec<F::Key>) {
        if keys.is_empty() {
            return;
        }
        match self.positions(followed, &keys).await {
            Ok(positions) => {
                for (key, position) in keys.iter().zip(positions) {
                    followed.expect(key, position);
                }
            }
            Err(e) => {
                // Without the store there is nothing to compare with: everyone here catches up by reconnecting.
                tracing::warn!(error = %e, streams = keys.len(), "could not audit this node's streams; they resync");
                for key in &keys {
                    followed.resync(self, key);
                }
            }
        }
    }

    /// Publishes what is queued, in order, in batches; a failed batch is retried (after a backoff) before any
    /// later one. After a drop, asks every node to audit.
    async fn publish_queued(self: Arc<Self>, mut queued: mpsc::Receiver<(Channel, Bytes)>) {
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            if batch.is_empty() {
                tokio::select! {
                    () = self.closing.cancelled() => return,
                    n = queued.recv_many(&mut batch, PUBLISH_BATCH) => if n == 0 { return },
                }
            }
            match self.link.publish(&batch).await {
                Ok(dropped) => {
                    if dropped > 0 {
                        metrics().cluster_publish_dropped.increment(dropped as u64);
                        self.lost.store(true, Ordering::Relaxed);
                    }
                    metrics().cluster_published.increment((batch.len() - dropped) as u64);
                    batch.clear();
                    backoff.reset();
                    if self.lost.swap(false, Ordering::Relaxed) {
                        batch.push((Channel::Control, Message::Audit { node: self.node.clone() }.encode()));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, waiting = batch.len() + queued.len(), "could not publish to the cluster broker");
                    tokio::select! {
                        () = self.closing.cancelled() => return,
                        () = tokio::time::sleep(backoff.failed()) => {}
                    }
                }
            }
        }
    }

    /// Heartbeats, peers' expiry, and the users whose delivery has fallen behind for too long.
    async fn tick(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        let mut last_heartbeat = Instant::now() - HEARTBEAT;
        loop {
            tokio::select! {
                () = self.closing.cancelled() => return,
                _ = every.tick() => {}
            }
            if last_heartbeat.elapsed() >= HEARTBEAT {
                last_heartbeat = Instant::now();
                self.queue(Channel::Control, Message::Heartbeat { node: self.node.clone() }.encode());
                self.peers().retain(|_, seen| seen.elapsed() < PEER_EXPIRY);
            }
            for user in self.hub.registry.overdue(GAP_LIMIT) {
                self.resync(&user);
            }
            for topic in self.hub.topics.overdue(GAP_LIMIT) {
                self.resync_topic(&topic);
            }
        }
    }

    /// The user's connections on every node: this node's count, and the others' answers to a query on the
    /// control channel (those that answer within [`PRESENCE_WAIT`]).
    pub async fn headcount(&self, user: &UserId) -> Result<Headcount, BrokerError> {
        // Checked first: with the broker away, peers stop being heard from and would seem gone.
        if !self.link.up() {
            return Err(BrokerError::Unavailable("the cluster broker is away: other nodes cannot be asked".into()));
        }
        let here = self.hub.registry.connections_of(user) as u64;
        let asked = self.peers().len();
        if asked == 0 {
            return Ok(Headcount { connections: here, nodes: 1, nodes_asked: 1 });
        }
        let request = self.next_query.fetch_add(1, Ordering::Relaxed);
        let (replies, mut answers) = mpsc::channel(asked + 8);
        lock(&self.queries).insert(request, replies);
        let _forget = Forget { queries: &self.queries, request };
        let query = Message::PresenceQuery { node: self.node.clone(), request, user: user.clone() };
        self.link.publish(&[(Channel::Control, query.encode())]).await?;
        // By node: a query sent again (a publish retried) is answered again.
        let mut answered: HashMap<String, u32> = HashMap::new();
        let deadline = tokio::time::sleep(PRESENCE_WAIT);
        tokio::pin!(deadline);
        while answered.len() < asked {
            tokio::select! {
                () = &mut deadline => break,
                answer = answers.recv() => match answer {
                    Some((node, connections)) => {
                        answered.insert(node, connections);
                    }
                    None => break,
                },
            }
        }
        let total = here + answered.values().map(|c| u64::from(*c)).sum::<u64>();
        Ok(Headcount { connections: total, nodes: answered.len() + 1, nodes_asked: asked + 1 })
    }

    /// Waits (at most `limit`) for the queue to other nodes to drain, then stops every task.
    async fn stop(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.outgoing.capacity() < self.outgoing.max_capacity() && Instant::now() < deadline {
            // Polled: this runs once, at exit, and the queue drains in milliseconds when the broker is up.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.closing.cancel();
    }
}

/// Users or topics, as the cluster follows them: who is here, their streams, their channels, their positions.
#[async_trait]
trait Followed: Sync {
    type Key: Clone + Eq + Hash + Send + Sync;
    fn presence(&self, key: &Self::Key) -> Presence;
    fn start(&self, key: &Self::Key, generation: u64, position: u64);
    fn touch(&self, key: &Self::Key);
    fn expect(&self, key: &Self::Key, position: u64);
    fn resync(&self, cluster: &Cluster, key: &Self::Key);
    fn channel(key: &Self::Key) -> Channel;
    /// Where each one's events stand in the store.
    async fn positions(&self, cluster: &Cluster, keys: &[Self::Key]) -> Result<Vec<u64>, StoreError>;
}

struct Users<'a>(&'a Registry);

#[async_trait]
impl Followed for Users<'_> {
    type Key = UserId;

    fn presence(&self, user: &UserId) -> Presence {
        self.0.presence(user)
    }

    fn start(&self, user: &UserId, generation: u64, position: u64) {
        self.0.start(user, generation, position);
    }

    fn touch(&self, user: &UserId) {
        self.0.touch(user);
    }

    fn expect(&self, user: &UserId, position: u64) {
        self.0.expect(user, position);
    }

    fn resync(&self, cluster: &Cluster, user: &UserId) {
        cluster.resync(user);
    }

    fn channel(user: &UserId) -> Channel {
        Channel::User(user.clone())
    }

    async fn positions(&self, cluster: &Cluster, users: &[UserId]) -> Result<Vec<u64>, StoreError> {
        cluster.store.positions(users).await
    }
}

struct Topics<'a>(&'a TopicHub);

#[async_trait]
impl Followed for Topics<'_> {
    type Key = TopicName;

    fn presence(&self, topic: &TopicName) -> Presence {
        self.0.presence(topic)
    }

    fn start(&self, topic: &TopicName, generation: u64, position: u64) {
        self.0.start(topic, generation, position);
    }

    fn touch(&self, topic: &TopicName) {
        self.0.touch(topic);
    }

    fn expect(&self, topic: &TopicName, position: u64) {
        self.0.expect(topic, position);
    }

    fn resync(&self, cluster: &Cluster, topic: &TopicName) {
        cluster.resync_topic(topic);
    }

    fn channel(topic: &TopicName) -> Channel {
        Channel::Topic(topic.clone())
    }

    async fn positions(&self, cluster: &Cluster, topics: &[TopicName]) -> Result<Vec<u64>, StoreError> {
        cluster.topics.positions(topics).await
    }
}

/// Removes a presence query's entry however the query ends.
struct Forget<'a> {
    queries: &'a Mutex<HashMap<u64, Replies>>,
    request: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.queries).remove(&self.request);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl Broker for Cluster {
    async fn publish(&self, events: Vec<InboxEvent>) -> Result<(), BrokerError> {
        for event in &events {
            let user = event.user_id();
            let (notification, received_at) = match event {
                InboxEvent::Created { notification, received_at, .. } => (Some(notification.id), Some(*received_at)),
                _ => (None, None),
            };
            let bytes = crate::protocol::event(event);
            let frame = || Frame { bytes: bytes.clone(), notification, received_at, topic: None };
            let Some(seq) = event.seq() else {
                // Not from a shared store (the settings refuse that); delivered here only.
                self.hub.registry.deliver(user, frame);
                continue;
            };
            if self.hub.registry.deliver_in_order(user, seq, frame) {
                self.resync(user);
            }
            let message = Message::Event {
                origin: self.node.clone(),
                user: user.clone(),
                seq,
                notification,
                frame: bytes.clone(),
            };
            self.queue(Channel::User(user.clone()), message.encode());
        }
        Ok(())
    }

    async fn publish_topics(&self, changes: Vec<SharedChange>) -> Result<(), BrokerError> {
        for change in changes {
            if self.hub.topics.dispatch_in_order(&change) {
                self.resync_topic(&change.topic);
            }
            let channel = Channel::Topic(change.topic.clone());
            self.queue(channel, Message::TopicEvent { origin: self.node.clone(), change }.encode());
        }
        Ok(())
    }

    async fn presence(&self, user: &UserId) -> Result<Headcount, BrokerError> {
        self.headcount(user).await
    }

    async fn shutdown(&self, limit: Duration) {
        self.stop(limit).await;
    }

    fn health(&self) -> BrokerHealth {
        let mut peers: Vec<String> = self.peers().keys().cloned().collect();
        peers.sort_unstable();
        BrokerHealth { ok: self.link.up(), backend: self.link.backend(), node: self.node.clone(), peers: Some(peers) }
    }
}
