//! Topic subscribers on this node, and the fanout of committed topic events to them.
//!
//! Sharded 64 ways by topic. Each topic's subscribers are an immutable list behind an `Arc`: the publish
//! path takes the shard lock only to clone that `Arc`, then pushes to every subscriber with no topic lock
//! held, so a subscribe or unsubscribe never waits for a fanout and a fanout never waits for one. (A
//! subscribe copies the list only if a fanout is reading it at that moment; otherwise it edits in place.)
//!
//! Each event is encoded once per encoding in use (the `/ws` frame; each route alias's flattened frame) and
//! the same bytes go to every subscriber with that encoding.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::outbox::{Frame, Push, TopicMark};
use super::registry::Connection;
use crate::config::topics::RouteAlias;
use crate::error::CloseReason;
use crate::protocol;
use crate::topics::{SharedChange, TopicName};

const SHARDS: usize = 64;

/// How a subscriber's frames are written.
#[derive(Clone)]
pub enum Encoding {
    /// `{"type":"event","topic","seq","event"}`, on `/ws` and `/ws/topics/{topic}`.
    Ws,
    /// A route alias's flattened frames.
    Alias(Arc<RouteAlias>),
}

/// Where a subscriber's events go.
pub enum Sink {
    /// Encoded frames into a connection's outbox.
    Outbox { connection: Arc<Connection>, encoding: Encoding },
    /// The changes themselves, for a consumer that renders them its own way (a GraphQL subscription). A
    /// full channel marks it lagged and it gets nothing more: its reader ends the stream.
    Channel { tx: mpsc::Sender<SharedChange>, lagged: Arc<Lagged> },
}

/// Set (and signalled) when a channel subscriber fell behind; it is sent nothing after.
#[derive(Default)]
pub struct Lagged {
    flag: AtomicBool,
    signal: tokio::sync::Notify,
}

impl Lagged {
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.flag.store(true, Ordering::Release);
        // `notify_one` keeps a permit when nobody waits yet, so the reader cannot miss it.
        self.signal.notify_one();
    }

    /// Resolves once the subscriber is lagged.
    pub async fn wait(&self) {
        while !self.is_set() {
            self.signal.notified().await;
        }
    }
}

struct Subscriber {
    id: u64,
    sink: Sink,
}

type List = Arc<Vec<Arc<Subscriber>>>;
type Shard = Mutex<HashMap<TopicName, List>>;

pub struct TopicHub {
    shards: Box<[Shard]>,
    next_id: AtomicU64,
    subscriptions: AtomicUsize,
    topics: AtomicUsize,
}

impl Default for TopicHub {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
            subscriptions: AtomicUsize::new(0),
            topics: AtomicUsize::new(0),
        }
    }
}

impl TopicHub {
    fn shard(&self, topic: &TopicName) -> MutexGuard<'_, HashMap<TopicName, List>> {
        let mut hasher = DefaultHasher::new();
        topic.hash(&mut hasher);
        let index = (hasher.finish() as usize) % SHARDS;
        self.shards[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a subscriber; it is removed when the returned subscription is dropped.
    pub fn subscribe(self: &Arc<Self>, topic: TopicName, sink: Sink) -> TopicSubscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let subscriber = Arc::new(Subscriber { id, sink });
        let mut shard = self.shard(&topic);
        match shard.entry(topic.clone()) {
            Entry::Occupied(mut e) => Arc::make_mut(e.get_mut()).push(subscriber),
            Entry::Vacant(e) => {
                e.insert(Arc::new(vec![subscriber]));
                let topics = self.topics.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::gauge!("herald_topics_watched").set(topics as f64);
            }
        }
        drop(shard);
        let total = self.subscriptions.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("herald_topic_subscribers").set(total as f64);
        TopicSubscription { hub: self.clone(), topic, id }
    }

    fn unsubscribe(&self, topic: &TopicName, id: u64) {
        let mut shard = self.shard(topic);
        if let Entry::Occupied(mut e) = shard.entry(topic.clone()) {
            // Order among a topic's subscribers does not matter: find it, then swap the last one in.
            if let Some(at) = e.get().iter().position(|s| s.id == id) {
                Arc::make_mut(e.get_mut()).swap_remove(at);
            }
            if e.get().is_empty() {
                e.remove();
                let topics = self.topics.fetch_sub(1, Ordering::Relaxed) - 1;
                metrics::gauge!("herald_topics_watched").set(topics as f64);
            }
        }
        drop(shard);
        let total = self.subscriptions.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("herald_topic_subscribers").set(total as f64);
    }

    /// Pushes each committed change to the topic's subscribers, in order. Returns the deliveries queued.
    pub fn dispatch(&self, changes: &[SharedChange]) -> u64 {
        let mut delivered = 0;
        for change in changes {
            let Some(list) = self.shard(&change.topic).get(&change.topic).cloned() else { continue };
            let mark = || Some(TopicMark { topic: change.topic.clone(), seq: change.event.seq });
            let ws = std::cell::OnceCell::new();
            // Aliases are few: a short list of (alias, frame) beats a map.
            let mut aliases: Vec<(*const RouteAlias, Bytes)> = Vec::new();
            for subscriber in list.iter() {
                match &subscriber.sink {
                    Sink::Outbox { connection, encoding } => {
                        let bytes = match encoding {
                            Encoding::Ws => {
                                ws.get_or_init(|| protocol::topics::event(&change.topic, &change.event)).clone()
                            }
                            Encoding::Alias(alias) => {
                                let key = Arc::as_ptr(alias);
                                match aliases.iter().find(|(k, _)| *k == key) {
                                    Some((_, bytes)) => bytes.clone(),
                                    None => {
                                        let bytes = alias_encoder(alias).event(&change.topic, &change.event);
                                        aliases.push((key, bytes.clone()));
                                        bytes
                                    }
                                }
                            }
                        };
                        let frame = Frame { bytes, notification: None, received_at: change.received_at, topic: mark() };
                        match connection.outbox.push(frame) {
                            Push::Queued => delivered += 1,
                            Push::Overflowed => crate::telemetry::metrics().slow_consumer_closes.increment(1),
                            Push::Closed => {}
                        }
                    }
                    Sink::Channel { tx, lagged } => {
                        if lagged.is_set() {
                            continue;
                        }
                        match tx.try_send(change.clone()) {
                            Ok(()) => delivered += 1,
                            Err(mpsc::error::TrySendError::Full(_)) => lagged.set(),
                            Err(mpsc::error::TrySendError::Closed(_)) => {}
                        }
                    }
                }
            }
        }
        crate::telemetry::metrics().topic_deliveries.increment(delivered);
        delivered
    }

    /// Asks every connection watching a topic to close for `reason` (a topic socket belongs to no user, so
    /// the user registry does not reach it).
    pub fn close_all(&self, reason: CloseReason) {
        for shard in self.shards.iter() {
            let lists: Vec<List> = shard.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
            for subscriber in lists.iter().flat_map(|l| l.iter()) {
                if let Sink::Outbox { connection, .. } = &subscriber.sink {
                    connection.outbox.close(reason);
                }
            }
        }
    }

    pub fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    pub fn topics(&self) -> usize {
        self.topics.load(Ordering::Relaxed)
    }
}

pub fn alias_encoder(alias: &RouteAlias) -> protocol::topics::Alias<'_> {
    protocol::topics::Alias { id_key: &alias.id_key, label: &alias.label }
}

/// A subscriber's place in the hub, held for as long as it watches.
pub struct TopicSubscription {
    hub: Arc<TopicHub>,
    topic: TopicName,
    id: u64,
}

impl TopicSubscription {
    pub fn topic(&self) -> &TopicName {
        &self.topic
    }
}

impl Drop for TopicSubscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.topic, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;
    use crate::hub::Outbox;
    use crate::topics::{TopicChange, TopicEvent, TopicState};

    fn change(topic: &TopicName, seq: u64) -> SharedChange {
        let event = TopicEvent {
            seq,
            kind: "status".into(),
            status: None,
            progress: None,
            data: Default::default(),
            at: Timestamp(0),
        };
        Arc::new(TopicChange {
            topic: topic.clone(),
            state: TopicState::empty(topic.clone()),
            event,
            status_changed: false,
            received_at: None,
        })
    }

    #[test]
    fn every_subscriber_of_the_topic_gets_the_same_bytes_and_no_other_does() {
        let hub = Arc::new(TopicHub::default());
        let t1 = TopicName::parse("order:1").unwrap();
        let t2 = TopicName::parse("order:2").unwrap();
        let conn = |id| Arc::new(Connection { id, outbox: Outbox::new(8) });
        let (a, b, c) = (conn(1), conn(2), conn(3));
        let sink = |c: &Arc<Connection>| Sink::Outbox { connection: c.clone(), encoding: Encoding::Ws };
        let sa = hub.subscribe(t1.clone(), sink(&a));
        let _sb = hub.subscribe(t1.clone(), sink(&b));
        let _sc = hub.subscribe(t2.clone(), sink(&c));
        assert_eq!((hub.subscriptions(), hub.topics()), (3, 2));
        assert_eq!(hub.dispatch(&[change(&t1, 1)]), 2);
        let (fa, fb) = (a.outbox.take().0, b.outbox.take().0);
        assert_eq!((fa.len(), fb.len(), c.outbox.take().0.len()), (1, 1, 0));
        assert_eq!(fa[0].bytes.as_ptr(), fb[0].bytes.as_ptr(), "encoded once, shared");
        assert_eq!(fa[0].topic.as_ref().map(|m| m.seq), Some(1));
        drop(sa);
        assert_eq!(hub.dispatch(&[change(&t1, 2)]), 1);
        assert!(a.outbox.take().0.is_empty());
    }

    #[test]
    fn a_full_channel_is_marked_lagged_and_skipped() {
        let hub = Arc::new(TopicHub::default());
        let t = TopicName::parse("intent:1").unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let lagged = Arc::new(Lagged::default());
        let _s = hub.subscribe(t.clone(), Sink::Channel { tx, lagged: lagged.clone() });
        hub.dispatch(&[change(&t, 1), change(&t, 2), change(&t, 3)]);
        assert!(lagged.is_set());
        assert_eq!(rx.try_recv().map(|c| c.event.seq).ok(), Some(1));
        assert!(rx.try_recv().is_err());
    }
}
