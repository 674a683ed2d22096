//! Correlations in PostgreSQL: `(chain_id, tx_hash, kind)` → the topic of the intent that sent the
//! transaction, for as long as a topic of that namespace lives. Written by the topic writer (alone, or with
//! the event whose `correlate` names them, in its transaction), read by the chain-event consumer.
//!
//! A key nobody has bound cannot be locked, so a bind is conditional: it changes a row only if the row binds
//! the same topic or has expired, and one that changes nothing means another node bound the key meanwhile.

use std::collections::HashMap;

use sqlx::pool::PoolConnection;
use sqlx::{Acquire, Postgres, Row, Transaction};

use super::sql_error;
use super::topics::{topic_of, Correlated};
use super::writer::{failure, Failure};
use crate::domain::Timestamp;
use crate::store::topics::{ms, Conflict};
use crate::store::StoreError;
use crate::topics::{CorrelationKey, Namespaces, NewTopicEvent, TopicName};

/// Locks the live bindings of the keys the appends bind, and returns them.
pub(super) async fn lock_correlations(
    tx: &mut Transaction<'_, Postgres>,
    appends: &[Vec<NewTopicEvent>],
    now: Timestamp,
) -> Result<HashMap<CorrelationKey, TopicName>, Failure> {
    let keys: Vec<&CorrelationKey> = appends.iter().flatten().filter_map(|e| e.correlate.as_ref()).collect();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT c.chain_id, c.tx_hash, c.kind, c.topic FROM herald_correlations c
         JOIN unnest($1::bigint[], $2::text[], $3::text[]) AS k(chain_id, tx_hash, kind)
             USING (chain_id, tx_hash, kind)
         WHERE c.expires_at > $4
         FOR UPDATE OF c",
    )
    .bind(keys.iter().map(|k| k.chain_id as i64).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.tx_hash.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.kind.as_str()).collect::<Vec<_>>())
    .bind(now.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(failure)?;
    let mut bound = HashMap::with_capacity(rows.len());
    for row in &rows {
        let key = CorrelationKey {
            chain_id: row.try_get::<i64, _>("chain_id").map_err(sql_error)? as u64,
            tx_hash: row.try_get("tx_hash").map_err(sql_error)?,
            kind: row.try_get("kind").map_err(sql_error)?,
        };
        bound.insert(key, topic_of(row.try_get("topic").map_err(sql_error)?)?);
    }
    Ok(bound)
}

/// Binds `key` to `topic` for the TTL of the topic's namespace, unless it is bound to another live topic;
/// `false` when it is (it changed nothing).
pub(super) async fn bind(
    tx: &mut Transaction<'_, Postgres>,
    namespaces: &Namespaces,
    key: &CorrelationKey,
    topic: &TopicName,
    now: Timestamp,
) -> Result<bool, Failure> {
    let expires_at = now.0.saturating_add(ms(namespaces.of(topic).ttl));
    let done = sqlx::query(
        "INSERT INTO herald_correlations (chain_id, tx_hash, kind, topic, expires_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (chain_id, tx_hash, kind) DO UPDATE SET topic = excluded.topic, expires_at = excluded.expires_at
         WHERE herald_correlations.topic = excluded.topic OR herald_correlations.expires_at <= $6",
    )
    .bind(key.chain_id as i64)
    .bind(&key.tx_hash)
    .bind(&key.kind)
    .bind(topic.as_str())
    .bind(expires_at)
    .bind(now.0)
    .execute(&mut **tx)
    .await
    .map_err(failure)?;
    Ok(done.rows_affected() == 1)
}

/// Binds each key to its topic, in one transaction: a key bound to another live topic is refused (and
/// changes nothing); the same binding again renews it.
pub(super) async fn bind_all(
    conn: &mut PoolConnection<Postgres>,
    namespaces: &Namespaces,
    bindings: &[(CorrelationKey, TopicName)],
) -> Result<Vec<Correlated>, Failure> {
    let now = Timestamp::now();
    let mut tx = conn.begin().await.map_err(failure)?;
    let mut results = Vec::with_capacity(bindings.len());
    for (key, topic) in bindings {
        if bind(&mut tx, namespaces, key, topic, now).await? {
            results.push(Ok(()));
            continue;
        }
        match find(&mut *tx, key, now).await.map_err(Failure::Fail)? {
            Some(bound_to) => results.push(Err(Conflict { key: key.clone(), bound_to })),
            // Expired between the two statements: the next try binds it.
            None => return Err(Failure::Retry(StoreError::Unavailable("a correlation expired meanwhile".into()))),
        }
    }
    tx.commit().await.map_err(failure)?;
    Ok(results)
}

pub(super) async fn find<'c>(
    conn: impl sqlx::Executor<'c, Database = Postgres>,
    key: &CorrelationKey,
    now: Timestamp,
) -> Result<Option<TopicName>, StoreError> {
    let topic: Option<String> = sqlx::query_scalar(
        "SELECT topic FROM herald_correlations
         WHERE chain_id = $1 AND tx_hash = $2 AND kind = $3 AND expires_at > $4",
    )
    .bind(key.chain_id as i64)
    .bind(&key.tx_hash)
    .bind(&key.kind)
    .bind(now.0)
    .fetch_optional(conn)
    .await
    .map_err(sql_error)?;
    topic.map(topic_of).transpose()
}
