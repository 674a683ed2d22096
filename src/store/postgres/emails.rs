//! The email outbox in PostgreSQL (`herald_emails`, migration 5), shared by every node: a node claims due
//! rows with `FOR UPDATE SKIP LOCKED` and leases them for one send, so two nodes never attempt one email at
//! once, and an email whose node died mid-attempt is taken again once its lease runs out.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::sql_error;
use crate::domain::{NotificationId, Timestamp, UserId};
use crate::store::directory::{DirectoryEntry, DirectoryStore, Preferences};
use crate::store::emails::{millis, Claimed, EmailRecord, EmailStatus, EmailStore, Enqueued, NewEmail, Settle};
use crate::store::{StoreError, StoreHealth};

/// The outbox's connections per node: the sender's claims and settles, and the API's enqueues and reads.
const CONNECTIONS: u32 = 4;

const COLUMNS: &str = "id, kind, recipient, status, attempts, next_attempt_at, last_error, sent_at, created_at, \
                       message_id, user_id, notification_id, cancel_reason";

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
        user_id: row.try_get("user_id").map_err(get)?,
        notification_id: row.try_get("notification_id").map_err(get)?,
        cancel_reason: row.try_get("cancel_reason").map_err(get)?,
    })
}

#[async_trait]
impl EmailStore for PgEmails {
    async fn enqueue(&self, email: NewEmail) -> Result<Enqueued, StoreError> {
        // One statement: a taken key inserts nothing, and the original is read after it.
        let inserted = sqlx::query(&format!(
            "INSERT INTO herald_emails (id, kind, recipient, subject, html, body_text, message_id, idempotency_key,
                                        status, attempts, next_attempt_at, created_at,
                                        user_id, notification_id, notification_type, unless_read)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, $9, $10, $11, $12, $13, $14)
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
        .bind(email.due_at.0)
        .bind(email.created_at.0)
        .bind(email.link.as_ref().map(|l| l.user_id.as_str()))
        .bind(email.link.as_ref().map(|l| l.notification_id.to_string()))
        .bind(email.link.as_ref().map(|l| l.notification_type.as_str()))
        .bind(email.link.as_ref().is_some_and(|l| l.unless_read))
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

    async fn by_key(&self, key: &str) -> Result<Option<EmailRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM herald_emails WHERE idempotency_key = $1"))
            .bind(key)
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
                 WHERE id = $1 AND status NOT IN ('sent', 'cancelled')",
            )
            .bind(id)
            .bind(at.0)
            .bind(error),
            Settle::DeadLetter { error } => sqlx::query(
                "UPDATE herald_emails SET status = 'dead_lettered', last_error = $2, lease_until = NULL
                 WHERE id = $1 AND status NOT IN ('sent', 'cancelled')",
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

    async fn cancel_unread(&self, user: &UserId, ids: Option<&[NotificationId]>) -> Result<u64, StoreError> {
        let sql = "UPDATE herald_emails SET status = 'cancelled', cancel_reason = 'read', html = NULL, body_text = NULL
                   WHERE user_id = $1 AND unless_read AND status IN ('queued', 'retrying')";
        let done = match ids {
            None => sqlx::query(sql).bind(user.as_str()).execute(&self.pool).await,
            Some(ids) => {
                let sql = format!("{sql} AND notification_id = ANY($2)");
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                sqlx::query(&sql).bind(user.as_str()).bind(ids).execute(&self.pool).await
            }
        };
        Ok(done.map_err(sql_error)?.rows_affected())
    }

    async fn health(&self) -> StoreHealth {
        super::health(&self.pool, &self.where_, false, "email outbox").await
    }

    async fn shutdown(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl DirectoryStore for PgEmails {
    async fn user(&self, user: &UserId) -> Result<Option<DirectoryEntry>, StoreError> {
        let row: Option<(Option<String>, Option<String>, i64)> =
            sqlx::query_as("SELECT email, display_name, updated_at FROM herald_directory WHERE user_id = $1")
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(sql_error)?;
        Ok(row.map(|(email, display_name, at)| DirectoryEntry {
            user_id: user.clone(),
            email,
            display_name,
            updated_at: Timestamp(at),
        }))
    }

    async fn put_user(&self, entry: DirectoryEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO herald_directory (user_id, email, display_name, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE
             SET email = excluded.email, display_name = excluded.display_name, updated_at = excluded.updated_at",
        )
        .bind(entry.user_id.as_str())
        .bind(&entry.email)
        .bind(&entry.display_name)
        .bind(entry.updated_at.0)
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(())
    }

    async fn delete_user(&self, user: &UserId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM herald_directory WHERE user_id = $1")
            .bind(user.as_str())
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn preferences(&self, user: &UserId) -> Result<Preferences, StoreError> {
        let row: Option<(bool, Vec<String>, i64)> = sqlx::query_as(
            "SELECT email_enabled, email_opt_out, updated_at FROM herald_preferences WHERE user_id = $1",
        )
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(match row {
            None => Preferences::default(),
            Some((email_enabled, opt_out, at)) => Preferences {
                email_enabled,
                email_opt_out: opt_out.into_iter().collect(),
                updated_at: Some(Timestamp(at)),
            },
        })
    }

    async fn set_preferences(&self, user: &UserId, preferences: &Preferences) -> Result<u64, StoreError> {
        let opt_out: Vec<&str> = preferences.email_opt_out.iter().map(String::as_str).collect();
        let mut tx = self.pool.begin().await.map_err(sql_error)?;
        sqlx::query(
            "INSERT INTO herald_preferences (user_id, email_enabled, email_opt_out, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET email_enabled = excluded.email_enabled,
                 email_opt_out = excluded.email_opt_out, updated_at = excluded.updated_at",
        )
        .bind(user.as_str())
        .bind(preferences.email_enabled)
        .bind(&opt_out)
        .bind(preferences.updated_at.unwrap_or_else(Timestamp::now).0)
        .execute(&mut *tx)
        .await
        .map_err(sql_error)?;
        let cancelled = sqlx::query(
            "UPDATE herald_emails SET status = 'cancelled', cancel_reason = 'opted_out', html = NULL, body_text = NULL
             WHERE user_id = $1 AND status IN ('queued', 'retrying')
               AND (NOT $2 OR notification_type = ANY($3))",
        )
        .bind(user.as_str())
        .bind(preferences.email_enabled)
        .bind(&opt_out)
        .execute(&mut *tx)
        .await
        .map_err(sql_error)?
        .rows_affected();
        tx.commit().await.map_err(sql_error)?;
        Ok(cancelled)
    }
}
