//! The email channel: typed requests (`create-account`, `welcome-message`, …) rendered from templates
//! (`templates`: seven built in, overridable and extensible from `HERALD_EMAIL_TEMPLATES`), checked and
//! rendered when accepted (`request`), stored in the outbox (`store::emails`) before they are
//! acknowledged, and sent over SMTP (`smtp`) by the sender (`sender`) with retries and a dead-letter
//! status. Requests come from `POST /api/v1/emails` and the `email_queue` consumer; `herald email types`
//! and `herald email preview` show the templates.

pub mod notifications;
pub mod request;
pub mod sender;
pub mod smtp;
pub mod templates;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use request::{Composer, EmailInput, RequestError};
pub use templates::{Catalog, EmailType, Origin, Rendered, TemplateError};

use crate::config::amqp::RetryPolicy;
use crate::config::SmtpSettings;
use crate::domain::Timestamp;
use crate::store::directory::DirectoryStore;
use crate::store::emails::{EmailStore, Enqueued};
use crate::store::StoreError;
use sender::{Sender, SmtpState};
use smtp::Mailer;

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The running channel: what the API and the consumer submit to, and the sender behind it.
pub struct EmailChannel {
    composer: Composer,
    store: Arc<dyn EmailStore>,
    /// Recipients and preferences, for notifications' emails.
    directory: Arc<dyn DirectoryStore>,
    wake: Arc<Notify>,
    smtp: Arc<SmtpState>,
    stop: CancellationToken,
    sender: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl EmailChannel {
    /// Starts the sender and checks the SMTP server in the background: a server that is down is reported
    /// in `/health` (and emails wait in the outbox), never a refusal to start.
    pub fn start(
        settings: &SmtpSettings,
        retry: RetryPolicy,
        catalog: Catalog,
        store: Arc<dyn EmailStore>,
        directory: Arc<dyn DirectoryStore>,
    ) -> Result<Self, smtp::SetupError> {
        let mailer = Arc::new(Mailer::new(settings)?);
        let composer = Composer::new(catalog, mailer.from());
        let smtp = Arc::new(SmtpState::new(mailer.server().to_owned(), settings.concurrency));
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        {
            let (mailer, smtp) = (mailer.clone(), smtp.clone());
            tokio::spawn(async move {
                let result = mailer.check().await;
                match &result {
                    Ok(()) => tracing::info!(server = mailer.server(), "SMTP server reachable"),
                    Err(error) => {
                        tracing::warn!(server = mailer.server(), error, "SMTP server not reachable; emails wait")
                    }
                }
                smtp.record(result.as_ref().map(|_| ()).map_err(String::as_str));
            });
        }
        let sender = Arc::new(Sender {
            store: store.clone(),
            mailer,
            retry,
            concurrency: settings.concurrency,
            wake: wake.clone(),
            smtp: smtp.clone(),
            lease: (settings.timeout * 6).max(Duration::from_secs(120)),
        });
        let handle = tokio::spawn(sender.run(stop.child_token()));
        Ok(Self { composer, store, directory, wake, smtp, stop, sender: Mutex::new(Some(handle)) })
    }

    /// Checks, renders and stores one request (committed when this returns), and wakes the sender.
    pub async fn submit(&self, input: EmailInput) -> Result<Enqueued, SubmitError> {
        let email = self.composer.compose(input, Timestamp::now())?;
        let kind = email.kind.clone();
        let enqueued = self.store.enqueue(email).await?;
        if let Enqueued::Created(record) = &enqueued {
            metrics::counter!("herald_emails_queued_total", "type" => kind.clone()).increment(1);
            // Counted for the email stored, not per render: a notification's email is also rendered once
            // at the door to check it.
            metrics::counter!("herald_email_template_renders_total", "type" => kind.clone()).increment(1);
            tracing::debug!(id = record.id, r#type = kind, "email queued");
            self.wake.notify_one();
        }
        Ok(enqueued)
    }

    pub fn store(&self) -> &Arc<dyn EmailStore> {
        &self.store
    }

    /// `/health`'s `email` section; `ok` is false only when the outbox is down (SMTP down is a warning).
    pub async fn health(&self) -> (bool, Value) {
        let outbox = self.store.health().await;
        let smtp = self.smtp.health();
        let status = if !outbox.ok {
            "down"
        } else if smtp.status == "ok" {
            "ok"
        } else {
            "degraded"
        };
        let body = json!({
            "status": status,
            "outbox": { "status": if outbox.ok { "ok" } else { "down" }, "backend": outbox.backend, "detail": outbox.detail },
            "smtp": smtp,
        });
        (outbox.ok, body)
    }

    /// Stops taking new work, waits (at most `timeout`) for the sends under way, and closes the outbox.
    pub async fn shutdown(&self, timeout: Duration) {
        self.stop.cancel();
        let handle = self.sender.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            if tokio::time::timeout(timeout, handle).await.is_err() {
                tracing::warn!("some emails were still being sent at the stop; they are attempted again later");
            }
        }
        self.store.shutdown().await;
    }
}
