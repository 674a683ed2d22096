//! The client side of the WebSocket protocol: `ping`, bad frames (the connection stays open), oversize
//! frames (closed with 1009), and that one bad client affects no other.

use serde_json::json;

use crate::helpers::{filler, id, TestApp};

#[tokio::test]
async fn a_ping_gets_a_pong() {
    let app = TestApp::spawn().await;
    let mut tab = app.connect_ws("alice").await;

    tab.send_json(&json!({ "type": "ping" })).await;

    assert_eq!(tab.next_json().await, json!({ "type": "pong" }));
}

#[tokio::test]
async fn bad_frames_get_an_error_and_the_connection_stays_open() {
    let app = TestApp::spawn().await;
    let mut tab = app.connect_ws("alice").await;
    let cases = [
        ("not JSON", "{\"type\": ", "invalid_json"),
        ("an unknown type", r#"{"type": "dance"}"#, "unknown_type"),
        ("no type", r#"{"ids": []}"#, "invalid_request"),
        ("ids is not a list", r#"{"type": "mark_read", "ids": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}"#, "invalid_request"),
        ("ids is missing", r#"{"type": "mark_read"}"#, "invalid_request"),
        ("ids holds a number", r#"{"type": "mark_read", "ids": [42]}"#, "invalid_request"),
    ];
    for (case, frame, code) in cases {
        tab.send_text(frame).await;
        let answer = tab.next_json().await;
        assert_eq!(answer["type"], "error", "{case}: {answer}");
        assert_eq!(answer["code"], code, "{case}: {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{case}: {answer}");
    }

    tab.assert_alive().await;
    let n = app.notify("alice", "t", "still delivered").await;
    assert_eq!(id(&tab.next_notification().await), id(&n));
    let metrics = app.metrics().await;
    assert_eq!(metrics.value(r#"herald_errors_total{code="unknown_type"}"#), Some(1.0));
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009_and_others_carry_on() {
    let app = TestApp::spawn().await;
    let mut big_talker = app.connect_ws("alice").await;
    let mut other_tab = app.connect_ws("alice").await;
    let mut bob = app.connect_ws("bob").await;

    let oversize = json!({ "type": "ping", "padding": filler(64 * 1024 + 1) });
    big_talker.send_json(&oversize).await;

    assert_eq!(big_talker.expect_close().await.0, 1009);
    app.wait_for_connections(2).await;
    let n = app.notify("alice", "t", "after the big frame").await;
    assert_eq!(id(&other_tab.next_notification().await), id(&n));
    bob.assert_alive().await;
}

#[tokio::test]
async fn a_frame_just_under_the_limit_is_read() {
    let app = TestApp::spawn().await;
    let mut tab = app.connect_ws("alice").await;

    // A valid frame padded to just under 64 KiB: the server reads it and answers (here, an error for the
    // unknown field or a pong; either way not a close).
    let frame = json!({ "type": "ping", "padding": filler(60 * 1024) });
    tab.send_json(&frame).await;
    let answer = tab.next_json().await;
    assert!(answer["type"] == "pong" || answer["type"] == "error", "{answer}");
    tab.assert_alive().await;
}

#[tokio::test]
async fn the_frame_limit_is_configurable() {
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_MAX_FRAME_BYTES", "1024");
    })
    .await;
    let mut tab = app.connect_ws("alice").await;

    tab.send_json(&json!({ "type": "ping", "padding": filler(2048) })).await;

    assert_eq!(tab.expect_close().await.0, 1009);
}

#[tokio::test]
async fn frames_sent_before_the_backlog_are_answered_after_it() {
    let app = TestApp::spawn().await;
    let n = app.notify("alice", "deal", "waiting").await;
    // The client does not wait for hello: it marks the notification read and pings at once.
    let url = app.ws_url(&format!("?token={}", app.token("alice")));
    let mut tab = crate::helpers::WsClient::try_connect_raw(&url).await.expect("upgrade");
    tab.send_json(&json!({ "type": "mark_read", "ids": [id(&n)] })).await;
    tab.send_json(&json!({ "type": "ping" })).await;

    let hello = tab.next_json().await;
    assert_eq!((hello["type"].as_str(), hello["unread_count"].as_u64()), (Some("hello"), Some(1)), "{hello}");
    assert_eq!(tab.next_json().await["type"], "notifications");
    // The pong is the connection's own answer; the read comes back through the hub, so either may be first.
    let mut answers = vec![tab.next_json().await, tab.next_json().await];
    answers.sort_by_key(|frame| frame["type"].as_str().map(str::to_owned));
    assert_eq!(answers, [json!({ "type": "pong" }), json!({ "type": "read", "ids": [id(&n)] })]);
    assert_eq!(app.unread_count("alice").await, 0);
}
