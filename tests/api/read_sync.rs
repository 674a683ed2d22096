//! Read state stays in sync across tabs: marking read on any connection, or over REST, sends `read` /
//! `read_all` to every connection of that user, and to nobody else.

use serde_json::json;

use crate::helpers::{assert_rfc3339_utc, id, status_and_json, TestApp};

#[tokio::test]
async fn mark_read_on_one_tab_reaches_every_tab() {
    let app = TestApp::spawn().await;
    let mut tab1 = app.connect_ws("alice").await;
    let mut tab2 = app.connect_ws("alice").await;
    let sent = app.notify_many("alice", "n", 3).await;
    tab1.next_notifications(3).await;
    tab2.next_notifications(3).await;

    tab1.send_json(&json!({ "type": "mark_read", "ids": [id(&sent[0]), id(&sent[2])] })).await;

    let expected = json!({ "type": "read", "ids": [id(&sent[0]), id(&sent[2])] });
    assert_eq!(tab2.next_json().await, expected, "the other tab");
    assert_eq!(tab1.next_json().await, expected, "the tab that marked them");

    let inbox = app.inbox("alice", "?page=0&limit=10").await;
    assert_eq!(inbox["unread_count"], 1);
    let items = inbox["items"].as_array().unwrap();
    // Newest first: sent[2], sent[1], sent[0].
    assert_eq!(
        (items[0]["read"].clone(), items[1]["read"].clone(), items[2]["read"].clone()),
        (json!(true), json!(false), json!(true))
    );
    assert_rfc3339_utc(&items[0]["read_at"]);
    assert_eq!(app.unread_count("alice").await, 1);
}

#[tokio::test]
async fn marking_read_over_rest_reaches_every_tab() {
    let app = TestApp::spawn().await;
    let mut tab1 = app.connect_ws("alice").await;
    let mut tab2 = app.connect_ws("alice").await;
    let n = app.notify("alice", "comment", "read me").await;
    tab1.next_notification().await;
    tab2.next_notification().await;

    let (status, body) = status_and_json(app.mark_read("alice", id(&n)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], n["id"]);
    assert_eq!(body["read"], true);
    assert_rfc3339_utc(&body["read_at"]);

    let expected = json!({ "type": "read", "ids": [id(&n)] });
    assert_eq!(tab1.next_json().await, expected);
    assert_eq!(tab2.next_json().await, expected);
    assert_eq!(app.unread_count("alice").await, 0);
}

#[tokio::test]
async fn read_all_over_rest_reaches_every_tab() {
    let app = TestApp::spawn().await;
    let mut tab1 = app.connect_ws("alice").await;
    let mut tab2 = app.connect_ws("alice").await;
    app.notify_many("alice", "n", 4).await;
    app.notify_many("bob", "n", 2).await;
    tab1.next_notifications(4).await;
    tab2.next_notifications(4).await;

    let (status, body) = status_and_json(app.read_all("alice").await).await;
    assert_eq!((status, body), (200, json!({ "updated": 4 })));

    assert_eq!(tab1.next_json().await, json!({ "type": "read_all" }));
    assert_eq!(tab2.next_json().await, json!({ "type": "read_all" }));
    assert_eq!(app.unread_count("alice").await, 0);
    assert_eq!(app.unread_count("bob").await, 2, "bob's inbox is untouched");

    let (status, body) = status_and_json(app.read_all("alice").await).await;
    assert_eq!((status, body), (200, json!({ "updated": 0 })), "nothing left to mark");
}

#[tokio::test]
async fn mark_all_read_on_one_tab_reaches_every_tab() {
    let app = TestApp::spawn().await;
    let mut tab1 = app.connect_ws("alice").await;
    let mut tab2 = app.connect_ws("alice").await;
    app.notify_many("alice", "n", 2).await;
    tab1.next_notifications(2).await;
    tab2.next_notifications(2).await;

    tab2.send_json(&json!({ "type": "mark_all_read" })).await;

    assert_eq!(tab1.next_json().await, json!({ "type": "read_all" }));
    assert_eq!(tab2.next_json().await, json!({ "type": "read_all" }));
    assert_eq!(app.unread_count("alice").await, 0);
}

#[tokio::test]
async fn read_events_never_reach_another_user() {
    let app = TestApp::spawn().await;
    let mut alice = app.connect_ws("alice").await;
    let mut bob = app.connect_ws("bob").await;
    let alices = app.notify("alice", "comment", "alice's").await;
    alice.next_notification().await;

    alice.send_json(&json!({ "type": "mark_read", "ids": [id(&alices)] })).await;
    assert_eq!(alice.next_json().await["type"], "read");
    assert_eq!(app.read_all("alice").await.status(), 200);
    assert_eq!(alice.next_json().await["type"], "read_all");

    // Bob's next frame is his own notification: no `read` or `read_all` of alice's came before it.
    let bobs = app.notify("bob", "comment", "bob's").await;
    let frame = bob.next_json().await;
    assert_eq!(frame["type"], "notification", "bob got {frame}");
    assert_eq!(id(&frame["data"]), id(&bobs));
}

#[tokio::test]
async fn a_user_cannot_mark_another_users_notification_read() {
    let app = TestApp::spawn().await;
    let mut alice = app.connect_ws("alice").await;
    let mut bob = app.connect_ws("bob").await;
    let alices = app.notify("alice", "comment", "private").await;
    alice.next_notification().await;

    bob.send_json(&json!({ "type": "mark_read", "ids": [id(&alices)] })).await;
    // Whatever bob is told, the server has handled his frame once it answers his ping.
    bob.send_json(&json!({ "type": "ping" })).await;
    bob.next_of_type("pong").await;

    let (status, body) = status_and_json(app.mark_read("bob", id(&alices)).await).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");

    assert_eq!(app.unread_count("alice").await, 1, "alice's notification is still unread");
    let later = app.notify("alice", "comment", "later").await;
    let frame = alice.next_json().await;
    assert_eq!(frame["type"], "notification", "alice was told something about bob's attempt: {frame}");
    assert_eq!(id(&frame["data"]), id(&later));
}
