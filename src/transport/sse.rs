//! The Server-Sent Events transport, for networks that block WebSockets:
//! `GET /api/v1/stream?token=JWT[&since=ID][&topics=order:1,intent:42]` (or `Authorization: Bearer`).
//!
//! The same frames as the WebSocket, one SSE event each: `event:` is the frame's type, `data:` its JSON, and
//! every notification carries `id:` its id (the backlog, the newest id it covers), so the browser's
//! `Last-Event-ID` on an automatic reconnect works as `since` (and wins over the query's). A comment line
//! every ping interval keeps proxies from timing the stream out. Where the WebSocket would close with a code,
//! the stream sends `event: close` with `{"type":"close","code","reason"}` and ends. Marking read goes over
//! REST; topics are named at connect (`topics=`), each recovered from its current state.
//!
//! The same rules as a WebSocket: the same auth (401/403 before any stream), the per-user and server-wide
//! connection limits, the backlog-then-live handover and its skip of what the backlog sent, and the slow
//! consumer rule. A connection's task writes events into a small channel that the response body drains;
//! when the client does not read, the channel stays full: after [`WRITE_TIMEOUT`], or at once when the
//! outbox overflows, the task ends, giving back the connection's place (the client resumes with
//! `Last-Event-ID`), so a stalled reader holds nothing of the hub's.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::{interval_at, MissedTickBehavior};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::Instrument;

use crate::auth::User;
use crate::domain::NotificationId;
use crate::error::{ApiError, CloseReason};
use crate::hub::{Encoding, Permit, Registration, Sink};
use crate::protocol;
use crate::state::AppState;
use crate::topics::namespace::MAX_HISTORY_EVENTS;
use crate::topics::TopicName;
use crate::transport::http::extract::Query;
use crate::transport::live::{self, recovery_frames, Style, Watching};

/// How long the client may leave written events unread before the stream gives up on it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunks written ahead of the client: each is one batch of events.
const CHANNEL_CHUNKS: usize = 2;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SseParams {
    token: Option<String>,
    since: Option<String>,
    /// Topics to watch, comma-separated (topic names hold no commas).
    topics: Option<String>,
}

pub async fn stream(
    State(state): State<AppState>,
    Query(params): Query<SseParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let hint = "a token is required: /api/v1/stream?token=JWT or Authorization: Bearer";
    let user = live::user_of(&state, params.token.as_deref(), &headers, hint).await?;
    // The browser's reconnect names the last id it saw; it is newer than the `since` the URL was opened with.
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok()).filter(|v| !v.trim().is_empty());
    let since = last_event_id
        .or(params.since.as_deref())
        .map(|id| NotificationId::parse(id.trim()))
        .transpose()
        .map_err(|_| ApiError::InvalidQuery("since (or Last-Event-ID) must be a notification id".into()))?;
    let topics = topics(&state, &user, params.topics.as_deref())?;
    let permit = live::place_for(&state, &user)?;
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let tracked = state.connections.token();
    let registration = state.hub.registry.register(user.id.clone(), state.ws.outbox_capacity);
    let span = tracing::debug_span!("sse", user = %user.id, connection = registration.connection().id);
    let session =
        Session { state, user, registration, tx, high_water: None, watching: None, _permit: permit, _tracked: tracked };
    tokio::spawn(session.run(since, topics).instrument(span));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<Bytes, Infallible>(chunk), rx))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx (and proxies that follow it) not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The `topics=` list, checked before anything is opened: each must parse and be the user's to watch, and
/// there may be at most as many as one connection may watch.
fn topics(state: &AppState, user: &User, list: Option<&str>) -> Result<Vec<TopicName>, ApiError> {
    let mut topics: Vec<TopicName> = Vec::new();
    for name in list.into_iter().flat_map(|l| l.split(',')).map(str::trim).filter(|n| !n.is_empty()) {
        let topic = TopicName::parse(name).map_err(|e| ApiError::InvalidQuery(format!("topics: {name:?}: {e}")))?;
        if !state.may_watch(Some(user), &topic) {
            return Err(ApiError::Forbidden("the token does not allow watching one of these topics"));
        }
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    let max = state.topic_settings.max_per_connection;
    if topics.len() > max {
        return Err(ApiError::InvalidQuery(format!("topics: at most {max} per connection")));
    }
    Ok(topics)
}

/// Why the task stopped writing.
enum End {
    /// Tell the client why, then end the stream.
    Close(CloseReason),
    /// The client is gone, or stopped reading.
    Gone,
}

struct Session {
    state: AppState,
    user: User,
    registration: Registration,
    tx: mpsc::Sender<Bytes>,
    /// The newest notification this connection has sent or deliberately skipped.
    high_water: Option<NotificationId>,
    watching: Option<Box<Watching>>,
    /// Held for the life of the connection: its place in the connection budget and in shutdown's wait.
    _permit: Permit,
    _tracked: TaskTrackerToken,
}

impl Session {
    async fn run(mut self, since: Option<NotificationId>, topics: Vec<TopicName>) {
        let end = match self.start(since, topics).await {
            Ok(()) => self.live().await,
            Err(end) => end,
        };
        if let End::Close(reason) = end {
            if reason == CloseReason::SlowConsumer {
                tracing::info!(user = %self.user.id, "closing a slow consumer");
            }
            let mut chunk = BytesMut::new();
            if reason == CloseReason::Resync {
                event(&mut chunk, protocol::RESYNC.as_bytes(), None);
            }
            event(&mut chunk, &protocol::close(reason), None);
            let _ = tokio::time::timeout(WRITE_TIMEOUT, self.tx.send(chunk.freeze())).await;
        }
    }

    /// `hello`, the backlog, and each topic's recovery, as one chunk.
    async fn start(&mut self, since: Option<NotificationId>, topics: Vec<TopicName>) -> Result<(), End> {
        if self.state.stopping.is_cancelled() {
            return Err(End::Close(CloseReason::GoingAway));
        }
        // In a cluster, the backlog is read once this node hears every later event of the user.
        if !self.registration.started(crate::hub::stream::START_LIMIT).await {
            return Err(End::Close(CloseReason::Resync));
        }
        let mut chunk = BytesMut::new();
        let delivered = {
            let backlogs = self.state.backlogs.clone();
            let _turn = backlogs.acquire_owned().await.map_err(|_| End::Close(CloseReason::GoingAway))?;
            let snapshot = live::backlog(&self.state, &self.user, since).await.map_err(End::Close)?;
            self.high_water = snapshot.high_water.max(since);
            let connection_id = self.registration.connection().id.to_string();
            event(&mut chunk, &protocol::hello(&self.user.id, &connection_id, snapshot.unread_count), None);
            // A reconnect resumes after what this covers: all of it, or where it stopped short.
            let covers = if snapshot.more { snapshot.items.last().map(|n| n.id) } else { self.high_water };
            event(&mut chunk, &protocol::backlog(&snapshot.items, snapshot.more), covers);
            snapshot.items.iter().filter(|n| !n.delivered).map(|n| n.id).collect::<Vec<_>>()
        };
        let mut frames = 2;
        for topic in topics {
            frames += self.watch(topic, &mut chunk).await?;
        }
        self.write(chunk.freeze(), frames).await?;
        self.state.store.mark_delivered(&self.user.id, &delivered);
        Ok(())
    }

    /// Starts watching a topic: subscribed with the hub first, then its recovery read into `chunk`. Returns
    /// how many frames that is.
    async fn watch(&mut self, topic: TopicName, chunk: &mut BytesMut) -> Result<usize, End> {
        let sink = Sink::Outbox { connection: self.registration.shared().clone(), encoding: Encoding::Ws };
        let subscription = self.state.hub.topics.subscribe(topic.clone(), sink);
        if !subscription.started(crate::hub::stream::START_LIMIT).await {
            return Err(End::Close(CloseReason::Resync));
        }
        self.watching.get_or_insert_with(Default::default).add(subscription);
        let recovery = {
            let backlogs = self.state.backlogs.clone();
            let _turn = backlogs.acquire_owned().await.map_err(|_| End::Close(CloseReason::GoingAway))?;
            self.state.topics.recover(&topic, None, MAX_HISTORY_EVENTS).await
        };
        let recovery = recovery.map_err(|e| {
            tracing::error!(error = %e, %topic, "could not read a topic's recovery");
            End::Close(CloseReason::Internal)
        })?;
        let (frames, high) = recovery_frames(Style::Ws, &topic, &recovery);
        if let Some(watching) = self.watching.as_mut() {
            watching.started(&topic, high);
        }
        for frame in &frames {
            event(chunk, frame, None);
        }
        Ok(frames.len())
    }

    async fn live(&mut self) -> End {
        let period = self.state.ws.ping_interval;
        let mut keepalive = interval_at(tokio::time::Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let stopping = self.state.stopping.clone();
        loop {
            let step = tokio::select! {
                () = self.registration.connection().outbox.ready() => self.write_outbox().await,
                _ = keepalive.tick() => self.keepalive().await,
                () = self.tx.closed() => Err(End::Gone),
                () = stopping.cancelled() => Err(End::Close(CloseReason::GoingAway)),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn write_outbox(&mut self) -> Result<(), End> {
        let (mut frames, closing) = self.registration.connection().outbox.take();
        if let Some(reason) = closing {
            return Err(End::Close(reason));
        }
        let delivered = live::admit(&mut frames, &mut self.high_water, &mut self.watching);
        if frames.is_empty() {
            return Ok(());
        }
        let mut chunk = BytesMut::new();
        for frame in &frames {
            event(&mut chunk, &frame.bytes, frame.notification);
        }
        self.write(chunk.freeze(), 0).await?;
        live::record_written(&frames);
        self.state.store.mark_delivered(&self.user.id, &delivered);
        Ok(())
    }

    async fn keepalive(&mut self) -> Result<(), End> {
        if self.user.expires_at <= crate::auth::unix_now() {
            return Err(End::Close(CloseReason::TokenExpired));
        }
        self.write(Bytes::from_static(b": keepalive\n\n"), 0).await
    }

    /// Hands a chunk to the response body (counting `frames`; live batches are counted with their latency
    /// by `live::record_written`). A client that leaves it unread for [`WRITE_TIMEOUT`], or whose outbox
    /// overflows meanwhile, is given up on.
    async fn write(&mut self, chunk: Bytes, frames: usize) -> Result<(), End> {
        let outbox = &self.registration.connection().outbox;
        tokio::select! {
            sent = tokio::time::timeout(WRITE_TIMEOUT, self.tx.send(chunk)) => match sent {
                Ok(Ok(())) => {
                    crate::telemetry::metrics().frames_sent.increment(frames as u64);
                    Ok(())
                }
                Ok(Err(_)) => Err(End::Gone),
                Err(_) => {
                    tracing::info!(user = %self.user.id, "an event stream left unread; giving it up");
                    Err(End::Gone)
                }
            },
            () = outbox.closing() => Err(End::Gone),
        }
    }
}

/// Appends one SSE event: `id:` (a notification's), `event:` the frame's type, `data:` its JSON (one line:
/// JSON text holds no raw line breaks).
fn event(chunk: &mut BytesMut, frame: &[u8], id: Option<NotificationId>) {
    if let Some(id) = id {
        // Written in place (BytesMut is a fmt::Write): no string per event and connection.
        let _ = writeln!(chunk, "id: {id}");
    }
    chunk.put_slice(b"event: ");
    chunk.put_slice(protocol::frame_type(frame).as_bytes());
    chunk.put_slice(b"\ndata: ");
    chunk.put_slice(frame);
    chunk.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_framed_as_sse() {
        let mut chunk = BytesMut::new();
        let id = NotificationId::from_ulid(ulid::Ulid::from_parts(1, 2));
        event(&mut chunk, br#"{"type":"notification","data":{}}"#, Some(id));
        event(&mut chunk, &protocol::pong(), None);
        let text = String::from_utf8(chunk.to_vec()).unwrap();
        assert_eq!(
            text,
            format!("id: {id}\nevent: notification\ndata: {{\"type\":\"notification\",\"data\":{{}}}}\n\nevent: pong\ndata: {{\"type\":\"pong\"}}\n\n")
        );
    }
}
