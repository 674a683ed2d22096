//! The sender: one task per node that leases due emails from the outbox and sends them, at most
//! `smtp_concurrency` at once, then records how each attempt ended.
//!
//! - **Sent is recorded right after the 250**, before anything else happens to that email; the record is
//!   retried while the store is away, within the email's lease. The only way one email goes out twice is a
//!   process dying (or the store staying away for the whole lease) between the server's 250 and that
//!   record: the email is then due again once its lease runs out, and goes out with the same Message-ID.
//! - **Failures**: a 5xx reply is dead-lettered at once; anything else is retried with exponential backoff
//!   and jitter (the RabbitMQ consumers' [`retry::next_step`]) until the attempts run out.
//! - **Waking**: a new request wakes the task at once; otherwise it sleeps until the next email is due (or
//!   a lease runs out), and at most [`POLL`], so that requests taken by another node are found too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::smtp::Mailer;
use crate::config::amqp::RetryPolicy;
use crate::domain::Timestamp;
use crate::ingest::amqp::message::short;
use crate::ingest::amqp::retry::{self, Step};
use crate::store::emails::{millis, Claimed, EmailStore, Settle, ERROR_MAX};

/// The longest the sender sleeps without looking at the outbox.
const POLL: Duration = Duration::from_secs(1);
/// The shortest: an email due "now" that another node holds must not make this one spin.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// What `/health` says of the SMTP server: from the check at start, then from every send.
#[derive(Debug, Clone, Serialize)]
pub struct SmtpHealth {
    pub status: &'static str,
    pub server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub checked_at: Option<Timestamp>,
    pub in_flight: usize,
    pub pool_max: usize,
}

pub struct SmtpState {
    health: Mutex<SmtpHealth>,
}

impl SmtpState {
    pub fn new(server: String, pool_max: usize) -> Self {
        metrics::gauge!("herald_smtp_pool_max").set(pool_max as f64);
        Self {
            health: Mutex::new(SmtpHealth {
                status: "unknown",
                server,
                last_error: None,
                checked_at: None,
                in_flight: 0,
                pool_max,
            }),
        }
    }

    pub fn health(&self) -> SmtpHealth {
        self.health.lock().map(|h| h.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    pub fn record(&self, result: Result<(), &str>) {
        metrics::gauge!("herald_smtp_up").set(if result.is_ok() { 1.0 } else { 0.0 });
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health.status = if result.is_ok() { "ok" } else { "down" };
        health.last_error = result.err().map(|e| short(e, ERROR_MAX));
        health.checked_at = Some(Timestamp::now());
    }

    fn in_flight(&self, delta: isize) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health.in_flight = health.in_flight.saturating_add_signed(delta);
        metrics::gauge!("herald_smtp_sends_in_flight").set(health.in_flight as f64);
    }
}

pub struct Sender {
    pub store: Arc<dyn EmailStore>,
    pub mailer: Arc<Mailer>,
    pub retry: RetryPolicy,
    pub concurrency: usize,
    pub wake: Arc<Notify>,
    pub smtp: Arc<SmtpState>,
    /// How long a claimed email is this node's: longer than any one send can take.
    pub lease: Duration,
}

impl Sender {
    /// Runs until `stop`, then waits for the sends under way (the caller bounds how long).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let attempts = TaskTracker::new();
        let mut store_failures = 0u32;
        while !stop.is_cancelled() {
            let free = permits.available_permits();
            if free > 0 {
                match self.store.claim(Timestamp::now(), self.lease, free).await {
                    Ok(batch) => {
                        store_failures = 0;
                        let full = batch.len() == free;
                        for email in batch {
                            // There are `free` permits and only this task takes them.
                            let Ok(permit) = permits.clone().acquire_owned().await else { return };
                            attempts.spawn(self.clone().attempt(email, permit));
                        }
                        if full {
                            continue;
                        }
                    }
                    Err(e) => {
                        store_failures = store_failures.saturating_add(1);
                        tracing::warn!(error = %e, "the email sender cannot read the outbox");
                        let wait = (POLL * store_failures).min(Duration::from_secs(10));
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = tokio::time::sleep(wait) => continue,
                        }
                    }
                }
            }
            let wait = if permits.available_permits() == 0 { POLL } else { self.until_due().await };
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        attempts.close();
        attempts.wait().await;
    }

    async fn until_due(&self) -> Duration {
        match self.store.next_due().await {
            Ok(Some(due)) => {
                let ms = due.0.saturating_sub(Timestamp::now().0).max(0) as u64;
                Duration::from_millis(ms).clamp(MIN_WAIT, POLL)
            }
            Ok(None) | Err(_) => POLL,
        }
    }

    async fn attempt(self: Arc<Self>, email: Claimed, permit: OwnedSemaphorePermit) {
        let kind = email.kind.clone();
        self.smtp.in_flight(1);
        let started = Instant::now();
        let result = self.mailer.send(&email).await;
        metrics::histogram!("herald_email_send_duration_seconds", "type" => kind.clone())
            .record(started.elapsed().as_secs_f64());
        self.smtp.in_flight(-1);
        let now = Timestamp::now();
        let outcome = match result {
            Ok(()) => {
                self.smtp.record(Ok(()));
                metrics::counter!("herald_emails_sent_total", "type" => kind.clone()).increment(1);
                tracing::info!(id = email.id, r#type = kind, attempt = email.attempt, "email sent");
                Settle::Sent { at: now }
            }
            Err(failure) => {
                // A reply means the server is up and refused this one; no reply means it is not reachable.
                self.smtp.record(if failure.replied { Ok(()) } else { Err(&failure.error) });
                let reason = if failure.permanent { "permanent" } else { "transient" };
                metrics::counter!("herald_emails_failed_total", "type" => kind.clone(), "reason" => reason)
                    .increment(1);
                let step = if failure.permanent {
                    Step::DeadLetter { attempts: email.attempt }
                } else {
                    retry::next_step(&self.retry, email.attempt.saturating_sub(1), rand::random::<f64>())
                };
                match step {
                    Step::Retry { wait, .. } => {
                        metrics::counter!("herald_emails_retried_total", "type" => kind.clone()).increment(1);
                        tracing::warn!(
                            id = email.id,
                            r#type = kind,
                            attempt = email.attempt,
                            error = failure.error,
                            retry_in_ms = wait.as_millis() as u64,
                            "email not sent; retrying"
                        );
                        Settle::Retry {
                            at: Timestamp(now.0.saturating_add(millis(wait))),
                            error: short(&failure.error, ERROR_MAX),
                        }
                    }
                    Step::DeadLetter { attempts } => {
                        metrics::counter!("herald_emails_dead_lettered_total", "type" => kind.clone(), "reason" => reason)
                            .increment(1);
                        tracing::warn!(
                            id = email.id,
                            r#type = kind,
                            attempts,
                            error = failure.error,
                            "email dead-lettered"
                        );
                        let error = if failure.permanent {
                            failure.error
                        } else {
                            format!("{attempts} attempts failed; the last: {}", failure.error)
                        };
                        Settle::DeadLetter { error: short(&error, ERROR_MAX) }
                    }
                }
            }
        };
        self.record(&email.id, outcome).await;
        drop(permit);
        self.wake.notify_one();
    }

    /// Records an outcome, retrying while the store is away, for at most half the lease: past it another
    /// attempt may start.
    async fn record(&self, id: &str, outcome: Settle) {
        let deadline = Instant::now() + self.lease / 2;
        let mut wait = Duration::from_millis(50);
        loop {
            match self.store.settle(id, outcome.clone()).await {
                Ok(()) => return,
                Err(e) if Instant::now() + wait < deadline => {
                    tracing::warn!(id, error = %e, "cannot record an email's outcome yet; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(id, error = %e, "could not record an email's outcome; it will be attempted again");
                    return;
                }
            }
        }
    }
}
