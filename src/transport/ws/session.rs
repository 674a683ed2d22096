//! One live WebSocket connection, served by one task.
//!
//! The task registers the connection with the hub first and reads the backlog second, so nothing committed
//! in between is missed; live frames up to the snapshot's high-water mark are then skipped, so nothing is
//! sent twice. After that it loops over three things: frames queued in its outbox (written in one batch,
//! coalesced into few socket writes), frames from the client, and the keepalive tick.

use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::SinkExt;
use tokio::time::{interval_at, MissedTickBehavior};
use tracing::Instrument;

use super::socket::{read_failed, Flow, CLOSE_TIMEOUT};
use crate::auth::User;
use crate::domain::NotificationId;
use crate::error::{CloseReason, FrameError, TopicError};
use crate::hub::{Encoding, Permit, Registration, Sink};
use crate::limits::FrameLimit;
use crate::protocol::{self, ClientFrame};
use crate::state::AppState;
use crate::topics::namespace::MAX_HISTORY_EVENTS;
use crate::topics::TopicName;
use crate::transport::live::{self, recovery_frames, Style, Watching};
use tokio_util::task::task_tracker::TaskTrackerToken;

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
    /// The topics it watches; boxed, and only once it subscribes, so a connection that watches none pays a
    /// pointer.
    watching: Option<Box<Watching>>,
    last_seen: Instant,
    /// Client frames against `limits.frames_per_second`; past it the connection closes with 4029.
    frames: FrameLimit,
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
    let frames = FrameLimit::new(state.limits.frames);
    let registration = state.hub.registry.register(user.id.clone(), state.ws.outbox_capacity);
    let span = tracing::debug_span!("ws", user = %user.id, connection = registration.connection().id);
    let session = Session {
        socket,
        state,
        user,
        registration,
        high_water: None,
        watching: None,
        last_seen: Instant::now(),
        frames,
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
        let early = super::socket::read_early(&mut self.socket);
        let flow = match Box::pin(self.send_backlog(since)).await {
            Ok(()) => match early {
                super::socket::Early::Nothing => self.run_loop().await,
                super::socket::Early::Frame(message) => match Box::pin(self.handle(message)).await {
                    Flow::Continue => self.run_loop().await,
                    other => other,
                },
                super::socket::Early::Ended(flow) => flow,
            },
            Err(flow) => flow,
        };
        if let Flow::Close(reason) = flow {
            Box::pin(self.close(reason)).await;
        }
    }

    async fn send_backlog(&mut self, since: Option<NotificationId>) -> Result<(), Flow> {
        // In a cluster, the backlog must be read once this node hears every later event of the user; a start
        // that does not come in time (the store is away) is a resync, never a silent gap.
        if !self.registration.started(crate::hub::stream::START_LIMIT).await {
            return Err(Flow::Close(CloseReason::Resync));
        }
        let backlogs = self.state.backlogs.clone();
        let _turn = backlogs.acquire_owned().await.map_err(|_| Flow::Close(CloseReason::GoingAway))?;
        let snapshot = live::backlog(&self.state, &self.user, since).await.map_err(Flow::Close)?;
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
                        if !self.frames.admit(self.last_seen) {
                            tracing::info!(user = %self.user.id, "closing a connection over its frame rate");
                            return Flow::Close(CloseReason::RateLimited);
                        }
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
        let delivered = live::admit(&mut frames, &mut self.high_water, &mut self.watching);
        if frames.is_empty() {
            return Flow::Continue;
        }
        match super::socket::write_batch(&mut self.socket, &frames, &self.registration.connection().outbox).await {
            Flow::Continue => {}
            other => return other,
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
            Ok(ClientFrame::MarkRead { ids }) => self.state.mark_read(&self.user.id, ids).await.map(drop),
            Ok(ClientFrame::MarkAllRead) => self.state.mark_all_read(&self.user.id).await.map(drop),
            Ok(ClientFrame::Subscribe { topic, since }) => return Box::pin(self.subscribe(topic, since)).await,
            Ok(ClientFrame::Unsubscribe { topic }) => {
                if let Some(watching) = self.watching.as_mut() {
                    watching.remove(&topic);
                }
                return self.send(protocol::topics::unsubscribed(&topic)).await.err().unwrap_or(Flow::Continue);
            }
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

    /// Starts watching a topic (or, watched already, recovers it again from `since`).
    async fn subscribe(&mut self, topic: TopicName, since: Option<u64>) -> Flow {
        if !self.state.may_watch(Some(&self.user), &topic) {
            return self.topic_error(TopicError::Forbidden, &topic).await;
        }
        let watching = self.watching.get_or_insert_with(Default::default);
        if !watching.contains(&topic) {
            let max = self.state.topic_settings.max_per_connection;
            if watching.len() >= max {
                return self.topic_error(TopicError::TooManySubscriptions(max), &topic).await;
            }
            let sink = Sink::Outbox { connection: self.registration.shared().clone(), encoding: Encoding::Ws };
            let subscription = self.state.hub.topics.subscribe(topic.clone(), sink);
            // In a cluster: the recovery is read once every later event is sure to reach this node.
            if !subscription.started(crate::hub::stream::START_LIMIT).await {
                return Flow::Close(CloseReason::Resync);
            }
            if let Some(watching) = self.watching.as_mut() {
                watching.add(subscription);
            }
        }
        let recovery = {
            let backlogs = self.state.backlogs.clone();
            let Ok(_turn) = backlogs.acquire_owned().await else { return Flow::Close(CloseReason::GoingAway) };
            self.state.topics.recover(&topic, since, MAX_HISTORY_EVENTS).await
        };
        let recovery = match recovery {
            Ok(recovery) => recovery,
            Err(e) => {
                tracing::error!(error = %e, %topic, "could not read a topic's recovery");
                if let Some(watching) = self.watching.as_mut() {
                    watching.remove(&topic);
                }
                return self.topic_error(TopicError::Internal, &topic).await;
            }
        };
        let (frames, high) = recovery_frames(Style::Ws, &topic, &recovery);
        if let Some(watching) = self.watching.as_mut() {
            watching.started(&topic, high);
        }
        for frame in frames {
            if let Err(flow) = self.send(frame).await {
                return flow;
            }
        }
        Flow::Continue
    }

    async fn topic_error(&mut self, error: TopicError, topic: &TopicName) -> Flow {
        metrics::counter!("herald_errors_total", "code" => error.code()).increment(1);
        self.send(protocol::topics::error(&error, topic)).await.err().unwrap_or(Flow::Continue)
    }

    async fn reply_error(&mut self, error: &FrameError) -> Flow {
        metrics::counter!("herald_errors_total", "code" => error.code()).increment(1);
        self.send(protocol::error(error)).await.err().unwrap_or(Flow::Continue)
    }

    async fn keepalive(&mut self, period: Duration) -> Flow {
        super::socket::keepalive(&mut self.socket, self.last_seen, period, Some(self.user.expires_at)).await
    }

    async fn send(&mut self, frame: Bytes) -> Result<(), Flow> {
        super::socket::send(&mut self.socket, frame).await
    }

    /// Sends a close frame and waits (bounded) for it to be written.
    async fn close(&mut self, reason: CloseReason) {
        if reason == CloseReason::SlowConsumer {
            tracing::info!(user = %self.user.id, "closing a slow consumer");
        }
        super::socket::close(&mut self.socket, reason).await;
    }
}
