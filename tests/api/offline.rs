//! Offline, then connect: a user who was away gets the unread notifications they missed in the first
//! `notifications` frame, and what is sent that way counts as delivered.

use crate::helpers::{assert_notification_shape, id, ids, wait_until, TestApp, WAIT};

#[tokio::test]
async fn the_unread_notifications_arrive_on_connect_oldest_first_and_become_delivered() {
    let app = TestApp::spawn().await;
    let missed: Vec<_> = [
        app.notify("alice", "comment", "first").await,
        app.notify("alice", "comment", "second").await,
        app.notify("alice", "comment", "third").await,
    ]
    .into();
    for n in &missed {
        assert_eq!(n["delivered"], false, "nobody was connected: {n}");
        assert!(n["delivered_at"].is_null());
    }

    let mut tab = app.connect_ws("alice").await;
    assert_eq!(tab.hello["unread_count"], 3);
    assert_eq!(tab.backlog_ids(), ids(&missed), "the missed notifications, oldest first");
    assert_eq!(tab.backlog["more"], false);
    for n in tab.backlog_items() {
        assert_notification_shape(&n);
    }

    let inbox = wait_until("the backlog to be marked delivered", WAIT, || async {
        let inbox = app.inbox("alice", "?page=0&limit=10").await;
        let items = inbox["items"].as_array().cloned().unwrap_or_default();
        items.iter().all(|n| n["delivered"] == true).then_some(items)
    })
    .await;
    assert_eq!(inbox.len(), 3);
    for n in &inbox {
        assert_notification_shape(n);
        assert_eq!(n["read"], false, "delivered is not read: {n}");
    }

    // Live notifications follow the backlog on the same connection.
    let live = app.notify("alice", "comment", "live").await;
    assert_eq!(id(&tab.next_notification().await), id(&live));
}

#[tokio::test]
async fn read_notifications_are_not_in_the_backlog() {
    let app = TestApp::spawn().await;
    let first = app.notify("alice", "comment", "first").await;
    let second = app.notify("alice", "comment", "second").await;
    let third = app.notify("alice", "comment", "third").await;
    assert_eq!(app.mark_read("alice", id(&second)).await.status(), 200);

    let tab = app.connect_ws("alice").await;
    assert_eq!(tab.hello["unread_count"], 2);
    assert_eq!(tab.backlog_ids(), vec![id(&first), id(&third)]);
}

#[tokio::test]
async fn the_backlog_is_the_newest_hundred_unread_sent_oldest_first() {
    let app = TestApp::spawn().await;
    let published = app.notify_many("alice", "missed", 130).await;

    let tab = app.connect_ws("alice").await;
    assert_eq!(tab.hello["unread_count"], 130);
    assert_eq!(tab.backlog_ids(), ids(&published[30..]), "the newest 100, oldest first");
    assert_eq!(tab.backlog["more"], true, "30 older unread notifications were not sent");
}

#[tokio::test]
async fn a_user_with_nothing_missed_gets_an_empty_backlog() {
    let app = TestApp::spawn().await;
    app.notify("bob", "comment", "for bob").await;

    let tab = app.connect_ws("alice").await;
    assert_eq!(tab.hello["unread_count"], 0);
    assert_eq!(tab.backlog_ids(), Vec::<String>::new());
    assert_eq!(tab.backlog["more"], false);
}
