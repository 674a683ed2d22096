//! Bad input over HTTP gets a clear error and changes nothing.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_error, assert_error_response, filler, status_and_json, TestApp, API_KEY};

/// Asserts nothing was stored for `user` and no notification was created at all.
async fn assert_nothing_stored(app: &TestApp, users: &[&str]) {
    for user in users {
        assert_eq!(app.inbox(user, "?page=0&limit=10").await["total"], 0, "something was stored for {user}");
    }
    assert_eq!(app.metrics().await.counter("herald_notifications_created_total"), 0.0);
}

#[tokio::test]
async fn malformed_json_is_invalid_json() {
    let app = TestApp::spawn().await;
    let response = app
        .request(Method::POST, "/api/v1/notifications", Some(API_KEY))
        .header("content-type", "application/json")
        .body(r#"{"user_id": "alice", "type": "#)
        .send()
        .await
        .unwrap();

    assert_error_response(response, 400, "invalid_json").await;
    assert_nothing_stored(&app, &["alice"]).await;
    assert_eq!(app.metrics().await.value(r#"herald_errors_total{code="invalid_json"}"#), Some(1.0));
}

#[tokio::test]
async fn a_notification_that_breaks_the_schema_is_invalid_request() {
    let app = TestApp::spawn().await;
    let cases = [
        ("user_id is a number", json!({ "user_id": 5, "type": "t" })),
        ("type is a number", json!({ "user_id": "alice", "type": 7 })),
        ("data is a string", json!({ "user_id": "alice", "type": "t", "data": "not an object" })),
        ("data is an array", json!({ "user_id": "alice", "type": "t", "data": [1, 2] })),
        ("title is an object", json!({ "user_id": "alice", "type": "t", "title": { "x": 1 } })),
        ("type is missing", json!({ "user_id": "alice" })),
        ("user_id is missing", json!({ "type": "t" })),
        ("type is empty", json!({ "user_id": "alice", "type": "" })),
        ("user_id is empty", json!({ "user_id": "", "type": "t" })),
        ("an unknown field", json!({ "user_id": "alice", "type": "t", "colour": "red" })),
        ("the body is an array", json!([{ "user_id": "alice", "type": "t" }])),
    ];
    for (case, body) in cases {
        let (status, answer) = status_and_json(app.publish(&body).await).await;
        assert_eq!(status, 422, "{case}: {answer}");
        assert_error(&answer, "invalid_request");
    }
    assert_nothing_stored(&app, &["alice"]).await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_payload_too_large() {
    let app = TestApp::spawn().await;
    let body = json!({ "user_id": "alice", "type": "t", "data": { "blob": filler(1024 * 1024 + 1) } });

    assert_error_response(app.publish(&body).await, 413, "payload_too_large").await;
    assert_nothing_stored(&app, &["alice"]).await;
}

#[tokio::test]
async fn a_body_just_under_the_limit_is_accepted() {
    let app = TestApp::spawn().await;
    // Twenty notifications of ~50 KB each: about 1,000,000 bytes in one body, each item well within limits.
    let items: Vec<Value> = (0..20)
        .map(|i| json!({ "user_id": "alice", "type": "t", "data": { "i": i, "blob": filler(50_000) } }))
        .collect();
    let body_len = json!({ "notifications": items }).to_string().len();
    assert!((990_000..1024 * 1024).contains(&body_len), "the body is {body_len} bytes");

    let (status, created) = status_and_json(app.publish_batch(&items).await).await;
    assert_eq!(status, 201, "{}", created["error"]);
    assert_eq!(created["items"].as_array().map(Vec::len), Some(20));
}

#[tokio::test]
async fn the_body_limit_is_configurable() {
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_MAX_BODY_BYTES", "2048");
    })
    .await;
    let small = json!({ "user_id": "alice", "type": "t", "data": { "blob": filler(1000) } });
    let large = json!({ "user_id": "alice", "type": "t", "data": { "blob": filler(3000) } });

    assert_eq!(app.publish(&small).await.status(), 201);
    assert_error_response(app.publish(&large).await, 413, "payload_too_large").await;
}

#[tokio::test]
async fn a_batch_with_one_bad_item_names_its_index_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let mut tab = app.connect_ws("alice").await;
    let mut items: Vec<Value> =
        (0..5).map(|i| json!({ "user_id": "alice", "type": "t", "title": format!("n{i}") })).collect();
    items[3] = json!({ "user_id": "bob", "type": "t", "data": "not an object" });

    let (status, body) = status_and_json(app.publish_batch(&items).await).await;
    assert_eq!(status, 422, "{body}");
    let error = assert_error(&body, "invalid_request");
    assert_eq!(error["index"], 3, "{body}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("notifications[3]"), "the message names the item: {message:?}");

    assert_nothing_stored(&app, &["alice", "bob"]).await;
    // Nothing was pushed either: the next frame is a later notification.
    let later = app.notify("alice", "t", "later").await;
    assert_eq!(tab.next_notification().await["id"], later["id"]);
}

#[tokio::test]
async fn a_batch_of_a_thousand_is_accepted_and_one_more_is_too_large() {
    let app = TestApp::spawn().await;
    let item = |i: usize| json!({ "user_id": format!("user{}", i % 7), "type": "t" });

    let too_many: Vec<Value> = (0..1001).map(item).collect();
    assert_error_response(app.publish_batch(&too_many).await, 422, "batch_too_large").await;
    assert_eq!(app.metrics().await.counter("herald_notifications_created_total"), 0.0);

    let just_enough: Vec<Value> = (0..1000).map(item).collect();
    let (status, body) = status_and_json(app.publish_batch(&just_enough).await).await;
    assert_eq!(status, 201);
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1000));
    assert_eq!(app.metrics().await.value("herald_notifications_created_total"), Some(1000.0));
}

#[tokio::test]
async fn a_batch_that_is_not_a_list_of_notifications_is_refused() {
    let app = TestApp::spawn().await;
    let send = |body: &'static str| {
        app.request(Method::POST, "/api/v1/notifications/batch", Some(API_KEY))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    assert_error_response(send(r#"{"notifications": [ {"user_id": "#).await.unwrap(), 400, "invalid_json").await;
    assert_error_response(send(r#"{"notifications": "many"}"#).await.unwrap(), 422, "invalid_request").await;
    assert_error_response(send(r#"{}"#).await.unwrap(), 422, "invalid_request").await;
    assert_nothing_stored(&app, &["alice"]).await;
}

#[tokio::test]
async fn bad_page_or_limit_is_invalid_query() {
    let app = TestApp::spawn().await;
    let token = app.token("alice");
    for query in [
        "?page=0&limit=0",
        "?page=0&limit=101",
        "?page=-1&limit=10",
        "?page=0&limit=ten",
        "?page=x&limit=10",
        "?page=0&limit=10&unread=maybe",
        // Past 10,000 rows an offset is refused rather than scanned.
        "?page=101&limit=100",
    ] {
        let (status, body) = status_and_json(app.list(&token, query).await).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_error(&body, "invalid_query");
    }
    for query in ["?page=0&limit=1", "?page=0&limit=100"] {
        assert_eq!(app.list(&token, query).await.status(), 200, "{query}");
    }
}

#[tokio::test]
async fn errors_are_counted_by_code() {
    let app = TestApp::spawn().await;
    app.publish(&json!({ "user_id": "alice" })).await;
    app.publish(&json!({ "user_id": "alice" })).await;
    app.list(&app.token("alice"), "?page=0&limit=0").await;
    app.request(Method::GET, "/api/v1/notifications", None).send().await.unwrap();

    let metrics = app.metrics().await;
    assert_eq!(metrics.value(r#"herald_errors_total{code="invalid_request"}"#), Some(2.0));
    assert_eq!(metrics.value(r#"herald_errors_total{code="invalid_query"}"#), Some(1.0));
    assert_eq!(metrics.value(r#"herald_errors_total{code="unauthorized"}"#), Some(1.0));
}

#[tokio::test]
async fn every_error_has_the_json_error_shape() {
    let app = TestApp::spawn().await;
    let token = app.token("alice");

    let unknown_route = app.request(Method::GET, "/api/v1/nothing-here", Some(&token)).send().await.unwrap();
    assert_error_response(unknown_route, 404, "not_found").await;
    let not_an_id =
        app.request(Method::POST, "/api/v1/notifications/not-an-id/read", Some(&token)).send().await.unwrap();
    assert_error_response(not_an_id, 404, "not_found").await;

    let wrong_method = app.request(Method::GET, "/api/v1/notifications/batch", Some(API_KEY)).send().await.unwrap();
    let (status, body) = status_and_json(wrong_method).await;
    assert_eq!(status, 405, "{body}");
    let code = body["error"]["code"].as_str().unwrap_or_default();
    assert!(!code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "code {code:?} in {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}
