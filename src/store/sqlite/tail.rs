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
//! - the writer appends ids here only after the commit that stored them, and removes them only after the
//!   merge that put them in `inbox` (and moved `meta.merged_upto` past them) has committed;
//! - a reader copies a user's ids *before* it opens its read transaction, so the transaction sees every
//!   copied id's row, and an `inbox` holding everything up to its `merged_upto`, which is at least where the
//!   copied ids start. The reader keeps the copied ids above its `merged_upto` and reads the rest from
//!   `inbox`: nothing is missed and nothing is counted twice.
//!
//! Nothing here needs to survive a restart: at open, the writer merges whatever `notifications` holds past
//! `merged_upto` before anyone reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::domain::{NotificationId, UserId};

/// The tail is split by user into this many partitions, merged one at a time (at most one per commit
/// group), so a merge pauses the writer for a sixteenth of what merging everything at once would.
pub const PARTITIONS: usize = 16;
/// Merge a partition once this many ids wait in it…
pub const MERGE_ROWS: usize = 100_000 / PARTITIONS;
/// …or once its oldest has waited this long.
pub const MERGE_INTERVAL: Duration = Duration::from_secs(1);

/// Which partition a user's ids belong to: FNV-1a of the id, stable across versions and restarts (each
/// partition's merge position is stored).
pub fn partition(user: &UserId) -> usize {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in user.as_str().bytes() {
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
}

#[derive(Debug, Default)]
pub struct Tail {
    parts: [Part; PARTITIONS],
    /// Where the search for a partition to merge starts next, so they take turns.
    cursor: usize,
}

/// The tail, shared by the writer (the only one that changes it) and the readers.
#[derive(Debug, Clone, Default)]
pub struct SharedTail(Arc<Mutex<Tail>>);

impl SharedTail {
    pub fn lock(&self) -> MutexGuard<'_, Tail> {
        // Every change is a plain push or clear that cannot leave the map half-changed, so a panic elsewhere
        // while the lock was held leaves usable data.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of one user's ids not yet merged, oldest first. Take it before opening the read transaction.
    pub fn user(&self, user: &UserId) -> Vec<NotificationId> {
        self.lock().user(user).to_vec()
    }
}

impl Tail {
    pub fn user(&self, user: &UserId) -> &[NotificationId] {
        self.parts[partition(user)].by_user.get(user).map_or(&[], Vec::as_slice)
    }

    /// Adds committed ids, which arrive in id order.
    pub fn append(&mut self, entries: impl IntoIterator<Item = (UserId, NotificationId)>) {
        for (user, id) in entries {
            let part = &mut self.parts[partition(&user)];
            part.by_user.entry(user).or_default().push(id);
            part.len += 1;
            part.since.get_or_insert_with(Instant::now);
        }
    }

    /// The next partition due for a merge (holding `rows` ids, or its oldest older than `interval`), taking
    /// turns; `None` if none is.
    pub fn next_due(&mut self, rows: usize, interval: Duration) -> Option<usize> {
        for step in 0..PARTITIONS {
            let p = (self.cursor + step) % PARTITIONS;
            let part = &self.parts[p];
            if part.len > 0 && (part.len >= rows || part.since.is_some_and(|at| at.elapsed() >= interval)) {
                self.cursor = (p + 1) % PARTITIONS;
                return Some(p);
            }
        }
        None
    }

    /// The partitions holding anything.
    pub fn nonempty(&self) -> Vec<usize> {
        (0..PARTITIONS).filter(|&p| self.parts[p].len > 0).collect()
    }

    /// A partition's entries, sorted by user and then id: the order that writes each index page once.
    pub fn sorted(&self, p: usize) -> Vec<(UserId, NotificationId)> {
        let part = &self.parts[p];
        let mut users: Vec<(&UserId, &Vec<NotificationId>)> = part.by_user.iter().collect();
        users.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut entries = Vec::with_capacity(part.len);
        for (user, ids) in users {
            entries.extend(ids.iter().map(|id| (user.clone(), *id)));
        }
        entries
    }

    /// Forgets a partition: called once all of it is merged and committed.
    pub fn clear(&mut self, p: usize) {
        self.parts[p] = Part::default();
    }
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
    fn partitions_merge_in_turns_each_sorted_by_user_then_id() {
        let mut tail = Tail::default();
        // Two users of one partition, one of another.
        let (a, b) = (user("a"), user("b"));
        let same = (0..100).map(|i| user(&format!("u{i}"))).find(|u| partition(u) == partition(&a)).unwrap();
        let other = (0..100).map(|i| user(&format!("u{i}"))).find(|u| partition(u) != partition(&a)).unwrap();
        let _ = b;
        tail.append([(same.clone(), id(1)), (a.clone(), id(2)), (same.clone(), id(3)), (other.clone(), id(4))]);
        assert_eq!(tail.user(&same), &[id(1), id(3)]);
        let p = partition(&a);
        let mut want = vec![(a.clone(), id(2)), (same.clone(), id(1)), (same.clone(), id(3))];
        want.sort();
        assert_eq!(tail.sorted(p), want);
        // By rows: only the partition holding three is due; then none, until the other's turn by time.
        assert_eq!(tail.next_due(3, MERGE_INTERVAL), Some(p));
        tail.clear(p);
        assert!(tail.user(&a).is_empty());
        assert_eq!(tail.next_due(3, MERGE_INTERVAL), None);
        assert_eq!(tail.next_due(3, Duration::ZERO), Some(partition(&other)));
        assert_eq!(tail.nonempty(), vec![partition(&other)]);
        tail.clear(partition(&other));
        assert!(tail.nonempty().is_empty());
        assert_eq!(tail.next_due(1, Duration::ZERO), None);
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
