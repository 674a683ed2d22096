//! Logs and metrics: the `tracing` subscriber, the Prometheus recorder, and the hot-path metric handles.

mod nest;

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Handles for the metrics touched per message or per connection, resolved once instead of per call.
pub struct Metrics {
    pub connections_open: Gauge,
    pub users_connected: Gauge,
    pub notifications_created: Counter,
    pub frames_sent: Counter,
    pub publish_to_push: Histogram,
    pub slow_consumer_closes: Counter,
    pub connections_refused: Counter,
    pub redis_mirror_writes: Counter,
    pub redis_mirror_errors: Counter,
    pub redis_mirror_dropped: Counter,
    pub redis_mirror_pending: Gauge,
    pub topic_deliveries: Counter,
    pub resyncs: Counter,
    pub cluster_published: Counter,
    pub cluster_received: Counter,
    pub cluster_publish_dropped: Counter,
    pub cluster_subscriptions: Gauge,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The metric handles; they record into the installed recorder, or nowhere if none is installed (unit tests).
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics {
        connections_open: metrics::gauge!("herald_connections_open"),
        users_connected: metrics::gauge!("herald_users_connected"),
        notifications_created: metrics::counter!("herald_notifications_created_total"),
        frames_sent: metrics::counter!("herald_frames_sent_total"),
        publish_to_push: metrics::histogram!("herald_publish_to_push_seconds"),
        slow_consumer_closes: metrics::counter!("herald_slow_consumer_closes_total"),
        connections_refused: metrics::counter!("herald_connections_refused_total"),
        redis_mirror_writes: metrics::counter!("herald_redis_mirror_writes_total"),
        redis_mirror_errors: metrics::counter!("herald_redis_mirror_errors_total"),
        redis_mirror_dropped: metrics::counter!("herald_redis_mirror_dropped_total"),
        redis_mirror_pending: metrics::gauge!("herald_redis_mirror_pending"),
        topic_deliveries: metrics::counter!("herald_topic_deliveries_total"),
        resyncs: metrics::counter!("herald_resyncs_total"),
        cluster_published: metrics::counter!("herald_cluster_messages_published_total"),
        cluster_received: metrics::counter!("herald_cluster_messages_received_total"),
        cluster_publish_dropped: metrics::counter!("herald_cluster_messages_dropped_total"),
        cluster_subscriptions: metrics::gauge!("herald_cluster_subscriptions"),
    })
}

/// Installs the global recorder: Prometheus (served at `/metrics`), and with `statsd` the same metrics sent
/// as DogStatsD over UDP too (the `metrics` ecosystem's exporter, behind a fanout; under the NestJS
/// services' names where they had one, see `nest`). Call once, before any
/// metric is touched.
pub fn install_metrics(statsd: Option<std::net::SocketAddr>) -> anyhow::Result<PrometheusHandle> {
    let latency = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("herald_publish_to_push_seconds".into()), &latency)?
        .set_buckets_for_metric(Matcher::Full("herald_store_commit_seconds".into()), &latency)?
        .set_buckets_for_metric(
            Matcher::Full("herald_store_group_size".into()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        )?
        .set_buckets_for_metric(Matcher::Full("herald_amqp_processing_seconds".into()), &latency)?
        .build_recorder();
    let handle = prometheus.handle();
    match statsd {
        None => metrics::set_global_recorder(prometheus)?,
        Some(addr) => {
            // Histograms go as DogStatsD distributions, as Datadog expects for latencies.
            let dogstatsd = metrics_exporter_dogstatsd::DogStatsDBuilder::default()
                .with_remote_address(addr.to_string())?
                .send_histograms_as_distributions(true)
                .build()?;
            // DogStatsD gets the NestJS services' names where they had one (`nest`), Prometheus Herald's.
            let fanout = metrics_util::layers::FanoutBuilder::default()
                .add_recorder(prometheus)
                .add_recorder(nest::NestNames(dogstatsd))
                .build();
            metrics::set_global_recorder(fanout)
                .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
            tracing::info!(%addr, "sending metrics as DogStatsD too");
        }
    }
    describe();
    Ok(handle)
}

/// Drains histogram samples into their buckets now and then, so memory stays flat between scrapes.
pub async fn run_upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("herald_connections_open", "Open live connections on this node.");
    describe_gauge!("herald_users_connected", "Users with at least one live connection on this node.");
    describe_counter!("herald_notifications_created_total", "Notifications stored (not counting idempotent repeats).");
    describe_counter!("herald_frames_sent_total", "Frames written to live connections.");
    describe_histogram!(
        "herald_publish_to_push_seconds",
        Unit::Seconds,
        "From a publish request's arrival to its frame being written to a connection."
    );
    describe_counter!(
        "herald_slow_consumer_closes_total",
        "Connections closed because their outbound queue overflowed."
    );
    describe_counter!("herald_connections_refused_total", "Connections refused at capacity.");
    describe_counter!("herald_errors_total", "Errors answered to clients, by code.");
    describe_histogram!("herald_store_commit_seconds", Unit::Seconds, "Time to run and commit one write group.");
    describe_histogram!("herald_store_group_size", "Commands committed together in one transaction.");
    describe_counter!(
        "herald_store_write_fallbacks_total",
        "PostgreSQL write groups of creates that left the one-statement path for the general one (a user's \
         newest id was above the group's first, or an idempotency key was taken)."
    );
    describe_counter!(
        "herald_amqp_messages_total",
        "AMQP messages by queue and outcome: consumed, acked, retried (sent to a delay queue), dead_lettered."
    );
    describe_histogram!(
        "herald_amqp_processing_seconds",
        Unit::Seconds,
        "From a message's arrival to its ack (committed, or moved to a delay or dead-letter queue)."
    );
    describe_counter!(
        "herald_chain_events_total",
        "Chain events by outcome: matched (appended to the intent's topic), duplicate (the topic was there \
         already), retried (no intent found yet), not_found_dead_lettered (no intent found after the last \
         attempt), error (the store or the lookup failed; retried), poison (dead-lettered at once)."
    );
    describe_counter!("herald_redis_mirror_writes_total", "Topic statuses written to Redis (one per SET).");
    describe_counter!(
        "herald_redis_mirror_errors_total",
        "Failed round trips to Redis (connects, writes, pings); each is retried after a backoff."
    );
    describe_counter!(
        "herald_redis_mirror_dropped_total",
        "Topic statuses not mirrored because the queue for Redis was full."
    );
    describe_gauge!("herald_redis_mirror_pending", "Topic statuses waiting to be written to Redis.");
    describe_counter!(
        "herald_resyncs_total",
        "Connections told to resync (4009: reconnect with since) because this node may have missed events."
    );
    describe_counter!("herald_cluster_messages_published_total", "Events this node published to the cluster broker.");
    describe_counter!(
        "herald_cluster_messages_received_total",
        "Events this node received from other nodes through the cluster broker."
    );
    describe_counter!(
        "herald_cluster_messages_dropped_total",
        "Events not published to the cluster broker because it was away and the queue for it was full."
    );
    describe_gauge!(
        "herald_cluster_subscriptions",
        "Users this node is subscribed to on the cluster broker (those with connections here)."
    );
    describe_gauge!("herald_cluster_broker_up", "1 while this node's connection to the cluster broker is up.");
    describe_gauge!("herald_amqp_consumer_state", "1 for each consumer's current state (connecting, consuming, down).");
}

/// Installs the `tracing` subscriber on stderr: text by default, JSON lines on request.
pub fn init_tracing(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    // The NATS client logs each of its events at info (a slow consumer reports every message it drops); the
    // cluster logs what matters of them itself.
    let filter = if filter.contains("async_nats") { filter.to_owned() } else { format!("{filter},async_nats=warn") };
    let filter = EnvFilter::try_new(&filter).map_err(|e| anyhow::anyhow!("log ({filter:?}): {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
