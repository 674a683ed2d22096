//! The Redis status mirror: `SET <key> <status> EX <ttl>` on each status change, per the namespace's key
//! template and TTL; with Redis down the stream goes on and the mirror catches up when it is back.
//!
//! The tests use the machine's Redis at 127.0.0.1:6379, each under a key prefix of its own (so they run in
//! parallel), and one starts a private `redis-server` to take it away and bring it back. In CI a Redis that
//! cannot be reached fails the test; elsewhere the test says it skips.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use super::spawn_with_config;
use crate::helpers::{wait_until, TestApp, WsClient, WAIT};

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";
/// Redis comes back within the mirror's backoff (at most 10 s) plus a reconnect.
const CATCH_UP: Duration = Duration::from_secs(30);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Fails the test in CI, where every service must be there; elsewhere says why it skips.
fn unavailable(why: String) {
    assert!(!in_ci(), "{why}");
    eprintln!("skipping: {why}");
}

async fn connect(url: &str) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(2), client.get_multiplexed_async_connection()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2 s".into()),
    }
}

/// The machine's Redis, or `None` (outside CI) when it cannot be reached.
async fn shared_redis() -> Option<MultiplexedConnection> {
    match connect(SHARED_REDIS).await {
        Ok(conn) => Some(conn),
        Err(e) => {
            unavailable(format!("Redis at {SHARED_REDIS} cannot be reached ({e}); scripts/ensure-services starts it"));
            None
        }
    }
}

/// A key prefix no other test (or run) uses.
fn prefix() -> String {
    format!("t-{}", ulid::Ulid::new().to_string().to_lowercase())
}

async fn get(conn: &mut MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(conn).await.unwrap_or_else(|e| panic!("GET {key}: {e}"))
}

async fn ttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query_async(conn).await.unwrap_or_else(|e| panic!("TTL {key}: {e}"))
}

async fn wait_for_value(conn: &MultiplexedConnection, key: &str, status: &str, timeout: Duration) {
    wait_until(&format!("{key} = {status} in Redis"), timeout, || async move {
        (get(&mut conn.clone(), key).await.as_deref() == Some(status)).then_some(())
    })
    .await
}

/// Waits until the mirror has nothing pending and returns how many statuses it has written.
async fn settled_writes(app: &TestApp) -> f64 {
    wait_until("the mirror to have nothing pending", WAIT, || async {
        let health = app.health().await;
        (health["redis"]["pending"] == 0).then_some(())
    })
    .await;
    app.metrics().await.counter("herald_redis_mirror_writes_total")
}

async fn watch(app: &TestApp, topic: &str) -> WsClient {
    let mut ws = app.connect_ws_query(&format!("?token={}", app.topic_token("alice", &[topic]))).await;
    ws.send_json(&json!({"type": "subscribe", "topic": topic})).await;
    let subscribed = ws.next_json().await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    ws
}

async fn next_event(ws: &mut WsClient) -> Value {
    let frame = ws.next_json().await;
    assert_eq!(frame["type"], "event", "expected a topic event, got {frame}");
    frame
}

#[tokio::test]
async fn an_intents_status_is_mirrored_for_six_hours_and_rewritten_only_when_it_changes() {
    let Some(mut redis) = shared_redis().await else { return };
    let prefix = prefix();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "redis_url = \"{SHARED_REDIS}\"\n[topics.namespaces.intent]\nredis_key = \"{prefix}:intent:status:{{id}}\"\n"
    );
    let app = spawn_with_config(dir.path(), &config).await;
    let (topic, key) = ("intent:42", format!("{prefix}:intent:status:42"));

    for status in ["pending", "broadcast", "confirming"] {
        app.append_ok(topic, &json!({"type": "status", "status": status})).await;
    }
    wait_for_value(&redis, &key, "confirming", WAIT).await;
    let writes = settled_writes(&app).await;
    // Shortened here, the TTL shows whether anything rewrites the key: a SET would put six hours back.
    let _: () = redis::cmd("EXPIRE").arg(&key).arg(1000).query_async(&mut redis).await.unwrap();

    // Progress alone, and a repeat of the status, change no status. The fanout follows the mirror's offer,
    // so once the subscriber has both events, whatever they queued is pending or written.
    let mut ws = watch(&app, topic).await;
    app.append_ok(topic, &json!({"type": "progress", "progress": 40})).await;
    app.append_ok(topic, &json!({"type": "status", "status": "confirming", "progress": 60})).await;
    for _ in 0..2 {
        next_event(&mut ws).await;
    }
    assert_eq!(settled_writes(&app).await, writes, "an event that kept the status was written");
    assert_eq!(get(&mut redis, &key).await.as_deref(), Some("confirming"));
    assert!((1..=1000).contains(&ttl(&mut redis, &key).await), "the key was rewritten");

    app.append_ok(topic, &json!({"type": "status", "status": "ready"})).await;
    wait_for_value(&redis, &key, "ready", WAIT).await;
    let left = ttl(&mut redis, &key).await;
    assert!((21_500..=21_600).contains(&left), "TTL {left}, expected about 21600 s");
    // The key is set before the mirror has read Redis's reply: wait for it to say so.
    assert_eq!(settled_writes(&app).await, writes + 1.0);
    let health = app.health().await;
    assert_eq!(health["redis"], json!({"status": "ok", "pending": 0, "last_error": null}), "{health}");

    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut redis).await.unwrap();
}

#[tokio::test]
async fn a_namespace_has_its_own_key_and_ttl_and_an_empty_key_mirrors_nothing() {
    let Some(mut redis) = shared_redis().await else { return };
    let prefix = prefix();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "redis_url = \"{SHARED_REDIS}\"\n\
         [topics.namespaces.intent]\nredis_key = \"\"\n\
         [topics.namespaces.job]\nredis_key = \"{prefix}:job:{{id}}:status\"\nredis_ttl_secs = 60\n"
    );
    let app = spawn_with_config(dir.path(), &config).await;

    // The intent goes first: had it been mirrored, it would be written before or with the job.
    app.append_ok("intent:1", &json!({"type": "status", "status": "pending"})).await;
    app.append_ok("job:9", &json!({"type": "status", "status": "queued"})).await;
    let key = format!("{prefix}:job:9:status");
    wait_for_value(&redis, &key, "queued", WAIT).await;
    let left = ttl(&mut redis, &key).await;
    assert!((1..=60).contains(&left), "TTL {left}, expected at most 60 s");
    assert_eq!(settled_writes(&app).await, 1.0, "only the job's status is mirrored");

    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut redis).await.unwrap();
}

/// A `redis-server` of the test's own on a port chosen before it starts, so that Herald can be pointed at
/// a Redis that is not there yet. Killed when dropped.
pub(crate) struct PrivateRedis {
    port: u16,
    pub(crate) password: &'static str,
    dir: TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Picks a free port; `None` (outside CI) when there is no `redis-server` to run.
    pub(crate) fn reserve() -> Option<PrivateRedis> {
        if let Err(e) = std::process::Command::new("redis-server").arg("--version").output() {
            unavailable(format!("cannot run redis-server ({e})"));
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("pick a free port").port();
        Some(PrivateRedis { port, password: "mirror-test-pw-7d1c", dir: tempfile::tempdir().unwrap(), child: None })
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}", self.password, self.port)
    }

    pub(crate) async fn start(&mut self) -> MultiplexedConnection {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--requirepass", self.password])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let url = self.url();
        wait_until("the private redis-server to answer", WAIT, || async { connect(&url).await.ok() }).await
    }
}

impl PrivateRedis {
    /// Kills the server (as a crash would) and waits for it to be gone.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}

#[tokio::test]
async fn with_redis_down_the_stream_goes_on_and_the_mirror_catches_up_when_it_is_back() {
    let Some(mut server) = PrivateRedis::reserve() else { return };
    // No namespace configured: the built-in `intent:status:{id}` key, on a Redis no other test uses.
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_REDIS_URL", server.url());
    })
    .await;
    let topic = format!("intent:{}", prefix());
    let key = format!("intent:status:{}", &topic["intent:".len()..]);

    let mut ws = watch(&app, &topic).await;
    for status in ["pending", "broadcast", "confirming"] {
        app.append_ok(&topic, &json!({"type": "status", "status": status})).await;
        assert_eq!(next_event(&mut ws).await["event"]["status"], status);
    }
    // The node stays healthy; the mirror says it is down, and why, without the password.
    let health = wait_until("/health to show the mirror down after a failed attempt", WAIT, || async {
        let health = app.health().await;
        let errors = app.metrics().await.counter("herald_redis_mirror_errors_total");
        (health["redis"]["status"] == "down" && health["redis"]["last_error"].is_string() && errors > 0.0)
            .then_some(health)
    })
    .await;
    assert_eq!(health["status"], "ok", "{health}");
    // Three statuses of one key wait as one: only the newest matters.
    assert_eq!(health["redis"]["pending"], 1, "{health}");
    assert!(!health.to_string().contains(server.password), "{health}");

    let redis = server.start().await;
    wait_for_value(&redis, &key, "confirming", CATCH_UP).await;
    assert_eq!(settled_writes(&app).await, 1.0, "the waiting statuses were coalesced into one SET");
    let health = app.health().await;
    assert_eq!(health["redis"], json!({"status": "ok", "pending": 0, "last_error": null}), "{health}");
    assert!(!app.logs().contains(server.password), "the Redis password reached the logs");

    // Live again: the next status goes straight through.
    app.append_ok(&topic, &json!({"type": "status", "status": "ready"})).await;
    wait_for_value(&redis, &key, "ready", WAIT).await;
}
