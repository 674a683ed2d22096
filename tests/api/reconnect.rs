//! Reconnect with `since`: every notification after that id arrives, read or not, in order, with no
//! duplicates, and live ones follow.

use crate::helpers::{id, ids, TestApp};

#[tokio::test]
async fn reconnecting_with_since_loses_nothing_and_repeats_nothing() {
    let app = TestApp::spawn().await;
    let mut tab = app.connect_ws("alice").await;
    let before: Vec<_> = [app.notify("alice", "c", "one").await, app.notify("alice", "c", "two").await].into();
    let received = tab.next_notifications(2).await;
    assert_eq!(ids(&received), ids(&before));
    let last_seen = id(&received[1]).to_owned();
    tab.close().await;
    app.wait_for_connections(0).await;

    // Missed while away; one of them is already read elsewhere (on another device, still connected), which
    // `since` still sends.
    let mut phone = app.connect_ws("alice").await;
    let missed = app.notify_many("alice", "missed", 4).await;
    assert_eq!(app.mark_read("alice", id(&missed[1])).await.status(), 200);
    // Once the phone has heard of the read, the hub has fanned it out: the tab that reconnects next gets it
    // in its backlog alone, not also as a live frame on its way through the hub while the tab registers.
    phone.next_notifications(4).await;
    assert_eq!(phone.next_of_type("read").await["ids"][0], id(&missed[1]));

    let mut tab = app.connect_ws_since("alice", &last_seen).await;
    assert_eq!(tab.backlog_ids(), ids(&missed), "everything after {last_seen}, oldest first");
    assert_eq!(tab.backlog["more"], false);
    assert_eq!(tab.backlog_items()[1]["read"], true);

    let live = app.notify("alice", "c", "live").await;
    assert_eq!(id(&tab.next_notification().await), id(&live), "a duplicate or a gap after the backlog");
}

#[tokio::test]
async fn since_an_older_id_replays_from_there() {
    let app = TestApp::spawn().await;
    let published = app.notify_many("alice", "n", 6).await;
    app.notify_many("bob", "not alice's", 2).await;

    let tab = app.connect_ws_since("alice", id(&published[2])).await;
    assert_eq!(tab.backlog_ids(), ids(&published[3..]));
    assert_eq!(tab.backlog["more"], false);
}

#[tokio::test]
async fn since_sends_at_most_a_thousand_and_says_there_is_more() {
    let app = TestApp::spawn().await;
    let mut published = app.notify_many("alice", "bulk", 1000).await;
    published.extend(app.notify_many("alice", "bulk tail", 5).await);

    let tab = app.connect_ws_since("alice", id(&published[0])).await;
    let backlog = tab.backlog_ids();
    assert_eq!(backlog.len(), 1000);
    assert_eq!(backlog, ids(&published[1..1001]), "the thousand right after `since`, oldest first");
    assert_eq!(tab.backlog["more"], true);
}

#[tokio::test]
async fn since_the_newest_id_sends_an_empty_batch_then_live_ones() {
    let app = TestApp::spawn().await;
    let published = app.notify_many("alice", "n", 3).await;

    let mut tab = app.connect_ws_since("alice", id(&published[2])).await;
    assert_eq!(tab.backlog_ids(), Vec::<String>::new());
    assert_eq!(tab.backlog["more"], false);

    let live = app.notify("alice", "c", "live").await;
    assert_eq!(id(&tab.next_notification().await), id(&live));
}
