//! Notifications that also go by email (`"channels": ["inbox", "email"]`).
//!
//! A notification is stored in the inbox first, exactly as any other; then its email is decided and
//! queued in the outbox, before the publisher is answered (or the message acked):
//!
//! 1. **Preferences**: a user who turned notification emails off, or off for this type, gets none
//!    (`skipped`, `opted_out`).
//! 2. **Recipient**: the request's `email.to`, else the user's address in the directory; neither is
//!    `skipped`, `no_address`.
//! 3. **Rendering**: the template the request names, else the generic `notification`, sees the
//!    notification's `data` fields at the top level, and beside them `notification` (id, type, title,
//!    message, data, created_at) and `user` (id, email, display_name), which win over `data` fields of the
//!    same names.
//! 4. **Queued** with the idempotency key `notification:<id>`, so a publish repeated with its idempotency
//!    key (or a redelivered message) finds the email it queued before rather than queueing another. With
//!    `email_if_unread_after` the email's first attempt waits that long, and reading the notification
//!    first cancels it ([`EmailChannel::notifications_read`]); changing preferences cancels what they now
//!    forbid.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{EmailChannel, EmailInput, RequestError};
use crate::domain::{EmailDelivery, NewNotification, Notification, NotificationId, Timestamp, UserId};
use crate::store::directory::DirectoryEntry;
use crate::store::emails::{millis, EmailRecord, Enqueued, NotificationLink};
use crate::store::StoreError;

/// Why a notification's email was not queued.
pub mod skipped {
    pub const OPTED_OUT: &str = "opted_out";
    pub const NO_ADDRESS: &str = "no_address";
}

/// What became of a notification's email, as the publish response shows it under `email`.
#[derive(Debug, Clone, Serialize)]
pub struct EmailSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `queued` (or where the email stands already, for a repeated publish), or `skipped`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
}

impl EmailSummary {
    fn skipped(reason: &'static str) -> Self {
        Self { id: None, status: "skipped", reason: Some(reason), next_attempt_at: None }
    }

    fn queued(record: &EmailRecord) -> Self {
        Self {
            id: Some(record.id.clone()),
            status: record.status.as_str(),
            reason: None,
            next_attempt_at: record.next_attempt_at,
        }
    }
}

/// The variables a notification's email template sees.
fn context(n: &Notification, entry: Option<&DirectoryEntry>) -> Value {
    let data: Value = serde_json::from_str(n.data.get()).unwrap_or_else(|_| Value::Object(Map::new()));
    let mut vars = match &data {
        Value::Object(fields) => fields.clone(),
        _ => Map::new(),
    };
    vars.insert(
        "notification".into(),
        serde_json::json!({
            "id": n.id.to_string(),
            "type": n.kind,
            "title": n.title,
            "message": n.message,
            "data": data,
            "created_at": n.created_at.to_rfc3339(),
        }),
    );
    vars.insert(
        "user".into(),
        serde_json::json!({
            "id": n.user_id.as_str(),
            "email": entry.and_then(|e| e.email.as_deref()),
            "display_name": entry.and_then(|e| e.display_name.as_deref()),
        }),
    );
    Value::Object(vars)
}

impl EmailChannel {
    /// Checks, before the notification is stored, that its email can be rendered: the template exists and
    /// has what it needs, and a given recipient is an address. The directory is not read here, so a
    /// template that needs the user's entry to render is found out only when the email is queued.
    pub fn check_notification(&self, item: &NewNotification) -> Result<(), RequestError> {
        let Some(delivery) = &item.email else { return Ok(()) };
        // As it will be once stored, with an id of the right form.
        let vars = context(&Notification::created(item, NotificationId::from_ulid(ulid::Ulid::new())), None);
        let input = EmailInput {
            kind: delivery.template.clone(),
            data: vars,
            to: Some(delivery.to.clone().unwrap_or_else(|| "check@example.invalid".to_owned())),
            idempotency_key: None,
        };
        self.composer.compose(input, Timestamp::now()).map(drop)
    }

    /// Decides and queues the email of a notification just stored (or found stored, for a repeated
    /// publish): committed to the outbox when this returns. A render that fails now (a template that
    /// needed the directory entry) is a `skipped` with the reason logged.
    pub async fn notification(
        &self,
        notification: &Notification,
        delivery: &EmailDelivery,
    ) -> Result<EmailSummary, StoreError> {
        let user = &notification.user_id;
        let skip = |reason: &'static str| {
            metrics::counter!("herald_emails_skipped_total", "type" => delivery.template.clone(), "reason" => reason)
                .increment(1);
            EmailSummary::skipped(reason)
        };
        let key = format!("notification:{}", notification.id);
        // A repeated publish: the email queued the first time, whatever preferences say now.
        if let Some(record) = self.store.by_key(&key).await? {
            return Ok(EmailSummary::queued(&record));
        }
        if !self.directory.preferences(user).await?.allows_email(&notification.kind) {
            return Ok(skip(skipped::OPTED_OUT));
        }
        let entry = self.directory.user(user).await?;
        let Some(to) = delivery.to.clone().or_else(|| entry.as_ref().and_then(|e| e.email.clone())) else {
            return Ok(skip(skipped::NO_ADDRESS));
        };
        let vars = context(notification, entry.as_ref());
        let input =
            EmailInput { kind: delivery.template.clone(), data: vars, to: Some(to), idempotency_key: Some(key) };
        let now = Timestamp::now();
        let mut email = match self.composer.compose(input, now) {
            Ok(email) => email,
            Err(e) => {
                tracing::warn!(notification = %notification.id, error = %e, "a notification's email cannot be rendered");
                return Ok(skip(e.code()));
            }
        };
        if let Some(wait) = delivery.if_unread_after {
            email.due_at = Timestamp(notification.created_at.0.saturating_add(millis(wait)));
        }
        email.link = Some(NotificationLink {
            user_id: user.clone(),
            notification_id: notification.id,
            notification_type: notification.kind.clone(),
            unless_read: delivery.if_unread_after.is_some(),
        });
        let kind = email.kind.clone();
        let enqueued = self.store.enqueue(email).await?;
        if let Enqueued::Created(record) = &enqueued {
            metrics::counter!("herald_emails_queued_total", "type" => kind.clone()).increment(1);
            metrics::counter!("herald_email_template_renders_total", "type" => kind).increment(1);
            tracing::debug!(id = record.id, notification = %notification.id, "notification email queued");
            self.wake.notify_one();
        }
        Ok(EmailSummary::queued(enqueued.record()))
    }

    /// The user read these notifications (all of theirs, with `None`): their pending "if unread after"
    /// emails are cancelled. Best effort: the read is committed already, so a failure here is logged and
    /// counted, and that email may still go out.
    pub async fn notifications_read(&self, user: &UserId, ids: Option<&[NotificationId]>) {
        match self.store.cancel_unread(user, ids).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("herald_emails_cancelled_total", "reason" => "read").increment(n);
                tracing::debug!(user = %user, cancelled = n, "emails cancelled: their notifications were read");
            }
            Err(e) => {
                metrics::counter!("herald_email_cancel_failures_total").increment(1);
                tracing::warn!(user = %user, error = %e, "could not cancel the emails of notifications just read");
            }
        }
    }
}
