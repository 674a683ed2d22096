//! The connection registry: which connections each user has open on this node.
//!
//! Sharded 64 ways by user, so publishers fanning out to different users rarely meet on a lock, and no lock
//! is global. A lock is held only to find a user's connections and push into their outboxes, never across
//! an await or a socket write.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::outbox::{Frame, Outbox, Push};
pub use super::stream::Presence;
use super::stream::{wait_started, Offered, Stream};
use crate::domain::UserId;
use crate::error::CloseReason;
use crate::telemetry::metrics;

const SHARDS: usize = 64;

/// One open connection as the hub sees it: an id and an outbox. No transport type appears here.
pub struct Connection {
    pub id: u64,
    pub outbox: Outbox,
}

/// A user with connections on this node.
struct Present {
    connections: Vec<Arc<Connection>>,
    /// In an ordered registry (a cluster): where the user's events stand on this node.
    stream: Option<Box<Stream<Frame>>>,
}

type Shard = Mutex<HashMap<UserId, Present>>;

pub struct Registry {
    shards: Box<[Shard]>,
    next_id: AtomicU64,
    connections: AtomicUsize,
    users: AtomicUsize,
    /// Whether each user's events are delivered in `seq` order (a cluster) or as they come (one node).
    ordered: bool,
    /// Users who arrived (first connection) or left (last one) since the cluster broker last looked.
    changed: Mutex<HashSet<UserId>>,
    change: Notify,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Registry {
    /// `ordered`: deliver each user's events in `seq` order, each stream starting where the cluster broker
    /// says (see [`Registry::start`]).
    pub fn new(ordered: bool) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            users: AtomicUsize::new(0),
            ordered,
            changed: Mutex::new(HashSet::new()),
            change: Notify::new(),
        }
    }

    fn shard(&self, user: &UserId) -> MutexGuard<'_, HashMap<UserId, Present>> {
        let mut hasher = DefaultHasher::new();
        user.hash(&mut hasher);
        let index = (hasher.finish() as usize) % SHARDS;
        lock(&self.shards[index])
    }

    fn note_change(&self, user: &UserId) {
        if self.ordered {
            lock(&self.changed).insert(user.clone());
            self.change.notify_one();
        }
    }

    /// Adds a connection for `user`; it is removed when the returned registration is dropped.
    pub fn register(self: &Arc<Self>, user: UserId, outbox_capacity: usize) -> Registration {
        let connection = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            outbox: Outbox::new(outbox_capacity),
        });
        let mut shard = self.shard(&user);
        match shard.entry(user.clone()) {
            Entry::Occupied(mut e) => {
                let present = e.get_mut();
                present.connections.push(connection.clone());
                // The user's other connections here are closing to resync (this may be one of them coming
                // back already): this one starts a fresh stream, from the store's position.
                if present.stream.as_ref().is_some_and(|s| s.resyncing) {
                    present.stream = Some(Box::new(Stream::new(connection.id)));
                    self.note_change(&user);
                }
            }
            Entry::Vacant(e) => {
                let stream = self.ordered.then(|| Box::new(Stream::new(connection.id)));
                e.insert(Present { connections: vec![connection.clone()], stream });
                self.note_change(&user);
                let users = self.users.fetch_add(1, Ordering::Relaxed) + 1;
                metrics().users_connected.set(users as f64);
            }
        }
        drop(shard);
        let total = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        metrics().connections_open.set(total as f64);
        Registration { registry: self.clone(), user, connection }
    }

    /// A connection that belongs to no user (a topic socket): it has an id and an outbox, and is found only
    /// through the topics it watches.
    pub fn detached(&self, outbox_capacity: usize) -> Arc<Connection> {
        Arc::new(Connection { id: self.next_id.fetch_add(1, Ordering::Relaxed), outbox: Outbox::new(outbox_capacity) })
    }

    fn unregister(&self, user: &UserId, id: u64) {
        let mut shard = self.shard(user);
        if let Entry::Occupied(mut e) = shard.entry(user.clone()) {
            e.get_mut().connections.retain(|c| c.id != id);
            if e.get().connections.is_empty() {
                e.remove();
                self.note_change(user);
                let users = self.users.fetch_sub(1, Ordering::Relaxed) - 1;
                metrics().users_connected.set(users as f64);
            }
        }
        drop(shard);
        let total = self.connections.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics().connections_open.set(total as f64);
    }

    /// Pushes a frame, built only if the user has a connection here, to every connection of `user`.
    /// Returns how many connections it was queued for.
    pub fn deliver(&self, user: &UserId, frame: impl FnOnce() -> Frame) -> usize {
        let shard = self.shard(user);
        let Some(present) = shard.get(user) else { return 0 };
        push_all(&present.connections, &frame())
    }

    /// Delivers the user's event number `seq` in order: now if it follows the last delivered, later if one
    /// before it is still missing, never if it was delivered already. The frame is built only if the user has
    /// a connection here. Returns whether the user's connections must now resync (too much held back).
    pub fn deliver_in_order(&self, user: &UserId, seq: u64, frame: impl FnOnce() -> Frame) -> bool {
        let mut shard = self.shard(user);
        let Some(present) = shard.get_mut(user) else { return false };
        let Some(stream) = present.stream.as_mut() else {
            push_all(&present.connections, &frame());
            return false;
        };
        let connections = &present.connections;
        stream.offer(seq, frame, |frame| {
            push_all(connections, frame);
        }) == Offered::Overflow
    }

    /// Takes the users who arrived or left since the last call, waiting until there is one.
    pub async fn changes(&self) -> Vec<UserId> {
        loop {
            let notified = self.change.notified();
            let taken: Vec<UserId> = lock(&self.changed).drain().collect();
            if !taken.is_empty() {
                return taken;
            }
            notified.await;
        }
    }

    /// Hands `user` to the next [`Registry::changes`] again (to retry their start).
    pub fn touch(&self, user: &UserId) {
        self.note_change(user);
    }

    pub fn presence(&self, user: &UserId) -> Presence {
        match self.shard(user).get(user) {
            None => Presence::Absent,
            Some(Present { stream: Some(s), .. }) if s.delivered.is_none() => Presence::Starting(s.generation),
            Some(_) => Presence::Started,
        }
    }

    /// Starts the user's stream (of that generation) at `position`, the `seq` of the last event that this node
    /// need not deliver, and delivers what followed it. Returns false if the stream is gone or started.
    pub fn start(&self, user: &UserId, generation: u64, position: u64) -> bool {
        let mut shard = self.shard(user);
        let Some(present) = shard.get_mut(user) else { return false };
        let Some(stream) = present.stream.as_mut().filter(|s| s.generation == generation) else {
            return false;
        };
        let connections = &present.connections;
        stream.start(position, |frame| {
            push_all(connections, frame);
        })
    }

    /// Notes that the user's events have reached `position` in the store: delivery here must reach it too,
    /// or the user is overdue.
    pub fn expect(&self, user: &UserId, position: u64) {
        let mut shard = self.shard(user);
        if let Some(stream) = shard.get_mut(user).and_then(|p| p.stream.as_mut()) {
            stream.expect(position);
        }
    }

    /// The users whose delivery has been short of where it must be for longer than `limit`.
    pub fn overdue(&self, limit: Duration) -> Vec<UserId> {
        let now = Instant::now();
        let mut late = Vec::new();
        for shard in self.shards.iter() {
            for (user, present) in lock(shard).iter() {
                if present.stream.as_ref().is_some_and(|s| s.overdue(now, limit)) {
                    late.push(user.clone());
                }
            }
        }
        late
    }

    /// The users with connections here and, for those whose stream has started, the last `seq` delivered.
    pub fn positions(&self) -> Vec<(UserId, Option<u64>)> {
        let mut all = Vec::with_capacity(self.users());
        for shard in self.shards.iter() {
            for (user, present) in lock(shard).iter() {
                all.push((user.clone(), present.stream.as_ref().and_then(|s| s.delivered)));
            }
        }
        all
    }

    /// Tells every connection of `user` to resync (reconnect with `since`) and delivers nothing more to them.
    pub fn resync(&self, user: &UserId) {
        let mut shard = self.shard(user);
        let Some(present) = shard.get_mut(user) else { return };
        if let Some(stream) = present.stream.as_mut() {
            stream.resync();
        }
        for connection in &present.connections {
            connection.outbox.close(CloseReason::Resync);
        }
        metrics().resyncs.increment(present.connections.len() as u64);
    }

    /// Asks every connection to close for `reason`.
    pub fn close_all(&self, reason: CloseReason) {
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for connection in shard.values().flat_map(|p| &p.connections) {
                connection.outbox.close(reason);
            }
        }
    }

    /// How many connections `user` has open on this node.
    pub fn connections_of(&self, user: &UserId) -> usize {
        self.shard(user).get(user).map_or(0, |p| p.connections.len())
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn users(&self) -> usize {
        self.users.load(Ordering::Relaxed)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The locks guard plain data and no code panics while holding one; recover rather than propagate.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn push_all(connections: &[Arc<Connection>], frame: &Frame) -> usize {
    let mut queued = 0;
    for connection in connections {
        match connection.outbox.push(frame.clone()) {
            Push::Queued => queued += 1,
            Push::Overflowed => metrics().slow_consumer_closes.increment(1),
            Push::Closed => {}
        }
    }
    queued
}

/// A connection's place in the registry, held by its task for as long as the connection lives.
pub struct Registration {
    registry: Arc<Registry>,
    user: UserId,
    connection: Arc<Connection>,
}

impl Registration {
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The connection, to hand to the topics it subscribes to.
    pub fn shared(&self) -> &Arc<Connection> {
        &self.connection
    }

    /// Waits (at most `limit`) until the user's stream here has started, so that whatever the connection reads
    /// from the store now is followed by every later event. True at once in a registry that is not ordered;
    /// false if the limit passed first.
    pub async fn started(&self, limit: Duration) -> bool {
        let started = {
            let shard = self.registry.shard(&self.user);
            match shard.get(&self.user).and_then(|p| p.stream.as_ref()) {
                Some(stream) if stream.delivered.is_none() => stream.started.clone(),
                _ => return true,
            }
        };
        // (This registration keeps the user present, so the stream cannot have been replaced meanwhile.)
        wait_started(started, limit, || !matches!(self.registry.presence(&self.user), Presence::Starting(_))).await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.unregister(&self.user, self.connection.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame() -> Frame {
        Frame::plain(Bytes::from_static(b"{}"))
    }

    fn numbered(n: u64) -> Frame {
        Frame::plain(Bytes::from(n.to_string()))
    }

    fn taken(registration: &Registration) -> Vec<String> {
        let (frames, _) = registration.connection().outbox.take();
        frames.iter().map(|f| String::from_utf8_lossy(&f.bytes).into_owned()).collect()
    }

    #[test]
    fn an_ordered_stream_waits_for_its_start_holds_back_early_events_and_drops_repeats() {
        let registry = Arc::new(Registry::new(true));
        let alice = UserId::parse("alice").unwrap();
        let tab = registry.register(alice.clone(), 64);
        let Presence::Starting(generation) = registry.presence(&alice) else { panic!("not starting") };
        // Before the start everything waits; the start drops what it covers (1, 2) and delivers what follows.
        for seq in [4, 2, 3, 1] {
            assert!(!registry.deliver_in_order(&alice, seq, || numbered(seq)));
        }
        assert!(taken(&tab).is_empty());
        assert!(registry.start(&alice, generation, 2));
        assert!(!registry.start(&alice, generation, 2), "a stream starts once");
        assert_eq!(taken(&tab), ["3", "4"]);
        // 6 waits for 5; a repeat of 4 or 6 is dropped.
        registry.deliver_in_order(&alice, 6, || numbered(6));
        registry.deliver_in_order(&alice, 4, || numbered(4));
        assert!(taken(&tab).is_empty());
        assert!(registry.overdue(Duration::ZERO).contains(&alice), "a missing event makes the user overdue");
        registry.deliver_in_order(&alice, 5, || numbered(5));
        registry.deliver_in_order(&alice, 6, || numbered(6));
        assert_eq!(taken(&tab), ["5", "6"]);
        assert!(registry.overdue(Duration::ZERO).is_empty());
        // The store says the user is at 7: until 7 arrives, the user is overdue.
        registry.expect(&alice, 7);
        assert!(registry.overdue(Duration::ZERO).contains(&alice));
        registry.deliver_in_order(&alice, 7, || numbered(7));
        assert!(registry.overdue(Duration::ZERO).is_empty());
        // A resync closes the user's connections with 4009 and delivers nothing more.
        registry.resync(&alice);
        registry.deliver_in_order(&alice, 8, || numbered(8));
        let (frames, closing) = tab.connection().outbox.take();
        assert!(frames.is_empty());
        assert_eq!(closing, Some(CloseReason::Resync));
    }

    #[test]
    fn a_connection_that_comes_while_the_others_resync_starts_a_fresh_stream() {
        let registry = Arc::new(Registry::new(true));
        let dan = UserId::parse("dan").unwrap();
        let old = registry.register(dan.clone(), 8);
        let Presence::Starting(generation) = registry.presence(&dan) else { panic!("not starting") };
        registry.start(&dan, generation, 3);
        registry.resync(&dan);
        // The client reconnects before its old connection has gone.
        let new = registry.register(dan.clone(), 8);
        let Presence::Starting(fresh) = registry.presence(&dan) else { panic!("the new connection joined a resync") };
        assert_ne!(fresh, generation);
        assert!(registry.start(&dan, fresh, 5));
        registry.deliver_in_order(&dan, 6, || numbered(6));
        assert_eq!(taken(&new), ["6"]);
        drop(old);
    }

    #[test]
    fn a_user_who_leaves_and_returns_gets_a_new_stream_that_an_old_start_cannot_start() {
        let registry = Arc::new(Registry::new(true));
        let bob = UserId::parse("bob").unwrap();
        let first = registry.register(bob.clone(), 8);
        let Presence::Starting(old) = registry.presence(&bob) else { panic!("not starting") };
        drop(first);
        assert_eq!(registry.presence(&bob), Presence::Absent);
        let _again = registry.register(bob.clone(), 8);
        assert!(!registry.start(&bob, old, 5), "a start read for the old stream");
        let Presence::Starting(new) = registry.presence(&bob) else { panic!("not starting") };
        assert!(registry.start(&bob, new, 5));
        assert_eq!(registry.presence(&bob), Presence::Started);
    }

    #[tokio::test]
    async fn a_registration_waits_for_its_stream_to_start() {
        let registry = Arc::new(Registry::new(true));
        let carol = UserId::parse("carol").unwrap();
        let tab = registry.register(carol.clone(), 8);
        assert!(!tab.started(Duration::from_millis(20)).await);
        let Presence::Starting(generation) = registry.presence(&carol) else { panic!("not starting") };
        let starter = {
            let registry = registry.clone();
            tokio::spawn(async move { registry.start(&carol, generation, 0) })
        };
        assert!(tab.started(Duration::from_secs(5)).await);
        assert!(starter.await.unwrap());
        assert!(Arc::new(Registry::default()).register(UserId::parse("d").unwrap(), 8).started(Duration::ZERO).await);
    }

    #[test]
    fn delivers_to_every_connection_of_the_user_and_no_other() {
        let registry = Arc::new(Registry::default());
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let a1 = registry.register(alice.clone(), 8);
        let a2 = registry.register(alice.clone(), 8);
        let b = registry.register(bob.clone(), 8);
        assert_eq!(registry.deliver(&alice, frame), 2);
        assert_eq!(a1.connection().outbox.take().0.len(), 1);
        assert_eq!(a2.connection().outbox.take().0.len(), 1);
        assert!(b.connection().outbox.take().0.is_empty());
        assert_eq!((registry.connections(), registry.users()), (3, 2));
        drop(a1);
        drop(a2);
        assert_eq!((registry.connections(), registry.users()), (1, 1));
        assert_eq!(registry.deliver(&alice, frame), 0);
    }
}
