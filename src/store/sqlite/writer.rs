//! The single writer: one thread owns the write connection and commits in groups.
//!
//! Every write (create, mark read, mark delivered) is a [`Command`] on one channel. The thread takes the first
//! command, then everything else already queued, and runs them all in one transaction: one commit (and one
//! fsync) for the group. The group grows with load by itself: whatever arrived during the last commit goes
//! into the next one. If any command of a group fails, the whole transaction is rolled back and each command
//! is run again in a transaction of its own, so only the failing one fails. (Failures are rare: input is
//! validated before it gets here. Savepoints per command would isolate them too, but cost a statement
//! journal write for every page touched: a profile showed it as the writer's largest single cost.)
//!
//! Because there is one writer, ids are generated here, in commit order, and the committed changes go out
//! on the event feed in exactly that order. That is what makes per-user push order equal creation order.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::ids::IdSource;
use super::merge::MergeMode;
use super::schema::{self, COLUMNS, FROM};
use super::syncer::{Committed as Durable, Syncer};
use super::tail::{self, SharedTail};
use crate::domain::{InboxEvent, NewNotification, Notification, NotificationId, Timestamp, UserId};
use crate::store::command::{answer, Output};
pub use crate::store::command::{Command, Reply};
use crate::store::{InsertOutcome, MarkReadOutcome, StoreError};

/// How many commands one transaction takes at most; bounds the latency a group adds to its first member.
const MAX_COMMANDS_PER_GROUP: usize = 256;

/// Delivered marks waiting for the writer's next group; shared with the store handle.
pub type PendingDelivered = Arc<Mutex<Vec<NotificationId>>>;

pub struct Writer {
    pub conn: Connection,
    /// Told after each commit, so the checkpointer thread knows there are frames to copy back.
    pub committed: std::sync::mpsc::SyncSender<()>,
    /// The WAL length the checkpointer saw last; past a limit the writer finishes a checkpoint itself.
    pub wal_frames: super::checkpointer::WalFrames,
    /// When the writer last finished a checkpoint itself.
    pub last_restart: Option<Instant>,
    pub commands: mpsc::Receiver<Command>,
    pub feed: mpsc::Sender<Vec<InboxEvent>>,
    pub delivered: PendingDelivered,
    /// Ids committed but not yet in the `inbox` index; this thread appends and merges them.
    pub tail: SharedTail,
    pub merge_rows: usize,
    pub merge_interval: std::time::Duration,
    /// Which partition's turn it is to be merged next.
    pub merge_cursor: usize,
    /// When the last merge finished.
    pub last_merge: Option<Instant>,
    /// Where ids come from; it also knows the newest id of a committed transaction.
    pub ids: IdSource,
    /// With `synchronous=full`: where committed groups wait for their fsync before anyone hears of them (see
    /// `syncer`). Without (`normal`), callers are answered at commit.
    pub syncer: Option<Syncer<InboxEvent>>,
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

type Committed = (Vec<Output>, Vec<InboxEvent>);

/// The notifications a transaction creates, by user, to join the tail once it commits.
type Staged = Vec<(UserId, NotificationId)>;

impl Writer {
    pub fn run(mut self) {
        while let Some(first) = self.commands.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_COMMANDS_PER_GROUP {
                match self.commands.try_recv() {
                    Ok(cmd) => group.push(cmd),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let size = group.len();
            let stop = self.commit_group(group);
            let mode = if stop.is_some() {
                MergeMode::All
            } else if self.commands.is_empty() {
                MergeMode::Idle
            } else {
                MergeMode::Load
            };
            self.merge(mode);
            self.restart_wal_if_long();
            if self.syncer.as_ref().is_some_and(|s| s.failed()) {
                tracing::error!("the WAL could not be made durable; the writer stops, and writes fail");
                return;
            }
            metrics::histogram!("herald_store_commit_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("herald_store_group_size").record(size as f64);
            if let Some(reply) = stop {
                if let Some(syncer) = &mut self.syncer {
                    syncer.finish();
                }
                let _ = reply.send(());
                return;
            }
        }
    }

    /// Commits a group, answers its callers, and returns the shutdown request if the group held one.
    fn commit_group(&mut self, group: Vec<Command>) -> Option<oneshot::Sender<()>> {
        let delivered = match self.delivered.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let mut stop = None;
        let mut work = Vec::with_capacity(group.len());
        for cmd in group {
            match cmd {
                Command::Shutdown { reply } => stop = Some(reply),
                Command::Tick => {}
                other => work.push(other),
            }
        }
        if work.is_empty() && delivered.is_empty() {
            // A wake-up whose marks an earlier group already took.
            return stop;
        }
        match self.transaction(&work, &delivered) {
            Ok((outputs, events)) => self.deliver(work.into_iter().zip(outputs).collect(), events),
            Err(group_error) => {
                tracing::warn!(error = %group_error, commands = work.len(), "a write group failed; retrying each alone");
                for cmd in work {
                    match self.transaction(std::slice::from_ref(&cmd), &[]) {
                        Ok((mut outputs, events)) => {
                            let output = outputs.pop().unwrap_or(Output::Nothing);
                            self.deliver(vec![(cmd, output)], events);
                        }
                        Err(e) => answer(cmd, Err(e)),
                    }
                }
                // Losing delivered marks is harmless (they are informational), so a failure is only logged.
                if let Err(e) = self.transaction(&[], &delivered) {
                    tracing::warn!(error = %e, "could not record delivered notifications");
                }
            }
        }
        stop
    }

    /// Runs commands and delivered marks in one transaction and commits it; on any error nothing is kept.
    fn transaction(&mut self, work: &[Command], delivered: &[NotificationId]) -> Result<Committed, StoreError> {
        let now = Timestamp::now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
        let mut events = Vec::new();
        let mut outputs = Vec::with_capacity(work.len());
        let mut staged = Staged::new();
        // Unmerged notifications this transaction marks read, for the tail once it commits.
        let mut read_unmerged = Staged::new();
        for cmd in work {
            outputs.push(match cmd {
                Command::Insert { items, .. } => {
                    Output::Inserted(insert(&tx, items, &mut self.ids, &mut events, &mut staged)?)
                }
                Command::MarkRead { user, ids: targets, .. } => {
                    let recent = unmerged(&self.tail, &staged, user);
                    Output::Read(mark_read(&tx, user, targets, &recent, now, &mut events, &mut read_unmerged)?)
                }
                Command::MarkAllRead { user, .. } => {
                    let recent = unmerged(&self.tail, &staged, user);
                    Output::AllRead(mark_all_read(&tx, user, &recent, now, &mut events, &mut read_unmerged)?)
                }
                Command::Tick | Command::Shutdown { .. } => Output::Nothing,
            });
        }
        if !delivered.is_empty() {
            mark_delivered(&tx, delivered, now)?;
        }
        let written = self.ids.record(&tx)?;
        tx.commit().map_err(sql_error)?;
        self.ids.committed(written);
        // Before the events go out: a client that connects on hearing one must find its notification. The
        // committed mark moves to what `meta.last_id` now holds, whatever created it (see `reader::consistent`).
        self.tail.append(staged, self.ids.persisted());
        self.tail.mark_read(&read_unmerged);
        // Full means a wake-up is already pending; the checkpointer takes everything committed so far.
        let _ = self.committed.try_send(());
        Ok((outputs, events))
    }

    /// See `checkpointer`: lets the WAL start over under sustained load. Tried at most every 100 ms, so a
    /// reader holding an old snapshot (which stops any checkpoint from finishing) costs little.
    fn restart_wal_if_long(&mut self) {
        use std::sync::atomic::Ordering;
        if self.wal_frames.load(Ordering::Relaxed) <= super::checkpointer::RESTART_FRAMES
            || self.last_restart.is_some_and(|at| at.elapsed() < std::time::Duration::from_millis(100))
        {
            return;
        }
        let started = Instant::now();
        self.last_restart = Some(started);
        // Fully copied: the next commit starts the WAL over, so there is nothing to wait for.
        let left = match super::checkpointer::checkpoint(&self.conn, "PASSIVE") {
            Some((frames, copied)) if copied >= frames => 0,
            Some((frames, _)) => frames,
            None => 0,
        };
        self.wal_frames.store(left, Ordering::Relaxed);
        metrics::histogram!("herald_store_wal_restart_seconds").record(started.elapsed().as_secs_f64());
    }

    /// Answers a committed group's callers and sends its changes to the fanout: at once, or (with a syncer)
    /// once the fsync that covers it has returned. Either way in commit order.
    fn deliver(&self, answered: Vec<(Command, Output)>, events: Vec<InboxEvent>) {
        let Some(syncer) = &self.syncer else {
            if !events.is_empty() {
                // Blocks when the fanout is behind: that is the backpressure that keeps memory bounded. An
                // error means the fanout has stopped (shutdown), and there is no one left to push to.
                let _ = self.feed.blocking_send(events);
            }
            for (cmd, output) in answered {
                answer(cmd, Ok(output));
            }
            return;
        };
        let answer_all = move |durable: Result<(), StoreError>| {
            for (cmd, output) in answered {
                answer(cmd, durable.clone().map(|()| output));
            }
        };
        syncer.push(Durable { answer: Box::new(answer_all), events });
    }
}

fn insert(
    tx: &Transaction<'_>,
    items: &[NewNotification],
    ids: &mut IdSource,
    events: &mut Vec<InboxEvent>,
    staged: &mut Staged,
) -> Result<Vec<InsertOutcome>, StoreError> {
    let mut outcomes = Vec::with_capacity(items.len());
    {
        let mut find = tx
            .prepare_cached(&format!("SELECT {COLUMNS} FROM {FROM} WHERE n.user_id = ?1 AND n.idempotency_key = ?2"))
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
            let ulid = ids.next()?;
            let id = NotificationId::from_ulid(ulid);
            let notification = Arc::new(Notification::created(item, id));
            let mut id_buf = [0u8; ulid::ULID_LEN];
            add.execute(params![
                &*ulid.array_to_str(&mut id_buf),
                item.user_id.as_str(),
                item.kind.as_str(),
                item.title,
                item.message,
                item.data.get(),
                notification.created_at.0,
                item.idempotency_key.as_ref().map(|k| k.as_str()),
            ])
            .map_err(sql_error)?;
            events.push(InboxEvent::Created {
                notification: notification.clone(),
                received_at: item.received_at,
                seq: None,
            });
            staged.push((item.user_id.clone(), id));
            outcomes.push(InsertOutcome::Created(notification));
        }
    }
    Ok(outcomes)
}

/// A user's ids not in the index yet: those waiting in the tail, and those created earlier in this
/// transaction.
fn unmerged(tail: &SharedTail, staged: &Staged, user: &UserId) -> Vec<NotificationId> {
    let mut recent = tail.user(user);
    recent.extend(staged.iter().filter(|(u, _)| u == user).map(|(_, id)| *id));
    recent
}

fn subtract_unread(tx: &Transaction<'_>, user: &UserId, n: usize) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE inbox_counts SET unread = max(unread - ?3, 0) WHERE part = ?1 AND user_id = ?2")
        .and_then(|mut s| s.execute(params![tail::partition(user) as i64, user.as_str(), n as i64]))
        .map(drop)
        .map_err(sql_error)
}

fn clear_unread(tx: &Transaction<'_>, user: &UserId) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE inbox_counts SET unread = 0 WHERE part = ?1 AND user_id = ?2")
        .and_then(|mut s| s.execute(params![tail::partition(user) as i64, user.as_str()]))
        .map(drop)
        .map_err(sql_error)
}

/// `recent` is the user's ids not in the `inbox` index yet: the stored counts do not include them (see
/// `tail`), so marking one read changes no count.
fn mark_read(
    tx: &Transaction<'_>,
    user: &UserId,
    targets: &[NotificationId],
    recent: &[NotificationId],
    now: Timestamp,
    events: &mut Vec<InboxEvent>,
    read_unmerged: &mut Staged,
) -> Result<MarkReadOutcome, StoreError> {
    let mut update = tx
        .prepare_cached("UPDATE notifications SET read_at = ?1 WHERE user_id = ?3 AND id = ?2 AND read_at IS NULL")
        .map_err(sql_error)?;
    let mut select = tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM {FROM} WHERE n.user_id = ?2 AND n.id = ?1"))
        .map_err(sql_error)?;
    let mut outcome = MarkReadOutcome::default();
    let mut indexed = 0;
    for id in targets {
        let text = id.to_string();
        if update.execute(params![now.0, text, user.as_str()]).map_err(sql_error)? == 1 {
            outcome.newly_read.push(*id);
            // `recent` is ascending: the tail's ids, then this transaction's newer ones.
            if recent.binary_search(id).is_ok() {
                read_unmerged.push((user.clone(), *id));
            } else {
                indexed += 1;
            }
        }
        if let Some(n) =
            select.query_row(params![text, user.as_str()], schema::from_row).optional().map_err(sql_error)?
        {
            outcome.found.push(n);
        }
    }
    if indexed > 0 {
        subtract_unread(tx, user, indexed)?;
    }
    if !outcome.newly_read.is_empty() {
        events.push(InboxEvent::Read { user_id: user.clone(), ids: outcome.newly_read.clone(), seq: None });
    }
    Ok(outcome)
}

/// `recent` is the user's ids not in the `inbox` index yet; they are marked one by one. The stored unread
/// count (of indexed rows only) bounds the walk of the index: the newest unread rows are marked until as
/// many as it says are found, so a user who reads often costs a short walk, not a scan of their history.
fn mark_all_read(
    tx: &Transaction<'_>,
    user: &UserId,
    recent: &[NotificationId],
    now: Timestamp,
    events: &mut Vec<InboxEvent>,
    read_unmerged: &mut Staged,
) -> Result<u64, StoreError> {
    let mut changed = 0u64;
    let mut one = tx
        .prepare_cached("UPDATE notifications SET read_at = ?1 WHERE id = ?2 AND user_id = ?3 AND read_at IS NULL")
        .map_err(sql_error)?;
    let mut buf = [0u8; ulid::ULID_LEN];
    for id in recent {
        let text = ulid::Ulid(id.as_u128()).array_to_str(&mut buf);
        if one.execute(params![now.0, &*text, user.as_str()]).map_err(sql_error)? == 1 {
            changed += 1;
            read_unmerged.push((user.clone(), *id));
        }
    }
    let (_, indexed_unread) = schema::counts(tx, user)?;
    if indexed_unread > 0 {
        changed += tx
            .prepare_cached(
                "UPDATE notifications SET read_at = ?1 WHERE id IN ( \
                 SELECT i.id FROM inbox i JOIN notifications n ON n.id = i.id \
                 WHERE i.user_id = ?2 AND n.read_at IS NULL ORDER BY i.id DESC LIMIT ?3)",
            )
            .and_then(|mut s| {
                s.execute(params![now.0, user.as_str(), i64::try_from(indexed_unread).unwrap_or(i64::MAX)])
            })
            .map_err(sql_error)? as u64;
        clear_unread(tx, user)?;
    }
    // Sent even when nothing changed, so a tab that missed an update converges.
    events.push(InboxEvent::ReadAll { user_id: user.clone(), seq: None });
    Ok(changed)
}

fn mark_delivered(tx: &Transaction<'_>, marks: &[NotificationId], now: Timestamp) -> Result<(), StoreError> {
    // The first delivery is the one recorded; later ones (another tab, a reconnect) are ignored.
    let mut add = tx.prepare_cached("INSERT OR IGNORE INTO deliveries (id, at) VALUES (?1, ?2)").map_err(sql_error)?;
    let mut buf = [0u8; ulid::ULID_LEN];
    for id in marks {
        let ulid = ulid::Ulid(id.as_u128());
        add.execute(params![&*ulid.array_to_str(&mut buf), now.0]).map_err(sql_error)?;
    }
    Ok(())
}

/// Opens the write connection with the pragmas durability depends on (with `full`, the syncer's fsyncs too).
pub fn open(path: &std::path::Path, busy_timeout: std::time::Duration) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // `full` is kept by the syncer thread, which fsyncs the WAL before any commit is answered; SQLite's own
    // FULL would fsync inside COMMIT, on this connection's thread (see `syncer`).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "cache_size", -65536)?;
    // Checkpoints run on their own thread (see `checkpointer`), not inside the writer's commits.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.set_prepared_statement_cache_capacity(32);
    schema::migrate(&mut conn)?;
    Ok(conn)
}
