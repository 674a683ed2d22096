//! The floor server: the same HTTP and WebSocket shape as Herald, on the same WebSocket
//! library (axum 0.8 on tokio-tungstenite 0.29), with nothing else — no auth, no storage, an
//! in-memory fanout. What Herald costs beyond it is the cost of Herald's features.
//!
//! Built the lean way Herald's own issue describes: a 256-byte read buffer, one task per
//! connection, a per-connection queue that allocates nothing while empty, frames encoded once
//! and shared, queued frames coalesced into one flush. It keeps the last `--replay`
//! notifications per user in memory so that `since` reconnects work; with `--replay 0`,
//! `since` gives an empty backlog. With `--amqp-url` it also consumes publish bodies from a
//! RabbitMQ queue, as Herald does with `HERALD_AMQP_URL`.

mod amqp;
mod api;
mod connection;
mod encode;
mod registry;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::extract::ws::Utf8Bytes;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::{TcpListener, TcpSocket};

use crate::cli::FloorArgs;
use api::{ApiError, NewEvent, NewNotification};
use registry::{Encoded, Registry};

/// Descriptors kept free for the listener, the runtime and stdio when sizing capacity.
const RESERVED_FDS: u64 = 64;

/// Kept notifications of a user with no connection are forgotten this long after the newest.
const REPLAY_TTL: Duration = Duration::from_secs(60);
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The kernel caps this at `net.core.somaxconn` (4096 here).
const ACCEPT_BACKLOG: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
    #[error("the AMQP consumer: {0}")]
    Amqp(#[from] crate::amqp::AmqpError),
}

/// The floor's shared state.
pub struct Floor {
    registry: Registry,
    ids: Mutex<ulid::Generator>,
    open: AtomicUsize,
    max_connections: usize,
    next_connection: AtomicU64,
    read_buffer: usize,
    queue_cap: usize,
}

/// A counted open connection; dropping it frees the place.
pub struct Slot(Arc<Floor>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Floor {
    fn new(args: &FloorArgs, open_files: u64) -> Self {
        let max_connections =
            args.max_connections.unwrap_or_else(|| open_files.saturating_sub(RESERVED_FDS).max(1) as usize);
        Self {
            registry: Registry::new(args.replay),
            ids: Mutex::new(ulid::Generator::new()),
            open: AtomicUsize::new(0),
            max_connections,
            next_connection: AtomicU64::new(1),
            read_buffer: args.read_buffer,
            queue_cap: args.queue_cap.max(1),
        }
    }

    /// Takes a connection place, or `None` at capacity (answered with HTTP 503).
    fn open_slot(floor: &Arc<Floor>) -> Option<Slot> {
        let before = floor.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(Arc::clone(floor));
        (before < floor.max_connections).then_some(slot)
    }

    fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// A new ULID, greater than every one before it even within one millisecond.
    fn next_id(&self) -> Result<ulid::Ulid, ApiError> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner).generate().map_err(|_| ApiError::IdsExhausted)
    }

    fn publish_notification(&self, new: &NewNotification<'_>) -> Result<Utf8Bytes, ApiError> {
        self.registry.publish_to_user(&new.user_id, || {
            let id = self.next_id()?;
            let id_text = id.to_string();
            let created_at = encode::rfc3339(SystemTime::now());
            let json = encode::to_json(&encode::Notification {
                id: &id_text,
                user_id: &new.user_id,
                kind: &new.kind,
                title: new.title.as_deref(),
                message: new.message.as_deref(),
                data: new.data.unwrap_or(encode::empty_object()),
                created_at: &created_at,
                delivered: false,
                delivered_at: None,
                read: false,
                read_at: None,
            });
            let frame = encode::notification_frame(&json);
            Ok(Encoded { id, json: json.into(), frame: frame.into() })
        })
    }

    fn publish_event(&self, topic: &str, new: &NewEvent<'_>) -> Result<Utf8Bytes, ApiError> {
        self.registry.publish_to_topic(topic, |seq| {
            let id = self.next_id()?;
            let at = encode::rfc3339(SystemTime::now());
            let event = encode::to_json(&encode::Event {
                seq,
                kind: &new.kind,
                status: None,
                progress: None,
                data: new.data.unwrap_or(encode::empty_object()),
                at: &at,
            });
            let frame = encode::event_frame(topic, seq, &event);
            Ok(Encoded { id, json: encode::appended(topic, seq).into(), frame: frame.into() })
        })
    }
}

fn router(floor: Arc<Floor>) -> Router {
    Router::new()
        .route("/ws", get(connection::upgrade))
        .route("/api/v1/notifications", post(api::publish))
        .route("/api/v1/notifications/batch", post(api::publish_batch))
        .route("/api/v1/topics/{name}/events", post(api::publish_event))
        .route("/health", get(api::health))
        .with_state(floor)
}

/// Serves until SIGINT or SIGTERM. The first line on stdout is `listening on http://ADDR`.
pub async fn serve(args: FloorArgs, open_files: u64) -> Result<(), FloorError> {
    let listener = listen(args.listen).map_err(|e| FloorError::Bind(args.listen, e))?;
    let addr = listener.local_addr().map_err(|e| FloorError::Bind(args.listen, e))?;
    let floor = Arc::new(Floor::new(&args, open_files));
    let sweeper = tokio::spawn(sweep(Arc::clone(&floor)));
    eprintln!("herald-bench floor: up to {} connections, replay {} per user", floor.max_connections, args.replay);
    // The consumer is registered before the address is printed, so that a run started on
    // that line finds the queue declared and consumed, as it would with Herald.
    let consumer = match &args.amqp_url {
        Some(url) => Some(amqp::start(Arc::clone(&floor), url, &args.amqp_queue, args.amqp_prefetch).await?),
        None => None,
    };
    println!("listening on http://{addr}");
    // Scripts wait for that line; a pipe would otherwise hold it in the buffer.
    let _ = std::io::stdout().flush();
    // Frames are small and latency is measured: never wait for Nagle.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    let served =
        axum::serve(listener, router(floor)).with_graceful_shutdown(shutdown_signal()).await.map_err(FloorError::Serve);
    sweeper.abort();
    if let Some(consumer) = consumer {
        consumer.abort();
    }
    served
}

/// A listener with a deep accept queue. `TcpListener::bind` asks for 128, and a burst of
/// handshakes larger than that overflows it: the kernel drops the extra SYNs, and those
/// clients wait a full second to retransmit.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Forgets, now and then, the replay buffers of users long gone. Runs until `serve` aborts it.
async fn sweep(floor: Arc<Floor>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        let now_ms = crate::clock::unix_micros() / 1000;
        floor.registry.forget_idle(now_ms, REPLAY_TTL.as_millis() as u64);
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            // Without a SIGTERM handler, Ctrl-C still stops the server.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
