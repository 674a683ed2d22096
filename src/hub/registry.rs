//! The connection registry: which connections each user has open on this node.
//!
//! Sharded 64 ways by user, so publishers fanning out to different users rarely meet on a lock, and no lock
//! is global. A lock is held only to find a user's connections and push into their outboxes, never across
//! an await or a socket write.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::outbox::{Frame, Outbox, Push};
use crate::domain::UserId;
use crate::telemetry::metrics;

const SHARDS: usize = 64;

/// One open connection as the hub sees it: an id and an outbox. No transport type appears here.
pub struct Connection {
    pub id: u64,
    pub outbox: Outbox,
}

type Shard = Mutex<HashMap<UserId, Vec<Arc<Connection>>>>;

pub struct Registry {
    shards: Box<[Shard]>,
    next_id: AtomicU64,
    connections: AtomicUsize,
    users: AtomicUsize,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            users: AtomicUsize::new(0),
        }
    }
}

impl Registry {
    fn shard(&self, user: &UserId) -> MutexGuard<'_, HashMap<UserId, Vec<Arc<Connection>>>> {
        let mut hasher = DefaultHasher::new();
        user.hash(&mut hasher);
        let index = (hasher.finish() as usize) % SHARDS;
        self.shards[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a connection for `user`; it is removed when the returned registration is dropped.
    pub fn register(self: &Arc<Self>, user: UserId, outbox_capacity: usize) -> Registration {
        let connection = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            outbox: Outbox::new(outbox_capacity),
        });
        let mut shard = self.shard(&user);
        match shard.entry(user.clone()) {
            Entry::Occupied(mut e) => e.get_mut().push(connection.clone()),
            Entry::Vacant(e) => {
                e.insert(vec![connection.clone()]);
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
            e.get_mut().retain(|c| c.id != id);
            if e.get().is_empty() {
                e.remove();
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
        let Some(connections) = shard.get(user) else { return 0 };
        let frame = frame();
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

    /// Asks every connection to close for `reason`.
    pub fn close_all(&self, reason: crate::error::CloseReason) {
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for connection in shard.values().flatten() {
                connection.outbox.close(reason);
            }
        }
    }

    /// How many connections `user` has open on this node.
    pub fn connections_of(&self, user: &UserId) -> usize {
        self.shard(user).get(user).map_or(0, Vec::len)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn users(&self) -> usize {
        self.users.load(Ordering::Relaxed)
    }
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
