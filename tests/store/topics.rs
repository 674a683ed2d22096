//! The topic store's conformance suite: every check runs against SQLite (a temp dir) and PostgreSQL (a schema
//! of its own), through the `TopicStore` trait only. Then what is particular to several PostgreSQL nodes on
//! one database: one topic's events numbered 1, 2, 3… in commit order whichever node appends them, and one
//! correlation key bound once when two nodes race to bind it to different topics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::config::Synchronous;
use herald::store::postgres::PgTopics;
use herald::store::sqlite::SqliteTopics;
use herald::store::topics::{Rejection, TopicStore};
use herald::topics::namespace::Policy;
use herald::topics::{CorrelationKey, Namespaces, NewTopicEvent, SharedChange, TopicName};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::postgres::Schema;

/// `intent` (built in: its lifecycle), `short` (lives 300 ms), `small` (keeps 3 events of history).
fn namespaces() -> Arc<Namespaces> {
    let mut configured = Namespaces::built_in();
    configured.insert("short".into(), Policy { ttl: Duration::from_millis(300), ..Policy::default() });
    configured.insert("small".into(), Policy { history_events: 3, ..Policy::default() });
    Arc::new(Namespaces::new(configured, Policy::default()))
}

/// A store under test, with its feed and what keeps its data alive.
struct Opened {
    store: Arc<dyn TopicStore>,
    feed: mpsc::Receiver<Vec<SharedChange>>,
    _dir: Option<tempfile::TempDir>,
    _schema: Option<Arc<Schema>>,
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

async fn open(backend: Backend) -> Opened {
    let (tx, feed) = mpsc::channel(1024);
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteTopics::open(
                &dir.path().join("t.db"),
                Synchronous::Normal,
                Duration::from_secs(1),
                namespaces(),
                tx,
            )
            .unwrap();
            Opened { store: Arc::new(store), feed, _dir: Some(dir), _schema: None }
        }
        Backend::Postgres => {
            let schema = Arc::new(Schema::create());
            let store = PgTopics::open(&schema.url(), namespaces(), tx).await.unwrap();
            Opened { store: Arc::new(store), feed, _dir: None, _schema: Some(schema) }
        }
    }
}

fn topic(name: &str) -> TopicName {
    TopicName::parse(name).unwrap()
}

fn key(tx: &str) -> CorrelationKey {
    CorrelationKey::new(1, tx, "mint").unwrap()
}

fn event(name: &str, status: Option<&str>, data: Value, correlate: Option<CorrelationKey>) -> NewTopicEvent {
    let Value::Object(data) = data else { panic!("data must be an object") };
    NewTopicEvent {
        topic: topic(name),
        kind: "status".into(),
        status: status.map(str::to_owned),
        progress: None,
        data,
        correlate,
        received_at: Instant::now(),
    }
}

fn status(name: &str, status: &str) -> NewTopicEvent {
    event(name, Some(status), json!({}), None)
}

fn note(name: &str, n: u64) -> NewTopicEvent {
    event(name, None, json!({ "n": n }), None)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}:{}", ulid::Ulid::new().to_string().to_lowercase())
}

macro_rules! on_each_backend {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $check() {
                super::$check(super::open(super::Backend::Sqlite).await).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $check() {
                super::$check(super::open(super::Backend::Postgres).await).await
            })*
        }
    };
}

on_each_backend!(
    events_are_numbered_merged_and_streamed_in_order,
    a_refused_append_stores_nothing_of_itself_and_leaves_the_others_be,
    recovery_gives_the_events_after_since_or_says_they_are_gone,
    history_keeps_the_namespaces_bound,
    an_expired_topic_is_unknown_and_starts_afresh,
    a_key_binds_one_live_topic_and_a_conflict_changes_nothing,
);

async fn events_are_numbered_merged_and_streamed_in_order(mut t: Opened) {
    let name = unique("intent");
    let seqs = t
        .store
        .append(vec![status(&name, "pending"), event(&name, Some("broadcast"), json!({"tx": "0x1"}), None)])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seqs, vec![1, 2]);
    let seqs = t.store.append(vec![event(&name, None, json!({"confirmations": 3}), None)]).await.unwrap().unwrap();
    assert_eq!(seqs, vec![3]);
    let state = t.store.state(&topic(&name)).await.unwrap().expect("a live topic");
    assert_eq!((state.seq, state.status.as_deref()), (3, Some("broadcast")));
    assert_eq!(Value::Object(state.data), json!({"tx": "0x1", "confirmations": 3}));
    let mut streamed = Vec::new();
    while streamed.len() < 3 {
        let changes = tokio::time::timeout(Duration::from_secs(5), t.feed.recv()).await.unwrap().unwrap();
        streamed.extend(changes.iter().map(|c| c.event.seq));
    }
    assert_eq!(streamed, vec![1, 2, 3]);
    assert_eq!(t.store.state(&topic(&unique("intent"))).await.unwrap(), None);
    assert!(t.store.live_topics().await.unwrap() >= 1);
    assert!(t.store.health().await.ok);
    t.store.shutdown().await;
}

async fn a_refused_append_stores_nothing_of_itself_and_leaves_the_others_be(t: Opened) {
    let (good, bad) = (unique("intent"), unique("intent"));
    let both = futures_util::future::join(
        t.store.append(vec![status(&good, "pending")]),
        // The second event names no status of the intent lifecycle: the whole append is refused.
        t.store.append(vec![event(&bad, Some("pending"), json!({}), Some(key("0xa1"))), status(&bad, "nonsense")]),
    )
    .await;
    assert_eq!(both.0.unwrap(), Ok(vec![1]));
    let refused = both.1.unwrap().unwrap_err();
    assert_eq!(refused.index, 1);
    assert!(matches!(refused.rejection, Rejection::Lifecycle(_)), "{refused:?}");
    assert_eq!(t.store.state(&topic(&bad)).await.unwrap(), None, "the refused append's first event is not stored");
    assert_eq!(t.store.find_correlation(&key("0xa1")).await.unwrap(), None, "nor its correlation");
    assert_eq!(t.store.state(&topic(&good)).await.unwrap().map(|s| s.seq), Some(1));
    // After a refusal the topic takes its first event as any new topic does.
    assert_eq!(t.store.append(vec![status(&bad, "pending")]).await.unwrap(), Ok(vec![1]));
    // State past the data bound is refused whole too.
    let big = "x".repeat(70 * 1024);
    let refused = t.store.append(vec![event(&bad, None, json!({ "big": big }), None)]).await.unwrap().unwrap_err();
    assert_eq!(refused.rejection, Rejection::StateTooLarge);
    assert_eq!(t.store.state(&topic(&bad)).await.unwrap().map(|s| s.seq), Some(1));
    t.store.shutdown().await;
}

async fn recovery_gives_the_events_after_since_or_says_they_are_gone(t: Opened) {
    let name = unique("notes");
    let all: Vec<NewTopicEvent> = (1..=5).map(|n| note(&name, n)).collect();
    assert_eq!(t.store.append(all).await.unwrap().unwrap(), vec![1, 2, 3, 4, 5]);
    let r = t.store.recover(&topic(&name), Some(2), 100).await.unwrap();
    assert_eq!((r.events.iter().map(|e| e.seq).collect::<Vec<_>>(), r.gone), (vec![3, 4, 5], false));
    assert_eq!(r.events[0].data.get("n"), Some(&json!(3)));
    assert_eq!(r.state.map(|s| s.seq), Some(5));
    let r = t.store.recover(&topic(&name), Some(5), 100).await.unwrap();
    assert!(r.events.is_empty() && !r.gone);
    let r = t.store.recover(&topic(&name), None, 100).await.unwrap();
    assert!(r.events.is_empty() && !r.gone && r.state.is_some());
    // Ahead of the topic, or more events than the limit: start again from the state.
    assert!(t.store.recover(&topic(&name), Some(9), 100).await.unwrap().gone);
    let r = t.store.recover(&topic(&name), Some(0), 2).await.unwrap();
    assert!(r.gone && r.events.is_empty());
    // An unknown topic: nothing was missed by one who saw nothing.
    let r = t.store.recover(&topic(&unique("notes")), Some(0), 100).await.unwrap();
    assert!(!r.gone && r.state.is_none());
    assert!(t.store.recover(&topic(&unique("notes")), Some(3), 100).await.unwrap().gone);
    t.store.shutdown().await;
}

async fn history_keeps_the_namespaces_bound(t: Opened) {
    let name = unique("small");
    for n in 1..=5 {
        t.store.append(vec![note(&name, n)]).await.unwrap().unwrap();
    }
    let r = t.store.recover(&topic(&name), Some(2), 100).await.unwrap();
    assert_eq!(r.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert!(t.store.recover(&topic(&name), Some(1), 100).await.unwrap().gone, "event 2 was trimmed");
    t.store.shutdown().await;
}

async fn an_expired_topic_is_unknown_and_starts_afresh(t: Opened) {
    let name = unique("short");
    t.store.append(vec![note(&name, 1), note(&name, 2)]).await.unwrap().unwrap();
    assert!(t.store.state(&topic(&name)).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(t.store.state(&topic(&name)).await.unwrap(), None);
    assert_eq!(t.store.append(vec![note(&name, 3)]).await.unwrap(), Ok(vec![1]), "a new life starts at 1");
    let r = t.store.recover(&topic(&name), Some(0), 100).await.unwrap();
    assert_eq!(r.events.iter().map(|e| e.data.get("n").cloned()).collect::<Vec<_>>(), vec![Some(json!(3))]);
    t.store.shutdown().await;
}

async fn a_key_binds_one_live_topic_and_a_conflict_changes_nothing(t: Opened) {
    let (one, two) = (topic(&unique("intent")), topic(&unique("intent")));
    let k = key(&format!("0x{:x}", rand::random::<u64>()));
    assert_eq!(t.store.correlate(k.clone(), one.clone()).await.unwrap(), Ok(()));
    assert_eq!(t.store.correlate(k.clone(), one.clone()).await.unwrap(), Ok(()), "the same binding renews");
    let conflict = t.store.correlate(k.clone(), two.clone()).await.unwrap().unwrap_err();
    assert_eq!(conflict.bound_to, one);
    assert_eq!(t.store.find_correlation(&k).await.unwrap(), Some(one.clone()));
    // An event binding the key to another topic is refused with its append.
    let refused = t
        .store
        .append(vec![event(two.as_str(), Some("pending"), json!({}), Some(k.clone()))])
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(&refused.rejection, Rejection::CorrelationConflict(c) if c.bound_to == one));
    // A binding lives as long as a topic of its namespace: expired, the key is free.
    let short_key = key(&format!("0x{:x}", rand::random::<u64>()));
    assert_eq!(t.store.correlate(short_key.clone(), topic(&unique("short"))).await.unwrap(), Ok(()));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(t.store.find_correlation(&short_key).await.unwrap(), None);
    assert_eq!(t.store.correlate(short_key.clone(), two.clone()).await.unwrap(), Ok(()));
    assert_eq!(t.store.find_correlation(&short_key).await.unwrap(), Some(two));
    t.store.shutdown().await;
}

async fn pg_nodes(schema: &Schema, count: usize) -> Vec<(Arc<PgTopics>, mpsc::Receiver<Vec<SharedChange>>)> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        let (tx, feed) = mpsc::channel(65_536);
        nodes.push((Arc::new(PgTopics::open(&schema.url(), namespaces(), tx).await.unwrap()), feed));
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_number_one_topics_events_in_commit_order() {
    let schema = Schema::create();
    let mut nodes = pg_nodes(&schema, 2).await;
    let name = unique("race");
    let per_node = 200;
    let mut tasks = Vec::new();
    for (node, _) in &nodes {
        let (node, name) = (node.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..per_node {
                // Single appends and pairs, so groups mix sizes.
                let events = if n % 5 == 0 { vec![note(&name, n), note(&name, n)] } else { vec![note(&name, n)] };
                seqs.extend(node.append(events).await.unwrap().unwrap());
            }
            seqs
        }));
    }
    let mut all: Vec<u64> = Vec::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "a node's seqs rise in its commit order");
        all.extend(seqs);
    }
    all.sort_unstable();
    let expected = 2 * per_node + 2 * (per_node / 5);
    assert_eq!(all, (1..=expected).collect::<Vec<_>>(), "every seq once, no gap");
    let r = nodes[0].0.recover(&topic(&name), Some(expected - 50), 1000).await.unwrap();
    assert_eq!(r.events.len(), 50);
    assert!(!r.gone);
    // Each node's feed carries its own events in commit order.
    for (node, feed) in &mut nodes {
        let mut streamed = Vec::new();
        while let Ok(changes) = feed.try_recv() {
            streamed.extend(changes.iter().map(|c| c.event.seq));
        }
        assert!(streamed.windows(2).all(|w| w[0] < w[1]));
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_racing_to_bind_one_key_bind_it_once() {
    let schema = Schema::create();
    let nodes = pg_nodes(&schema, 2).await;
    for round in 0..20 {
        let k = key(&format!("0x{round:x}{:x}", rand::random::<u32>()));
        let topics = [topic(&unique("intent")), topic(&unique("intent"))];
        // One node binds alone, the other with an event: the two paths race each other.
        let (a, b) = futures_util::future::join(
            nodes[0].0.correlate(k.clone(), topics[0].clone()),
            nodes[1].0.append(vec![event(topics[1].as_str(), Some("pending"), json!({}), Some(k.clone()))]),
        )
        .await;
        let (a, b) = (a.unwrap().is_ok(), b.unwrap().is_ok());
        assert!(a ^ b, "round {round}: exactly one binding wins (bind: {a}, event: {b})");
        let winner = if a { &topics[0] } else { &topics[1] };
        for (node, _) in &nodes {
            assert_eq!(node.find_correlation(&k).await.unwrap().as_ref(), Some(winner));
        }
        let loser_state = nodes[0].0.state(&topics[1]).await.unwrap();
        assert_eq!(loser_state.is_some(), b, "the event is stored only with its binding");
    }
}
