//! Creates, column by column, and the one-statement path for a group of creates only.
//!
//! Both write paths hand PostgreSQL a run of new notifications as eight arrays (`NewRows`) for
//! `INSERT … SELECT FROM unnest`. A group that holds only creates takes the shorter way here
//! (`insert_at_once`); `super::writer` runs every other group, and this one's fallbacks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Acquire, Postgres, Row};
use uuid::Uuid;

use super::schema;
use super::sql_error;
use super::writer::{failure, Failure, NodeIds};
use crate::domain::{InboxEvent, NewNotification, Notification, NotificationId};
use crate::store::command::{Command, Output};
use crate::store::InsertOutcome;

/// The rows one run of creates adds, column by column, for `unnest`.
#[derive(Default)]
pub(super) struct NewRows<'a> {
    pub(super) users: Vec<&'a str>,
    pub(super) ids: Vec<Uuid>,
    pub(super) kinds: Vec<&'a str>,
    pub(super) titles: Vec<Option<&'a str>>,
    pub(super) messages: Vec<Option<&'a str>>,
    pub(super) data: Vec<&'a str>,
    pub(super) created: Vec<i64>,
    pub(super) keys: Vec<Option<&'a str>>,
}

impl<'a> NewRows<'a> {
    /// Adds the row of `item`, created as `notification`.
    pub(super) fn push(&mut self, item: &'a NewNotification, notification: &Notification) {
        self.users.push(item.user_id.as_str());
        self.ids.push(schema::uuid(notification.id));
        self.kinds.push(item.kind.as_str());
        self.titles.push(item.title.as_deref());
        self.messages.push(item.message.as_deref());
        self.data.push(item.data.get());
        self.created.push(notification.created_at.0);
        self.keys.push(item.idempotency_key.as_ref().map(|k| k.as_str()));
    }

    /// Binds the eight columns as `$1`…`$8`, in the order of `INSERT INTO notifications (user_id, id, type,
    /// title, message, data, created_at, idempotency_key)`.
    pub(super) fn bind_to<'q>(&'q self, query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(&self.users)
            .bind(&self.ids)
            .bind(&self.kinds)
            .bind(&self.titles)
            .bind(&self.messages)
            .bind(&self.data)
            .bind(&self.created)
            .bind(&self.keys)
    }
}

/// The statement of [`insert_at_once`]; `{conflict}` is where the keyed variant skips a taken key.
macro_rules! insert_at_once_sql {
    ($conflict:literal) => {
        concat!(
            "WITH locked AS (INSERT INTO herald_users AS u (user_id, last_id, total, unread, seq) ",
            "SELECT v.user_id, v.last_id, v.n, v.n, v.n FROM unnest($9::text[], $10::uuid[], $11::int8[]) ",
            "AS v(user_id, last_id, n) ORDER BY v.user_id ",
            "ON CONFLICT (user_id) DO UPDATE SET last_id = excluded.last_id, total = u.total + excluded.total, ",
            "unread = u.unread + excluded.unread, seq = u.seq + excluded.seq ",
            "WHERE u.last_id IS NULL OR u.last_id < $12 RETURNING u.user_id, u.seq), ",
            "added AS (INSERT INTO notifications ",
            "(user_id, id, type, title, message, data, created_at, idempotency_key) ",
            "SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], ",
            "$7::int8[], $8::text[]) WHERE (SELECT count(*) FROM locked) = $13 ",
            $conflict,
            " RETURNING 1) SELECT user_id, seq, (SELECT count(*) FROM added) FROM locked"
        )
    };
}
const INSERT_AT_ONCE: &str = insert_at_once_sql!("");
const INSERT_AT_ONCE_KEYED: &str =
    insert_at_once_sql!("ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING");

/// A group of creates only, in one statement: the fast path, three round trips (BEGIN, the statement,
/// COMMIT) where the general one takes five, and one new version of each user's row instead of three.
///
/// The ids are made first, all above the group's first id `G`, before any lock is held; the statement then
/// locks the users' rows in user order as it moves their counts (an upsert, so new users' rows are made the
/// same way), but only where the user's newest id is below `G`: then every new id is above it, the order
/// `run_group` documents. Where it is not (another node's clock runs ahead, or it committed for the user
/// since), or an idempotency key is already taken, the transaction is rolled back and `None` returned, and
/// the group goes the general way, which locks first and reads what it needs.
///
/// The rows are inserted only when every user's row was taken (`= $13`, the number of users), never when
/// some were: a user skipped because another node committed for them meanwhile may already hold one of
/// this group's ids (that node's general path numbers on from the user's newest id, which can be this
/// node's next), and inserting the group's rows anyway would hit the primary key instead of falling back.
pub(super) async fn insert_at_once(
    conn: &mut PoolConnection<Postgres>,
    work: &[Command],
    ids: &mut NodeIds,
) -> Result<Option<(Vec<Output>, Vec<InboxEvent>)>, Failure> {
    let mut rows = NewRows::default();
    let mut made: Vec<Vec<Arc<Notification>>> = Vec::with_capacity(work.len());
    // Per user, in user order: how many this group creates, and the newest.
    let mut per_user: BTreeMap<&str, (i64, ulid::Ulid)> = BTreeMap::new();
    let mut first = None;
    for cmd in work {
        let Command::Insert { items, .. } = cmd else {
            return Ok(None);
        };
        let mut batch = Vec::with_capacity(items.len());
        for item in items {
            let ulid = ids.next_above(None)?;
            first.get_or_insert(ulid);
            let id = NotificationId::from_ulid(ulid);
            let notification = Arc::new(Notification::created(item, id));
            rows.push(item, &notification);
            let entry = per_user.entry(item.user_id.as_str()).or_insert((0, ulid));
            entry.0 += 1;
            entry.1 = ulid;
            batch.push(notification);
        }
        made.push(batch);
    }
    let Some(first) = first else {
        return Ok(None);
    };
    let names: Vec<&str> = per_user.keys().copied().collect();
    let counts: Vec<i64> = per_user.values().map(|(n, _)| *n).collect();
    let lasts: Vec<Uuid> = per_user.values().map(|(_, last)| Uuid::from_u128(last.0)).collect();

    let mut tx = conn.begin().await.map_err(failure)?;
    // The users first (the rows wait on the count of `locked`), so a row lock is taken before any
    // notification row: the order the general path keeps too. A taken key leaves its row out (and the
    // count short); without keys, no conflict is possible and none is checked for (a third of the work).
    let statement = if rows.keys.iter().any(Option::is_some) { INSERT_AT_ONCE_KEYED } else { INSERT_AT_ONCE };
    let answer = rows
        .bind_to(sqlx::query(statement))
        .bind(&names)
        .bind(&lasts)
        .bind(&counts)
        .bind(Uuid::from_u128(first.0))
        .bind(names.len() as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(failure)?;
    let added: i64 = match answer.first() {
        Some(row) => row.try_get(2).map_err(sql_error)?,
        None => 0,
    };
    if answer.len() != per_user.len() || usize::try_from(added).ok() != Some(rows.ids.len()) {
        tx.rollback().await.map_err(failure)?;
        metrics::counter!("herald_store_write_fallbacks_total").increment(1);
        return Ok(None);
    }
    // Each user's event count before this group, so its events are numbered on from it.
    let mut seq: HashMap<String, u64> = HashMap::with_capacity(answer.len());
    for row in &answer {
        let user: String = row.try_get(0).map_err(sql_error)?;
        let after: i64 = row.try_get(1).map_err(sql_error)?;
        let n = per_user.get(user.as_str()).map_or(0, |(n, _)| *n);
        seq.insert(user, (after - n).max(0) as u64);
    }
    tx.commit().await.map_err(failure)?;

    let mut outputs = Vec::with_capacity(work.len());
    let mut events = Vec::with_capacity(rows.ids.len());
    for (cmd, batch) in work.iter().zip(made) {
        let Command::Insert { items, .. } = cmd else { continue };
        let mut outcomes = Vec::with_capacity(batch.len());
        for (item, notification) in items.iter().zip(batch) {
            let next = seq.get_mut(item.user_id.as_str()).map(|s| {
                *s += 1;
                *s
            });
            events.push(InboxEvent::Created {
                notification: notification.clone(),
                received_at: item.received_at,
                seq: next,
            });
            outcomes.push(InsertOutcome::Created(notification));
        }
        outputs.push(Output::Inserted(outcomes));
    }
    Ok(Some((outputs, events)))
}
