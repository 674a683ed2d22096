//! What an operator sees and does: `herald dlq`, the metrics, DogStatsD.

use std::time::Duration;

use serde_json::{json, Value};

use super::{messages, spawn_consuming, wait_for_count};
use crate::helpers::amqp::{Producer, Vhost};
use crate::helpers::{run_herald, wait_until, WAIT};

#[tokio::test]
async fn dlq_list_shows_reasons_and_purge_asks_first() {
    let vhost = Vhost::create().await;
    let (_app, _config) = spawn_consuming(&vhost, None, |_| {}).await;
    let producer = Producer::connect(&vhost.url()).await;
    for i in 0..3 {
        producer.publish_raw("notification_queue", format!("broken {i}").as_bytes()).await;
    }
    wait_for_count(&producer, "notification_queue.dlq", 3, WAIT).await;
    let settings = vhost.settings();

    let listed = run_herald(&["dlq", "list", "--queue", "notification_queue", "--json"], &settings).await;
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let listing: Value = serde_json::from_slice(&listed.stdout).expect("one JSON line");
    assert_eq!(listing["queue"], "notification_queue.dlq");
    assert_eq!(listing["count"], 3);
    let entries = listing["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["body"], "broken 0");
    assert!(entries[0]["reason"].as_str().unwrap_or_default().contains("not a NestJS message"), "{listing}");
    assert_eq!(entries[0]["attempts"], 1);
    // Listing leaves every message in place.
    assert_eq!(producer.count("notification_queue.dlq").await, 3);

    // The human form of the same, over every configured queue.
    let table = run_herald(&["dlq", "list"], &settings).await;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("notification_queue.dlq: 3 message(s)") && text.contains("herald.notifications.dlq: 0"),
        "{text}"
    );

    // Replaying one by id leaves the others.
    let id = entries[1]["id"].as_str().expect("an id");
    let replayed = run_herald(&["dlq", "replay", "--queue", "notification_queue", "--id", id], &settings).await;
    assert!(replayed.status.success(), "{}", String::from_utf8_lossy(&replayed.stderr));
    // It is still poison, so it comes back to the dead-letter queue, with one replay counted.
    wait_until("the replayed message to be dead-lettered again", WAIT, || async {
        let dead = producer.peek("notification_queue.dlq").await;
        dead.iter().any(|m| m.header("x-herald-replays").as_deref() == Some("1")).then_some(())
    })
    .await;
    // Replaying all of them while the consumer runs replays each once, though each is dead-lettered again
    // (behind the others) while the replay is still going.
    let all = run_herald(&["dlq", "replay", "--queue", "notification_queue", "--all"], &settings).await;
    assert!(all.status.success(), "{}", String::from_utf8_lossy(&all.stderr));
    let text = String::from_utf8_lossy(&all.stdout);
    assert!(text.contains("replayed 3, kept 0"), "{text}");
    let replays = wait_until("all three back in the dead-letter queue", WAIT, || async {
        let dead = producer.peek("notification_queue.dlq").await;
        let mut replays: Vec<String> = dead.iter().map(|m| m.header("x-herald-replays").unwrap_or_default()).collect();
        replays.sort();
        (replays.len() == 3 && !replays.contains(&String::new())).then_some(replays)
    })
    .await;
    assert_eq!(replays, ["1", "1", "2"]);

    let unknown = run_herald(&["dlq", "replay", "--queue", "notification_queue", "--id", "nope"], &settings).await;
    assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("nope"));

    // Purge without --yes asks; with no "y" on stdin it purges nothing.
    let refused = run_herald(&["dlq", "purge", "--queue", "notification_queue"], &settings).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("[y/N]"));
    assert_eq!(producer.count("notification_queue.dlq").await, 3);
    let purged = run_herald(&["dlq", "purge", "--queue", "notification_queue.dlq", "--yes"], &settings).await;
    assert!(purged.status.success(), "{}", String::from_utf8_lossy(&purged.stderr));
    assert!(String::from_utf8_lossy(&purged.stdout).contains("purged 3"));
    assert_eq!(producer.count("notification_queue.dlq").await, 0);
}

#[tokio::test]
async fn consumer_metrics_reach_prometheus_and_dogstatsd() {
    let statsd = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind a UDP socket");
    let statsd_addr = statsd.local_addr().expect("its address").to_string();
    let vhost = Vhost::create().await;
    let (app, _config) = spawn_consuming(&vhost, None, |s| {
        s.env("HERALD_STATSD_ADDR", statsd_addr);
    })
    .await;
    let producer = Producer::connect(&vhost.url()).await;
    producer.publish("", "herald.notifications", &json!({"user_id": "m", "type": "t"})).await;
    wait_until("the message to be acked", WAIT, || async {
        (messages(&app, "herald.notifications", "acked").await == 1.0).then_some(())
    })
    .await;
    let metrics = app.metrics().await;
    assert_eq!(metrics.counter("herald_amqp_messages_total{queue=\"herald.notifications\",outcome=\"consumed\"}"), 1.0);
    assert_eq!(
        metrics.value("herald_amqp_consumer_state{queue=\"herald.notifications\",state=\"consuming\"}"),
        Some(1.0)
    );
    assert_eq!(metrics.value("herald_amqp_consumer_state{queue=\"herald.notifications\",state=\"down\"}"), Some(0.0));
    assert_eq!(metrics.kind("herald_amqp_processing_seconds"), Some("histogram"));
    assert!(metrics.counter("herald_amqp_processing_seconds_count{queue=\"herald.notifications\"}") >= 1.0);

    // The same counter arrives as DogStatsD, with its tags.
    let wanted = |l: &&str| {
        l.starts_with("herald_amqp_messages_total:")
            && l.contains("outcome:acked")
            && l.contains("queue:herald.notifications")
            && !l.starts_with("herald_amqp_messages_total:0|")
    };
    // And the metrics the NestJS services reported, under their names and tags (durations in ms).
    let nest_consumed =
        |l: &&str| l.starts_with("queue.message.consumed:1|c|") && l.contains("queue_name:herald.notifications");
    let nest_duration = |l: &&str| {
        l.starts_with("queue.message.processing.duration:") && l.contains("|d|") && l.contains("queue_name:")
    };
    let nest_created = |l: &&str| l.starts_with("notification.created:1|c|") && l.contains("status:success");
    let mut seen = String::new();
    let mut buf = vec![0u8; 65_536];
    let deadline = tokio::time::Instant::now() + WAIT;
    let all = |seen: &str| {
        [&wanted as &dyn Fn(&&str) -> bool, &nest_consumed, &nest_duration, &nest_created]
            .iter()
            .all(|want| seen.lines().any(|l| want(&l)))
    };
    while !all(&seen) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Ok(n)) = tokio::time::timeout(left.max(Duration::from_millis(1)), statsd.recv(&mut buf)).await else {
            panic!("not every DogStatsD line wanted arrived within {WAIT:?}; got:\n{seen}");
        };
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        seen.push('\n');
    }
    let line = seen.lines().find(wanted).unwrap_or_default();
    assert!(line.starts_with("herald_amqp_messages_total:1|c|"), "{line}");
    assert!(
        !seen.lines().any(|l| l.starts_with("herald_amqp_messages_total:") && l.contains("outcome:consumed")),
        "consumed goes by its NestJS name alone: {seen}"
    );
}
