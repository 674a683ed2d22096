//! Poison, transient failures and broken topology: each dealt with, and never in the way of the next
//! good message.

use std::time::Duration;

use serde_json::json;

use super::{health, messages, spawn_consuming, wait_for_count};
use crate::helpers::amqp::{Producer, Vhost};
use crate::helpers::{wait_until, TestApp, WAIT};

#[tokio::test]
async fn poison_is_dead_lettered_with_its_reason_while_the_next_message_flows() {
    let vhost = Vhost::create().await;
    let (app, _config) = spawn_consuming(&vhost, None, |_| {}).await;
    let mut ws = app.connect_ws("victim").await;
    let mut numbered = app.connect_ws("17").await;
    let producer = Producer::connect(&vhost.url()).await;

    producer.publish_raw("herald.notifications", b"this is not JSON").await;
    producer.publish_raw("herald.notifications", &[0xff, 0xfe, 0x00]).await;
    producer
        .publish("", "herald.notifications", &json!({"user_id": "victim", "type": "t", "data": "not an object"}))
        .await;
    // A typed message whose type has no rule, through the refund exchange.
    producer.publish("herald.events", "ws.broadcast", &json!({"type": "RefundDeleted", "user_id": "victim"})).await;
    producer.publish("herald.events", "ws.broadcast", &json!({"type": "RefundStatusChanged", "user_id": 17})).await;
    producer.publish("", "herald.notifications", &json!({"user_id": "victim", "type": "good"})).await;

    let good = ws.next_notification().await;
    assert_eq!(good["type"], "good");
    // A numeric user id names the user by its decimal text.
    let refund = numbered.next_notification().await;
    assert_eq!((refund["type"].as_str(), refund["data"]["user_id"].as_i64()), (Some("RefundStatusChanged"), Some(17)));
    // Nothing else was stored: the poison made no half notification.
    assert_eq!(app.whole_inbox("victim").await.len(), 1);

    wait_for_count(&producer, "herald.notifications.dlq", 3, WAIT).await;
    let dead = producer.peek("herald.notifications.dlq").await;
    let reasons: Vec<String> = dead.iter().map(|m| m.header("x-herald-reason").unwrap_or_default()).collect();
    assert!(reasons[0].contains("not a notification"), "{reasons:?}");
    assert!(reasons[1].contains("UTF-8"), "{reasons:?}");
    assert!(reasons[2].contains("data"), "{reasons:?}");
    assert_eq!(dead[0].body, b"this is not JSON", "the body is kept as it was");
    assert_eq!(dead[1].body, [0xff, 0xfe, 0x00]);
    for m in &dead {
        assert_eq!(m.header("x-herald-attempt").as_deref(), Some("1"), "poison is not retried");
        assert_eq!(m.header("x-herald-original-routing-key").as_deref(), Some("herald.notifications"));
        assert!(m.header("x-herald-dlq-id").is_some());
    }
    wait_for_count(&producer, "ws.broadcast.queue.dlq", 1, WAIT).await;
    let typed = producer.peek("ws.broadcast.queue.dlq").await;
    assert!(typed[0].header("x-herald-reason").unwrap_or_default().contains("no rule"), "{typed:?}");
    assert_eq!(typed[0].header("x-herald-original-exchange").as_deref(), Some("herald.events"));
    assert_eq!(typed[0].header("x-herald-original-routing-key").as_deref(), Some("ws.broadcast"));

    assert_eq!(messages(&app, "herald.notifications", "dead_lettered").await, 3.0);
    assert_eq!(messages(&app, "herald.notifications", "retried").await, 0.0);
    wait_until("every message acked", WAIT, || async {
        (messages(&app, "herald.notifications", "acked").await == 4.0).then_some(())
    })
    .await;
    assert_eq!(producer.count("herald.notifications").await, 0);
}

/// Holds SQLite's write lock from outside, as another process (a backup, a migration) could: Herald's
/// writer cannot commit until it is released.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(app: &TestApp) -> WriteLock {
        let conn = rusqlite::Connection::open(app.data_dir.path().join("herald.db")).expect("open the database");
        conn.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
        conn.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
        WriteLock(conn)
    }

    fn release(self) {
        self.0.execute_batch("ROLLBACK").expect("release the write lock");
    }
}

const FAST_RETRIES: &str = r#"
[amqp]
[[amqp.consumers]]
queue = "retrying"
prefetch = 10
[amqp.consumers.retry]
attempts = 3
initial_delay_ms = 100
max_delay_ms = 400
"#;

/// Attempts enough that the lock is surely released before they run out, however slow the machine.
const MANY_RETRIES: &str = r#"
[amqp]
[[amqp.consumers]]
queue = "retrying"
prefetch = 10
[amqp.consumers.retry]
attempts = 20
initial_delay_ms = 100
max_delay_ms = 1000
"#;

#[tokio::test]
async fn a_transient_storage_failure_is_retried_and_then_stored_once() {
    let vhost = Vhost::create().await;
    let (app, _config) = spawn_consuming(&vhost, Some(MANY_RETRIES), |s| {
        // The failure is SQLite's lock, held from outside.
        s.sqlite_only().env("HERALD_SQLITE_BUSY_TIMEOUT_MS", "100");
    })
    .await;
    let producer = Producer::connect(&vhost.url()).await;
    let lock = WriteLock::take(&app);

    producer.publish("", "retrying", &json!({"user_id": "patient", "type": "t", "title": "once"})).await;
    wait_until("a retry", WAIT, || async { (messages(&app, "retrying", "retried").await >= 1.0).then_some(()) }).await;
    lock.release();

    let stored = wait_until("the notification to be stored", WAIT, || async {
        let inbox = app.whole_inbox("patient").await;
        (!inbox.is_empty()).then_some(inbox)
    })
    .await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["title"], "once");
    // Every delivery was acked: each retried one (moved to a delay queue), then the one that was stored.
    wait_until("the stored delivery to be acked", WAIT, || async {
        let retried = messages(&app, "retrying", "retried").await;
        (messages(&app, "retrying", "acked").await == retried + 1.0).then_some(())
    })
    .await;
    assert_eq!(producer.count("retrying.dlq").await, 0, "it was never dead-lettered");
    assert_eq!(producer.count("retrying").await, 0);
    assert_eq!(app.whole_inbox("patient").await.len(), 1, "stored exactly once");
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_dead_lettered_after_its_attempts_and_replayed_once_fixed() {
    let vhost = Vhost::create().await;
    let (app, config) = spawn_consuming(&vhost, Some(FAST_RETRIES), |s| {
        // The failure is SQLite's lock, held from outside.
        s.sqlite_only().env("HERALD_SQLITE_BUSY_TIMEOUT_MS", "100");
    })
    .await;
    let producer = Producer::connect(&vhost.url()).await;
    let lock = WriteLock::take(&app);
    producer.publish("", "retrying", &json!({"user_id": "unlucky", "type": "t", "title": "late"})).await;

    wait_for_count(&producer, "retrying.dlq", 1, WAIT * 2).await;
    let dead = producer.peek("retrying.dlq").await;
    assert_eq!(dead[0].header("x-herald-attempt").as_deref(), Some("3"));
    let reason = dead[0].header("x-herald-reason").unwrap_or_default();
    assert!(reason.starts_with("gave up after 3 attempts: ") && reason.contains("unavailable"), "{reason}");
    assert_eq!(messages(&app, "retrying", "retried").await, 2.0, "attempts 1 and 2 were retried");
    lock.release();
    assert!(app.whole_inbox("unlucky").await.is_empty());

    // The storage is fixed: the operator replays the dead-lettered message through the consumer.
    let config_path = config.as_ref().expect("a config file").path().join("herald.toml");
    let replay = crate::helpers::run_herald(
        &["dlq", "replay", "--queue", "retrying", "--all", "--config", &config_path.display().to_string()],
        &vhost.settings(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert!(replay.status.success(), "replay failed: {stdout} {}", String::from_utf8_lossy(&replay.stderr));
    assert!(stdout.contains("replayed 1"), "{stdout}");
    let stored = wait_until("the replayed notification", WAIT, || async {
        let inbox = app.whole_inbox("unlucky").await;
        (!inbox.is_empty()).then_some(inbox)
    })
    .await;
    assert_eq!(stored.len(), 1);
    assert_eq!(producer.count("retrying.dlq").await, 0);
}

#[tokio::test]
async fn a_queue_declared_with_other_arguments_is_reported_by_name_and_the_rest_run() {
    let vhost = Vhost::create().await;
    // Someone declared notification_queue with a length limit; Herald declares it without.
    let producer = Producer::connect(&vhost.url()).await;
    let mut arguments = lapin::types::FieldTable::default();
    arguments.insert("x-max-length".into(), lapin::types::AMQPValue::LongLongInt(10));
    producer
        .channel
        .queue_declare(
            "notification_queue".into(),
            lapin::options::QueueDeclareOptions { durable: true, ..Default::default() },
            arguments,
        )
        .await
        .expect("declare the clashing queue");

    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_AMQP_URL", vhost.url());
    })
    .await;
    let body = wait_until("notification_queue to be reported down", WAIT * 2, || async {
        let (status, body) = health(&app).await;
        let consumers = body["amqp"]["consumers"].as_array()?.clone();
        let clash = consumers.iter().find(|c| c["queue"] == "notification_queue")?.clone();
        let others = consumers.iter().filter(|c| c["queue"] != "notification_queue").all(|c| c["state"] == "consuming");
        (clash["state"] == "down" && others).then_some((status, body, clash))
    })
    .await;
    let (status, whole, clash) = body;
    assert_eq!(status, 200, "a consumer that is not required does not make the node unhealthy: {whole}");
    assert_eq!(whole["amqp"]["status"], "degraded");
    let error = clash["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("notification_queue") && error.contains("other arguments"), "{error}");

    // The other consumers work.
    let mut ws = app.connect_ws("still-served").await;
    let fresh = Producer::connect(&vhost.url()).await;
    fresh.publish("", "herald.notifications", &json!({"user_id": "still-served", "type": "t"})).await;
    assert_eq!(ws.next_notification().await["type"], "t");
}

const SLOW_RETRY: &str = r#"
[amqp]
[[amqp.consumers]]
queue = "slow"
[amqp.consumers.retry]
attempts = 3
initial_delay_ms = 60000
jitter = 0.0
"#;

#[tokio::test]
async fn a_message_waiting_for_its_retry_does_not_hold_up_the_ones_behind_it() {
    let vhost = Vhost::create().await;
    let (app, _config) = spawn_consuming(&vhost, Some(SLOW_RETRY), |s| {
        // The failure is SQLite's lock, held from outside.
        s.sqlite_only().env("HERALD_SQLITE_BUSY_TIMEOUT_MS", "100");
    })
    .await;
    let mut ws = app.connect_ws("queued").await;
    let producer = Producer::connect(&vhost.url()).await;
    let lock = WriteLock::take(&app);
    producer.publish("", "slow", &json!({"user_id": "queued", "type": "first"})).await;
    wait_until("the first message to be retried", WAIT, || async {
        (messages(&app, "slow", "retried").await == 1.0).then_some(())
    })
    .await;
    lock.release();

    // The first waits a minute in its delay queue; the one behind it is stored and pushed meanwhile.
    producer.publish("", "slow", &json!({"user_id": "queued", "type": "second"})).await;
    assert_eq!(ws.next_notification().await["type"], "second");
    assert_eq!(producer.count("slow.delay.60000").await, 1, "the first is still waiting for its retry");
    let inbox = app.whole_inbox("queued").await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let retried = producer.peek("slow.delay.60000").await;
    assert_eq!(retried[0].header("x-herald-attempt").as_deref(), Some("1"));
    assert!(retried[0].header("x-herald-reason").unwrap_or_default().contains("unavailable"));
}
