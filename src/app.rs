//! Wiring: builds every part from settings, serves, and stops in a written order.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::broker::{self, Broker};
use crate::config::{BrokerUrl, DatabaseUrl, Settings};
use crate::correlation::Finder;
use crate::error::CloseReason;
use crate::hub::{Capacity, Hub};
use crate::ingest::amqp::{Consumers, Sinks};
use crate::mirror::RedisMirror;
use crate::state::{AppState, Shared};
use crate::store::postgres::{PgTopics, Postgres};
use crate::store::sqlite::{Options, Sqlite, SqliteTopics};
use crate::store::topics::TopicStore;
use crate::store::Store;

/// Committed event groups waiting for the fanout; when full, the store's writer waits (backpressure).
const FEED_CAPACITY: usize = 1024;

/// Backlogs read and sent at once; see `Shared::backlogs`. 64 × 2 × 1 MiB bounds them to 128 MiB.
const BACKLOGS_AT_ONCE: usize = 64;

/// The most a stop waits for the Redis mirror to write what is pending (less if `shutdown_timeout` is
/// less): the copy is auxiliary, and a Redis that is down must not hold the exit up for long.
const MIRROR_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// The accept queue: a burst of thousands of reconnecting clients must not overflow it (tokio's default is
/// 1024, and a dropped SYN costs a client a one-second retransmit). The kernel caps it at somaxconn.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// The inbox's and the topics' fanout pumps.
    pumps: [tokio::task::JoinHandle<()>; 2],
    /// Open sockets (HTTP and live alike) the descriptor budget allows; see `transport::door`.
    sockets: Arc<Capacity>,
    settings: Settings,
}

impl Application {
    /// Opens the store, starts the fanout and binds the listener. `prometheus` is the installed recorder's
    /// handle, if this process has one.
    pub async fn build(settings: Settings, prometheus: Option<PrometheusHandle>) -> anyhow::Result<Self> {
        let (budget, descriptors) = Capacity::from_descriptor_limit();
        let max_connections = settings.max_connections.unwrap_or(budget);
        tracing::info!(open_files_limit = descriptors, sockets = budget, max_connections, "connection capacity");

        let clustered = settings.broker != BrokerUrl::Memory;
        let hub = Arc::new(Hub::new(max_connections, clustered));
        let (feed, feed_rx) = mpsc::channel(FEED_CAPACITY);
        let store: Arc<dyn Store> = match &settings.database {
            DatabaseUrl::Sqlite(path) => Arc::new(
                Sqlite::open_with(
                    path,
                    Options { busy_timeout: settings.sqlite_busy_timeout, ..Options::new(settings.sqlite_synchronous) },
                    feed,
                )
                .with_context(|| format!("opening the SQLite store at {}", path.display()))?,
            ),
            DatabaseUrl::Postgres(url) => Arc::new(
                Postgres::open_with(url.expose(), settings.database_pool, feed)
                    .await
                    .context("opening the PostgreSQL store")?,
            ),
        };
        let namespaces = Arc::new(settings.topics.namespaces.clone());
        // Connects in the background: an unreachable Redis does not fail the start.
        let mirror = match &settings.redis_url {
            Some(url) => {
                tracing::info!(
                    url = crate::config::amqp::redact_url(url.expose()),
                    "mirroring topic statuses to Redis"
                );
                Some(Arc::new(RedisMirror::start(url).context("starting the Redis mirror")?))
            }
            None => None,
        };
        let (topic_feed, topic_feed_rx) = mpsc::channel(FEED_CAPACITY);
        // Topics live where the inbox does: beside it in SQLite, or in the same PostgreSQL database.
        let topics: Arc<dyn TopicStore> = match &settings.database {
            DatabaseUrl::Sqlite(path) => {
                let topics_path = crate::store::sqlite::topics_path(path);
                Arc::new(
                    SqliteTopics::open(
                        &topics_path,
                        settings.sqlite_synchronous,
                        settings.sqlite_busy_timeout,
                        namespaces.clone(),
                        topic_feed,
                    )
                    .with_context(|| format!("opening the SQLite topic store at {}", topics_path.display()))?,
                )
            }
            DatabaseUrl::Postgres(url) => Arc::new(
                PgTopics::open(url.expose(), namespaces.clone(), topic_feed)
                    .await
                    .context("opening the PostgreSQL topic store")?,
            ),
        };
        let broker: Arc<dyn Broker> = match &settings.broker {
            BrokerUrl::Memory => Arc::new(broker::Memory::new(hub.clone(), settings.node_id.clone())),
            url => {
                tracing::info!(
                    url = url.redacted(),
                    node = settings.node_id,
                    cluster = settings.cluster_name,
                    "joining the cluster"
                );
                broker::Cluster::join(
                    url,
                    &settings.cluster_name,
                    settings.node_id.clone(),
                    hub.clone(),
                    store.clone(),
                    topics.clone(),
                )
                .await
                .context("starting the cluster broker")?
            }
        };
        let pump = tokio::spawn(broker::pump(feed_rx, broker.clone()));
        let topic_pump =
            tokio::spawn(broker::topic_pump(topic_feed_rx, broker.clone(), mirror.clone(), namespaces.clone()));

        let (outbox, directory) = open_outbox(&settings).await?;
        let sync = match &settings.sync {
            None => None,
            Some(sync) => Some(Arc::new(start_sync(sync, directory.clone())?)),
        };
        let email = match &settings.smtp {
            None => None,
            Some(smtp) => Some(Arc::new(start_email(&settings, smtp, outbox, directory.clone())?)),
        };
        let auth = Authenticator::new(&settings.auth).context("setting up token verification")?;
        let stopping = CancellationToken::new();
        if let Some(jwks) = auth.jwks() {
            tracing::info!(url = crate::config::amqp::redact_url(jwks.url()), "verifying user tokens with a JWKS");
            jwks.start(stopping.clone());
        }
        let listener = bind(settings.listen).with_context(|| format!("binding {}", settings.listen))?;
        // After the bind: a start that fails must not have consumed (and acked) anything.
        let amqp = match settings.amqp.as_ref() {
            None => {
                if settings.correlation.lookup.is_some() {
                    tracing::warn!(
                        "correlation_database_url is set, but no AMQP broker is: nothing reads chain events"
                    );
                }
                None
            }
            Some(amqp) => {
                tracing::info!(
                    url = crate::config::amqp::redact_url(amqp.url.expose()),
                    queues = ?amqp.consumers.iter().map(|c| c.queue.as_str()).collect::<Vec<_>>(),
                    "starting AMQP consumers"
                );
                // The lookup's pool connects lazily: PostgreSQL being down does not fail the start.
                let finder =
                    Finder::new(topics.clone(), &settings.correlation).context("setting up the correlation lookup")?;
                let sinks = Sinks {
                    store: store.clone(),
                    topics: topics.clone(),
                    namespaces: namespaces.clone(),
                    finder: Arc::new(finder),
                    email: email.clone(),
                    sync: sync.clone(),
                };
                Some(Arc::new(Consumers::start(amqp, &sinks)))
            }
        };
        let state = AppState::new(Shared {
            store,
            topics,
            topic_settings: Arc::new(settings.topics.clone()),
            graphql: crate::transport::graphql::schema::builder().finish(),
            hub,
            broker,
            amqp,
            email,
            directory,
            sync,
            mirror,
            auth: Arc::new(auth),
            ws: Arc::new(settings.ws.clone()),
            limits: Arc::new(crate::limits::Limits::new(&settings.limits)),
            max_body_bytes: settings.max_body_bytes,
            prometheus,
            stopping,
            connections: TaskTracker::new(),
            backlogs: Arc::new(tokio::sync::Semaphore::new(BACKLOGS_AT_ONCE)),
            dev_tokens: settings.auth.jwt_generated && settings.listen.ip().is_loopback(),
        });
        Ok(Self { listener, state, pumps: [pump, topic_pump], sockets: Capacity::new(budget), settings })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops in order:
    /// 1. stop accepting, and let in-flight HTTP requests (and so their commits) finish;
    /// 2. close every live connection with 1001 "going away" and wait for their tasks;
    /// 3. stop the AMQP consumers (each settles the group it holds; the rest stays queued in the broker);
    ///    then the email sender (the sends under way finish, bounded; the rest wait in the outbox);
    /// 4. let the store finish every accepted write, then stop the fanout;
    /// 5. give the Redis mirror a bounded time to write the statuses still pending.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application { listener, state, pumps, sockets, settings } = self;
        let door = crate::transport::door::Door::new(listener, sockets, state.limits.clone());
        let stopping = state.stopping.clone();
        let hub = state.hub.clone();
        let store = state.store.clone();
        let topics = state.topics.clone();
        let connections = state.connections.clone();
        let amqp = state.amqp.clone();
        let email = state.email.clone();
        let mirror = state.mirror.clone();
        let broker = state.broker.clone();

        let router = crate::transport::http::routes(state);
        let signal = {
            let stopping = stopping.clone();
            let amqp = amqp.clone();
            async move {
                shutdown.await;
                tracing::info!("stopping: no new connections; closing live ones");
                stopping.cancel();
                // Consumers stop taking messages now; each settles (commits and acks) the group it holds.
                if let Some(amqp) = &amqp {
                    amqp.begin_stop();
                }
                // Live connections are not HTTP requests any more: tell them to close now, in parallel with
                // the HTTP server draining its in-flight requests.
                hub.registry.close_all(CloseReason::GoingAway);
                hub.topics.close_all(CloseReason::GoingAway);
            }
        };
        axum::serve(door, router.into_make_service()).with_graceful_shutdown(signal).await.context("serving HTTP")?;

        connections.close();
        if tokio::time::timeout(settings.shutdown_timeout, connections.wait()).await.is_err() {
            tracing::warn!("some connections did not close in time");
        }
        if let Some(amqp) = &amqp {
            amqp.stop(settings.shutdown_timeout).await;
        }
        // Nothing submits emails any more: let the sends under way finish (bounded), then close the outbox.
        if let Some(email) = &email {
            email.shutdown(settings.shutdown_timeout).await;
        }
        store.shutdown().await;
        topics.shutdown().await;
        // The writers have stopped and dropped the feeds' senders, so the pumps end once they have sent the
        // rest.
        for pump in pumps {
            let _ = pump.await;
        }
        // The pumps have handed the broker everything: let it send what it still holds to the other nodes.
        broker.shutdown(settings.shutdown_timeout.min(MIRROR_FLUSH)).await;
        // The topic pump has made its last offer: what is pending now is all there will be.
        if let Some(mirror) = &mirror {
            mirror.shutdown(settings.shutdown_timeout.min(MIRROR_FLUSH)).await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The email outbox and the user directory, which share a database: their own SQLite file beside the
/// inbox's, or the same PostgreSQL database. Opened whether or not SMTP is configured: the directory and
/// preferences are kept either way.
async fn open_outbox(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn crate::store::emails::EmailStore>, Arc<dyn crate::store::directory::DirectoryStore>)> {
    Ok(match &settings.database {
        DatabaseUrl::Sqlite(path) => {
            let path = crate::store::sqlite::emails_path(path);
            let store = Arc::new(
                crate::store::sqlite::SqliteEmails::open(
                    &path,
                    settings.sqlite_synchronous,
                    settings.sqlite_busy_timeout,
                )
                .with_context(|| format!("opening the email outbox and user directory at {}", path.display()))?,
            );
            (store.clone(), store)
        }
        DatabaseUrl::Postgres(url) => {
            let store = Arc::new(
                crate::store::postgres::PgEmails::open(url.expose())
                    .await
                    .context("opening the PostgreSQL email outbox and user directory")?,
            );
            (store.clone(), store)
        }
    })
}

/// The user-sync worker: the graph database's client (lazy: a database that is down is reported in
/// `/health` and retried by the consumer, never a refusal to start), whose index and uniqueness constraint
/// are made in the background once it answers.
fn start_sync(
    sync: &crate::config::SyncSettings,
    directory: Arc<dyn crate::store::directory::DirectoryStore>,
) -> anyhow::Result<crate::workers::sync::UserSync> {
    use crate::workers::sync::graph::GraphSink;
    let graph = Arc::new(
        crate::workers::sync::falkordb::FalkorGraph::new(sync.graph_url.expose(), &sync.graph_name)
            .context("setting up the graph database client")?,
    );
    {
        let graph = graph.clone();
        tokio::spawn(async move {
            let mut wait = std::time::Duration::from_millis(200);
            loop {
                match graph.prepare().await {
                    Ok(()) => {
                        tracing::info!("graph database ready: index and uniqueness constraint on User.user_id");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "graph database not ready; trying again"),
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
        });
    }
    tracing::info!(
        url = crate::config::amqp::redact_url(sync.graph_url.expose()),
        graph = sync.graph_name,
        "user sync on"
    );
    Ok(crate::workers::sync::UserSync::new(graph, directory, sync.fields.clone()))
}

/// Loads the templates and starts the sender.
fn start_email(
    settings: &Settings,
    smtp: &crate::config::SmtpSettings,
    outbox: Arc<dyn crate::store::emails::EmailStore>,
    directory: Arc<dyn crate::store::directory::DirectoryStore>,
) -> anyhow::Result<crate::workers::email::EmailChannel> {
    let catalog = crate::workers::email::Catalog::load(settings.email_templates.as_deref())
        .context("loading the email templates")?;
    tracing::info!(server = %format!("{}:{}", smtp.host, smtp.port), tls = smtp.tls.as_str(), types = catalog.types().count(), "email channel on");
    crate::workers::email::EmailChannel::start(smtp, settings.email_retry.clone(), catalog, outbox, directory)
        .context("setting up the SMTP client")
}
