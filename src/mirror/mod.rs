//! Status mirrors: where topic statuses are copied for other services to read.
//!
//! Some services do not subscribe to a topic but read its status where they already look: the minting
//! system's read `intent:status:{id}` from Redis. A mirror keeps that copy, written by the node that
//! committed the event (from `broker::topic_pump`), for each event that changed a topic's status in a
//! namespace whose policy names a key.
//!
//! A mirror is auxiliary: the stream never waits for it. [`Pending`] is what makes that so: the pump only
//! puts the newest status of each key into a bounded map, and the mirror's own task writes from it.

mod redis;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub use self::redis::{MirrorHealth, RedisMirror};

/// The most keys waiting at once. Past it new keys are dropped (and counted): a mirror down for long must
/// not grow memory without bound. Keys already waiting still take newer statuses.
pub const MAX_PENDING: usize = 100_000;

/// One status to write, as taken from [`Pending::batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub key: String,
    pub status: String,
    pub ttl: Duration,
    /// Which offer of this key it is, so [`Pending::written`] can tell whether a newer one came since.
    version: u64,
}

#[derive(Debug)]
struct Entry {
    status: String,
    ttl: Duration,
    /// Where the key stands in the write order: set when it starts waiting, kept when its status changes,
    /// so the key waiting longest is written first.
    position: u64,
    version: u64,
}

/// What [`Pending::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// A key that was not waiting is now.
    Queued,
    /// A waiting key's status was replaced by the newer one (only the newest matters).
    Replaced,
    /// The map is full; `first` says whether this drop starts a burst (to warn once per burst).
    Dropped { first: bool },
}

/// The statuses waiting to be written: the newest per key, in the order the keys started waiting. Entries
/// stay here while they are being written and leave only once written, unless a newer status came in
/// meanwhile: so a failed write loses nothing, and a stale write never removes a fresh status.
#[derive(Debug)]
pub struct Pending {
    entries: HashMap<String, Entry>,
    order: BTreeMap<u64, String>,
    next: u64,
    capacity: usize,
    overflowing: bool,
}

impl Pending {
    pub fn new(capacity: usize) -> Self {
        Self { entries: HashMap::new(), order: BTreeMap::new(), next: 0, capacity, overflowing: false }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn offer(&mut self, key: String, status: &str, ttl: Duration) -> Offered {
        self.next += 1;
        let version = self.next;
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.status.clear();
            entry.status.push_str(status);
            entry.ttl = ttl;
            entry.version = version;
            return Offered::Replaced;
        }
        if self.entries.len() >= self.capacity {
            let first = !self.overflowing;
            self.overflowing = true;
            return Offered::Dropped { first };
        }
        self.order.insert(version, key.clone());
        self.entries.insert(key, Entry { status: status.to_owned(), ttl, position: version, version });
        Offered::Queued
    }

    /// Copies of the `max` keys waiting longest, to write; they stay here until [`Pending::written`].
    pub fn batch(&self, max: usize) -> Vec<Write> {
        self.order
            .values()
            .take(max)
            .filter_map(|key| {
                let entry = self.entries.get(key)?;
                Some(Write { key: key.clone(), status: entry.status.clone(), ttl: entry.ttl, version: entry.version })
            })
            .collect()
    }

    /// Removes what `batch` wrote, except keys whose status changed since it was taken.
    pub fn written(&mut self, batch: &[Write]) {
        for write in batch {
            let Some(entry) = self.entries.get(&write.key) else { continue };
            if entry.version == write.version {
                self.order.remove(&entry.position);
                self.entries.remove(&write.key);
            }
        }
        if self.entries.len() < self.capacity {
            self.overflowing = false;
        }
    }
}

/// The wait before retrying a failed round trip: from `first`, doubling up to `max`, back to `first` after a
/// success.
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { first, max, next: first }
    }

    /// The wait after one more failure.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn keys_and_statuses(batch: &[Write]) -> Vec<(&str, &str)> {
        batch.iter().map(|w| (w.key.as_str(), w.status.as_str())).collect()
    }

    #[test]
    fn only_the_newest_status_of_a_key_is_written_in_the_order_keys_started_waiting() {
        let mut p = Pending::new(10);
        assert_eq!(p.offer("a".into(), "pending", TTL), Offered::Queued);
        assert_eq!(p.offer("b".into(), "pending", TTL), Offered::Queued);
        assert_eq!(p.offer("a".into(), "broadcast", TTL), Offered::Replaced);
        assert_eq!(p.offer("c".into(), "pending", Duration::from_secs(5)), Offered::Queued);
        let batch = p.batch(2);
        assert_eq!(keys_and_statuses(&batch), [("a", "broadcast"), ("b", "pending")]);
        p.written(&batch);
        let rest = p.batch(10);
        assert_eq!(keys_and_statuses(&rest), [("c", "pending")]);
        assert_eq!(rest[0].ttl, Duration::from_secs(5));
    }

    #[test]
    fn a_failed_write_keeps_everything_and_a_newer_status_outlives_the_write_of_an_older_one() {
        let mut p = Pending::new(10);
        p.offer("a".into(), "pending", TTL);
        p.offer("b".into(), "pending", TTL);
        let batch = p.batch(10);
        // The write fails: nothing is removed, so the next batch is the same.
        assert_eq!(p.batch(10), batch);
        // While it is retried, a's status changes; the retry's success removes b only.
        p.offer("a".into(), "broadcast", TTL);
        p.written(&batch);
        assert_eq!(keys_and_statuses(&p.batch(10)), [("a", "broadcast")]);
        p.written(&p.batch(10));
        assert!(p.is_empty() && p.order.is_empty());
    }

    #[test]
    fn a_full_map_drops_new_keys_once_per_burst_but_still_updates_waiting_ones() {
        let mut p = Pending::new(2);
        p.offer("a".into(), "1", TTL);
        p.offer("b".into(), "1", TTL);
        assert_eq!(p.offer("c".into(), "1", TTL), Offered::Dropped { first: true });
        assert_eq!(p.offer("d".into(), "1", TTL), Offered::Dropped { first: false });
        assert_eq!(p.offer("a".into(), "2", TTL), Offered::Replaced);
        p.written(&p.batch(1));
        assert_eq!(p.len(), 1);
        assert_eq!(p.offer("c".into(), "1", TTL), Offered::Queued);
        assert_eq!(p.offer("d".into(), "1", TTL), Offered::Dropped { first: true });
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| b.failed().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.failed(), Duration::from_millis(100));
    }
}
