//! The email outbox: every request the email channel accepted, with its rendered message and where it
//! stands (`queued`, `retrying`, `sent`, `dead_lettered`, `cancelled`), so that its status survives a restart and a
//! replayed request is answered from here instead of sent again.
//!
//! The sender works it as a queue of leases: [`EmailStore::claim`] takes what is due, counts the attempt and
//! leases the rows for the length of one send, so that another node (or this one after a restart) takes an
//! email again only once its lease has run out; [`EmailStore::settle`] records how the attempt ended. A sent
//! email's bodies are dropped from the row (they may hold one-time codes); its status stays.

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{NotificationId, Timestamp, UserId};
use crate::store::{StoreError, StoreHealth};

/// The longest stored error text; SMTP replies can be long, and this is for people reading a status.
pub const ERROR_MAX: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailStatus {
    /// Waiting for its first attempt (or in it).
    Queued,
    /// An attempt failed in a way that may pass; another is due at `next_attempt_at`.
    Retrying,
    /// The SMTP server accepted it (250).
    Sent,
    /// Given up: a permanent refusal (5xx), or every attempt failed.
    DeadLettered,
    /// Not sent, and never will be: its notification was read first, or the user opted out meanwhile.
    Cancelled,
}

impl EmailStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailStatus::Queued => "queued",
            EmailStatus::Retrying => "retrying",
            EmailStatus::Sent => "sent",
            EmailStatus::DeadLettered => "dead_lettered",
            EmailStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "queued" => Ok(EmailStatus::Queued),
            "retrying" => Ok(EmailStatus::Retrying),
            "sent" => Ok(EmailStatus::Sent),
            "dead_lettered" => Ok(EmailStatus::DeadLettered),
            "cancelled" => Ok(EmailStatus::Cancelled),
            other => Err(StoreError::Internal(format!("a stored email has an unknown status {other:?}"))),
        }
    }

    /// Still to be sent.
    pub fn pending(self) -> bool {
        matches!(self, EmailStatus::Queued | EmailStatus::Retrying)
    }
}

/// A request accepted and rendered, to be stored.
#[derive(Debug, Clone)]
pub struct NewEmail {
    /// A ULID, as text.
    pub id: String,
    pub kind: String,
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// `<id@domain>`: the same on every attempt, so a receiver can tell a repeat.
    pub message_id: String,
    pub idempotency_key: Option<String>,
    pub created_at: Timestamp,
    /// Its first attempt is not before this (`created_at`, or later for "if unread after").
    pub due_at: Timestamp,
    /// The notification it emails, for a notification that asked for the email channel.
    pub link: Option<NotificationLink>,
}

/// What ties an email to the notification it was made for.
#[derive(Debug, Clone)]
pub struct NotificationLink {
    pub user_id: UserId,
    pub notification_id: NotificationId,
    pub notification_type: String,
    /// Reading the notification before the email goes out cancels it (`email_if_unread_after`).
    pub unless_read: bool,
}

/// Why a pending email was cancelled, as `cancel_reason` shows it.
pub mod cancel {
    pub const READ: &str = "read";
    pub const OPTED_OUT: &str = "opted_out";
}

/// Where a stored email stands: what `GET /api/v1/emails/{id}` shows.
#[derive(Debug, Clone)]
pub struct EmailRecord {
    pub id: String,
    pub kind: String,
    pub to: String,
    pub status: EmailStatus,
    /// Attempts started, the one under way included.
    pub attempts: u32,
    /// When the next attempt is due, while it is pending.
    pub next_attempt_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub sent_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub message_id: String,
    /// For a notification's email: whose, and which notification.
    pub user_id: Option<String>,
    pub notification_id: Option<String>,
    /// With `cancelled`: why (`read`, `opted_out`).
    pub cancel_reason: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Enqueued {
    Created(EmailRecord),
    /// The idempotency key was seen before: the original request, not stored again.
    Existing(EmailRecord),
}

impl Enqueued {
    pub fn record(&self) -> &EmailRecord {
        match self {
            Enqueued::Created(r) | Enqueued::Existing(r) => r,
        }
    }
}

/// An email leased to this sender for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub kind: String,
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    pub message_id: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Settle {
    Sent { at: Timestamp },
    Retry { at: Timestamp, error: String },
    DeadLetter { error: String },
}

#[async_trait]
pub trait EmailStore: Send + Sync + 'static {
    /// Stores a request, committed before it returns; a known idempotency key returns the original.
    async fn enqueue(&self, email: NewEmail) -> Result<Enqueued, StoreError>;

    async fn get(&self, id: &str) -> Result<Option<EmailRecord>, StoreError>;

    /// The email stored under an idempotency key.
    async fn by_key(&self, key: &str) -> Result<Option<EmailRecord>, StoreError>;

    /// Leases up to `limit` pending emails due at `now` (oldest due first) for `lease`, counting the attempt.
    async fn claim(&self, now: Timestamp, lease: Duration, limit: usize) -> Result<Vec<Claimed>, StoreError>;

    /// Records how the attempt on a claimed email ended. An email already sent is left as it is.
    async fn settle(&self, id: &str, outcome: Settle) -> Result<(), StoreError>;

    /// When the next pending email is due (its lease over, if it has one): the sender sleeps until then.
    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Cancels the pending "if unread after" emails of `user`'s notifications `ids` (all of the user's with
    /// `None`), because they were read; returns how many. An attempt under way is not stopped: if it
    /// succeeds the email is `sent`, as it was.
    async fn cancel_unread(&self, user: &UserId, ids: Option<&[NotificationId]>) -> Result<u64, StoreError>;

    async fn health(&self) -> StoreHealth;

    async fn shutdown(&self);
}

pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
