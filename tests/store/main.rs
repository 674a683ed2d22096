//! The store conformance suite: what every `Store` backend must do, run against each one: SQLite (with three
//! merge policies) and PostgreSQL (a schema of its own per test, see `postgres`). Checks particular to one
//! backend follow, prefixed with its name.

mod postgres;
mod topics;

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::config::Synchronous;
use herald::domain::{InboxEvent, NewNotification, NotificationId, NotificationInput, UserId};
use herald::store::sqlite::{Options, Sqlite};
use herald::store::{InsertOutcome, ListQuery, Since, Store};
use rusqlite::OptionalExtension;
use tokio::sync::mpsc;

struct Backend {
    store: Arc<dyn Store>,
    feed: mpsc::Receiver<Vec<InboxEvent>>,
    /// What the backend's data lives in (a temp dir, a schema), removed when the test ends.
    _data: Box<dyn std::any::Any + Send>,
}

fn sqlite() -> Backend {
    sqlite_with(Options::new(Synchronous::Full))
}

/// SQLite keeps each user's newest ids in memory until it merges them into its per-user index; these run
/// the suite with merges as soon as possible (a partition after every commit group), and never.
fn merge_eagerly() -> Options {
    Options { merge_rows: 1, merge_interval: Duration::ZERO, ..Options::new(Synchronous::Full) }
}

fn merge_never() -> Options {
    Options { merge_rows: usize::MAX, merge_interval: Duration::from_secs(86_400), ..Options::new(Synchronous::Full) }
}

fn sqlite_with(options: Options) -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let (tx, feed) = mpsc::channel(1024);
    let store = Sqlite::open_with(&dir.path().join("herald.db"), options, tx).expect("open sqlite");
    Backend { store: Arc::new(store), feed, _data: Box::new(dir) }
}

fn user(name: &str) -> UserId {
    UserId::parse(name).expect("valid user id")
}

fn new(user_id: &str, title: &str, key: Option<&str>) -> NewNotification {
    let input: NotificationInput = serde_json::from_value(serde_json::json!({
        "user_id": user_id, "type": "test", "title": title, "data": {"title": title},
        "idempotency_key": key,
    }))
    .expect("valid input");
    NewNotification::parse(input, Instant::now()).expect("valid notification")
}

fn created_ids(outcomes: &[InsertOutcome]) -> Vec<NotificationId> {
    outcomes.iter().map(|o| o.notification().id).collect()
}

/// Waits until the merge position of `user`'s partition reaches `id`, that is, until a merge that indexed
/// `id` has committed. The store promises that a due partition is merged while it runs (after a later
/// commit group, or at the writer's next tick), not that any particular reply comes after that merge: an
/// idle writer stops merging as soon as a command arrives, and answers that command first. So a test that
/// needs a merge to have happened waits for its position, which the merge commits with the index.
async fn wait_for_merge(path: &std::path::Path, user: &str, id: NotificationId) {
    let conn = rusqlite::Connection::open(path).expect("open the database");
    let id = id.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A user's partition is the `part` of their counts, which their first merge writes.
        let position: Option<String> = conn
            .query_row(
                "SELECT m.value FROM inbox_counts c JOIN meta m ON m.key = 'merged_upto.' || c.part \
                 WHERE c.user_id = ?1",
                [user],
                |r| r.get(0),
            )
            .optional()
            .expect("read the merge position");
        if position.is_some_and(|p| p >= id) {
            return;
        }
        assert!(Instant::now() < deadline, "{user}'s partition was not merged up to {id} in time");
        // Only the pace of polling: the condition above is what the test waits for.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn next_events(feed: &mut mpsc::Receiver<Vec<InboxEvent>>) -> Vec<InboxEvent> {
    tokio::time::timeout(Duration::from_secs(5), feed.recv()).await.expect("an event group in time").expect("feed open")
}

async fn counts_follow_every_change(backend: Backend) {
    let Backend { store, mut feed, .. } = backend;
    let alice = user("alice");
    let outcomes = store.insert((0..5).map(|i| new("alice", &format!("n{i}"), None)).collect()).await.unwrap();
    assert_eq!(outcomes.len(), 5);
    let ids = created_ids(&outcomes);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase in creation order");
    let events = next_events(&mut feed).await;
    assert_eq!(events.len(), 5, "one event per created notification");

    assert_eq!(store.unread_count(&alice).await.unwrap(), 5);
    let read = store.mark_read(&alice, vec![ids[0], ids[1]]).await.unwrap();
    assert_eq!(read.newly_read, vec![ids[0], ids[1]]);
    assert!(read.found.iter().all(|n| n.read && n.read_at.is_some()));
    assert_eq!(store.unread_count(&alice).await.unwrap(), 3);
    // Marking again changes nothing, and emits nothing.
    let again = store.mark_read(&alice, vec![ids[0]]).await.unwrap();
    assert!(again.newly_read.is_empty());
    assert_eq!(store.unread_count(&alice).await.unwrap(), 3);

    let page = store.list(&alice, ListQuery { page: 0, limit: 10, unread_only: true, before: None }).await.unwrap();
    assert_eq!((page.total, page.unread_count, page.items.len()), (3, 3, 3));
    let all = store.list(&alice, ListQuery { page: 0, limit: 2, unread_only: false, before: None }).await.unwrap();
    assert_eq!((all.total, all.items.len()), (5, 2));
    assert_eq!(all.items[0].id, ids[4], "newest first");

    assert_eq!(store.mark_all_read(&alice).await.unwrap(), 3);
    assert_eq!(store.unread_count(&alice).await.unwrap(), 0);
}

async fn other_users_are_invisible(backend: Backend) {
    let store = backend.store;
    let outcomes = store.insert(vec![new("alice", "a", None), new("bob", "b", None)]).await.unwrap();
    let alice_id = outcomes[0].notification().id;
    let bob = user("bob");
    let stolen = store.mark_read(&bob, vec![alice_id]).await.unwrap();
    assert!(stolen.found.is_empty() && stolen.newly_read.is_empty(), "bob cannot touch alice's notification");
    let page = store.list(&bob, ListQuery { page: 0, limit: 10, unread_only: false, before: None }).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].user_id, bob);
    assert_eq!(store.unread_count(&user("alice")).await.unwrap(), 1);
}

async fn idempotency_returns_the_original(backend: Backend) {
    let Backend { store, mut feed, .. } = backend;
    let first = store.insert(vec![new("alice", "one", Some("k1"))]).await.unwrap();
    let InsertOutcome::Created(original) = &first[0] else { panic!("the first insert creates") };
    assert_eq!(next_events(&mut feed).await.len(), 1);
    let repeat =
        store.insert(vec![new("alice", "changed", Some("k1")), new("bob", "other", Some("k1"))]).await.unwrap();
    assert!(
        matches!(&repeat[0], InsertOutcome::Existing(n) if n.id == original.id && n.title.as_deref() == Some("one"))
    );
    assert!(matches!(&repeat[1], InsertOutcome::Created(_)), "keys are scoped to a user");
    let events = next_events(&mut feed).await;
    assert_eq!(events.len(), 1, "only bob's new notification is pushed");
    assert_eq!(store.unread_count(&user("alice")).await.unwrap(), 1, "the repeat is not counted");
}

async fn snapshots_serve_connect_and_resume(backend: Backend) {
    let store = backend.store;
    let alice = user("alice");
    let ids =
        created_ids(&store.insert((0..150).map(|i| new("alice", &format!("n{i}"), None)).collect()).await.unwrap());
    let unread = store.snapshot(&alice, Since::Unread { limit: 100 }).await.unwrap();
    assert_eq!(unread.unread_count, 150);
    assert!(unread.more);
    assert_eq!(unread.items.len(), 100);
    assert_eq!(unread.items[0].id, ids[50], "the newest 100, oldest first");
    assert_eq!(unread.high_water, Some(ids[149]));

    let resumed = store.snapshot(&alice, Since::After { id: ids[139], limit: 1000 }).await.unwrap();
    assert_eq!(resumed.items.iter().map(|n| n.id).collect::<Vec<_>>(), ids[140..].to_vec());
    assert!(!resumed.more);
    let limited = store.snapshot(&alice, Since::After { id: ids[0], limit: 10 }).await.unwrap();
    assert_eq!(limited.items.len(), 10);
    assert!(limited.more);
}

async fn delivered_marks_are_recorded(backend: Backend) {
    let store = backend.store;
    let alice = user("alice");
    let ids = created_ids(&store.insert(vec![new("alice", "a", None), new("alice", "b", None)]).await.unwrap());
    store.mark_delivered(&alice, &ids[..1]);
    // Marks are batched into the writer's next group: wait for them to show, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page =
            store.list(&alice, ListQuery { page: 0, limit: 10, unread_only: false, before: None }).await.unwrap();
        let delivered: Vec<_> = page.items.iter().filter(|n| n.delivered).map(|n| n.id).collect();
        if delivered == ids[..1] {
            assert!(page.items.iter().all(|n| n.delivered == n.delivered_at.is_some()));
            break;
        }
        assert!(Instant::now() < deadline, "the delivered mark never showed: {delivered:?}");
        tokio::task::yield_now().await;
    }
}

async fn durable_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let ids = {
        let (tx, _feed) = mpsc::channel(1024);
        let store = Sqlite::open(&path, Synchronous::Full, tx).unwrap();
        let ids = created_ids(&store.insert(vec![new("alice", "kept", None)]).await.unwrap());
        store.shutdown().await;
        ids
    };
    let (tx, _feed) = mpsc::channel(1024);
    let store = Sqlite::open(&path, Synchronous::Full, tx).unwrap();
    let page =
        store.list(&user("alice"), ListQuery { page: 0, limit: 10, unread_only: false, before: None }).await.unwrap();
    assert_eq!(page.items.iter().map(|n| n.id).collect::<Vec<_>>(), ids);
    assert_eq!(page.unread_count, 1);
}

/// A clock stepped back across a restart must not produce ids below the stored ones: `since` and each
/// connection's high-water mark depend on ids increasing in commit order.
#[tokio::test]
async fn sqlite_ids_keep_increasing_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    // An id an hour ahead of this clock, as if the previous run's clock had been ahead.
    let ahead = ulid::Ulid::from_parts(
        u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
            + 3_600_000,
        0,
    );
    {
        let (tx, _feed) = mpsc::channel(1024);
        let store = Sqlite::open(&path, Synchronous::Full, tx).unwrap();
        store.insert(vec![new("alice", "first", None)]).await.unwrap();
        store.shutdown().await;
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("UPDATE meta SET value = ?1 WHERE key = 'last_id'", [ahead.to_string()]).unwrap();
    }
    let (tx, _feed) = mpsc::channel(1024);
    let store = Sqlite::open(&path, Synchronous::Full, tx).unwrap();
    let next = created_ids(&store.insert(vec![new("alice", "after restart", None)]).await.unwrap());
    assert!(next[0] > NotificationId::from_ulid(ahead), "{} is not after {ahead}", next[0]);
}

/// Runs a conformance check against SQLite with the default merge policy, merging eagerly, and never
/// merging.
macro_rules! sqlite_conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite_default {
            $(#[tokio::test] async fn $check() { super::$check(super::sqlite()).await; })*
        }
        mod sqlite_merge_eagerly {
            $(#[tokio::test] async fn $check() { super::$check(super::sqlite_with(super::merge_eagerly())).await; })*
        }
        mod sqlite_merge_never {
            $(#[tokio::test] async fn $check() { super::$check(super::sqlite_with(super::merge_never())).await; })*
        }
    };
}

/// Cursor paging (`before`): pages that do not shift while notifications arrive, `more` exact at the end, the
/// unread filter applied before the limit; offset paging says `more` too.
async fn cursor_pages_do_not_shift(backend: Backend) {
    let Backend { store, mut feed, .. } = backend;
    let alice = user("alice");
    let mut ids =
        created_ids(&store.insert((0..7).map(|i| new("alice", &format!("n{i}"), None)).collect()).await.unwrap());
    next_events(&mut feed).await;
    store.insert(vec![new("bob", "other", None)]).await.unwrap();
    store.mark_read(&alice, vec![ids[1], ids[5]]).await.unwrap();
    let list = |before: Option<NotificationId>, limit: u32, unread_only: bool| {
        let (store, alice) = (&store, &alice);
        async move {
            let p = store.list(alice, ListQuery { page: 0, limit, unread_only, before }).await.unwrap();
            (p.items.iter().map(|n| n.id).collect::<Vec<_>>(), p.more)
        }
    };
    let pick = |ids: &[NotificationId], at: &[usize]| at.iter().map(|&i| ids[i]).collect::<Vec<_>>();
    assert_eq!(list(None, 3, false).await, (pick(&ids, &[6, 5, 4]), true));
    assert_eq!(list(Some(ids[4]), 3, false).await, (pick(&ids, &[3, 2, 1]), true));
    assert_eq!(list(Some(ids[1]), 3, false).await, (pick(&ids, &[0]), false));
    assert_eq!(list(Some(ids[0]), 3, false).await, (vec![], false));
    // A new notification changes the first page only: the cursor's pages stay where they were.
    ids.extend(created_ids(&store.insert(vec![new("alice", "new", None)]).await.unwrap()));
    assert_eq!(list(Some(ids[4]), 3, false).await, (pick(&ids, &[3, 2, 1]), true));
    assert_eq!(list(None, 3, false).await, (pick(&ids, &[7, 6, 5]), true));
    // Unread only: 1 and 5 are read.
    assert_eq!(list(None, 2, true).await, (pick(&ids, &[7, 6]), true));
    assert_eq!(list(Some(ids[6]), 2, true).await, (pick(&ids, &[4, 3]), true));
    assert_eq!(list(Some(ids[3]), 2, true).await, (pick(&ids, &[2, 0]), false));
    // Exactly a page left: no further page is promised.
    assert_eq!(list(Some(ids[2]), 2, false).await, (pick(&ids, &[1, 0]), false));
    let offset = store.list(&alice, ListQuery { page: 0, limit: 8, unread_only: false, before: None }).await.unwrap();
    assert_eq!((offset.items.len(), offset.more, offset.total), (8, false, 8));
    let offset = store.list(&alice, ListQuery { page: 1, limit: 3, unread_only: false, before: None }).await.unwrap();
    assert_eq!((offset.items.iter().map(|n| n.id).collect::<Vec<_>>(), offset.more), (pick(&ids, &[4, 3, 2]), true));
}

/// Every check above, against each backend.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        sqlite_conformance!($($check),*);
        mod postgres_default {
            $(#[tokio::test] async fn $check() { super::$check(super::postgres::backend().await).await; })*
        }
    };
}

conformance!(
    counts_follow_every_change,
    other_users_are_invisible,
    idempotency_returns_the_original,
    snapshots_serve_connect_and_resume,
    delivered_marks_are_recorded,
    cursor_pages_do_not_shift,
);

/// Reads that span the merged index and the unmerged tail, and a restart that loses the tail (the writer
/// stops without its final merge) and must rebuild the index from the table.
#[tokio::test]
async fn sqlite_reads_span_the_index_and_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    // A merge once 7 ids wait in a partition: after the second insert of 5, alice's ten are merged; the last
    // three are not.
    let options =
        Options { merge_rows: 7, merge_interval: Duration::from_secs(86_400), ..Options::new(Synchronous::Full) };
    let (tx, mut feed) = mpsc::channel(1024);
    let store = Sqlite::open_with(&path, options, tx).unwrap();
    let alice = user("alice");
    let mut ids = Vec::new();
    for (n, title) in [(5, "a"), (5, "b"), (3, "c")] {
        ids.extend(created_ids(
            &store.insert((0..n).map(|i| new("alice", &format!("{title}{i}"), None)).collect()).await.unwrap(),
        ));
        next_events(&mut feed).await;
    }
    store.insert(vec![new("bob", "other", None)]).await.unwrap();
    let read = store.mark_read(&alice, vec![ids[1], ids[11]]).await.unwrap();
    assert_eq!(read.newly_read, vec![ids[1], ids[11]]);

    let page = |page, limit, unread_only| {
        let store = &store;
        let alice = &alice;
        async move {
            let p = store.list(alice, ListQuery { page, limit, unread_only, before: None }).await.unwrap();
            (p.total, p.items.iter().map(|n| n.id).collect::<Vec<_>>())
        }
    };
    let rev = |range: &[usize]| range.iter().map(|&i| ids[i]).collect::<Vec<_>>();
    assert_eq!(page(0, 4, false).await, (13, rev(&[12, 11, 10, 9])));
    assert_eq!(page(1, 4, false).await, (13, rev(&[8, 7, 6, 5])));
    assert_eq!(page(3, 4, false).await, (13, rev(&[0])));
    assert_eq!(page(0, 3, true).await, (11, rev(&[12, 10, 9])));
    assert_eq!(page(1, 3, true).await, (11, rev(&[8, 7, 6])));
    assert_eq!(page(3, 3, true).await, (11, rev(&[2, 0])));
    // The cursor across the tail (10, 11, 12) and the index (0–9).
    let cursor = |before: NotificationId, limit, unread_only| {
        let (store, alice) = (&store, &alice);
        async move {
            let p = store.list(alice, ListQuery { page: 0, limit, unread_only, before: Some(before) }).await.unwrap();
            (p.items.iter().map(|n| n.id).collect::<Vec<_>>(), p.more)
        }
    };
    assert_eq!(cursor(ids[12], 4, false).await, (rev(&[11, 10, 9, 8]), true));
    assert_eq!(cursor(ids[11], 3, true).await, (rev(&[10, 9, 8]), true));
    assert_eq!(cursor(ids[3], 5, true).await, (rev(&[2, 0]), false));

    let unread = store.snapshot(&alice, Since::Unread { limit: 5 }).await.unwrap();
    assert_eq!(unread.items.iter().map(|n| n.id).collect::<Vec<_>>(), rev(&[7, 8, 9, 10, 12]));
    assert_eq!((unread.unread_count, unread.more, unread.high_water), (11, true, Some(ids[12])));
    let resumed = store.snapshot(&alice, Since::After { id: ids[8], limit: 3 }).await.unwrap();
    assert_eq!((resumed.items.iter().map(|n| n.id).collect::<Vec<_>>(), resumed.more), (rev(&[9, 10, 11]), true));
    let resumed = store.snapshot(&alice, Since::After { id: ids[8], limit: 10 }).await.unwrap();
    assert_eq!((resumed.items.iter().map(|n| n.id).collect::<Vec<_>>(), resumed.more), (rev(&[9, 10, 11, 12]), false));

    assert_eq!(store.mark_all_read(&alice).await.unwrap(), 11);
    assert_eq!(store.unread_count(&alice).await.unwrap(), 0);
    let later = created_ids(&store.insert(vec![new("alice", "later", None)]).await.unwrap());
    ids.extend(later);
    let unread = store.snapshot(&alice, Since::Unread { limit: 100 }).await.unwrap();
    assert_eq!((unread.items.iter().map(|n| n.id).collect::<Vec<_>>(), unread.more), (vec![ids[13]], false));
    // Dropped without `shutdown`: the writer stops without merging what is in memory.
    drop(store);

    let (tx, _feed) = mpsc::channel(1024);
    let store = Sqlite::open_with(&path, merge_never(), tx).unwrap();
    let all = store.list(&alice, ListQuery { page: 0, limit: 100, unread_only: false, before: None }).await.unwrap();
    assert_eq!(all.items.iter().map(|n| n.id).collect::<Vec<_>>(), ids.iter().rev().copied().collect::<Vec<_>>());
    assert_eq!((all.total, all.unread_count), (14, 1));
    assert_eq!(
        store
            .list(&user("bob"), ListQuery { page: 0, limit: 10, unread_only: false, before: None })
            .await
            .unwrap()
            .total,
        1
    );
}

/// A database written by the layout before the per-user index was split out (schema version 2) opens with
/// every notification, its read state and its idempotency key intact.
#[tokio::test]
async fn sqlite_migrates_the_previous_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let (a, b, c) = (ulid::Ulid::new(), ulid::Ulid::new(), ulid::Ulid::new());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE notifications (user_id TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, title TEXT,
                 message TEXT, data TEXT NOT NULL, created_at INTEGER NOT NULL, read_at INTEGER,
                 idempotency_key TEXT, PRIMARY KEY (user_id, id)) WITHOUT ROWID;
             CREATE UNIQUE INDEX notifications_idempotency
                 ON notifications (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
             CREATE TABLE inbox_counts (user_id TEXT PRIMARY KEY, total INTEGER NOT NULL, unread INTEGER NOT NULL)
                 WITHOUT ROWID;
             CREATE TABLE deliveries (id TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
             PRAGMA user_version = 2;",
        )
        .unwrap();
        for (id, user, read_at, key) in
            [(a, "alice", Some(5), None), (b, "bob", None, None), (c, "alice", None, Some("k"))]
        {
            conn.execute(
                "INSERT INTO notifications (user_id, id, type, data, created_at, read_at, idempotency_key)
                 VALUES (?1, ?2, 'old', '{}', 1, ?3, ?4)",
                rusqlite::params![user, id.to_string(), read_at, key],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO inbox_counts VALUES ('alice', 2, 1), ('bob', 1, 1);
             INSERT INTO meta VALUES ('last_id', (SELECT max(id) FROM notifications));",
        )
        .unwrap();
    }
    let (tx, _feed) = mpsc::channel(1024);
    let store = Sqlite::open_with(&path, merge_never(), tx).unwrap();
    let alice = user("alice");
    let page = store.list(&alice, ListQuery { page: 0, limit: 10, unread_only: false, before: None }).await.unwrap();
    let mut expected = vec![NotificationId::from_ulid(a), NotificationId::from_ulid(c)];
    expected.sort();
    expected.reverse();
    assert_eq!(page.items.iter().map(|n| n.id).collect::<Vec<_>>(), expected);
    assert!(page.items.iter().any(|n| n.id == NotificationId::from_ulid(a) && n.read));
    assert_eq!((page.total, page.unread_count), (2, 1), "counts are recounted from the rows");
    let repeat = store.insert(vec![new("alice", "again", Some("k"))]).await.unwrap();
    assert!(matches!(&repeat[0], InsertOutcome::Existing(n) if n.id == NotificationId::from_ulid(c)));
    let fresh = created_ids(&store.insert(vec![new("alice", "new", None)]).await.unwrap());
    let unread = store.snapshot(&alice, Since::Unread { limit: 10 }).await.unwrap();
    let mut want = vec![NotificationId::from_ulid(c), fresh[0]];
    want.sort();
    assert_eq!(unread.items.iter().map(|n| n.id).collect::<Vec<_>>(), want);
    assert_eq!(
        store
            .list(&user("bob"), ListQuery { page: 0, limit: 10, unread_only: false, before: None })
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn sqlite_is_durable_across_reopen() {
    durable_across_reopen().await;
}

/// The WAL must not grow without bound under sustained writes (the checkpointer's restart rule): with
/// several publishers the writer never idles, so the background checkpoint never finishes on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_stays_bounded_under_sustained_writes() {
    let backend = sqlite();
    let wal = backend._data.downcast_ref::<tempfile::TempDir>().expect("a SQLite backend").path().join("herald.db-wal");
    let mut feed = backend.feed;
    tokio::spawn(async move { while feed.recv().await.is_some() {} });
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let publishers: Vec<_> = (0..8)
        .map(|p| {
            let (store, wal, peak) = (backend.store.clone(), wal.clone(), peak.clone());
            tokio::spawn(async move {
                for round in 0..50 {
                    let items = (0..1000)
                        .map(|i| new(&format!("user-{}", (p * 131 + round * 7 + i) % 5000), "load", None))
                        .collect();
                    store.insert(items).await.unwrap();
                    let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                    peak.fetch_max(size, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    // 400,000 rows over 5,000 users leave a WAL near 1 GiB if it is never started over; with the
    // restart rule it stays near 64 MiB plus what is written between two checkpoints (about 100-130 MiB here).
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    println!("peak WAL {} MiB", peak / (1024 * 1024));
    assert!(peak < 300 * 1024 * 1024, "the WAL reached {} MiB", peak / (1024 * 1024));
}

/// A snapshot's counts and items come from one consistent view even while the writer commits and merges:
/// with everything unread and under the limit, every snapshot holds exactly `unread_count` items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_snapshots_agree_with_their_counts_under_writes() {
    let Backend { store, mut feed, _data } = sqlite_with(Options { merge_rows: 5, ..merge_eagerly() });
    tokio::spawn(async move { while feed.recv().await.is_some() {} });
    let alice = user("alice");
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..400 {
                store.insert(vec![new("alice", &format!("n{i}"), None), new("bob", "b", None)]).await.unwrap();
            }
        })
    };
    let mut checked = 0;
    while !writer.is_finished() {
        let snap = store.snapshot(&alice, Since::Unread { limit: 1000 }).await.unwrap();
        assert_eq!(snap.items.len() as u64, snap.unread_count, "after {checked} consistent snapshots");
        assert_eq!(snap.high_water, snap.items.last().map(|n| n.id));
        let page =
            store.list(&alice, ListQuery { page: 0, limit: 1000, unread_only: false, before: None }).await.unwrap();
        assert_eq!(page.items.len() as u64, page.total);
        checked += 1;
    }
    writer.await.unwrap();
    assert!(checked > 0);
}

/// A partition with nothing waiting moves its merge position along with the others, so the recovery at
/// the next open starts from the newest merge, not from where a quiet partition last saw traffic.
#[tokio::test]
async fn sqlite_quiet_partitions_do_not_hold_back_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let (tx, _feed) = mpsc::channel(1024);
    let store = Sqlite::open_with(&path, merge_eagerly(), tx).unwrap();
    let mut newest = None;
    for i in 0..3 {
        newest = created_ids(&store.insert(vec![new("alice", &format!("n{i}"), None)]).await.unwrap()).pop();
    }
    let newest = newest.expect("an id was created");
    // The last insert's partition is due (`merge_eagerly`): its merge commits the positions checked here.
    wait_for_merge(&path, "alice", newest).await;
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (partitions, distinct, position): (i64, i64, String) = conn
        .query_row(
            "SELECT count(*), count(DISTINCT value), max(value) FROM meta WHERE key LIKE 'merged_upto.%'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (partitions, distinct),
        (herald::store::sqlite::PARTITIONS as i64, 1),
        "every partition at one position"
    );
    assert_eq!(position, newest.to_string());
}

/// A write that fails after generating an id must not leave readers waiting for that id: a later commit
/// records it as the newest id (`meta.last_id`), which readers compare with what the in-memory tail has
/// seen.
#[tokio::test]
async fn sqlite_reads_go_on_after_a_failed_insert() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let (tx, mut feed) = mpsc::channel(1024);
    let store = Sqlite::open_with(&path, merge_never(), tx).unwrap();
    store.insert(vec![new("alice", "original", Some("k"))]).await.unwrap();
    next_events(&mut feed).await;
    // Corrupt the stored row, so finding it by its idempotency key fails.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE notifications SET data = 'not json' WHERE idempotency_key = 'k'", [])
        .unwrap();
    // The first item gets an id, then the second one's lookup fails: the whole insert fails.
    let failed = store.insert(vec![new("bob", "lost", None), new("alice", "again", Some("k"))]).await;
    assert!(failed.is_err());
    // A later write that creates nothing (it records the newest id all the same).
    store.mark_read(&user("bob"), vec![]).await.unwrap();
    let bob = tokio::time::timeout(Duration::from_secs(5), store.snapshot(&user("bob"), Since::Unread { limit: 10 }))
        .await
        .expect("the read finishes")
        .expect("the read succeeds");
    assert_eq!((bob.items.len(), bob.unread_count), (0, 0));
    let next = created_ids(&store.insert(vec![new("bob", "later", None)]).await.unwrap());
    let bob = store.snapshot(&user("bob"), Since::Unread { limit: 10 }).await.unwrap();
    assert_eq!(bob.items.iter().map(|n| n.id).collect::<Vec<_>>(), next);
}

/// A store that stops receiving writes still merges what waits in memory, once it is old enough.
#[tokio::test]
async fn sqlite_merges_when_writes_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let options = Options {
        merge_rows: usize::MAX,
        merge_interval: Duration::from_millis(200),
        ..Options::new(Synchronous::Full)
    };
    let (tx, _feed) = mpsc::channel(1024);
    let store = Sqlite::open_with(&path, options, tx).unwrap();
    let id = created_ids(&store.insert(vec![new("alice", "quiet", None)]).await.unwrap())[0];
    let conn = rusqlite::Connection::open(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let indexed: i64 =
            conn.query_row("SELECT count(*) FROM inbox WHERE id = ?1", [id.to_string()], |r| r.get(0)).unwrap();
        if indexed == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never merged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let page =
        store.list(&user("alice"), ListQuery { page: 0, limit: 10, unread_only: false, before: None }).await.unwrap();
    assert_eq!((page.total, page.unread_count, page.items.len()), (1, 1, 1));
}

/// A notification marked read while it waits for a merge is counted as read once merged.
#[tokio::test]
async fn sqlite_reads_before_a_merge_count_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let options =
        Options { merge_rows: 3, merge_interval: Duration::from_secs(86_400), ..Options::new(Synchronous::Full) };
    let (tx, _feed) = mpsc::channel(1024);
    let path = dir.path().join("herald.db");
    let store = Sqlite::open_with(&path, options, tx).unwrap();
    let alice = user("alice");
    let ids = created_ids(&store.insert(vec![new("alice", "a", None), new("alice", "b", None)]).await.unwrap());
    assert_eq!(store.mark_read(&alice, vec![ids[0]]).await.unwrap().newly_read, vec![ids[0]]);
    // The third fills the partition: merged after this group, with the first already read.
    let third = created_ids(&store.insert(vec![new("alice", "c", None)]).await.unwrap())[0];
    wait_for_merge(&path, "alice", third).await;
    let page = store.list(&alice, ListQuery { page: 0, limit: 10, unread_only: false, before: None }).await.unwrap();
    assert_eq!((page.total, page.unread_count), (3, 2));
    assert_eq!(store.mark_all_read(&alice).await.unwrap(), 2);
    assert_eq!(store.unread_count(&alice).await.unwrap(), 0);
}
