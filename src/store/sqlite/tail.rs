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

/// Merge once this many ids are waiting…
pub const MERGE_ROWS: usize = 100_000;
/// …or once the oldest has waited this long.
pub const MERGE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Tail {
    /// Each user's ids not yet in `inbox`, oldest first.
    by_user: HashMap<UserId, Vec<NotificationId>>,
    len: usize,
    /// When the oldest id here was added.
    since: Option<Instant>,
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
        self.lock().by_user.get(user).cloned().unwrap_or_default()
    }
}

impl Tail {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn user(&self, user: &UserId) -> &[NotificationId] {
        self.by_user.get(user).map_or(&[], Vec::as_slice)
    }

    /// Adds committed ids, which arrive in id order.
    pub fn append(&mut self, entries: impl IntoIterator<Item = (UserId, NotificationId)>) {
        for (user, id) in entries {
            self.by_user.entry(user).or_default().push(id);
            self.len += 1;
        }
        if self.len > 0 && self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// Whether a merge is due.
    pub fn due(&self, rows: usize, interval: Duration) -> bool {
        self.len >= rows || self.since.is_some_and(|at| at.elapsed() >= interval)
    }

    /// Every entry, sorted by user and then id: the order that writes each index page once.
    pub fn sorted(&self) -> Vec<(UserId, NotificationId)> {
        let mut users: Vec<(&UserId, &Vec<NotificationId>)> = self.by_user.iter().collect();
        users.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut entries = Vec::with_capacity(self.len);
        for (user, ids) in users {
            entries.extend(ids.iter().map(|id| (user.clone(), *id)));
        }
        entries
    }

    /// Forgets everything: called once all of it is merged and committed.
    pub fn clear(&mut self) {
        self.by_user = HashMap::new();
        self.len = 0;
        self.since = None;
    }
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
    fn sorted_groups_by_user_then_id() {
        let mut tail = Tail::default();
        tail.append([(user("b"), id(1)), (user("a"), id(2)), (user("b"), id(3))]);
        let got: Vec<(String, u128)> =
            tail.sorted().into_iter().map(|(u, i)| (u.as_str().to_owned(), i.as_u128())).collect();
        assert_eq!(got, vec![("a".into(), 2), ("b".into(), 1), ("b".into(), 3)]);
        assert!(tail.due(3, MERGE_INTERVAL));
        assert!(!tail.due(4, MERGE_INTERVAL));
        tail.clear();
        assert!(tail.is_empty());
        assert!(!tail.due(1, Duration::ZERO));
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
