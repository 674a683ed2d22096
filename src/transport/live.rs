//! What every live transport (WebSocket, SSE) shares: which queued frames a connection sends, the topics it
//! watches, what a subscriber is sent when it starts, and how written frames are counted.
//!
//! A connection registers with the hub *before* it reads its backlog, and a subscription *before* its
//! recovery is read, so nothing committed in between is missed; live frames up to the backlog's high-water
//! mark (or the recovery's seq) are then skipped, so nothing is sent twice. Frames for a topic the connection
//! no longer watches are dropped.

use std::collections::VecDeque;

use axum::http::HeaderMap;
use bytes::Bytes;

use crate::auth::User;
use crate::config::topics::RouteAlias;
use crate::domain::NotificationId;
use crate::error::{ApiError, CloseReason, TopicError};
use crate::hub::outbox::TopicMark;
use crate::hub::topics::alias_encoder;
use crate::hub::{Frame, Permit, TopicSubscription};
use crate::protocol;
use crate::state::AppState;
use crate::store::topics::Recovery;
use crate::store::{Since, Snapshot};
use crate::topics::TopicName;
use crate::transport::http::extract::bearer;

/// The newest unread notifications sent on a connect without `since`.
pub const UNREAD_BACKLOG: u32 = 100;
/// The most notifications sent on a connect with `since`; `more: true` says to continue from the last one.
pub const SINCE_BACKLOG: u32 = 1000;

/// The user a live connection is for, from its token (`?token=`, else `Authorization: Bearer`): 401 for a
/// missing, bad or expired one, 403 for a publisher key. `hint` says where the token goes.
pub async fn user_of(
    state: &AppState,
    token: Option<&str>,
    headers: &HeaderMap,
    hint: &'static str,
) -> Result<User, ApiError> {
    let token = token.or_else(|| bearer(headers)).ok_or(ApiError::Unauthorized(hint))?;
    if state.auth.is_api_key(token) {
        return Err(ApiError::Forbidden("a publisher key cannot open a user's connection"));
    }
    state.auth.user(token).await.map_err(|_| ApiError::Unauthorized("the token is invalid or expired"))
}

/// A place for one more live connection of `user`: 429 past the per-user limit (checked before the
/// connection opens, so opens racing each other can overshoot it by the few in flight), 503 when the
/// server's connection budget is spent.
pub fn place_for(state: &AppState, user: &User) -> Result<Permit, ApiError> {
    let held = state.hub.registry.connections_of(&user.id);
    if held >= state.ws.max_connections_per_user {
        return Err(ApiError::TooManyConnections(held));
    }
    state.hub.capacity.try_acquire().ok_or_else(|| {
        crate::telemetry::metrics().connections_refused.increment(1);
        ApiError::AtCapacity
    })
}

/// Reads what a connecting client is sent first: the unread backlog, or everything after `since`. The caller
/// holds its turn at `state.backlogs`.
pub async fn backlog(state: &AppState, user: &User, since: Option<NotificationId>) -> Result<Snapshot, CloseReason> {
    let from = match since {
        Some(id) => Since::After { id, limit: SINCE_BACKLOG },
        None => Since::Unread { limit: UNREAD_BACKLOG },
    };
    state.store.snapshot(&user.id, from).await.map_err(|e| {
        tracing::error!(error = %e, "could not read the backlog");
        CloseReason::Internal
    })
}

struct Watched {
    topic: TopicName,
    _subscription: TopicSubscription,
    /// The newest seq sent (or deliberately skipped) on this connection.
    high: u64,
}

/// A short list, searched by comparing names: a connection watches at most `max_per_connection` topics
/// (64 by default), and every live frame is looked up here, so a scan of a few names beats hashing one.
#[derive(Default)]
pub struct Watching {
    topics: Vec<Watched>,
}

impl Watching {
    fn find(&mut self, topic: &TopicName) -> Option<&mut Watched> {
        self.topics.iter_mut().find(|w| w.topic == *topic)
    }

    pub fn contains(&self, topic: &TopicName) -> bool {
        self.topics.iter().any(|w| w.topic == *topic)
    }

    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    pub fn add(&mut self, subscription: TopicSubscription) {
        let topic = subscription.topic().clone();
        self.topics.push(Watched { topic, _subscription: subscription, high: 0 });
    }

    /// Sets where live frames take over, once the recovery has been sent.
    pub fn started(&mut self, topic: &TopicName, high: u64) {
        if let Some(w) = self.find(topic) {
            w.high = high;
        }
    }

    pub fn remove(&mut self, topic: &TopicName) -> bool {
        let before = self.topics.len();
        self.topics.retain(|w| w.topic != *topic);
        self.topics.len() != before
    }

    /// Whether a live frame goes out: its topic is watched and it is newer than what was sent.
    pub fn admit(&mut self, mark: &TopicMark) -> bool {
        match self.find(&mark.topic) {
            Some(w) if mark.seq > w.high => {
                w.high = mark.seq;
                true
            }
            _ => false,
        }
    }
}

/// How a subscriber's frames look.
#[derive(Clone, Copy)]
pub enum Style<'a> {
    Ws,
    Alias(&'a RouteAlias),
}

/// The frames a subscriber is sent on subscribing: `history_gone` if the history does not reach back to
/// `since`, then `subscribed` with the state, then the missed events. Returns them and the seq live frames
/// take over from.
pub fn recovery_frames(style: Style<'_>, topic: &TopicName, recovery: &Recovery) -> (Vec<Bytes>, u64) {
    let mut frames = Vec::with_capacity(recovery.events.len() + 2);
    if recovery.gone {
        metrics::counter!("herald_topic_history_misses_total").increment(1);
    }
    match style {
        Style::Ws => {
            if recovery.gone {
                frames.push(protocol::topics::error(&TopicError::HistoryGone, topic));
            }
            frames.push(protocol::topics::subscribed(topic, recovery.state.as_ref()));
            frames.extend(recovery.events.iter().map(|e| protocol::topics::event(topic, e)));
        }
        Style::Alias(alias) => {
            let alias = alias_encoder(alias);
            if recovery.gone {
                frames.push(alias.error(&TopicError::HistoryGone, topic));
            }
            frames.push(alias.subscribed(topic, recovery.state.as_ref()));
            frames.extend(recovery.events.iter().map(|e| alias.event(topic, e)));
        }
    }
    (frames, recovery.state.as_ref().map_or(0, |s| s.seq))
}

/// Keeps, in order, the queued frames a connection sends: a notification newer than what it has sent (or
/// skipped on purpose), a topic event of a watched topic newer than its recovery, and everything else.
/// Returns the notifications kept, to be marked delivered once written.
pub fn admit(
    frames: &mut VecDeque<Frame>,
    high_water: &mut Option<NotificationId>,
    watching: &mut Option<Box<Watching>>,
) -> Vec<NotificationId> {
    let mut delivered = Vec::new();
    frames.retain(|frame| match frame.notification {
        _ if frame.topic.is_some() => {
            frame.topic.as_ref().is_some_and(|mark| watching.as_mut().is_some_and(|w| w.admit(mark)))
        }
        Some(id) if high_water.is_some_and(|seen| id <= seen) => false,
        Some(id) => {
            *high_water = Some(id);
            delivered.push(id);
            true
        }
        None => true,
    });
    delivered
}

/// Records what a written batch says about delivery latency and counts its frames: one latency sample per
/// batch (its oldest frame's), so the metric costs one clock read per write, not one per frame.
pub fn record_written(frames: &VecDeque<Frame>) {
    let m = crate::telemetry::metrics();
    m.frames_sent.increment(frames.len() as u64);
    if let Some(at) = frames.iter().find_map(|f| f.received_at) {
        m.publish_to_push.record(at.elapsed().as_secs_f64());
    }
}
