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

use super::schema::{self, COLUMNS, FROM};
use super::tail::{self, SharedTail};
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
    /// Wakes an otherwise idle writer to merge what is due (see `Sqlite::open_with`).
    Tick,
    /// Finish what is queued before this, then stop.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

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
    /// The newest id created by a committed transaction (what `meta.last_id` holds).
    pub newest_committed: Option<NotificationId>,
    /// Set when a merge could not put `synchronous` back: the writer stops rather than commit without the
    /// durability it was configured with.
    pub durability_lost: bool,
}

#[derive(Debug, Clone, Copy)]
enum MergeMode {
    Load,
    Idle,
    All,
}

/// After a commit group, merges take at most this long, unless a partition is overfull (below); the first
/// due partition is merged whatever the time.
const MERGE_BUDGET: std::time::Duration = std::time::Duration::from_millis(2);
/// A partition holding this many times `merge_rows` is merged at once, whatever the budget: bounds memory
/// when groups are large and few.
const OVERFULL: usize = 8;

/// What a command produced, before the commit decides whether its caller hears it.
enum Output {
    Inserted(Vec<InsertOutcome>),
    Read(MarkReadOutcome),
    AllRead(u64),
    Nothing,
}

/// Answers a command's caller. A caller that gave up (its request was cancelled) is not an error: the write
/// stands.
fn answer(cmd: Command, result: Result<Output, StoreError>) {
    let mismatch = || StoreError::Internal("a command produced the wrong output".into());
    match cmd {
        Command::Insert { reply, .. } => drop(reply.send(result.and_then(|o| match o {
            Output::Inserted(v) => Ok(v),
            _ => Err(mismatch()),
        }))),
        Command::MarkRead { reply, .. } => drop(reply.send(result.and_then(|o| match o {
            Output::Read(v) => Ok(v),
            _ => Err(mismatch()),
        }))),
        Command::MarkAllRead { reply, .. } => drop(reply.send(result.and_then(|o| match o {
            Output::AllRead(v) => Ok(v),
            _ => Err(mismatch()),
        }))),
        Command::FlushDelivered | Command::Tick | Command::Shutdown { .. } => {}
    }
}

/// Ids in commit order, also across restarts: a ULID generator alone is monotonic only within one process,
/// and a clock stepped back at restart would otherwise produce ids below stored ones (breaking `since` and
/// the per-connection high-water mark). The newest id is kept in `meta` with every commit that creates one.
pub struct IdSource {
    generator: ulid::Generator,
    last: ulid::Ulid,
    recorded: ulid::Ulid,
}

impl IdSource {
    fn resume(conn: &Connection) -> Result<Self, StoreError> {
        let stored: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'last_id'", [], |r| r.get(0))
            .optional()
            .map_err(sql_error)?;
        let last = match stored {
            Some(text) => {
                ulid::Ulid::from_string(&text).map_err(|_| StoreError::Internal("meta.last_id is not a ULID".into()))?
            }
            None => ulid::Ulid::nil(),
        };
        Ok(Self { generator: ulid::Generator::new(), last, recorded: last })
    }

    fn next(&mut self) -> Result<ulid::Ulid, StoreError> {
        let mut id = self.generator.generate().map_err(|e| StoreError::Internal(e.to_string()))?;
        if id <= self.last {
            id = self.last.increment().ok_or_else(|| StoreError::Internal("the id space is exhausted".into()))?;
        }
        self.last = id;
        Ok(id)
    }

    /// Stores the newest id in the transaction (normally the one that creates it). If the transaction rolls
    /// back, the id is still never reused: `last` only moves forward. Returns what was written, for
    /// [`committed`](Self::committed) once the transaction commits.
    fn record(&mut self, tx: &Transaction<'_>) -> Result<Option<ulid::Ulid>, StoreError> {
        if self.last == self.recorded {
            return Ok(None);
        }
        let mut buf = [0u8; ulid::ULID_LEN];
        tx.prepare_cached("INSERT INTO meta (key, value) VALUES ('last_id', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .and_then(|mut s| s.execute(params![&*self.last.array_to_str(&mut buf)]))
            .map_err(sql_error)?;
        Ok(Some(self.last))
    }

    /// After a commit: `written` (from [`record`](Self::record)) is what `meta.last_id` now holds.
    fn committed(&mut self, written: Option<ulid::Ulid>) {
        if let Some(id) = written {
            self.recorded = id;
        }
    }

    /// What `meta.last_id` holds: the newest id of any committed transaction (its row may not exist, if the
    /// transaction that generated it failed and a later one recorded it).
    fn persisted(&self) -> Option<NotificationId> {
        (!self.recorded.is_nil()).then(|| NotificationId::from_ulid(self.recorded))
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

type Committed = (Vec<Output>, Vec<InboxEvent>);

/// The notifications a transaction creates, by user, to join the tail once it commits.
type Staged = Vec<(UserId, NotificationId)>;

impl Writer {
    pub fn run(mut self) {
        let mut ids = match IdSource::resume(&self.conn) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the last id; the store will refuse writes");
                return;
            }
        };
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
            let stop = self.commit_group(group, &mut ids);
            let mode = if stop.is_some() {
                MergeMode::All
            } else if self.commands.is_empty() {
                MergeMode::Idle
            } else {
                MergeMode::Load
            };
            self.merge(mode);
            self.restart_wal_if_long();
            if self.durability_lost {
                tracing::error!("the writer cannot restore its configured durability; it stops, and writes fail");
                return;
            }
            metrics::histogram!("herald_store_commit_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("herald_store_group_size").record(size as f64);
            if let Some(reply) = stop {
                let _ = reply.send(());
                return;
            }
        }
    }

    /// Commits a group, answers its callers, and returns the shutdown request if the group held one.
    fn commit_group(&mut self, group: Vec<Command>, ids: &mut IdSource) -> Option<oneshot::Sender<()>> {
        let delivered = match self.delivered.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let mut stop = None;
        let mut work = Vec::with_capacity(group.len());
        for cmd in group {
            match cmd {
                Command::Shutdown { reply } => stop = Some(reply),
                Command::FlushDelivered | Command::Tick => {}
                other => work.push(other),
            }
        }
        if work.is_empty() && delivered.is_empty() {
            // A wake-up whose marks an earlier group already took.
            return stop;
        }
        match self.transaction(&work, &delivered, ids) {
            Ok((outputs, events)) => {
                self.publish(events);
                for (cmd, output) in work.into_iter().zip(outputs) {
                    answer(cmd, Ok(output));
                }
            }
            Err(group_error) => {
                tracing::warn!(error = %group_error, commands = work.len(), "a write group failed; retrying each alone");
                for cmd in work {
                    match self.transaction(std::slice::from_ref(&cmd), &[], ids) {
                        Ok((mut outputs, events)) => {
                            self.publish(events);
                            answer(cmd, Ok(outputs.pop().unwrap_or(Output::Nothing)));
                        }
                        Err(e) => answer(cmd, Err(e)),
                    }
                }
                // Losing delivered marks is harmless (they are informational), so a failure is only logged.
                if let Err(e) = self.transaction(&[], &delivered, ids) {
                    tracing::warn!(error = %e, "could not record delivered notifications");
                }
            }
        }
        stop
    }

    /// Runs commands and delivered marks in one transaction and commits it; on any error nothing is kept.
    fn transaction(
        &mut self,
        work: &[Command],
        delivered: &[NotificationId],
        ids: &mut IdSource,
    ) -> Result<Committed, StoreError> {
        let now = Timestamp::now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
        let mut events = Vec::new();
        let mut outputs = Vec::with_capacity(work.len());
        let mut staged = Staged::new();
        // Unmerged notifications this transaction marks read, for the tail once it commits.
        let mut read_unmerged = Staged::new();
        for cmd in work {
            outputs.push(match cmd {
                Command::Insert { items, .. } => Output::Inserted(insert(&tx, items, ids, &mut events, &mut staged)?),
                Command::MarkRead { user, ids: targets, .. } => {
                    let recent = unmerged(&self.tail, &staged, user);
                    Output::Read(mark_read(&tx, user, targets, &recent, now, &mut events, &mut read_unmerged)?)
                }
                Command::MarkAllRead { user, .. } => {
                    let recent = unmerged(&self.tail, &staged, user);
                    Output::AllRead(mark_all_read(&tx, user, &recent, now, &mut events, &mut read_unmerged)?)
                }
                Command::FlushDelivered | Command::Tick | Command::Shutdown { .. } => Output::Nothing,
            });
        }
        if !delivered.is_empty() {
            mark_delivered(&tx, delivered, now)?;
        }
        let written = ids.record(&tx)?;
        tx.commit().map_err(sql_error)?;
        ids.committed(written);
        // Before the events go out: a client that connects on hearing one must find its notification. The
        // committed mark moves to what `meta.last_id` now holds, whatever created it (see `reader::consistent`).
        self.newest_committed = self.newest_committed.max(ids.persisted());
        self.tail.append(staged, self.newest_committed);
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

    /// Merges partitions of the tail into the `inbox` index, taking turns. A partition is due when it is
    /// full (`merge_rows` waiting) or old (its oldest id has waited `merge_interval`).
    /// - Under load (commands waiting): a full one, more while within [`MERGE_BUDGET`]; an old one at most
    ///   once per `merge_interval / PARTITIONS`; any overfull one.
    /// - Idle (nothing waiting): every due one, for as long as nothing arrives.
    /// - All (at shutdown): every partition holding anything.
    fn merge(&mut self, mode: MergeMode) {
        let started = Instant::now();
        let mut merged_any = false;
        for step in 0..tail::PARTITIONS {
            let p = (self.merge_cursor + step) % tail::PARTITIONS;
            let (len, age) = self.tail.load(p);
            if len == 0 {
                continue;
            }
            let full = len >= self.merge_rows;
            let old = age.is_some_and(|a| a >= self.merge_interval);
            let overfull = len >= self.merge_rows.saturating_mul(OVERFULL);
            let in_budget = !merged_any || started.elapsed() < MERGE_BUDGET;
            // Partitions come due by age in bunches (they fill together); merged back to back, they held
            // the writer for a fifth of every second. Spaced out, each partition still merges about once
            // per interval, and a commit waits behind at most one merge.
            let paced = self.last_merge.is_none_or(|at| at.elapsed() >= self.merge_interval / tail::PARTITIONS as u32);
            let go = match mode {
                MergeMode::All => true,
                MergeMode::Idle => (full || old) && self.commands.is_empty(),
                MergeMode::Load => overfull || (in_budget && (full || (old && paced))),
            };
            if go {
                self.merge_partition(p);
                self.merge_cursor = (p + 1) % tail::PARTITIONS;
                self.last_merge = Some(Instant::now());
                merged_any = true;
            }
        }
    }

    /// Merges one partition in its own transaction, then forgets it; on failure it is kept and tried again
    /// after a later group.
    fn merge_partition(&mut self, p: usize) {
        let entries = self.tail.sorted(p);
        // Partitions with nothing waiting (and this one, once merged) hold every id up to the newest
        // committed: their merge positions move there too, so a quiet partition does not hold back the
        // recovery at the next open.
        let settled: Vec<usize> = (0..tail::PARTITIONS).filter(|&q| q == p || self.tail.load(q).0 == 0).collect();
        let started = Instant::now();
        let result = merge(&mut self.conn, &entries, &settled, self.newest_committed);
        match result {
            Ok(()) => {
                self.tail.clear(p);
                let _ = self.committed.try_send(());
                metrics::histogram!("herald_store_merge_seconds").record(started.elapsed().as_secs_f64());
            }
            Err(MergeError::Store(e)) => {
                tracing::warn!(error = %e, entries = entries.len(), "could not merge the inbox index; will retry")
            }
            Err(MergeError::Durability(e)) => {
                tracing::error!(error = %e, "could not restore synchronous after a merge");
                self.durability_lost = true;
            }
        }
    }

    fn publish(&self, events: Vec<InboxEvent>) {
        if events.is_empty() {
            return;
        }
        // Blocks when the fanout is behind: that is the backpressure that keeps memory bounded. An error
        // means the fanout has stopped (shutdown), and there is no one left to push to.
        let _ = self.feed.blocking_send(events);
    }
}

enum MergeError {
    /// The merge did not commit; nothing changed.
    Store(StoreError),
    /// The merge committed, but `synchronous` could not be set back.
    Durability(StoreError),
}

/// Adds a partition's sorted (user, id) entries to the `inbox` index and moves the merge positions of the
/// `settled` partitions (every id of theirs is then indexed) to `newest`.
///
/// The index is derived data, so a merge is committed without an fsync of its own (`synchronous=NORMAL`,
/// which in WAL mode keeps the database consistent, only not durable): the next write's fsync covers its
/// frames, and if a crash comes first, the merge is lost whole with its positions, and recovery at open
/// redoes it. A merge with its own fsync cost the writer a fifth of its time under load.
fn merge(
    conn: &mut Connection,
    entries: &[tail::Entry],
    settled: &[usize],
    newest: Option<NotificationId>,
) -> Result<(), MergeError> {
    let configured: i64 =
        conn.pragma_query_value(None, "synchronous", |r| r.get(0)).map_err(|e| MergeError::Store(sql_error(e)))?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| MergeError::Store(sql_error(e)))?;
    let merged = merge_in_transaction(conn, entries, settled, newest).map_err(MergeError::Store);
    let mut restored = conn.pragma_update(None, "synchronous", configured);
    if restored.is_err() {
        restored = conn.pragma_update(None, "synchronous", configured);
    }
    restored.map_err(|e| MergeError::Durability(sql_error(e)))?;
    merged
}

fn merge_in_transaction(
    conn: &mut Connection,
    entries: &[tail::Entry],
    settled: &[usize],
    newest: Option<NotificationId>,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
    {
        let mut add =
            tx.prepare_cached("INSERT OR IGNORE INTO inbox (user_id, id) VALUES (?1, ?2)").map_err(sql_error)?;
        let mut buf = [0u8; ulid::ULID_LEN];
        // Entries come sorted by user: each user's counts are added once, for all of theirs.
        let mut run: Option<(&UserId, i64, i64)> = None;
        for tail::Entry { user, id, unread: is_unread } in entries {
            let is_unread = *is_unread;
            let text = ulid::Ulid(id.as_u128()).array_to_str(&mut buf);
            if add.execute(params![user.as_str(), &*text]).map_err(sql_error)? == 0 {
                continue;
            }
            match &mut run {
                Some((current, total, unread)) if *current == user => {
                    *total += 1;
                    *unread += i64::from(is_unread);
                }
                _ => {
                    if let Some((done, total, unread)) = run.take() {
                        add_counts(&tx, done.as_str(), total, unread)?;
                    }
                    run = Some((user, 1, i64::from(is_unread)));
                }
            }
        }
        if let Some((done, total, unread)) = run {
            add_counts(&tx, done.as_str(), total, unread)?;
        }
    }
    if let Some(newest) = newest {
        let newest = newest.to_string();
        for &p in settled {
            set_merge_position(&tx, p, &newest)?;
        }
    }
    tx.commit().map_err(sql_error)
}

fn set_merge_position(tx: &Transaction<'_>, partition: usize, id: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute(params![tail::merged_key(partition), id]))
    .map(drop)
    .map_err(sql_error)
}

/// At open, before anyone reads: indexes whatever was committed after the last merge (the tail lived in
/// memory and is gone), so readers can start with an empty tail.
fn recover_tail(conn: &mut Connection) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
    // From the least advanced partition; rows already indexed are skipped.
    let mut from: Option<String> = None;
    for p in 0..tail::PARTITIONS {
        let position = schema::merge_position(&tx, p)?.map(|id| id.to_string()).unwrap_or_default();
        from = Some(from.map_or(position.clone(), |f| f.min(position)));
    }
    let from = from.unwrap_or_default();
    // Rows not indexed yet, each user's together: indexed and added to the user's counts (which cover only
    // indexed rows; see `tail`).
    let mut added = 0;
    {
        let mut rows = tx
            .prepare(
                "SELECT n.user_id, n.id, n.read_at IS NULL FROM notifications n WHERE n.id > ?1 \
                 AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.user_id = n.user_id AND i.id = n.id) \
                 ORDER BY n.user_id, n.id",
            )
            .map_err(sql_error)?;
        let mut index = tx.prepare("INSERT INTO inbox (user_id, id) VALUES (?1, ?2)").map_err(sql_error)?;
        let mut rows = rows.query(params![from]).map_err(sql_error)?;
        let mut run: Option<(String, i64, i64)> = None;
        while let Some(row) = rows.next().map_err(sql_error)? {
            let (user, id, is_unread): (String, String, bool) =
                (row.get(0).map_err(sql_error)?, row.get(1).map_err(sql_error)?, row.get(2).map_err(sql_error)?);
            index.execute(params![user, id]).map_err(sql_error)?;
            added += 1;
            match &mut run {
                Some((current, total, unread)) if *current == user => {
                    *total += 1;
                    *unread += i64::from(is_unread);
                }
                _ => {
                    if let Some((done, total, unread)) = run.take() {
                        add_counts(&tx, &done, total, unread)?;
                    }
                    run = Some((user, 1, i64::from(is_unread)));
                }
            }
        }
        if let Some((done, total, unread)) = run {
            add_counts(&tx, &done, total, unread)?;
        }
    }
    let newest: Option<String> =
        tx.query_row("SELECT max(id) FROM notifications", [], |r| r.get(0)).map_err(sql_error)?;
    if let Some(newest) = newest.filter(|n| *n > from) {
        for p in 0..tail::PARTITIONS {
            set_merge_position(&tx, p, &newest)?;
        }
    }
    tx.commit().map_err(sql_error)?;
    Ok(added)
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
                user_id: item.user_id.clone(),
                kind: item.kind.as_str().to_owned(),
                title: item.title.clone(),
                message: item.message.clone(),
                data: item.data.clone(),
                created_at,
                delivered: false,
                delivered_at: None,
                read: false,
                read_at: None,
            });
            events.push(InboxEvent::Created { notification: notification.clone(), received_at: item.received_at });
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

/// Adds merged notifications to a user's counts.
fn add_counts(tx: &Transaction<'_>, user: &str, total: i64, unread: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO inbox_counts (part, user_id, total, unread) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (part, user_id) DO UPDATE SET total = total + excluded.total, unread = unread + excluded.unread",
    )
    .and_then(|mut s| s.execute(params![tail::partition_of(user) as i64, user, total, unread]))
    .map(drop)
    .map_err(sql_error)
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
        events.push(InboxEvent::Read { user_id: user.clone(), ids: outcome.newly_read.clone() });
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
    events.push(InboxEvent::ReadAll { user_id: user.clone() });
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
    // Checkpoints run on their own thread (see `checkpointer`), not inside the writer's commits.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.set_prepared_statement_cache_capacity(32);
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// Brings the `inbox` index up to date with everything committed; see [`recover_tail`].
pub fn prepare(conn: &mut Connection) -> Result<(), StoreError> {
    let added = recover_tail(conn)?;
    if added > 0 {
        tracing::info!(notifications = added, "indexed notifications committed after the last merge");
    }
    // Only now: the migration and the recovery may sort a whole table, which must be free to spill to disk.
    conn.pragma_update(None, "temp_store", "MEMORY").map_err(sql_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_indexes_its_partition_and_restores_durability() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("herald.db"), crate::config::Synchronous::Full).unwrap();
        prepare(&mut conn).unwrap();
        let user = UserId::parse("alice").unwrap();
        let id = NotificationId::from_ulid(ulid::Ulid::new());
        conn.execute(
            "INSERT INTO notifications (id, user_id, type, data, created_at) VALUES (?1, 'alice', 't', '{}', 1)",
            params![id.to_string()],
        )
        .unwrap();
        let p = tail::partition(&user);
        assert!(merge(&mut conn, &[tail::Entry { user: user.clone(), id, unread: true }], &[p], Some(id)).is_ok());
        let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "FULL again after the merge");
        let indexed: i64 = conn
            .query_row(
                "SELECT count(*) FROM inbox WHERE user_id = ?1 AND id = ?2",
                params!["alice", id.to_string()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexed, 1);
        assert_eq!(schema::counts(&conn, &user).unwrap(), (1, 1), "merged rows join the stored counts");
        assert_eq!(schema::merged_upto(&conn, &user).unwrap(), Some(id));
        assert_eq!(schema::merge_position(&conn, (p + 1) % tail::PARTITIONS).unwrap(), None);
    }
}
