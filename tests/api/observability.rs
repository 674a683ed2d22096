//! Health, metrics, the OpenAPI document, and logs (JSON on request, never a secret).

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{id, status_and_json, wait_until, TestApp, API_KEY, JWT_SECRET, WAIT};

#[tokio::test]
async fn health_reports_each_part() {
    let app = TestApp::spawn().await;

    let health = app.health().await;

    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["connections"]["total"], 0);
    assert_eq!(health["connections"]["users"], 0);
    assert!(health["connections"]["capacity"].as_u64().is_some_and(|c| c > 0), "{health}");
    assert_eq!(health["store"]["status"], "ok", "{health}");
    assert_eq!(health["broker"]["status"], "ok", "{health}");
}

#[tokio::test]
async fn metrics_follow_a_publish_to_its_push() {
    let app = TestApp::spawn().await;
    let mut tab = app.connect_ws("alice").await;
    let n = app.notify("alice", "t", "measured").await;
    assert_eq!(id(&tab.next_notification().await), id(&n));

    let metrics = wait_until("the push to be counted", WAIT, || async {
        let metrics = app.metrics().await;
        (metrics.counter("herald_publish_to_push_seconds_count") >= 1.0).then_some(metrics)
    })
    .await;
    assert_eq!(metrics.value("herald_connections_open"), Some(1.0));
    assert_eq!(metrics.value("herald_users_connected"), Some(1.0));
    assert_eq!(metrics.value("herald_notifications_created_total"), Some(1.0));
    assert!(metrics.counter("herald_frames_sent_total") >= 1.0, "frames sent: {}", metrics.0);
    assert_eq!(metrics.kind("herald_publish_to_push_seconds"), Some("histogram"));
    assert_eq!(metrics.value("herald_publish_to_push_seconds_count"), Some(1.0));
    assert!(metrics.0.contains("herald_publish_to_push_seconds_bucket{"), "no histogram buckets");
    assert_eq!(metrics.counter("herald_slow_consumer_closes_total"), 0.0);
}

#[tokio::test]
async fn the_openapi_document_describes_the_rest_api() {
    let app = TestApp::spawn().await;

    let (status, doc) =
        status_and_json(app.request(Method::GET, "/api/v1/openapi.json", None).send().await.unwrap()).await;

    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "openapi: {}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/notifications",
        "/api/v1/notifications/batch",
        "/api/v1/notifications/unread-count",
        "/api/v1/notifications/{id}/read",
        "/api/v1/notifications/read-all",
        "/api/v1/topics/{topic}/events",
        "/api/v1/topics/events/batch",
        "/api/v1/topics/{topic}",
        "/ws/topics/{topic}",
        "/api/v1/correlations",
        "/api/v1/stream",
        "/graphql",
        "/api/v1/emails",
        "/api/v1/emails/{id}",
        "/api/v1/users/{id}",
        "/api/v1/preferences",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented; paths: {:?}", paths.keys());
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_LOG_FORMAT", "json");
    })
    .await;
    app.notify("alice", "t", "logged").await;
    let _ = app.list("bad-token", "?page=0&limit=10").await;

    let logs = app.logs();
    let stderr = logs.split("--- herald stderr ---\n").nth(1).unwrap_or_default();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines at all");
    for line in lines {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok_and(|v| v.is_object()), "not a JSON object: {line:?}");
    }
}

#[tokio::test]
async fn secrets_and_tokens_never_reach_the_logs() {
    // At debug level, where request details would show up if anything logged them.
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_LOG", "debug");
    })
    .await;
    let token = app.token("alice");
    let _tab = app.connect_ws("alice").await;
    app.list(&token, "?page=0&limit=10").await;
    app.notify("alice", "t", "hello").await;
    let _ = app.try_connect_ws("?token=bad.token.value").await;

    let logs = app.logs();
    for (what, secret) in [("the JWT secret", JWT_SECRET), ("the API key", API_KEY), ("a user token", token.as_str())] {
        assert!(!logs.contains(secret), "{what} appears in the logs:\n{logs}");
    }
}
