//! Reads: a small pool of read-only connections, used from tokio's blocking threads.
//!
//! In WAL mode readers never wait for the writer, so reads scale with the pool while all writes go through
//! the single writer thread.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use tokio::sync::Semaphore;

use super::schema::{self, COLUMNS};
use super::tail::{self, SharedTail};
use super::writer::sql_error;
use crate::domain::{NotificationId, UserId};
use crate::store::{Budget, ListQuery, Page, Since, Snapshot, StoreError};

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

/// The SQL half of a user's inbox: the merged ids, joined to their rows.
const INBOX: &str = "inbox i JOIN notifications n ON n.id = i.id LEFT JOIN deliveries d ON d.id = n.id";

/// How often a reader copies the tail again when a commit lands between its copy and its snapshot; the
/// window is the writer's few instructions between its commit and its append, so one retry is the most
/// ever seen in practice (the later ones back off, 100 µs each: about 0.1 s in all).
const SETTLE_ATTEMPTS: usize = 1000;

/// Opens a read transaction that agrees with a copy of the user's unmerged ids (see `tail`), and runs `f`
/// with it and the copied ids not yet in its view of the index.
fn consistent<T>(
    conn: &mut Connection,
    tail: &SharedTail,
    user: &UserId,
    f: impl FnOnce(&Transaction<'_>, &[NotificationId]) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    for attempt in 0..SETTLE_ATTEMPTS {
        let (committed, recent) = tail.read(user);
        // Deferred: the snapshot starts with this first read, after the copy.
        let tx = conn.transaction().map_err(sql_error)?;
        if schema::last_id(&tx)? > committed {
            drop(tx);
            if attempt < 10 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            continue;
        }
        let recent = tail::above(&recent, schema::merged_upto(&tx, user)?);
        return f(&tx, recent);
    }
    Err(StoreError::Unavailable("the store's index did not settle".into()))
}

/// A page of a user's inbox, newest first.
pub fn list(conn: &mut Connection, tail: &SharedTail, user: &UserId, q: ListQuery) -> Result<Page, StoreError> {
    consistent(conn, tail, user, |tx, recent| list_in(tx, user, recent, q))
}

fn list_in(tx: &Transaction<'_>, user: &UserId, recent: &[NotificationId], q: ListQuery) -> Result<Page, StoreError> {
    let (total, unread_count) = counts(tx, user, recent)?;
    let offset = if q.before.is_some() { 0 } else { u64::from(q.page) * u64::from(q.limit) };
    // One more than asked says whether another page follows.
    let limit = u64::from(q.limit) + 1;
    // With a cursor, only what is older than it.
    let recent = match q.before {
        Some(before) => &recent[..recent.partition_point(|id| *id < before)],
        None => recent,
    };
    // The unmerged part first (it is the newest): count what qualifies, keep what falls in the page.
    let mut items = Vec::new();
    let mut qualifying = 0u64;
    for id in recent.iter().rev() {
        if items.len() as u64 == limit {
            break;
        }
        let in_page = qualifying >= offset;
        if q.unread_only || in_page {
            let Some(n) = schema::fetch(tx, user, *id)? else { continue };
            if q.unread_only && n.read {
                continue;
            }
            if in_page {
                items.push(n);
            }
        }
        qualifying += 1;
    }
    // Every unmerged id was looked at if the page is not full, so `qualifying` is complete. Unread rows are
    // found by walking the index; the unread count bounds the walk (no more than that many exist).
    let sql_offset = offset.saturating_sub(qualifying);
    let mut rest = limit - items.len() as u64;
    if q.unread_only {
        rest = rest.min(unread_count.saturating_sub(qualifying).saturating_sub(sql_offset));
    }
    if rest > 0 {
        let filter = if q.unread_only { " AND n.read_at IS NULL" } else { "" };
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM {INBOX} WHERE i.user_id = ?1{filter} AND i.id < ?4 \
                 ORDER BY i.id DESC LIMIT ?2 OFFSET ?3"
            ))
            .map_err(sql_error)?;
        // Without a cursor, a bound above every id (ids are 26 characters of Crockford base32, all below 'z').
        let cursor = q.before.map_or_else(|| "z".to_owned(), |id| id.to_string());
        let rows =
            stmt.query_map(params![user.as_str(), rest, sql_offset, cursor], schema::from_row).map_err(sql_error)?;
        for row in rows {
            items.push(row.map_err(sql_error)?);
        }
    }
    let more = items.len() > q.limit as usize;
    items.truncate(q.limit as usize);
    let total = if q.unread_only { unread_count } else { total };
    Ok(Page { items, total, unread_count, more })
}

pub fn unread_count(conn: &mut Connection, tail: &SharedTail, user: &UserId) -> Result<u64, StoreError> {
    consistent(conn, tail, user, |tx, recent| counts(tx, user, recent).map(|(_, unread)| unread))
}

/// A user's (total, unread) counts: the stored ones, which cover the indexed rows, plus the unmerged ones.
fn counts(tx: &Transaction<'_>, user: &UserId, recent: &[NotificationId]) -> Result<(u64, u64), StoreError> {
    let (mut total, mut unread) = schema::counts(tx, user)?;
    let mut is_unread = tx
        .prepare_cached("SELECT read_at IS NULL FROM notifications WHERE id = ?1 AND user_id = ?2")
        .map_err(sql_error)?;
    let mut buf = [0u8; ulid::ULID_LEN];
    for id in recent {
        let text = ulid::Ulid(id.as_u128()).array_to_str(&mut buf);
        let unread_row: Option<bool> =
            is_unread.query_row(params![&*text, user.as_str()], |r| r.get(0)).optional().map_err(sql_error)?;
        if let Some(row_unread) = unread_row {
            total += 1;
            unread += u64::from(row_unread);
        }
    }
    Ok((total, unread))
}

/// What a connecting client is sent first.
pub fn snapshot(conn: &mut Connection, tail: &SharedTail, user: &UserId, since: Since) -> Result<Snapshot, StoreError> {
    consistent(conn, tail, user, |tx, recent| snapshot_in(tx, user, recent, since))
}

fn snapshot_in(
    tx: &Transaction<'_>,
    user: &UserId,
    recent: &[NotificationId],
    since: Since,
) -> Result<Snapshot, StoreError> {
    let (_, unread_count) = counts(tx, user, recent)?;
    let mut budget = Budget::default();
    let (items, more) = match since {
        Since::Unread { limit } => {
            let limit = limit as usize;
            // Newest first: the unmerged ids, then the index.
            let mut items = Vec::new();
            for id in recent.iter().rev() {
                if items.len() == limit || budget.trimmed {
                    break;
                }
                if let Some(n) = schema::fetch(tx, user, *id)?.filter(|n| !n.read) {
                    budget.admit(n, &mut items);
                }
            }
            // No more unread rows exist than the count says: it bounds the walk of the index.
            let rest = (limit - items.len())
                .min(usize::try_from(unread_count).unwrap_or(usize::MAX).saturating_sub(items.len()));
            if rest > 0 && !budget.trimmed {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM {INBOX} WHERE i.user_id = ?1 AND n.read_at IS NULL \
                         ORDER BY i.id DESC LIMIT ?2"
                    ))
                    .map_err(sql_error)?;
                let rows = stmt.query_map(params![user.as_str(), rest as u64], schema::from_row).map_err(sql_error)?;
                for row in rows {
                    if !budget.admit(row.map_err(sql_error)?, &mut items) {
                        break;
                    }
                }
            }
            items.reverse();
            let more = budget.trimmed || unread_count > limit as u64;
            (items, more)
        }
        Since::After { id, limit } => {
            // Oldest first: the index, then the unmerged ids; one more than asked, to know if there is more.
            let want = limit as usize + 1;
            let mut items = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM {INBOX} WHERE i.user_id = ?1 AND i.id > ?2 ORDER BY i.id ASC LIMIT ?3"
                    ))
                    .map_err(sql_error)?;
                let rows = stmt
                    .query_map(params![user.as_str(), id.to_string(), want], schema::from_row)
                    .map_err(sql_error)?;
                for row in rows {
                    if !budget.admit(row.map_err(sql_error)?, &mut items) {
                        break;
                    }
                }
            }
            for recent_id in tail::above(recent, Some(id)) {
                if items.len() == want || budget.trimmed {
                    break;
                }
                if let Some(n) = schema::fetch(tx, user, *recent_id)? {
                    budget.admit(n, &mut items);
                }
            }
            let more = budget.trimmed || items.len() > limit as usize;
            items.truncate(limit as usize);
            (items, more)
        }
    };
    let high_water = match recent.last() {
        Some(newest) => Some(*newest),
        None => {
            let newest: Option<String> = tx
                .prepare_cached("SELECT max(id) FROM inbox WHERE user_id = ?1")
                .and_then(|mut s| s.query_row(params![user.as_str()], |r| r.get(0)))
                .map_err(sql_error)?;
            newest
                .map(|id| NotificationId::parse(&id))
                .transpose()
                .map_err(|_| StoreError::Internal("a stored id is not a ULID".into()))?
        }
    };
    Ok(Snapshot { unread_count, items, more, high_water })
}

pub fn ping(conn: &mut Connection) -> Result<(), StoreError> {
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).map(|_| ()).map_err(sql_error)
}
