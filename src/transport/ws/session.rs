//! One live WebSocket connection, served by one task.
//!
//! The task registers the connection with the hub first and reads the backlog second, so nothing committed
//! in between is missed; live frames up to the snapshot's high-water mark are then skipped, so nothing is
//! sent twice. After that it loops over three things: frames queued in its outbox (written in one batch,
//! coalesced into few socket writes), frames from the client, and the keepalive tick.

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::SinkExt;
use tokio::time::{interval_at, MissedTickBehavior};
use tracing::Instrument;

use crate::auth::{unix_now, User};
use crate::domain::NotificationId;
use crate::error::{CloseReason, FrameError};
use crate::hub::{Permit, Registration};
use crate::protocol::{self, ClientFrame};
use crate::state::AppState;
use crate::store::Since;
use crate::telemetry::metrics;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// The newest unread notifications sent on a connect without `since`.
const UNREAD_BACKLOG: u32 = 100;
/// The most notifications sent on a connect with `since`; `more: true` says to page the rest over REST.
const SINCE_BACKLOG: u32 = 1000;
/// How long a write may take before the client is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing handshake may take; a slow consumer gets this long to read up to the close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

enum Flow {
    Continue,
    Close(CloseReason),
    /// The socket is gone or unusable; end without a closing handshake.
    End,
}

/// Everything one connection owns. It is built before the first await and moved into the connection's
/// future exactly once: an async fn that moved large values across awaits would keep a slot for each copy,
/// and this future is what every idle connection holds.
struct Session {
    socket: WebSocket,
    state: AppState,
    user: User,
    registration: Registration,
    /// The newest notification this connection has sent or deliberately skipped.
    high_water: Option<NotificationId>,
    last_seen: Instant,
    /// Held for the life of the connection: its place in the connection budget and in shutdown's wait.
    _permit: Permit,
    _tracked: TaskTrackerToken,
}

pub fn run(
    socket: WebSocket,
    state: AppState,
    user: User,
    since: Option<NotificationId>,
    permit: Permit,
    tracked: TaskTrackerToken,
) -> impl std::future::Future<Output = ()> + Send {
    let registration = state.hub.registry.register(user.id.clone(), state.ws.outbox_capacity);
    let span = tracing::debug_span!("ws", user = %user.id, connection = registration.connection().id);
    let session = Session {
        socket,
        state,
        user,
        registration,
        high_water: None,
        last_seen: Instant::now(),
        _permit: permit,
        _tracked: tracked,
    };
    // `serve` borrows the session rather than taking it: moving it into an async fn would store it twice.
    let mut session = session;
    async move { session.serve(since).await }.instrument(span)
}

impl Session {
    async fn serve(&mut self, since: Option<NotificationId>) {
        if self.state.stopping.is_cancelled() {
            Box::pin(self.close(CloseReason::GoingAway)).await;
            return;
        }
        let flow = match Box::pin(self.send_backlog(since)).await {
            Ok(()) => self.run_loop().await,
            Err(flow) => flow,
        };
        if let Flow::Close(reason) = flow {
            Box::pin(self.close(reason)).await;
        }
    }

    async fn send_backlog(&mut self, since: Option<NotificationId>) -> Result<(), Flow> {
        let backlogs = self.state.backlogs.clone();
        let _turn = backlogs.acquire_owned().await.map_err(|_| Flow::Close(CloseReason::GoingAway))?;
        let from = match since {
            Some(id) => Since::After { id, limit: SINCE_BACKLOG },
            None => Since::Unread { limit: UNREAD_BACKLOG },
        };
        let snapshot = self.state.store.snapshot(&self.user.id, from).await.map_err(|e| {
            tracing::error!(error = %e, "could not read the backlog");
            Flow::Close(CloseReason::Internal)
        })?;
        let (items, more) = (snapshot.items, snapshot.more);
        self.high_water = snapshot.high_water.max(since);
        let connection_id = self.registration.connection().id.to_string();
        self.send(protocol::hello(&self.user.id, &connection_id, snapshot.unread_count)).await?;
        self.send(protocol::backlog(&items, more)).await?;
        let ids: Vec<NotificationId> = items.iter().filter(|n| !n.delivered).map(|n| n.id).collect();
        self.state.store.mark_delivered(&self.user.id, &ids);
        Ok(())
    }

    async fn run_loop(&mut self) -> Flow {
        let period = self.state.ws.ping_interval;
        let mut keepalive = interval_at(tokio::time::Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // Only the wait below is the idle state of a connection. Everything that runs when something
            // happens is boxed, so that this future, which every idle connection holds, stays small.
            let flow = tokio::select! {
                () = self.registration.connection().outbox.ready() => Box::pin(self.write_outbox()).await,
                incoming = self.socket.recv() => match incoming {
                    Some(Ok(message)) => {
                        self.last_seen = Instant::now();
                        Box::pin(self.handle(message)).await
                    }
                    Some(Err(e)) => read_failed(e),
                    None => Flow::End,
                },
                _ = keepalive.tick() => Box::pin(self.keepalive(period)).await,
            };
            if !matches!(flow, Flow::Continue) {
                return flow;
            }
        }
    }

    /// Writes everything queued as one batch: frames are fed into the socket's write buffer and flushed
    /// once, so a burst becomes a few large writes. The write is raced against the outbox closing, so a
    /// slow consumer is cut off even while its socket is full.
    async fn write_outbox(&mut self) -> Flow {
        let (frames, closing) = self.registration.connection().outbox.take();
        if let Some(reason) = closing {
            return Flow::Close(reason);
        }
        // Drop what the backlog already sent (or skipped on purpose); the rest goes out in order.
        let mut frames = frames;
        let mut delivered = Vec::new();
        frames.retain(|frame| match frame.notification {
            Some(id) if self.high_water.is_some_and(|seen| id <= seen) => false,
            Some(id) => {
                self.high_water = Some(id);
                delivered.push(id);
                true
            }
            None => true,
        });
        if frames.is_empty() {
            return Flow::Continue;
        }
        let socket = &mut self.socket;
        let write = async {
            for frame in &frames {
                socket.feed(text(frame.bytes.clone())).await?;
            }
            socket.flush().await
        };
        tokio::select! {
            result = tokio::time::timeout(WRITE_TIMEOUT, write) => match result {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Flow::End,
            },
            () = self.registration.connection().outbox.closing() => {
                return Flow::Close(self.registration.connection().outbox.take().1.unwrap_or(CloseReason::SlowConsumer));
            }
        }
        let m = metrics();
        m.frames_sent.increment(frames.len() as u64);
        for at in frames.iter().filter_map(|f| f.received_at) {
            m.publish_to_push.record(at.elapsed().as_secs_f64());
        }
        self.state.store.mark_delivered(&self.user.id, &delivered);
        Flow::Continue
    }

    async fn handle(&mut self, message: Message) -> Flow {
        let request = match message {
            Message::Text(text) => ClientFrame::parse(text.as_str()),
            Message::Binary(_) => Err(FrameError::UnsupportedFrame),
            Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
            Message::Close(_) => {
                // tungstenite has queued the reply to the client's close; send it before dropping the socket.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.socket.flush()).await;
                return Flow::End;
            }
        };
        let result = match request {
            Ok(ClientFrame::Ping) => return self.send(protocol::pong()).await.err().unwrap_or(Flow::Continue),
            // The read events come back through the hub to every connection of the user, this one included.
            Ok(ClientFrame::MarkRead { ids }) => self.state.store.mark_read(&self.user.id, ids).await.map(drop),
            Ok(ClientFrame::MarkAllRead) => self.state.store.mark_all_read(&self.user.id).await.map(drop),
            Err(e) => return self.reply_error(&e).await,
        };
        match result {
            Ok(()) => Flow::Continue,
            Err(e) => {
                tracing::error!(error = %e, "a client request failed in the store");
                self.reply_error(&FrameError::Internal).await
            }
        }
    }

    async fn reply_error(&mut self, error: &FrameError) -> Flow {
        metrics::counter!("herald_errors_total", "code" => error.code()).increment(1);
        self.send(protocol::error(error)).await.err().unwrap_or(Flow::Continue)
    }

    async fn keepalive(&mut self, period: Duration) -> Flow {
        if self.last_seen.elapsed() >= period * 2 {
            return Flow::Close(CloseReason::IdleTimeout);
        }
        if self.user.expires_at <= unix_now() {
            return Flow::Close(CloseReason::TokenExpired);
        }
        match tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(Message::Ping(Bytes::new()))).await {
            Ok(Ok(())) => Flow::Continue,
            _ => Flow::End,
        }
    }

    async fn send(&mut self, frame: Bytes) -> Result<(), Flow> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(text(frame))).await {
            Ok(Ok(())) => {
                metrics().frames_sent.increment(1);
                Ok(())
            }
            _ => Err(Flow::End),
        }
    }

    /// Sends a close frame and waits (bounded) for it to be written.
    async fn close(&mut self, reason: CloseReason) {
        let frame = CloseFrame { code: reason.code(), reason: Utf8Bytes::from_static(reason.reason()) };
        if reason == CloseReason::SlowConsumer {
            tracing::info!(user = %self.user.id, "closing a slow consumer");
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.socket.send(Message::Close(Some(frame)))).await;
    }
}

fn text(bytes: Bytes) -> Message {
    // Frames come from `protocol`, which writes JSON: always UTF-8. The check is a cheap scan.
    match Utf8Bytes::try_from(bytes) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Text(Utf8Bytes::from_static(r#"{"type":"error","code":"internal","message":"bad frame"}"#)),
    }
}

fn read_failed(error: axum::Error) -> Flow {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Flow::Close(CloseReason::MessageTooBig),
        _ => Flow::End,
    }
}
