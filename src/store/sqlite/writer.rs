//! The single writer: one thread owns the write connection and commits in groups.
//!
//! Every write (create, mark read, mark delivered) is a [`Command`] on one channel. The thread takes the first
//! command, then everything else already queued, and runs them all in one transaction with a savepoint each,
//! so one failing command rolls back alone while the group shares a single commit (and a single fsync). The
//! group grows with load by itself: whatever arrived during the last commit goes into the next one.
//!
//! Because there is one writer, ids are generated here, in commit order, and the committed changes go out
//! on the event feed in exactly that order. That is what makes per-user push order equal creation order.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::schema::{self, COLUMNS};
use crate::domain::{InboxEvent, NewNotification, Notification, NotificationId, Timestamp, UserId};
use crate::store::{InsertOutcome, MarkReadOutcome, StoreError};

/// How many commands one transaction takes at most; bounds the latency a group adds to its first member.
const MAX_COMMANDS_PER_GROUP: usize = 256;

pub type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub enum Command {
    Insert {
        items: Vec<NewNotification>,
        reply: Reply<Vec<InsertOutcome>>,
    },
    MarkRead {
        user: UserId,
        ids: Vec<NotificationId>,
        reply: Reply<MarkReadOutcome>,
    },
    MarkAllRead {
        user: UserId,
        reply: Reply<u64>,
    },
    /// Wakes the writer to record the delivered ids collected in [`PendingDelivered`].
    FlushDelivered,
    /// Finish what is queued before this, then stop.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Delivered ids waiting for the writer's next group; shared with the store handle.
pub type PendingDelivered = Arc<Mutex<Vec<NotificationId>>>;

pub struct Writer {
    pub conn: Connection,
    pub commands: mpsc::Receiver<Command>,
    pub feed: mpsc::Sender<Vec<InboxEvent>>,
    pub delivered: PendingDelivered,
}

/// A finished command, waiting for the commit to decide what its caller is told.
enum Done {
    Insert(Reply<Vec<InsertOutcome>>, Result<Vec<InsertOutcome>, StoreError>),
    MarkRead(Reply<MarkReadOutcome>, Result<MarkReadOutcome, StoreError>),
    MarkAllRead(Reply<u64>, Result<u64, StoreError>),
}

impl Done {
    /// Answers the caller; if the commit failed, every command of the group fails with it.
    fn answer(self, commit: &Result<(), StoreError>) {
        fn pick<T>(result: Result<T, StoreError>, commit: &Result<(), StoreError>) -> Result<T, StoreError> {
            match commit {
                Ok(()) => result,
                Err(e) => Err(StoreError::Unavailable(e.to_string())),
            }
        }
        // A caller that gave up (its request was cancelled) is not an error: the write stands.
        match self {
            Done::Insert(reply, r) => drop(reply.send(pick(r, commit))),
            Done::MarkRead(reply, r) => drop(reply.send(pick(r, commit))),
            Done::MarkAllRead(reply, r) => drop(reply.send(pick(r, commit))),
        }
    }
}

pub fn sql_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{CannotOpen, DatabaseBusy, DatabaseLocked, DiskFull, ReadOnly, SystemIoFailure};
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | CannotOpen | ReadOnly) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

impl Writer {
    pub fn run(mut self) {
        let mut ids = ulid::Generator::new();
        while let Some(first) = self.commands.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_COMMANDS_PER_GROUP {
                match self.commands.try_recv() {
                    Ok(cmd) => group.push(cmd),
                    Err(_) => break,
                }
            }
            let mut stop = None;
            let started = Instant::now();
            let size = group.len();
            self.commit_group(group, &mut ids, &mut stop);
            metrics::histogram!("herald_store_commit_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("herald_store_group_size").record(size as f64);
            if let Some(reply) = stop {
                let _ = reply.send(());
                return;
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Command>, ids: &mut ulid::Generator, stop: &mut Option<oneshot::Sender<()>>) {
        let delivered = match self.delivered.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let now = Timestamp::now();
        let mut done = Vec::with_capacity(group.len());
        let mut events = Vec::new();

        let tx = match self.conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let failed = Err(sql_error(e));
                for cmd in group {
                    match cmd {
                        Command::Insert { reply, .. } => Done::Insert(reply, Ok(Vec::new())).answer(&failed),
                        Command::MarkRead { reply, .. } => {
                            Done::MarkRead(reply, Ok(Default::default())).answer(&failed)
                        }
                        Command::MarkAllRead { reply, .. } => Done::MarkAllRead(reply, Ok(0)).answer(&failed),
                        Command::FlushDelivered => {}
                        Command::Shutdown { reply } => *stop = Some(reply),
                    }
                }
                return;
            }
        };
        let mut tx = tx;
        for cmd in group {
            match cmd {
                Command::Insert { items, reply } => {
                    let result = in_savepoint(&mut tx, |sp| insert(sp, items, ids, &mut events));
                    done.push(Done::Insert(reply, result));
                }
                Command::MarkRead { user, ids: targets, reply } => {
                    let result = in_savepoint(&mut tx, |sp| mark_read(sp, &user, &targets, now, &mut events));
                    done.push(Done::MarkRead(reply, result));
                }
                Command::MarkAllRead { user, reply } => {
                    let result = in_savepoint(&mut tx, |sp| mark_all_read(sp, &user, now, &mut events));
                    done.push(Done::MarkAllRead(reply, result));
                }
                Command::FlushDelivered => {}
                Command::Shutdown { reply } => *stop = Some(reply),
            }
        }
        if !delivered.is_empty() {
            // Losing a delivered mark is harmless (it is informational), so a failure here is only logged.
            if let Err(e) = in_savepoint(&mut tx, |sp| mark_delivered(sp, &delivered, now)) {
                tracing::warn!(error = %e, "could not record delivered notifications");
            }
        }
        let commit = tx.commit().map_err(sql_error);
        if commit.is_ok() && !events.is_empty() {
            // Blocks when the fanout is behind: that is the backpressure that keeps memory bounded. An error
            // means the fanout has stopped (shutdown), and there is no one left to push to.
            let _ = self.feed.blocking_send(events);
        }
        if let Err(e) = &commit {
            tracing::error!(error = %e, "group commit failed");
        }
        for d in done {
            d.answer(&commit);
        }
    }
}

/// Runs `f` in a savepoint: its changes and its events stand only if it succeeds.
fn in_savepoint<T>(
    tx: &mut Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    tx.execute_batch("SAVEPOINT command").map_err(sql_error)?;
    match f(tx) {
        Ok(value) => {
            tx.execute_batch("RELEASE command").map_err(sql_error)?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = tx.execute_batch("ROLLBACK TO command; RELEASE command") {
                tracing::error!(error = %rollback, "could not roll back a failed command");
            }
            Err(e)
        }
    }
}

fn insert(
    tx: &Transaction<'_>,
    items: Vec<NewNotification>,
    ids: &mut ulid::Generator,
    events: &mut Vec<InboxEvent>,
) -> Result<Vec<InsertOutcome>, StoreError> {
    let mut outcomes = Vec::with_capacity(items.len());
    let first_event = events.len();
    let result = (|| {
        let mut find = tx
            .prepare_cached(&format!("SELECT {COLUMNS} FROM notifications WHERE user_id = ?1 AND idempotency_key = ?2"))
            .map_err(sql_error)?;
        let mut add = tx
            .prepare_cached(
                "INSERT INTO notifications (id, user_id, type, title, message, data, created_at, idempotency_key) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(sql_error)?;
        for item in items {
            if let Some(key) = &item.idempotency_key {
                let existing = find
                    .query_row(params![item.user_id.as_str(), key.as_str()], schema::from_row_arc)
                    .optional()
                    .map_err(sql_error)?;
                if let Some(existing) = existing {
                    outcomes.push(InsertOutcome::Existing(existing));
                    continue;
                }
            }
            let ulid = ids.generate().map_err(|e| StoreError::Internal(e.to_string()))?;
            let id = NotificationId::from_ulid(ulid);
            let created_at = Timestamp(i64::try_from(id.timestamp_ms()).unwrap_or(i64::MAX));
            let mut id_buf = [0u8; ulid::ULID_LEN];
            add.execute(params![
                &*ulid.array_to_str(&mut id_buf),
                item.user_id.as_str(),
                item.kind.as_str(),
                item.title,
                item.message,
                item.data.get(),
                created_at.0,
                item.idempotency_key.as_ref().map(|k| k.as_str()),
            ])
            .map_err(sql_error)?;
            let notification = Arc::new(Notification {
                id,
                user_id: item.user_id,
                kind: item.kind.as_str().to_owned(),
                title: item.title,
                message: item.message,
                data: item.data,
                created_at,
                delivered: false,
                delivered_at: None,
                read: false,
                read_at: None,
            });
            events.push(InboxEvent::Created { notification: notification.clone(), received_at: item.received_at });
            outcomes.push(InsertOutcome::Created(notification));
        }
        Ok(outcomes)
    })();
    if result.is_err() {
        events.truncate(first_event);
    }
    result
}

fn mark_read(
    tx: &Transaction<'_>,
    user: &UserId,
    targets: &[NotificationId],
    now: Timestamp,
    events: &mut Vec<InboxEvent>,
) -> Result<MarkReadOutcome, StoreError> {
    let mut update = tx
        .prepare_cached("UPDATE notifications SET read_at = ?1 WHERE id = ?2 AND user_id = ?3 AND read_at IS NULL")
        .map_err(sql_error)?;
    let mut select = tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM notifications WHERE id = ?1 AND user_id = ?2"))
        .map_err(sql_error)?;
    let mut outcome = MarkReadOutcome::default();
    for id in targets {
        let text = id.to_string();
        if update.execute(params![now.0, text, user.as_str()]).map_err(sql_error)? == 1 {
            outcome.newly_read.push(*id);
        }
        if let Some(n) =
            select.query_row(params![text, user.as_str()], schema::from_row).optional().map_err(sql_error)?
        {
            outcome.found.push(n);
        }
    }
    if !outcome.newly_read.is_empty() {
        events.push(InboxEvent::Read { user_id: user.clone(), ids: outcome.newly_read.clone() });
    }
    Ok(outcome)
}

fn mark_all_read(
    tx: &Transaction<'_>,
    user: &UserId,
    now: Timestamp,
    events: &mut Vec<InboxEvent>,
) -> Result<u64, StoreError> {
    let changed = tx
        .prepare_cached("UPDATE notifications SET read_at = ?1 WHERE user_id = ?2 AND read_at IS NULL")
        .and_then(|mut s| s.execute(params![now.0, user.as_str()]))
        .map_err(sql_error)?;
    // Sent even when nothing changed, so a tab that missed an update converges.
    events.push(InboxEvent::ReadAll { user_id: user.clone() });
    Ok(changed as u64)
}

fn mark_delivered(tx: &Transaction<'_>, ids: &[NotificationId], now: Timestamp) -> Result<(), StoreError> {
    let mut update = tx
        .prepare_cached("UPDATE notifications SET delivered_at = ?1 WHERE id = ?2 AND delivered_at IS NULL")
        .map_err(sql_error)?;
    let mut buf = [0u8; ulid::ULID_LEN];
    for id in ids {
        let ulid = ulid::Ulid(id.as_u128());
        update.execute(params![now.0, &*ulid.array_to_str(&mut buf)]).map_err(sql_error)?;
    }
    Ok(())
}

/// Opens the write connection with the pragmas durability depends on.
pub fn open(path: &std::path::Path, synchronous: crate::config::Synchronous) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match synchronous {
        crate::config::Synchronous::Full => "FULL",
        crate::config::Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.set_prepared_statement_cache_capacity(32);
    schema::migrate(&mut conn)?;
    Ok(conn)
}
