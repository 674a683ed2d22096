//! A socket per thing: `GET /ws/topics/{topic}?token=…[&since=N]`, and the route aliases that serve a
//! design's own URL for it (`/api/orders/status/{orderId}` → `order:{orderId}`, with that design's frames).
//!
//! The upgrade is refused with an HTTP error (and no socket) for a malformed topic or `since` (400), a bad
//! token (401), a publisher key or a topic the token does not grant (403), or a full server (503). A public
//! namespace needs no token; a token given anyway must be valid. The socket then watches its one topic:
//! recovery first, then live events, keepalive pings, and `{"type":"ping"}` answered with a pong.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tokio::time::{interval_at, MissedTickBehavior};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::Instrument;

use super::socket::{read_failed, Flow, CLOSE_TIMEOUT};
use crate::auth::User;
use crate::config::topics::RouteAlias;
use crate::error::{ApiError, CloseReason, FrameError};
use crate::hub::topics::alias_encoder;
use crate::hub::{Connection, Encoding, Permit, Sink, TopicSubscription};
use crate::limits::FrameLimit;
use crate::protocol::{self, ClientFrame};
use crate::state::AppState;
use crate::topics::namespace::MAX_HISTORY_EVENTS;
use crate::topics::TopicName;
use crate::transport::http::extract::{bearer, Query};
use crate::transport::live::{recovery_frames, Style};

#[derive(Deserialize)]
pub struct TopicParams {
    token: Option<String>,
    since: Option<String>,
}

/// `GET /ws/topics/{topic}`.
pub async fn upgrade(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Query(params): Query<TopicParams>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let topic = TopicName::parse(&topic).map_err(|e| ApiError::InvalidQuery(e.to_string()))?;
    let upgrade =
        upgrade.map_err(|e| ApiError::invalid_request(format!("not a WebSocket upgrade: {}", e.body_text())))?;
    accept(state, topic, None, params, &headers, upgrade).await
}

/// A route alias's WebSocket path: an upgrade watches the topic; a plain GET answers its state, as the
/// design's REST poll on the same path does.
pub async fn alias(
    alias: Arc<RouteAlias>,
    state: AppState,
    id: String,
    params: TopicParams,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let topic = TopicName::from_parts(&alias.namespace, &id).map_err(|e| ApiError::InvalidQuery(e.to_string()))?;
    match upgrade {
        Ok(upgrade) => accept(state, topic, Some(alias), params, &headers, upgrade).await,
        Err(_) => {
            crate::transport::http::topics::state_response(
                &state,
                &topic,
                Some(&alias),
                &headers,
                params.token.as_deref(),
            )
            .await
        }
    }
}

async fn accept(
    state: AppState,
    topic: TopicName,
    alias: Option<Arc<RouteAlias>>,
    params: TopicParams,
    headers: &HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let since = params
        .since
        .as_deref()
        .map(|s| s.parse::<u64>())
        .transpose()
        .map_err(|_| ApiError::InvalidQuery("since must be a topic sequence number".into()))?;
    let user = match params.token.as_deref().or_else(|| bearer(headers)) {
        None => None,
        Some(token) if state.auth.is_api_key(token) => {
            return Err(ApiError::Forbidden("a publisher key cannot open a watcher's connection"));
        }
        Some(token) => {
            Some(state.auth.user(token).await.map_err(|_| ApiError::Unauthorized("the token is invalid or expired"))?)
        }
    };
    if !state.may_watch(user.as_ref(), &topic) {
        return Err(match user {
            None => ApiError::Unauthorized("a token is required: ?token=JWT"),
            Some(_) => ApiError::Forbidden("this token may not watch this topic"),
        });
    }
    let Some(permit) = state.hub.capacity.try_acquire() else {
        crate::telemetry::metrics().connections_refused.increment(1);
        return Err(ApiError::AtCapacity);
    };
    let ws = state.ws.clone();
    let tracked = state.connections.token();
    let response = upgrade
        .read_buffer_size(512)
        .write_buffer_size(ws.write_buffer_bytes)
        .max_message_size(ws.max_frame_bytes)
        .max_frame_size(ws.max_frame_bytes)
        .on_upgrade(move |socket| {
            let connection = state.hub.registry.detached(state.ws.outbox_capacity);
            let span = tracing::debug_span!("topic_ws", %topic, connection = connection.id);
            let frames = FrameLimit::new(state.limits.frames);
            let mut session = TopicSession {
                socket,
                state,
                user,
                topic,
                alias,
                connection,
                subscription: None,
                high: 0,
                last_seen: Instant::now(),
                frames,
                _permit: permit,
                _tracked: tracked,
            };
            async move { session.serve(since).await }.instrument(span)
        });
    Ok(response.into_response())
}

struct TopicSession {
    socket: WebSocket,
    state: AppState,
    /// `None` on a public namespace's socket opened without a token.
    user: Option<User>,
    topic: TopicName,
    alias: Option<Arc<RouteAlias>>,
    connection: Arc<Connection>,
    subscription: Option<TopicSubscription>,
    /// The newest seq sent (or deliberately skipped).
    high: u64,
    last_seen: Instant,
    /// Client frames against `limits.frames_per_second`; past it the socket closes with 4029.
    frames: FrameLimit,
    _permit: Permit,
    _tracked: TaskTrackerToken,
}

impl TopicSession {
    async fn serve(&mut self, since: Option<u64>) {
        if self.state.stopping.is_cancelled() {
            super::socket::close(&mut self.socket, CloseReason::GoingAway).await;
            return;
        }
        let early = super::socket::read_early(&mut self.socket);
        let flow = match Box::pin(self.start(since)).await {
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
            super::socket::close(&mut self.socket, reason).await;
        }
    }

    /// Subscribes, then sends the recovery: registered first, so nothing committed in between is missed.
    async fn start(&mut self, since: Option<u64>) -> Result<(), Flow> {
        let encoding = match &self.alias {
            Some(alias) => Encoding::Alias(alias.clone()),
            None => Encoding::Ws,
        };
        let sink = Sink::Outbox { connection: self.connection.clone(), encoding };
        let subscription = self.state.hub.topics.subscribe(self.topic.clone(), sink);
        // In a cluster: the recovery is read once every later event is sure to reach this node.
        if !subscription.started(crate::hub::stream::START_LIMIT).await {
            return Err(Flow::Close(CloseReason::Resync));
        }
        self.subscription = Some(subscription);
        if let Some(alias) = &self.alias {
            let hello = alias_encoder(alias).connection(&self.topic);
            super::socket::send(&mut self.socket, hello).await?;
        }
        let backlogs = self.state.backlogs.clone();
        let turn = backlogs.acquire_owned().await.map_err(|_| Flow::Close(CloseReason::GoingAway))?;
        let recovery = self.state.topics.recover(&self.topic, since, MAX_HISTORY_EVENTS).await.map_err(|e| {
            tracing::error!(error = %e, "could not read a topic's recovery");
            Flow::Close(CloseReason::Internal)
        })?;
        let style = match &self.alias {
            Some(alias) => Style::Alias(alias),
            None => Style::Ws,
        };
        let (frames, high) = recovery_frames(style, &self.topic, &recovery);
        self.high = high;
        for frame in frames {
            super::socket::send(&mut self.socket, frame).await?;
        }
        drop(turn);
        Ok(())
    }

    async fn run_loop(&mut self) -> Flow {
        let period = self.state.ws.ping_interval;
        let mut keepalive = interval_at(tokio::time::Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let flow = tokio::select! {
                () = self.connection.outbox.ready() => Box::pin(self.write_outbox()).await,
                incoming = self.socket.recv() => match incoming {
                    Some(Ok(message)) => {
                        self.last_seen = Instant::now();
                        if !self.frames.admit(self.last_seen) {
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

    async fn write_outbox(&mut self) -> Flow {
        let (mut frames, closing) = self.connection.outbox.take();
        if let Some(reason) = closing {
            return Flow::Close(reason);
        }
        let high = &mut self.high;
        frames.retain(|frame| match &frame.topic {
            Some(mark) if mark.seq > *high => {
                *high = mark.seq;
                true
            }
            Some(_) => false,
            None => true,
        });
        if frames.is_empty() {
            return Flow::Continue;
        }
        match super::socket::write_batch(&mut self.socket, &frames, &self.connection.outbox).await {
            Flow::Continue => {}
            other => return other,
        }
        Flow::Continue
    }

    async fn handle(&mut self, message: Message) -> Flow {
        let request = match message {
            Message::Text(text) => ClientFrame::parse(text.as_str()),
            Message::Binary(_) => Err(FrameError::UnsupportedFrame),
            Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
            Message::Close(_) => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, futures_util::SinkExt::flush(&mut self.socket)).await;
                return Flow::End;
            }
        };
        let reply = match request {
            Ok(ClientFrame::Ping) => protocol::pong(),
            Ok(_) => {
                let error = FrameError::InvalidRequest("this socket watches one topic: it takes only ping".into());
                self.error_frame(&error)
            }
            Err(e) => self.error_frame(&e),
        };
        super::socket::send(&mut self.socket, reply).await.err().unwrap_or(Flow::Continue)
    }

    fn error_frame(&self, error: &FrameError) -> Bytes {
        metrics::counter!("herald_errors_total", "code" => error.code()).increment(1);
        protocol::error(error)
    }

    async fn keepalive(&mut self, period: std::time::Duration) -> Flow {
        let expires_at = self.user.as_ref().map(|u| u.expires_at);
        super::socket::keepalive(&mut self.socket, self.last_seen, period, expires_at).await
    }
}
