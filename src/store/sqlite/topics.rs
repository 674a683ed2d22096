//! Topics in SQLite: a file of their own beside the inbox's (`herald.topics.db` next to `herald.db`), with
//! its own writer thread, so topic appends never queue behind inbox writes or take the inbox's lock.
//!
//! The writer commits whatever appends are queued as one transaction, like the inbox writer. It is the one
//! place appends are serialized, so it is where each event is checked against its lifecycle and given its
//! topic's next sequence number. An append is checked whole before anything is written: a refused event
//! leaves the append's earlier events unstored too.
//!
//! `topics` holds each topic's state; `topic_events` its history, trimmed to the namespace's bounds on
//! every append. A topic whose TTL passed is unknown to readers at once, and the sweep deletes it later;
//! an event for it starts the topic afresh (seq 1, the lifecycle's initial status).
//!
//! `correlations` binds chain transactions to topics (`(chain_id, tx_hash, kind)` → topic) for the topic
//! namespace's TTL; it is written by the same writer, so a `correlate` inside an event commits with it, and
//! swept with the topics.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::correlations::{self, Correlated};
use super::reader::ReaderPool;
use super::syncer::{Committed as Durable, Syncer};
use super::writer::sql_error;
use crate::config::Synchronous;
use crate::domain::Timestamp;
use crate::store::topics::{json, ms, object, recovery, Checked, Recovery, Refused, TopicStore};
use crate::store::{StoreError, StoreHealth};
use crate::topics::{
    CorrelationKey, Namespaces, NewTopicEvent, SharedChange, TopicChange, TopicEvent, TopicName, TopicState,
};

const COMMAND_QUEUE: usize = 4096;
const MAX_COMMANDS_PER_GROUP: usize = 256;
const READERS: usize = 4;
/// How often expired topics and history are swept, and how many rows one sweep deletes at most.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
const SWEEP_ROWS: usize = 10_000;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS topics (
    topic      TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    status     TEXT,
    progress   INTEGER,
    data       TEXT NOT NULL,      -- the merged data, a JSON object
    updated_at INTEGER NOT NULL,   -- milliseconds since the Unix epoch
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS topics_expiry ON topics (expires_at);
CREATE TABLE IF NOT EXISTS topic_events (
    topic      TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    type       TEXT NOT NULL,
    status     TEXT,
    progress   INTEGER,
    data       TEXT NOT NULL,
    at         INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,   -- when the history's age bound drops it
    PRIMARY KEY (topic, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS topic_events_expiry ON topic_events (expires_at);
CREATE TABLE IF NOT EXISTS correlations (
    chain_id   INTEGER NOT NULL,
    tx_hash    TEXT NOT NULL,      -- normalized: 0x-hex in lowercase
    kind       TEXT NOT NULL,
    topic      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (chain_id, tx_hash, kind)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS correlations_expiry ON correlations (expires_at);
"#;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
type Appended = Result<Vec<u64>, Refused>;

enum Command {
    Append { events: Vec<NewTopicEvent>, reply: Reply<Appended> },
    Correlate { key: CorrelationKey, topic: TopicName, reply: Reply<Correlated> },
    Sweep,
    Shutdown { reply: oneshot::Sender<()> },
}

/// The topics file for an inbox database path: `herald.db` → `herald.topics.db`.
pub fn topics_path(inbox: &Path) -> PathBuf {
    let stem = inbox.file_stem().map_or_else(|| "herald".into(), |s| s.to_string_lossy().into_owned());
    inbox.with_file_name(format!("{stem}.topics.db"))
}

pub struct SqliteTopics {
    path: PathBuf,
    commands: mpsc::Sender<Command>,
    readers: Arc<ReaderPool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SqliteTopics {
    /// Opens (creating) the topics database at `path` and starts its writer. Committed events go out on
    /// `feed`, in commit order.
    pub fn open(
        path: &Path,
        synchronous: Synchronous,
        busy_timeout: Duration,
        namespaces: Arc<Namespaces>,
        feed: mpsc::Sender<Vec<SharedChange>>,
    ) -> Result<Self, StoreError> {
        // Its own directory too: with the inbox in PostgreSQL, nothing else has made the data dir.
        super::prepare_path(path)?;
        let conn = open_writer(path, busy_timeout)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        // With `full`, appends and correlations are answered and streamed after the fsync that covers them,
        // as inbox writes are (see `syncer`).
        let syncer = Syncer::for_database("herald-topics-sync", path, synchronous, feed.clone())?;
        let writer = Writer { conn, namespaces, commands: rx, feed, syncer };
        let handle = std::thread::Builder::new()
            .name("herald-topics-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Internal(format!("cannot start the topics writer: {e}")))?;
        crate::store::topics::every(SWEEP_EVERY, commands.downgrade(), || Command::Sweep);
        Ok(Self {
            path: path.to_owned(),
            commands,
            readers: Arc::new(ReaderPool::new(path.to_owned(), READERS)),
            writer: Mutex::new(Some(handle)),
        })
    }
}

/// `synchronous=full` is kept by the sync thread, not by SQLite inside `COMMIT` (see `syncer`).
fn open_writer(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(32);
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

struct Writer {
    conn: Connection,
    namespaces: Arc<Namespaces>,
    commands: mpsc::Receiver<Command>,
    feed: mpsc::Sender<Vec<SharedChange>>,
    /// With `full`: where committed groups wait for their fsync.
    syncer: Option<Syncer<SharedChange>>,
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.commands.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_COMMANDS_PER_GROUP {
                match self.commands.try_recv() {
                    Ok(cmd) => group.push(cmd),
                    Err(_) => break,
                }
            }
            let mut appends = Vec::with_capacity(group.len());
            let mut correlates = Vec::new();
            let mut stop = None;
            let mut sweep = false;
            for cmd in group {
                match cmd {
                    Command::Append { events, reply } => appends.push((events, reply)),
                    Command::Correlate { key, topic, reply } => correlates.push((key, topic, reply)),
                    Command::Sweep => sweep = true,
                    Command::Shutdown { reply } => stop = Some(reply),
                }
            }
            if !appends.is_empty() {
                self.commit_appends(appends);
            }
            if !correlates.is_empty() {
                self.commit_correlates(correlates);
            }
            if sweep {
                if let Err(e) = self.sweep() {
                    tracing::warn!(error = %e, "could not sweep expired topics");
                }
            }
            if let Some(reply) = stop {
                if let Some(syncer) = &mut self.syncer {
                    syncer.finish();
                }
                let _ = reply.send(());
                return;
            }
            if self.syncer.as_ref().is_some_and(|s| s.failed()) {
                tracing::error!("the topics WAL could not be made durable; its writer stops, and appends fail");
                return;
            }
        }
    }

    fn commit_appends(&mut self, appends: Vec<(Vec<NewTopicEvent>, Reply<Appended>)>) {
        let started = Instant::now();
        let (events, replies): (Vec<_>, Vec<_>) = appends.into_iter().unzip();
        match self.transaction(&events) {
            Ok((results, changes)) => self.finish(replies, results, changes),
            Err(group_error) => {
                tracing::warn!(error = %group_error, appends = events.len(), "a topic write group failed; retrying each alone");
                for (one, reply) in events.iter().zip(replies) {
                    match self.transaction(std::slice::from_ref(one)) {
                        Ok((results, changes)) => self.finish(vec![reply], results, changes),
                        Err(e) => drop(reply.send(Err(e))),
                    }
                }
            }
        }
        metrics::histogram!("herald_store_commit_seconds", "store" => "topics").record(started.elapsed().as_secs_f64());
    }

    /// Binds keys to topics, in one transaction; a refused binding leaves the others be.
    fn commit_correlates(&mut self, correlates: Vec<(CorrelationKey, TopicName, Reply<Correlated>)>) {
        let (bindings, replies): (Vec<_>, Vec<_>) = correlates.into_iter().map(|(k, t, r)| ((k, t), r)).unzip();
        match correlations::bind_all(&mut self.conn, &self.namespaces, &bindings, Timestamp::now()) {
            Ok(results) => self.answer(Vec::new(), move |durable| {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(durable.clone().map(|()| result));
                }
            }),
            Err(e) => {
                tracing::warn!(error = %e, "could not store correlations");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn finish(&self, replies: Vec<Reply<Appended>>, results: Vec<Appended>, changes: Vec<TopicChange>) {
        metrics::counter!("herald_topic_events_appended_total").increment(changes.len() as u64);
        self.answer(changes.into_iter().map(Arc::new).collect(), move |durable| {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(match &durable {
                    Ok(()) => Ok(result),
                    Err(e) => Err(e.clone()),
                });
            }
        });
    }

    /// Streams a commit's changes, then answers its callers: at once, or (with a syncer) once the fsync that
    /// covers it has returned; in commit order either way. Streamed before the publishers hear back, so a
    /// publisher that reads on hearing 201 finds its event on every live connection's way.
    fn answer(&self, changes: Vec<SharedChange>, answer: impl FnOnce(Result<(), StoreError>) + Send + 'static) {
        if let Some(syncer) = &self.syncer {
            syncer.push(Durable { answer: Box::new(answer), events: changes });
            return;
        }
        if !changes.is_empty() && self.feed.blocking_send(changes).is_err() {
            tracing::debug!("the topic feed is closed; committed events are not streamed");
        }
        answer(Ok(()));
    }

    /// Runs the appends in one transaction; a refused append writes nothing and leaves the others be.
    fn transaction(&mut self, appends: &[Vec<NewTopicEvent>]) -> Result<(Vec<Appended>, Vec<TopicChange>), StoreError> {
        let now = Timestamp::now();
        let namespaces = self.namespaces.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
        let mut results = Vec::with_capacity(appends.len());
        let mut streamed = Vec::new();
        for events in appends {
            match check(&tx, &namespaces, events, now)? {
                Err(refused) => results.push(Err(refused)),
                Ok(checked) => {
                    write(&tx, &namespaces, &checked)?;
                    results.push(Ok(checked.changes.iter().map(|c| c.event.seq).collect()));
                    streamed.extend(checked.changes);
                }
            }
        }
        tx.commit().map_err(sql_error)?;
        Ok((results, streamed))
    }

    fn sweep(&mut self) -> Result<(), StoreError> {
        let now = Timestamp::now().0;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
        let expired: Vec<String> = {
            let mut stmt =
                tx.prepare_cached("SELECT topic FROM topics WHERE expires_at <= ?1 LIMIT ?2").map_err(sql_error)?;
            let rows = stmt.query_map(params![now, SWEEP_ROWS as i64], |r| r.get(0)).map_err(sql_error)?;
            rows.collect::<Result<_, _>>().map_err(sql_error)?
        };
        for topic in &expired {
            tx.execute("DELETE FROM topic_events WHERE topic = ?1", [topic]).map_err(sql_error)?;
            tx.execute("DELETE FROM topics WHERE topic = ?1", [topic]).map_err(sql_error)?;
        }
        let correlations = correlations::sweep(&tx, now, SWEEP_ROWS)?;
        let aged = tx
            .execute(
                "DELETE FROM topic_events WHERE (topic, seq) IN
                     (SELECT topic, seq FROM topic_events WHERE expires_at <= ?1 LIMIT ?2)",
                params![now, SWEEP_ROWS as i64],
            )
            .map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
        if !expired.is_empty() || aged > 0 || correlations > 0 {
            metrics::counter!("herald_topics_expired_total").increment(expired.len() as u64);
            tracing::debug!(topics = expired.len(), events = aged, correlations, "swept expired topics and history");
        }
        Ok(())
    }
}

/// Checks an append against the states and bindings in the transaction, without writing.
fn check(
    tx: &rusqlite::Transaction<'_>,
    namespaces: &Namespaces,
    events: &[NewTopicEvent],
    now: Timestamp,
) -> Result<Result<Checked, Refused>, StoreError> {
    crate::store::topics::check(
        namespaces,
        events,
        now,
        |topic| load(tx, topic, now),
        |key| correlations::bound(tx, key, now),
    )
}

fn write(tx: &rusqlite::Transaction<'_>, namespaces: &Namespaces, checked: &Checked) -> Result<(), StoreError> {
    for topic in &checked.restarted {
        tx.execute("DELETE FROM topic_events WHERE topic = ?1", [topic.as_str()]).map_err(sql_error)?;
    }
    let now = checked.changes.first().map_or_else(Timestamp::now, |c| c.event.at);
    for (key, topic) in &checked.correlations {
        correlations::bind(tx, namespaces, key, topic, now)?;
    }
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO topic_events (topic, seq, type, status, progress, data, at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(sql_error)?;
        for change in &checked.changes {
            let e = &change.event;
            let keep = ms(namespaces.of(&change.topic).history_age);
            insert
                .execute(params![
                    change.topic.as_str(),
                    e.seq as i64,
                    e.kind,
                    e.status,
                    e.progress,
                    json(&e.data),
                    e.at.0,
                    e.at.0.saturating_add(keep),
                ])
                .map_err(sql_error)?;
        }
    }
    let mut upsert = tx
        .prepare_cached(
            "INSERT INTO topics (topic, seq, status, progress, data, updated_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (topic) DO UPDATE SET seq = excluded.seq, status = excluded.status,
                 progress = excluded.progress, data = excluded.data, updated_at = excluded.updated_at,
                 expires_at = excluded.expires_at",
        )
        .map_err(sql_error)?;
    let mut trim = tx.prepare_cached("DELETE FROM topic_events WHERE topic = ?1 AND seq <= ?2").map_err(sql_error)?;
    for (topic, state) in &checked.finals {
        if state.seq == 0 {
            continue;
        }
        upsert
            .execute(params![
                topic.as_str(),
                state.seq as i64,
                state.status,
                state.progress,
                json(&state.data),
                state.updated_at.0,
                state.expires_at.0,
            ])
            .map_err(sql_error)?;
        let keep = namespaces.of(topic).history_events as u64;
        if state.seq > keep {
            trim.execute(params![topic.as_str(), (state.seq - keep) as i64]).map_err(sql_error)?;
        }
    }
    Ok(())
}

const STATE_COLUMNS: &str = "seq, status, progress, data, updated_at, expires_at";

fn state_row(topic: &TopicName, row: &Row<'_>) -> rusqlite::Result<TopicState> {
    Ok(TopicState {
        topic: topic.clone(),
        seq: row.get::<_, i64>(0)? as u64,
        status: row.get(1)?,
        progress: row.get(2)?,
        data: object(&row.get::<_, String>(3)?),
        updated_at: Timestamp(row.get(4)?),
        expires_at: Timestamp(row.get(5)?),
    })
}

/// The topic's state if it is live, and whether a stale (expired, unswept) row is in the way.
fn load(conn: &Connection, topic: &TopicName, now: Timestamp) -> Result<(Option<TopicState>, bool), StoreError> {
    let state = conn
        .prepare_cached(&format!("SELECT {STATE_COLUMNS} FROM topics WHERE topic = ?1"))
        .map_err(sql_error)?
        .query_row([topic.as_str()], |row| state_row(topic, row))
        .optional()
        .map_err(sql_error)?;
    Ok(match state {
        Some(s) if s.expires_at > now => (Some(s), false),
        Some(_) => (None, true),
        None => (None, false),
    })
}

fn event_row(row: &Row<'_>) -> rusqlite::Result<TopicEvent> {
    Ok(TopicEvent {
        seq: row.get::<_, i64>(0)? as u64,
        kind: row.get(1)?,
        status: row.get(2)?,
        progress: row.get(3)?,
        data: object(&row.get::<_, String>(4)?),
        at: Timestamp(row.get(5)?),
    })
}

fn recover(conn: &mut Connection, topic: &TopicName, since: Option<u64>, limit: usize) -> Result<Recovery, StoreError> {
    let now = Timestamp::now();
    let tx = conn.transaction().map_err(sql_error)?;
    let (state, _) = load(&tx, topic, now)?;
    let (state, since) = match recovery::from_state(state, since) {
        Ok(recovery) => return Ok(recovery),
        Err(rest) => rest,
    };
    let events: Vec<TopicEvent> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT seq, type, status, progress, data, at FROM topic_events
                 WHERE topic = ?1 AND seq > ?2 AND expires_at > ?3 ORDER BY seq LIMIT ?4",
            )
            .map_err(sql_error)?;
        let rows =
            stmt.query_map(params![topic.as_str(), since as i64, now.0, limit as i64], event_row).map_err(sql_error)?;
        rows.collect::<Result<_, _>>().map_err(sql_error)?
    };
    Ok(recovery::with_events(state, since, events))
}

#[async_trait]
impl TopicStore for SqliteTopics {
    async fn append(&self, events: Vec<NewTopicEvent>) -> Result<Appended, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Append { events, reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn state(&self, topic: &TopicName) -> Result<Option<TopicState>, StoreError> {
        let topic = topic.clone();
        self.readers.run(move |conn| load(conn, &topic, Timestamp::now()).map(|(state, _)| state)).await
    }

    async fn recover(&self, topic: &TopicName, since: Option<u64>, limit: usize) -> Result<Recovery, StoreError> {
        let topic = topic.clone();
        self.readers.run(move |conn| recover(conn, &topic, since, limit)).await
    }

    async fn correlate(&self, key: CorrelationKey, topic: TopicName) -> Result<Correlated, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Correlate { key, topic, reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn find_correlation(&self, key: &CorrelationKey) -> Result<Option<TopicName>, StoreError> {
        let key = key.clone();
        self.readers.run(move |conn| correlations::bound(conn, &key, Timestamp::now())).await
    }

    async fn live_topics(&self) -> Result<u64, StoreError> {
        self.readers
            .run(|conn| {
                conn.query_row("SELECT count(*) FROM topics WHERE expires_at > ?1", [Timestamp::now().0], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n as u64)
                .map_err(sql_error)
            })
            .await
    }

    async fn health(&self) -> StoreHealth {
        let read = self.readers.run(super::reader::ping).await;
        super::health(&self.path, !self.commands.is_closed(), read)
    }

    async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = done.await;
        }
        super::join_writer(&self.writer).await;
    }
}
