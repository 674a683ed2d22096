//! The PostgreSQL schema, its versioned migrations, and the mapping between rows and notifications.
//!
//! Migrations run at start and by `herald migrate`, through sqlx's migrator: each is recorded with a checksum
//! in `_sqlx_migrations`, under an advisory lock (nodes starting together migrate once), and a database that
//! holds a migration this build does not know (a newer Herald migrated it) is refused rather than used.
//!
//! The layout:
//! - `herald_users` holds, per user, the newest notification id and the total and unread counts. A write
//!   that creates notifications locks its users' rows first; that lock is what orders a user's notifications
//!   across nodes (see [`super::writer`]), and the counts change in the same transaction as the rows.
//! - `notifications` is clustered by its primary key `(user_id, id)`: a user's inbox is one index range, newest
//!   last. Ids are ULIDs stored as `uuid` (16 bytes, compared as bytes, so in ULID order). `data` is text: the
//!   JSON object exactly as the publisher sent it, sent on as is. Timestamps are milliseconds since the epoch.
//! - A partial index over unread rows serves the unread backlog and `mark_all_read` without reading the rest.
//! - User ids and idempotency keys are compared as bytes (`COLLATE "C"`, migration 4), not by the database's
//!   locale: cheaper in every index they lead, and right for opaque identifiers.
//! - `herald_topics`, `herald_topic_events` and `herald_correlations` are the topic store's (see
//!   [`super::topics`]): each topic's state, its bounded history, and chain transactions bound to topics.
//! - `herald_emails` is the email channel's outbox (migration 5, see [`super::emails`]); migration 6 ties
//!   emails to notifications and adds `herald_directory` and `herald_preferences` (see `store::directory`).
//! - `deliveries` records the first delivery of each notification, apart from it: a row appended, rather than
//!   an update of the notification's (wide, freshly written, so rarely updatable in place) row, which a run
//!   showed as most of the database's work under single publishes.

use std::borrow::Cow;

use serde_json::value::RawValue;
use sqlx::postgres::PgRow;
use sqlx::Row;
use sqlx_core::migrate::{Migration, MigrationType, Migrator};
use uuid::Uuid;

use crate::domain::{Notification, NotificationId, Timestamp, UserId};
use crate::store::StoreError;

/// Migrations in order: (version, description, SQL). Never edit one that has shipped: add the next.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "inbox",
        r#"
CREATE TABLE herald_users (
    user_id text PRIMARY KEY,
    last_id uuid,                      -- the user's newest notification id
    total   bigint NOT NULL DEFAULT 0,
    unread  bigint NOT NULL DEFAULT 0
);
CREATE TABLE notifications (
    user_id         text NOT NULL,
    id              uuid NOT NULL,     -- a ULID: sorts by creation time, increasing per user in commit order
    type            text NOT NULL,
    title           text,
    message         text,
    data            text NOT NULL,     -- a JSON object, stored as sent
    created_at      bigint NOT NULL,   -- milliseconds since the Unix epoch
    read_at         bigint,
    idempotency_key text,
    PRIMARY KEY (user_id, id)
);
CREATE UNIQUE INDEX notifications_idempotency
    ON notifications (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX notifications_unread ON notifications (user_id, id) WHERE read_at IS NULL;
CREATE TABLE deliveries (
    user_id text NOT NULL,
    id      uuid NOT NULL,             -- the notification's
    at      bigint NOT NULL,           -- when it was first written to a live connection
    PRIMARY KEY (user_id, id)
);
"#,
    ),
    (
        2,
        "per-user event sequence",
        r#"
-- How many events (creates, reads, read-alls) the user has had, in commit order: each event's `seq` is this
-- value after it, so a node receiving events from others can reorder them and notice one missing.
ALTER TABLE herald_users ADD COLUMN seq bigint NOT NULL DEFAULT 0;
"#,
    ),
    (
        3,
        "topics",
        r#"
-- Each topic's latest state. A row whose expires_at has passed is unknown to readers (the sweep deletes it
-- later); a row with expires_at 0 is a placeholder that an append made to lock a new topic and then refused.
CREATE TABLE herald_topics (
    topic      text PRIMARY KEY,
    seq        bigint NOT NULL,
    status     text,
    progress   smallint,
    data       text NOT NULL,      -- the merged data, a JSON object
    updated_at bigint NOT NULL,    -- milliseconds since the Unix epoch
    expires_at bigint NOT NULL
);
CREATE INDEX herald_topics_expiry ON herald_topics (expires_at);
CREATE TABLE herald_topic_events (
    topic      text NOT NULL,
    seq        bigint NOT NULL,
    type       text NOT NULL,
    status     text,
    progress   smallint,
    data       text NOT NULL,
    at         bigint NOT NULL,
    expires_at bigint NOT NULL,    -- when the history's age bound drops it
    PRIMARY KEY (topic, seq)
);
CREATE INDEX herald_topic_events_expiry ON herald_topic_events (expires_at);
-- Chain transactions bound to the topic of the intent that sent them, for the topic namespace's TTL.
CREATE TABLE herald_correlations (
    chain_id   bigint NOT NULL,
    tx_hash    text NOT NULL,      -- normalized: 0x-hex in lowercase
    kind       text NOT NULL,
    topic      text NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (chain_id, tx_hash, kind)
);
CREATE INDEX herald_correlations_expiry ON herald_correlations (expires_at);
"#,
    ),
    (
        4,
        "user ids and keys compared as bytes",
        r#"
-- User ids and idempotency keys are opaque: compared byte by byte ("C") rather than by the database's locale,
-- whose comparisons were a large part of every write's index work (each row goes into two indexes led by
-- user_id). Nothing sorts them for people to read. The indexes on them are rebuilt.
ALTER TABLE herald_users ALTER COLUMN user_id TYPE text COLLATE "C";
ALTER TABLE notifications ALTER COLUMN user_id TYPE text COLLATE "C",
    ALTER COLUMN idempotency_key TYPE text COLLATE "C";
ALTER TABLE deliveries ALTER COLUMN user_id TYPE text COLLATE "C";
"#,
    ),
    (
        5,
        "email outbox",
        r#"
-- The email channel's requests and where each stands (see store/emails.rs). Bodies are dropped once sent.
CREATE TABLE herald_emails (
    id              text COLLATE "C" PRIMARY KEY,  -- a ULID
    kind            text NOT NULL,
    recipient       text NOT NULL,
    subject         text NOT NULL,
    html            text,
    body_text       text,
    message_id      text NOT NULL,
    idempotency_key text COLLATE "C" UNIQUE,
    status          text NOT NULL,                 -- queued | retrying | sent | dead_lettered
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at bigint NOT NULL,               -- ms since the epoch; meaningful while pending
    lease_until     bigint,                        -- an attempt is under way (on some node) until then
    last_error      text,
    sent_at         bigint,
    created_at      bigint NOT NULL
);
CREATE INDEX herald_emails_due ON herald_emails (next_attempt_at) WHERE status IN ('queued', 'retrying');
"#,
    ),
    (
        6,
        "notification emails, user directory, preferences",
        r#"
-- A notification's email: whose, which notification, and whether reading it first cancels the email.
ALTER TABLE herald_emails ADD COLUMN user_id text COLLATE "C",
    ADD COLUMN notification_id text COLLATE "C",
    ADD COLUMN notification_type text,
    ADD COLUMN unless_read boolean NOT NULL DEFAULT false,
    ADD COLUMN cancel_reason text;
CREATE INDEX herald_emails_by_user ON herald_emails (user_id, notification_id)
    WHERE user_id IS NOT NULL AND status IN ('queued', 'retrying');
-- What Herald knows of a user beyond their id (see store/directory.rs).
CREATE TABLE herald_directory (
    user_id      text COLLATE "C" PRIMARY KEY,
    email        text,
    display_name text,
    updated_at   bigint NOT NULL
);
CREATE TABLE herald_preferences (
    user_id       text COLLATE "C" PRIMARY KEY,
    email_enabled boolean NOT NULL,
    email_opt_out text[] NOT NULL,
    updated_at    bigint NOT NULL
);
"#,
    ),
];

pub fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(*version, Cow::Borrowed(*description), MigrationType::Simple, Cow::Borrowed(*sql), false)
        })
        .collect::<Vec<_>>();
    Migrator { migrations: Cow::Owned(migrations), ignore_missing: false, locking: true, no_tx: false }
}

/// The newest migration this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |(version, _, _)| *version)
}

/// The columns every query that returns notifications selects, in the order [`from_row`] reads them, and the
/// tables they come from (`n` for the notification, `d` for its delivery).
pub const COLUMNS: &str =
    "n.id, n.user_id, n.type, n.title, n.message, n.data, n.created_at, d.at AS delivered_at, n.read_at";
pub const FROM: &str = "notifications n LEFT JOIN deliveries d ON d.user_id = n.user_id AND d.id = n.id";

pub fn uuid(id: NotificationId) -> Uuid {
    Uuid::from_u128(id.as_u128())
}

pub fn id(uuid: Uuid) -> NotificationId {
    NotificationId::from_ulid(ulid::Ulid(uuid.as_u128()))
}

pub fn from_row(row: &PgRow) -> Result<Notification, StoreError> {
    let corrupt = |what: &str| StoreError::Internal(format!("a stored notification has {what}"));
    let data: String = row.try_get("data").map_err(super::sql_error)?;
    let user: String = row.try_get("user_id").map_err(super::sql_error)?;
    let delivered_at: Option<i64> = row.try_get("delivered_at").map_err(super::sql_error)?;
    let read_at: Option<i64> = row.try_get("read_at").map_err(super::sql_error)?;
    Ok(Notification {
        id: id(row.try_get("id").map_err(super::sql_error)?),
        user_id: UserId::parse(&user).map_err(|_| corrupt("an invalid user id"))?,
        kind: row.try_get("type").map_err(super::sql_error)?,
        title: row.try_get("title").map_err(super::sql_error)?,
        message: row.try_get("message").map_err(super::sql_error)?,
        data: RawValue::from_string(data).map_err(|_| corrupt("data that is not JSON"))?,
        created_at: Timestamp(row.try_get("created_at").map_err(super::sql_error)?),
        delivered: delivered_at.is_some(),
        delivered_at: delivered_at.map(Timestamp),
        read: read_at.is_some(),
        read_at: read_at.map(Timestamp),
    })
}
