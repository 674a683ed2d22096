//! Reads, straight from the pool. Those that return counts with items read them in one `REPEATABLE READ`
//! transaction, so the two agree.

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::Row;
use uuid::Uuid;

use super::schema::{self, COLUMNS, FROM};
use super::sql_error;
use crate::domain::{Notification, NotificationId, UserId};
use crate::store::{Budget, ListQuery, Page, Since, Snapshot, StoreError};

/// A user's (total, unread) counts and newest id.
async fn counts(conn: &mut PgConnection, user: &UserId) -> Result<(u64, u64, Option<NotificationId>), StoreError> {
    let row = sqlx::query("SELECT total, unread, last_id FROM herald_users WHERE user_id = $1")
        .bind(user.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(sql_error)?;
    let Some(row) = row else { return Ok((0, 0, None)) };
    let total: i64 = row.try_get(0).map_err(sql_error)?;
    let unread: i64 = row.try_get(1).map_err(sql_error)?;
    let last: Option<Uuid> = row.try_get(2).map_err(sql_error)?;
    Ok((u64::try_from(total).unwrap_or(0), u64::try_from(unread).unwrap_or(0), last.map(schema::id)))
}

pub async fn unread_count(pool: &PgPool, user: &UserId) -> Result<u64, StoreError> {
    let mut conn = pool.acquire().await.map_err(sql_error)?;
    counts(&mut conn, user).await.map(|(_, unread, _)| unread)
}

/// Each user's event count (`InboxEvent`'s `seq` of their newest event; 0 for a user never seen), in the
/// order asked.
pub async fn positions(pool: &PgPool, users: &[UserId]) -> Result<Vec<u64>, StoreError> {
    let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
    let rows = sqlx::query("SELECT user_id, seq FROM herald_users WHERE user_id = ANY($1)")
        .bind(&names)
        .fetch_all(pool)
        .await
        .map_err(sql_error)?;
    let mut found = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let user: String = row.try_get(0).map_err(sql_error)?;
        let seq: i64 = row.try_get(1).map_err(sql_error)?;
        found.insert(user, seq.max(0) as u64);
    }
    Ok(names.iter().map(|u| found.get(*u).copied().unwrap_or(0)).collect())
}

async fn read_only(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await.map_err(sql_error)
}

/// A page of a user's inbox, newest first.
pub async fn list(pool: &PgPool, user: &UserId, q: ListQuery) -> Result<Page, StoreError> {
    let mut tx = read_only(pool).await?;
    let (total, unread_count, _) = counts(&mut tx, user).await?;
    let filter = if q.unread_only { " AND n.read_at IS NULL" } else { "" };
    // Without a cursor, the largest id (never made: its time is past the year 10889) keeps every row.
    let (cursor, offset) = match q.before {
        Some(before) => (schema::uuid(before), 0),
        None => (Uuid::from_u128(u128::MAX), i64::from(q.page) * i64::from(q.limit)),
    };
    // One row more than asked says whether another page follows.
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {FROM} WHERE n.user_id = $1{filter} AND n.id < $4 ORDER BY n.id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(user.as_str())
    .bind(i64::from(q.limit) + 1)
    .bind(offset)
    .bind(cursor)
    .fetch_all(&mut *tx)
    .await
    .map_err(sql_error)?;
    tx.commit().await.map_err(sql_error)?;
    let mut items = rows.iter().map(schema::from_row).collect::<Result<Vec<_>, _>>()?;
    let more = items.len() > q.limit as usize;
    items.truncate(q.limit as usize);
    let total = if q.unread_only { unread_count } else { total };
    Ok(Page { items, total, unread_count, more })
}

/// What a connecting client is sent first.
pub async fn snapshot(pool: &PgPool, user: &UserId, since: Since) -> Result<Snapshot, StoreError> {
    let mut tx = read_only(pool).await?;
    let (_, unread_count, high_water) = counts(&mut tx, user).await?;
    let mut budget = Budget::default();
    let (items, more) = match since {
        Since::Unread { limit } => {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM {FROM} WHERE n.user_id = $1 AND n.read_at IS NULL ORDER BY n.id DESC LIMIT $2"
            ))
            .bind(user.as_str())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(sql_error)?;
            let mut items = Vec::with_capacity(rows.len());
            for row in &rows {
                if !budget.admit(schema::from_row(row)?, &mut items) {
                    break;
                }
            }
            items.reverse();
            let more = budget.trimmed || unread_count > u64::from(limit);
            (items, more)
        }
        Since::After { id, limit } => {
            // One more than asked, to know whether there is more.
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM {FROM} WHERE n.user_id = $1 AND n.id > $2 ORDER BY n.id ASC LIMIT $3"
            ))
            .bind(user.as_str())
            .bind(schema::uuid(id))
            .bind(i64::from(limit) + 1)
            .fetch_all(&mut *tx)
            .await
            .map_err(sql_error)?;
            let mut items: Vec<Notification> = Vec::with_capacity(rows.len());
            for row in &rows {
                if !budget.admit(schema::from_row(row)?, &mut items) {
                    break;
                }
            }
            let more = budget.trimmed || items.len() > limit as usize;
            items.truncate(limit as usize);
            (items, more)
        }
    };
    tx.commit().await.map_err(sql_error)?;
    Ok(Snapshot { unread_count, items, more, high_water })
}
