//! Idempotency: the same `idempotency_key` again for the same user answers 200 with the original
//! notification, stores nothing new and pushes nothing again.

use serde_json::json;

use crate::helpers::{id, status_and_json, TestApp};

#[tokio::test]
async fn a_repeated_key_returns_the_original_and_pushes_nothing() {
    let app = TestApp::spawn().await;
    let mut tab = app.connect_ws("alice").await;
    let body =
        json!({ "user_id": "alice", "type": "order.shipped", "title": "Shipped", "idempotency_key": "order-42" });

    let (status, original) = status_and_json(app.publish(&body).await).await;
    assert_eq!(status, 201, "{original}");
    assert_eq!(id(&tab.next_notification().await), id(&original));

    let retry = json!({ "user_id": "alice", "type": "order.shipped", "title": "Shipped (retry)", "idempotency_key": "order-42" });
    let (status, repeated) = status_and_json(app.publish(&retry).await).await;
    assert_eq!(status, 200, "{repeated}");
    // The original as stored (its delivery state may have moved on since the first answer).
    for field in ["id", "user_id", "type", "title", "message", "data", "created_at"] {
        assert_eq!(repeated[field], original[field], "field {field} of the repeat's answer");
    }

    // No second push: the next frame on the tab is the next distinct notification.
    let next = app.notify("alice", "order.delivered", "Delivered").await;
    assert_eq!(id(&tab.next_notification().await), id(&next));

    let inbox = app.inbox("alice", "?page=0&limit=10").await;
    assert_eq!(inbox["total"], 2, "the repeat stored nothing: {inbox}");
    assert_eq!(app.metrics().await.value("herald_notifications_created_total"), Some(2.0));
}

#[tokio::test]
async fn the_same_key_for_another_user_is_a_different_notification() {
    let app = TestApp::spawn().await;
    let for_alice = json!({ "user_id": "alice", "type": "welcome", "idempotency_key": "welcome" });
    let for_bob = json!({ "user_id": "bob", "type": "welcome", "idempotency_key": "welcome" });

    let (status_a, alices) = status_and_json(app.publish(&for_alice).await).await;
    let (status_b, bobs) = status_and_json(app.publish(&for_bob).await).await;

    assert_eq!((status_a, status_b), (201, 201));
    assert_ne!(id(&alices), id(&bobs));
    assert_eq!(bobs["user_id"], "bob");
}

#[tokio::test]
async fn a_key_repeated_within_one_batch_is_stored_and_pushed_once() {
    let app = TestApp::spawn().await;
    let mut tab = app.connect_ws("alice").await;

    let items = [
        json!({ "user_id": "alice", "type": "t", "title": "a", "idempotency_key": "k1" }),
        json!({ "user_id": "alice", "type": "t", "title": "b" }),
        json!({ "user_id": "alice", "type": "t", "title": "a again", "idempotency_key": "k1" }),
    ];
    let (status, body) = status_and_json(app.publish_batch(&items).await).await;
    assert_eq!(status, 201, "{body}");
    let created = body["items"].as_array().expect("items");
    assert_eq!(created.len(), 3, "one answer per item: {body}");
    assert_eq!(id(&created[2]), id(&created[0]), "the repeat answers the first one");
    assert_eq!(created[2]["title"], "a");
    assert_ne!(id(&created[1]), id(&created[0]));

    assert_eq!(id(&tab.next_notification().await), id(&created[0]));
    assert_eq!(id(&tab.next_notification().await), id(&created[1]));
    let next = app.notify("alice", "t", "after the batch").await;
    assert_eq!(id(&tab.next_notification().await), id(&next), "the repeated item was pushed again");

    assert_eq!(app.inbox("alice", "?page=0&limit=10").await["total"], 3);
}

#[tokio::test]
async fn a_batch_item_with_a_key_used_before_answers_the_original() {
    let app = TestApp::spawn().await;
    let original =
        app.notify_with(&json!({ "user_id": "alice", "type": "t", "title": "original", "idempotency_key": "k" })).await;
    let mut tab = app.connect_ws("alice").await;
    assert_eq!(tab.backlog_ids(), vec![id(&original)]);

    let items = [
        json!({ "user_id": "alice", "type": "t", "title": "retry", "idempotency_key": "k" }),
        json!({ "user_id": "alice", "type": "t", "title": "fresh" }),
    ];
    let (status, body) = status_and_json(app.publish_batch(&items).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(id(&body["items"][0]), id(&original));

    assert_eq!(id(&tab.next_notification().await), id(&body["items"][1]), "only the fresh item is pushed");
    assert_eq!(app.inbox("alice", "?page=0&limit=10").await["total"], 2);
}
