//! Correlations in the topics file: `(chain_id, tx_hash, kind)` → the topic of the intent that sent the
//! transaction, for as long as a topic of that namespace lives. Written only by the topics writer (alone,
//! or with the event whose `correlate` names them, in its transaction), read by the chain-event consumer.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::writer::sql_error;
use crate::domain::Timestamp;
use crate::store::topics::{ms, Conflict};
use crate::store::StoreError;
use crate::topics::{CorrelationKey, Namespaces, TopicName};

pub type Correlated = Result<(), Conflict>;

/// Binds each key to its topic, in one transaction: a key bound to another live topic is refused (and
/// changes nothing); the same binding again renews it.
pub fn bind_all(
    conn: &mut Connection,
    namespaces: &Namespaces,
    bindings: &[(CorrelationKey, TopicName)],
    now: Timestamp,
) -> Result<Vec<Correlated>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
    let mut results = Vec::with_capacity(bindings.len());
    for (key, topic) in bindings {
        match bound(&tx, key, now)? {
            Some(bound_to) if &bound_to != topic => results.push(Err(Conflict { key: key.clone(), bound_to })),
            _ => {
                bind(&tx, namespaces, key, topic, now)?;
                results.push(Ok(()));
            }
        }
    }
    tx.commit().map_err(sql_error)?;
    Ok(results)
}

/// The topic a live correlation binds `key` to.
pub fn bound(conn: &Connection, key: &CorrelationKey, now: Timestamp) -> Result<Option<TopicName>, StoreError> {
    let topic: Option<String> = conn
        .prepare_cached(
            "SELECT topic FROM correlations WHERE chain_id = ?1 AND tx_hash = ?2 AND kind = ?3 AND expires_at > ?4",
        )
        .map_err(sql_error)?
        .query_row(params![key.chain_id as i64, key.tx_hash, key.kind, now.0], |r| r.get(0))
        .optional()
        .map_err(sql_error)?;
    match topic {
        None => Ok(None),
        Some(text) => TopicName::parse(&text)
            .map(Some)
            .map_err(|e| StoreError::Internal(format!("a stored correlation names a bad topic: {e}"))),
    }
}

/// Binds `key` to `topic` (replacing an expired binding) for the TTL of the topic's namespace.
pub fn bind(
    tx: &rusqlite::Transaction<'_>,
    namespaces: &Namespaces,
    key: &CorrelationKey,
    topic: &TopicName,
    now: Timestamp,
) -> Result<(), StoreError> {
    let expires_at = now.0.saturating_add(ms(namespaces.of(topic).ttl));
    tx.prepare_cached(
        "INSERT INTO correlations (chain_id, tx_hash, kind, topic, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (chain_id, tx_hash, kind) DO UPDATE SET topic = excluded.topic, expires_at = excluded.expires_at",
    )
    .map_err(sql_error)?
    .execute(params![key.chain_id as i64, key.tx_hash, key.kind, topic.as_str(), expires_at])
    .map_err(sql_error)?;
    Ok(())
}

/// Deletes up to `limit` expired correlations; returns how many.
pub fn sweep(tx: &rusqlite::Transaction<'_>, now: i64, limit: usize) -> Result<usize, StoreError> {
    tx.execute(
        "DELETE FROM correlations WHERE (chain_id, tx_hash, kind) IN
             (SELECT chain_id, tx_hash, kind FROM correlations WHERE expires_at <= ?1 LIMIT ?2)",
        params![now, limit as i64],
    )
    .map_err(sql_error)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use serde_json::Map;
    use tokio::sync::mpsc;

    use super::*;
    use crate::config::Synchronous;
    use crate::store::sqlite::SqliteTopics;
    use crate::store::topics::{Rejection, TopicStore};
    use crate::topics::namespace::Policy;
    use crate::topics::NewTopicEvent;

    fn topic(name: &str) -> TopicName {
        TopicName::parse(name).unwrap()
    }

    fn key(tx: &str) -> CorrelationKey {
        CorrelationKey::new(1, tx, "mint").unwrap()
    }

    fn event(name: &str, status: &str, correlate: Option<CorrelationKey>) -> NewTopicEvent {
        NewTopicEvent {
            topic: topic(name),
            kind: "status".into(),
            status: Some(status.into()),
            progress: None,
            data: Map::new(),
            correlate,
            received_at: Instant::now(),
        }
    }

    /// A store whose `short` namespace lives for 50 ms, so that expiry can be seen.
    fn open(dir: &Path) -> SqliteTopics {
        let mut configured = Namespaces::built_in();
        configured.insert("short".into(), Policy { ttl: Duration::from_millis(50), ..Policy::default() });
        let namespaces = Arc::new(Namespaces::new(configured, Policy::default()));
        let (feed, mut changes) = mpsc::channel(64);
        tokio::spawn(async move { while changes.recv().await.is_some() {} });
        SqliteTopics::open(&dir.join("t.db"), Synchronous::Normal, Duration::from_secs(1), namespaces, feed).unwrap()
    }

    /// With the inbox in PostgreSQL the topic store is the only file in the data dir: it makes the dir.
    #[tokio::test]
    async fn the_topic_store_makes_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("not").join("yet"));
        assert_eq!(store.find_correlation(&key("0xaa")).await.unwrap(), None);
        assert!(dir.path().join("not/yet/t.db").is_file());
    }

    #[tokio::test]
    async fn a_key_binds_one_live_topic_and_a_conflict_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!(store.find_correlation(&key("0xaa")).await.unwrap(), None);
        assert_eq!(store.correlate(key("0xAA"), topic("intent:1")).await.unwrap(), Ok(()));
        assert_eq!(store.correlate(key("0xaa"), topic("intent:1")).await.unwrap(), Ok(()), "the same binding renews");
        let conflict = store.correlate(key("0xaa"), topic("intent:2")).await.unwrap().unwrap_err();
        assert_eq!(conflict, Conflict { key: key("0xaa"), bound_to: topic("intent:1") });
        assert_eq!(store.find_correlation(&key("0xaa")).await.unwrap(), Some(topic("intent:1")));
        let other_kind = CorrelationKey::new(1, "0xaa", "burn").unwrap();
        assert_eq!(store.find_correlation(&other_kind).await.unwrap(), None);

        // A binding lives as long as a topic of its namespace; expired, it is gone and the key is free.
        assert_eq!(store.correlate(key("0xbb"), topic("short:1")).await.unwrap(), Ok(()));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(store.find_correlation(&key("0xbb")).await.unwrap(), None);
        assert_eq!(store.correlate(key("0xbb"), topic("intent:3")).await.unwrap(), Ok(()));
        assert_eq!(store.find_correlation(&key("0xbb")).await.unwrap(), Some(topic("intent:3")));
        store.shutdown().await;
    }

    #[tokio::test]
    async fn a_correlate_commits_with_its_event_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let appended = store.append(vec![event("intent:1", "pending", Some(key("0x01")))]).await.unwrap();
        assert_eq!(appended, Ok(vec![1]));
        assert_eq!(store.find_correlation(&key("0x01")).await.unwrap(), Some(topic("intent:1")));

        // The second event breaks the lifecycle: the first one's correlation is not stored either.
        let refused = store
            .append(vec![event("intent:2", "pending", Some(key("0x02"))), event("intent:2", "ready", None)])
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.index, 1);
        assert_eq!(store.find_correlation(&key("0x02")).await.unwrap(), None);

        // A key bound elsewhere refuses the event that carries it, and the rest of its append.
        let refused = store
            .append(vec![event("intent:3", "pending", None), event("intent:3", "broadcast", Some(key("0x01")))])
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.index, 1);
        assert!(matches!(&refused.rejection, Rejection::CorrelationConflict(c) if c.bound_to == topic("intent:1")));
        assert_eq!(store.state(&topic("intent:3")).await.unwrap(), None);
        // Two events of one append binding one key to two topics conflict too.
        let twice =
            vec![event("intent:4", "pending", Some(key("0x04"))), event("intent:5", "pending", Some(key("0x04")))];
        assert!(store.append(twice).await.unwrap().is_err());
        store.shutdown().await;
    }
}
