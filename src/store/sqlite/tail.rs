//! The newest part of every inbox, kept in memory until the writer merges it into the `inbox` index.
//!
//! Why: a per-user index written at every commit dirties one page per distinct user per commit, and a
//! profile showed the writer bound by exactly that (every dirty page is a WAL frame, then a checkpoint
//! write). So `notifications` is clustered by id, which only grows (a commit appends to its last pages),
//! and the per-user index `inbox (user_id, id)` is written in large sorted batches: a *merge*, every
//! [`MERGE_INTERVAL`] or [`MERGE_ROWS`] ids, writes each user's index page once for all the notifications
//! they received since the last one. Until then a user's newest ids are found here.
//!
//! Consistency with readers (each on its own connection and snapshot):
//! - the writer appends ids here only after the commit that stored them, then publishes the newest id
//!   committed so far (`committed`); it removes ids only after the merge that put them in `inbox` (and
//!   moved the partition's merge position past them) has committed;
//! - a reader reads `committed`, copies the user's ids, and only then opens its read transaction. Every
//!   copied id's row is visible to it, and its `inbox` holds everything up to its merge position, which is
//!   at least where the copied ids start; it keeps the copied ids above that position. If the transaction
//!   sees a newer `meta.last_id` than the `committed` it read, a commit landed between its copy and its
//!   snapshot whose ids the copy may lack: it copies again (see `reader::consistent`). So the items a
//!   reader returns agree with the counts it reads in the same transaction.
//! - The stored counts (`inbox_counts`) cover indexed rows only: a merge adds its rows to them, and readers
//!   add the unmerged ones they copied, so counts move with the index and need no write per commit.
//!
//! Nothing here needs to survive a restart: at open, the writer merges whatever `notifications` holds past
//! `merged_upto` before anyone reads.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::domain::{NotificationId, UserId};

/// The tail is split by user into this many partitions, merged in turns after commit groups, so a merge
/// pauses the writer for a small fraction of what merging everything at once would (16 partitions left
/// merges of ~10 ms at 70,000 notifications/s; 64 brought them to ~3 ms).
pub const PARTITIONS: usize = 64;
/// Merge a partition once this many ids wait in it…
pub const MERGE_ROWS: usize = 100_000 / PARTITIONS;
/// …or once its oldest has waited this long.
pub const MERGE_INTERVAL: Duration = Duration::from_secs(1);

/// Which partition a user's ids belong to: FNV-1a of the id, stable across versions and restarts (each
/// partition's merge position is stored).
pub fn partition(user: &UserId) -> usize {
    partition_of(user.as_str())
}

/// [`partition`] of a user id as stored.
pub fn partition_of(user: &str) -> usize {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in user.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    hash as usize % PARTITIONS
}

#[derive(Debug, Default)]
struct Part {
    /// Each user's ids not yet in `inbox`, oldest first.
    by_user: HashMap<UserId, Vec<NotificationId>>,
    len: usize,
    /// When the oldest id here was added.
    since: Option<Instant>,
    /// The ids here that have been marked read (so a merge need not look each row's state up).
    read: HashSet<NotificationId>,
}

/// The tail, shared by the writer (the only one that changes it) and the readers. Each partition has its
/// own lock, so a reader copying one user's ids never waits for a merge of another partition.
#[derive(Debug, Clone, Default)]
pub struct SharedTail(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    parts: [Mutex<Part>; PARTITIONS],
    /// The newest id whose commit the partitions reflect.
    committed: Mutex<Option<NotificationId>>,
}

impl Default for Inner {
    fn default() -> Self {
        Self { parts: std::array::from_fn(|_| Mutex::default()), committed: Mutex::default() }
    }
}

/// Every change is a plain push, swap or store that cannot leave the data half-changed, so a panic
/// elsewhere while a lock was held leaves usable data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SharedTail {
    /// An empty tail whose committed mark starts at `committed` (what `meta.last_id` holds at open).
    pub fn new(committed: Option<NotificationId>) -> Self {
        let tail = Self::default();
        *lock(&tail.0.committed) = committed;
        tail
    }

    fn part(&self, p: usize) -> MutexGuard<'_, Part> {
        lock(&self.0.parts[p])
    }

    /// For a reader, before it opens its transaction: the newest id committed so far, then a copy of the
    /// user's ids not yet merged (oldest first), in that order.
    pub fn read(&self, user: &UserId) -> (Option<NotificationId>, Vec<NotificationId>) {
        let committed = *lock(&self.0.committed);
        (committed, self.user(user))
    }

    /// A copy of one user's ids not yet merged, oldest first.
    pub fn user(&self, user: &UserId) -> Vec<NotificationId> {
        self.part(partition(user)).by_user.get(user).cloned().unwrap_or_default()
    }

    /// Adds committed ids (in id order), then records `committed` as the newest id committed so far.
    pub fn append(&self, entries: Vec<(UserId, NotificationId)>, committed: Option<NotificationId>) {
        let mut entries = entries.into_iter().peekable();
        while let Some((user, id)) = entries.next() {
            let p = partition(&user);
            let mut part = self.part(p);
            part.since.get_or_insert_with(Instant::now);
            part.len += 1;
            part.by_user.entry(user).or_default().push(id);
            // Consecutive entries of the same partition under one lock.
            while let Some((user, id)) = entries.next_if(|(u, _)| partition(u) == p) {
                part.len += 1;
                part.by_user.entry(user).or_default().push(id);
            }
        }
        let mut newest = lock(&self.0.committed);
        if committed > *newest {
            *newest = committed;
        }
    }

    /// Whether no id waits anywhere.
    pub fn is_empty(&self) -> bool {
        (0..PARTITIONS).all(|p| self.part(p).len == 0)
    }

    /// How many ids wait in a partition, and how long the oldest has waited.
    pub fn load(&self, p: usize) -> (usize, Option<Duration>) {
        let part = self.part(p);
        (part.len, part.since.map(|at| at.elapsed()))
    }

    /// Records that these ids (already here, committed) were marked read: only the writer calls this, after
    /// the commit that marked them.
    pub fn mark_read(&self, ids: &[(UserId, NotificationId)]) {
        for (user, id) in ids {
            self.part(partition(user)).read.insert(*id);
        }
    }

    /// A partition's entries with whether each is still unread, sorted by user and then id: the order that
    /// writes each index page once.
    pub fn sorted(&self, p: usize) -> Vec<Entry> {
        let (mut users, read): (Vec<(UserId, Vec<NotificationId>)>, HashSet<NotificationId>) = {
            let part = self.part(p);
            (part.by_user.iter().map(|(u, ids)| (u.clone(), ids.clone())).collect(), part.read.clone())
        };
        users.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut entries = Vec::with_capacity(users.iter().map(|(_, ids)| ids.len()).sum());
        for (user, ids) in users {
            entries.extend(ids.into_iter().map(|id| Entry { user: user.clone(), id, unread: !read.contains(&id) }));
        }
        entries
    }

    /// Forgets a partition: called once all of it is merged and committed. Only the writer appends, so
    /// nothing was added meanwhile.
    pub fn clear(&self, p: usize) {
        *self.part(p) = Part::default();
    }
}

/// One id waiting for a merge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub user: UserId,
    pub id: NotificationId,
    pub unread: bool,
}

/// The key in `meta` of a partition's merge position: the newest id of its users that `inbox` holds.
pub fn merged_key(p: usize) -> String {
    format!("merged_upto.{p}")
}

/// The ids of `recent` (ascending) above `merged_upto`: the part of a copied tail not yet in the reader's
/// view of `inbox`.
pub fn above(recent: &[NotificationId], merged_upto: Option<NotificationId>) -> &[NotificationId] {
    match merged_upto {
        None => recent,
        Some(m) => &recent[recent.partition_point(|id| *id <= m)..],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> NotificationId {
        NotificationId::from_ulid(ulid::Ulid(n))
    }

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn partitions_hold_each_users_ids_sorted_for_a_merge() {
        let tail = SharedTail::default();
        let a = user("a");
        let same = (0..100).map(|i| user(&format!("u{i}"))).find(|u| partition(u) == partition(&a)).unwrap();
        let other = (0..100).map(|i| user(&format!("u{i}"))).find(|u| partition(u) != partition(&a)).unwrap();
        assert_eq!(tail.read(&a), (None, vec![]));
        tail.append(
            vec![(same.clone(), id(1)), (a.clone(), id(2)), (same.clone(), id(3)), (other.clone(), id(4))],
            Some(id(4)),
        );
        assert_eq!(tail.read(&same), (Some(id(4)), vec![id(1), id(3)]));
        let p = partition(&a);
        tail.mark_read(&[(same.clone(), id(3))]);
        let entry = |user: &UserId, n: u128, unread: bool| Entry { user: user.clone(), id: id(n), unread };
        let mut want = vec![entry(&a, 2, true), entry(&same, 1, true), entry(&same, 3, false)];
        want.sort();
        assert_eq!(tail.sorted(p), want);
        assert_eq!(tail.load(p).0, 3);
        assert!(tail.load(p).1.is_some());
        tail.clear(p);
        assert!(tail.user(&a).is_empty());
        assert_eq!(tail.load(p), (0, None));
        assert_eq!(tail.user(&other), vec![id(4)]);
        // The committed mark never goes back.
        tail.append(vec![], Some(id(2)));
        assert_eq!(tail.read(&other).0, Some(id(4)));
    }

    #[test]
    fn partitions_are_stable() {
        // Stored merge positions depend on these never changing.
        assert_eq!(partition(&user("alice")), partition(&user("alice")));
        let spread: std::collections::HashSet<usize> =
            (0..1000).map(|i| partition(&user(&format!("user-{i}")))).collect();
        assert_eq!(spread.len(), PARTITIONS);
    }

    #[test]
    fn above_keeps_only_unmerged_ids() {
        let recent = [id(3), id(5), id(7)];
        assert_eq!(above(&recent, None), &recent);
        assert_eq!(above(&recent, Some(id(5))), &[id(7)]);
        assert_eq!(above(&recent, Some(id(2))), &recent);
        assert!(above(&recent, Some(id(9))).is_empty());
    }
}
