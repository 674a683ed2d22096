//! The node's writer: one task commits every write of this node in groups, one transaction per group.
//!
//! As with SQLite, each write is a [`Command`] on one channel; the task takes the first command and everything
//! queued behind it (up to a bound) and runs them in one transaction. Consecutive creates are written
//! together: one statement locks their users, one inserts every row (`INSERT … SELECT FROM unnest`), one
//! moves the users' newest ids and counts. If the group fails, each command is tried again on its own, so
//! only a failing one fails (a lost connection fails them all as unavailable).
//!
//! **Order across nodes.** Several nodes write to one database, each through its own writer, so a
//! notification id cannot simply come from one generator in commit order. What clients rely on is per user:
//! what a client has seen (by `since`, or by the snapshot's high-water mark) must be a prefix of that user's
//! commits. So every transaction first locks the `herald_users` rows of every user its commands touch, in
//! one statement and in user order (an upsert, so a new user's row is made and locked the same way), and reads
//! each user's newest id; each new notification gets an id above it (and above this node's previous one). The
//! lock is held until commit, so the next transaction for that user, on any node, reads the id this one
//! wrote: per user, ids increase in commit order, and a reader that has seen an id has seen every id below
//! it. Because the user rows are locked first and in one order, before any notification row, two groups
//! cannot deadlock on them; `mark_all_read` holding the same lock cannot miss a notification being created
//! beside it and leave the unread count wrong.
//!
//! **Creates alone, in one statement.** Most groups are creates only; they take a shorter way to the same
//! order (see `super::creates::insert_at_once`): ids first, then one statement that locks and moves the users and inserts
//! the rows, three round trips in all instead of five. A group it cannot write that way is rolled back and
//! goes the general way.
//!
//! This node's committed changes go out on the feed in commit order, because one task commits them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::{Acquire, Postgres, Row, Transaction};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::creates::{insert_at_once, NewRows};
use super::schema::{self, COLUMNS, FROM};
use super::sql_error;
use crate::domain::{InboxEvent, NewNotification, Notification, NotificationId, Timestamp, UserId};
use crate::store::command::{answer, Output};
pub use crate::store::command::{Command, Reply};
use crate::store::{InsertOutcome, MarkReadOutcome, StoreError};

/// How many commands one transaction takes at most.
const MAX_COMMANDS_PER_GROUP: usize = 512;
/// How many notifications one transaction creates at most (a command is never split).
const MAX_ROWS_PER_GROUP: usize = 8192;
/// How often a group that hit a deadlock or a serialization failure is tried again before it fails.
const RETRIES: usize = 3;

/// Delivered marks waiting for the writer; shared with the store handle.
pub type PendingDelivered = Arc<Mutex<Vec<(UserId, NotificationId)>>>;

pub struct Writer {
    pub pool: PgPool,
    pub commands: mpsc::Receiver<Command>,
    pub feed: mpsc::Sender<Vec<InboxEvent>>,
    pub ids: NodeIds,
    /// The connection kept between groups.
    pub conn: Option<PoolConnection<Postgres>>,
}

fn rows(cmd: &Command) -> usize {
    match cmd {
        Command::Insert { items, .. } => items.len(),
        _ => 1,
    }
}

/// Why a transaction failed, and so what the writer does next.
pub(super) enum Failure {
    /// A deadlock or serialization failure: the same transaction may succeed if tried again.
    Retry(StoreError),
    /// Any other error.
    Fail(StoreError),
}

impl Failure {
    pub(super) fn error(self) -> StoreError {
        match self {
            Failure::Retry(e) | Failure::Fail(e) => e,
        }
    }
}

pub(super) fn failure(e: sqlx::Error) -> Failure {
    let retryable = e.as_database_error().and_then(|d| d.code()).is_some_and(|code| code == "40P01" || code == "40001");
    if retryable {
        Failure::Retry(sql_error(e))
    } else {
        Failure::Fail(sql_error(e))
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Fail(e)
    }
}

impl Writer {
    pub async fn run(mut self) {
        while let Some(first) = self.commands.recv().await {
            let mut weight = rows(&first);
            let mut group = vec![first];
            while group.len() < MAX_COMMANDS_PER_GROUP && weight < MAX_ROWS_PER_GROUP {
                match self.commands.try_recv() {
                    Ok(cmd) => {
                        weight += rows(&cmd);
                        group.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let size = group.len();
            let stop = self.commit_group(group).await;
            metrics::histogram!("herald_store_commit_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("herald_store_group_size").record(size as f64);
            if let Some(reply) = stop {
                let _ = reply.send(());
                return;
            }
        }
    }

    async fn commit_group(&mut self, group: Vec<Command>) -> Option<oneshot::Sender<()>> {
        let mut stop = None;
        let mut work = Vec::with_capacity(group.len());
        for cmd in group {
            match cmd {
                Command::Shutdown { reply } => stop = Some(reply),
                Command::Tick => {}
                other => work.push(other),
            }
        }
        if work.is_empty() {
            return stop;
        }
        match self.attempt(&work).await {
            Ok((outputs, events)) => self.deliver(work.into_iter().zip(outputs).collect(), events).await,
            // The database is not there: trying each alone would only wait out the pool again for each.
            Err(Failure::Fail(e @ (StoreError::Unavailable(_) | StoreError::Closed))) => {
                for cmd in work {
                    answer(cmd, Err(e.clone()));
                }
            }
            Err(group_error) if work.len() > 1 => {
                let group_error = group_error.error();
                tracing::warn!(error = %group_error, commands = work.len(), "a write group failed; retrying each alone");
                for cmd in work {
                    match self.attempt(std::slice::from_ref(&cmd)).await {
                        Ok((mut outputs, events)) => match outputs.pop() {
                            Some(output) => self.deliver(vec![(cmd, output)], events).await,
                            None => answer(cmd, Err(StoreError::Internal("a command produced no output".into()))),
                        },
                        Err(e) => answer(cmd, Err(e.error())),
                    }
                }
            }
            Err(e) => {
                let e = e.error();
                for cmd in work {
                    answer(cmd, Err(e.clone()));
                }
            }
        }
        stop
    }

    /// Runs the transaction, again (after a short, growing pause) after a deadlock or a serialization failure;
    /// past [`RETRIES`] the last failure is returned as it is.
    async fn attempt(&mut self, work: &[Command]) -> Result<(Vec<Output>, Vec<InboxEvent>), Failure> {
        let mut tries = 0;
        loop {
            match self.transaction(work).await {
                Ok(done) => return Ok(done),
                Err(Failure::Retry(e)) if tries < RETRIES => {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "a write group met a concurrent one; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(5 << tries)).await;
                }
                Err(f) => return Err(f),
            }
        }
    }

    /// Runs commands in one transaction on the writer's connection (see [`Self::run_group`]).
    async fn transaction(&mut self, work: &[Command]) -> Result<(Vec<Output>, Vec<InboxEvent>), Failure> {
        // The writer keeps its connection from group to group: returning it to the pool costs a ping each time.
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await.map_err(failure)?,
        };
        let result = Self::run_group(&mut conn, work, &mut self.ids).await;
        // A connection that failed as unavailable may be broken: the next group takes a fresh one.
        if !matches!(
            &result,
            Err(Failure::Fail(StoreError::Unavailable(_)) | Failure::Retry(StoreError::Unavailable(_)))
        ) {
            self.conn = Some(conn);
        }
        result
    }

    /// Sends a committed group's changes to the fanout, then answers its callers.
    async fn deliver(&self, answered: Vec<(Command, Output)>, events: Vec<InboxEvent>) {
        if !events.is_empty() {
            // Waits when the fanout is behind: the backpressure that keeps memory bounded. An error means the
            // fanout has stopped (shutdown), and there is no one left to push to.
            let _ = self.feed.send(events).await;
        }
        for (cmd, output) in answered {
            answer(cmd, Ok(output));
        }
    }

    /// Runs commands in one transaction on `conn` and commits it; on any error nothing is kept.
    async fn run_group(
        conn: &mut PoolConnection<Postgres>,
        work: &[Command],
        ids: &mut NodeIds,
    ) -> Result<(Vec<Output>, Vec<InboxEvent>), Failure> {
        if work.iter().all(|c| matches!(c, Command::Insert { .. })) {
            if let Some(done) = insert_at_once(conn, work, ids).await? {
                return Ok(done);
            }
        }
        let now = Timestamp::now();
        let mut tx = conn.begin().await.map_err(failure)?;
        let mut users: Vec<&str> = work
            .iter()
            .flat_map(|c| -> Box<dyn Iterator<Item = &str> + '_> {
                match c {
                    Command::Insert { items, .. } => Box::new(items.iter().map(|n| n.user_id.as_str())),
                    Command::MarkRead { user, .. } | Command::MarkAllRead { user, .. } => {
                        Box::new(std::iter::once(user.as_str()))
                    }
                    Command::Tick | Command::Shutdown { .. } => Box::new(std::iter::empty()),
                }
            })
            .collect();
        users.sort_unstable();
        users.dedup();
        let mut newest = lock_users(&mut tx, &users).await?;
        let first_seq: Vec<(String, u64)> = newest.iter().map(|(u, row)| (u.clone(), row.seq)).collect();
        let mut outputs = Vec::with_capacity(work.len());
        let mut events = Vec::new();
        let mut i = 0;
        while i < work.len() {
            match &work[i] {
                Command::Insert { .. } => {
                    // Consecutive creates go in together; anything else keeps its place between them.
                    let run = work[i..].iter().take_while(|c| matches!(c, Command::Insert { .. })).count();
                    let batches: Vec<&[NewNotification]> = work[i..i + run]
                        .iter()
                        .map(|c| match c {
                            Command::Insert { items, .. } => items.as_slice(),
                            _ => &[],
                        })
                        .collect();
                    let created = insert(&mut tx, &batches, &mut newest, ids, &mut events).await?;
                    outputs.extend(created.into_iter().map(Output::Inserted));
                    i += run;
                }
                Command::MarkRead { user, ids, .. } => {
                    outputs.push(Output::Read(mark_read(&mut tx, user, ids, now, &mut newest, &mut events).await?));
                    i += 1;
                }
                Command::MarkAllRead { user, .. } => {
                    outputs.push(Output::AllRead(mark_all_read(&mut tx, user, now, &mut newest, &mut events).await?));
                    i += 1;
                }
                Command::Tick | Command::Shutdown { .. } => i += 1,
            }
        }
        record_seq(&mut tx, &first_seq, &newest).await?;
        tx.commit().await.map_err(failure)?;
        Ok((outputs, events))
    }
}

/// Records the delivered marks waiting, in one statement of their own, off the writer's path: they are
/// informational, so a failure is only logged (and the marks dropped), and they never hold up a write. Run by
/// the store's tick task.
pub async fn record_delivered(pool: &PgPool, delivered: &PendingDelivered) {
    let mut marks = match delivered.lock() {
        Ok(mut pending) => std::mem::take(&mut *pending),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    };
    if marks.is_empty() {
        return;
    }
    // In key order, so two nodes marking the same rows take their locks in the same order.
    marks.sort_unstable();
    marks.dedup();
    let users: Vec<&str> = marks.iter().map(|(u, _)| u.as_str()).collect();
    let ids: Vec<Uuid> = marks.iter().map(|(_, id)| schema::uuid(*id)).collect();
    // The first delivery is the one recorded; later ones (another tab, a reconnect) are ignored.
    let result = sqlx::query(
        "INSERT INTO deliveries (user_id, id, at) SELECT v.user_id, v.id, $1 \
         FROM unnest($2::text[], $3::uuid[]) AS v(user_id, id) ON CONFLICT DO NOTHING",
    )
    .bind(Timestamp::now().0)
    .bind(&users)
    .bind(&ids)
    .execute(pool)
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, marks = marks.len(), "could not record delivered notifications");
    }
}

/// This node's ids: increasing on this node, and above each user's newest id wherever it was made.
pub struct NodeIds {
    generator: ulid::Generator,
    last: ulid::Ulid,
}

impl NodeIds {
    pub fn new() -> Self {
        Self { generator: ulid::Generator::new(), last: ulid::Ulid::nil() }
    }

    /// The next id, above `floor` (the user's newest).
    pub fn next_above(&mut self, floor: Option<ulid::Ulid>) -> Result<ulid::Ulid, StoreError> {
        let exhausted = || StoreError::Internal("the id space is exhausted".into());
        let mut id = self.generator.generate().map_err(|e| StoreError::Internal(e.to_string()))?;
        if id <= self.last {
            id = self.last.increment().ok_or_else(exhausted)?;
        }
        if let Some(floor) = floor.filter(|f| id <= *f) {
            id = floor.increment().ok_or_else(exhausted)?;
        }
        self.last = id;
        Ok(id)
    }
}

impl Default for NodeIds {
    fn default() -> Self {
        Self::new()
    }
}

/// A locked user's row as this transaction has changed it so far.
struct UserRow {
    /// The newest notification id.
    last: Option<ulid::Ulid>,
    /// The user's events so far (see `InboxEvent`'s `seq`).
    seq: u64,
}

impl UserRow {
    /// The next event's place in the user's order.
    fn next_seq(&mut self) -> Option<u64> {
        self.seq += 1;
        Some(self.seq)
    }
}

fn row_of<'a>(newest: &'a mut HashMap<String, UserRow>, user: &str) -> Result<&'a mut UserRow, Failure> {
    newest
        .get_mut(user)
        .ok_or_else(|| Failure::Fail(StoreError::Internal(format!("the row of user {user:?} was not locked"))))
}

/// Writes the users' new event counts, for those that had events in this transaction.
async fn record_seq(
    tx: &mut Transaction<'_, Postgres>,
    before: &[(String, u64)],
    newest: &HashMap<String, UserRow>,
) -> Result<(), Failure> {
    let (users, seqs): (Vec<&str>, Vec<i64>) = before
        .iter()
        .filter_map(|(user, was)| {
            let now = newest.get(user)?.seq;
            (now != *was).then(|| (user.as_str(), i64::try_from(now).unwrap_or(i64::MAX)))
        })
        .unzip();
    if users.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE herald_users u SET seq = v.seq FROM unnest($1::text[], $2::int8[]) AS v(user_id, seq) \
         WHERE u.user_id = v.user_id",
    )
    .bind(&users)
    .bind(&seqs)
    .execute(&mut **tx)
    .await
    .map_err(failure)?;
    Ok(())
}

/// Locks the users' rows, making those that are new, in one statement and in the order given (sorted), and
/// returns each one's newest id and event count. An upsert rather than `SELECT … FOR UPDATE` then an insert of the missing:
/// that pair takes locks in two passes, and two groups doing it at once can deadlock.
async fn lock_users(tx: &mut Transaction<'_, Postgres>, users: &[&str]) -> Result<HashMap<String, UserRow>, Failure> {
    let mut newest = HashMap::with_capacity(users.len());
    if users.is_empty() {
        return Ok(newest);
    }
    // `ORDER BY` feeds the rows in user order, and each row is locked as it is inserted or updated. The
    // update changes no indexed value, so it stays a heap-only tuple update.
    let rows = sqlx::query(
        "INSERT INTO herald_users AS u (user_id) SELECT t.user_id FROM unnest($1::text[]) AS t(user_id) \
         ORDER BY t.user_id ON CONFLICT (user_id) DO UPDATE SET total = u.total RETURNING user_id, last_id, seq",
    )
    .bind(users)
    .fetch_all(&mut **tx)
    .await
    .map_err(failure)?;
    read_newest(&rows, &mut newest)?;
    if let Some(lost) = users.iter().find(|u| !newest.contains_key(**u)) {
        return Err(Failure::Fail(StoreError::Internal(format!("the row of user {lost:?} was not locked"))));
    }
    Ok(newest)
}

fn read_newest(rows: &[sqlx::postgres::PgRow], newest: &mut HashMap<String, UserRow>) -> Result<(), StoreError> {
    for row in rows {
        let user: String = row.try_get(0).map_err(sql_error)?;
        let last: Option<Uuid> = row.try_get(1).map_err(sql_error)?;
        let seq: i64 = row.try_get(2).map_err(sql_error)?;
        newest.insert(user, UserRow { last: last.map(|u| ulid::Ulid(u.as_u128())), seq: seq.max(0) as u64 });
    }
    Ok(())
}

/// Creates the notifications of several commands; returns each command's outcomes. `newest` holds each
/// user's newest id, their rows locked by this transaction.
async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    batches: &[&[NewNotification]],
    newest: &mut HashMap<String, UserRow>,
    ids: &mut NodeIds,
    events: &mut Vec<InboxEvent>,
) -> Result<Vec<Vec<InsertOutcome>>, Failure> {
    // The keys seen before; with the users locked, no other transaction can add one meanwhile.
    let (key_users, keys): (Vec<&str>, Vec<&str>) = batches
        .iter()
        .flat_map(|b| b.iter())
        .filter_map(|n| n.idempotency_key.as_ref().map(|k| (n.user_id.as_str(), k.as_str())))
        .unzip();
    let mut known: HashMap<(String, String), Arc<Notification>> = HashMap::new();
    if !keys.is_empty() {
        let found = sqlx::query(&format!(
            "SELECT {COLUMNS}, n.idempotency_key FROM {FROM} \
             WHERE (n.user_id, n.idempotency_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
        ))
        .bind(&key_users)
        .bind(&keys)
        .fetch_all(&mut **tx)
        .await
        .map_err(failure)?;
        for row in &found {
            let key: String = row.try_get("idempotency_key").map_err(sql_error)?;
            let n = schema::from_row(row)?;
            known.insert((n.user_id.as_str().to_owned(), key), Arc::new(n));
        }
    }

    let mut rows = NewRows::default();
    // Per user: how many this transaction creates.
    let mut created_per_user: HashMap<&str, i64> = HashMap::new();
    let mut outcomes = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut batch_outcomes = Vec::with_capacity(batch.len());
        for item in batch.iter() {
            let key = item.idempotency_key.as_ref().map(|k| (item.user_id.as_str().to_owned(), k.as_str().to_owned()));
            if let Some(existing) = key.as_ref().and_then(|k| known.get(k)) {
                batch_outcomes.push(InsertOutcome::Existing(existing.clone()));
                continue;
            }
            let row = row_of(newest, item.user_id.as_str())?;
            let ulid = ids.next_above(row.last)?;
            row.last = Some(ulid);
            let seq = row.next_seq();
            let id = NotificationId::from_ulid(ulid);
            let notification = Arc::new(Notification::created(item, id));
            rows.push(item, &notification);
            *created_per_user.entry(item.user_id.as_str()).or_default() += 1;
            if let Some(key) = key {
                // A second item with the same key, later in this transaction, gets this one.
                known.insert(key, notification.clone());
            }
            events.push(InboxEvent::Created { notification: notification.clone(), received_at: item.received_at, seq });
            batch_outcomes.push(InsertOutcome::Created(notification));
        }
        outcomes.push(batch_outcomes);
    }
    if rows.ids.is_empty() {
        return Ok(outcomes);
    }
    let (changed_users, counts): (Vec<&str>, Vec<i64>) = created_per_user.into_iter().unzip();
    let last_ids: Vec<Uuid> = changed_users
        .iter()
        .map(|u| newest.get(*u).and_then(|row| row.last).map_or(Uuid::nil(), |id| Uuid::from_u128(id.0)))
        .collect();
    // The rows and the users' newest ids and counts in one statement (one round trip): a data-modifying
    // `WITH` runs whether or not anything reads it.
    rows.bind_to(sqlx::query(
        "WITH added AS (INSERT INTO notifications \
         (user_id, id, type, title, message, data, created_at, idempotency_key) \
         SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::int8[], $8::text[])) \
         UPDATE herald_users u SET last_id = v.last_id, total = u.total + v.n, unread = u.unread + v.n \
         FROM unnest($9::text[], $10::uuid[], $11::int8[]) AS v(user_id, last_id, n) WHERE u.user_id = v.user_id",
    ))
    .bind(&changed_users)
    .bind(&last_ids)
    .bind(&counts)
    .execute(&mut **tx)
    .await
    .map_err(failure)?;
    Ok(outcomes)
}

async fn mark_read(
    tx: &mut Transaction<'_, Postgres>,
    user: &UserId,
    targets: &[NotificationId],
    now: Timestamp,
    newest: &mut HashMap<String, UserRow>,
    events: &mut Vec<InboxEvent>,
) -> Result<MarkReadOutcome, Failure> {
    let wanted: Vec<Uuid> = targets.iter().map(|id| schema::uuid(*id)).collect();
    let changed = sqlx::query(
        "UPDATE notifications SET read_at = $3 WHERE user_id = $1 AND id = ANY($2) AND read_at IS NULL RETURNING id",
    )
    .bind(user.as_str())
    .bind(&wanted)
    .bind(now.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(failure)?;
    let mut newly: Vec<NotificationId> = Vec::with_capacity(changed.len());
    for row in &changed {
        newly.push(schema::id(row.try_get(0).map_err(sql_error)?));
    }
    let found = sqlx::query(&format!("SELECT {COLUMNS} FROM {FROM} WHERE n.user_id = $1 AND n.id = ANY($2)"))
        .bind(user.as_str())
        .bind(&wanted)
        .fetch_all(&mut **tx)
        .await
        .map_err(failure)?;
    let mut by_id = HashMap::with_capacity(found.len());
    for row in &found {
        let n = schema::from_row(row)?;
        by_id.insert(n.id, n);
    }
    // In the order asked, as SQLite answers.
    let mut outcome = MarkReadOutcome::default();
    for id in targets {
        if let Some(n) = by_id.get(id) {
            outcome.found.push(n.clone());
        }
        if let Some(at) = newly.iter().position(|x| x == id) {
            outcome.newly_read.push(newly.swap_remove(at));
        }
    }
    if !outcome.newly_read.is_empty() {
        sqlx::query("UPDATE herald_users SET unread = greatest(unread - $2, 0) WHERE user_id = $1")
            .bind(user.as_str())
            .bind(outcome.newly_read.len() as i64)
            .execute(&mut **tx)
            .await
            .map_err(failure)?;
        let seq = row_of(newest, user.as_str())?.next_seq();
        events.push(InboxEvent::Read { user_id: user.clone(), ids: outcome.newly_read.clone(), seq });
    }
    Ok(outcome)
}

async fn mark_all_read(
    tx: &mut Transaction<'_, Postgres>,
    user: &UserId,
    now: Timestamp,
    newest: &mut HashMap<String, UserRow>,
    events: &mut Vec<InboxEvent>,
) -> Result<u64, Failure> {
    // The user's row is locked (see `lock_users`): a create committing beside this is either wholly before it
    // (and marked here) or wholly after it (and counted unread after the reset).
    let changed = sqlx::query("UPDATE notifications SET read_at = $2 WHERE user_id = $1 AND read_at IS NULL")
        .bind(user.as_str())
        .bind(now.0)
        .execute(&mut **tx)
        .await
        .map_err(failure)?
        .rows_affected();
    sqlx::query("UPDATE herald_users SET unread = 0 WHERE user_id = $1")
        .bind(user.as_str())
        .execute(&mut **tx)
        .await
        .map_err(failure)?;
    // Sent even when nothing changed, so a tab that missed an update converges.
    let seq = row_of(newest, user.as_str())?.next_seq();
    events.push(InboxEvent::ReadAll { user_id: user.clone(), seq });
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::NodeIds;

    #[test]
    fn ids_rise_above_the_users_newest_and_the_nodes_last() {
        let mut ids = NodeIds::new();
        let first = ids.next_above(None).expect("an id");
        let second = ids.next_above(None).expect("an id");
        assert!(second > first);
        // Another node's clock ran ahead: this node's next id for that user still comes after it.
        let ahead = ulid::Ulid::from_parts(first.timestamp_ms() + 60_000, 7);
        let third = ids.next_above(Some(ahead)).expect("an id");
        assert!(third > ahead);
        assert!(ids.next_above(None).expect("an id") > third);
    }
}
