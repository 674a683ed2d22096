//! The three message shapes of the systems Herald replaces, each from a real producer into a live socket,
//! with nothing but `HERALD_AMQP_URL` configured.

use serde_json::json;

use super::spawn_consuming;
use crate::helpers::amqp::{Producer, Vhost};
use crate::helpers::WAIT;

#[tokio::test]
async fn refund_events_are_routed_by_type_to_the_right_user_only() {
    let vhost = Vhost::create().await;
    let (app, _config) = spawn_consuming(&vhost, None, |_| {}).await;
    let mut client = app.connect_ws("client-1").await;
    let mut owner = app.connect_ws("owner-7").await;
    let mut bystander = app.connect_ws("bystander").await;
    let producer = Producer::connect(&vhost.url()).await;

    // The refund service publishes to its topic exchange with the routing key ws.broadcast; the target
    // user is a different field for each type, and a status change names both users.
    let changed = json!({"type": "RefundStatusChanged", "user_id": "client-1", "event_owner_id": "owner-7",
        "request_id": 123, "ticket_cod": "TKT-ABC123", "status": "APPROVED", "message": null});
    let requested = json!({"type": "new_refund_request", "event_owner_id": "owner-7", "user_id": "client-1",
        "request_id": 124, "requester_email": "user@example.com", "reason": "Cannot attend"});
    producer.publish("herald.events", "ws.broadcast", &changed).await;
    producer.publish("herald.events", "ws.broadcast", &requested).await;

    let to_client = client.next_notification().await;
    assert_eq!(to_client["user_id"], "client-1");
    assert_eq!(to_client["type"], "RefundStatusChanged");
    assert_eq!(to_client["data"], changed, "the whole message is the notification's data");
    let to_owner = owner.next_notification().await;
    assert_eq!(
        (to_owner["user_id"].as_str(), to_owner["type"].as_str()),
        (Some("owner-7"), Some("new_refund_request"))
    );
    assert_eq!(to_owner["data"]["requester_email"], "user@example.com");

    // Neither got the other's, and nobody else got anything: both inboxes hold exactly one.
    assert_eq!(app.whole_inbox("client-1").await.len(), 1);
    assert_eq!(app.whole_inbox("owner-7").await.len(), 1);
    assert!(app.whole_inbox("bystander").await.is_empty());
    client.assert_alive().await;
    bystander.assert_alive().await;
}

#[tokio::test]
async fn nestjs_messages_on_notification_queue_become_stored_notifications() {
    let vhost = Vhost::create().await;
    let (app, _config) = spawn_consuming(&vhost, None, |_| {}).await;
    let producer = Producer::connect(&vhost.url()).await;

    // Offline first: stored, then delivered in the backlog on connect.
    let offline = json!({"pattern": "create_notification", "id": "5f2c",
        "data": {"user_id": "nest-user", "type": "follow", "title": "New follower", "message": "bob follows you",
                 "sender_id": "bob"}});
    producer.publish("", "notification_queue", &offline).await;
    crate::helpers::wait_until("the offline notification to be stored", WAIT, || async {
        (app.whole_inbox("nest-user").await.len() == 1).then_some(())
    })
    .await;
    let mut ws = app.connect_ws("nest-user").await;
    let backlog = ws.backlog_items();
    assert_eq!(backlog.len(), 1, "stored and pushed on connect: {backlog:?}");
    assert_eq!(backlog[0]["title"], "New follower");
    assert_eq!(backlog[0]["message"], "bob follows you");
    assert_eq!(backlog[0]["data"], json!({"sender_id": "bob"}));
    assert_eq!(backlog[0]["read"], false);

    // Live, once connected.
    let live = json!({"pattern": "create_notification",
        "data": {"user_id": "nest-user", "type": "like", "title": "New like", "message": "alice likes your post"}});
    producer.publish("", "notification_queue", &live).await;
    let n = ws.next_notification().await;
    assert_eq!((n["type"].as_str(), n["title"].as_str()), (Some("like"), Some("New like")));
}

#[tokio::test]
async fn plain_messages_are_publish_bodies_and_idempotent() {
    let vhost = Vhost::create().await;
    let (app, _config) = spawn_consuming(&vhost, None, |_| {}).await;
    let mut ws = app.connect_ws("plain-user").await;
    let producer = Producer::connect(&vhost.url()).await;

    let body = json!({"user_id": "plain-user", "type": "order.shipped", "title": "Shipped",
        "data": {"order": 42}, "idempotency_key": "order-42-shipped"});
    // The same message three times (a producer retrying): one notification, one push.
    for _ in 0..3 {
        producer.publish("", "herald.notifications", &body).await;
    }
    let first = ws.next_notification().await;
    assert_eq!(first["data"], json!({"order": 42}));
    // And the same key through the HTTP API is the same notification too.
    let again = app.publish(&body).await;
    assert_eq!(again.status().as_u16(), 200, "the key was already used for this user");

    // Without a key of its own, the AMQP message_id makes repeats harmless.
    let unkeyed = json!({"user_id": "plain-user", "type": "order.paid"});
    let properties = lapin::BasicProperties::default().with_message_id("msg-7".into());
    for _ in 0..2 {
        assert!(
            producer.publish_with("", "herald.notifications", unkeyed.to_string().as_bytes(), properties.clone()).await
        );
    }
    let second = ws.next_notification().await;
    assert_eq!(second["type"], "order.paid");
    // A marker published after them arrives next: nothing was pushed twice in between.
    producer.publish("", "herald.notifications", &json!({"user_id": "plain-user", "type": "marker"})).await;
    assert_eq!(ws.next_notification().await["type"], "marker");
    assert_eq!(app.whole_inbox("plain-user").await.len(), 3);
}
