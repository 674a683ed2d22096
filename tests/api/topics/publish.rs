//! Appending to topics over REST: sequence numbers, lifecycles, merged state, batches, expiry, restarts.

use reqwest::Method;
use serde_json::{json, Value};

use super::spawn_with_config;
use crate::helpers::{assert_error, status_and_json, wait_until, TestApp, WAIT};

#[tokio::test]
async fn events_get_sequence_numbers_and_fold_into_the_state() {
    let app = TestApp::spawn().await;
    let topic = "order:550e8400-e29b-41d4-a716-446655440000";
    assert_eq!(
        app.append_ok(topic, &json!({"type": "pending", "status": "pending", "data": {"tokenIn": "SOL"}})).await,
        1
    );
    assert_eq!(app.append_ok(topic, &json!({"type": "routing", "status": "routing", "progress": 10})).await, 2);
    let seq = app
        .append_ok(topic, &json!({"type": "routing", "status": "routing", "progress": 30, "data": {"quotes": 2}}))
        .await;
    assert_eq!(seq, 3);

    let (status, state) = app.get_json(&format!("/api/v1/topics/{topic}"), Some(&app.api_key)).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["topic"], topic);
    assert_eq!(
        (state["seq"].as_u64(), state["status"].as_str(), state["progress"].as_u64()),
        (Some(3), Some("routing"), Some(30))
    );
    assert_eq!(state["data"], json!({"tokenIn": "SOL", "quotes": 2}));
    assert!(state["updated_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{state}");
    assert!(state["expires_at"].as_str().is_some(), "{state}");

    let (status, history) = app.get_json(&format!("/api/v1/topics/{topic}/events?since=1"), Some(&app.api_key)).await;
    assert_eq!(status, 200, "{history}");
    let seqs: Vec<u64> = history["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [2, 3]);
    assert_eq!(history["gone"], false);
    assert_eq!(history["events"][1]["data"], json!({"quotes": 2}));
}

#[tokio::test]
async fn an_event_that_breaks_the_lifecycle_is_refused_naming_what_may_follow_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let topic = "intent:42";
    // A new intent starts at pending.
    let (status, body) = status_and_json(app.append(topic, &json!({"type": "status", "status": "ready"})).await).await;
    assert_eq!(status, 409, "{body}");
    let error = assert_error(&body, "invalid_transition");
    assert_eq!((error["current"].clone(), error["allowed"].clone()), (Value::Null, json!(["pending"])));
    assert_eq!(app.get_json(&format!("/api/v1/topics/{topic}"), Some(&app.api_key)).await.0, 404);

    app.append_ok(topic, &json!({"type": "status", "status": "pending"})).await;
    // pending → ready skips broadcast and confirming.
    let (status, body) = status_and_json(app.append(topic, &json!({"type": "status", "status": "ready"})).await).await;
    assert_eq!(status, 409, "{body}");
    let error = assert_error(&body, "invalid_transition");
    assert_eq!(error["current"], "pending");
    assert_eq!(error["allowed"], json!(["pending", "broadcast", "failed"]));
    assert_eq!(error["topic"], topic);

    for status in ["broadcast", "confirming", "ready"] {
        app.append_ok(topic, &json!({"type": "status", "status": status})).await;
    }
    // Terminal states are final.
    let (status, body) = status_and_json(app.append(topic, &json!({"type": "status", "status": "failed"})).await).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(assert_error(&body, "invalid_transition")["allowed"], json!([]));
    let (_, state) = app.get_json(&format!("/api/v1/topics/{topic}"), Some(&app.api_key)).await;
    assert_eq!((state["seq"].as_u64(), state["status"].as_str()), (Some(4), Some("ready")));
}

#[tokio::test]
async fn progress_may_not_go_back_within_a_status() {
    let app = TestApp::spawn().await;
    let topic = "order:p1";
    for (status, progress) in [("pending", 0), ("routing", 10), ("routing", 30)] {
        app.append_ok(topic, &json!({"type": status, "status": status, "progress": progress})).await;
    }
    let (status, body) =
        status_and_json(app.append(topic, &json!({"type": "routing", "status": "routing", "progress": 20})).await)
            .await;
    assert_eq!(status, 409, "{body}");
    assert!(assert_error(&body, "invalid_transition")["message"].as_str().unwrap().contains("progress"), "{body}");
}

#[tokio::test]
async fn a_batch_is_stored_whole_or_not_at_all() {
    let app = TestApp::spawn().await;
    let batch = |events: Value| {
        app.request(Method::POST, "/api/v1/topics/events/batch", Some(&app.api_key)).json(&json!({ "events": events }))
    };
    let ok = batch(json!([
        {"topic": "intent:1", "type": "status", "status": "pending"},
        {"topic": "intent:2", "type": "status", "status": "pending"},
        {"topic": "intent:1", "type": "status", "status": "broadcast", "data": {"txHash": "0xab"}},
    ]));
    let (status, body) = status_and_json(ok.send().await.unwrap()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["items"],
        json!([{"topic": "intent:1", "seq": 1}, {"topic": "intent:2", "seq": 1}, {"topic": "intent:1", "seq": 2}])
    );

    // The third event is refused: the first two (valid on their own) are not stored either.
    let refused = batch(json!([
        {"topic": "intent:2", "type": "status", "status": "broadcast"},
        {"topic": "intent:3", "type": "status", "status": "pending"},
        {"topic": "intent:1", "type": "status", "status": "pending"},
    ]));
    let (status, body) = status_and_json(refused.send().await.unwrap()).await;
    assert_eq!(status, 409, "{body}");
    let error = assert_error(&body, "invalid_transition");
    assert_eq!((error["index"].as_u64(), error["current"].as_str()), (Some(2), Some("broadcast")));
    let (_, two) = app.get_json("/api/v1/topics/intent:2", Some(&app.api_key)).await;
    assert_eq!((two["seq"].as_u64(), two["status"].as_str()), (Some(1), Some("pending")));
    assert_eq!(app.get_json("/api/v1/topics/intent:3", Some(&app.api_key)).await.0, 404);

    let (status, body) = status_and_json(batch(json!([])).send().await.unwrap()).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) =
        status_and_json(batch(json!([{"topic": "intent:1", "type": "x"}, {"topic": "nope"}])).send().await.unwrap())
            .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(assert_error(&body, "invalid_request")["index"], 1);
}

#[tokio::test]
async fn bad_events_get_clear_errors() {
    let app = TestApp::spawn().await;
    for (topic, body, status, code) in [
        ("order:1", json!({"status": "pending"}), 422, "invalid_request"),
        ("order:1", json!({"type": "a b"}), 422, "invalid_request"),
        ("order:1", json!({"type": "x", "progress": 101}), 422, "invalid_request"),
        ("order:1", json!({"type": "x", "data": [1]}), 422, "invalid_request"),
        ("order:1", json!({"type": "x", "extra": 1}), 422, "invalid_request"),
        ("order:1", json!({"type": "x", "status": "shipped"}), 409, "invalid_transition"),
        ("Order:1", json!({"type": "x"}), 422, "invalid_request"),
        ("order", json!({"type": "x"}), 422, "invalid_request"),
    ] {
        let (got, response) = status_and_json(app.append(topic, &body).await).await;
        assert_eq!(got, status, "{topic} {body} → {response}");
        assert_error(&response, code);
    }
    let big = "x".repeat(70 * 1024);
    let (got, response) = status_and_json(app.append("job:1", &json!({"type": "x", "data": {"big": big}})).await).await;
    assert_eq!(got, 422, "{response}");
    // Merged data is bounded too: two halves that fit alone do not fit together.
    let half = "y".repeat(40 * 1024);
    app.append_ok("job:2", &json!({"type": "x", "data": {"a": half}})).await;
    let (got, response) = status_and_json(app.append("job:2", &json!({"type": "x", "data": {"b": half}})).await).await;
    assert_eq!(got, 422, "{response}");
    assert_eq!(app.get_json("/api/v1/topics/job:2", Some(&app.api_key)).await.1["seq"], 1);
}

#[tokio::test]
async fn only_publishers_append_and_only_allowed_readers_read() {
    let app = TestApp::spawn().await;
    app.append_ok("order:7", &json!({"type": "pending", "status": "pending"})).await;
    let user = app.token("alice");
    let watcher = app.topic_token("alice", &["order:7"]);
    let other = app.topic_token("alice", &["order:8", "intent:*"]);

    let append = |bearer: Option<String>| {
        let request = app.request(Method::POST, "/api/v1/topics/order:7/events", bearer.as_deref());
        async move { status_and_json(request.json(&json!({"type": "x"})).send().await.unwrap()).await }
    };
    assert_eq!(append(None).await.0, 401);
    assert_eq!(append(Some(watcher.clone())).await.0, 403);
    assert_eq!(append(Some("not-a-key-0123456789".into())).await.0, 401);

    assert_eq!(app.get_json("/api/v1/topics/order:7", Some(&watcher)).await.0, 200);
    assert_eq!(app.get_json("/api/v1/orders/7", Some(&watcher)).await.0, 404, "no such route");
    assert_eq!(app.get_json("/api/orders/7", Some(&watcher)).await.0, 200);
    for (bearer, status) in [(Some(user.as_str()), 403), (Some(other.as_str()), 403), (None, 401), (Some("x.y.z"), 401)]
    {
        let (got, body) = app.get_json("/api/v1/topics/order:7", bearer).await;
        assert_eq!(got, status, "{bearer:?}: {body}");
        let (got, body) = app.get_json("/api/v1/topics/order:7/events?since=0", bearer).await;
        assert_eq!(got, status, "{bearer:?}: {body}");
        let (got, body) = app.get_json("/api/orders/7", bearer).await;
        assert_eq!(got, status, "{bearer:?}: {body}");
    }
}

#[tokio::test]
async fn a_topic_expires_after_its_namespace_ttl_and_then_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with_config(dir.path(), "[topics.namespaces.brief]\nttl_secs = 1\n").await;
    app.append_ok("brief:1", &json!({"type": "tick", "data": {"n": 1}})).await;
    app.append_ok("brief:1", &json!({"type": "tick"})).await;
    assert_eq!(app.get_json("/api/v1/topics/brief:1", Some(&app.api_key)).await.0, 200);
    wait_until("brief:1 to expire", WAIT, || async {
        (app.get_json("/api/v1/topics/brief:1", Some(&app.api_key)).await.0 == 404).then_some(())
    })
    .await;
    // Other namespaces keep the six-hour default.
    let (_, order) = {
        app.append_ok("order:9", &json!({"type": "pending", "status": "pending"})).await;
        app.get_json("/api/v1/topics/order:9", Some(&app.api_key)).await
    };
    let expires = time::OffsetDateTime::parse(
        order["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(left > time::Duration::hours(5) && left <= time::Duration::hours(6), "{left}");
    // An event for the expired topic starts it again from seq 1, with none of its old data.
    assert_eq!(app.append_ok("brief:1", &json!({"type": "tick"})).await, 1);
    let (_, state) = app.get_json("/api/v1/topics/brief:1", Some(&app.api_key)).await;
    assert_eq!(state["data"], json!({}));
}

#[tokio::test]
async fn topic_state_and_history_survive_a_restart() {
    let mut app = TestApp::spawn().await;
    for status in ["pending", "broadcast", "confirming"] {
        app.append_ok("intent:77", &json!({"type": "status", "status": status, "data": {status: true}})).await;
    }
    app.kill9().await;
    app.restart().await;
    let (status, state) = app.get_json("/api/v1/topics/intent:77", Some(&app.api_key)).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!((state["seq"].as_u64(), state["status"].as_str()), (Some(3), Some("confirming")));
    let (_, history) = app.get_json("/api/v1/topics/intent:77/events?since=0", Some(&app.api_key)).await;
    assert_eq!(history["events"].as_array().map(Vec::len), Some(3));
    // The lifecycle goes on from where it was.
    assert_eq!(app.append_ok("intent:77", &json!({"type": "status", "status": "ready"})).await, 4);
}
