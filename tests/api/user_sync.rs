//! User sync end to end: NestJS profile events on `neo4j_sync_queue` (RabbitMQ, a vhost per test) mirrored
//! into a real FalkorDB (started per test, see `helpers::falkordb`) and into Herald's user directory; the
//! semantics of the original sync service; malformed messages dead-lettered; the graph down, then back;
//! `POST /api/v1/sync/users/{id}`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::amqp::{messages, wait_for_count};
use crate::helpers::amqp::{Producer, Vhost};
use crate::helpers::falkordb::FalkorDb;
use crate::helpers::{assert_error_response, status_and_json, wait_until, TestApp, API_KEY, WAIT};

const QUEUE: &str = "neo4j_sync_queue";
const GRAPH: &str = "social";

struct Rig {
    app: TestApp,
    graph: FalkorDb,
    producer: Producer,
    _vhost: Vhost,
}

async fn rig() -> Rig {
    let graph = FalkorDb::start().await;
    let vhost = Vhost::create().await;
    let (amqp, graph_url) = (vhost.url(), graph.url());
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_AMQP_URL", amqp).env("HERALD_GRAPH_URL", graph_url);
    })
    .await;
    wait_until("the neo4j_sync_queue consumer", WAIT * 2, || async {
        let health = app.health().await;
        let consumers = health["amqp"]["consumers"].as_array()?.clone();
        consumers.iter().any(|c| c["queue"] == QUEUE && c["state"] == "consuming").then_some(())
    })
    .await;
    let producer = Producer::connect(&vhost.url()).await;
    Rig { app, graph, producer, _vhost: vhost }
}

fn create(user: Value) -> Value {
    json!({"pattern": "create_user_request", "data": user})
}

fn update(user: Value) -> Value {
    json!({"pattern": "update_user_request", "data": user})
}

impl Rig {
    async fn send(&self, message: &Value) {
        self.producer.publish("", QUEUE, message).await;
    }

    /// Waits until `n` messages of the queue have been settled (acked or dead-lettered).
    async fn settled(&self, n: f64) {
        wait_until(&format!("{n} sync messages settled"), WAIT, || async {
            (messages(&self.app, QUEUE, "acked").await >= n).then_some(())
        })
        .await;
    }

    /// The user's node: user_id, username, role, display_name, avatar_ipfs_hash, following, followers.
    async fn node(&self, id: &str) -> Option<Vec<Value>> {
        let query = format!(
            "MATCH (u:User) WHERE u.user_id = '{id}' RETURN u.user_id, u.username, u.role, u.display_name, \
             u.avatar_ipfs_hash, u.following_number, u.followers_number"
        );
        let mut rows = self.graph.rows(GRAPH, &query).await;
        assert!(rows.len() <= 1, "one node per user_id: {rows:?}");
        rows.pop()
    }

    async fn count(&self) -> i64 {
        self.graph.rows(GRAPH, "MATCH (u:User) RETURN count(u)").await[0][0].as_i64().unwrap_or(-1)
    }
}

#[tokio::test]
async fn profile_events_follow_the_sync_services_semantics() {
    let rig = rig().await;
    let ana = json!({"_id": {"$oid": "65a1f0c2e4b0a1b2c3d4e5f6"}, "username": "ana", "email": "ana@example.org",
        "role": "creator", "display_name": "Ana", "avatar_ipfs_hash": "QmAna", "password": "ignored", "followers": []});
    rig.send(&create(ana.clone())).await;
    rig.settled(1.0).await;
    let id = "65a1f0c2e4b0a1b2c3d4e5f6";
    assert_eq!(
        rig.node(id).await.expect("ana's node"),
        [json!(id), json!("ana"), json!("creator"), json!("Ana"), json!("QmAna"), json!(0), json!(0)]
    );
    // The directory follows: the email channel's recipient and name.
    let (code, entry) = rig.app.get_json(&format!("/api/v1/users/{id}"), Some(API_KEY)).await;
    assert_eq!(
        (code, entry["email"].as_str(), entry["display_name"].as_str()),
        (200, Some("ana@example.org"), Some("Ana"))
    );

    // Followers come from elsewhere; a profile update sets the profile and never touches them.
    rig.graph
        .write(GRAPH, &format!("MATCH (u:User {{user_id: '{id}'}}) SET u.following_number = 2, u.followers_number = 5"))
        .await;
    let mut renamed = ana.clone();
    renamed["username"] = json!("ana_b");
    renamed["display_name"] = json!("Ana B");
    renamed["avatar_ipfs_hash"] = Value::Null;
    // Three times, as a redelivery or a replay would: the same result.
    for _ in 0..3 {
        rig.send(&update(renamed.clone())).await;
    }
    rig.settled(4.0).await;
    assert_eq!(
        rig.node(id).await.unwrap(),
        [json!(id), json!("ana_b"), json!("creator"), json!("Ana B"), Value::Null, json!(2), json!(5)]
    );
    // A create of an existing user leaves it as it is.
    let mut stale = ana.clone();
    stale["username"] = json!("someone_else");
    rig.send(&create(stale)).await;
    rig.settled(5.0).await;
    assert_eq!(rig.node(id).await.unwrap()[1], json!("ana_b"));
    let (_, entry) = rig.app.get_json(&format!("/api/v1/users/{id}"), Some(API_KEY)).await;
    assert_eq!(entry["display_name"], "Ana B", "the directory is unchanged by it too");

    // An update of a missing user creates it, with zero counts; a plain string id works as well.
    rig.send(&update(json!({"_id": "bo-2", "username": "bo", "role": "fan"}))).await;
    rig.settled(6.0).await;
    assert_eq!(
        rig.node("bo-2").await.unwrap(),
        [json!("bo-2"), json!("bo"), json!("fan"), Value::Null, Value::Null, json!(0), json!(0)]
    );
    // Updates of one user in a row apply in order; the last one wins.
    for i in 0..20 {
        rig.send(&update(json!({"_id": "cy", "username": format!("cy{i}")}))).await;
    }
    rig.settled(26.0).await;
    assert_eq!(rig.node("cy").await.unwrap()[1], json!("cy19"));
    assert_eq!(rig.count().await, 3);

    // The uniqueness constraint on user_id was made at start.
    wait_until("the constraint to be operational", WAIT, || async {
        let rows = rig.graph.rows(GRAPH, "CALL db.constraints()").await;
        rows.iter().any(|r| r.iter().any(|c| c == "UNIQUE") && r.iter().any(|c| c == "OPERATIONAL")).then_some(())
    })
    .await;
    let metrics = rig.app.metrics().await;
    let users = |op: &str, result: &str| {
        metrics.counter(&format!("herald_sync_users_total{{operation=\"{op}\",result=\"{result}\"}}"))
    };
    assert_eq!(users("createUser", "created"), 1.0, "{}", metrics.text());
    assert_eq!(users("createUser", "already_exists"), 1.0);
    assert_eq!(users("updateUser", "updated"), 3.0 + 19.0);
    assert_eq!(users("updateUser", "created_by_update"), 2.0);
    assert!(metrics.text().contains("herald_sync_duration_seconds"), "a duration histogram");
    assert_eq!(rig.app.health().await["sync"]["status"], "ok");
}

#[tokio::test]
async fn concurrent_resyncs_of_one_user_leave_one_node_and_bad_requests_change_nothing() {
    let rig = rig().await;
    let post = |id: &str, body: Value, bearer: &str| {
        let request = rig.app.request(Method::POST, &format!("/api/v1/sync/users/{id}"), Some(bearer)).json(&body);
        async move { status_and_json(request.send().await.expect("POST")).await }
    };
    let attempts: Vec<_> = (0..12)
        .map(|i| post("dee", json!({"_id": "dee", "username": format!("dee{i}"), "email": "dee@example.org"}), API_KEY))
        .collect();
    let results = futures_util::future::join_all(attempts).await;
    let created = results.iter().filter(|(_, b)| b["result"] == "created_by_update").count();
    assert!(results.iter().all(|(code, _)| *code == 200), "{results:?}");
    assert_eq!(created, 1, "one of them created the user, the rest updated it: {results:?}");
    assert_eq!(rig.count().await, 1);
    let node = rig.node("dee").await.unwrap();
    assert!(node[1].as_str().unwrap().starts_with("dee"), "{node:?}");

    let response = |id: &str, body: Value, bearer: &str| {
        let request = rig.app.request(Method::POST, &format!("/api/v1/sync/users/{id}"), Some(bearer)).json(&body);
        async move { request.send().await.expect("POST") }
    };
    assert_error_response(response("eve", json!({"_id": "mallory"}), API_KEY).await, 422, "invalid_request").await;
    assert_error_response(response("eve", json!({"username": "x"}), API_KEY).await, 422, "invalid_request").await;
    assert_error_response(response("eve", json!({"_id": "eve", "role": 3}), API_KEY).await, 422, "invalid_request")
        .await;
    let user = rig.app.token("eve");
    assert_error_response(response("eve", json!({"_id": "eve"}), &user).await, 403, "forbidden").await;
    assert_eq!(rig.count().await, 1, "nothing else was written");
}

#[tokio::test]
async fn malformed_messages_are_dead_lettered_at_once_with_the_reason() {
    let rig = rig().await;
    rig.producer.publish_raw(QUEUE, b"not json").await;
    rig.send(&create(json!({"username": "no id"}))).await;
    rig.send(&update(json!({"_id": "x", "username": 42}))).await;
    rig.send(&json!({"pattern": "delete_user_request", "data": {"_id": "x"}})).await;
    rig.send(&json!({"pattern": "create_user_request"})).await;
    wait_for_count(&rig.producer, "neo4j_sync_queue.dlq", 5, WAIT).await;
    let reasons: Vec<String> = rig
        .producer
        .peek("neo4j_sync_queue.dlq")
        .await
        .iter()
        .map(|m| m.header("x-herald-reason").unwrap_or_default())
        .collect();
    assert!(reasons[0].contains("not JSON"), "{reasons:?}");
    assert!(reasons[1].contains("no _id"), "{reasons:?}");
    assert!(reasons[2].contains("username") && reasons[2].contains("a number"), "{reasons:?}");
    assert!(reasons[3].contains("pattern"), "{reasons:?}");
    assert!(reasons[4].contains("no data"), "{reasons:?}");
    assert_eq!(rig.count().await, 0);
    assert_eq!(messages(&rig.app, QUEUE, "retried").await, 0.0, "never retried");
}

#[tokio::test]
async fn the_graph_down_is_retried_and_synced_once_it_is_back() {
    let mut rig = rig().await;
    rig.graph.stop().await;
    wait_until("health to show the graph down", WAIT, || async {
        let health = rig.app.health().await;
        (health["sync"]["status"] == "down").then_some(health)
    })
    .await;
    assert_eq!(rig.app.health().await["status"], "ok", "an auxiliary part: the node stays healthy");
    rig.send(&create(json!({"_id": "fay", "username": "fay", "email": "fay@example.org"}))).await;
    wait_until("the create to be retried", WAIT, || async {
        (messages(&rig.app, QUEUE, "retried").await >= 1.0).then_some(())
    })
    .await;
    rig.graph.restart().await;
    wait_until("fay in the graph", WAIT * 2, || async { rig.node("fay").await }).await;
    assert_eq!(rig.count().await, 1);
    let (code, entry) = rig.app.get_json("/api/v1/users/fay", Some(API_KEY)).await;
    assert_eq!((code, entry["email"].as_str()), (200, Some("fay@example.org")));
    assert_eq!(messages(&rig.app, QUEUE, "dead_lettered").await, 0.0);
    wait_until("health to show the graph back", WAIT, || async {
        (rig.app.health().await["sync"]["status"] == "ok").then_some(())
    })
    .await;
}

#[tokio::test]
async fn without_a_graph_the_resync_route_says_so() {
    let app = TestApp::spawn().await;
    let request = app.request(Method::POST, "/api/v1/sync/users/u", Some(API_KEY)).json(&json!({"_id": "u"}));
    assert_error_response(request.send().await.unwrap(), 503, "sync_disabled").await;
    assert!(app.health().await.get("sync").is_none_or(Value::is_null));
}

#[tokio::test]
async fn verify_finds_the_drift_and_fix_repairs_it() {
    let graph = FalkorDb::start().await;
    // The graph as it drifted: ana in step, bo renamed there, zed only there; cy never synced.
    graph
        .write(
            GRAPH,
            "CREATE (:User {user_id: 'ana', username: 'ana', role: 'fan', following_number: 0, followers_number: 0}), \
             (:User {user_id: 'bo', username: 'bo_old', role: 'fan', following_number: 3, followers_number: 4}), \
             (:User {user_id: 'zed', username: 'zed', following_number: 0, followers_number: 0})",
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("users.jsonl");
    std::fs::write(
        &export,
        [
            r#"{"_id": {"$oid": "ana"}, "username": "ana", "role": "fan", "email": "ana@example.org"}"#,
            r#"{"_id": "bo", "username": "bo", "role": "fan"}"#,
            r#"{"_id": "cy", "username": "cy", "display_name": "Cy"}"#,
            r#"{"username": "no id"}"#,
            "",
        ]
        .join("\n"),
    )
    .unwrap();
    let mut settings = crate::helpers::Settings::default();
    settings.env("HERALD_GRAPH_URL", graph.url());
    let from = export.to_str().unwrap();
    let run = |args: &'static [&'static str]| {
        let mut all = vec!["sync", "verify", "--from", from];
        all.extend_from_slice(args);
        let settings = &settings;
        async move { crate::helpers::run_herald(&all, settings).await }
    };
    let checked = run(&[]).await;
    let out = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert_eq!(checked.status.code(), Some(1), "drift exits 1: {out}");
    assert!(out.contains("source: 3 users (1 malformed lines); graph: 3 users"), "{out}");
    assert!(
        out.contains("missing  cy") && out.contains("extra    zed") && out.contains("differs  bo: username"),
        "{out}"
    );
    assert!(out.contains("malformed line 4"), "{out}");
    assert!(!out.contains("ana"), "ana is in step: {out}");

    let fixed = run(&["--fix"]).await;
    let out = String::from_utf8_lossy(&fixed.stdout).into_owned();
    assert_eq!(fixed.status.code(), Some(1), "zed stays without --delete-extra: {out}");
    assert!(out.contains("repaired: 2 users written, 0 removed"), "{out}");
    let bo = graph
        .rows(GRAPH, "MATCH (u:User {user_id: 'bo'}) RETURN u.username, u.following_number, u.followers_number")
        .await;
    assert_eq!(bo, [[json!("bo"), json!(3), json!(4)]], "renamed, counts kept");
    let cy = graph.rows(GRAPH, "MATCH (u:User {user_id: 'cy'}) RETURN u.display_name, u.followers_number").await;
    assert_eq!(cy, [[json!("Cy"), json!(0)]]);

    let pruned = run(&["--fix", "--delete-extra"]).await;
    assert_eq!(pruned.status.code(), Some(0), "{}", String::from_utf8_lossy(&pruned.stdout));
    let clean = run(&[]).await;
    let out = String::from_utf8_lossy(&clean.stdout).into_owned();
    assert_eq!(clean.status.code(), Some(0), "{out}");
    assert!(out.contains("missing from the graph: 0; only in the graph: 0; different: 0"), "{out}");
}

#[tokio::test]
async fn the_graph_down_for_every_attempt_dead_letters_the_event_with_the_last_error() {
    let mut graph = FalkorDb::start().await;
    graph.stop().await;
    let vhost = Vhost::create().await;
    let config = r#"
[amqp]
[[amqp.consumers]]
queue = "neo4j_sync_queue"
shape = "user_sync"
[amqp.consumers.retry]
attempts = 2
initial_delay_ms = 100
max_delay_ms = 200
"#;
    let graph_url = graph.url();
    let (app, _config) = crate::amqp::spawn_consuming(&vhost, Some(config), |s| {
        s.env("HERALD_GRAPH_URL", graph_url);
    })
    .await;
    let producer = Producer::connect(&vhost.url()).await;
    producer.publish("", QUEUE, &create(json!({"_id": "gus", "username": "gus"}))).await;
    wait_for_count(&producer, "neo4j_sync_queue.dlq", 1, WAIT).await;
    let dead = producer.peek("neo4j_sync_queue.dlq").await;
    let reason = dead[0].header("x-herald-reason").unwrap_or_default();
    assert!(reason.contains("graph database is unavailable"), "{reason}");
    assert_eq!(messages(&app, QUEUE, "retried").await, 1.0, "attempts = 2: one retry, then the DLQ");
    let metrics = app.metrics().await;
    assert!(
        metrics.counter("herald_sync_errors_total{operation=\"createUser\",reason=\"unavailable\"}") >= 2.0,
        "{}",
        metrics.text()
    );
}
