//! RabbitMQ for tests: a fresh vhost per test on the machine's broker (so tests run in parallel and see the
//! defaults exactly as a user would), a producer that publishes with confirms, and a look into queues.
//!
//! A broker that cannot be reached fails the test, never skips it; `scripts/ensure-services` (run by
//! `scripts/test`) starts it beforehand.

use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::Value;
use tokio::process::Command;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub const BROKER: &str = "127.0.0.1:5672";

/// Runs `rabbitmqctl` with `args`; panics with its output when it fails.
pub async fn rabbitmqctl(args: &[&str]) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("rabbitmqctl").args(args).stdin(Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("rabbitmqctl {args:?} took over a minute"))
    .unwrap_or_else(|e| panic!("cannot run rabbitmqctl (is RabbitMQ installed?): {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "rabbitmqctl {args:?} failed: {text}");
    text
}

/// Tests that use the broker share it; the one test that restarts it takes it for itself, so that no
/// other test sees its connections drop (all of them run in this one process).
static BROKER_USE: RwLock<()> = RwLock::const_new(());

enum Use {
    // Held only for their effect on the lock.
    #[allow(dead_code)]
    Shared(RwLockReadGuard<'static, ()>),
    #[allow(dead_code)]
    Exclusive(RwLockWriteGuard<'static, ()>),
}

/// A vhost of its own for one test, deleted when dropped.
pub struct Vhost {
    pub name: String,
    broker: Use,
}

impl Vhost {
    /// A vhost on the shared broker.
    pub async fn create() -> Vhost {
        Vhost::with_use(Use::Shared(BROKER_USE.read().await)).await
    }

    /// A vhost for a test that restarts the broker: it waits until no other test uses the broker.
    pub async fn create_exclusive() -> Vhost {
        Vhost::with_use(Use::Exclusive(BROKER_USE.write().await)).await
    }

    /// Restarts the broker application (connections drop; durable queues and persistent messages stay).
    pub async fn restart_broker(&self) {
        assert!(matches!(self.broker, Use::Exclusive(_)), "only an exclusive test may restart the broker");
        rabbitmqctl(&["stop_app"]).await;
        rabbitmqctl(&["start_app"]).await;
        rabbitmqctl(&["await_startup"]).await;
    }

    async fn with_use(broker: Use) -> Vhost {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if tokio::net::TcpStream::connect(BROKER).await.is_err() {
            panic!("RabbitMQ is not reachable at {BROKER}: start it with `rabbitmq-server -detached`");
        }
        let name = format!("herald-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        rabbitmqctl(&["add_vhost", &name]).await;
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]).await;
        Vhost { name, broker }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{BROKER}/{}", self.name)
    }

    /// Settings for running `herald dlq …` (or a server) against this vhost.
    pub fn settings(&self) -> crate::helpers::Settings {
        let mut settings = crate::helpers::Settings::default();
        settings.env("HERALD_AMQP_URL", self.url());
        settings
    }

    /// Closes every client connection to this vhost (Herald's included), as an operator or a failover would.
    pub async fn close_all_connections(&self) {
        rabbitmqctl(&["close_all_connections", "--vhost", &self.name, "test: closing every connection"]).await;
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A producer: one connection, one channel with publisher confirms.
pub struct Producer {
    pub connection: Connection,
    pub channel: Channel,
}

/// What the tests read of a message in a queue.
#[derive(Debug)]
pub struct Got {
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<String> {
        match self.properties.headers().as_ref()?.inner().get(name)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::LongLongInt(n) => Some(n.to_string()),
            AMQPValue::LongInt(n) => Some(n.to_string()),
            other => Some(format!("{other:?}")),
        }
    }
}

impl Producer {
    pub async fn connect(url: &str) -> Producer {
        Producer::try_connect(url).await.unwrap_or_else(|e| panic!("connect to RabbitMQ: {e}"))
    }

    /// Connects, or says why not (for tests in which the broker is meant to be away for a while).
    pub async fn try_connect(url: &str) -> Result<Producer, lapin::Error> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Producer { connection, channel })
    }

    /// Publishes and waits for the broker's confirm; true when it acked.
    pub async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> bool {
        let confirm = self
            .channel
            .basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions::default(), body, properties)
            .await
            .expect("publish");
        matches!(confirm.await.expect("publisher confirm"), Confirmation::Ack(_))
    }

    /// Publishes persistent JSON and asserts the broker confirmed it.
    pub async fn publish(&self, exchange: &str, routing_key: &str, body: &Value) {
        let properties = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
        let confirmed = self.publish_with(exchange, routing_key, body.to_string().as_bytes(), properties).await;
        assert!(confirmed, "the broker did not confirm {body}");
    }

    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        assert!(self.publish_with("", routing_key, body, BasicProperties::default().with_delivery_mode(2)).await);
    }

    /// Messages waiting in a queue.
    pub async fn count(&self, queue: &str) -> u32 {
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let channel = self.connection.create_channel().await.expect("open a channel");
        let declared = channel.queue_declare(queue.into(), options, FieldTable::default()).await;
        let count = declared.unwrap_or_else(|e| panic!("queue {queue} should exist: {e}")).message_count();
        let _ = channel.close(200, "counted".into()).await;
        count
    }

    /// Every message in a queue, left in place (read unacked on a channel that is then closed).
    pub async fn peek(&self, queue: &str) -> Vec<Got> {
        let channel = self.connection.create_channel().await.expect("open a channel");
        let mut all = Vec::new();
        while let Some(got) = channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await.expect("get") {
            all.push(Got { body: got.delivery.data, properties: got.delivery.properties });
        }
        let _ = channel.close(200, "peeked".into()).await;
        all
    }
}
