//! The PostgreSQL store: the inbox in a database that several Herald nodes share.
//!
//! - `schema`: the tables, their versioned migrations, rows to notifications.
//! - `writer`: this node's writer task; group commit, and the per-user lock that orders ids across nodes.
//! - `creates`: new rows as `unnest` arrays, and the one-statement path for a group of creates only.
//! - `reader`: pages, counts and snapshots, straight from the pool.
//! - `topics`: the topic store ([`PgTopics`]), with a writer of its own and the per-topic lock that orders
//!   each topic's events across nodes.
//! - `emails`: the email outbox ([`PgEmails`]), leased row by row with `SKIP LOCKED`, so that the nodes share
//!   its work and an email is attempted by one of them at a time.
//!
//! Readers share a pool; the writer has two connections of its own. When the database is down, a call waits
//! at most [`ACQUIRE_TIMEOUT`] for a connection and then fails as unavailable (503 `store_unavailable`),
//! and the pool reconnects by itself once the database is back.

mod correlations;
mod emails;
mod reader;
mod schema;
mod topics;

pub use emails::PgEmails;
pub use schema::latest_version;
pub use topics::PgTopics;
mod creates;
mod writer;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use self::writer::{Command, PendingDelivered, Writer};
use crate::domain::{InboxEvent, NewNotification, NotificationId, UserId};
use crate::store::{InsertOutcome, ListQuery, MarkReadOutcome, Page, Since, Snapshot, Store, StoreError, StoreHealth};

/// Commands waiting for the writer; when full, callers wait, which bounds memory under overload.
const COMMAND_QUEUE: usize = 4096;
/// Reading connections per node (the writer has two of its own).
const READERS: u32 = 16;
/// How long a call waits for a connection before it fails as unavailable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often delivered marks are recorded.
const TICK: Duration = Duration::from_millis(200);
/// How long `/health` waits for the database to answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum OpenError {
    #[error("the database URL is not valid: {0}")]
    Url(String),
    #[error("could not connect to PostgreSQL: {0}")]
    Connect(String),
    #[error(
        "the database holds migration {0}, which this Herald does not know (it knows up to {1}): a newer Herald \
         has migrated it; run that version or a later one"
    )]
    Newer(i64, i64),
    #[error("migrating the database: {0}")]
    Migrate(String),
}

/// Maps a database error to what a caller is told: the database not being there is `Unavailable` (503), a
/// closed pool is `Closed`, anything else is internal.
pub fn sql_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolClosed => StoreError::Closed,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(ref d) => {
            // Class 08: connection exceptions; 53: insufficient resources; 57P: the server shutting down or
            // a backend terminated; 57014: a statement cancelled; 40: a transaction that met a concurrent one
            // (after the writer's retries); 25006: a read-only server (a standby, after a failover); 28: the
            // login refused.
            let code = d.code().unwrap_or_default();
            if ["08", "53", "57P", "57014", "40", "25006", "28"].iter().any(|class| code.starts_with(class)) {
                StoreError::Unavailable(e.to_string())
            } else {
                StoreError::Internal(e.to_string())
            }
        }
        other => StoreError::Internal(other.to_string()),
    }
}

/// What `/health` says of a store: the database answering a query within [`HEALTH_TIMEOUT`], and its
/// writer (named `writer`) still running.
async fn health(pool: &PgPool, where_: &str, writer_stopped: bool, writer: &str) -> StoreHealth {
    let ping = tokio::time::timeout(HEALTH_TIMEOUT, sqlx::query("SELECT 1").execute(pool)).await;
    let (ok, detail) = match ping {
        _ if writer_stopped => (false, format!("the {writer} for {where_} has stopped")),
        Ok(Ok(_)) => (true, where_.to_owned()),
        Ok(Err(e)) => (false, format!("{where_}: {}", sql_error(e))),
        Err(_) => (false, format!("{where_}: no answer in {} s", HEALTH_TIMEOUT.as_secs())),
    };
    StoreHealth { ok, backend: "postgres", detail }
}

/// Where the database is, for logs and `/health`: host, port and database, never the user or password.
fn describe(options: &PgConnectOptions) -> String {
    format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or("postgres"))
}

async fn connect(url: &str, size: u32) -> Result<(PgPool, String), OpenError> {
    let mut options = PgConnectOptions::from_str(url)
        // The error may quote the URL, which may hold a password.
        .map_err(|_| OpenError::Url("expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE".into()))?;
    // Named in `pg_stat_activity`, unless the URL names it (e.g. one name per node).
    if !url.contains("application_name=") {
        options = options.application_name("herald");
    }
    let where_ = describe(&options);
    let pool = PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| OpenError::Connect(format!("{where_}: {e}")))?;
    Ok((pool, where_))
}

async fn migrate(pool: &PgPool) -> Result<(), OpenError> {
    schema::migrator().run(pool).await.map_err(|e| match e {
        sqlx_core::migrate::MigrateError::VersionMissing(version) => {
            OpenError::Newer(version, schema::latest_version())
        }
        other => OpenError::Migrate(other.to_string()),
    })
}

/// Runs the migrations this build knows (for `herald migrate`), and returns the schema version.
pub async fn run_migrations(url: &str) -> Result<i64, OpenError> {
    let (pool, _) = connect(url, 1).await?;
    migrate(&pool).await?;
    pool.close().await;
    Ok(schema::latest_version())
}

pub struct Postgres {
    pool: PgPool,
    writer_pool: PgPool,
    where_: String,
    commands: mpsc::Sender<Command>,
    delivered: PendingDelivered,
    writer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Postgres {
    /// Connects, migrates (refusing a schema newer than this build's), and starts the writer task. Committed
    /// changes are sent on `feed`, in this node's commit order.
    pub async fn open(url: &str, feed: mpsc::Sender<Vec<InboxEvent>>) -> Result<Self, OpenError> {
        Self::open_with(url, READERS, feed).await
    }

    /// [`Postgres::open`] with `readers` reading connections.
    pub async fn open_with(url: &str, readers: u32, feed: mpsc::Sender<Vec<InboxEvent>>) -> Result<Self, OpenError> {
        let (pool, where_) = connect(url, readers.max(1)).await?;
        migrate(&pool).await?;
        // The writer's own connections: readers holding every pooled connection (a reconnect storm reading
        // backlogs) must not make writes wait for one. One for the groups, one for the delivered marks.
        let (writer_pool, _) = connect(url, 2).await?;
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let delivered: PendingDelivered = Arc::new(Mutex::new(Vec::new()));
        let writer = Writer { pool: writer_pool.clone(), commands: rx, feed, ids: writer::NodeIds::new(), conn: None };
        let handle = tokio::spawn(writer.run());
        spawn_delivered_marks(commands.downgrade(), writer_pool.clone(), delivered.clone());
        tracing::info!(database = %where_, "PostgreSQL store open");
        Ok(Self { pool, writer_pool, where_, commands, delivered, writer: tokio::sync::Mutex::new(Some(handle)) })
    }

    async fn write<T>(&self, make: impl FnOnce(writer::Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Records the delivered marks every [`TICK`], on the writer's second connection, beside the writer rather
/// than in its groups. Ends with the store.
fn spawn_delivered_marks(commands: mpsc::WeakSender<Command>, pool: PgPool, delivered: PendingDelivered) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(TICK).await;
            // After a shutdown (which records the last marks itself) the pool is closed.
            if pool.is_closed() || commands.upgrade().is_none() {
                return;
            }
            writer::record_delivered(&pool, &delivered).await;
        }
    });
}

#[async_trait]
impl Store for Postgres {
    async fn insert(&self, items: Vec<NewNotification>) -> Result<Vec<InsertOutcome>, StoreError> {
        self.write(|reply| Command::Insert { items, reply }).await
    }

    async fn list(&self, user: &UserId, query: ListQuery) -> Result<Page, StoreError> {
        reader::list(&self.pool, user, query).await
    }

    async fn unread_count(&self, user: &UserId) -> Result<u64, StoreError> {
        reader::unread_count(&self.pool, user).await
    }

    async fn snapshot(&self, user: &UserId, since: Since) -> Result<Snapshot, StoreError> {
        reader::snapshot(&self.pool, user, since).await
    }

    async fn positions(&self, users: &[UserId]) -> Result<Vec<u64>, StoreError> {
        reader::positions(&self.pool, users).await
    }

    async fn mark_read(&self, user: &UserId, ids: Vec<NotificationId>) -> Result<MarkReadOutcome, StoreError> {
        let user = user.clone();
        self.write(|reply| Command::MarkRead { user, ids, reply }).await
    }

    async fn mark_all_read(&self, user: &UserId) -> Result<u64, StoreError> {
        let user = user.clone();
        self.write(|reply| Command::MarkAllRead { user, reply }).await
    }

    fn mark_delivered(&self, user: &UserId, ids: &[NotificationId]) {
        // The writer's tick task records them (see `spawn_delivered_marks`).
        crate::store::queue_delivered(&self.delivered, ids.len(), ids.iter().map(|id| (user.clone(), *id)));
    }

    async fn health(&self) -> StoreHealth {
        health(&self.pool, &self.where_, self.commands.is_closed(), "writer").await
    }

    async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = done.await;
        }
        if let Some(handle) = self.writer.lock().await.take() {
            let _ = handle.await;
        }
        writer::record_delivered(&self.writer_pool, &self.delivered).await;
        self.pool.close().await;
        self.writer_pool.close().await;
    }
}
