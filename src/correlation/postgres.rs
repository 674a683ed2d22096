//! The lookup in the producer's own PostgreSQL, as the minting system's worker does it:
//! `SELECT intent_id FROM tx_intents WHERE chain_id = $1 AND tx_hash = $2 AND kind = $3`.
//!
//! The query is the operator's, run as given, as a prepared statement (cached per connection), with `$1`
//! the chain id (`bigint`), `$2` the normalized hash (`text`: 0x-hex in lowercase, so a table that keeps
//! hashes in another case compares `lower(tx_hash) = $2`) and `$3` the kind (`text`); it binds only as many
//! as the query uses. One row of one column is the intent id, text or an integer. Connections are
//! read-only sessions (`default_transaction_read_only`), so the lookup can never write the producer's data.
//!
//! The pool is small and lazy: nothing connects until the first lookup, so Herald starts with PostgreSQL
//! down. Every failure is the caller's to retry; after a failure to connect, lookups fail at once for a
//! moment instead of each waiting for a connection that is not coming.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Column, Row, TypeInfo};

use crate::config::amqp::redact_url;
use crate::config::correlation::LookupSettings;
use crate::topics::CorrelationKey;

const POOL_SIZE: u32 = 4;
/// How long a lookup waits for a connection, and then for its answer.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// After PostgreSQL could not be reached, lookups fail at once for this long.
const TRIPPED_FOR: Duration = Duration::from_secs(1);

pub struct PostgresLookup {
    pool: PgPool,
    query: String,
    params: usize,
    /// The URL without its password, for logs.
    redacted: String,
    tripped: Mutex<Option<(Instant, String)>>,
}

impl PostgresLookup {
    pub fn new(settings: &LookupSettings) -> anyhow::Result<Self> {
        let redacted = redact_url(settings.url.expose());
        // The configuration checked that it parses; the message never repeats the URL.
        let options = PgConnectOptions::from_str(settings.url.expose())
            .map_err(|_| anyhow::anyhow!("correlation_database_url is not a valid PostgreSQL URL"))?
            .application_name("herald")
            .options([("default_transaction_read_only", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(300)))
            .connect_lazy_with(options);
        tracing::info!(url = redacted, "chain events will also be matched by a lookup in PostgreSQL");
        Ok(Self { pool, query: settings.query.clone(), params: settings.params, redacted, tripped: Mutex::new(None) })
    }

    /// The intent id for `key`: `None` when the query finds no row. The error says why, without the URL.
    pub async fn find(&self, key: &CorrelationKey) -> Result<Option<String>, String> {
        if let Some(reason) = self.still_tripped() {
            return Err(reason);
        }
        let mut query = sqlx::query(&self.query).bind(i64::try_from(key.chain_id).unwrap_or(i64::MAX));
        if self.params >= 2 {
            query = query.bind(key.tx_hash.as_str());
        }
        if self.params >= 3 {
            query = query.bind(key.kind.as_str());
        }
        let rows = tokio::time::timeout(QUERY_TIMEOUT, query.fetch(&self.pool).take(2).collect::<Vec<_>>()).await;
        let rows = match rows {
            Err(_) => return Err(self.failed("no answer within 5 s".into(), false)),
            Ok(rows) => rows.into_iter().collect::<Result<Vec<PgRow>, sqlx::Error>>(),
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                let unreachable = matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_));
                return Err(self.failed(e.to_string(), unreachable));
            }
        };
        let Some(row) = rows.first() else { return Ok(None) };
        if rows.len() > 1 {
            tracing::warn!(%key, "the correlation lookup found more than one row; using the first");
        }
        id_of(row).map(Some)
    }

    fn still_tripped(&self) -> Option<String> {
        let guard = self.tripped.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.as_ref().filter(|(at, _)| at.elapsed() < TRIPPED_FOR).map(|(_, reason)| reason.clone())
    }

    fn failed(&self, reason: String, unreachable: bool) -> String {
        tracing::warn!(url = self.redacted, error = reason, "the correlation lookup in PostgreSQL failed");
        let reason = format!("PostgreSQL: {reason}");
        if unreachable {
            *self.tripped.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((Instant::now(), reason.clone()));
        }
        reason
    }
}

/// The first column as an id: text as it is, an integer as its decimal text.
fn id_of(row: &PgRow) -> Result<String, String> {
    if let Ok(text) = row.try_get::<Option<String>, _>(0) {
        return text.ok_or_else(|| "the lookup's row holds NULL".to_owned());
    }
    if let Ok(n) = row.try_get::<Option<i64>, _>(0) {
        return n.map(|n| n.to_string()).ok_or_else(|| "the lookup's row holds NULL".to_owned());
    }
    if let Ok(n) = row.try_get::<Option<i32>, _>(0) {
        return n.map(|n| n.to_string()).ok_or_else(|| "the lookup's row holds NULL".to_owned());
    }
    if let Ok(n) = row.try_get::<Option<i16>, _>(0) {
        return n.map(|n| n.to_string()).ok_or_else(|| "the lookup's row holds NULL".to_owned());
    }
    let kind = row.columns().first().map_or("nothing", |c| c.type_info().name());
    Err(format!("the lookup's column is {kind}: select text or an integer (e.g. intent_id::text)"))
}
