//! Watching topics: `subscribe` on `/ws`, recovery with `since` and `history_gone`, topic sockets, the
//! order-streaming design's URLs, and who may watch what.

use serde_json::{json, Value};

use super::spawn_with_config;
use crate::helpers::{TestApp, WsClient};

fn status(kind: &str, progress: u64) -> Value {
    json!({"type": kind, "status": kind, "progress": progress})
}

/// Subscribes and returns the `subscribed` frame.
async fn subscribe(ws: &mut WsClient, topic: &str, since: Option<u64>) -> Value {
    let mut frame = json!({"type": "subscribe", "topic": topic});
    if let Some(since) = since {
        frame["since"] = json!(since);
    }
    ws.send_json(&frame).await;
    let subscribed = ws.next_json().await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(subscribed["topic"], topic);
    subscribed
}

async fn next_event(ws: &mut WsClient) -> Value {
    let frame = ws.next_json().await;
    assert_eq!(frame["type"], "event", "expected a topic event, got {frame}");
    frame
}

#[tokio::test]
async fn a_subscriber_gets_the_state_then_every_event_in_order_on_every_connection() {
    let app = TestApp::spawn().await;
    let topic = "order:abc";
    app.append_ok(topic, &status("pending", 0)).await;
    let token = app.topic_token("alice", &["order:*"]);
    let mut one = app.connect_ws_query(&format!("?token={token}")).await;
    let mut two = app.connect_ws_query(&format!("?token={}", app.topic_token("bob", &[topic]))).await;
    let first = subscribe(&mut one, topic, None).await;
    assert_eq!((first["state"]["seq"].as_u64(), first["state"]["status"].as_str()), (Some(1), Some("pending")));
    subscribe(&mut two, topic, None).await;

    for (kind, progress) in [("routing", 10), ("routing", 30), ("building", 50)] {
        app.append_ok(topic, &status(kind, progress)).await;
    }
    for ws in [&mut one, &mut two] {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let frame = next_event(ws).await;
            assert_eq!(frame["topic"], topic);
            assert_eq!(frame["seq"], frame["event"]["seq"]);
            seen.push((frame["seq"].as_u64().unwrap(), frame["event"]["progress"].as_u64().unwrap()));
        }
        assert_eq!(seen, [(2, 10), (3, 30), (4, 50)]);
    }
    // Inbox notifications still flow on the same connection.
    app.notify("alice", "refund.approved", "Refund").await;
    assert_eq!(one.next_notification().await["title"], "Refund");

    // After unsubscribe, nothing more of that topic arrives.
    one.send_json(&json!({"type": "unsubscribe", "topic": topic})).await;
    assert_eq!(one.next_json().await, json!({"type": "unsubscribed", "topic": topic}));
    app.append_ok(topic, &status("submitted", 80)).await;
    assert_eq!(next_event(&mut two).await["seq"], 5);
    one.assert_alive().await;
}

#[tokio::test]
async fn since_recovers_the_missed_events_and_history_gone_says_when_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with_config(dir.path(), "[topics.namespaces.job]\nhistory_events = 3\n").await;
    let topic = "job:1";
    for n in 1..=5 {
        app.append_ok(topic, &json!({"type": "tick", "progress": n * 10})).await;
    }
    let mut ws = app.connect_ws_query(&format!("?token={}", app.topic_token("alice", &["job:*"]))).await;
    // History holds 3..=5: since 2 is recoverable.
    let subscribed = subscribe(&mut ws, topic, Some(2)).await;
    assert_eq!(subscribed["state"]["seq"], 5);
    let seqs: Vec<u64> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(next_event(&mut ws).await["seq"].as_u64().unwrap());
        }
        v
    };
    assert_eq!(seqs, [3, 4, 5]);
    ws.assert_alive().await;

    // since 1 needs seq 2, which is gone: history_gone, then the state, and no partial history.
    let mut late = app.connect_ws_query(&format!("?token={}", app.topic_token("bob", &[topic]))).await;
    late.send_json(&json!({"type": "subscribe", "topic": topic, "since": 1})).await;
    let gone = late.next_json().await;
    assert_eq!(
        (gone["type"].as_str(), gone["code"].as_str(), gone["topic"].as_str()),
        (Some("error"), Some("history_gone"), Some(topic))
    );
    let subscribed = late.next_json().await;
    assert_eq!((subscribed["type"].as_str(), subscribed["state"]["seq"].as_u64()), (Some("subscribed"), Some(5)));
    late.assert_alive().await;
    // Live events go on from there.
    app.append_ok(topic, &json!({"type": "tick"})).await;
    assert_eq!(next_event(&mut late).await["seq"], 6);
    assert_eq!(next_event(&mut ws).await["seq"], 6);
    let metrics = app.metrics().await;
    assert!(metrics.value("herald_topic_history_misses_total").unwrap_or(0.0) >= 1.0);
}

#[tokio::test]
async fn nobody_watches_a_topic_they_may_not_read_on_any_transport() {
    let app = TestApp::spawn().await;
    app.append_ok("order:secret", &status("pending", 0)).await;
    let plain = app.token("mallory");
    let others = app.topic_token("mallory", &["order:mine-*", "intent:1"]);

    for token in [&plain, &others] {
        let mut ws = app.connect_ws_query(&format!("?token={token}")).await;
        ws.send_json(&json!({"type": "subscribe", "topic": "order:secret"})).await;
        let refused = ws.next_json().await;
        assert_eq!(
            (refused["type"].as_str(), refused["code"].as_str()),
            (Some("error"), Some("forbidden")),
            "{refused}"
        );
        app.append_ok("order:secret", &json!({"type": "routing", "status": "routing"})).await;
        ws.assert_alive().await;
    }
    for path in ["/ws/topics/order:secret", "/api/orders/status/secret"] {
        for (query, status) in [
            (format!("?token={plain}"), 403),
            (format!("?token={others}"), 403),
            (String::new(), 401),
            ("?token=not.a.token".into(), 401),
            (format!("?token={}", app.api_key), 403),
        ] {
            match app.connect_path(&format!("{path}{query}")).await {
                Ok(_) => panic!("{path}{query} was accepted"),
                Err((got, body)) => assert_eq!(got, status, "{path}{query}: {body:?}"),
            }
        }
    }
    let mine = app.topic_token("mallory", &["order:mine-*"]);
    let mut ws = app.connect_path(&format!("/ws/topics/order:mine-1?token={mine}")).await.expect("allowed");
    assert_eq!(ws.next_json().await["type"], "subscribed");
}

#[tokio::test]
async fn a_topic_socket_streams_one_topic_with_recovery() {
    let app = TestApp::spawn().await;
    let topic = "intent:9";
    for s in ["pending", "broadcast"] {
        app.append_ok(topic, &json!({"type": "status", "status": s})).await;
    }
    let token = app.topic_token("alice", &["intent:9"]);
    let mut ws = app.connect_path(&format!("/ws/topics/{topic}?token={token}&since=1")).await.expect("upgrade");
    let subscribed = ws.next_json().await;
    assert_eq!(
        (subscribed["type"].as_str(), subscribed["state"]["status"].as_str()),
        (Some("subscribed"), Some("broadcast"))
    );
    assert_eq!(next_event(&mut ws).await["seq"], 2);
    app.append_ok(topic, &json!({"type": "status", "status": "confirming", "data": {"confirmations": 1}})).await;
    let live = next_event(&mut ws).await;
    assert_eq!((live["seq"].as_u64(), live["event"]["data"]["confirmations"].as_u64()), (Some(3), Some(1)));
    ws.assert_alive().await;
    ws.send_json(&json!({"type": "subscribe", "topic": "intent:10"})).await;
    assert_eq!(ws.next_json().await["code"], "invalid_request");

    for bad in ["/ws/topics/nope", "/ws/topics/intent:9?since=x"] {
        match app.connect_path(&format!("{bad}{}token={token}", if bad.contains('?') { "&" } else { "?" })).await {
            Ok(_) => panic!("{bad} was accepted"),
            Err((got, _)) => assert_eq!(got, 400, "{bad}"),
        }
    }
}

/// The order-streaming design, unchanged: the client opens `/api/orders/status/{orderId}` and reads
/// `connection`, `subscribed`, then each step flattened with `orderId`, `status`, `progress` and the data.
#[tokio::test]
async fn the_order_alias_reproduces_the_designs_sequence() {
    let app = TestApp::spawn().await;
    let id = "550e8400-e29b-41d4-a716-446655440000";
    let topic = format!("order:{id}");
    app.append_ok(&topic, &json!({"type": "pending", "status": "pending", "data": {"message": "Order received"}}))
        .await;
    let token = app.topic_token("trader", &[&topic]);
    let mut ws = app.connect_path(&format!("/api/orders/status/{id}?token={token}")).await.expect("upgrade");
    let connection = ws.next_json().await;
    assert_eq!((connection["type"].as_str(), connection["orderId"].as_str()), (Some("connection"), Some(id)));
    assert!(connection["timestamp"].as_str().is_some() && connection["message"].as_str().is_some(), "{connection}");
    let subscribed = ws.next_json().await;
    assert_eq!((subscribed["type"].as_str(), subscribed["orderId"].as_str()), (Some("subscribed"), Some(id)));
    assert_eq!(subscribed["status"], "pending");

    let steps: [(&str, u64, Value); 6] = [
        ("routing", 10, json!({"message": "Fetching quotes from multiple DEXs..."})),
        ("routing", 30, json!({"message": "Received 2 quotes", "quotesFetched": 2})),
        ("building", 50, json!({"message": "Building transaction on raydium...", "chosenDex": "raydium"})),
        ("building", 70, json!({"message": "Transaction built, ready to submit"})),
        ("submitted", 80, json!({"message": "Submitting transaction (attempt 1/3)...", "attempt": 1})),
        (
            "confirmed",
            100,
            json!({"message": "Order successfully executed", "txHash": "5Jtmhqjc5v9KVCqJ", "type": "sneaky"}),
        ),
    ];
    for (kind, progress, data) in &steps {
        app.append_ok(&topic, &json!({"type": kind, "status": kind, "progress": progress, "data": data})).await;
    }
    for (kind, progress, data) in &steps {
        let frame = ws.next_json().await;
        assert_eq!(frame["type"], *kind, "{frame}");
        assert_eq!((frame["orderId"].as_str(), frame["status"].as_str()), (Some(id), Some(*kind)));
        assert_eq!(frame["progress"], *progress);
        assert_eq!(frame["message"], data["message"]);
        assert!(frame["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{frame}");
        for (key, value) in data.as_object().unwrap() {
            if key != "type" {
                assert_eq!(&frame[key], value, "{key} in {frame}");
            }
        }
    }
    // The REST poll, on the WebSocket's path and on /api/orders/{id}.
    for path in [format!("/api/orders/status/{id}"), format!("/api/orders/{id}")] {
        let (status, body) = app.get_json(&path, Some(&token)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            (body["success"].as_bool(), body["orderId"].as_str(), body["status"].as_str()),
            (Some(true), Some(id), Some("confirmed"))
        );
        assert_eq!(body["txHash"], "5Jtmhqjc5v9KVCqJ");
    }
    assert_eq!(app.get_json("/api/orders/unknown-order", Some(&token)).await.0, 403);
    let publisher = app.api_key.clone();
    assert_eq!(app.get_json("/api/orders/unknown-order", Some(&publisher)).await.0, 404);
}

#[tokio::test]
async fn a_public_namespace_needs_no_token_but_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with_config(dir.path(), "[topics.namespaces.order]\npublic = true\n").await;
    app.append_ok("order:open", &status("pending", 0)).await;
    let mut ws = app.connect_path("/api/orders/status/open").await.expect("a public topic needs no token");
    assert_eq!(ws.next_json().await["type"], "connection");
    assert_eq!(ws.next_json().await["type"], "subscribed");
    app.append_ok("order:open", &status("routing", 10)).await;
    assert_eq!(ws.next_json().await["progress"], 10);
    assert_eq!(app.get_json("/api/orders/open", None).await.0, 200);
    assert!(matches!(app.connect_path("/api/orders/status/open?token=forged.token.here").await, Err((401, _))));
    // Other namespaces are still private.
    assert!(matches!(app.connect_path("/ws/topics/intent:1").await, Err((401, _))));
}

#[tokio::test]
async fn a_connection_watches_a_bounded_number_of_topics() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with_config(dir.path(), "[topics]\nmax_per_connection = 2\n").await;
    let mut ws = app.connect_ws_query(&format!("?token={}", app.topic_token("alice", &["job:*"]))).await;
    subscribe(&mut ws, "job:1", None).await;
    subscribe(&mut ws, "job:2", None).await;
    // Subscribing again to a watched topic is not a new subscription.
    subscribe(&mut ws, "job:2", None).await;
    ws.send_json(&json!({"type": "subscribe", "topic": "job:3"})).await;
    assert_eq!(ws.next_json().await["code"], "too_many_subscriptions");
    ws.send_json(&json!({"type": "unsubscribe", "topic": "job:1"})).await;
    assert_eq!(ws.next_json().await["type"], "unsubscribed");
    subscribe(&mut ws, "job:3", None).await;
    let health = app.health().await;
    assert_eq!(health["topics"]["subscribers"], 2, "{health}");
}
