//! The PostgreSQL backend for the suite: the machine's server (127.0.0.1:5432, trust auth, database `test`),
//! a schema of its own per test (so tests run in parallel), dropped when the test ends. A server that cannot
//! be reached fails the test, never skips it. Also the checks particular to PostgreSQL: several nodes on one
//! database, restarts, a newer schema, and the connection pool recovering from terminated backends.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::domain::NotificationId;
use herald::store::postgres::{OpenError, Postgres};
use herald::store::{ListQuery, Since, Store, StoreError};
use tokio::sync::mpsc;

use super::{created_ids, new, next_events, user, Backend};

const SERVER: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema `s_<random>`, dropped (with everything in it) when this is dropped.
pub struct Schema {
    pub name: String,
}

impl Schema {
    pub fn create() -> Schema {
        let name = format!("s_{}", ulid::Ulid::new().to_string().to_lowercase());
        psql(&format!("CREATE SCHEMA {name}"));
        Schema { name }
    }

    /// A URL whose connections work in this schema, named after it in `pg_stat_activity`.
    pub fn url(&self) -> String {
        format!("{SERVER}?options[search_path]={0}&application_name=herald-{0}", self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Synchronously: the test's runtime may be going away.
        let _ = std::process::Command::new("psql")
            .args([SERVER, "-q", "-c", &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Runs SQL with psql, failing the test (never skipping it) when the server cannot be reached.
fn psql(sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([SERVER, "-qtA", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .unwrap_or_else(|e| panic!("psql could not run: {e}"));
    assert!(out.status.success(), "PostgreSQL at {SERVER}: {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn open(schema: &Schema) -> (Postgres, mpsc::Receiver<Vec<herald::domain::InboxEvent>>) {
    let (tx, feed) = mpsc::channel(1024);
    let store = Postgres::open(&schema.url(), tx).await.unwrap_or_else(|e| panic!("open PostgreSQL: {e}"));
    (store, feed)
}

/// `count` stores on one schema, as several Herald nodes on one database, their feeds drained.
async fn nodes(schema: &Schema, count: usize) -> Vec<Arc<Postgres>> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        let (store, mut feed) = open(schema).await;
        tokio::spawn(async move { while feed.recv().await.is_some() {} });
        nodes.push(Arc::new(store));
    }
    nodes
}

pub async fn backend() -> Backend {
    let schema = Schema::create();
    let (store, feed) = open(&schema).await;
    Backend { store: Arc::new(store), feed, _data: Box::new(schema) }
}

#[tokio::test]
async fn postgres_is_durable_across_reopen() {
    let schema = Schema::create();
    let ids = {
        let (store, _feed) = open(&schema).await;
        let ids =
            created_ids(&store.insert(vec![new("alice", "kept", None), new("alice", "too", None)]).await.unwrap());
        store.shutdown().await;
        ids
    };
    let (store, _feed) = open(&schema).await;
    let page =
        store.list(&user("alice"), ListQuery { page: 0, limit: 10, unread_only: false, before: None }).await.unwrap();
    assert_eq!(page.items.iter().rev().map(|n| n.id).collect::<Vec<_>>(), ids);
    assert_eq!((page.total, page.unread_count), (2, 2));
    // A second start migrates nothing and finds the same schema.
    let applied = psql(&format!("SELECT count(*) FROM {}._sqlx_migrations", schema.name));
    assert_eq!(applied, herald::store::postgres::latest_version().to_string());
}

#[tokio::test]
async fn postgres_refuses_a_schema_a_newer_herald_migrated() {
    let schema = Schema::create();
    {
        let (store, _feed) = open(&schema).await;
        store.shutdown().await;
    }
    psql(&format!(
        "INSERT INTO {}._sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', true, '\\x00', 0)",
        schema.name
    ));
    let (tx, _feed) = mpsc::channel(16);
    match Postgres::open(&schema.url(), tx).await {
        Err(e @ OpenError::Newer(999, _)) => assert!(e.to_string().contains("newer Herald"), "{e}"),
        Err(other) => panic!("expected a refusal of the newer schema, got {other}"),
        Ok(_) => panic!("a schema with an unknown migration was used"),
    }
}

#[tokio::test]
async fn postgres_unreachable_fails_the_open_without_the_password() {
    let (tx, _feed) = mpsc::channel(16);
    // A port nothing listens on (the discard port is never served here).
    let err = match Postgres::open("postgres://herald:hunter2@127.0.0.1:9/test?connect_timeout=2", tx).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened a database that is not there"),
    };
    assert!(err.contains("127.0.0.1:9/test") && !err.contains("hunter2"), "{err}");
}

/// Backends terminated under it (a failover, `pg_terminate_backend`): writes meanwhile may fail as
/// unavailable, but the pool reconnects by itself and nothing acknowledged is lost.
#[tokio::test]
async fn postgres_recovers_from_terminated_backends() {
    let schema = Schema::create();
    let (store, mut feed) = open(&schema).await;
    let alice = user("alice");
    let mut acknowledged = created_ids(&store.insert(vec![new("alice", "before", None)]).await.unwrap());
    next_events(&mut feed).await;
    let killed = psql(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'herald-{}'",
        schema.name
    ));
    assert_ne!(killed, "0", "the store's connections were found");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.insert(vec![new("alice", "after", None)]).await {
            Ok(outcomes) => {
                acknowledged.extend(created_ids(&outcomes));
                break;
            }
            Err(StoreError::Unavailable(_)) => assert!(Instant::now() < deadline, "the pool never recovered"),
            Err(other) => panic!("a terminated backend must read as unavailable, got {other}"),
        }
    }
    let page = store.list(&alice, ListQuery { page: 0, limit: 10, unread_only: false, before: None }).await.unwrap();
    let stored: HashSet<NotificationId> = page.items.iter().map(|n| n.id).collect();
    assert!(acknowledged.iter().all(|id| stored.contains(id)), "acknowledged {acknowledged:?}, stored {stored:?}");
    assert!(store.health().await.ok);
}

/// Two nodes (two stores on one schema) create notifications for one user as fast as they can while a reader
/// resumes with `since` in a loop: per user, ids must increase in commit order, so what the reader has seen is
/// always a prefix, and it ends with every notification once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_keep_a_users_order_for_since() {
    const PER_NODE: usize = 400;
    let schema = Schema::create();
    let nodes = nodes(&schema, 2).await;
    let alice = user("alice");
    let mut publishers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for lane in 0..4 {
            let node = node.clone();
            publishers.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in (lane..PER_NODE).step_by(4) {
                    let outcomes = node.insert(vec![new("alice", &format!("node{n}-{i}"), None)]).await.unwrap();
                    ids.extend(created_ids(&outcomes));
                }
                ids
            }));
        }
    }
    let reader = nodes[0].clone();
    let mut seen: Vec<NotificationId> = Vec::new();
    let total = 2 * PER_NODE;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "only {} of {total} seen", seen.len());
        // From the very beginning (the nil id is below every id), then from the last one seen.
        let after = seen.last().copied().unwrap_or(NotificationId::from_ulid(ulid::Ulid::nil()));
        // Read before the snapshot: when every publisher had finished before it, an empty snapshot is final.
        let finished = publishers.iter().all(|p| p.is_finished());
        let snapshot = reader.snapshot(&alice, Since::After { id: after, limit: 50 }).await.unwrap();
        if snapshot.items.is_empty() {
            if finished {
                break;
            }
            tokio::task::yield_now().await;
        }
        for n in snapshot.items {
            assert!(Some(&n.id) > seen.last(), "{} came after {:?}", n.id, seen.last());
            seen.push(n.id);
        }
    }
    let mut published = Vec::new();
    for p in publishers {
        published.extend(p.await.unwrap());
    }
    let seen_set: HashSet<_> = seen.iter().copied().collect();
    let missed = published.iter().filter(|id| !seen_set.contains(id)).count();
    assert_eq!(missed, 0, "{missed} of {total} were committed below an id the reader had already passed");
    assert_eq!(seen.len(), total, "nothing repeated");
    let counts = reader.list(&alice, ListQuery { page: 0, limit: 1, unread_only: false, before: None }).await.unwrap();
    assert_eq!((counts.total, counts.unread_count), (total as u64, total as u64));
}

/// Marking everything read on one node while another creates: the count never drifts from the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_mark_all_read_beside_creates_keeps_the_count_true() {
    let schema = Schema::create();
    let nodes = nodes(&schema, 2).await;
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let alice = user("alice");
    let creator = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                a.insert(vec![new("alice", &format!("n{i}"), None)]).await.unwrap();
            }
        })
    };
    let reader = {
        let (b, alice) = (b.clone(), alice.clone());
        tokio::spawn(async move {
            for _ in 0..50 {
                b.mark_all_read(&alice).await.unwrap();
            }
        })
    };
    creator.await.unwrap();
    reader.await.unwrap();
    let unread_rows =
        b.list(&alice, ListQuery { page: 0, limit: 1000, unread_only: false, before: None }).await.unwrap();
    let really_unread = unread_rows.items.iter().filter(|n| !n.read).count() as u64;
    assert_eq!(unread_rows.unread_count, really_unread, "the stored count matches the rows");
    assert_eq!(unread_rows.total, 300);
}

/// Two nodes each running every kind of write for the same users at once (creates for new and known users,
/// mark_read, mark_all_read): every user's rows are locked first and in one order, so none of it deadlocks,
/// every write succeeds, and each user's counts match their rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_writing_everything_at_once_never_fail() {
    let schema = Schema::create();
    let nodes = nodes(&schema, 2).await;
    let users = ["u1", "u2", "u3"];
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for lane in 0..3 {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..40 {
                    // Users in a different order on each lane and node.
                    let order: Vec<&str> = (0..3).map(|k| users[(k + lane + n + round) % 3]).collect();
                    let batch = order.iter().map(|u| new(u, &format!("{n}-{lane}-{round}"), None)).collect();
                    let created = created_ids(&node.insert(batch).await.expect("create"));
                    let who = user(order[0]);
                    match round % 3 {
                        0 => drop(node.mark_all_read(&who).await.expect("mark all read")),
                        _ => drop(node.mark_read(&who, vec![created[0]]).await.expect("mark read")),
                    }
                }
            }));
        }
    }
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    // Not a speed check: a deadlock costs its victim PostgreSQL's deadlock_timeout (1 s) before it is broken and
    // retried, so deadlocking writes show as seconds (14 s with locks taken per command; 0.6 s without).
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}: the writes deadlocked", started.elapsed());
    for u in users {
        let page = nodes[1]
            .list(&user(u), ListQuery { page: 0, limit: 1000, unread_only: false, before: None })
            .await
            .unwrap();
        assert_eq!(page.total, 240, "{u}");
        let unread = page.items.iter().filter(|n| !n.read).count() as u64;
        assert_eq!(page.unread_count, unread, "{u}: the count matches the rows");
    }
}

#[tokio::test]
async fn postgres_numbers_each_users_events_in_commit_order() {
    let schema = Schema::create();
    let (store, mut feed) = open(&schema).await;
    let created = created_ids(
        &store.insert(vec![new("alice", "a", None), new("bob", "b", None), new("alice", "c", None)]).await.unwrap(),
    );
    let mut seqs: Vec<(String, Option<u64>)> = Vec::new();
    let mut take = |events: Vec<herald::domain::InboxEvent>| {
        seqs.extend(events.iter().map(|e| (e.user_id().as_str().to_owned(), e.seq())));
    };
    take(next_events(&mut feed).await);
    store.mark_read(&user("alice"), vec![created[0]]).await.unwrap();
    take(next_events(&mut feed).await);
    // Marking it again changes nothing: no event, no number.
    store.mark_read(&user("alice"), vec![created[0]]).await.unwrap();
    store.mark_all_read(&user("alice")).await.unwrap();
    take(next_events(&mut feed).await);
    let alice: Vec<Option<u64>> = seqs.iter().filter(|(u, _)| u == "alice").map(|(_, s)| *s).collect();
    assert_eq!(alice, [Some(1), Some(2), Some(3), Some(4)]);
    assert_eq!(seqs.iter().filter(|(u, _)| u == "bob").map(|(_, s)| *s).collect::<Vec<_>>(), [Some(1)]);
    let positions = store.positions(&[user("alice"), user("nobody"), user("bob")]).await.unwrap();
    assert_eq!(positions, [4, 0, 1]);
    store.shutdown().await;
}

/// A user whose newest id is ahead of this node's clock (another node's clock runs ahead of this one): the
/// one-statement path for creates refuses to write below it, and the group goes the general way, so the new
/// ids still come after it, numbered on from the user's events, with the counts right; a user beside it in
/// the same group is written as usual.
#[tokio::test]
async fn postgres_creates_for_a_user_whose_newest_id_is_ahead_still_come_after_it() {
    let schema = Schema::create();
    let (store, mut feed) = open(&schema).await;
    store.insert(vec![new("alice", "first", None)]).await.unwrap();
    next_events(&mut feed).await;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let ahead = ulid::Ulid::from_parts(now_ms + 3_600_000, 42);
    psql(&format!("UPDATE {}.herald_users SET last_id = '{:032x}' WHERE user_id = 'alice'", schema.name, ahead.0));

    let created = created_ids(
        &store
            .insert(vec![new("alice", "second", None), new("bob", "beside", None), new("alice", "third", None)])
            .await
            .unwrap(),
    );
    let ahead = NotificationId::from_ulid(ahead);
    assert!(created[0] > ahead && created[2] > created[0], "{created:?} must come after {ahead}");
    let events = next_events(&mut feed).await;
    let seqs: Vec<(String, Option<u64>)> = events.iter().map(|e| (e.user_id().as_str().to_owned(), e.seq())).collect();
    assert_eq!(seqs, [("alice".into(), Some(2)), ("bob".into(), Some(1)), ("alice".into(), Some(3))]);
    let page =
        store.list(&user("alice"), ListQuery { page: 0, limit: 10, unread_only: false, before: None }).await.unwrap();
    assert_eq!((page.total, page.unread_count), (3, 3));
    assert_eq!(page.items[0].id, created[2], "the newest first");
    // And with the user's newest id now its own, the next create takes the one-statement path again.
    store.insert(vec![new("alice", "fourth", None)]).await.unwrap();
    assert_eq!(next_events(&mut feed).await[0].seq(), Some(4));
    store.shutdown().await;
}
