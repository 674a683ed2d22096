//! Topic subscribers on this node, and the fanout of committed topic events to them.
//!
//! Sharded 64 ways by topic. Each topic's subscribers are an immutable list behind an `Arc`: the publish
//! path takes the shard lock only to clone that `Arc`, then pushes to every subscriber with no topic lock
//! held, so a subscribe or unsubscribe never waits for a fanout and a fanout never waits for one. (A
//! subscribe copies the list only if a fanout is reading it at that moment; otherwise it edits in place.)
//!
//! Each event is encoded once per encoding in use (the `/ws` frame; each route alias's flattened frame) and
//! the same bytes go to every subscriber with that encoding.
//!
//! In a cluster the hub is *ordered*: each watched topic has a [`Stream`] (behind a lock of its own, so a
//! fanout still holds no shard lock while it pushes), and events are delivered in their `seq` order, as a
//! user's are (see `registry`); the cluster broker follows who watches what through [`TopicHub::changes`].

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use super::outbox::{Frame, Push, TopicMark};
use super::registry::Connection;
use super::stream::{wait_started, Offered, Presence, Stream};
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
type SharedStream = Arc<Mutex<Stream<SharedChange>>>;

/// A topic watched on this node.
struct Watched {
    list: List,
    /// In an ordered hub (a cluster): where the topic's events stand on this node.
    stream: Option<SharedStream>,
}

type Shard = Mutex<HashMap<TopicName, Watched>>;

pub struct TopicHub {
    shards: Box<[Shard]>,
    next_id: AtomicU64,
    subscriptions: AtomicUsize,
    topics: AtomicUsize,
    /// Whether each topic's events are delivered in `seq` order (a cluster) or as they come (one node).
    ordered: bool,
    /// Topics that gained their first subscriber or lost their last since the cluster broker last looked.
    changed: Mutex<HashSet<TopicName>>,
    change: Notify,
}

impl Default for TopicHub {
    fn default() -> Self {
        Self::new(false)
    }
}

impl TopicHub {
    /// `ordered`: deliver each topic's events in `seq` order, each stream starting where the cluster broker
    /// says (see [`TopicHub::start`]).
    pub fn new(ordered: bool) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
            subscriptions: AtomicUsize::new(0),
            topics: AtomicUsize::new(0),
            ordered,
            changed: Mutex::new(HashSet::new()),
            change: Notify::new(),
        }
    }

    fn shard(&self, topic: &TopicName) -> MutexGuard<'_, HashMap<TopicName, Watched>> {
        let mut hasher = DefaultHasher::new();
        topic.hash(&mut hasher);
        let index = (hasher.finish() as usize) % SHARDS;
        lock(&self.shards[index])
    }

    fn note_change(&self, topic: &TopicName) {
        if self.ordered {
            lock(&self.changed).insert(topic.clone());
            self.change.notify_one();
        }
    }

    fn new_stream(&self, generation: u64) -> Option<SharedStream> {
        self.ordered.then(|| Arc::new(Mutex::new(Stream::new(generation))))
    }

    /// Adds a subscriber; it is removed when the returned subscription is dropped.
    pub fn subscribe(self: &Arc<Self>, topic: TopicName, sink: Sink) -> TopicSubscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let subscriber = Arc::new(Subscriber { id, sink });
        let mut shard = self.shard(&topic);
        match shard.entry(topic.clone()) {
            Entry::Occupied(mut e) => {
                let watched = e.get_mut();
                Arc::make_mut(&mut watched.list).push(subscriber);
                // The topic's other subscribers here are closing to resync (this may be one coming back): this
                // one starts a fresh stream, from the store's position.
                if watched.stream.as_ref().is_some_and(|s| lock(s).resyncing) {
                    watched.stream = self.new_stream(id);
                    self.note_change(&topic);
                }
            }
            Entry::Vacant(e) => {
                e.insert(Watched { list: Arc::new(vec![subscriber]), stream: self.new_stream(id) });
                self.note_change(&topic);
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
            if let Some(at) = e.get().list.iter().position(|s| s.id == id) {
                Arc::make_mut(&mut e.get_mut().list).swap_remove(at);
            }
            if e.get().list.is_empty() {
                e.remove();
                self.note_change(topic);
                let topics = self.topics.fetch_sub(1, Ordering::Relaxed) - 1;
                metrics::gauge!("herald_topics_watched").set(topics as f64);
            }
        }
        drop(shard);
        let total = self.subscriptions.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("herald_topic_subscribers").set(total as f64);
    }

    /// Pushes each committed change to the topic's subscribers, as they come (one node). Returns the
    /// deliveries queued.
    pub fn dispatch(&self, changes: &[SharedChange]) -> u64 {
        let mut delivered = 0;
        for change in changes {
            let Some(list) = self.shard(&change.topic).get(&change.topic).map(|w| w.list.clone()) else { continue };
            delivered += push(&list, change);
        }
        crate::telemetry::metrics().topic_deliveries.increment(delivered);
        delivered
    }

    /// Delivers a committed change in its topic's `seq` order (a cluster): now if it follows the last
    /// delivered, later if one before it is still missing, never if it was delivered already. Returns whether
    /// the topic's subscribers here must now resync (too much held back).
    pub fn dispatch_in_order(&self, change: &SharedChange) -> bool {
        let (list, stream) = {
            let shard = self.shard(&change.topic);
            let Some(watched) = shard.get(&change.topic) else { return false };
            (watched.list.clone(), watched.stream.clone())
        };
        let mut delivered = 0;
        let overflow = match stream {
            None => {
                delivered += push(&list, change);
                false
            }
            Some(stream) => {
                let mut stream = lock(&stream);
                // A topic that expired begins a new life at 1.
                if change.event.seq == 1 && stream.delivered.is_some_and(|last| last >= 1) {
                    stream.restart();
                }
                let offered = stream.offer(change.event.seq, || change.clone(), |c| delivered += push(&list, c));
                offered == Offered::Overflow
            }
        };
        crate::telemetry::metrics().topic_deliveries.increment(delivered);
        overflow
    }

    /// Takes the topics that gained their first subscriber or lost their last since the last call, waiting
    /// until there is one.
    pub async fn changes(&self) -> Vec<TopicName> {
        loop {
            let notified = self.change.notified();
            let taken: Vec<TopicName> = lock(&self.changed).drain().collect();
            if !taken.is_empty() {
                return taken;
            }
            notified.await;
        }
    }

    /// Hands `topic` to the next [`TopicHub::changes`] again (to retry its start).
    pub fn touch(&self, topic: &TopicName) {
        self.note_change(topic);
    }

    fn stream(&self, topic: &TopicName) -> Option<(List, SharedStream)> {
        let shard = self.shard(topic);
        let watched = shard.get(topic)?;
        Some((watched.list.clone(), watched.stream.clone()?))
    }

    pub fn presence(&self, topic: &TopicName) -> Presence {
        let shard = self.shard(topic);
        match shard.get(topic) {
            None => Presence::Absent,
            Some(Watched { stream: Some(stream), .. }) => {
                let stream = lock(stream);
                match stream.delivered {
                    None => Presence::Starting(stream.generation),
                    Some(_) => Presence::Started,
                }
            }
            Some(_) => Presence::Started,
        }
    }

    /// Starts the topic's stream (of that generation) at `position`, the `seq` of the last event this node
    /// need not deliver, and delivers what followed it. False if the stream is gone or started.
    pub fn start(&self, topic: &TopicName, generation: u64, position: u64) -> bool {
        let Some((list, stream)) = self.stream(topic) else { return false };
        let mut stream = lock(&stream);
        if stream.generation != generation {
            return false;
        }
        let mut delivered = 0;
        let started = stream.start(position, |c| delivered += push(&list, c));
        crate::telemetry::metrics().topic_deliveries.increment(delivered);
        started
    }

    /// Notes that the topic's events have reached `position` in the store (see `Stream::expect`).
    pub fn expect(&self, topic: &TopicName, position: u64) {
        if let Some((_, stream)) = self.stream(topic) {
            lock(&stream).expect(position);
        }
    }

    /// The topics whose delivery has been short of where it must be for longer than `limit`.
    pub fn overdue(&self, limit: Duration) -> Vec<TopicName> {
        let now = Instant::now();
        let mut late = Vec::new();
        for shard in self.shards.iter() {
            for (topic, watched) in lock(shard).iter() {
                if watched.stream.as_ref().is_some_and(|s| lock(s).overdue(now, limit)) {
                    late.push(topic.clone());
                }
            }
        }
        late
    }

    /// The topics watched here.
    pub fn watched(&self) -> Vec<TopicName> {
        let mut all = Vec::with_capacity(self.topics());
        for shard in self.shards.iter() {
            all.extend(lock(shard).keys().cloned());
        }
        all
    }

    /// Tells every subscriber of `topic` here to resync (a socket closes with 4009; a channel ends as
    /// lagged) and delivers nothing more to them.
    pub fn resync(&self, topic: &TopicName) {
        let Some((list, stream)) = self.stream(topic) else { return };
        lock(&stream).resync();
        for subscriber in list.iter() {
            match &subscriber.sink {
                Sink::Outbox { connection, .. } => connection.outbox.close(CloseReason::Resync),
                Sink::Channel { lagged, .. } => lagged.set(),
            }
        }
        crate::telemetry::metrics().resyncs.increment(list.len() as u64);
    }
    /// the user registry does not reach it).
    pub fn close_all(&self, reason: CloseReason) {
        for shard in self.shards.iter() {
            let lists: Vec<List> = lock(shard).values().map(|w| w.list.clone()).collect();
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

/// Pushes one change to every subscriber in `list`, encoded once per encoding. Returns the deliveries queued.
fn push(list: &List, change: &SharedChange) -> u64 {
    let mut delivered = 0;
    let mark = || Some(TopicMark { topic: change.topic.clone(), seq: change.event.seq });
    let ws = std::cell::OnceCell::new();
    // Aliases are few: a short list of (alias, frame) beats a map.
    let mut aliases: Vec<(*const RouteAlias, Bytes)> = Vec::new();
    for subscriber in list.iter() {
        match &subscriber.sink {
            Sink::Outbox { connection, encoding } => {
                let bytes = match encoding {
                    Encoding::Ws => ws.get_or_init(|| protocol::topics::event(&change.topic, &change.event)).clone(),
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
    delivered
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

    /// Waits (at most `limit`) until the topic's stream here has started, so that whatever the subscriber
    /// reads from the store now is followed by every later event. True at once in a hub that is not ordered;
    /// false if the limit passed first.
    pub async fn started(&self, limit: Duration) -> bool {
        let started = match self.hub.stream(&self.topic) {
            Some((_, stream)) => {
                let stream = lock(&stream);
                if stream.delivered.is_some() {
                    return true;
                }
                stream.started.clone()
            }
            None => return true,
        };
        wait_started(started, limit, || !matches!(self.hub.presence(&self.topic), Presence::Starting(_))).await
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The locks guard plain data and no code panics while holding one; recover rather than propagate.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
    fn an_ordered_hub_delivers_each_topics_events_in_seq_order_from_its_start() {
        let hub = Arc::new(TopicHub::new(true));
        let t = TopicName::parse("intent:9").unwrap();
        let a = Arc::new(Connection { id: 1, outbox: Outbox::new(64) });
        let sub = hub.subscribe(t.clone(), Sink::Outbox { connection: a.clone(), encoding: Encoding::Ws });
        let seqs = |c: &Arc<Connection>| {
            c.outbox.take().0.iter().filter_map(|f| f.topic.as_ref().map(|m| m.seq)).collect::<Vec<_>>()
        };
        let Presence::Starting(generation) = hub.presence(&t) else { panic!("not starting") };
        // Held until the start, which drops what the recovery covers (1, 2).
        for seq in [3, 1, 4, 2] {
            assert!(!hub.dispatch_in_order(&change(&t, seq)));
        }
        assert!(seqs(&a).is_empty());
        assert!(hub.start(&t, generation, 2));
        assert_eq!(seqs(&a), [3, 4]);
        // 6 waits for 5; a repeat is dropped; the topic is overdue while 5 is missing.
        hub.dispatch_in_order(&change(&t, 6));
        hub.dispatch_in_order(&change(&t, 4));
        assert!(hub.overdue(Duration::ZERO).contains(&t));
        hub.dispatch_in_order(&change(&t, 5));
        assert_eq!(seqs(&a), [5, 6]);
        assert!(hub.overdue(Duration::ZERO).is_empty());
        // An expired topic's new life starts again at 1.
        hub.dispatch_in_order(&change(&t, 1));
        assert_eq!(seqs(&a), [1]);
        // A resync closes the subscriber with 4009 and delivers nothing more.
        hub.resync(&t);
        hub.dispatch_in_order(&change(&t, 2));
        let (frames, closing) = a.outbox.take();
        assert!(frames.is_empty());
        assert_eq!(closing, Some(CloseReason::Resync));
        // The last subscriber leaving is a change the cluster hears of.
        drop(sub);
        assert_eq!(hub.presence(&t), Presence::Absent);
    }

    #[tokio::test]
    async fn a_subscription_waits_for_its_topics_stream_to_start() {
        let hub = Arc::new(TopicHub::new(true));
        let t = TopicName::parse("order:3").unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let sub = hub.subscribe(t.clone(), Sink::Channel { tx, lagged: Arc::default() });
        assert_eq!(hub.changes().await, vec![t.clone()]);
        assert!(!sub.started(Duration::from_millis(20)).await);
        let Presence::Starting(generation) = hub.presence(&t) else { panic!("not starting") };
        let starter = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.start(&t, generation, 0) })
        };
        assert!(sub.started(Duration::from_secs(5)).await);
        assert!(starter.await.unwrap());
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
