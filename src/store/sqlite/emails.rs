//! The email outbox in its own SQLite file beside the inbox's (`herald.emails.db`): emails are few next to
//! notifications, so one connection behind a lock does, each call on the blocking pool, and its writes never
//! queue behind the inbox writer's groups. Commits are durable as the inbox's are (`synchronous` as
//! configured), so a 202 means the request is on disk.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::writer::sql_error;
use crate::config::Synchronous;
use crate::domain::{NotificationId, Timestamp, UserId};
use crate::store::directory::{DirectoryEntry, DirectoryStore, Preferences};
use crate::store::emails::{millis, Claimed, EmailRecord, EmailStatus, EmailStore, Enqueued, NewEmail, Settle};
use crate::store::{StoreError, StoreHealth};

const SCHEMA_VERSION: i64 = 2;

/// Version 1: the outbox.
const SCHEMA_1: &str = r#"
CREATE TABLE emails (
    id              TEXT PRIMARY KEY,      -- a ULID
    kind            TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    html            TEXT,                  -- dropped once sent
    body_text       TEXT,                  -- dropped once sent
    message_id      TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    status          TEXT NOT NULL,         -- queued | retrying | sent | dead_lettered
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,      -- ms since the epoch; meaningful while pending
    lease_until     INTEGER,               -- an attempt is under way until then
    last_error      TEXT,
    sent_at         INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX emails_due ON emails (next_attempt_at) WHERE status IN ('queued', 'retrying');
"#;

/// Version 2: notifications' emails (whose, which notification, cancelled when read), the user directory
/// and preferences.
const SCHEMA_2: &str = r#"
ALTER TABLE emails ADD COLUMN user_id TEXT;
ALTER TABLE emails ADD COLUMN notification_id TEXT;
ALTER TABLE emails ADD COLUMN notification_type TEXT;
ALTER TABLE emails ADD COLUMN unless_read INTEGER NOT NULL DEFAULT 0;
ALTER TABLE emails ADD COLUMN cancel_reason TEXT;
CREATE INDEX emails_by_user ON emails (user_id, notification_id)
    WHERE user_id IS NOT NULL AND status IN ('queued', 'retrying');
CREATE TABLE directory (
    user_id      TEXT PRIMARY KEY,
    email        TEXT,
    display_name TEXT,
    updated_at   INTEGER NOT NULL
);
CREATE TABLE preferences (
    user_id       TEXT PRIMARY KEY,
    email_enabled INTEGER NOT NULL,
    email_opt_out TEXT NOT NULL,            -- a JSON array of notification types
    updated_at    INTEGER NOT NULL
);
"#;

const COLUMNS: &str = "id, kind, recipient, status, attempts, next_attempt_at, last_error, sent_at, created_at, \
                       message_id, user_id, notification_id, cancel_reason";

/// `herald.emails.db` beside `herald.db`.
pub fn emails_path(inbox: &Path) -> PathBuf {
    let stem = inbox.file_stem().map_or_else(|| "herald".into(), |s| s.to_string_lossy().into_owned());
    inbox.with_file_name(format!("{stem}.emails.db"))
}

pub struct SqliteEmails {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl SqliteEmails {
    /// Opens (creating) the file. Leases held when the last process stopped are let go: no other process
    /// sends from this file, so an attempt that was under way then is due again now.
    pub fn open(path: &Path, synchronous: Synchronous, busy_timeout: Duration) -> Result<Self, StoreError> {
        super::prepare_path(path)?;
        let conn = Connection::open(path).map_err(sql_error)?;
        conn.busy_timeout(busy_timeout).map_err(sql_error)?;
        let sync = match synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.execute_batch(&format!("PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};")).map_err(sql_error)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql_error)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Internal(format!(
                "{} has email schema version {version}; this build knows up to {SCHEMA_VERSION} (a newer Herald wrote it)",
                path.display()
            )));
        }
        // Each step and its version in one transaction: a crash leaves the file at one version or the next.
        for (step, sql) in [(1, SCHEMA_1), (2, SCHEMA_2)] {
            if version < step {
                conn.execute_batch(&format!("BEGIN IMMEDIATE; {sql} PRAGMA user_version = {step}; COMMIT;"))
                    .map_err(sql_error)?;
            }
        }
        conn.execute("UPDATE emails SET lease_until = NULL WHERE lease_until IS NOT NULL", []).map_err(sql_error)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)), path: path.to_owned() })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn =
                conn.lock().map_err(|_| StoreError::Internal("the email store's lock is poisoned".into()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("the email store's task failed: {e}")))?
    }
}

fn record(row: &Row<'_>) -> rusqlite::Result<(EmailRecord, String)> {
    let status: String = row.get(3)?;
    Ok((
        EmailRecord {
            id: row.get(0)?,
            kind: row.get(1)?,
            to: row.get(2)?,
            status: EmailStatus::Queued,
            attempts: row.get(4)?,
            next_attempt_at: Some(Timestamp(row.get(5)?)),
            last_error: row.get(6)?,
            sent_at: row.get::<_, Option<i64>>(7)?.map(Timestamp),
            created_at: Timestamp(row.get(8)?),
            message_id: row.get(9)?,
            user_id: row.get(10)?,
            notification_id: row.get(11)?,
            cancel_reason: row.get(12)?,
        },
        status,
    ))
}

fn finish((mut record, status): (EmailRecord, String)) -> Result<EmailRecord, StoreError> {
    record.status = EmailStatus::parse(&status)?;
    if !record.status.pending() {
        record.next_attempt_at = None;
    }
    Ok(record)
}

fn by_id(conn: &Connection, id: &str) -> Result<Option<EmailRecord>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM emails WHERE id = ?1"))
        .map_err(sql_error)?
        .query_row([id], record)
        .optional()
        .map_err(sql_error)?
        .map(finish)
        .transpose()
}

#[async_trait]
impl EmailStore for SqliteEmails {
    async fn enqueue(&self, email: NewEmail) -> Result<Enqueued, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
            if let Some(key) = &email.idempotency_key {
                let existing: Option<String> = tx
                    .query_row("SELECT id FROM emails WHERE idempotency_key = ?1", [key], |r| r.get(0))
                    .optional()
                    .map_err(sql_error)?;
                if let Some(id) = existing {
                    let found = by_id(&tx, &id)?.ok_or_else(|| StoreError::Internal("an email vanished".into()))?;
                    return Ok(Enqueued::Existing(found));
                }
            }
            let link = email.link.as_ref();
            tx.execute(
                "INSERT INTO emails (id, kind, recipient, subject, html, body_text, message_id, idempotency_key,
                                     status, attempts, next_attempt_at, created_at,
                                     user_id, notification_id, notification_type, unless_read)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', 0, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    email.id,
                    email.kind,
                    email.to,
                    email.subject,
                    email.html,
                    email.text,
                    email.message_id,
                    email.idempotency_key,
                    email.due_at.0,
                    email.created_at.0,
                    link.map(|l| l.user_id.as_str()),
                    link.map(|l| l.notification_id.to_string()),
                    link.map(|l| l.notification_type.as_str()),
                    link.is_some_and(|l| l.unless_read),
                ],
            )
            .map_err(sql_error)?;
            let created = by_id(&tx, &email.id)?.ok_or_else(|| StoreError::Internal("an email vanished".into()))?;
            tx.commit().map_err(sql_error)?;
            Ok(Enqueued::Created(created))
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<EmailRecord>, StoreError> {
        let id = id.to_owned();
        self.with(move |conn| by_id(conn, &id)).await
    }

    async fn by_key(&self, key: &str) -> Result<Option<EmailRecord>, StoreError> {
        let key = key.to_owned();
        self.with(move |conn| {
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM emails WHERE idempotency_key = ?1"))
                .map_err(sql_error)?
                .query_row([key], record)
                .optional()
                .map_err(sql_error)?
                .map(finish)
                .transpose()
        })
        .await
    }

    async fn claim(&self, now: Timestamp, lease: Duration, limit: usize) -> Result<Vec<Claimed>, StoreError> {
        let until = now.0.saturating_add(millis(lease));
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
            let claimed = {
                let mut statement = tx
                    .prepare_cached(
                        "UPDATE emails SET attempts = attempts + 1, lease_until = ?2
                         WHERE id IN (SELECT id FROM emails
                                      WHERE status IN ('queued', 'retrying') AND next_attempt_at <= ?1
                                        AND (lease_until IS NULL OR lease_until <= ?1)
                                      ORDER BY next_attempt_at LIMIT ?3)
                         RETURNING id, kind, recipient, subject, html, body_text, message_id, attempts",
                    )
                    .map_err(sql_error)?;
                let rows = statement
                    .query_map(params![now.0, until, limit as i64], |r| {
                        Ok(Claimed {
                            id: r.get(0)?,
                            kind: r.get(1)?,
                            to: r.get(2)?,
                            subject: r.get(3)?,
                            html: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                            text: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                            message_id: r.get(6)?,
                            attempt: r.get(7)?,
                        })
                    })
                    .map_err(sql_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)?
            };
            tx.commit().map_err(sql_error)?;
            Ok(claimed)
        })
        .await
    }

    async fn settle(&self, id: &str, outcome: Settle) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with(move |conn| {
            let changed = match outcome {
                Settle::Sent { at } => conn.execute(
                    "UPDATE emails SET status = 'sent', sent_at = ?2, lease_until = NULL, last_error = NULL,
                                       html = NULL, body_text = NULL
                     WHERE id = ?1 AND status != 'sent'",
                    params![id, at.0],
                ),
                Settle::Retry { at, error } => conn.execute(
                    "UPDATE emails SET status = 'retrying', next_attempt_at = ?2, last_error = ?3, lease_until = NULL
                     WHERE id = ?1 AND status NOT IN ('sent', 'cancelled')",
                    params![id, at.0, error],
                ),
                Settle::DeadLetter { error } => conn.execute(
                    "UPDATE emails SET status = 'dead_lettered', last_error = ?2, lease_until = NULL
                     WHERE id = ?1 AND status NOT IN ('sent', 'cancelled')",
                    params![id, error],
                ),
            };
            changed.map(|_| ()).map_err(sql_error)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT min(max(next_attempt_at, coalesce(lease_until, 0))) FROM emails
                 WHERE status IN ('queued', 'retrying')",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|due| due.map(Timestamp))
            .map_err(sql_error)
        })
        .await
    }

    async fn cancel_unread(&self, user: &UserId, ids: Option<&[NotificationId]>) -> Result<u64, StoreError> {
        let user = user.as_str().to_owned();
        let ids: Option<Vec<String>> = ids.map(|ids| ids.iter().map(ToString::to_string).collect());
        self.with(move |conn| {
            let sql = "UPDATE emails SET status = 'cancelled', cancel_reason = 'read', html = NULL, body_text = NULL
                       WHERE user_id = ?1 AND unless_read = 1 AND status IN ('queued', 'retrying')";
            let changed = match ids {
                None => conn.execute(sql, [&user]).map_err(sql_error)?,
                Some(ids) => {
                    let tx = conn.transaction().map_err(sql_error)?;
                    let mut changed = 0;
                    {
                        let mut one =
                            tx.prepare_cached(&format!("{sql} AND notification_id = ?2")).map_err(sql_error)?;
                        for id in &ids {
                            changed += one.execute(params![user, id]).map_err(sql_error)?;
                        }
                    }
                    tx.commit().map_err(sql_error)?;
                    changed
                }
            };
            Ok(changed as u64)
        })
        .await
    }

    async fn health(&self) -> StoreHealth {
        let path = self.path.display().to_string();
        match self.with(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(sql_error)).await {
            Ok(()) => StoreHealth { ok: true, backend: "sqlite", detail: path },
            Err(e) => StoreHealth { ok: false, backend: "sqlite", detail: format!("{path}: {e}") },
        }
    }

    async fn shutdown(&self) {}
}

#[async_trait]
impl DirectoryStore for SqliteEmails {
    async fn user(&self, user: &UserId) -> Result<Option<DirectoryEntry>, StoreError> {
        let user = user.clone();
        self.with(move |conn| {
            conn.prepare_cached("SELECT email, display_name, updated_at FROM directory WHERE user_id = ?1")
                .map_err(sql_error)?
                .query_row([user.as_str()], |r| {
                    Ok(DirectoryEntry {
                        user_id: user.clone(),
                        email: r.get(0)?,
                        display_name: r.get(1)?,
                        updated_at: Timestamp(r.get(2)?),
                    })
                })
                .optional()
                .map_err(sql_error)
        })
        .await
    }

    async fn put_user(&self, entry: DirectoryEntry) -> Result<(), StoreError> {
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO directory (user_id, email, display_name, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user_id) DO UPDATE
                 SET email = excluded.email, display_name = excluded.display_name, updated_at = excluded.updated_at",
                params![entry.user_id.as_str(), entry.email, entry.display_name, entry.updated_at.0],
            )
            .map(drop)
            .map_err(sql_error)
        })
        .await
    }

    async fn delete_user(&self, user: &UserId) -> Result<bool, StoreError> {
        let user = user.as_str().to_owned();
        self.with(move |conn| {
            conn.execute("DELETE FROM directory WHERE user_id = ?1", [user]).map(|n| n > 0).map_err(sql_error)
        })
        .await
    }

    async fn preferences(&self, user: &UserId) -> Result<Preferences, StoreError> {
        let user = user.as_str().to_owned();
        self.with(move |conn| {
            let row: Option<(bool, String, i64)> = conn
                .prepare_cached("SELECT email_enabled, email_opt_out, updated_at FROM preferences WHERE user_id = ?1")
                .map_err(sql_error)?
                .query_row([user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .map_err(sql_error)?;
            match row {
                None => Ok(Preferences::default()),
                Some((email_enabled, opt_out, at)) => Ok(Preferences {
                    email_enabled,
                    email_opt_out: serde_json::from_str(&opt_out)
                        .map_err(|e| StoreError::Internal(format!("stored preferences are not a list: {e}")))?,
                    updated_at: Some(Timestamp(at)),
                }),
            }
        })
        .await
    }

    async fn set_preferences(&self, user: &UserId, preferences: &Preferences) -> Result<u64, StoreError> {
        let user = user.as_str().to_owned();
        let preferences = preferences.clone();
        self.with(move |conn| {
            let opt_out = serde_json::to_string(&preferences.email_opt_out)
                .map_err(|e| StoreError::Internal(format!("encoding preferences: {e}")))?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
            tx.execute(
                "INSERT INTO preferences (user_id, email_enabled, email_opt_out, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user_id) DO UPDATE SET email_enabled = excluded.email_enabled,
                     email_opt_out = excluded.email_opt_out, updated_at = excluded.updated_at",
                params![
                    user,
                    preferences.email_enabled,
                    opt_out,
                    preferences.updated_at.unwrap_or_else(Timestamp::now).0
                ],
            )
            .map_err(sql_error)?;
            let cancelled = tx
                .execute(
                    "UPDATE emails SET status = 'cancelled', cancel_reason = 'opted_out', html = NULL, body_text = NULL
                     WHERE user_id = ?1 AND status IN ('queued', 'retrying')
                       AND (?2 = 0 OR notification_type IN (SELECT value FROM json_each(?3)))",
                    params![user, preferences.email_enabled, opt_out],
                )
                .map_err(sql_error)?;
            tx.commit().map_err(sql_error)?;
            Ok(cancelled as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file written by the first version (the outbox alone) is upgraded in place, its emails kept.
    #[tokio::test]
    async fn a_version_1_file_is_upgraded_with_its_emails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.emails.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA_1).unwrap();
            conn.execute_batch("PRAGMA user_version = 1").unwrap();
            conn.execute(
                "INSERT INTO emails (id, kind, recipient, subject, html, body_text, message_id, status,
                                     next_attempt_at, created_at)
                 VALUES ('01J00000000000000000000000', 'welcome-message', 'a@example.org', 's', 'h', 't', '<m>',
                         'queued', 1, 1)",
                [],
            )
            .unwrap();
        }
        let store = SqliteEmails::open(&path, Synchronous::Normal, Duration::from_secs(1)).unwrap();
        let old = store.get("01J00000000000000000000000").await.unwrap().expect("the old email");
        assert_eq!((old.status, old.user_id, old.cancel_reason), (EmailStatus::Queued, None, None));
        let user = UserId::parse("ana").unwrap();
        assert_eq!(store.cancel_unread(&user, None).await.unwrap(), 0, "an email of no notification stays");
        assert_eq!(store.preferences(&user).await.unwrap(), Preferences::default());
        drop(store);
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        // And opening it again is a no-op.
        drop(conn);
        SqliteEmails::open(&path, Synchronous::Normal, Duration::from_secs(1)).unwrap();
    }
}
