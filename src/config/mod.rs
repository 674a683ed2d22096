//! Configuration: a TOML file, overridden by `HERALD_*` environment variables, overridden by flags.
//!
//! Each source is read into the same [`Layer`] of optional values; the layers are merged and then checked
//! once into typed [`Settings`]. Every error names the key (and the variable) it is about, and secrets are
//! held as [`Secret`] so that printing the settings never shows them.

pub mod amqp;
pub mod correlation;
pub mod email;
pub mod limits;
mod secret;
pub mod sync;
pub mod topics;
mod urls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

pub use amqp::AmqpSettings;
pub use correlation::CorrelationSettings;
pub use email::{SmtpSettings, SmtpTls};
pub use limits::{LimitSettings, Rate};
pub use secret::{load_or_generate, Secret, StoredSecret};
pub use sync::SyncSettings;
pub use topics::TopicSettings;
pub use urls::BrokerUrl;
use urls::{cluster_word, generated_node_id, parse_broker, parse_database_url, parse_redis_url};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("unknown environment variable {0}: Herald reads only the HERALD_* variables listed in the README")]
    UnknownVariable(String),
    #[error("{key} ({variable}): {message}")]
    Invalid { key: &'static str, variable: &'static str, message: String },
}

/// One source of configuration. Every field is optional; unset fields fall through to the next layer.
/// It holds secrets as read, so its `Debug` shows nothing: only the checked [`Settings`] are printed.
#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub jwt_secret: Option<String>,
    pub jwt_public_key: Option<String>,
    pub jwt_jwks_url: Option<String>,
    pub jwt_jwks_refresh_secs: Option<u64>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub api_keys: Option<Vec<String>>,
    pub log_format: Option<String>,
    pub log: Option<String>,
    pub ping_interval_ms: Option<u64>,
    pub outbox_capacity: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_user: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub max_frame_bytes: Option<usize>,
    pub write_buffer_bytes: Option<usize>,
    pub sqlite_synchronous: Option<String>,
    pub sqlite_busy_timeout_ms: Option<u64>,
    pub shutdown_timeout_ms: Option<u64>,
    pub database_pool: Option<u32>,
    pub statsd_addr: Option<String>,
    pub redis_url: Option<String>,
    pub broker: Option<String>,
    pub node_id: Option<String>,
    pub cluster_name: Option<String>,
    pub correlation_database_url: Option<String>,
    pub correlation_query: Option<String>,
    pub correlation_namespace: Option<String>,
    pub email_templates: Option<PathBuf>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    pub smtp_user: Option<String>,
    pub smtp_password: Option<String>,
    pub smtp_tls: Option<String>,
    pub smtp_from: Option<String>,
    pub smtp_ca_file: Option<PathBuf>,
    pub smtp_timeout_ms: Option<u64>,
    pub smtp_concurrency: Option<usize>,
    pub email_attempts: Option<u32>,
    pub email_retry_initial_ms: Option<u64>,
    pub email_retry_max_ms: Option<u64>,
    pub graph_url: Option<String>,
    pub graph_name: Option<String>,
    pub sync: Option<sync::SyncLayer>,
    pub amqp: Option<amqp::AmqpLayer>,
    pub topics: Option<topics::TopicsLayer>,
    pub limits: Option<limits::LimitsLayer>,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Layer { .. }")
    }
}

/// The environment variable for each key, in one table so that the README, the error messages and the
/// unknown-variable check cannot drift apart.
const VARIABLES: &[(&str, &str)] = &[
    ("listen", "HERALD_LISTEN"),
    ("data_dir", "HERALD_DATA_DIR"),
    ("database_url", "HERALD_DATABASE_URL"),
    ("jwt_secret", "HERALD_JWT_SECRET"),
    ("jwt_public_key", "HERALD_JWT_PUBLIC_KEY"),
    ("jwt_jwks_url", "HERALD_JWT_JWKS_URL"),
    ("jwt_jwks_refresh_secs", "HERALD_JWT_JWKS_REFRESH_SECS"),
    ("jwt_issuer", "HERALD_JWT_ISSUER"),
    ("jwt_audience", "HERALD_JWT_AUDIENCE"),
    ("api_keys", "HERALD_API_KEYS"),
    ("log_format", "HERALD_LOG_FORMAT"),
    ("log", "HERALD_LOG"),
    ("ping_interval_ms", "HERALD_PING_INTERVAL_MS"),
    ("outbox_capacity", "HERALD_OUTBOX_CAPACITY"),
    ("max_connections", "HERALD_MAX_CONNECTIONS"),
    ("max_connections_per_user", "HERALD_MAX_CONNECTIONS_PER_USER"),
    ("max_body_bytes", "HERALD_MAX_BODY_BYTES"),
    ("max_frame_bytes", "HERALD_MAX_FRAME_BYTES"),
    ("write_buffer_bytes", "HERALD_WRITE_BUFFER_BYTES"),
    ("sqlite_synchronous", "HERALD_SQLITE_SYNCHRONOUS"),
    ("sqlite_busy_timeout_ms", "HERALD_SQLITE_BUSY_TIMEOUT_MS"),
    ("shutdown_timeout_ms", "HERALD_SHUTDOWN_TIMEOUT_MS"),
    ("database_pool", "HERALD_DATABASE_POOL"),
    ("statsd_addr", "HERALD_STATSD_ADDR"),
    ("redis_url", "HERALD_REDIS_URL"),
    ("broker", "HERALD_BROKER"),
    ("node_id", "HERALD_NODE_ID"),
    ("cluster_name", "HERALD_CLUSTER_NAME"),
    ("correlation_database_url", "HERALD_CORRELATION_DATABASE_URL"),
    ("correlation_query", "HERALD_CORRELATION_QUERY"),
    ("correlation_namespace", "HERALD_CORRELATION_NAMESPACE"),
    ("email_templates", "HERALD_EMAIL_TEMPLATES"),
    ("smtp_host", "HERALD_SMTP_HOST"),
    ("smtp_port", "HERALD_SMTP_PORT"),
    ("smtp_user", "HERALD_SMTP_USER"),
    ("smtp_password", "HERALD_SMTP_PASSWORD"),
    ("smtp_tls", "HERALD_SMTP_TLS"),
    ("smtp_from", "HERALD_SMTP_FROM"),
    ("smtp_ca_file", "HERALD_SMTP_CA_FILE"),
    ("smtp_timeout_ms", "HERALD_SMTP_TIMEOUT_MS"),
    ("smtp_concurrency", "HERALD_SMTP_CONCURRENCY"),
    ("email_attempts", "HERALD_EMAIL_ATTEMPTS"),
    ("email_retry_initial_ms", "HERALD_EMAIL_RETRY_INITIAL_MS"),
    ("email_retry_max_ms", "HERALD_EMAIL_RETRY_MAX_MS"),
    ("graph_url", "HERALD_GRAPH_URL"),
    ("graph_name", "HERALD_GRAPH_NAME"),
    ("sync_fields", "HERALD_SYNC_FIELDS"),
    ("amqp.url", "HERALD_AMQP_URL"),
    ("limits.frames_per_second", "HERALD_LIMIT_FRAMES_PER_SECOND"),
    ("limits.frames_burst", "HERALD_LIMIT_FRAMES_BURST"),
    ("limits.publishes_per_second", "HERALD_LIMIT_PUBLISHES_PER_SECOND"),
    ("limits.publishes_burst", "HERALD_LIMIT_PUBLISHES_BURST"),
    ("limits.connects_per_second", "HERALD_LIMIT_CONNECTS_PER_SECOND"),
    ("limits.connects_burst", "HERALD_LIMIT_CONNECTS_BURST"),
];

fn variable(key: &'static str) -> &'static str {
    VARIABLES.iter().find(|(k, _)| *k == key).map_or("-", |(_, v)| v)
}

pub(crate) fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, variable: variable(key), message: message.into() }
}

fn number<T: std::str::FromStr>(key: &'static str, value: &str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| invalid(key, format!("expected a whole number, got {value:?}")))
}

impl Layer {
    /// Reads a TOML file; an unknown key or a value of the wrong type is an error that names it.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::ParseFile { path: path.to_owned(), message: redacted(&e, &text) })
    }

    /// Reads every `HERALD_*` variable from `vars`; one Herald does not know is an error, so a typo never
    /// silently leaves a default in place.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut layer = Layer::default();
        for (name, value) in vars {
            // HERALD_BENCH_* belong to the load tool, which often runs from the same shell.
            if !name.starts_with("HERALD_") || name.starts_with("HERALD_BENCH_") {
                continue;
            }
            let Some((key, _)) = VARIABLES.iter().find(|(_, v)| *v == name) else {
                return Err(ConfigError::UnknownVariable(name));
            };
            layer.set(key, &value)?;
        }
        Ok(layer)
    }

    fn set(&mut self, key: &'static str, value: &str) -> Result<(), ConfigError> {
        let text = Some(value.to_owned());
        match key {
            "listen" => self.listen = text,
            "data_dir" => self.data_dir = Some(PathBuf::from(value)),
            "database_url" => self.database_url = text,
            "jwt_secret" => self.jwt_secret = text,
            "jwt_public_key" => self.jwt_public_key = text,
            "jwt_jwks_url" => self.jwt_jwks_url = text,
            "jwt_jwks_refresh_secs" => self.jwt_jwks_refresh_secs = Some(number(key, value)?),
            "jwt_issuer" => self.jwt_issuer = text,
            "jwt_audience" => self.jwt_audience = text,
            "api_keys" => {
                self.api_keys =
                    Some(value.split(',').map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect())
            }
            "log_format" => self.log_format = text,
            "log" => self.log = text,
            "ping_interval_ms" => self.ping_interval_ms = Some(number(key, value)?),
            "outbox_capacity" => self.outbox_capacity = Some(number(key, value)?),
            "max_connections" => self.max_connections = Some(number(key, value)?),
            "max_connections_per_user" => self.max_connections_per_user = Some(number(key, value)?),
            "max_body_bytes" => self.max_body_bytes = Some(number(key, value)?),
            "max_frame_bytes" => self.max_frame_bytes = Some(number(key, value)?),
            "write_buffer_bytes" => self.write_buffer_bytes = Some(number(key, value)?),
            "sqlite_synchronous" => self.sqlite_synchronous = text,
            "sqlite_busy_timeout_ms" => self.sqlite_busy_timeout_ms = Some(number(key, value)?),
            "shutdown_timeout_ms" => self.shutdown_timeout_ms = Some(number(key, value)?),
            "database_pool" => self.database_pool = Some(number(key, value)?),
            "statsd_addr" => self.statsd_addr = text,
            "redis_url" => self.redis_url = text,
            "broker" => self.broker = text,
            "node_id" => self.node_id = text,
            "cluster_name" => self.cluster_name = text,
            "correlation_database_url" => self.correlation_database_url = text,
            "correlation_query" => self.correlation_query = text,
            "correlation_namespace" => self.correlation_namespace = text,
            "email_templates" => self.email_templates = Some(PathBuf::from(value)),
            "smtp_host" => self.smtp_host = text,
            "smtp_port" => self.smtp_port = Some(number(key, value)?),
            "smtp_user" => self.smtp_user = text,
            "smtp_password" => self.smtp_password = text,
            "smtp_tls" => self.smtp_tls = text,
            "smtp_from" => self.smtp_from = text,
            "smtp_ca_file" => self.smtp_ca_file = Some(PathBuf::from(value)),
            "smtp_timeout_ms" => self.smtp_timeout_ms = Some(number(key, value)?),
            "smtp_concurrency" => self.smtp_concurrency = Some(number(key, value)?),
            "email_attempts" => self.email_attempts = Some(number(key, value)?),
            "email_retry_initial_ms" => self.email_retry_initial_ms = Some(number(key, value)?),
            "email_retry_max_ms" => self.email_retry_max_ms = Some(number(key, value)?),
            "graph_url" => self.graph_url = text,
            "graph_name" => self.graph_name = text,
            "sync_fields" => self.sync = Some(sync::SyncLayer { fields: Some(sync::parse_fields(value)?) }),
            "amqp.url" => self.amqp.get_or_insert_with(Default::default).url = text,
            key if limits::KEYS.contains(&key) => self.limits.get_or_insert_with(Default::default).set(key, value)?,
            _ => return Err(invalid(key, "not a configuration key")),
        }
        Ok(())
    }

    /// `self` wins over `lower` field by field.
    pub fn over(self, lower: Layer) -> Layer {
        Layer {
            listen: self.listen.or(lower.listen),
            data_dir: self.data_dir.or(lower.data_dir),
            database_url: self.database_url.or(lower.database_url),
            jwt_secret: self.jwt_secret.or(lower.jwt_secret),
            jwt_public_key: self.jwt_public_key.or(lower.jwt_public_key),
            jwt_jwks_url: self.jwt_jwks_url.or(lower.jwt_jwks_url),
            jwt_jwks_refresh_secs: self.jwt_jwks_refresh_secs.or(lower.jwt_jwks_refresh_secs),
            jwt_issuer: self.jwt_issuer.or(lower.jwt_issuer),
            jwt_audience: self.jwt_audience.or(lower.jwt_audience),
            api_keys: self.api_keys.or(lower.api_keys),
            log_format: self.log_format.or(lower.log_format),
            log: self.log.or(lower.log),
            ping_interval_ms: self.ping_interval_ms.or(lower.ping_interval_ms),
            outbox_capacity: self.outbox_capacity.or(lower.outbox_capacity),
            max_connections: self.max_connections.or(lower.max_connections),
            max_connections_per_user: self.max_connections_per_user.or(lower.max_connections_per_user),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
            max_frame_bytes: self.max_frame_bytes.or(lower.max_frame_bytes),
            write_buffer_bytes: self.write_buffer_bytes.or(lower.write_buffer_bytes),
            sqlite_synchronous: self.sqlite_synchronous.or(lower.sqlite_synchronous),
            sqlite_busy_timeout_ms: self.sqlite_busy_timeout_ms.or(lower.sqlite_busy_timeout_ms),
            shutdown_timeout_ms: self.shutdown_timeout_ms.or(lower.shutdown_timeout_ms),
            database_pool: self.database_pool.or(lower.database_pool),
            statsd_addr: self.statsd_addr.or(lower.statsd_addr),
            redis_url: self.redis_url.or(lower.redis_url),
            broker: self.broker.or(lower.broker),
            node_id: self.node_id.or(lower.node_id),
            cluster_name: self.cluster_name.or(lower.cluster_name),
            correlation_database_url: self.correlation_database_url.or(lower.correlation_database_url),
            correlation_query: self.correlation_query.or(lower.correlation_query),
            correlation_namespace: self.correlation_namespace.or(lower.correlation_namespace),
            email_templates: self.email_templates.or(lower.email_templates),
            smtp_host: self.smtp_host.or(lower.smtp_host),
            smtp_port: self.smtp_port.or(lower.smtp_port),
            smtp_user: self.smtp_user.or(lower.smtp_user),
            smtp_password: self.smtp_password.or(lower.smtp_password),
            smtp_tls: self.smtp_tls.or(lower.smtp_tls),
            smtp_from: self.smtp_from.or(lower.smtp_from),
            smtp_ca_file: self.smtp_ca_file.or(lower.smtp_ca_file),
            smtp_timeout_ms: self.smtp_timeout_ms.or(lower.smtp_timeout_ms),
            smtp_concurrency: self.smtp_concurrency.or(lower.smtp_concurrency),
            email_attempts: self.email_attempts.or(lower.email_attempts),
            email_retry_initial_ms: self.email_retry_initial_ms.or(lower.email_retry_initial_ms),
            email_retry_max_ms: self.email_retry_max_ms.or(lower.email_retry_max_ms),
            graph_url: self.graph_url.or(lower.graph_url),
            graph_name: self.graph_name.or(lower.graph_name),
            sync: self.sync.or(lower.sync),
            amqp: match (self.amqp, lower.amqp) {
                (Some(upper), Some(lower)) => Some(amqp::AmqpLayer {
                    url: upper.url.or(lower.url),
                    consumers: upper.consumers.or(lower.consumers),
                }),
                (upper, lower) => upper.or(lower),
            },
            topics: self.topics.or(lower.topics),
            limits: match (self.limits, lower.limits) {
                (Some(upper), Some(lower)) => Some(upper.over(lower)),
                (upper, lower) => upper.or(lower),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How user tokens are verified.
#[derive(Debug, Clone)]
pub enum JwtKey {
    /// An HS256 shared secret; with it Herald can also mint tokens (`herald token`).
    Hs256(Secret),
    /// A PEM public key; the algorithm (RS256 or ES256) follows from the key type.
    PublicPem(String),
    /// An identity provider's JWKS URL, fetched every `refresh` (and on an unknown `kid`, rate-limited).
    Jwks { url: String, refresh: Duration },
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `None` until the generated default is loaded from the data dir.
    pub jwt_key: Option<JwtKey>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Empty until the generated default is loaded from the data dir.
    pub api_keys: Vec<Secret>,
    /// The JWT secret is the one generated in the data dir (nobody configured one): with a loopback listen
    /// address, the web inbox may mint development tokens.
    pub jwt_generated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync the WAL on every commit: an acknowledged write survives power loss.
    Full,
    /// fsync only at checkpoints: survives a crash of the process, not of the machine.
    Normal,
}

#[derive(Debug, Clone)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    /// A `postgres://` URL; it may hold a password.
    Postgres(Secret),
}

#[derive(Debug, Clone)]
pub struct WsSettings {
    pub ping_interval: Duration,
    pub outbox_capacity: usize,
    pub max_frame_bytes: usize,
    pub write_buffer_bytes: usize,
    /// Live connections one user may hold; more get 429, so one user cannot take every slot.
    pub max_connections_per_user: usize,
}

/// Everything Herald needs to start, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseUrl,
    pub sqlite_synchronous: Synchronous,
    /// How long a write waits for a lock held by another process before it fails as unavailable.
    pub sqlite_busy_timeout: Duration,
    pub auth: AuthSettings,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub ws: WsSettings,
    pub max_body_bytes: usize,
    /// `None`: derived from the open-files limit at start.
    pub max_connections: Option<usize>,
    pub shutdown_timeout: Duration,
    /// PostgreSQL: the inbox's reading connections per node (the writers and the topic store have 7 more).
    pub database_pool: u32,
    /// Where to send the metrics as DogStatsD too, besides `/metrics`.
    pub statsd_addr: Option<SocketAddr>,
    /// Where topic statuses are mirrored (`SET <key> <status> EX <ttl>`); `None`: nowhere. It may hold a
    /// password: log it only through [`amqp::redact_url`].
    pub redis_url: Option<Secret>,
    /// How committed events reach the other nodes' connections.
    pub broker: BrokerUrl,
    /// This node's name in the cluster (in `/health`, and on what it publishes).
    pub node_id: String,
    /// Nodes sharing a database and a broker share this; it prefixes every channel, so two clusters can
    /// share one Redis or NATS.
    pub cluster_name: String,
    /// `None`: no RabbitMQ consumer runs.
    pub amqp: Option<AmqpSettings>,
    pub topics: TopicSettings,
    /// The rates that protect the service from one client (`[limits]`).
    pub limits: LimitSettings,
    /// How chain events find their intent: registered correlations, and optionally a PostgreSQL lookup.
    pub correlation: CorrelationSettings,
    /// A directory whose email templates override and extend the built-in ones.
    pub email_templates: Option<PathBuf>,
    /// The SMTP server emails go through; `None`: the email channel is off.
    pub smtp: Option<SmtpSettings>,
    /// How a failed send is retried (attempts in all, the first included).
    pub email_retry: amqp::RetryPolicy,
    /// The graph database user profiles are mirrored into; `None`: the user-sync worker is off.
    pub sync: Option<SyncSettings>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8004";

impl Settings {
    /// Checks a merged layer into settings.
    pub fn resolve(layer: Layer) -> Result<Self, ConfigError> {
        let (smtp, email_retry) = email::resolve(&layer)?;
        let sync = sync::resolve(&layer)?;
        let listen_text = layer.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_text
            .parse()
            .map_err(|_| invalid("listen", format!("expected an address like 127.0.0.1:8004, got {listen_text:?}")))?;
        let data_dir = layer.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
        let database = match layer.database_url.as_deref() {
            None => DatabaseUrl::Sqlite(data_dir.join("herald.db")),
            Some(url) => parse_database_url(url)?,
        };
        let sqlite_synchronous = match layer.sqlite_synchronous.as_deref().unwrap_or("full") {
            "full" => Synchronous::Full,
            "normal" => Synchronous::Normal,
            other => return Err(invalid("sqlite_synchronous", format!("expected full or normal, got {other:?}"))),
        };
        let refresh_secs = layer.jwt_jwks_refresh_secs.unwrap_or(300);
        if !(10..=86_400).contains(&refresh_secs) {
            return Err(invalid("jwt_jwks_refresh_secs", "must be between 10 and 86400"));
        }
        let jwks = match layer.jwt_jwks_url {
            None => None,
            Some(_) if layer.jwt_secret.is_some() || layer.jwt_public_key.is_some() => {
                return Err(invalid("jwt_jwks_url", "set one of jwt_secret, jwt_public_key and jwt_jwks_url"));
            }
            Some(url) => Some(JwtKey::Jwks { url: jwks_url(&url)?, refresh: Duration::from_secs(refresh_secs) }),
        };
        let jwt_key = match (layer.jwt_secret, layer.jwt_public_key) {
            _ if jwks.is_some() => jwks,
            (Some(_), Some(_)) => {
                return Err(invalid("jwt_secret", "set either jwt_secret or jwt_public_key, not both"));
            }
            (Some(secret), None) if secret.len() < 16 => {
                return Err(invalid("jwt_secret", "must be at least 16 bytes long"));
            }
            (Some(secret), None) => Some(JwtKey::Hs256(Secret::new(secret))),
            (None, Some(pem)) => Some(JwtKey::PublicPem(pem)),
            (None, None) => None,
        };
        let api_keys = layer.api_keys.unwrap_or_default();
        if let Some(short) = api_keys.iter().find(|k| k.len() < 16) {
            return Err(invalid(
                "api_keys",
                format!("each key must be at least 16 bytes long (one has {})", short.len()),
            ));
        }
        let log_format = match layer.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("log_format", format!("expected text or json, got {other:?}"))),
        };
        let ping_ms = layer.ping_interval_ms.unwrap_or(30_000);
        if ping_ms < 10 {
            return Err(invalid("ping_interval_ms", "must be at least 10"));
        }
        let outbox_capacity = layer.outbox_capacity.unwrap_or(1024);
        if outbox_capacity == 0 {
            return Err(invalid("outbox_capacity", "must be at least 1"));
        }
        let max_frame_bytes = layer.max_frame_bytes.unwrap_or(64 * 1024);
        if max_frame_bytes < 128 {
            return Err(invalid("max_frame_bytes", "must be at least 128"));
        }
        let max_body_bytes = layer.max_body_bytes.unwrap_or(1024 * 1024);
        if max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024"));
        }
        let max_connections_per_user = layer.max_connections_per_user.unwrap_or(32);
        if max_connections_per_user == 0 {
            return Err(invalid("max_connections_per_user", "must be at least 1"));
        }
        if layer.max_connections == Some(0) {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        let statsd_addr = match layer.statsd_addr.as_deref() {
            None | Some("") => None,
            Some(text) => Some(text.parse().map_err(|_| {
                invalid("statsd_addr", format!("expected an address like 127.0.0.1:8125, got {text:?}"))
            })?),
        };
        let redis_url = match layer.redis_url {
            None => None,
            Some(url) if url.is_empty() => None,
            Some(url) => Some(parse_redis_url("redis_url", url)?),
        };
        let broker = parse_broker(layer.broker.as_deref())?;
        if broker != BrokerUrl::Memory && !matches!(database, DatabaseUrl::Postgres(_)) {
            return Err(invalid(
                "broker",
                "several nodes need one shared store: set database_url to postgres://… as well (each node's \
                 SQLite file is its own)",
            ));
        }
        let node_id = match layer.node_id {
            None => generated_node_id(),
            Some(id) => cluster_word("node_id", id)?,
        };
        let cluster_name = cluster_word("cluster_name", layer.cluster_name.unwrap_or_else(|| "herald".to_owned()))?;
        let amqp = amqp::resolve(layer.amqp.unwrap_or_default(), smtp.is_some(), sync.is_some())?;
        let topics = topics::resolve(layer.topics.unwrap_or_default())?;
        let limits = limits::resolve(layer.limits.unwrap_or_default())?;
        let correlation =
            correlation::resolve(layer.correlation_database_url, layer.correlation_query, layer.correlation_namespace)?;
        Ok(Settings {
            listen,
            data_dir,
            database,
            sqlite_synchronous,
            sqlite_busy_timeout: Duration::from_millis(layer.sqlite_busy_timeout_ms.unwrap_or(5_000)),
            auth: AuthSettings {
                jwt_key,
                issuer: layer.jwt_issuer,
                audience: layer.jwt_audience,
                api_keys: api_keys.into_iter().map(Secret::new).collect(),
                jwt_generated: false,
            },
            log_format,
            log_filter: layer.log.unwrap_or_else(|| "info".to_owned()),
            ws: WsSettings {
                ping_interval: Duration::from_millis(ping_ms),
                outbox_capacity,
                max_frame_bytes,
                write_buffer_bytes: layer.write_buffer_bytes.unwrap_or(8 * 1024),
                max_connections_per_user,
            },
            max_body_bytes,
            max_connections: layer.max_connections,
            shutdown_timeout: Duration::from_millis(layer.shutdown_timeout_ms.unwrap_or(10_000)),
            database_pool: match layer.database_pool.unwrap_or(16) {
                pool @ 1..=1000 => pool,
                _ => return Err(invalid("database_pool", "expected 1 to 1000 connections")),
            },
            statsd_addr,
            redis_url,
            broker,
            node_id,
            cluster_name,
            amqp,
            topics,
            limits,
            correlation,
            email_templates: layer.email_templates,
            smtp,
            email_retry,
            sync,
        })
    }

    /// Fills in the JWT secret and the publisher key from the data dir where none was configured,
    /// generating them on first start. Returns the files it used, so the caller can say where they are.
    pub fn load_generated_secrets(&mut self) -> std::io::Result<Vec<StoredSecret>> {
        let mut used = Vec::new();
        if self.auth.jwt_key.is_none() || self.auth.api_keys.is_empty() {
            create_private_dir(&self.data_dir)?;
        }
        if self.auth.jwt_key.is_none() {
            let stored = load_or_generate(&self.data_dir, "jwt_secret")?;
            self.auth.jwt_key = Some(JwtKey::Hs256(stored.secret.clone()));
            self.auth.jwt_generated = true;
            used.push(stored);
        }
        if self.auth.api_keys.is_empty() {
            let stored = load_or_generate(&self.data_dir, "api_key")?;
            self.auth.api_keys = vec![stored.secret.clone()];
            used.push(stored);
        }
        Ok(used)
    }
}

/// A JWKS URL: `https://`, or `http://` to a loopback address only (keys fetched in the clear from
/// elsewhere could be replaced on the way).
fn jwks_url(text: &str) -> Result<String, ConfigError> {
    let url = url::Url::parse(text).map_err(|e| invalid("jwt_jwks_url", format!("not a URL: {e}")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(text.to_owned()),
        "http" if loopback => Ok(text.to_owned()),
        "http" => Err(invalid("jwt_jwks_url", "must be https:// (http:// only to a loopback address)")),
        other => Err(invalid("jwt_jwks_url", format!("must be an https:// URL, not {other}:"))),
    }
}

/// Creates the data dir readable by its owner only.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// A TOML error told without the offending value (it may be a secret): the line, the key, and what kind of
/// problem it is. An unknown key's message names only the key, so it is kept.
fn redacted(error: &toml::de::Error, text: &str) -> String {
    let message = error.message();
    let Some(span) = error.span() else { return "not valid TOML".to_owned() };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default();
    let key = line.split('=').next().unwrap_or_default().trim();
    if message.starts_with("unknown field") {
        let known = message.split(", expected").next().unwrap_or(message);
        return format!("line {line_no}: {known}");
    }
    if key.is_empty() || key.starts_with('[') {
        return format!("line {line_no}: not valid TOML");
    }
    format!("line {line_no}: the value of `{key}` is not valid (check its type: see the README's table)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_resolve() {
        let s = Settings::resolve(Layer::default()).unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.ws.ping_interval, Duration::from_secs(30));
        assert!(matches!(s.database, DatabaseUrl::Sqlite(ref p) if p.ends_with("herald.db")));
    }

    #[test]
    fn unknown_variable_is_named() {
        let err = Layer::from_env(env(&[("HERALD_LISTN", "x")])).unwrap_err();
        assert!(err.to_string().contains("HERALD_LISTN"));
    }

    #[test]
    fn bad_number_names_variable() {
        let err = Layer::from_env(env(&[("HERALD_PING_INTERVAL_MS", "soon")])).unwrap_err();
        assert!(err.to_string().contains("HERALD_PING_INTERVAL_MS"), "{err}");
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let file: Layer = toml::from_str("listen = \"127.0.0.1:1\"\nping_interval_ms = 50").unwrap();
        let envl = Layer::from_env(env(&[("HERALD_LISTEN", "127.0.0.1:2")])).unwrap();
        let flags = Layer { listen: Some("127.0.0.1:3".into()), ..Layer::default() };
        let s = Settings::resolve(flags.over(envl.over(file))).unwrap();
        assert_eq!(s.listen.port(), 3);
        assert_eq!(s.ws.ping_interval, Duration::from_millis(50));
    }

    #[test]
    fn file_errors_never_show_values() {
        let path = std::env::temp_dir().join(format!("herald-config-test-{}.toml", std::process::id()));
        std::fs::write(&path, "api_keys = \"publisher-key-0123456789,another-key-0123456789\"\n").unwrap();
        let err = Layer::from_file(&path).expect_err("a string where a list belongs is an error").to_string();
        std::fs::write(&path, "jwt_secert = \"a-very-secret-value-0123\"\n").unwrap();
        let typo = Layer::from_file(&path).expect_err("an unknown key is an error").to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("api_keys") && !err.contains("publisher-key"), "{err}");
        assert!(typo.contains("jwt_secert") && !typo.contains("a-very-secret"), "{typo}");
    }

    #[test]
    fn unknown_file_key_is_named() {
        let err = toml::from_str::<Layer>("listne = \"x\"").unwrap_err();
        assert!(err.to_string().contains("listne"));
    }

    #[test]
    fn the_database_pool_is_bounded() {
        assert_eq!(Settings::resolve(Layer::default()).unwrap().database_pool, 16);
        let eight = Layer::from_env(env(&[("HERALD_DATABASE_POOL", "8")])).unwrap();
        assert_eq!(Settings::resolve(eight).unwrap().database_pool, 8);
        for bad in ["0", "1001"] {
            let layer = Layer::from_env(env(&[("HERALD_DATABASE_POOL", bad)])).unwrap();
            let err = Settings::resolve(layer).unwrap_err().to_string();
            assert!(err.contains("database_pool"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_nats_broker_is_checked_and_never_shown() {
        let resolve = |url: &str| {
            Settings::resolve(Layer {
                broker: Some(url.into()),
                database_url: Some("postgres://127.0.0.1/test".into()),
                ..Layer::default()
            })
        };
        let s = resolve("nats://herald:hunter2-pw@127.0.0.1:4222").unwrap();
        assert_eq!(s.broker, BrokerUrl::Nats(Secret::new("nats://herald:hunter2-pw@127.0.0.1:4222")));
        assert!(!format!("{s:?}").contains("hunter2-pw"));
        assert!(matches!(resolve("nats://127.0.0.1").unwrap().broker, BrokerUrl::Nats(_)));
        let tls = resolve("tls://hunter2-pw@host:4222").unwrap_err().to_string();
        assert!(tls.contains("broker") && tls.contains("TLS") && !tls.contains("hunter2"), "{tls}");
        for bad in ["nats://hunter2-pw@", "kafka://host", "host:4222"] {
            let err = resolve(bad).unwrap_err().to_string();
            assert!(err.contains("broker") && !err.contains("hunter2"), "{bad}: {err}");
        }
    }

    #[test]
    fn redis_url_is_checked_and_never_shown() {
        let resolve = |url: &str| Settings::resolve(Layer { redis_url: Some(url.into()), ..Layer::default() });
        let s = resolve("redis://:hunter2-pw@127.0.0.1:6379/1").unwrap();
        assert_eq!(s.redis_url.as_ref().map(Secret::expose), Some("redis://:hunter2-pw@127.0.0.1:6379/1"));
        assert!(!format!("{s:?}").contains("hunter2-pw"));
        assert!(resolve("").unwrap().redis_url.is_none());
        let tls = resolve("rediss://:hunter2-pw@host").unwrap_err().to_string();
        assert!(tls.contains("HERALD_REDIS_URL") && tls.contains("TLS") && !tls.contains("hunter2"), "{tls}");
        for bad in ["http://host", "127.0.0.1:6379", "redis://:hunter2-pw@host/x"] {
            let err = resolve(bad).unwrap_err().to_string();
            assert!(err.contains("redis_url") && !err.contains("hunter2"), "{bad}: {err}");
        }
        let env = Layer::from_env(env(&[("HERALD_REDIS_URL", "redis://127.0.0.1")])).unwrap();
        assert_eq!(env.redis_url.as_deref(), Some("redis://127.0.0.1"));
    }

    #[test]
    fn settings_debug_hides_secrets() {
        let layer = Layer {
            jwt_secret: Some("a-very-secret-value".into()),
            api_keys: Some(vec!["publisher-key-0123456789".into()]),
            ..Layer::default()
        };
        let s = Settings::resolve(layer).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("a-very-secret-value") && !shown.contains("publisher-key-0123456789"));
    }
}
