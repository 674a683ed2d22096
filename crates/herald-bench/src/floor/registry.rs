//! Who is connected: users and topic subscribers, each with an outbox per connection.
//!
//! The maps are sharded 64 ways by name so that publishers to different users rarely meet on
//! a lock. A publish assigns the id and pushes the frame while holding its user's (or
//! topic's) shard lock, which makes delivery order per user the same as id order.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::hash::RandomState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;
use ulid::Ulid;

const SHARDS: usize = 64;

/// One connection's queue of frames to send.
///
/// It allocates nothing while empty (a `VecDeque` allocates on first push, and the drained
/// queue is swapped out whole), so an idle connection costs only this struct. A connection
/// whose queue reaches `cap` is marked overflowed and closed as a slow consumer.
pub struct Outbox {
    queue: Mutex<VecDeque<Utf8Bytes>>,
    wake: Notify,
    overflowed: AtomicBool,
    cap: usize,
}

impl Outbox {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            overflowed: AtomicBool::new(false),
            cap,
        })
    }

    pub fn push(&self, frame: Utf8Bytes) {
        {
            let mut queue = lock(&self.queue);
            if queue.len() >= self.cap {
                self.overflowed.store(true, Ordering::Relaxed);
            } else {
                queue.push_back(frame);
            }
        }
        // `notify_one` keeps a permit when the connection task is busy, so no wake-up is lost.
        self.wake.notify_one();
    }

    /// Waits until something was pushed since the last call.
    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    /// Everything queued, leaving the queue empty and unallocated.
    pub fn take(&self) -> VecDeque<Utf8Bytes> {
        std::mem::take(&mut *lock(&self.queue))
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// A published notification kept for `since` reconnects.
struct Kept {
    id: Ulid,
    json: Utf8Bytes,
}

#[derive(Default)]
struct User {
    connections: Vec<(u64, Arc<Outbox>)>,
    /// The newest notifications, oldest first, at most `replay` of them.
    recent: VecDeque<Kept>,
}

/// A topic's subscribers, and the seq of its last event (Herald numbers each topic's events
/// 1, 2, …; the floor forgets a topic, and restarts its numbering, when its last subscriber
/// leaves).
#[derive(Default)]
struct Subscribers {
    connections: Vec<(u64, Arc<Outbox>)>,
    seq: u64,
}

/// A map by name, split into [`SHARDS`] separately locked parts.
type Shards<V> = Box<[Mutex<HashMap<Box<str>, V>>]>;

pub struct Registry {
    users: Shards<User>,
    topics: Shards<Subscribers>,
    hasher: RandomState,
    replay: usize,
}

/// A new item's id, its JSON (for the answer and for backlogs), and its live frame.
pub struct Encoded {
    pub id: Ulid,
    pub json: Utf8Bytes,
    pub frame: Utf8Bytes,
}

impl Registry {
    pub fn new(replay: usize) -> Self {
        Self {
            users: (0..SHARDS).map(|_| Mutex::default()).collect(),
            topics: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            replay,
        }
    }

    fn shard<'a, T>(&self, shards: &'a [Mutex<T>], name: &str) -> MutexGuard<'a, T> {
        lock(&shards[(self.hasher.hash_one(name) % SHARDS as u64) as usize])
    }

    /// Adds a connection of `user` and returns the backlog it should get: with `since`, the
    /// kept notifications after that id, oldest first; without, none (the floor has no
    /// unread state). Both happen under one lock, so nothing falls between backlog and live.
    pub fn attach_user(
        &self,
        user: &str,
        connection: u64,
        outbox: &Arc<Outbox>,
        since: Option<Ulid>,
    ) -> Vec<Utf8Bytes> {
        let mut users = self.shard(&self.users, user);
        let entry = users.entry(user.into()).or_default();
        entry.connections.push((connection, Arc::clone(outbox)));
        match since {
            Some(since) => entry.recent.iter().filter(|kept| kept.id > since).map(|kept| kept.json.clone()).collect(),
            None => Vec::new(),
        }
    }

    pub fn detach_user(&self, user: &str, connection: u64) {
        let mut users = self.shard(&self.users, user);
        let unused = users.get_mut(user).is_some_and(|entry| {
            entry.connections.retain(|(id, _)| *id != connection);
            entry.connections.is_empty() && entry.recent.is_empty()
        });
        if unused {
            users.remove(user);
        }
    }

    pub fn attach_topic(&self, topic: &str, connection: u64, outbox: &Arc<Outbox>) {
        let mut topics = self.shard(&self.topics, topic);
        topics.entry(topic.into()).or_default().connections.push((connection, Arc::clone(outbox)));
    }

    pub fn detach_topic(&self, topic: &str, connection: u64) {
        let mut topics = self.shard(&self.topics, topic);
        let unused = topics.get_mut(topic).is_some_and(|subscribers| {
            subscribers.connections.retain(|(id, _)| *id != connection);
            subscribers.connections.is_empty()
        });
        if unused {
            topics.remove(topic);
        }
    }

    /// Creates a notification for `user` with `encode` (which assigns the id) and pushes it to
    /// every connection of the user, all under the user's shard lock.
    pub fn publish_to_user<E>(&self, user: &str, encode: impl FnOnce() -> Result<Encoded, E>) -> Result<Utf8Bytes, E> {
        let mut users = self.shard(&self.users, user);
        let encoded = encode()?;
        let entry = match users.get_mut(user) {
            Some(entry) => Some(entry),
            None if self.replay > 0 => Some(users.entry(user.into()).or_default()),
            None => None,
        };
        if let Some(entry) = entry {
            for (_, outbox) in &entry.connections {
                outbox.push(encoded.frame.clone());
            }
            if self.replay > 0 {
                if entry.recent.len() == self.replay {
                    entry.recent.pop_front();
                }
                entry.recent.push_back(Kept { id: encoded.id, json: encoded.json.clone() });
            }
        }
        Ok(encoded.json)
    }

    /// Creates an event on `topic` with `encode` (given the event's seq) and pushes it to
    /// every subscriber.
    pub fn publish_to_topic<E>(
        &self,
        topic: &str,
        encode: impl FnOnce(u64) -> Result<Encoded, E>,
    ) -> Result<Utf8Bytes, E> {
        let mut topics = self.shard(&self.topics, topic);
        let Some(subscribers) = topics.get_mut(topic) else { return encode(1).map(|e| e.json) };
        subscribers.seq += 1;
        let encoded = encode(subscribers.seq)?;
        for (_, outbox) in &subscribers.connections {
            outbox.push(encoded.frame.clone());
        }
        Ok(encoded.json)
    }

    /// Forgets the kept notifications of users who have no connection and whose newest
    /// notification is older than `ttl_ms` at `now_ms`, so that a long-lived floor does not
    /// accumulate every user of every past run.
    pub fn forget_idle(&self, now_ms: u64, ttl_ms: u64) {
        for shard in self.users.iter() {
            lock(shard).retain(|_, user| {
                !user.connections.is_empty()
                    || user.recent.back().is_some_and(|kept| kept.id.timestamp_ms() + ttl_ms > now_ms)
            });
        }
    }

    /// Users with at least one connection.
    pub fn connected_users(&self) -> usize {
        self.users.iter().map(|shard| lock(shard).values().filter(|u| !u.connections.is_empty()).count()).sum()
    }
}

/// Locks `mutex`, carrying on past poisoning: every critical section here leaves its map
/// consistent, and one panicking connection must not take the server down.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(id: Ulid) -> Result<Encoded, ()> {
        Ok(Encoded {
            id,
            json: format!(r#"{{"id":"{id}"}}"#).into(),
            frame: format!(r#"{{"type":"notification","data":{{"id":"{id}"}}}}"#).into(),
        })
    }

    #[test]
    fn fans_out_to_every_connection_of_the_user_only() {
        let registry = Registry::new(0);
        let (a1, a2, b) = (Outbox::new(10), Outbox::new(10), Outbox::new(10));
        registry.attach_user("a", 1, &a1, None);
        registry.attach_user("a", 2, &a2, None);
        registry.attach_user("b", 3, &b, None);
        registry.publish_to_user("a", || encoded(Ulid::new())).expect("published");
        assert_eq!(a1.take().len(), 1);
        assert_eq!(a2.take().len(), 1);
        assert!(b.take().is_empty());
        registry.detach_user("a", 1);
        registry.detach_user("a", 2);
        assert_eq!(registry.connected_users(), 1);
    }

    #[test]
    fn since_replays_what_came_after() {
        let registry = Registry::new(2);
        let ids: Vec<Ulid> = (1..=3u128).map(Ulid::from).collect();
        for id in &ids {
            registry.publish_to_user("a", || encoded(*id)).expect("published");
        }
        let outbox = Outbox::new(10);
        // Only the newest two are kept; the one after ids[1] is ids[2].
        let backlog = registry.attach_user("a", 1, &outbox, Some(ids[1]));
        assert_eq!(backlog.len(), 1);
        assert!(backlog[0].as_str().contains(&ids[2].to_string()));
        assert_eq!(registry.attach_user("a", 2, &outbox, Some(Ulid::nil())).len(), 2);
    }

    #[test]
    fn forgets_kept_notifications_of_users_gone_for_long() {
        let registry = Registry::new(4);
        let old = Ulid::from_parts(1_000, 1);
        registry.publish_to_user("gone", || encoded(old)).expect("published");
        registry.publish_to_user("here", || encoded(old)).expect("published");
        let outbox = Outbox::new(10);
        registry.attach_user("here", 1, &outbox, None);
        registry.forget_idle(1_000 + 59_000, 60_000);
        assert_eq!(registry.attach_user("gone", 2, &outbox, Some(Ulid::nil())).len(), 1);
        registry.detach_user("gone", 2);
        registry.forget_idle(1_000 + 61_000, 60_000);
        assert!(registry.attach_user("gone", 3, &outbox, Some(Ulid::nil())).is_empty());
        assert_eq!(registry.attach_user("here", 4, &outbox, Some(Ulid::nil())).len(), 1);
    }

    #[test]
    fn a_full_outbox_overflows() {
        let outbox = Outbox::new(1);
        outbox.push("a".into());
        assert!(!outbox.overflowed());
        outbox.push("b".into());
        assert!(outbox.overflowed());
    }
}
