//! The FalkorDB backend of [`GraphSink`]: `GRAPH.QUERY <graph> <query>` over the Redis protocol, through the
//! `redis` crate's connection manager (lazy, so a start with the database down does not fail; it reconnects
//! by itself).
//!
//! Parameters go the way FalkorDB takes them: a `CYPHER name=value …` header before the query, each value a
//! Cypher literal (strings quoted, with `\` and `"` escaped), parsed by the database apart from the query,
//! so no value is ever part of the query's text. The queries are plain OpenCypher; only `prepare` uses
//! FalkorDB's own `GRAPH.CONSTRAINT`.

use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, RedisError, ServerErrorKind, Value};

use super::graph::{GraphError, GraphSink, GraphUser, Written};
use super::user::Profile;

const CREATE: &str = "MERGE (u:User {user_id: $user_id}) \
     ON CREATE SET u.username = $username, u.role = $role, u.display_name = $display_name, \
     u.avatar_ipfs_hash = $avatar_ipfs_hash, u.following_number = 0, u.followers_number = 0";

const UPDATE: &str = "MERGE (u:User {user_id: $user_id}) \
     ON CREATE SET u.following_number = 0, u.followers_number = 0 \
     SET u.username = $username, u.role = $role, u.display_name = $display_name, \
     u.avatar_ipfs_hash = $avatar_ipfs_hash";

const PAGE: &str = "MATCH (u:User) WHERE $after IS NULL OR u.user_id > $after \
     RETURN u.user_id, u.username, u.role, u.display_name, u.avatar_ipfs_hash, \
     u.following_number, u.followers_number ORDER BY u.user_id LIMIT $limit";

const DELETE: &str = "MATCH (u:User {user_id: $user_id}) DETACH DELETE u";

pub struct FalkorGraph {
    conn: ConnectionManager,
    graph: String,
    /// The URL without its password, for `/health` and logs.
    shown: String,
}

impl FalkorGraph {
    pub fn new(url: &str, graph: &str) -> Result<Self, GraphError> {
        let client = Client::open(url).map_err(|e| GraphError::Refused(format!("the graph URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_millis(400))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(10)));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| GraphError::Refused(format!("the graph URL: {e}")))?;
        Ok(Self { conn, graph: graph.to_owned(), shown: crate::config::amqp::redact_url(url) })
    }

    async fn query(&self, params: &[(&str, Param<'_>)], query: &str) -> Result<Value, GraphError> {
        let mut text = String::from("CYPHER");
        for (name, value) in params {
            let _ = write!(text, " {name}=");
            value.write(&mut text);
        }
        text.push(' ');
        text.push_str(query);
        let mut conn = self.conn.clone();
        redis::cmd("GRAPH.QUERY").arg(&self.graph).arg(text).query_async(&mut conn).await.map_err(graph_error)
    }

    async fn write_user(&self, query: &str, profile: &Profile) -> Result<bool, GraphError> {
        let reply = self.query(&profile_params(profile), query).await?;
        Ok(nodes_created(&reply) > 0)
    }
}

/// A parameter's value.
enum Param<'a> {
    Text(Option<&'a str>),
    Int(i64),
}

impl Param<'_> {
    fn write(&self, out: &mut String) {
        match self {
            Param::Text(None) => out.push_str("null"),
            Param::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Param::Text(Some(text)) => {
                out.push('"');
                for c in text.chars() {
                    if c == '\\' || c == '"' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
}

fn profile_params(p: &Profile) -> [(&'static str, Param<'_>); 5] {
    [
        ("user_id", Param::Text(Some(&p.user_id))),
        ("username", Param::Text(p.username.as_deref())),
        ("role", Param::Text(p.role.as_deref())),
        ("display_name", Param::Text(p.display_name.as_deref())),
        ("avatar_ipfs_hash", Param::Text(p.avatar_ipfs_hash.as_deref())),
    ]
}

fn graph_error(e: RedisError) -> GraphError {
    let unavailable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain | ServerErrorKind::ClusterDown)
        );
    if unavailable {
        GraphError::Unavailable(e.to_string())
    } else {
        GraphError::Refused(e.to_string())
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn int(value: &Value) -> i64 {
    match value {
        Value::Int(n) => *n,
        other => text(other).and_then(|t| t.parse().ok()).unwrap_or(0),
    }
}

/// The reply's statistics (its last element): `"Nodes created: 1"` and the like.
fn stats(reply: &Value) -> Vec<String> {
    match reply {
        Value::Array(parts) => match parts.last() {
            Some(Value::Array(lines)) => lines.iter().filter_map(text).collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn nodes_created(reply: &Value) -> u64 {
    stats(reply)
        .iter()
        .find_map(|line| line.strip_prefix("Nodes created: ").and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

/// The reply's rows, when it has a header, rows and statistics.
fn rows(reply: &Value) -> Vec<Vec<Value>> {
    match reply {
        Value::Array(parts) if parts.len() == 3 => match &parts[1] {
            Value::Array(rows) => rows
                .iter()
                .filter_map(|row| match row {
                    Value::Array(cells) => Some(cells.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

#[async_trait]
impl GraphSink for FalkorGraph {
    async fn prepare(&self) -> Result<(), GraphError> {
        match self.query(&[], "CREATE INDEX FOR (u:User) ON (u.user_id)").await {
            Ok(_) => {}
            Err(GraphError::Refused(e)) if e.contains("already indexed") => {}
            Err(e) => return Err(e),
        }
        let mut conn = self.conn.clone();
        let constraint: Result<Value, _> = redis::cmd("GRAPH.CONSTRAINT")
            .arg("CREATE")
            .arg(&self.graph)
            .arg("UNIQUE")
            .arg("NODE")
            .arg("User")
            .arg("PROPERTIES")
            .arg(1)
            .arg("user_id")
            .query_async(&mut conn)
            .await;
        match constraint.map_err(graph_error) {
            Ok(_) => Ok(()),
            Err(GraphError::Refused(e)) if e.contains("already exists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create_user(&self, profile: &Profile) -> Result<Written, GraphError> {
        Ok(if self.write_user(CREATE, profile).await? { Written::Created } else { Written::AlreadyExists })
    }

    async fn update_user(&self, profile: &Profile) -> Result<Written, GraphError> {
        Ok(if self.write_user(UPDATE, profile).await? { Written::CreatedByUpdate } else { Written::Updated })
    }

    async fn users_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<GraphUser>, GraphError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let reply = self.query(&[("after", Param::Text(after)), ("limit", Param::Int(limit))], PAGE).await?;
        Ok(rows(&reply)
            .iter()
            .filter(|cells| cells.len() == 7)
            .map(|c| GraphUser {
                user_id: text(&c[0]).unwrap_or_default(),
                username: text(&c[1]),
                role: text(&c[2]),
                display_name: text(&c[3]),
                avatar_ipfs_hash: text(&c[4]),
                following_number: int(&c[5]),
                followers_number: int(&c[6]),
            })
            .collect())
    }

    async fn delete_user(&self, user_id: &str) -> Result<bool, GraphError> {
        let reply = self.query(&[("user_id", Param::Text(Some(user_id)))], DELETE).await?;
        Ok(stats(&reply).iter().any(|l| l.starts_with("Nodes deleted: ") && !l.ends_with(": 0")))
    }

    async fn ping(&self) -> Result<String, GraphError> {
        let mut conn = self.conn.clone();
        let _: Value = redis::cmd("PING").query_async(&mut conn).await.map_err(graph_error)?;
        Ok(format!("falkordb {} graph {}", self.shown, self.graph))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_literals_that_cannot_leave_their_quotes() {
        let mut out = String::new();
        Param::Text(Some(r#"a" role="admin\"#)).write(&mut out);
        assert_eq!(out, r#""a\" role=\"admin\\""#);
        let mut null = String::new();
        Param::Text(None).write(&mut null);
        assert_eq!(null, "null");
    }

    #[test]
    fn statistics_and_rows_are_read_from_replies() {
        let stats_only = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"Nodes created: 1".to_vec()),
            Value::BulkString(b"Properties set: 7".to_vec()),
        ])]);
        assert_eq!(nodes_created(&stats_only), 1);
        let none = Value::Array(vec![Value::Array(vec![Value::BulkString(b"Cached execution: 0".to_vec())])]);
        assert_eq!(nodes_created(&none), 0);
        let table = Value::Array(vec![
            Value::Array(vec![Value::BulkString(b"u.user_id".to_vec())]),
            Value::Array(vec![Value::Array(vec![Value::BulkString(b"u1".to_vec()), Value::Nil, Value::Int(3)])]),
            Value::Array(vec![]),
        ]);
        let got = rows(&table);
        assert_eq!(got.len(), 1);
        assert_eq!((text(&got[0][0]), text(&got[0][1]), int(&got[0][2])), (Some("u1".into()), None, 3));
    }
}
