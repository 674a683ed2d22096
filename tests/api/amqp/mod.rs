//! RabbitMQ ingestion, end to end: a real broker (a vhost per test), a real AMQP producer, the real server,
//! and WebSocket and REST clients reading what arrived.

mod failures;
mod operator;
mod resilience;
mod shapes;

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::amqp::Vhost;
use crate::helpers::{status_and_json, wait_until, Settings, TestApp, WAIT};

/// A server consuming from `vhost`, with `toml` (if any) as its config file, and `configure` on top.
pub async fn spawn_consuming(
    vhost: &Vhost,
    toml: Option<&str>,
    configure: impl FnOnce(&mut Settings),
) -> (TestApp, Option<TempDir>) {
    let config = toml.map(|text| {
        let dir = tempfile::tempdir().expect("a temp dir for the config file");
        std::fs::write(dir.path().join("herald.toml"), text).expect("write the config file");
        dir
    });
    let url = vhost.url();
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_AMQP_URL", url);
        if let Some(dir) = &config {
            s.arg("--config").arg(dir.path().join("herald.toml").display().to_string());
        }
        configure(s);
    })
    .await;
    wait_consuming(&app).await;
    (app, config)
}

/// `GET /health` as it is, whatever its status.
pub async fn health(app: &TestApp) -> (u16, Value) {
    status_and_json(app.request(Method::GET, "/health", None).send().await.expect("GET /health")).await
}

/// Waits until every consumer in `/health` is consuming (so its queues, exchanges and bindings exist).
pub async fn wait_consuming(app: &TestApp) -> Value {
    wait_until("every AMQP consumer to be consuming", WAIT * 2, || async {
        let (_, body) = health(app).await;
        let consumers = body["amqp"]["consumers"].as_array()?.clone();
        (!consumers.is_empty() && consumers.iter().all(|c| c["state"] == "consuming")).then_some(body)
    })
    .await
}

/// A counter from `/metrics` for one queue and outcome.
pub async fn messages(app: &TestApp, queue: &str, outcome: &str) -> f64 {
    app.metrics().await.counter(&format!("herald_amqp_messages_total{{queue=\"{queue}\",outcome=\"{outcome}\"}}"))
}

/// Waits until a queue holds exactly `count` messages.
pub async fn wait_for_count(producer: &crate::helpers::amqp::Producer, queue: &str, count: u32, timeout: Duration) {
    wait_until(&format!("{queue} to hold {count} message(s)"), timeout, || async {
        (producer.count(queue).await == count).then_some(())
    })
    .await
}
