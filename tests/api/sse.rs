//! The Server-Sent Events transport, `GET /api/v1/stream`: the WebSocket's frames as named events, ids that
//! make the browser's `Last-Event-ID` resume where the stream left off, topics named at connect, the same
//! auth and limits as a WebSocket, the slow-consumer rule, keepalive comments, and a clean end on shutdown.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use crate::helpers::{filler, id, ids, now, sign, status_and_json, wait_until, TestApp, WAIT};

#[tokio::test]
async fn the_stream_sends_hello_the_backlog_and_every_live_change_with_ids() {
    let app = TestApp::spawn().await;
    let before = app.notify_many("alice", "before", 2).await;
    let (mut stream, hello, backlog) = app.connect_sse("alice", "").await;
    assert_eq!(stream.header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(stream.header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(
        (hello["type"].clone(), hello["user_id"].clone(), hello["unread_count"].clone()),
        (json!("hello"), json!("alice"), json!(2))
    );
    assert_eq!(ids(backlog["items"].as_array().unwrap()), ids(&before), "the unread backlog, oldest first");
    // The backlog event carries the newest id it covers, so a reconnect resumes after it.
    assert_eq!(stream.last_event_id.as_deref(), Some(id(&before[1])));
    app.wait_for_connections(1).await;

    let live = app.notify("alice", "comment", "live").await;
    let event = stream.expect("notification").await;
    assert_eq!((event.id.as_deref(), event.data["data"]["id"].as_str()), (Some(id(&live)), Some(id(&live))));
    assert_eq!(event.data["type"], "notification");
    assert_eq!(app.mark_read("alice", id(&live)).await.status(), 200);
    let read = stream.expect("read").await;
    assert_eq!((read.id, read.data["ids"].clone()), (None, json!([id(&live)])));
    assert_eq!(app.read_all("alice").await.status(), 200);
    assert_eq!(stream.expect("read_all").await.data, json!({"type": "read_all"}));
    // Another user's notifications never arrive; the next event is alice's own.
    app.notify("bob", "x", "not for alice").await;
    let mine = app.notify("alice", "x", "mine").await;
    assert_eq!(stream.expect("notification").await.id.as_deref(), Some(id(&mine)));
    // Written to a live stream counts as delivered (the marks are recorded a moment later).
    wait_until("the live notification to be marked delivered", WAIT, || async {
        (app.inbox("alice", "?limit=1").await["items"][0]["delivered"] == true).then_some(())
    })
    .await;
}

/// The browser reconnects with `Last-Event-ID` (and the URL it first opened, `since` and all): the header
/// wins, and the backlog is exactly what was missed.
#[tokio::test]
async fn last_event_id_resumes_where_the_stream_left_off() {
    let app = TestApp::spawn().await;
    let first = app.notify("alice", "n", "first").await;
    let (mut stream, _, _) = app.connect_sse("alice", "").await;
    let seen = app.notify("alice", "n", "seen").await;
    assert_eq!(stream.expect("notification").await.id.as_deref(), Some(id(&seen)));
    let last = stream.last_event_id.clone().unwrap();
    drop(stream);
    app.wait_for_connections(0).await;

    let missed = app.notify_many("alice", "missed", 3).await;
    let query = format!("?token={}&since={}", app.token("alice"), id(&first));
    let mut resumed = app.try_connect_sse(&query, &[("Last-Event-ID", &last)]).await.unwrap();
    resumed.expect("hello").await;
    let backlog = resumed.expect("notifications").await;
    assert_eq!(ids(backlog.data["items"].as_array().unwrap()), ids(&missed), "exactly what was missed");
    assert_eq!(backlog.id.as_deref(), Some(id(&missed[2])));
}

#[tokio::test]
async fn a_stream_is_refused_like_a_websocket() {
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_MAX_CONNECTIONS_PER_USER", "2");
    })
    .await;
    let refused = |query: String, headers: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            match app.try_connect_sse(&query, &headers).await {
                Ok(_) => panic!("the stream {query} was opened"),
                Err((status, body)) => (status, body["error"]["code"].as_str().unwrap_or_default().to_owned()),
            }
        }
    };
    let token = app.token("alice");
    assert_eq!(refused(String::new(), vec![]).await, (401, "unauthorized".into()));
    assert_eq!(refused("?token=nonsense".into(), vec![]).await, (401, "unauthorized".into()));
    assert_eq!(refused(format!("?token={}", app.api_key), vec![]).await, (403, "forbidden".into()));
    assert_eq!(refused(format!("?token={token}&since=nope"), vec![]).await, (400, "invalid_query".into()));
    assert_eq!(
        refused(format!("?token={token}"), vec![("Last-Event-ID", "nope".into())]).await,
        (400, "invalid_query".into())
    );
    assert_eq!(refused(format!("?token={token}&topics=not-a-topic"), vec![]).await, (400, "invalid_query".into()));
    assert_eq!(refused(format!("?token={token}&topics=order:1"), vec![]).await, (403, "forbidden".into()));
    assert_eq!(refused(format!("?token={token}&dance=1"), vec![]).await, (400, "invalid_query".into()));
    assert_eq!(app.health().await["connections"]["total"], 0, "nothing refused was opened");

    // A bearer header works as the token does; the per-user limit counts streams and sockets together.
    let bearer = format!("Bearer {token}");
    let mut stream = app.try_connect_sse("", &[("Authorization", &bearer)]).await.expect("a bearer opens it");
    assert_eq!(stream.expect("hello").await.data["user_id"], "alice");
    let _ws = app.connect_ws("alice").await;
    assert_eq!(refused(format!("?token={token}"), vec![]).await, (429, "too_many_connections".into()));
    assert_eq!(app.health().await["connections"]["total"], 2);
}

/// Topics named at connect: each starts from its current state, then its live events; inbox notifications
/// flow on the same stream.
#[tokio::test]
async fn topics_named_at_connect_stream_their_state_then_their_events() {
    let app = TestApp::spawn().await;
    let topic = "order:sse-1";
    app.append_ok(topic, &json!({"type": "pending", "status": "pending"})).await;
    let token = app.topic_token("alice", &["order:*"]);
    let mut stream = app.try_connect_sse(&format!("?token={token}&topics={topic},order:sse-2"), &[]).await.unwrap();
    stream.expect("hello").await;
    stream.expect("notifications").await;
    let subscribed = stream.expect("subscribed").await.data;
    assert_eq!((subscribed["topic"].as_str(), subscribed["state"]["seq"].as_u64()), (Some(topic), Some(1)));
    let fresh = stream.expect("subscribed").await.data;
    assert_eq!((fresh["topic"].clone(), fresh["state"].clone()), (json!("order:sse-2"), Value::Null));

    app.append_ok(topic, &json!({"type": "routing", "status": "routing", "progress": 10})).await;
    let event = stream.expect("event").await;
    assert_eq!((event.data["topic"].as_str(), event.data["seq"].as_u64(), event.id), (Some(topic), Some(2), None));
    app.append_ok("order:elsewhere", &json!({"type": "pending", "status": "pending"})).await;
    app.notify("alice", "x", "inbox too").await;
    assert_eq!(stream.expect("notification").await.data["data"]["title"], "inbox too");
}

/// A client that stops reading is given up on (its place freed, counted as a slow consumer), the publisher
/// is never held up, and it resumes with `Last-Event-ID` missing nothing.
#[tokio::test]
async fn a_stream_that_stops_reading_is_dropped_and_resumes_with_last_event_id() {
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_OUTBOX_CAPACITY", "64");
    })
    .await;
    let (mut stream, _, _) = app.connect_sse("alice", "").await;
    let marker = app.notify("alice", "t", "before the flood").await;
    assert_eq!(stream.expect("notification").await.id.as_deref(), Some(id(&marker)));
    let last = stream.last_event_id.clone().unwrap();

    let padding = filler(30 * 1024);
    let mut published: Vec<Value> = Vec::new();
    for batch in 0.. {
        let items: Vec<Value> = (0..25)
            .map(|i| json!({ "user_id": "alice", "type": "bulk", "title": format!("b{batch} n{i}"), "data": { "padding": padding } }))
            .collect();
        let (status, body) = status_and_json(app.publish_batch(&items).await).await;
        assert_eq!(status, 201, "the publisher was held up or refused: {}", body["error"]);
        published.extend(body["items"].as_array().unwrap().iter().cloned());
        if app.metrics().await.counter("herald_slow_consumer_closes_total") >= 1.0 {
            break;
        }
        assert!(batch < 100, "no slow-consumer close after {} notifications", published.len());
    }
    // Its place is given back while the client still holds the (stalled) response.
    app.wait_for_connections(0).await;
    drop(stream);

    let mut received: Vec<String> = Vec::new();
    let mut last = last;
    loop {
        let query = format!("?token={}", app.token("alice"));
        let mut resumed = app.try_connect_sse(&query, &[("Last-Event-ID", &last)]).await.unwrap();
        resumed.expect("hello").await;
        let backlog = resumed.expect("notifications").await;
        received.extend(ids(backlog.data["items"].as_array().unwrap()));
        last = backlog.id.clone().unwrap_or(last);
        if backlog.data["more"] == false {
            break;
        }
    }
    assert_eq!(received, ids(&published), "every notification once, in order");
}

#[tokio::test]
async fn keepalive_comments_flow_and_an_expired_token_ends_the_stream_with_4001() {
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_PING_INTERVAL_MS", "200");
    })
    .await;
    // Expiring in 2 s: accepted now, and the stream's keepalive notices when it passes.
    let claims = json!({ "sub": "alice", "iat": now(), "exp": now() + 2 });
    let token = sign(Algorithm::HS256, &EncodingKey::from_secret(app.jwt_secret.as_bytes()), &claims);
    let mut stream = app.try_connect_sse(&format!("?token={token}"), &[]).await.unwrap();
    stream.expect("hello").await;
    stream.expect("notifications").await;
    let close = stream.next_within(Duration::from_secs(10)).await.expect("a close event before the end");
    assert!(stream.comments >= 2, "keepalive comments while idle: {}", stream.comments);
    assert_eq!(close.event, "close");
    assert_eq!((close.data["code"].clone(), close.data["reason"].clone()), (json!(4001), json!("token expired")));
    assert!(stream.until_end().await.is_empty(), "nothing after the close");
    app.wait_for_connections(0).await;
}

#[tokio::test]
async fn shutdown_ends_each_stream_with_1001_and_does_not_wait_for_it() {
    let mut app = TestApp::spawn().await;
    let (mut stream, _, _) = app.connect_sse("alice", "").await;
    app.wait_for_connections(1).await;
    app.sigterm();
    let close = stream.next().await;
    assert_eq!((close.event.as_str(), close.data["code"].clone()), ("close", json!(1001)));
    assert!(stream.until_end().await.is_empty());
    assert!(app.wait_exit(Duration::from_secs(10)).await.success());
}
