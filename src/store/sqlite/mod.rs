//! The embedded backend: SQLite in WAL mode, one writer thread with group commit, a pool of readers.

mod checkpointer;
mod correlations;
mod emails;
mod ids;
mod merge;
mod reader;
mod schema;
mod syncer;
mod tail;
mod topics;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

pub use self::emails::{emails_path, SqliteEmails};
use self::reader::ReaderPool;
use self::tail::SharedTail;
pub use self::tail::PARTITIONS;
pub use self::topics::{topics_path, SqliteTopics};
use self::writer::{Command, PendingDelivered, Writer};
use crate::config::Synchronous;
use crate::domain::{InboxEvent, NewNotification, NotificationId, UserId};
use crate::store::{InsertOutcome, ListQuery, MarkReadOutcome, Page, Since, Snapshot, Store, StoreError, StoreHealth};

/// Commands waiting for the writer; when full, writers wait, which bounds memory under overload.
const COMMAND_QUEUE: usize = 4096;
const READERS: usize = 4;
/// How often an otherwise idle writer is woken while it has work waiting (see [`spawn_ticks`]): the longest
/// delivered marks wait for a write to ride along with, and the finest merge interval honoured exactly.
const TICK: Duration = Duration::from_millis(200);

/// How the store runs; [`Options::new`] gives the defaults for a durability setting.
/// The writer's default wait for a lock held by another process.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub synchronous: Synchronous,
    /// Merge a partition of the in-memory tail into the `inbox` index once this many ids wait in it (see
    /// `tail` and `merge`)…
    pub merge_rows: usize,
    /// …or once the oldest has waited this long.
    pub merge_interval: Duration,
    /// How long the writer waits for a lock another process holds before the write fails as unavailable.
    pub busy_timeout: Duration,
}

impl Options {
    pub fn new(synchronous: Synchronous) -> Self {
        Self {
            synchronous,
            merge_rows: tail::MERGE_ROWS,
            merge_interval: tail::MERGE_INTERVAL,
            busy_timeout: BUSY_TIMEOUT,
        }
    }
}

pub struct Sqlite {
    path: PathBuf,
    commands: mpsc::Sender<Command>,
    readers: Arc<ReaderPool>,
    delivered: PendingDelivered,
    tail: SharedTail,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Sqlite {
    /// Opens (creating and migrating) the database at `path` and starts the writer thread. Committed changes
    /// are sent on `feed`, in commit order.
    pub fn open(
        path: &Path,
        synchronous: Synchronous,
        feed: mpsc::Sender<Vec<InboxEvent>>,
    ) -> Result<Self, StoreError> {
        Self::open_with(path, Options::new(synchronous), feed)
    }

    pub fn open_with(path: &Path, options: Options, feed: mpsc::Sender<Vec<InboxEvent>>) -> Result<Self, StoreError> {
        prepare_path(path)?;
        let mut conn = writer::open(path, options.busy_timeout)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        merge::prepare(&mut conn)?;
        let ids = ids::IdSource::resume(&conn)?;
        let tail = SharedTail::new(ids.persisted());
        let checkpoint_conn = checkpointer::open(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let (committed, committed_rx) = std::sync::mpsc::sync_channel(1);
        let wal_frames = checkpointer::WalFrames::default();
        let seen = wal_frames.clone();
        std::thread::Builder::new()
            .name("herald-sqlite-checkpoint".into())
            .spawn(move || checkpointer::run(checkpoint_conn, committed_rx, seen))
            .map_err(|e| StoreError::Internal(format!("cannot start the checkpoint thread: {e}")))?;
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let delivered: PendingDelivered = Arc::new(Mutex::new(Vec::new()));
        // With `full`, commits are answered from the sync thread, after the fsync that covers them.
        let syncer = syncer::Syncer::for_database("herald-sqlite-sync", path, options.synchronous, feed.clone())?;
        let writer = Writer {
            conn,
            committed,
            wal_frames,
            last_restart: None,
            commands: rx,
            feed,
            delivered: delivered.clone(),
            tail: tail.clone(),
            merge_rows: options.merge_rows,
            merge_interval: options.merge_interval,
            merge_cursor: 0,
            last_merge: None,
            ids,
            syncer,
        };
        spawn_ticks(commands.downgrade(), tail.clone(), delivered.clone());
        let handle = std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            path: path.to_owned(),
            commands,
            readers: Arc::new(ReaderPool::new(path.to_owned(), READERS)),
            delivered,
            tail,
            writer: Mutex::new(Some(handle)),
        })
    }

    async fn write<T>(&self, make: impl FnOnce(writer::Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Makes the directory a database file goes in (private: it also holds the generated secrets).
/// Makes the database's directory (mode 0700) and the database file itself (0600) before SQLite opens it.
/// SQLite creates the `-wal` and `-shm` files with the database file's permissions, so all three are
/// private; files an earlier build left readable to others are tightened.
pub(crate) fn prepare_path(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::config::create_private_dir(parent)
            .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", parent.display())))?;
    }
    let fail = |e: std::io::Error| StoreError::Unavailable(format!("cannot create {}: {e}", path.display()));
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(fail)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
            _ => {}
        }
    }
    Ok(())
}

/// Opens (creating) the database at `path`, runs its migrations and returns its schema version: `herald
/// migrate`. What a migration leaves to the writer's recovery (see `merge::prepare`) happens at the next open.
pub fn migrate_file(path: &Path) -> Result<i64, StoreError> {
    prepare_path(path)?;
    let conn = writer::open(path, Duration::from_secs(5))
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(writer::sql_error)
}

/// Wakes the writer every [`TICK`] while it has work waiting that no command will bring it to: delivered
/// marks (which otherwise ride along with the next write group; a commit per batch of marks cost an fsync
/// each, most of the writer's commits when small batches were published), and ids waiting for a merge (the
/// writer otherwise merges only after a commit group). Runs on the runtime the store is opened from, and
/// ends with the writer.
fn spawn_ticks(commands: mpsc::WeakSender<Command>, tail: SharedTail, delivered: PendingDelivered) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("the store was opened outside a tokio runtime: idle merges and delivered marks wait for writes");
        return;
    };
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(TICK).await;
            let Some(commands) = commands.upgrade() else { return };
            let marks_waiting = delivered.lock().map(|pending| !pending.is_empty()).unwrap_or(false);
            if marks_waiting || !tail.is_empty() {
                let _ = commands.try_send(Command::Tick);
            }
        }
    });
}

#[async_trait]
impl Store for Sqlite {
    async fn insert(&self, items: Vec<NewNotification>) -> Result<Vec<InsertOutcome>, StoreError> {
        self.write(|reply| Command::Insert { items, reply }).await
    }

    async fn list(&self, user: &UserId, query: ListQuery) -> Result<Page, StoreError> {
        let (user, tail) = (user.clone(), self.tail.clone());
        self.readers.run(move |conn| reader::list(conn, &tail, &user, query)).await
    }

    async fn unread_count(&self, user: &UserId) -> Result<u64, StoreError> {
        let (user, tail) = (user.clone(), self.tail.clone());
        self.readers.run(move |conn| reader::unread_count(conn, &tail, &user)).await
    }

    async fn snapshot(&self, user: &UserId, since: Since) -> Result<Snapshot, StoreError> {
        let (user, tail) = (user.clone(), self.tail.clone());
        self.readers.run(move |conn| reader::snapshot(conn, &tail, &user, since)).await
    }

    async fn mark_read(&self, user: &UserId, ids: Vec<NotificationId>) -> Result<MarkReadOutcome, StoreError> {
        let user = user.clone();
        self.write(|reply| Command::MarkRead { user, ids, reply }).await
    }

    async fn mark_all_read(&self, user: &UserId) -> Result<u64, StoreError> {
        let user = user.clone();
        self.write(|reply| Command::MarkAllRead { user, reply }).await
    }

    /// The deliveries log is keyed by id alone, so the user is not needed here.
    fn mark_delivered(&self, _user: &UserId, ids: &[NotificationId]) {
        // The writer takes pending marks with every group it commits, or at the next tick.
        crate::store::queue_delivered(&self.delivered, ids.len(), ids.iter().copied());
    }

    async fn health(&self) -> StoreHealth {
        let read = self.readers.run(reader::ping).await;
        health(&self.path, !self.commands.is_closed(), read)
    }

    async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = done.await;
        }
        join_writer(&self.writer).await;
    }
}

/// What a SQLite file's `/health` part says: up when its writer runs and a reader answers.
fn health(path: &Path, writer_alive: bool, read: Result<(), StoreError>) -> StoreHealth {
    let (ok, detail) = match (writer_alive, read) {
        (true, Ok(())) => (true, path.display().to_string()),
        (false, _) => (false, format!("the writer of {} has stopped", path.display())),
        (true, Err(e)) => (false, e.to_string()),
    };
    StoreHealth { ok, backend: "sqlite", detail }
}

/// Waits, off the runtime, for a writer thread that was told to stop. Idempotent.
async fn join_writer(writer: &Mutex<Option<std::thread::JoinHandle<()>>>) {
    let handle = writer.lock().ok().and_then(|mut h| h.take());
    if let Some(handle) = handle {
        let _ = tokio::task::spawn_blocking(move || handle.join()).await;
    }
}
