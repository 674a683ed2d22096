//! The Redis mirror: `SET <key> <status> EX <ttl>` for each status change, written by one task that
//! pipelines up to [`BATCH`] statuses per round trip from the [`Pending`] map.
//!
//! When Redis is down, each failed round trip is logged (without the URL's password), counted
//! (`herald_redis_mirror_errors_total`) and retried after a backoff (100 ms doubling to 10 s, reset by a
//! success); meanwhile the statuses wait in the bounded map, the newest per key. Nothing in here is ever
//! awaited by the stream: [`RedisMirror::offer`] takes a short lock and returns.
//!
//! The connection is the client's `ConnectionManager`, created lazily, so a start with Redis unreachable
//! does not fail: the task connects in the background (its first round trip is a `PING`, and while nothing
//! waits a `PING` every few seconds keeps `/health` truthful). The manager reconnects by itself: a command
//! that finds the connection dropped fails and starts a reconnect, which the next command awaits.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisResult};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Backoff, Offered, Pending, Write, MAX_PENDING};
use crate::config::Secret;
use crate::topics::{Namespaces, SharedChange, TopicChange};

/// Statuses per pipelined round trip.
const BATCH: usize = 500;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// While nothing waits, how often a `PING` checks that Redis is still there.
const IDLE_PING: Duration = Duration::from_secs(5);
/// The manager's own reconnect after a failure tries three times, with at most 0.6 s between the tries (see
/// [`manager`]). A retry after a longer backoff would find that reconnect long finished (failed, if Redis
/// was still down then), so it starts from a fresh manager, which connects at the moment of the retry.
const RECONNECT_WINDOW: Duration = Duration::from_secs(1);

/// The mirror as `/health` shows it. It is auxiliary: "down" never makes the node unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorHealth {
    /// "ok" once a round trip has succeeded and the last one did; "down" before and after a failed one.
    pub status: &'static str,
    pub pending: usize,
    /// Why the last round trip failed, while it is down; never holds the URL's password.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Link {
    up: bool,
    last_error: Option<String>,
}

struct Inner {
    pending: Mutex<Pending>,
    /// Wakes the task when a status starts waiting.
    wake: Notify,
    link: Mutex<Link>,
    /// Cancelled at shutdown: the task writes what waits, then ends.
    closing: CancellationToken,
}

impl Inner {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn link(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct RedisMirror {
    inner: Arc<Inner>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// The key, status and TTL to mirror for a committed change, if it changed the status of a topic whose
/// namespace names a key.
fn mirrored<'a>(change: &'a TopicChange, namespaces: &Namespaces) -> Option<(String, &'a str, Duration)> {
    if !change.status_changed {
        return None;
    }
    let status = change.state.status.as_deref()?;
    let policy = namespaces.of(&change.topic);
    Some((policy.redis_key_for(&change.topic)?, status, policy.redis_ttl))
}

impl RedisMirror {
    /// Starts the mirror's task; it connects in the background, so an unreachable Redis is no error here.
    /// Call it within the tokio runtime.
    pub fn start(url: &Secret) -> anyhow::Result<Self> {
        let redact = Redactor::new(url.expose());
        let client = Client::open(url.expose())
            .map_err(|e| anyhow::anyhow!("the Redis URL: {}", redact.clean(&e.to_string())))?;
        let conn =
            manager(&client).map_err(|e| anyhow::anyhow!("the Redis client: {}", redact.clean(&e.to_string())))?;
        let inner = Arc::new(Inner {
            pending: Mutex::new(Pending::new(MAX_PENDING)),
            wake: Notify::new(),
            link: Mutex::new(Link::default()),
            closing: CancellationToken::new(),
        });
        let task = tokio::spawn(run(inner.clone(), client, conn, redact));
        Ok(Self { inner, task: Mutex::new(Some(task)) })
    }

    /// Queues the status of every change in `changes` that changed one, if its namespace is mirrored. Never
    /// blocks or waits: the lock it takes is held only by other short sections.
    pub fn offer(&self, changes: &[SharedChange], namespaces: &Namespaces) {
        let metrics = crate::telemetry::metrics();
        let (mut queued, mut dropped, mut burst) = (false, 0u64, false);
        let mut pending = None;
        for (key, status, ttl) in changes.iter().filter_map(|c| mirrored(c, namespaces)) {
            let pending = pending.get_or_insert_with(|| self.inner.pending());
            match pending.offer(key, status, ttl) {
                Offered::Queued | Offered::Replaced => queued = true,
                Offered::Dropped { first } => {
                    dropped += 1;
                    burst |= first;
                }
            }
        }
        let Some(pending) = pending else { return };
        metrics.redis_mirror_pending.set(pending.len() as f64);
        drop(pending);
        if dropped > 0 {
            metrics.redis_mirror_dropped.increment(dropped);
        }
        if burst {
            tracing::warn!(
                max = MAX_PENDING,
                "the queue for Redis is full: new topic statuses are not mirrored until it drains"
            );
        }
        if queued {
            self.inner.wake.notify_one();
        }
    }

    pub fn health(&self) -> MirrorHealth {
        let pending = self.inner.pending().len();
        let link = self.inner.link();
        MirrorHealth {
            status: if link.up { "ok" } else { "down" },
            pending,
            last_error: if link.up { None } else { link.last_error.clone() },
        }
    }

    /// Writes what waits, for at most `within`, then stops the task. Call it after the last `offer`.
    pub async fn shutdown(&self, within: Duration) {
        self.inner.closing.cancel();
        let Some(mut task) = self.task.lock().unwrap_or_else(PoisonError::into_inner).take() else { return };
        if tokio::time::timeout(within, &mut task).await.is_err() {
            task.abort();
            let left = self.inner.pending().len();
            tracing::warn!(left, "could not write every topic status to Redis before stopping");
        }
    }
}

fn manager(client: &Client) -> RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_millis(400))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

async fn write(conn: &mut ConnectionManager, batch: &[Write]) -> RedisResult<()> {
    let mut pipe = ::redis::pipe();
    for w in batch {
        pipe.cmd("SET").arg(&w.key).arg(&w.status).arg("EX").arg(w.ttl.as_secs().max(1)).ignore();
    }
    pipe.query_async(conn).await
}

/// The task: write what waits, in batches; when nothing does, wait for a status (or ping now and then);
/// after a failure, wait out the backoff and retry. At shutdown, write what waits and end.
async fn run(inner: Arc<Inner>, client: Client, mut conn: ConnectionManager, redact: Redactor) {
    let metrics = crate::telemetry::metrics();
    let mut backoff = Backoff::new(FIRST_RETRY, MAX_RETRY);
    let mut last_ok: Option<Instant> = None;
    loop {
        let batch = inner.pending().batch(BATCH);
        let was_closing = inner.closing.is_cancelled();
        let result = if !batch.is_empty() {
            write(&mut conn, &batch).await
        } else if was_closing {
            return;
        } else if let Some(ping_at) = last_ok.map(|at| at + IDLE_PING).filter(|at| *at > Instant::now()) {
            tokio::select! {
                () = inner.wake.notified() => {}
                () = inner.closing.cancelled() => {}
                () = tokio::time::sleep_until(ping_at) => {}
            }
            continue;
        } else {
            ::redis::cmd("PING").query_async(&mut conn).await
        };
        match result {
            Ok(()) => {
                if !batch.is_empty() {
                    // Counted before they leave the map, so that nothing pending means everything counted.
                    metrics.redis_mirror_writes.increment(batch.len() as u64);
                    let mut pending = inner.pending();
                    pending.written(&batch);
                    metrics.redis_mirror_pending.set(pending.len() as f64);
                }
                backoff.reset();
                last_ok = Some(Instant::now());
                let mut link = inner.link();
                if !link.up {
                    tracing::info!("mirroring topic statuses to Redis: connected");
                }
                *link = Link { up: true, last_error: None };
            }
            Err(e) => {
                let error = redact.clean(&e.to_string());
                let wait = backoff.failed();
                metrics.redis_mirror_errors.increment(1);
                tracing::warn!(
                    error,
                    pending = inner.pending().len(),
                    retry_in_ms = wait.as_millis() as u64,
                    "could not reach Redis to mirror topic statuses; retrying"
                );
                *inner.link() = Link { up: false, last_error: Some(error) };
                last_ok = None;
                // A shutdown cuts one wait short, so what waits gets one more try at once.
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = inner.closing.cancelled(), if !was_closing => {}
                }
                if wait >= RECONNECT_WINDOW {
                    if let Ok(fresh) = manager(&client) {
                        conn = fresh;
                    }
                }
            }
        }
    }
}

/// Removes the URL's password from error texts before they are logged or shown. The client's messages do
/// not quote the URL, but nothing here relies on that.
struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    fn new(url: &str) -> Self {
        let authority = url.split_once("://").map_or("", |(_, rest)| rest);
        let authority = &authority[..authority.find(['/', '?', '#']).unwrap_or(authority.len())];
        let raw = authority.rsplit_once('@').and_then(|(userinfo, _)| userinfo.split_once(':')).map(|(_, pw)| pw);
        let mut secrets: Vec<String> = raw.into_iter().map(str::to_owned).collect();
        if let Some(decoded) = raw.map(percent_decode) {
            secrets.push(decoded);
        }
        secrets.retain(|s| !s.is_empty());
        Self { secrets }
    }

    fn clean(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_owned(), |text, secret| text.replace(secret.as_str(), "***"))
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;
    use crate::topics::{TopicEvent, TopicName, TopicState};

    fn change(topic: &str, status: Option<&str>, status_changed: bool) -> TopicChange {
        let topic = TopicName::parse(topic).unwrap();
        let event = TopicEvent {
            seq: 1,
            kind: "status".into(),
            status: status.map(Into::into),
            progress: None,
            data: Default::default(),
            at: Timestamp(0),
        };
        let mut state = TopicState::empty(topic.clone());
        state.apply(&event, Timestamp(0));
        TopicChange { topic, event, state, status_changed, received_at: None }
    }

    #[test]
    fn only_status_changes_of_mirrored_namespaces_are_mirrored() {
        let namespaces = Namespaces::default();
        assert_eq!(
            mirrored(&change("intent:7", Some("pending"), true), &namespaces),
            Some(("intent:status:7".to_owned(), "pending", Duration::from_secs(6 * 3600)))
        );
        // Progress within a status, or a repeat of it, rewrites nothing.
        assert_eq!(mirrored(&change("intent:7", Some("pending"), false), &namespaces), None);
        // `order` names no key.
        assert_eq!(mirrored(&change("order:7", Some("pending"), true), &namespaces), None);
    }

    #[test]
    fn passwords_never_reach_error_texts() {
        let redact = Redactor::new("redis://svc:p%40ss:w@host:6379/0");
        let cleaned = redact.clean("WRONGPASS p%40ss:w / p@ss:w");
        assert_eq!(cleaned, "WRONGPASS *** / ***");
        assert_eq!(Redactor::new("redis://host:6379").clean("refused"), "refused");
        assert_eq!(percent_decode("a%2Fb%zz%"), "a/b%zz%");
    }
}
