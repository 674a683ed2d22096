//! The SQLite schema, its migrations, and the mapping between rows and notifications.

use std::sync::Arc;

use rusqlite::{Connection, Row};
use serde_json::value::RawValue;
use ulid::Ulid;

use crate::domain::{Notification, NotificationId, Timestamp, UserId};

/// Migrations in order; `PRAGMA user_version` records how many have run.
///
/// The layout is chosen for the write path, which a profile showed to be bound by how many distinct pages
/// each group commit dirties (every dirty page is a WAL frame, and later a checkpoint write):
/// - `notifications` is clustered by `(user_id, id)`, so a user's inbox is one contiguous range and an insert
///   dirties one leaf page per user in the group. There is no secondary index on the hot path.
/// - `inbox_counts` keeps each user's total and unread counts in a small table whose pages stay hot, so
///   counting never scans an inbox and no unread index has to be maintained per insert.
/// - `deliveries` is an append-mostly log keyed by id (ids are delivered roughly in creation order), so
///   marking a notification delivered does not dirty its inbox page a second time.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE notifications (
    user_id         TEXT NOT NULL,
    id              TEXT NOT NULL,      -- a ULID: sorts by creation time
    type            TEXT NOT NULL,
    title           TEXT,
    message         TEXT,
    data            TEXT NOT NULL,      -- a JSON object, stored as sent
    created_at      INTEGER NOT NULL,   -- milliseconds since the Unix epoch
    read_at         INTEGER,
    idempotency_key TEXT,
    PRIMARY KEY (user_id, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX notifications_idempotency
    ON notifications (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE inbox_counts (
    user_id TEXT PRIMARY KEY,
    total   INTEGER NOT NULL,
    unread  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,                -- the notification's id
    at INTEGER NOT NULL                 -- when it was first written to a live connection
) WITHOUT ROWID;
"#,
    r#"
-- Small facts the store keeps across restarts: `last_id`, the newest id generated.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"#,
];

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

/// The columns every query that returns notifications selects, in the order [`from_row`] reads them, and
/// the tables they come from (`n` for the notification, `d` for its delivery).
pub const COLUMNS: &str = "n.id, n.user_id, n.type, n.title, n.message, n.data, n.created_at, d.at, n.read_at";
pub const FROM: &str = "notifications n LEFT JOIN deliveries d ON d.id = n.id";

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
