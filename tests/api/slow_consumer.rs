//! Never blocked by a slow client: a connection whose outbound queue overflows is closed with 4008 "slow
//! consumer"; the publisher and the user's other connections carry on, and the slow client catches up by
//! reconnecting with `since`.

use serde_json::{json, Value};

use crate::helpers::{filler, id, ids, status_and_json, TestApp};

/// Notifications per batch; each carries ~30 KB so a batch stays well under the 1 MiB body limit.
const BATCH: usize = 25;
/// At most this many batches (~75 MB) before the test gives up on the slow client being closed.
const MAX_BATCHES: usize = 100;

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_nobody_else_waits() {
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_OUTBOX_CAPACITY", "64");
    })
    .await;
    let mut slow = app.connect_ws_slow("alice").await;
    let mut fast = app.connect_ws("alice").await;
    let padding = filler(30 * 1024);

    // Both tabs read a first notification; from then on the slow one reads nothing.
    let marker = app.notify("alice", "t", "before the flood").await;
    assert_eq!(id(&slow.next_notification().await), id(&marker));
    assert_eq!(id(&fast.next_notification().await), id(&marker));

    let mut published: Vec<Value> = Vec::new();
    let mut batches = 0;
    loop {
        let items: Vec<Value> = (0..BATCH)
            .map(|i| json!({ "user_id": "alice", "type": "bulk", "title": format!("b{batches} n{i}"), "data": { "padding": padding } }))
            .collect();
        let (status, body) = status_and_json(app.publish_batch(&items).await).await;
        assert_eq!(status, 201, "the publisher was held up or refused: {}", body["error"]);
        let created = body["items"].as_array().unwrap().clone();
        batches += 1;

        // The fast tab keeps reading and gets every notification, in order.
        let received = fast.next_notifications(BATCH).await;
        assert_eq!(ids(&received), ids(&created), "the fast tab missed or reordered notifications");
        published.extend(created);

        if app.metrics().await.counter("herald_slow_consumer_closes_total") >= 1.0 {
            break;
        }
        assert!(batches < MAX_BATCHES, "no slow-consumer close after {} notifications", published.len());
    }

    // The slow client reads what had reached it, then the close.
    let (got_before_close, (code, reason)) = slow.drain_until_close().await;
    assert_eq!((code, reason.as_str()), (4008, "slow consumer"));
    assert!(got_before_close.len() < published.len(), "the slow client got everything, so it was not slow");
    assert_eq!(ids(&got_before_close), ids(&published[..got_before_close.len()]), "what it got was in order");
    app.wait_for_connections(1).await;
    assert_eq!(app.metrics().await.value("herald_slow_consumer_closes_total"), Some(1.0));

    // The fast tab is still connected and still served.
    let after = app.notify("alice", "t", "after the close").await;
    assert_eq!(id(&fast.next_notification().await), id(&after));
    published.push(after);

    // The slow client catches up by reconnecting with `since` the last notification it got.
    let since = got_before_close.last().map_or_else(|| id(&marker).to_owned(), |n| id(n).to_owned());
    let caught_up = app.connect_ws_since("alice", &since).await;
    let missed = match published.iter().position(|n| id(n) == since) {
        Some(position) => &published[position + 1..],
        None => &published[..],
    };
    // The backlog is the oldest missed notifications, in order: up to 1,000 of them and up to the backlog's
    // byte budget (1 MiB; these carry ~30 KB each), with `more` set when it stopped short. Reconnecting with
    // `since` the last one received continues from there until nothing is left.
    let mut received = Vec::new();
    let mut backlog = caught_up;
    loop {
        let batch = backlog.backlog_ids();
        assert!(!batch.is_empty() || received.len() == missed.len(), "an empty backlog before the end");
        assert!(batch.len() <= 1000);
        received.extend(batch);
        let more = backlog.backlog["more"].as_bool().expect("more is a bool");
        assert_eq!(more, received.len() < missed.len(), "more after {} of {}", received.len(), missed.len());
        if !more {
            break;
        }
        let last = received.last().expect("at least one").clone();
        drop(backlog);
        backlog = app.connect_ws_since("alice", &last).await;
    }
    assert_eq!(received, ids(missed), "the catch-up after {since}");
}
