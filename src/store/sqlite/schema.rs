//! The SQLite schema, its migrations, and the mapping between rows and notifications.

use std::sync::Arc;

use rusqlite::{Connection, Row};
use serde_json::value::RawValue;
use ulid::Ulid;

use crate::domain::{Notification, NotificationId, Timestamp, UserId};

/// Migrations in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[r#"
-- Clustered by (user_id, id): a user's inbox is one contiguous range in creation order, so paging, the
-- backlog and every per-user update are range scans or point lookups on the table itself.
CREATE TABLE notifications (
    user_id         TEXT NOT NULL,
    id              TEXT NOT NULL,      -- a ULID: sorts by creation time
    type            TEXT NOT NULL,
    title           TEXT,
    message         TEXT,
    data            TEXT NOT NULL,      -- a JSON object, stored as sent
    created_at      INTEGER NOT NULL,   -- milliseconds since the Unix epoch
    delivered_at    INTEGER,
    read_at         INTEGER,
    idempotency_key TEXT,
    PRIMARY KEY (user_id, id)
) WITHOUT ROWID;
CREATE INDEX notifications_unread_by_user ON notifications (user_id, id) WHERE read_at IS NULL;
CREATE UNIQUE INDEX notifications_idempotency
    ON notifications (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
"#];

pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The columns every query that returns notifications selects, in the order [`from_row`] reads them.
pub const COLUMNS: &str = "id, user_id, type, title, message, data, created_at, delivered_at, read_at";

fn corrupt(column: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, what.to_owned().into())
}

pub fn from_row(row: &Row<'_>) -> rusqlite::Result<Notification> {
    let id: String = row.get(0)?;
    let id = Ulid::from_string(&id).map_err(|_| corrupt(0, "a notification id is not a ULID"))?;
    let user: String = row.get(1)?;
    let user_id = UserId::parse(&user).map_err(|_| corrupt(1, "a stored user id is invalid"))?;
    let data: String = row.get(5)?;
    let data = RawValue::from_string(data).map_err(|_| corrupt(5, "stored data is not JSON"))?;
    let delivered_at: Option<i64> = row.get(7)?;
    let read_at: Option<i64> = row.get(8)?;
    Ok(Notification {
        id: NotificationId::from_ulid(id),
        user_id,
        kind: row.get(2)?,
        title: row.get(3)?,
        message: row.get(4)?,
        data,
        created_at: Timestamp(row.get(6)?),
        delivered: delivered_at.is_some(),
        delivered_at: delivered_at.map(Timestamp),
        read: read_at.is_some(),
        read_at: read_at.map(Timestamp),
    })
}

pub fn from_row_arc(row: &Row<'_>) -> rusqlite::Result<Arc<Notification>> {
    from_row(row).map(Arc::new)
}
