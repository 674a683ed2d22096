//! The process: a clean stop on SIGTERM, durability across `kill -9`, the connection capacity and the
//! open-files limit.

use std::{collections::BTreeSet, time::Duration};

use serde_json::json;

use crate::helpers::{id, ids, status_and_json, TestApp};

#[tokio::test]
async fn sigterm_closes_sockets_with_going_away_and_exits_zero() {
    let mut app = TestApp::spawn().await;
    let mut alice = app.connect_ws("alice").await;
    let mut bob = app.connect_ws("bob").await;
    app.wait_for_connections(2).await;

    app.sigterm();

    assert_eq!(alice.expect_close().await, (1001, "going away".to_owned()));
    assert_eq!(bob.expect_close().await, (1001, "going away".to_owned()));
    let status = app.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[tokio::test]
async fn what_was_acknowledged_before_sigterm_is_kept() {
    let mut app = TestApp::spawn().await;
    let publishes: Vec<_> = (0..50)
        .map(|i| {
            let (http, url) = (app.http.clone(), app.url("/api/v1/notifications"));
            let body = json!({ "user_id": "alice", "type": "t", "title": format!("n{i}") });
            tokio::spawn(async move {
                let response = http.post(url).bearer_auth(crate::helpers::API_KEY).json(&body).send().await.ok()?;
                if response.status() != 201 {
                    return None;
                }
                let created: serde_json::Value = response.json().await.ok()?;
                Some(id(&created).to_owned())
            })
        })
        .collect();
    // Stop the server while those publishes are in flight; whichever were acknowledged must survive.
    let first = app.notify("alice", "t", "acknowledged before the stop").await;
    app.sigterm();
    let mut acknowledged: BTreeSet<String> = BTreeSet::from([id(&first).to_owned()]);
    for publish in publishes {
        acknowledged.extend(publish.await.unwrap());
    }
    assert_eq!(app.wait_exit(Duration::from_secs(15)).await.code(), Some(0));

    app.restart().await;
    let stored: BTreeSet<String> = ids(&app.whole_inbox("alice").await).into_iter().collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost across SIGTERM: {lost:?}");
}

#[tokio::test]
async fn every_acknowledged_publish_survives_kill_9() {
    let mut app = TestApp::spawn().await;
    let users = ["alice", "bob", "carol", "dave"];

    let publishes: Vec<_> = (0..200)
        .map(|i| {
            let (http, url) = (app.http.clone(), app.url("/api/v1/notifications"));
            let body = json!({ "user_id": users[i % users.len()], "type": "durable", "title": format!("n{i}") });
            tokio::spawn(async move {
                let response = http.post(url).bearer_auth(crate::helpers::API_KEY).json(&body).send().await.unwrap();
                let (status, created) = status_and_json(response).await;
                assert_eq!(status, 201, "{created}");
                created
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for publish in publishes {
        acknowledged.push(publish.await.unwrap());
    }

    // Killed right after the last acknowledgement: no chance to flush anything on the way out.
    app.kill9().await;
    app.restart().await;

    for user in users {
        let expected: BTreeSet<String> =
            acknowledged.iter().filter(|n| n["user_id"] == user).map(|n| id(n).to_owned()).collect();
        let stored = app.whole_inbox(user).await;
        assert_eq!(stored.len(), 50, "{user} has {} notifications", stored.len());
        assert_eq!(stored.iter().map(|n| id(n).to_owned()).collect::<BTreeSet<_>>(), expected, "{user}'s inbox");
    }
    assert_eq!(app.inbox("alice", "?page=0&limit=1").await["total"], 50);
}

#[tokio::test]
async fn one_user_cannot_take_every_connection() {
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_MAX_CONNECTIONS_PER_USER", "2");
    })
    .await;
    let mut first = app.connect_ws("alice").await;
    let _second = app.connect_ws("alice").await;
    app.assert_ws_refused(&format!("?token={}", app.token("alice")), 429, "too_many_connections").await;
    // Other users are not affected, and alice's open connections are still served.
    let bob = app.connect_ws("bob").await;
    assert_eq!(bob.hello["user_id"], "bob");
    let n = app.notify("alice", "t", "still served").await;
    assert_eq!(id(&first.next_notification().await), id(&n));
}

#[tokio::test]
async fn at_capacity_new_connections_get_503_and_existing_ones_stay() {
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_MAX_CONNECTIONS", "2");
    })
    .await;
    assert_eq!(app.health().await["connections"]["capacity"], 2);
    let first = app.connect_ws("alice").await;
    let mut second = app.connect_ws("bob").await;

    app.assert_ws_refused(&format!("?token={}", app.token("carol")), 503, "at_capacity").await;

    let n = app.notify("bob", "t", "still served").await;
    assert_eq!(id(&second.next_notification().await), id(&n));

    first.close().await;
    app.wait_for_connections(1).await;
    let third = app.connect_ws("carol").await;
    assert_eq!(third.hello["user_id"], "carol");
}

#[tokio::test]
async fn the_soft_open_files_limit_is_raised_to_the_hard_limit() {
    let app = TestApp::spawn().await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", app.pid())).expect("read /proc/PID/limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("an open-files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_eq!(soft, hard, "{line}");

    let capacity = app.health().await["connections"]["capacity"].as_u64().expect("a numeric capacity");
    let hard: u64 = hard.parse().unwrap_or(u64::MAX);
    assert!(capacity > 0 && capacity < hard, "capacity {capacity} should be derived from the limit {hard}");
}
