//! Makes commits durable off the writer's thread, so the next group is built while this one's fsync runs.
//!
//! With `synchronous=FULL`, SQLite fsyncs the WAL inside `COMMIT`, on the writer's thread: the writer sat
//! idle through every fsync (0.3–0.8 ms here, most of a group's time under single publishes), and nothing
//! else could be written meanwhile. So when Herald is configured `full`, the write connection runs with
//! `synchronous=NORMAL` (in WAL mode: a commit appends its frames to the WAL and does not sync), and this
//! thread gives every commit the fsync that FULL would have: it takes each committed group, fsyncs the WAL
//! once for all the groups that committed meanwhile, and only then answers their callers and sends their
//! changes to the fanout, in commit order. A 201 still means the notification is on disk.
//!
//! Why that is the same guarantee: a fsync makes every byte written to the file before it durable, so once
//! it returns, every commit frame written before it survives a power loss (WAL recovery keeps the frames up
//! to the last valid commit frame). SQLite writes the database file only in checkpoints, and the
//! checkpointer's connection (`synchronous` at its default, FULL) syncs the WAL before copying frames and
//! the database after; the WAL starts over only after a complete checkpoint, so a torn restart loses only
//! commits that no one was told about. What differs: a reader on another connection may see a commit up
//! to one fsync before it is durable (a power loss in that window removes it; its publisher got no reply).
//!
//! A failed fsync leaves the state of the disk unknown (Linux may drop the dirty pages it could not write),
//! so the commits it covered are answered with an error, and the store stops accepting writes: it does not
//! go on as if later commits were durable.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::config::Synchronous;
use crate::store::StoreError;

/// How many committed groups may wait for their fsync before the writer waits too.
pub const QUEUE: usize = 64;

/// A committed group, waiting for the fsync that makes it durable.
/// `E` is what the store streams to its fanout: inbox events, or topic changes.
pub struct Committed<E> {
    /// Called once the group is durable (with `Ok`) or known not to be (with the error).
    pub answer: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
    pub events: Vec<E>,
}

/// Makes the WAL durable: `fdatasync` on the WAL file, reopened if SQLite replaced it.
pub trait SyncWal: Send + 'static {
    fn sync(&mut self) -> std::io::Result<()>;
}

/// The WAL file of a database, opened on first use.
pub struct WalFile {
    path: PathBuf,
    open: Option<(File, u64)>,
}

impl WalFile {
    pub fn of(database: &Path) -> Self {
        let mut path = database.as_os_str().to_owned();
        path.push("-wal");
        Self { path: PathBuf::from(path), open: None }
    }
}

impl SyncWal for WalFile {
    fn sync(&mut self) -> std::io::Result<()> {
        // SQLite keeps the WAL while any connection is open, but should it ever replace it (a new inode), the
        // new one is what needs the fsync.
        let inode = std::fs::metadata(&self.path)?.ino();
        if self.open.as_ref().is_none_or(|(_, ino)| *ino != inode) {
            let file = File::options().read(true).write(true).open(&self.path)?;
            let ino = file.metadata()?.ino();
            // The WAL's directory entry must last too (SQLite syncs the directory when it creates a journal).
            if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
            self.open = Some((file, ino));
        }
        match &self.open {
            Some((file, _)) => file.sync_data(),
            None => Ok(()),
        }
    }
}

/// The writer's end: hands committed groups over, and waits for the last on shutdown.
pub struct Syncer<E> {
    groups: Option<SyncSender<Committed<E>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    failed: Arc<AtomicBool>,
}

impl<E: Send + 'static> Syncer<E> {
    /// Starts the sync thread; `name` is its thread's name.
    pub fn start(name: &str, sync: impl SyncWal, feed: mpsc::Sender<Vec<E>>) -> std::io::Result<Self> {
        let (groups, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || run(sync, rx, feed, flag))?;
        Ok(Self { groups: Some(groups), thread: Some(thread), failed })
    }

    /// The syncer a store's writer needs for `synchronous`: one for the WAL of `database` with `full`, none
    /// with `normal` (the writer then answers at commit). `name` is the thread's name.
    pub fn for_database(
        name: &str,
        database: &Path,
        synchronous: Synchronous,
        feed: mpsc::Sender<Vec<E>>,
    ) -> Result<Option<Self>, StoreError> {
        match synchronous {
            Synchronous::Full => Self::start(name, WalFile::of(database), feed)
                .map(Some)
                .map_err(|e| StoreError::Internal(format!("cannot start the WAL sync thread {name}: {e}"))),
            Synchronous::Normal => Ok(None),
        }
    }
}

impl<E> Syncer<E> {
    /// Queues a committed group; blocks while [`QUEUE`] groups wait (the fanout or the disk is behind).
    pub fn push(&self, group: Committed<E>) {
        match &self.groups {
            Some(groups) => {
                if let Err(std::sync::mpsc::SendError(group)) = groups.send(group) {
                    (group.answer)(Err(StoreError::Unavailable("the WAL sync thread has stopped".into())));
                }
            }
            None => (group.answer)(Err(StoreError::Closed)),
        }
    }

    /// True once an fsync has failed: nothing committed after it may be reported durable.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Waits until every queued group is answered.
    pub fn finish(&mut self) {
        self.groups = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<E> Drop for Syncer<E> {
    fn drop(&mut self) {
        self.finish();
    }
}

fn run<E>(mut wal: impl SyncWal, groups: Receiver<Committed<E>>, feed: mpsc::Sender<Vec<E>>, failed: Arc<AtomicBool>) {
    while let Ok(first) = groups.recv() {
        let mut batch = vec![first];
        batch.extend(groups.try_iter().take(QUEUE));
        if failed.load(Ordering::Acquire) {
            refuse(batch);
            continue;
        }
        let started = Instant::now();
        if let Err(e) = wal.sync() {
            tracing::error!(error = %e, "fsync of the WAL failed; the store stops accepting writes");
            failed.store(true, Ordering::Release);
            refuse(batch);
            continue;
        }
        metrics::histogram!("herald_store_sync_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("herald_store_sync_groups").record(batch.len() as f64);
        for group in batch {
            if !group.events.is_empty() {
                // Blocks while the fanout is behind: backpressure, as when the writer sent these itself. An
                // error means the fanout has stopped (shutdown), with no one left to push to.
                let _ = feed.blocking_send(group.events);
            }
            (group.answer)(Ok(()));
        }
    }
}

fn refuse<E>(batch: Vec<Committed<E>>) {
    for group in batch {
        (group.answer)(Err(StoreError::Unavailable("could not make the write durable (fsync failed)".into())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Sender};
    use std::time::Duration;

    /// A sync that waits for a go-ahead, and reports each one it completes.
    struct Gate {
        go: Receiver<std::io::Result<()>>,
        done: Sender<()>,
    }

    impl SyncWal for Gate {
        fn sync(&mut self) -> std::io::Result<()> {
            let result = self.go.recv().unwrap_or(Ok(()));
            let _ = self.done.send(());
            result
        }
    }

    fn group(tag: u32, answers: &Sender<(u32, Result<(), StoreError>)>) -> Committed<()> {
        let answers = answers.clone();
        Committed { answer: Box::new(move |r| drop(answers.send((tag, r)))), events: Vec::new() }
    }

    /// A syncer whose every fsync waits for `go`'s next result, with `done` told after each, and a channel
    /// its groups' answers arrive on.
    struct Gated {
        syncer: Syncer<()>,
        go: Sender<std::io::Result<()>>,
        done: Receiver<()>,
        answers_tx: Sender<(u32, Result<(), StoreError>)>,
        answers: Receiver<(u32, Result<(), StoreError>)>,
    }

    fn gated() -> Gated {
        let (go, go_rx) = channel();
        let (done_tx, done) = channel();
        // The fanout end is dropped: these groups stream nothing.
        let (feed, _) = mpsc::channel(8);
        let syncer = Syncer::start("test-sync", Gate { go: go_rx, done: done_tx }, feed).unwrap();
        let (answers_tx, answers) = channel();
        Gated { syncer, go, done, answers_tx, answers }
    }

    #[test]
    fn a_group_is_answered_only_after_the_fsync_that_covers_it() {
        let mut t = gated();
        t.syncer.push(group(1, &t.answers_tx));
        // The sync is held: no answer may come.
        assert!(t.answers.recv_timeout(Duration::from_millis(100)).is_err());
        t.go.send(Ok(())).unwrap();
        t.done.recv_timeout(Duration::from_secs(5)).unwrap();
        let (tag, result) = t.answers.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(tag, 1);
        assert!(result.is_ok());
        t.syncer.finish();
    }

    #[test]
    fn groups_are_answered_in_commit_order_and_finish_waits_for_all() {
        let mut t = gated();
        for tag in 0..10 {
            t.syncer.push(group(tag, &t.answers_tx));
        }
        for _ in 0..10 {
            t.go.send(Ok(())).unwrap();
        }
        t.syncer.finish();
        let tags: Vec<u32> = t.answers.try_iter().map(|(tag, r)| r.map(|()| tag).unwrap()).collect();
        assert_eq!(tags, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_failed_fsync_refuses_its_groups_and_every_later_one() {
        let mut t = gated();
        t.syncer.push(group(1, &t.answers_tx));
        t.go.send(Err(std::io::Error::other("EIO"))).unwrap();
        t.done.recv_timeout(Duration::from_secs(5)).unwrap();
        let (_, first) = t.answers.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(matches!(first, Err(StoreError::Unavailable(_))));
        assert!(t.syncer.failed());
        // A later group is refused without another sync being tried.
        t.syncer.push(group(2, &t.answers_tx));
        let (_, second) = t.answers.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(matches!(second, Err(StoreError::Unavailable(_))));
        t.syncer.finish();
        assert!(t.done.try_recv().is_err(), "no fsync was tried after the failed one");
    }

    #[test]
    fn the_wal_file_is_synced_and_reopened_when_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let mut wal = WalFile::of(&db);
        assert!(wal.sync().is_err(), "no WAL yet: nothing to vouch for");
        std::fs::write(dir.path().join("x.db-wal"), b"frames").unwrap();
        wal.sync().unwrap();
        let first = wal.open.as_ref().unwrap().1;
        // The new file exists before the old one goes, so the two cannot share an inode number.
        std::fs::write(dir.path().join("x.db-wal.new"), b"other frames").unwrap();
        std::fs::rename(dir.path().join("x.db-wal.new"), dir.path().join("x.db-wal")).unwrap();
        wal.sync().unwrap();
        assert_ne!(wal.open.as_ref().unwrap().1, first);
    }
}
