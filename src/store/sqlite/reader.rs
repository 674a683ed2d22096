//! Reads: a small pool of read-only connections, used from tokio's blocking threads.
//!
//! In WAL mode readers never wait for the writer, so reads scale with the pool while all writes go through
//! the single writer thread.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::Semaphore;

use super::schema::{self, COLUMNS, FROM};
use super::writer::sql_error;
use crate::domain::Notification;
use crate::domain::{NotificationId, UserId};
use crate::store::{approximate_size, ListQuery, Page, Since, Snapshot, StoreError, BACKLOG_BYTES};

pub struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReaderPool {
    pub fn new(path: PathBuf, size: usize) -> Self {
        Self { path, idle: Mutex::new(Vec::with_capacity(size)), permits: Arc::new(Semaphore::new(size)) }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(conn)
    }

    /// Runs `f` on a pooled connection in a blocking thread.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        // The permit moves into the blocking task: if the caller goes away, the query still holds its slot
        // until it finishes, so the pool never opens more connections than its size.
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let pooled = self.idle.lock().map_err(|_| StoreError::Internal("reader pool poisoned".into()))?.pop();
        let pool = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            let mut conn = match pooled {
                Some(conn) => conn,
                None => pool.open().map_err(sql_error)?,
            };
            let result = f(&mut conn);
            if let Ok(mut idle) = pool.idle.lock() {
                idle.push(conn);
            }
            drop(permit);
            result
        });
        task.await.map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }
}

pub fn list(conn: &mut Connection, user: &UserId, q: ListQuery) -> Result<Page, StoreError> {
    let tx = conn.transaction().map_err(sql_error)?;
    let filter = if q.unread_only { " AND n.read_at IS NULL" } else { "" };
    let offset = u64::from(q.page) * u64::from(q.limit);
    let items = {
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM {FROM} WHERE n.user_id = ?1{filter} ORDER BY n.id DESC LIMIT ?2 OFFSET ?3"
            ))
            .map_err(sql_error)?;
        let rows = stmt.query_map(params![user.as_str(), q.limit, offset], schema::from_row).map_err(sql_error)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)?
    };
    let (total, unread_count) = counts(&tx, user)?;
    let total = if q.unread_only { unread_count } else { total };
    Ok(Page { items, total, unread_count })
}

/// A user's (total, unread) counts.
pub fn counts(conn: &Connection, user: &UserId) -> Result<(u64, u64), StoreError> {
    conn.prepare_cached("SELECT total, unread FROM inbox_counts WHERE user_id = ?1")
        .and_then(|mut s| {
            s.query_row(params![user.as_str()], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))).optional()
        })
        .map(|c| c.map_or((0, 0), |(total, unread)| (total.max(0) as u64, unread.max(0) as u64)))
        .map_err(sql_error)
}

pub fn unread_count(conn: &mut Connection, user: &UserId) -> Result<u64, StoreError> {
    counts(conn, user).map(|(_, unread)| unread)
}

pub fn snapshot(conn: &mut Connection, user: &UserId, since: Since) -> Result<Snapshot, StoreError> {
    let tx = conn.transaction().map_err(sql_error)?;
    let (_, unread_count) = counts(&tx, user)?;
    let (items, more) = match since {
        Since::Unread { limit } => {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM {FROM} WHERE n.user_id = ?1 AND n.read_at IS NULL ORDER BY n.id DESC LIMIT ?2"
                ))
                .map_err(sql_error)?;
            let rows = stmt.query_map(params![user.as_str(), limit], schema::from_row).map_err(sql_error)?;
            let (mut items, trimmed) = within_budget(rows)?;
            items.reverse();
            (items, trimmed || unread_count > u64::from(limit))
        }
        Since::After { id, limit } => {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM {FROM} WHERE n.user_id = ?1 AND n.id > ?2 ORDER BY n.id ASC LIMIT ?3"
                ))
                .map_err(sql_error)?;
            let rows = stmt
                .query_map(params![user.as_str(), id.to_string(), limit + 1], schema::from_row)
                .map_err(sql_error)?;
            let (mut items, trimmed) = within_budget(rows)?;
            let more = trimmed || items.len() > limit as usize;
            items.truncate(limit as usize);
            (items, more)
        }
    };
    let high_water: Option<String> = tx
        .prepare_cached("SELECT max(id) FROM notifications WHERE user_id = ?1")
        .and_then(|mut s| s.query_row(params![user.as_str()], |r| r.get(0)))
        .map_err(sql_error)?;
    let high_water = high_water
        .map(|id| NotificationId::parse(&id))
        .transpose()
        .map_err(|_| StoreError::Internal("a stored id is not a ULID".into()))?;
    Ok(Snapshot { unread_count, items, more, high_water })
}

/// Collects rows until [`BACKLOG_BYTES`] is reached (always at least one); returns whether it stopped early.
fn within_budget(
    rows: impl Iterator<Item = rusqlite::Result<Notification>>,
) -> Result<(Vec<Notification>, bool), StoreError> {
    let mut items = Vec::new();
    let mut size = 0;
    for row in rows {
        let n = row.map_err(sql_error)?;
        size += approximate_size(&n);
        if size > BACKLOG_BYTES && !items.is_empty() {
            return Ok((items, true));
        }
        items.push(n);
    }
    Ok((items, false))
}

pub fn ping(conn: &mut Connection) -> Result<(), StoreError> {
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).map(|_| ()).map_err(sql_error)
}
