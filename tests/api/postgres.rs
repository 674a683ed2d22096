//! The inbox in PostgreSQL (`HERALD_DATABASE_URL=postgres://…`), whichever backend the rest of the suite runs
//! against: where the data goes, `herald migrate`, health, an unreachable database, and two nodes on one
//! schema keeping each user's order for `since`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::postgres::StoreSchema;
use crate::helpers::{id, ids, run_herald, status_and_json, Settings, TestApp};

async fn spawn_on(schema: &StoreSchema) -> TestApp {
    let url = schema.url();
    TestApp::spawn_with(|s| {
        s.env("HERALD_DATABASE_URL", url);
    })
    .await
}

#[tokio::test]
async fn the_inbox_lives_in_postgres_and_survives_a_restart() {
    let schema = StoreSchema::create();
    let mut app = spawn_on(&schema).await;
    let published = app.notify_many("alice", "n", 3).await;
    assert_eq!(app.mark_read("alice", id(&published[0])).await.status(), 200);

    // Only the topics' file is in the data dir: the inbox is elsewhere.
    assert!(!app.data_dir.path().join("herald.db").exists(), "an inbox file was made in the data dir");
    let (status, health) =
        status_and_json(app.request(reqwest::Method::GET, "/health", None).send().await.unwrap()).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(
        (&health["store"]["backend"], &health["store"]["status"]),
        (&json!("postgres"), &json!("ok")),
        "{health}"
    );

    app.kill9().await;
    app.restart().await;
    let stored = app.whole_inbox("alice").await;
    assert_eq!(ids(&stored), ids(&published).into_iter().rev().collect::<Vec<_>>());
    assert_eq!(app.unread_count("alice").await, 2);
}

#[tokio::test]
async fn herald_migrate_brings_the_schema_up_and_a_newer_one_is_refused() {
    let schema = StoreSchema::create();
    let mut settings = Settings::default();
    settings.env("HERALD_DATABASE_URL", schema.url());
    for _ in 0..2 {
        let out = run_herald(&["migrate"], &settings).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "herald migrate: {}", String::from_utf8_lossy(&out.stderr));
        let latest = herald::store::postgres::latest_version();
        assert!(stdout.contains(&format!("at version {latest}")), "{stdout}");
    }
    crate::helpers::postgres::psql_in(
        &schema,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', true, '\\x00', 0)",
    );
    let out = run_herald(&["migrate"], &settings).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("migration 999") && stderr.contains("newer Herald"), "{stderr}");
    // And serve refuses to start on it.
    let refused = TestApp::try_spawn(settings).await.err().expect("serve started on a newer schema");
    assert!(refused.contains("newer Herald"), "{refused}");
}

#[tokio::test]
async fn an_unreachable_database_fails_the_start_clearly_without_the_password() {
    let mut settings = Settings::default();
    settings.env("HERALD_DATABASE_URL", "postgres://herald:hunter2@127.0.0.1:9/herald?connect_timeout=2");
    let logs = TestApp::try_spawn(settings).await.err().expect("serve started without its database");
    assert!(logs.contains("could not connect to PostgreSQL") && logs.contains("127.0.0.1:9/herald"), "{logs}");
    assert!(!logs.contains("hunter2"), "the password reached the logs: {logs}");
}

/// Two nodes on one schema, publishing to one user as fast as they can, while a client reconnects to the
/// first with `since` in a loop: it ends with every notification, once each and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_publishing_to_one_user_lose_nothing_for_a_client_resuming_with_since() {
    const PER_NODE: usize = 150;
    let schema = StoreSchema::create();
    let node1 = spawn_on(&schema).await;
    let node2 = spawn_on(&schema).await;
    let mut publishers = Vec::new();
    for (n, node) in [&node1, &node2].into_iter().enumerate() {
        let (url, key) = (node.url("/api/v1/notifications"), node.api_key.clone());
        let http = node.http.clone();
        for lane in 0..3 {
            let (url, key, http) = (url.clone(), key.clone(), http.clone());
            publishers.push(tokio::spawn(async move {
                let mut created = Vec::new();
                for i in (lane..PER_NODE).step_by(3) {
                    let body = json!({"user_id": "alice", "type": "race", "title": format!("node{n} {i}")});
                    let response = http.post(&url).bearer_auth(&key).json(&body).send().await.unwrap();
                    let (status, created_one) = status_and_json(response).await;
                    assert_eq!(status, 201, "{created_one}");
                    created.push(id(&created_one).to_owned());
                }
                created
            }));
        }
    }
    // `since` the nil id: everything.
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "only {} seen", seen.len());
        let finished = publishers.iter().all(|p| p.is_finished());
        let since = seen.last().cloned().unwrap_or_else(|| "00000000000000000000000000".to_owned());
        let tab = node1.connect_ws_since("alice", &since).await;
        let backlog = tab.backlog_ids();
        tab.close().await;
        for got in &backlog {
            assert!(seen.last().is_none_or(|last| got > last), "{got} came after {:?}", seen.last());
        }
        let empty = backlog.is_empty();
        seen.extend(backlog);
        if empty && finished {
            break;
        }
    }
    let mut published = Vec::new();
    for p in publishers {
        published.extend(p.await.unwrap());
    }
    let seen_set: HashSet<&String> = seen.iter().collect();
    let missed: Vec<_> = published.iter().filter(|id| !seen_set.contains(id)).collect();
    assert!(missed.is_empty(), "{} of {} missed: {missed:?}", missed.len(), published.len());
    assert_eq!(seen.len(), 2 * PER_NODE, "nothing repeated");
    // Both nodes read the same inbox.
    assert_eq!(node2.unread_count("alice").await, 2 * PER_NODE as u64);
}
