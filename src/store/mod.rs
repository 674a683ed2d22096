//! Storage: the durable inbox behind a trait, with SQLite as the embedded backend and PostgreSQL for a
//! cluster of nodes.
//!
//! Architecture invariant: a change is committed before it is acknowledged or pushed. Backends emit an
//! [`InboxEvent`] for each committed change, in commit order, on the feed given to them at open; that feed is
//! the only source of live pushes.

pub mod command;
pub mod directory;
pub mod emails;
pub mod postgres;
pub mod sqlite;
pub mod topics;

use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use crate::domain::{NewNotification, Notification, NotificationId, UserId};

#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The database cannot be reached or written (disk full, I/O error, locked for too long).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store has been shut down.
    #[error("the store is shut down")]
    Closed,
    /// Anything else: a bug or corrupt data.
    #[error("store error: {0}")]
    Internal(String),
}

/// The result of asking to create one notification.
#[derive(Debug, Clone)]
pub enum InsertOutcome {
    /// Stored now, and pushed.
    Created(Arc<Notification>),
    /// The idempotency key was seen before for this user: the original, not stored or pushed again.
    Existing(Arc<Notification>),
}

impl InsertOutcome {
    pub fn notification(&self) -> &Notification {
        match self {
            InsertOutcome::Created(n) | InsertOutcome::Existing(n) => n,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ListQuery {
    /// Offset paging: skip `page × limit`. Ignored with `before`.
    pub page: u32,
    pub limit: u32,
    pub unread_only: bool,
    /// Cursor paging: only notifications older than this one (the last id of the page before). Unlike an
    /// offset, it does not shift while new notifications arrive.
    pub before: Option<NotificationId>,
}

/// A page of a user's inbox, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Notification>,
    pub total: u64,
    pub unread_count: u64,
    /// More notifications follow this page (older than its last).
    pub more: bool,
}

/// The most notification content (data, title and message, plus a per-item allowance) one snapshot holds;
/// past it the snapshot stops early and says `more`. This bounds what a reconnect costs in memory whatever
/// the notifications hold.
pub const BACKLOG_BYTES: usize = 1024 * 1024;

/// The approximate encoded size of a notification, for [`BACKLOG_BYTES`].
pub fn approximate_size(n: &Notification) -> usize {
    256 + n.data.get().len() + n.title.as_ref().map_or(0, String::len) + n.message.as_ref().map_or(0, String::len)
}

/// Bounds a snapshot to [`BACKLOG_BYTES`] of content (always at least one item).
#[derive(Default)]
pub(crate) struct Budget {
    size: usize,
    /// An item was refused: the snapshot stopped early.
    pub(crate) trimmed: bool,
}

impl Budget {
    /// Adds `n` to `items` if it fits; returns whether it did.
    pub(crate) fn admit(&mut self, n: Notification, items: &mut Vec<Notification>) -> bool {
        self.size += approximate_size(&n);
        if self.size > BACKLOG_BYTES && !items.is_empty() {
            self.trimmed = true;
            return false;
        }
        items.push(n);
        true
    }
}

/// Delivered marks a store keeps for its writer at most; past this they are dropped (they are informational).
const MAX_PENDING_DELIVERED: usize = 1_000_000;

/// Queues `count` delivered marks for a store's writer, or drops and counts them when [`MAX_PENDING_DELIVERED`]
/// are waiting already.
pub(crate) fn queue_delivered<T>(pending: &std::sync::Mutex<Vec<T>>, count: usize, marks: impl Iterator<Item = T>) {
    if count == 0 {
        return;
    }
    let Ok(mut pending) = pending.lock() else { return };
    if pending.len() + count > MAX_PENDING_DELIVERED {
        metrics::counter!("herald_delivered_marks_dropped_total").increment(count as u64);
        return;
    }
    pending.extend(marks);
}

/// Where a connecting client's backlog starts.
#[derive(Debug, Clone, Copy)]
pub enum Since {
    /// No position: the newest `limit` unread notifications (the newest that fit in [`BACKLOG_BYTES`]).
    Unread { limit: u32 },
    /// Every notification after this id, up to `limit` (the oldest that fit in [`BACKLOG_BYTES`]).
    After { id: NotificationId, limit: u32 },
}

/// What a connecting client is sent first: read in one transaction, so the count and items agree.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub unread_count: u64,
    /// Oldest first.
    pub items: Vec<Notification>,
    /// There is more than `items` holds; page the rest over REST.
    pub more: bool,
    /// The newest id the user had when the snapshot was read. Live frames up to it are skipped: they were
    /// committed before the snapshot, so the backlog already sent them or left them out on purpose.
    pub high_water: Option<NotificationId>,
}

#[derive(Debug, Clone, Default)]
pub struct MarkReadOutcome {
    /// The notifications named that belong to the user, after the change.
    pub found: Vec<Notification>,
    /// Those among them that were unread before.
    pub newly_read: Vec<NotificationId>,
}

#[derive(Debug, Clone)]
pub struct StoreHealth {
    pub ok: bool,
    pub backend: &'static str,
    pub detail: String,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a group of notifications atomically: all are committed, or none and an error.
    async fn insert(&self, items: Vec<NewNotification>) -> Result<Vec<InsertOutcome>, StoreError>;

    async fn list(&self, user: &UserId, query: ListQuery) -> Result<Page, StoreError>;

    async fn unread_count(&self, user: &UserId) -> Result<u64, StoreError>;

    async fn snapshot(&self, user: &UserId, since: Since) -> Result<Snapshot, StoreError>;

    /// Each user's place in their order of events: the `seq` of their newest committed event (0 for none), in
    /// the order asked. Only a store that several nodes share numbers events (see `InboxEvent`).
    async fn positions(&self, users: &[UserId]) -> Result<Vec<u64>, StoreError> {
        let _ = users;
        Err(StoreError::Internal("this store does not number events; a cluster needs PostgreSQL".into()))
    }

    async fn mark_read(&self, user: &UserId, ids: Vec<NotificationId>) -> Result<MarkReadOutcome, StoreError>;

    /// Returns how many notifications changed from unread to read.
    async fn mark_all_read(&self, user: &UserId) -> Result<u64, StoreError>;

    /// Records that these notifications were written to a live connection. Best effort: it is batched and
    /// may be dropped under overload, since it is informational and never decides what a client is sent.
    fn mark_delivered(&self, user: &UserId, ids: &[NotificationId]);

    async fn health(&self) -> StoreHealth;

    /// Finishes every accepted write, then stops. Idempotent.
    async fn shutdown(&self);
}
