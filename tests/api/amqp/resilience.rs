//! The broker and Herald going away: nothing confirmed is lost, nothing is stored twice, and Herald keeps
//! serving HTTP and WebSockets while the broker is gone.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation};
use serde_json::json;

use super::{health, messages, spawn_consuming, wait_consuming, wait_for_count};
use crate::helpers::amqp::{Producer, Vhost};
use crate::helpers::{wait_until, TestApp, WAIT};

#[tokio::test]
async fn the_consumer_survives_its_connections_being_closed_and_resumes() {
    let vhost = Vhost::create().await;
    let (app, _config) = spawn_consuming(&vhost, None, |_| {}).await;
    let mut ws = app.connect_ws("resumer").await;

    vhost.close_all_connections().await;
    // Every consumer reports what happened, then comes back by itself.
    wait_until("the consumers to notice the closed connections", WAIT, || async {
        let (_, body) = health(&app).await;
        let consumers = body["amqp"]["consumers"].as_array()?.clone();
        consumers.iter().all(|c| c["last_error"].is_string()).then_some(())
    })
    .await;
    wait_consuming(&app).await;

    let producer = Producer::connect(&vhost.url()).await;
    producer.publish("", "herald.notifications", &json!({"user_id": "resumer", "type": "after"})).await;
    assert_eq!(ws.next_notification().await["type"], "after");
    ws.assert_alive().await;
}

#[tokio::test]
async fn with_the_broker_unreachable_herald_serves_and_says_so() {
    // A port with nothing behind it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_AMQP_URL", format!("amqp://guest:guest@127.0.0.1:{closed}/%2f"));
    })
    .await;
    let body = wait_until("the consumers to report the broker down", WAIT, || async {
        let (status, body) = health(&app).await;
        let consumers = body["amqp"]["consumers"].as_array()?.clone();
        (consumers.len() == 4 && consumers.iter().all(|c| c["last_error"].is_string())).then_some((status, body))
    })
    .await;
    assert_eq!(body.0, 200, "consumers are not required by default: {}", body.1);
    assert!(!body.1.to_string().contains("guest:guest"), "no password in /health: {}", body.1);
    // HTTP and WebSockets work as ever.
    let mut ws = app.connect_ws("unbothered").await;
    app.notify("unbothered", "t", "still here").await;
    assert_eq!(ws.next_notification().await["title"], "still here");
    assert!(!app.logs().contains("guest:guest"), "no password in the logs");

    // A consumer marked required makes the node unhealthy while it cannot consume.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "[amqp]\n[[amqp.consumers]]\nqueue = \"must-run\"\nrequired = true\n")
        .expect("write config");
    let strict = TestApp::spawn_with(|s| {
        s.env("HERALD_AMQP_URL", format!("amqp://guest:guest@127.0.0.1:{closed}/%2f"));
        s.arg("--config").arg(config.display().to_string());
    })
    .await;
    let (status, body) = wait_until("the required consumer to report the broker down", WAIT, || async {
        let (status, body) = health(&strict).await;
        body["amqp"]["consumers"][0]["last_error"].is_string().then_some((status, body))
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["amqp"]["status"], "down");
    assert_eq!(body["amqp"]["consumers"][0]["required"], true);
}

const MESSAGES: usize = 10_000;
const USERS: usize = 20;

/// Publishes numbered messages with confirms, through whatever happens to the broker: after an error it
/// reconnects and publishes again everything not yet confirmed. Records which were confirmed.
struct Numbered {
    url: String,
    run: String,
    confirmed: Arc<AtomicUsize>,
}

impl Numbered {
    fn body(&self, seq: usize) -> Vec<u8> {
        json!({"user_id": format!("{}-{}", self.run, seq % USERS), "type": "numbered", "data": {"seq": seq}})
            .to_string()
            .into_bytes()
    }

    /// Even messages carry a message_id, odd ones do not (their idempotency key is the body's hash).
    fn properties(&self, seq: usize) -> BasicProperties {
        let properties = BasicProperties::default().with_delivery_mode(2);
        if seq.is_multiple_of(2) {
            properties.with_message_id(format!("{}-{seq}", self.run).into())
        } else {
            properties
        }
    }

    async fn run(self) -> HashSet<usize> {
        let mut confirmed = HashSet::new();
        let mut next = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while next < MESSAGES {
            assert!(tokio::time::Instant::now() < deadline, "publishing did not finish in time");
            let Ok(producer) = tokio::time::timeout(Duration::from_secs(5), Producer::try_connect(&self.url)).await
            else {
                continue;
            };
            let Ok(producer) = producer else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            // Windows of 250 in flight; a window that fails is published again whole.
            while next < MESSAGES {
                let end = (next + 250).min(MESSAGES);
                match self.window(&producer, next..end).await {
                    Some(acked) => {
                        for seq in acked {
                            confirmed.insert(seq);
                        }
                        self.confirmed.store(confirmed.len(), Ordering::Relaxed);
                        next = end;
                    }
                    None => break,
                }
            }
        }
        confirmed
    }

    async fn window(&self, producer: &Producer, seqs: std::ops::Range<usize>) -> Option<Vec<usize>> {
        let mut pending = Vec::new();
        for seq in seqs {
            let options = BasicPublishOptions::default();
            let confirm = producer
                .channel
                .basic_publish("".into(), "herald.notifications".into(), options, &self.body(seq), self.properties(seq))
                .await
                .ok()?;
            pending.push((seq, confirm));
        }
        let mut acked = Vec::new();
        for (seq, confirm) in pending {
            match tokio::time::timeout(Duration::from_secs(10), confirm).await {
                Ok(Ok(Confirmation::Ack(_))) => acked.push(seq),
                _ => return None,
            }
        }
        Some(acked)
    }
}

/// Waits until the inboxes hold every confirmed message, then checks each is there exactly once.
async fn assert_exactly_once(app: &TestApp, run: &str, confirmed: &HashSet<usize>) {
    assert_eq!(confirmed.len(), MESSAGES, "every message was confirmed in the end");
    wait_until("every confirmed message to be stored", Duration::from_secs(120), || async {
        let mut total = 0;
        for user in 0..USERS {
            total += app.whole_inbox(&format!("{run}-{user}")).await.len();
        }
        (total >= MESSAGES).then_some(())
    })
    .await;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for user in 0..USERS {
        for n in app.whole_inbox(&format!("{run}-{user}")).await {
            let seq = n["data"]["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {n}"));
            assert_eq!(seq as usize % USERS, user, "stored for the wrong user: {n}");
            *seen.entry(seq).or_default() += 1;
        }
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).map(|(s, _)| *s).collect();
    let lost: Vec<_> = confirmed.iter().filter(|s| !seen.contains_key(&(**s as u64))).collect();
    assert!(
        duplicated.is_empty(),
        "{} duplicated, e.g. {:?}",
        duplicated.len(),
        &duplicated[..duplicated.len().min(5)]
    );
    assert!(lost.is_empty(), "{} confirmed but lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
    assert_eq!(seen.len(), MESSAGES);
}

/// Midway: the broker has confirmed a good part of the stream and Herald has stored some of it.
async fn wait_midway(app: &TestApp, confirmed: &AtomicUsize) {
    wait_until("Herald to be consuming the stream", Duration::from_secs(60), || async {
        (confirmed.load(Ordering::Relaxed) >= MESSAGES / 3
            && messages(app, "herald.notifications", "acked").await >= 500.0)
            .then_some(())
    })
    .await;
}

/// Nothing is left in the queue, and nothing was dead-lettered.
async fn assert_drained(vhost: &Vhost) {
    let producer = Producer::connect(&vhost.url()).await;
    wait_for_count(&producer, "herald.notifications", 0, WAIT).await;
    assert_eq!(producer.count("herald.notifications.dlq").await, 0);
}

#[tokio::test]
async fn ten_thousand_confirmed_messages_survive_a_kill_9_of_herald_midway() {
    let vhost = Vhost::create().await;
    let (mut app, _config) = spawn_consuming(&vhost, None, |_| {}).await;
    let confirmed = Arc::new(AtomicUsize::new(0));
    let publisher = Numbered { url: vhost.url(), run: "k9".into(), confirmed: confirmed.clone() };
    let publishing = tokio::spawn(publisher.run());

    wait_midway(&app, &confirmed).await;
    app.kill9().await;
    app.restart().await;
    wait_consuming(&app).await;

    let confirmed = publishing.await.expect("the publisher");
    assert_exactly_once(&app, "k9", &confirmed).await;
    assert_drained(&vhost).await;
}

#[tokio::test]
async fn ten_thousand_confirmed_messages_survive_a_broker_restart_midway() {
    let vhost = Vhost::create_exclusive().await;
    let (app, _config) = spawn_consuming(&vhost, None, |_| {}).await;
    let confirmed = Arc::new(AtomicUsize::new(0));
    let publisher = Numbered { url: vhost.url(), run: "rr".into(), confirmed: confirmed.clone() };
    let publishing = tokio::spawn(publisher.run());

    wait_midway(&app, &confirmed).await;
    vhost.restart_broker().await;
    // Herald reconnects by itself; the publisher too, publishing again whatever was not confirmed.
    let confirmed = publishing.await.expect("the publisher");
    wait_consuming(&app).await;
    assert_exactly_once(&app, "rr", &confirmed).await;
    assert_drained(&vhost).await;
}
