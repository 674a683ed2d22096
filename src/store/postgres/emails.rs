//! The email outbox in PostgreSQL (`herald_emails`, migration 5), shared by every node: a node claims due
//! rows with `FOR UPDATE SKIP LOCKED` and leases them for one send, so two nodes never attempt one email at
//! once, and an email whose node died mid-attempt is taken again once its lease runs out.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::sql_error;
use crate::domain::Timestamp;
use crate::store::emails::{millis, Claimed, EmailRecord, EmailStatus, EmailStore, Enqueued, NewEmail, Settle};
use crate::store::{StoreError, StoreHealth};

/// The outbox's connections per node: the sender's claims and settles, and the API's enqueues and reads.
const CONNECTIONS: u32 = 4;

const COLUMNS: &str =
    "id, kind, recipient, status, attempts, next_attempt_at, last_error, sent_at, created_at, message_id";

pub struct PgEmails {
    pool: PgPool,
    where_: String,
}

impl PgEmails {
    /// Connects and migrates (refusing a schema newer than this build's).
    pub async fn open(url: &str) -> Result<Self, super::OpenError> {
        let (pool, where_) = super::connect(url, CONNECTIONS).await?;
        super::migrate(&pool).await?;
        Ok(Self { pool, where_ })
    }
}

fn record(row: &PgRow) -> Result<EmailRecord, StoreError> {
    let get = |e: sqlx::Error| StoreError::Internal(format!("reading an email row: {e}"));
    let status = EmailStatus::parse(row.try_get::<&str, _>("status").map_err(get)?)?;
    Ok(EmailRecord {
        id: row.try_get("id").map_err(get)?,
        kind: row.try_get("kind").map_err(get)?,
        to: row.try_get("recipient").map_err(get)?,
        status,
        attempts: row.try_get::<i32, _>("attempts").map_err(get)?.max(0) as u32,
        next_attempt_at: status
            .pending()
            .then(|| row.try_get("next_attempt_at").map(Timestamp))
            .transpose()
            .map_err(get)?,
        last_error: row.try_get("last_error").map_err(get)?,
        sent_at: row.try_get::<Option<i64>, _>("sent_at").map_err(get)?.map(Timestamp),
        created_at: Timestamp(row.try_get("created_at").map_err(get)?),
        message_id: row.try_get("message_id").map_err(get)?,
    })
}

#[async_trait]
impl EmailStore for PgEmails {
    async fn enqueue(&self, email: NewEmail) -> Result<Enqueued, StoreError> {
        // One statement: a taken key inserts nothing, and the original is read after it.
        let inserted = sqlx::query(&format!(
            "INSERT INTO herald_emails (id, kind, recipient, subject, html, body_text, message_id, idempotency_key,
                                        status, attempts, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, $9, $9)
             ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING {COLUMNS}"
        ))
        .bind(&email.id)
        .bind(&email.kind)
        .bind(&email.to)
        .bind(&email.subject)
        .bind(&email.html)
        .bind(&email.text)
        .bind(&email.message_id)
        .bind(&email.idempotency_key)
        .bind(email.created_at.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        if let Some(row) = inserted {
            return Ok(Enqueued::Created(record(&row)?));
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM herald_emails WHERE idempotency_key = $1"))
            .bind(&email.idempotency_key)
            .fetch_one(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(Enqueued::Existing(record(&row)?))
    }

    async fn get(&self, id: &str) -> Result<Option<EmailRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM herald_emails WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        row.as_ref().map(record).transpose()
    }

    async fn claim(&self, now: Timestamp, lease: Duration, limit: usize) -> Result<Vec<Claimed>, StoreError> {
        let rows = sqlx::query(
            "UPDATE herald_emails SET attempts = attempts + 1, lease_until = $2
             WHERE id IN (SELECT id FROM herald_emails
                          WHERE status IN ('queued', 'retrying') AND next_attempt_at <= $1
                            AND (lease_until IS NULL OR lease_until <= $1)
                          ORDER BY next_attempt_at LIMIT $3
                          FOR UPDATE SKIP LOCKED)
             RETURNING id, kind, recipient, subject, html, body_text, message_id, attempts",
        )
        .bind(now.0)
        .bind(now.0.saturating_add(millis(lease)))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        let get = |e: sqlx::Error| StoreError::Internal(format!("reading a claimed email: {e}"));
        rows.iter()
            .map(|r| {
                Ok(Claimed {
                    id: r.try_get("id").map_err(get)?,
                    kind: r.try_get("kind").map_err(get)?,
                    to: r.try_get("recipient").map_err(get)?,
                    subject: r.try_get("subject").map_err(get)?,
                    html: r.try_get::<Option<String>, _>("html").map_err(get)?.unwrap_or_default(),
                    text: r.try_get::<Option<String>, _>("body_text").map_err(get)?.unwrap_or_default(),
                    message_id: r.try_get("message_id").map_err(get)?,
                    attempt: r.try_get::<i32, _>("attempts").map_err(get)?.max(0) as u32,
                })
            })
            .collect()
    }

    async fn settle(&self, id: &str, outcome: Settle) -> Result<(), StoreError> {
        let query = match outcome {
            Settle::Sent { at } => sqlx::query(
                "UPDATE herald_emails SET status = 'sent', sent_at = $2, lease_until = NULL, last_error = NULL,
                                          html = NULL, body_text = NULL
                 WHERE id = $1 AND status <> 'sent'",
            )
            .bind(id)
            .bind(at.0),
            Settle::Retry { at, error } => sqlx::query(
                "UPDATE herald_emails SET status = 'retrying', next_attempt_at = $2, last_error = $3, lease_until = NULL
                 WHERE id = $1 AND status <> 'sent'",
            )
            .bind(id)
            .bind(at.0)
            .bind(error),
            Settle::DeadLetter { error } => sqlx::query(
                "UPDATE herald_emails SET status = 'dead_lettered', last_error = $2, lease_until = NULL
                 WHERE id = $1 AND status <> 'sent'",
            )
            .bind(id)
            .bind(error),
        };
        query.execute(&self.pool).await.map_err(sql_error)?;
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT min(greatest(next_attempt_at, coalesce(lease_until, 0))) FROM herald_emails
             WHERE status IN ('queued', 'retrying')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(due.map(Timestamp))
    }

    async fn health(&self) -> StoreHealth {
        super::health(&self.pool, &self.where_, false, "email outbox").await
    }

    async fn shutdown(&self) {
        self.pool.close().await;
    }
}
