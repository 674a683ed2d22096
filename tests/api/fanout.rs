//! The right people, and only them: every connection of the user gets each notification, in creation
//! order; no other user ever does.

use serde_json::json;

use crate::helpers::{assert_notification_shape, id, ids, TestApp};

#[tokio::test]
async fn every_tab_of_the_user_gets_each_notification_in_order_and_other_users_get_none() {
    let app = TestApp::spawn().await;
    let mut alice_tab1 = app.connect_ws("alice").await;
    let mut alice_tab2 = app.connect_ws("alice").await;
    let mut bob = app.connect_ws("bob").await;

    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(app.notify("alice", "comment", &format!("alice {i}")).await);
    }
    let bobs = app.notify("bob", "comment", "only for bob").await;

    for tab in [&mut alice_tab1, &mut alice_tab2] {
        let received = tab.next_notifications(5).await;
        assert_eq!(ids(&received), ids(&sent), "a tab of alice got other notifications or another order");
        assert_eq!(received[0]["title"], "alice 0");
        assert_eq!(received[0]["user_id"], "alice");
    }
    // Bob's first live frame is his own notification: none of alice's five reached him before it.
    let first_for_bob = bob.next_notification().await;
    assert_eq!(id(&first_for_bob), id(&bobs));
    assert_eq!(first_for_bob["user_id"], "bob");

    // And alice's tabs never see bob's: their next frame is alice's next notification.
    let later = app.notify("alice", "comment", "later").await;
    assert_eq!(id(&alice_tab1.next_notification().await), id(&later));
    assert_eq!(id(&alice_tab2.next_notification().await), id(&later));
}

#[tokio::test]
async fn hello_names_the_user_and_a_distinct_connection() {
    let app = TestApp::spawn().await;
    app.notify("alice", "comment", "waiting").await;

    let tab1 = app.connect_ws("alice").await;
    let tab2 = app.connect_ws("alice").await;

    for tab in [&tab1, &tab2] {
        assert_eq!(tab.hello["user_id"], "alice");
        assert_eq!(tab.hello["unread_count"], 1);
        assert!(tab.hello["connection_id"].is_string(), "hello: {}", tab.hello);
    }
    assert_ne!(tab1.hello["connection_id"], tab2.hello["connection_id"]);
}

#[tokio::test]
async fn concurrent_publishes_arrive_in_creation_order_on_every_tab() {
    let app = TestApp::spawn().await;
    let mut tab1 = app.connect_ws("alice").await;
    let mut tab2 = app.connect_ws("alice").await;

    let titles: Vec<String> = (0..30).map(|i| format!("burst {i}")).collect();
    let publishes = titles.iter().map(|title| app.notify("alice", "burst", title));
    let mut acknowledged = ids(&futures_util::future::join_all(publishes).await);
    acknowledged.sort();

    for tab in [&mut tab1, &mut tab2] {
        let received = ids(&tab.next_notifications(30).await);
        // Ids sort by creation time, so creation order is ascending id order.
        assert_eq!(received, acknowledged, "not every notification, or not in creation order");
    }
}

#[tokio::test]
async fn a_live_notification_carries_what_was_published() {
    let app = TestApp::spawn().await;
    let mut tab = app.connect_ws("alice").await;

    let created = app
        .notify_with(&json!({
            "user_id": "alice",
            "type": "invoice.paid",
            "title": "Invoice paid",
            "message": "Invoice #42 was paid.",
            "data": { "invoice": 42, "amount": { "value": 1999, "currency": "EUR" } }
        }))
        .await;
    assert_notification_shape(&created);
    assert_eq!(created["user_id"], "alice");
    assert_eq!(created["type"], "invoice.paid");
    assert_eq!(created["title"], "Invoice paid");
    assert_eq!(created["message"], "Invoice #42 was paid.");
    assert_eq!(created["data"], json!({ "invoice": 42, "amount": { "value": 1999, "currency": "EUR" } }));
    assert_eq!(created["read"], false);

    let pushed = tab.next_notification().await;
    assert_notification_shape(&pushed);
    for field in ["id", "user_id", "type", "title", "message", "data", "created_at"] {
        assert_eq!(pushed[field], created[field], "field {field} differs between the push and the 201");
    }
}

#[tokio::test]
async fn health_and_metrics_count_connections_and_users() {
    let app = TestApp::spawn().await;
    let alice_tab1 = app.connect_ws("alice").await;
    let _alice_tab2 = app.connect_ws("alice").await;
    let _bob = app.connect_ws("bob").await;

    let health = app.wait_for_connections(3).await;
    assert_eq!(health["connections"]["users"], 2, "health: {health}");
    let metrics = app.metrics().await;
    assert_eq!(metrics.value("herald_connections_open"), Some(3.0));
    assert_eq!(metrics.value("herald_users_connected"), Some(2.0));

    alice_tab1.close().await;
    let health = app.wait_for_connections(2).await;
    assert_eq!(health["connections"]["users"], 2, "alice still has a tab: {health}");
}
