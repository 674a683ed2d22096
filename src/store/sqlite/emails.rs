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
use crate::domain::Timestamp;
use crate::store::emails::{millis, Claimed, EmailRecord, EmailStatus, EmailStore, Enqueued, NewEmail, Settle};
use crate::store::{StoreError, StoreHealth};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS emails (
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
CREATE INDEX IF NOT EXISTS emails_due ON emails (next_attempt_at) WHERE status IN ('queued', 'retrying');
"#;

const COLUMNS: &str =
    "id, kind, recipient, status, attempts, next_attempt_at, last_error, sent_at, created_at, message_id";

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
        conn.execute_batch(SCHEMA).map_err(sql_error)?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}")).map_err(sql_error)?;
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
            tx.execute(
                "INSERT INTO emails (id, kind, recipient, subject, html, body_text, message_id, idempotency_key,
                                     status, attempts, next_attempt_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', 0, ?9, ?9)",
                params![
                    email.id,
                    email.kind,
                    email.to,
                    email.subject,
                    email.html,
                    email.text,
                    email.message_id,
                    email.idempotency_key,
                    email.created_at.0
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
                     WHERE id = ?1 AND status != 'sent'",
                    params![id, at.0, error],
                ),
                Settle::DeadLetter { error } => conn.execute(
                    "UPDATE emails SET status = 'dead_lettered', last_error = ?2, lease_until = NULL
                     WHERE id = ?1 AND status != 'sent'",
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

    async fn health(&self) -> StoreHealth {
        let path = self.path.display().to_string();
        match self.with(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(sql_error)).await {
            Ok(()) => StoreHealth { ok: true, backend: "sqlite", detail: path },
            Err(e) => StoreHealth { ok: false, backend: "sqlite", detail: format!("{path}: {e}") },
        }
    }

    async fn shutdown(&self) {}
}
