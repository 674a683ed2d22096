//! The addresses of what Herald talks to, checked as their clients will read them: the database, Redis and
//! the cluster broker (Redis or NATS), and the words that name a cluster and its nodes in channel names.
//! Messages never repeat a URL: it may hold a password.

use std::path::PathBuf;

use super::{amqp, correlation, invalid, ConfigError, DatabaseUrl, Secret};

/// The cluster broker (`broker`): `memory` (one node) or a URL.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerUrl {
    Memory,
    Redis(Secret),
    Nats(Secret),
}

impl BrokerUrl {
    /// The URL, safe to log: a Redis password, NATS credentials or a NATS token hidden.
    pub fn redacted(&self) -> String {
        match self {
            BrokerUrl::Memory => "memory".to_owned(),
            BrokerUrl::Redis(url) => amqp::redact_url(url.expose()),
            BrokerUrl::Nats(url) => amqp::redact_userinfo(url.expose()),
        }
    }
}

/// The `broker` setting: `memory` (or nothing), or a Redis or NATS URL.
pub(super) fn parse_broker(text: Option<&str>) -> Result<BrokerUrl, ConfigError> {
    Ok(match text.map(str::trim) {
        None | Some("") | Some("memory") => BrokerUrl::Memory,
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            BrokerUrl::Redis(parse_redis_url("broker", url.to_owned())?)
        }
        Some(url) if url.starts_with("nats://") || url.starts_with("tls://") => {
            BrokerUrl::Nats(parse_nats_url("broker", url.to_owned())?)
        }
        Some(_) => {
            return Err(invalid(
                "broker",
                "expected memory, redis://[:PASSWORD@]HOST[:PORT][/DB] or nats://[USER:PASSWORD@]HOST[:PORT]",
            ))
        }
    })
}

pub(super) fn parse_database_url(url: &str) -> Result<DatabaseUrl, ConfigError> {
    if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        if path.is_empty() {
            return Err(invalid("database_url", "a sqlite: URL needs a file path, e.g. sqlite://./data/herald.db"));
        }
        return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return correlation::check_url("database_url", url.to_owned()).map(DatabaseUrl::Postgres);
    }
    let scheme = url.split(':').next().unwrap_or_default();
    Err(invalid(
        "database_url",
        format!("unsupported scheme {scheme:?}: expected sqlite://PATH or postgres://USER@HOST[:PORT]/DATABASE"),
    ))
}

/// A `redis://` URL, checked the way the client will read it. Messages never repeat the URL: it may hold a
/// password.
pub(super) fn parse_redis_url(key: &'static str, url: String) -> Result<Secret, ConfigError> {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    match scheme {
        "redis" => {}
        "rediss" => {
            return Err(invalid(
                key,
                "rediss:// (TLS) is not supported: this build has no TLS for Redis; use redis:// (over a \
                 private network or a TLS tunnel)",
            ))
        }
        _ => return Err(invalid(key, "expected a URL like redis://[:PASSWORD@]HOST[:PORT][/DB]")),
    }
    if let Err(e) = redis::Client::open(url.as_str()) {
        // The client's messages name what is wrong (host, database number), not the URL's parts.
        return Err(invalid(key, format!("not a valid Redis URL: {e}")));
    }
    Ok(Secret::new(url))
}

/// A `nats://` URL (credentials optional: `USER:PASSWORD@` or `TOKEN@`). Messages never repeat the URL.
fn parse_nats_url(key: &'static str, url: String) -> Result<Secret, ConfigError> {
    match url.split_once("://").map_or("", |(scheme, _)| scheme) {
        "nats" => {}
        "tls" => {
            return Err(invalid(
                key,
                "tls:// is not supported: this build has no TLS for NATS; use nats:// (over a private network or \
                 a TLS tunnel)",
            ))
        }
        _ => return Err(invalid(key, "expected a URL like nats://[USER:PASSWORD@]HOST[:PORT]")),
    }
    if let Err(e) = url.parse::<async_nats::ServerAddr>() {
        return Err(invalid(key, format!("not a valid NATS URL: {e}")));
    }
    Ok(Secret::new(url))
}

/// A node id or cluster name: it becomes part of channel names, so letters, digits, `-` and `_`, 1 to 64.
pub(super) fn cluster_word(key: &'static str, value: String) -> Result<String, ConfigError> {
    let ok =
        (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(invalid(key, "expected 1 to 64 letters, digits, - or _"));
    }
    Ok(value)
}

/// A node id unique to this start: nodes need no setting of their own.
pub(super) fn generated_node_id() -> String {
    format!("node-{:016x}", rand::random::<u64>())
}
