//! The `[amqp]` section: the broker URL and the consumers, each with its queue topology, retry policy and
//! the shape of the messages it reads.
//!
//! With only a URL configured (`HERALD_AMQP_URL`), [`default_consumers`] gives the three notification shapes
//! of the systems Herald replaces and the minting system's chain events; any `[[amqp.consumers]]` entry
//! replaces those defaults entirely.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Secret};
use crate::topics::correlation::{check_kind, DEFAULT_KIND};
use crate::topics::event::WORD_MAX;

/// The `[amqp]` table as written in the TOML file.
#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpLayer {
    pub url: Option<String>,
    pub consumers: Option<Vec<ConsumerLayer>>,
}

/// One `[[amqp.consumers]]` entry as written. Only `queue` is required.
#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerLayer {
    pub queue: String,
    /// An exchange to declare and bind the queue to; none (or "") means the default exchange.
    pub exchange: Option<String>,
    /// `topic` (default), `direct`, `fanout` or `headers`.
    pub exchange_type: Option<String>,
    pub binding_keys: Option<Vec<String>>,
    pub consumer_tag: Option<String>,
    pub prefetch: Option<u16>,
    /// When true, `/health` is 503 while this consumer is not consuming.
    pub required: Option<bool>,
    /// `plain` (default), `nestjs`, `typed` (notifications) or `chain` (chain events matched to intents).
    pub shape: Option<String>,
    /// nestjs: the `pattern` to accept (default `create_notification`).
    pub pattern: Option<String>,
    /// typed: the field that names the message's type (default `type`).
    pub type_field: Option<String>,
    /// typed: message type → the field that holds the target user id.
    pub targets: Option<BTreeMap<String, String>>,
    /// typed: optional fields to use as the notification's title and message.
    pub title_field: Option<String>,
    pub message_field: Option<String>,
    /// A field (a dotted path) whose value is the idempotency key when the message has no
    /// `idempotency_key` and no AMQP `message_id`.
    pub idempotency_field: Option<String>,
    /// chain: the fields (dotted paths) of the event's chain id, transaction hash, contract and token ids.
    pub chain_id_field: Option<String>,
    pub tx_hash_field: Option<String>,
    pub contract_field: Option<String>,
    pub token_ids_field: Option<String>,
    /// chain: the field naming the correlation kind; without it every event has the kind `kind`.
    pub kind_field: Option<String>,
    /// chain: the kind of events without a `kind_field` (default `mint`).
    pub kind: Option<String>,
    /// chain: the status appended to the intent's topic (default `ready`).
    pub status: Option<String>,
    pub retry: Option<RetryLayer>,
}

#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryLayer {
    /// Attempts in all, the first delivery included (default 5).
    pub attempts: Option<u32>,
    pub initial_delay_ms: Option<u64>,
    pub multiplier: Option<f64>,
    pub max_delay_ms: Option<u64>,
    /// 0..=1: each delay is shortened by up to this fraction, at random (default 0.2).
    pub jitter: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Topic,
    Direct,
    Fanout,
    Headers,
}

impl ExchangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Topic => "topic",
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Headers => "headers",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSpec {
    pub name: String,
    pub kind: ExchangeKind,
    pub binding_keys: Vec<String>,
}

/// How transiently failed messages are retried: attempt `n` (1-based) that fails waits
/// `initial × multiplier^(n-1)`, capped, shortened by up to `jitter` at random.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub initial_delay: Duration,
    pub multiplier: f64,
    pub max_delay: Duration,
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

/// What a consumer's messages are: a notification in one of three shapes, or a chain event.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// A body exactly like `POST /api/v1/notifications`.
    Plain,
    /// A NestJS microservice message: `{"pattern": …, "data": {"user_id","type","title","message",…}}`.
    NestJs { pattern: String },
    /// A JSON object tagged by a type field; the target user's field depends on the type, and the whole
    /// message is the notification's data.
    Typed {
        type_field: String,
        targets: BTreeMap<String, String>,
        title_field: Option<String>,
        message_field: Option<String>,
    },
    /// A domain event about a transaction on a chain, matched to the intent that sent it (see
    /// `ingest::amqp::chain`).
    Chain(ChainFields),
    /// An email request for the email channel: `{"type","data","to"?,"idempotency_key"?}`, or the NestJS
    /// form `{"pattern": "email_request", "data": {"type","data"}}` (see `ingest::amqp::emails`).
    Email { pattern: String },
    /// A user profile change for the user-sync worker: NestJS `{"pattern": "create_user_request" |
    /// "update_user_request", "data": {…user}}` (see `ingest::amqp::sync`).
    UserSync,
}

/// Where a chain event's parts are, and what it does to the intent's topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFields {
    pub chain_id: String,
    pub tx_hash: String,
    pub contract: String,
    pub token_ids: String,
    /// The field naming the kind, if events carry one; else every event has `kind`.
    pub kind_field: Option<String>,
    pub kind: String,
    /// The status appended: `ready`, by default.
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub queue: String,
    pub exchange: Option<ExchangeSpec>,
    pub consumer_tag: String,
    pub prefetch: u16,
    pub required: bool,
    pub shape: Shape,
    pub idempotency_field: Option<String>,
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// The broker URL; it may hold a password, so it is a secret (see [`redact_url`]).
    pub url: Secret,
    pub consumers: Vec<ConsumerSettings>,
}

pub const DEFAULT_PREFETCH: u16 = 500;
/// AMQP short strings (queue names, tags) are at most 255 bytes; Herald appends suffixes such as
/// `.delay.60000`, so it keeps names shorter than that.
const MAX_QUEUE_NAME: usize = 200;

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    super::invalid(key, message)
}

/// The consumers that run when only the URL is configured: the three notification shapes, the minting
/// system's chain events, and with the email channel on, the durable `email_queue`. The README lists them.
pub fn default_consumers(email_enabled: bool, sync_enabled: bool) -> Vec<ConsumerLayer> {
    let targets = [
        ("RefundStatusChanged", "user_id"),
        ("refund_status_changed", "user_id"),
        ("NewRefundRequest", "event_owner_id"),
        ("new_refund_request", "event_owner_id"),
    ]
    .into_iter()
    .map(|(t, f)| (t.to_owned(), f.to_owned()))
    .collect();
    let mut defaults = vec![
        ConsumerLayer {
            queue: "ws.broadcast.queue".into(),
            exchange: Some("herald.events".into()),
            exchange_type: Some("topic".into()),
            binding_keys: Some(vec!["ws.broadcast".into()]),
            consumer_tag: Some("notification_ws_broker".into()),
            shape: Some("typed".into()),
            targets: Some(targets),
            ..ConsumerLayer::default()
        },
        ConsumerLayer { queue: "notification_queue".into(), shape: Some("nestjs".into()), ..ConsumerLayer::default() },
        ConsumerLayer { queue: "herald.notifications".into(), shape: Some("plain".into()), ..ConsumerLayer::default() },
        ConsumerLayer {
            queue: "herald.mints".into(),
            exchange: Some("mints.domain".into()),
            exchange_type: Some("topic".into()),
            binding_keys: Some(vec!["upserted.*".into()]),
            shape: Some("chain".into()),
            ..ConsumerLayer::default()
        },
    ];
    if email_enabled {
        defaults.push(ConsumerLayer {
            queue: "email_queue".into(),
            shape: Some("email".into()),
            ..ConsumerLayer::default()
        });
    }
    if sync_enabled {
        defaults.push(ConsumerLayer {
            queue: "neo4j_sync_queue".into(),
            shape: Some("user_sync".into()),
            ..ConsumerLayer::default()
        });
    }
    defaults
}

/// Checks the `[amqp]` layer; `None` when no URL is configured (then no consumer runs, and configured
/// consumers without a URL are an error). `email_enabled`: an SMTP server is configured, so the defaults
/// include `email_queue` and an `email` consumer may be configured.
pub fn resolve(layer: AmqpLayer, email_enabled: bool, sync_enabled: bool) -> Result<Option<AmqpSettings>, ConfigError> {
    let Some(url) = layer.url.filter(|u| !u.trim().is_empty()) else {
        if layer.consumers.is_some_and(|c| !c.is_empty()) {
            return Err(invalid("amqp.url", "[[amqp.consumers]] are configured but no broker URL is"));
        }
        return Ok(None);
    };
    if url.starts_with("amqps://") {
        // lapin is built without a TLS backend (see Cargo.toml); refusing here beats failing every connect.
        return Err(invalid("amqp.url", "amqps:// is not supported by this build: use amqp://, or TLS in front"));
    }
    if !url.starts_with("amqp://") {
        return Err(invalid("amqp.url", "expected an amqp:// URL"));
    }
    // The parser's message may quote the URL (and so the password): name the problem without it.
    if url.parse::<lapin::uri::AMQPUri>().is_err() {
        return Err(invalid("amqp.url", "not a valid AMQP URL (amqp://user:password@host:port/vhost)"));
    }
    let layers =
        layer.consumers.filter(|c| !c.is_empty()).unwrap_or_else(|| default_consumers(email_enabled, sync_enabled));
    let mut consumers = Vec::with_capacity(layers.len());
    for consumer in layers {
        let resolved = resolve_consumer(consumer, email_enabled, sync_enabled)?;
        if consumers.iter().any(|c: &ConsumerSettings| c.queue == resolved.queue) {
            return Err(invalid("amqp.consumers", format!("queue {:?} is consumed twice", resolved.queue)));
        }
        consumers.push(resolved);
    }
    Ok(Some(AmqpSettings { url: Secret::new(url), consumers }))
}

fn resolve_consumer(
    layer: ConsumerLayer,
    email_enabled: bool,
    sync_enabled: bool,
) -> Result<ConsumerSettings, ConfigError> {
    let queue = layer.queue;
    let key = "amqp.consumers";
    let named = |message: String| invalid(key, format!("queue {queue:?}: {message}"));
    if queue.is_empty() || queue.len() > MAX_QUEUE_NAME || queue.starts_with("amq.") {
        return Err(named(format!("a queue name must be 1..={MAX_QUEUE_NAME} bytes and not start with amq.")));
    }
    let exchange = match layer.exchange.filter(|e| !e.is_empty()) {
        None => {
            if layer.binding_keys.as_ref().is_some_and(|k| !k.is_empty()) {
                return Err(named("binding_keys need an exchange (the default exchange takes no bindings)".into()));
            }
            None
        }
        Some(name) => {
            let kind = match layer.exchange_type.as_deref().unwrap_or("topic") {
                "topic" => ExchangeKind::Topic,
                "direct" => ExchangeKind::Direct,
                "fanout" => ExchangeKind::Fanout,
                "headers" => ExchangeKind::Headers,
                other => return Err(named(format!("exchange_type {other:?} is not topic, direct, fanout or headers"))),
            };
            if name.starts_with("amq.") || name.len() > 255 {
                return Err(named(format!("exchange {name:?} must not start with amq. and be at most 255 bytes")));
            }
            let binding_keys = layer.binding_keys.unwrap_or_else(|| vec![queue.clone()]);
            Some(ExchangeSpec { name, kind, binding_keys })
        }
    };
    let consumer_tag = layer.consumer_tag.unwrap_or_else(|| format!("herald:{queue}"));
    if consumer_tag.len() > 255 {
        return Err(named("consumer_tag must be at most 255 bytes".into()));
    }
    if let Some(key) = exchange.iter().flat_map(|e| &e.binding_keys).find(|k| k.len() > 255) {
        return Err(named(format!("binding key {:?}… is over 255 bytes", &key[..16])));
    }
    let prefetch = layer.prefetch.unwrap_or(DEFAULT_PREFETCH);
    if prefetch == 0 {
        return Err(named("prefetch must be at least 1".into()));
    }
    let shape = match layer.shape.as_deref().unwrap_or("plain") {
        "plain" => Shape::Plain,
        "nestjs" => Shape::NestJs { pattern: layer.pattern.unwrap_or_else(|| "create_notification".into()) },
        "typed" => {
            let targets = layer.targets.unwrap_or_default();
            if targets.is_empty() {
                return Err(named("a typed consumer needs [amqp.consumers.targets]: type = \"user field\"".into()));
            }
            Shape::Typed {
                type_field: layer.type_field.unwrap_or_else(|| "type".into()),
                targets,
                title_field: layer.title_field,
                message_field: layer.message_field,
            }
        }
        "chain" => {
            let fields = ChainFields {
                chain_id: layer.chain_id_field.unwrap_or_else(|| "chain_id".into()),
                tx_hash: layer.tx_hash_field.unwrap_or_else(|| "tx_hash".into()),
                contract: layer.contract_field.unwrap_or_else(|| "contract".into()),
                token_ids: layer.token_ids_field.unwrap_or_else(|| "tokenIds".into()),
                kind_field: layer.kind_field.filter(|f| !f.is_empty()),
                kind: layer.kind.unwrap_or_else(|| DEFAULT_KIND.into()),
                status: layer.status.unwrap_or_else(|| "ready".into()),
            };
            check_chain(&fields).map_err(named)?;
            Shape::Chain(fields)
        }
        "email" if !email_enabled => {
            return Err(named("an email consumer needs the email channel: set smtp_host (HERALD_SMTP_HOST)".into()))
        }
        "email" => Shape::Email { pattern: layer.pattern.unwrap_or_else(|| "email_request".into()) },
        "user_sync" if !sync_enabled => {
            return Err(named("a user_sync consumer needs the graph database: set graph_url (HERALD_GRAPH_URL)".into()))
        }
        "user_sync" => Shape::UserSync,
        other => return Err(named(format!("shape {other:?} is not plain, nestjs, typed, chain, email or user_sync"))),
    };
    let retry = resolve_retry(layer.retry.unwrap_or_default()).map_err(named)?;
    Ok(ConsumerSettings {
        consumer_tag,
        queue,
        exchange,
        prefetch,
        required: layer.required.unwrap_or(false),
        shape,
        idempotency_field: layer.idempotency_field,
        retry,
    })
}

fn check_chain(fields: &ChainFields) -> Result<(), String> {
    let paths = [
        ("chain_id_field", Some(&fields.chain_id)),
        ("tx_hash_field", Some(&fields.tx_hash)),
        ("contract_field", Some(&fields.contract)),
        ("token_ids_field", Some(&fields.token_ids)),
        ("kind_field", fields.kind_field.as_ref()),
    ];
    for (name, path) in paths {
        if path.is_some_and(|p| p.is_empty() || p.split('.').any(str::is_empty)) {
            return Err(format!("{name} must be a field name or a dotted path (a.b), not {path:?}"));
        }
    }
    check_kind(&fields.kind).map_err(|e| format!("kind {:?} {}", fields.kind, e.reason))?;
    let word = |s: &str| {
        !s.is_empty() && s.len() <= WORD_MAX && s.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
    };
    if !word(&fields.status) {
        return Err(format!("status {:?} must be 1..={WORD_MAX} letters, digits or . _ : -", fields.status));
    }
    Ok(())
}

fn resolve_retry(layer: RetryLayer) -> Result<RetryPolicy, String> {
    let default = RetryPolicy::default();
    let policy = RetryPolicy {
        attempts: layer.attempts.unwrap_or(default.attempts),
        initial_delay: layer.initial_delay_ms.map_or(default.initial_delay, Duration::from_millis),
        multiplier: layer.multiplier.unwrap_or(default.multiplier),
        max_delay: layer.max_delay_ms.map_or(default.max_delay, Duration::from_millis),
        jitter: layer.jitter.unwrap_or(default.jitter),
    };
    if !(1..=50).contains(&policy.attempts) {
        return Err("retry.attempts must be 1..=50".into());
    }
    if policy.initial_delay < Duration::from_millis(10) || policy.max_delay < policy.initial_delay {
        return Err("retry.initial_delay_ms must be at least 10 and at most retry.max_delay_ms".into());
    }
    if policy.max_delay > Duration::from_secs(7 * 24 * 3600) {
        return Err("retry.max_delay_ms must be at most a week".into());
    }
    if !(1.0..=10.0).contains(&policy.multiplier) {
        return Err("retry.multiplier must be 1..=10".into());
    }
    if !(0.0..=1.0).contains(&policy.jitter) {
        return Err("retry.jitter must be 0..=1".into());
    }
    Ok(policy)
}

/// The URL without its password, for logs and `/health`. The authority ends at the first `/`, `?` or `#`,
/// and the userinfo at its last `@` (a password may hold a raw `@`), as URL parsers read it.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "[unparsable URL]".into() };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// The URL with all of its user part hidden, for URLs whose user part alone can be a secret (a NATS token).
pub fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "[unparsable URL]".into() };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{path}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_userinfo_hides_a_token_too() {
        assert_eq!(redact_userinfo("nats://s3cret@10.0.0.1:4222"), "nats://***@10.0.0.1:4222");
        assert_eq!(redact_userinfo("nats://u:p@h"), "nats://***@h");
        assert_eq!(redact_userinfo("nats://h:4222"), "nats://h:4222");
    }

    fn url() -> Option<String> {
        Some("amqp://guest:guest@127.0.0.1:5672/%2f".into())
    }

    #[test]
    fn a_url_alone_gives_the_four_defaults() {
        let s = resolve(AmqpLayer { url: url(), consumers: None }, false, false).unwrap().unwrap();
        let queues: Vec<_> = s.consumers.iter().map(|c| c.queue.as_str()).collect();
        assert_eq!(queues, ["ws.broadcast.queue", "notification_queue", "herald.notifications", "herald.mints"]);
        let mints = &s.consumers[3];
        let exchange = mints.exchange.as_ref().unwrap();
        assert_eq!((exchange.name.as_str(), exchange.kind), ("mints.domain", ExchangeKind::Topic));
        assert_eq!(exchange.binding_keys, ["upserted.*"]);
        assert!(!mints.required);
        let Shape::Chain(fields) = &mints.shape else { panic!("{:?}", mints.shape) };
        assert_eq!(
            (fields.chain_id.as_str(), fields.tx_hash.as_str(), fields.contract.as_str(), fields.token_ids.as_str()),
            ("chain_id", "tx_hash", "contract", "tokenIds")
        );
        assert_eq!(
            (fields.kind_field.as_deref(), fields.kind.as_str(), fields.status.as_str()),
            (None, "mint", "ready")
        );
        let refunds = &s.consumers[0];
        assert_eq!(refunds.consumer_tag, "notification_ws_broker");
        let exchange = refunds.exchange.as_ref().unwrap();
        assert_eq!((exchange.name.as_str(), exchange.kind), ("herald.events", ExchangeKind::Topic));
        assert_eq!(exchange.binding_keys, ["ws.broadcast"]);
        assert!(
            matches!(&refunds.shape, Shape::Typed { targets, .. } if targets["NewRefundRequest"] == "event_owner_id")
        );
        assert!(matches!(&s.consumers[1].shape, Shape::NestJs { pattern } if pattern == "create_notification"));
        assert_eq!(s.consumers[2].retry, RetryPolicy::default());
    }

    #[test]
    fn no_url_means_no_consumers() {
        assert!(resolve(AmqpLayer::default(), false, false).unwrap().is_none());
        let orphan =
            AmqpLayer { url: None, consumers: Some(vec![ConsumerLayer { queue: "q".into(), ..Default::default() }]) };
        assert!(resolve(orphan, false, false).unwrap_err().to_string().contains("no broker URL"));
    }

    #[test]
    fn bad_consumers_are_named() {
        let bad = |c: ConsumerLayer| {
            resolve(AmqpLayer { url: url(), consumers: Some(vec![c]) }, false, false).unwrap_err().to_string()
        };
        let err = bad(ConsumerLayer { queue: "q1".into(), shape: Some("typed".into()), ..Default::default() });
        assert!(err.contains("q1") && err.contains("targets"), "{err}");
        let err = bad(ConsumerLayer { queue: "q2".into(), binding_keys: Some(vec!["k".into()]), ..Default::default() });
        assert!(err.contains("q2") && err.contains("exchange"), "{err}");
        let retry = RetryLayer { attempts: Some(0), ..Default::default() };
        let err = bad(ConsumerLayer { queue: "q3".into(), retry: Some(retry), ..Default::default() });
        assert!(err.contains("attempts"), "{err}");
        for url in ["http://x", "amqps://h/v", "amqp://h:notaport/v"] {
            let err =
                resolve(AmqpLayer { url: Some(url.into()), consumers: None }, false, false).unwrap_err().to_string();
            assert!(err.contains("HERALD_AMQP_URL"), "{url}: {err}");
        }
        let err = bad(ConsumerLayer { queue: "q4".into(), consumer_tag: Some("t".repeat(300)), ..Default::default() });
        assert!(err.contains("consumer_tag"), "{err}");
        let chain = |c: ConsumerLayer| bad(ConsumerLayer { queue: "q5".into(), shape: Some("chain".into()), ..c });
        let err = chain(ConsumerLayer { tx_hash_field: Some("tx..hash".into()), ..Default::default() });
        assert!(err.contains("tx_hash_field"), "{err}");
        let err = chain(ConsumerLayer { kind: Some("a kind".into()), ..Default::default() });
        assert!(err.contains("kind"), "{err}");
        let err = chain(ConsumerLayer { status: Some("".into()), ..Default::default() });
        assert!(err.contains("status"), "{err}");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("amqp://guest:secret@host:5672/v"), "amqp://guest:***@host:5672/v");
        assert_eq!(redact_url("amqp://host/v"), "amqp://host/v");
        assert_eq!(redact_url("amqp://svc:p@ss@host/v@x"), "amqp://svc:***@host/v@x");
    }
}
