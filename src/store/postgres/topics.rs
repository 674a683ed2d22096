//! Topics in PostgreSQL: the same [`TopicStore`] as SQLite's, in the database the inbox uses, so that every
//! node sharing it sees one state and one history per topic.
//!
//! One writer task per node commits whatever appends are queued as one transaction, as the inbox writer does.
//! **Order across nodes**: the transaction first locks the row of every topic its appends touch, in one
//! statement and in name order (an upsert, so a new topic gets a placeholder row, locked the same way), and
//! reads their states. The checks (the lifecycle, the data bound, the correlations: the rules are shared
//! with SQLite, in [`crate::store::topics::check`]) run on those states, and each event gets its topic's
//! next `seq`. The lock is held until commit, so the next append to the topic, on any node, reads the state
//! this one wrote: per topic, `seq` increases by one in commit order, on every node.
//!
//! Correlations: the rows of the keys an append binds are read `FOR UPDATE`; a key nobody has bound cannot be
//! locked, so the bind itself is conditional (it changes a row only if it binds the same topic or has
//! expired) and one that changes nothing means another node bound the key meanwhile: the group is tried
//! again, and then sees the binding.
//!
//! A row whose TTL passed is unknown to readers at once; the sweep (every 30 s, on any node) deletes it later,
//! skipping rows an append holds. A placeholder whose append was refused has `expires_at` 0: never live.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Acquire, Postgres, Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::correlations::{bind, bind_all, find, lock_correlations};
use super::writer::{failure, Failure};
use super::{sql_error, OpenError};
use crate::domain::Timestamp;
use crate::store::topics::{check, json, ms, object, recovery, Checked, Conflict, Recovery, Refused, TopicStore};
use crate::store::{StoreError, StoreHealth};
use crate::topics::{CorrelationKey, Namespaces, NewTopicEvent, SharedChange, TopicEvent, TopicName, TopicState};

const COMMAND_QUEUE: usize = 4096;
const MAX_COMMANDS_PER_GROUP: usize = 256;
/// Reading connections per node (the writer has one of its own).
const READERS: u32 = 4;
/// How often a group that met a concurrent one is tried again before it fails.
const RETRIES: usize = 5;
const SWEEP_EVERY: Duration = Duration::from_secs(30);
const SWEEP_ROWS: i64 = 10_000;

const STATE_COLUMNS: &str = "topic, seq, status, progress, data, updated_at, expires_at";

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
type Appended = Result<Vec<u64>, Refused>;
pub(super) type Correlated = Result<(), Conflict>;

enum Command {
    Append { events: Vec<NewTopicEvent>, reply: Reply<Appended> },
    Correlate { key: CorrelationKey, topic: TopicName, reply: Reply<Correlated> },
    Sweep,
    Shutdown { reply: oneshot::Sender<()> },
}

pub struct PgTopics {
    pool: PgPool,
    writer_pool: PgPool,
    where_: String,
    commands: mpsc::Sender<Command>,
    writer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PgTopics {
    /// Connects, migrates (refusing a schema newer than this build's) and starts the writer. Committed events
    /// go out on `feed`, in this node's commit order.
    pub async fn open(
        url: &str,
        namespaces: Arc<Namespaces>,
        feed: mpsc::Sender<Vec<SharedChange>>,
    ) -> Result<Self, OpenError> {
        let (pool, where_) = super::connect(url, READERS).await?;
        super::migrate(&pool).await?;
        let (writer_pool, _) = super::connect(url, 1).await?;
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let writer = Writer { pool: writer_pool.clone(), conn: None, namespaces, commands: rx, feed };
        let handle = tokio::spawn(writer.run());
        crate::store::topics::every(SWEEP_EVERY, commands.downgrade(), || Command::Sweep);
        tracing::info!(database = %where_, "PostgreSQL topic store open");
        Ok(Self { pool, writer_pool, where_, commands, writer: tokio::sync::Mutex::new(Some(handle)) })
    }

    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

struct Writer {
    pool: PgPool,
    /// The connection kept between groups.
    conn: Option<PoolConnection<Postgres>>,
    namespaces: Arc<Namespaces>,
    commands: mpsc::Receiver<Command>,
    feed: mpsc::Sender<Vec<SharedChange>>,
}

impl Writer {
    async fn run(mut self) {
        while let Some(first) = self.commands.recv().await {
            let mut group = vec![first];
            while group.len() < MAX_COMMANDS_PER_GROUP {
                match self.commands.try_recv() {
                    Ok(cmd) => group.push(cmd),
                    Err(_) => break,
                }
            }
            let (mut appends, mut correlates, mut sweep, mut stop) = (Vec::new(), Vec::new(), false, None);
            for cmd in group {
                match cmd {
                    Command::Append { events, reply } => appends.push((events, reply)),
                    Command::Correlate { key, topic, reply } => correlates.push(((key, topic), reply)),
                    Command::Sweep => sweep = true,
                    Command::Shutdown { reply } => stop = Some(reply),
                }
            }
            if !appends.is_empty() {
                self.commit_appends(appends).await;
            }
            if !correlates.is_empty() {
                self.commit_correlates(correlates).await;
            }
            if sweep {
                if let Err(e) = self.sweep().await {
                    tracing::warn!(error = %e, "could not sweep expired topics");
                }
            }
            if let Some(reply) = stop {
                let _ = reply.send(());
                return;
            }
        }
    }

    async fn commit_appends(&mut self, appends: Vec<(Vec<NewTopicEvent>, Reply<Appended>)>) {
        let started = Instant::now();
        let (events, replies): (Vec<_>, Vec<_>) = appends.into_iter().unzip();
        match self.attempt(&events).await {
            Ok((results, changes)) => self.finish(replies, results, changes).await,
            // The database is not there: trying each alone would only wait out the pool again for each.
            Err(e @ (StoreError::Unavailable(_) | StoreError::Closed)) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(group_error) => {
                if events.len() > 1 {
                    tracing::warn!(error = %group_error, appends = events.len(), "a topic write group failed; retrying each alone");
                }
                for (one, reply) in events.iter().zip(replies) {
                    match self.attempt(std::slice::from_ref(one)).await {
                        Ok((results, changes)) => self.finish(vec![reply], results, changes).await,
                        Err(e) => drop(reply.send(Err(e))),
                    }
                }
            }
        }
        metrics::histogram!("herald_store_commit_seconds", "store" => "topics").record(started.elapsed().as_secs_f64());
    }

    /// Streams a commit's changes, then answers its callers (so a publisher that reads on hearing 201 finds
    /// its event on every live connection's way).
    async fn finish(&self, replies: Vec<Reply<Appended>>, results: Vec<Appended>, changes: Vec<SharedChange>) {
        metrics::counter!("herald_topic_events_appended_total").increment(changes.len() as u64);
        if !changes.is_empty() && self.feed.send(changes).await.is_err() {
            tracing::debug!("the topic feed is closed; committed events are not streamed");
        }
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(Ok(result));
        }
    }

    /// The connection kept from the last transaction, or a new one (the writer's pool has just the one).
    async fn connection(&mut self) -> Result<PoolConnection<Postgres>, StoreError> {
        match self.conn.take() {
            Some(conn) => Ok(conn),
            None => self.pool.acquire().await.map_err(sql_error),
        }
    }

    /// Keeps the connection for the next transaction, unless it failed as unavailable (it may be broken).
    fn keep<T>(&mut self, conn: PoolConnection<Postgres>, result: &Result<T, Failure>) {
        if !matches!(
            result,
            Err(Failure::Fail(StoreError::Unavailable(_)) | Failure::Retry(StoreError::Unavailable(_)))
        ) {
            self.conn = Some(conn);
        }
    }

    /// Runs the appends' transaction, again (after a short, growing pause) when it met a concurrent one.
    async fn attempt(
        &mut self,
        appends: &[Vec<NewTopicEvent>],
    ) -> Result<(Vec<Appended>, Vec<SharedChange>), StoreError> {
        let mut tries = 0;
        loop {
            let mut conn = self.connection().await?;
            let result = appends_transaction(&mut conn, &self.namespaces, appends).await;
            self.keep(conn, &result);
            match result {
                Ok(done) => return Ok(done),
                Err(Failure::Retry(e)) if tries < RETRIES => {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "a topic write group met a concurrent one; trying again");
                    tokio::time::sleep(Duration::from_millis(5 << tries)).await;
                }
                Err(f) => return Err(f.error()),
            }
        }
    }

    /// Binds keys to topics in one transaction; a refused binding leaves the others be.
    async fn commit_correlates(&mut self, correlates: Vec<((CorrelationKey, TopicName), Reply<Correlated>)>) {
        let (bindings, replies): (Vec<_>, Vec<_>) = correlates.into_iter().unzip();
        let mut tries = 0;
        let outcome = loop {
            let mut conn = match self.connection().await {
                Ok(conn) => conn,
                Err(e) => break Err(e),
            };
            let result = bind_all(&mut conn, &self.namespaces, &bindings).await;
            self.keep(conn, &result);
            match result {
                Err(Failure::Retry(_)) if tries < RETRIES => tries += 1,
                other => break other.map_err(Failure::error),
            }
        };
        match outcome {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not store correlations");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Deletes expired topics (their history with them), aged history and expired correlations, a bounded
    /// number of each, skipping topics an append holds.
    async fn sweep(&mut self) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let result = sweep(&mut conn).await;
        self.keep(conn, &result.as_ref().map_err(|e| Failure::Fail(e.clone())));
        result
    }
}

async fn sweep(conn: &mut PoolConnection<Postgres>) -> Result<(), StoreError> {
    let now = Timestamp::now().0;
    let mut tx = conn.begin().await.map_err(sql_error)?;
    let expired: Vec<String> = sqlx::query_scalar(
        "DELETE FROM herald_topics WHERE expires_at <= $1 AND topic IN
             (SELECT topic FROM herald_topics WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING topic",
    )
    .bind(now)
    .bind(SWEEP_ROWS)
    .fetch_all(&mut *tx)
    .await
    .map_err(sql_error)?;
    sqlx::query("DELETE FROM herald_topic_events WHERE topic = ANY($1)")
        .bind(&expired)
        .execute(&mut *tx)
        .await
        .map_err(sql_error)?;
    let aged = sqlx::query(
        "DELETE FROM herald_topic_events WHERE expires_at <= $1 AND (topic, seq) IN
             (SELECT topic, seq FROM herald_topic_events WHERE expires_at <= $1 LIMIT $2)",
    )
    .bind(now)
    .bind(SWEEP_ROWS)
    .execute(&mut *tx)
    .await
    .map_err(sql_error)?
    .rows_affected();
    let correlations = sqlx::query(
        "DELETE FROM herald_correlations WHERE expires_at <= $1 AND (chain_id, tx_hash, kind) IN
             (SELECT chain_id, tx_hash, kind FROM herald_correlations WHERE expires_at <= $1 LIMIT $2)",
    )
    .bind(now)
    .bind(SWEEP_ROWS)
    .execute(&mut *tx)
    .await
    .map_err(sql_error)?
    .rows_affected();
    tx.commit().await.map_err(sql_error)?;
    if !expired.is_empty() || aged > 0 || correlations > 0 {
        metrics::counter!("herald_topics_expired_total").increment(expired.len() as u64);
        tracing::debug!(topics = expired.len(), events = aged, correlations, "swept expired topics and history");
    }
    Ok(())
}

/// The appends of a group in one transaction: lock and read the topics, check each append on what the
/// earlier ones left, write the accepted ones. A refused append writes nothing and leaves the others be.
async fn appends_transaction(
    conn: &mut PoolConnection<Postgres>,
    namespaces: &Namespaces,
    appends: &[Vec<NewTopicEvent>],
) -> Result<(Vec<Appended>, Vec<SharedChange>), Failure> {
    let now = Timestamp::now();
    let mut tx = conn.begin().await.map_err(failure)?;
    let mut states = lock_topics(&mut tx, appends, now).await?;
    let mut bound = lock_correlations(&mut tx, appends, now).await?;
    let mut results = Vec::with_capacity(appends.len());
    let mut accepted: Vec<Checked> = Vec::new();
    for events in appends {
        let checked = check(
            namespaces,
            events,
            now,
            |topic| Ok(states.get(topic).cloned().unwrap_or((None, false))),
            |key| Ok(bound.get(key).cloned()),
        )?;
        match checked {
            Err(refused) => results.push(Err(refused)),
            Ok(checked) => {
                // What the group's later appends see.
                for (topic, state) in &checked.finals {
                    states.insert(topic.clone(), (Some(state.clone()), false));
                }
                for (key, topic) in &checked.correlations {
                    bound.insert(key.clone(), topic.clone());
                }
                results.push(Ok(checked.changes.iter().map(|c| c.event.seq).collect()));
                accepted.push(checked);
            }
        }
    }
    write(&mut tx, namespaces, &accepted, now).await?;
    tx.commit().await.map_err(failure)?;
    let changes = accepted.into_iter().flat_map(|c| c.changes).map(Arc::new).collect();
    Ok((results, changes))
}

/// Locks the row of every topic the appends touch, in name order (making a placeholder for a new one), and
/// returns each topic's live state and whether a stale row is in its way.
async fn lock_topics(
    tx: &mut Transaction<'_, Postgres>,
    appends: &[Vec<NewTopicEvent>],
    now: Timestamp,
) -> Result<HashMap<TopicName, (Option<TopicState>, bool)>, Failure> {
    let mut names: Vec<&str> = appends.iter().flatten().map(|e| e.topic.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let rows = sqlx::query(&format!(
        "INSERT INTO herald_topics (topic, seq, data, updated_at, expires_at)
         SELECT t, 0, '{{}}', 0, 0 FROM unnest($1::text[]) AS t ORDER BY t
         ON CONFLICT (topic) DO UPDATE SET seq = herald_topics.seq
         RETURNING {STATE_COLUMNS}"
    ))
    .bind(&names)
    .fetch_all(&mut **tx)
    .await
    .map_err(failure)?;
    let mut states = HashMap::with_capacity(rows.len());
    for row in &rows {
        let state = state_row(row)?;
        let entry = if state.expires_at > now { (Some(state.clone()), false) } else { (None, true) };
        states.insert(state.topic, entry);
    }
    Ok(states)
}

/// Writes the accepted appends: stale history of restarted topics goes first, then the bindings, the
/// events, the states, and the history trimmed to each namespace's bound.
async fn write(
    tx: &mut Transaction<'_, Postgres>,
    namespaces: &Namespaces,
    accepted: &[Checked],
    now: Timestamp,
) -> Result<(), Failure> {
    let restarted: Vec<&str> = accepted.iter().flat_map(|c| &c.restarted).map(TopicName::as_str).collect();
    if !restarted.is_empty() {
        sqlx::query("DELETE FROM herald_topic_events WHERE topic = ANY($1)")
            .bind(&restarted)
            .execute(&mut **tx)
            .await
            .map_err(failure)?;
    }
    for (key, topic) in accepted.iter().flat_map(|c| &c.correlations) {
        if !bind(tx, namespaces, key, topic, now).await? {
            return Err(Failure::Retry(StoreError::Unavailable("another node bound a correlation meanwhile".into())));
        }
    }
    let changes: Vec<_> = accepted.iter().flat_map(|c| &c.changes).collect();
    if changes.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO herald_topic_events (topic, seq, type, status, progress, data, at, expires_at)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::smallint[], $6::text[],
                              $7::bigint[], $8::bigint[])",
    )
    .bind(changes.iter().map(|c| c.topic.as_str()).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.event.seq as i64).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.event.kind.as_str()).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.event.status.as_deref()).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.event.progress.map(i16::from)).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| json(&c.event.data)).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.event.at.0).collect::<Vec<_>>())
    .bind(
        changes
            .iter()
            .map(|c| c.event.at.0.saturating_add(ms(namespaces.of(&c.topic).history_age)))
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await
    .map_err(failure)?;
    // Each topic's newest state (a later append of the group supersedes an earlier one's).
    let mut finals: HashMap<&TopicName, &TopicState> = HashMap::new();
    for checked in accepted {
        for (topic, state) in &checked.finals {
            finals.insert(topic, state);
        }
    }
    let finals: Vec<&TopicState> = finals.into_values().collect();
    sqlx::query(
        "UPDATE herald_topics t SET seq = u.seq, status = u.status, progress = u.progress, data = u.data,
             updated_at = u.updated_at, expires_at = u.expires_at
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::smallint[], $5::text[], $6::bigint[], $7::bigint[])
             AS u(topic, seq, status, progress, data, updated_at, expires_at)
         WHERE t.topic = u.topic",
    )
    .bind(finals.iter().map(|s| s.topic.as_str()).collect::<Vec<_>>())
    .bind(finals.iter().map(|s| s.seq as i64).collect::<Vec<_>>())
    .bind(finals.iter().map(|s| s.status.as_deref()).collect::<Vec<_>>())
    .bind(finals.iter().map(|s| s.progress.map(i16::from)).collect::<Vec<_>>())
    .bind(finals.iter().map(|s| json(&s.data)).collect::<Vec<_>>())
    .bind(finals.iter().map(|s| s.updated_at.0).collect::<Vec<_>>())
    .bind(finals.iter().map(|s| s.expires_at.0).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await
    .map_err(failure)?;
    let trims: Vec<(&str, i64)> = finals
        .iter()
        .filter_map(|s| {
            let keep = namespaces.of(&s.topic).history_events as u64;
            (s.seq > keep).then(|| (s.topic.as_str(), (s.seq - keep) as i64))
        })
        .collect();
    if !trims.is_empty() {
        sqlx::query(
            "DELETE FROM herald_topic_events e USING unnest($1::text[], $2::bigint[]) AS u(topic, upto)
             WHERE e.topic = u.topic AND e.seq <= u.upto",
        )
        .bind(trims.iter().map(|(t, _)| *t).collect::<Vec<_>>())
        .bind(trims.iter().map(|(_, upto)| *upto).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .map_err(failure)?;
    }
    Ok(())
}

pub(super) fn topic_of(text: String) -> Result<TopicName, StoreError> {
    TopicName::parse(&text).map_err(|e| StoreError::Internal(format!("a stored row names a bad topic: {e}")))
}

fn progress(value: Option<i16>) -> Option<u8> {
    value.and_then(|p| u8::try_from(p).ok())
}

fn state_row(row: &PgRow) -> Result<TopicState, StoreError> {
    Ok(TopicState {
        topic: topic_of(row.try_get("topic").map_err(sql_error)?)?,
        seq: row.try_get::<i64, _>("seq").map_err(sql_error)? as u64,
        status: row.try_get("status").map_err(sql_error)?,
        progress: progress(row.try_get("progress").map_err(sql_error)?),
        data: object(&row.try_get::<String, _>("data").map_err(sql_error)?),
        updated_at: Timestamp(row.try_get("updated_at").map_err(sql_error)?),
        expires_at: Timestamp(row.try_get("expires_at").map_err(sql_error)?),
    })
}

fn event_row(row: &PgRow) -> Result<TopicEvent, StoreError> {
    Ok(TopicEvent {
        seq: row.try_get::<i64, _>("seq").map_err(sql_error)? as u64,
        kind: row.try_get("type").map_err(sql_error)?,
        status: row.try_get("status").map_err(sql_error)?,
        progress: progress(row.try_get("progress").map_err(sql_error)?),
        data: object(&row.try_get::<String, _>("data").map_err(sql_error)?),
        at: Timestamp(row.try_get("at").map_err(sql_error)?),
    })
}

async fn live_state<'c>(
    conn: impl sqlx::Executor<'c, Database = Postgres>,
    topic: &TopicName,
    now: Timestamp,
) -> Result<Option<TopicState>, StoreError> {
    let row = sqlx::query(&format!("SELECT {STATE_COLUMNS} FROM herald_topics WHERE topic = $1 AND expires_at > $2"))
        .bind(topic.as_str())
        .bind(now.0)
        .fetch_optional(conn)
        .await
        .map_err(sql_error)?;
    row.as_ref().map(state_row).transpose()
}

#[async_trait]
impl TopicStore for PgTopics {
    async fn append(&self, events: Vec<NewTopicEvent>) -> Result<Appended, StoreError> {
        self.write(|reply| Command::Append { events, reply }).await
    }

    async fn state(&self, topic: &TopicName) -> Result<Option<TopicState>, StoreError> {
        live_state(&self.pool, topic, Timestamp::now()).await
    }

    async fn recover(&self, topic: &TopicName, since: Option<u64>, limit: usize) -> Result<Recovery, StoreError> {
        let now = Timestamp::now();
        // The state and the events from one view.
        let mut tx = self.pool.begin().await.map_err(sql_error)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(sql_error)?;
        let state = live_state(&mut *tx, topic, now).await?;
        let (state, since) = match recovery::from_state(state, since) {
            Ok(recovery) => return Ok(recovery),
            Err(rest) => rest,
        };
        let rows = sqlx::query(
            "SELECT seq, type, status, progress, data, at FROM herald_topic_events
             WHERE topic = $1 AND seq > $2 AND expires_at > $3 ORDER BY seq LIMIT $4",
        )
        .bind(topic.as_str())
        .bind(since as i64)
        .bind(now.0)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_error)?;
        let events = rows.iter().map(event_row).collect::<Result<Vec<_>, _>>()?;
        tx.commit().await.map_err(sql_error)?;
        Ok(recovery::with_events(state, since, events))
    }

    async fn correlate(&self, key: CorrelationKey, topic: TopicName) -> Result<Correlated, StoreError> {
        self.write(|reply| Command::Correlate { key, topic, reply }).await
    }

    async fn find_correlation(&self, key: &CorrelationKey) -> Result<Option<TopicName>, StoreError> {
        find(&self.pool, key, Timestamp::now()).await
    }

    async fn live_topics(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM herald_topics WHERE expires_at > $1")
            .bind(Timestamp::now().0)
            .fetch_one(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(count as u64)
    }

    async fn positions(&self, topics: &[TopicName]) -> Result<Vec<u64>, StoreError> {
        let names: Vec<&str> = topics.iter().map(TopicName::as_str).collect();
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT topic, seq FROM herald_topics WHERE topic = ANY($1) AND expires_at > $2")
                .bind(&names)
                .bind(Timestamp::now().0)
                .fetch_all(&self.pool)
                .await
                .map_err(sql_error)?;
        let found: HashMap<String, i64> = rows.into_iter().collect();
        Ok(names.iter().map(|name| found.get(*name).map_or(0, |seq| *seq as u64)).collect())
    }

    async fn health(&self) -> StoreHealth {
        super::health(&self.pool, &self.where_, self.commands.is_closed(), "topic writer").await
    }

    async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = done.await;
        }
        if let Some(handle) = self.writer.lock().await.take() {
            let _ = handle.await;
        }
        self.pool.close().await;
        self.writer_pool.close().await;
    }
}
