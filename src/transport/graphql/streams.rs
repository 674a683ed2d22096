//! The streams behind GraphQL subscriptions.
//!
//! A topic subscription registers a channel with the topic hub *before* it reads the state, so nothing
//! committed in between is missed, and skips changes up to the state's seq, so nothing is sent twice. A
//! subscriber that falls behind (its bounded channel is full) gets an error and its stream ends: subscribe
//! again to start from the state. The inbox stream is a connection in the user registry like a `/ws` one
//! (it counts towards the user's connection limit, and is closed at shutdown); it reads the same encoded
//! frames and turns them into GraphQL values. Every stream ends, with an error, when its token expires.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, Stream};
use serde_json::Value;
use tokio::sync::mpsc;

use super::schema::{error, InboxChange, InboxChangeKind, NotificationItem};
use crate::auth::{unix_now, User};
use crate::domain::NotificationId;
use crate::hub::{Lagged, Registration, Sink, TopicSubscription};
use crate::state::AppState;
use crate::topics::{SharedChange, TopicName, TopicState};
use async_graphql::ID;

/// Changes waiting for one GraphQL topic subscriber; past this it has fallen behind.
const CHANNEL: usize = 1024;

type Item<T> = async_graphql::Result<T>;

/// Waits until `expires_at` (Unix seconds), or forever with `None`.
async fn expired(expires_at: Option<u64>) {
    match expires_at {
        Some(at) => tokio::time::sleep(Duration::from_secs(at.saturating_sub(unix_now()))).await,
        None => std::future::pending().await,
    }
}

fn token_expired() -> async_graphql::Error {
    error("token_expired", "the token expired; subscribe again with a fresh one")
}

struct TopicStream {
    rx: mpsc::Receiver<SharedChange>,
    lagged: Arc<Lagged>,
    _subscription: TopicSubscription,
    first: Option<TopicState>,
    high: u64,
    expires_at: Option<u64>,
    done: bool,
}

/// The topic's state now (when it exists), then its state after each later event.
pub async fn topic(
    state: AppState,
    topic: TopicName,
    expires_at: Option<u64>,
) -> async_graphql::Result<impl Stream<Item = Item<TopicState>>> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let lagged = Arc::new(Lagged::default());
    let subscription = state.hub.topics.subscribe(topic.clone(), Sink::Channel { tx, lagged: lagged.clone() });
    // In a cluster: the state is read once every later event is sure to reach this node.
    if !subscription.started(crate::hub::stream::START_LIMIT).await {
        return Err(error("unavailable", "the cluster did not start the topic's stream in time; try again"));
    }
    let first = state.topics.state(&topic).await.map_err(|e| {
        tracing::error!(error = %e, %topic, "could not read a topic for a GraphQL subscription");
        error("store_unavailable", "the subscription could not start; try again")
    })?;
    let high = first.as_ref().map_or(0, |s| s.seq);
    let start = TopicStream { rx, lagged, _subscription: subscription, first, high, expires_at, done: false };
    Ok(stream::unfold(start, |mut s| async move {
        if s.done {
            return None;
        }
        if let Some(first) = s.first.take() {
            return Some((Ok(first), s));
        }
        loop {
            let next = tokio::select! {
                biased;
                next = s.rx.recv() => next,
                () = s.lagged.wait(), if s.rx.is_empty() => {
                    s.done = true;
                    return Some((Err(error("slow_consumer", "this subscription fell behind; subscribe again")), s));
                }
                () = expired(s.expires_at) => {
                    s.done = true;
                    return Some((Err(token_expired()), s));
                }
            };
            match next {
                Some(change) if change.event.seq > s.high => {
                    s.high = change.event.seq;
                    return Some((Ok(change.state.clone()), s));
                }
                Some(_) => continue,
                None => return None,
            }
        }
    }))
}

struct InboxStream {
    state: AppState,
    user: User,
    registration: Registration,
    ready: VecDeque<InboxChange>,
    done: bool,
}

/// The user's inbox changes, as `/ws` pushes them.
pub fn inbox(state: AppState, user: User) -> async_graphql::Result<impl Stream<Item = Item<InboxChange>>> {
    let held = state.hub.registry.connections_of(&user.id);
    if held >= state.ws.max_connections_per_user {
        return Err(error("too_many_connections", format!("this user already has {held} live connections")));
    }
    let registration = state.hub.registry.register(user.id.clone(), state.ws.outbox_capacity);
    let start = InboxStream { state, user, registration, ready: VecDeque::new(), done: false };
    Ok(stream::unfold(start, |mut s| async move {
        loop {
            if let Some(change) = s.ready.pop_front() {
                return Some((Ok(change), s));
            }
            if s.done {
                return None;
            }
            let (frames, closing) = s.registration.connection().outbox.take();
            if let Some(reason) = closing {
                s.done = true;
                return Some((Err(error("closed", format!("the stream closed: {}", reason.reason()))), s));
            }
            if frames.is_empty() {
                tokio::select! {
                    () = s.registration.connection().outbox.ready() => {}
                    () = expired(Some(s.user.expires_at)) => {
                        s.done = true;
                        return Some((Err(token_expired()), s));
                    }
                }
                continue;
            }
            let delivered: Vec<NotificationId> = frames.iter().filter_map(|f| f.notification).collect();
            s.ready.extend(frames.iter().filter_map(|f| inbox_change(&f.bytes)));
            s.state.store.mark_delivered(&s.user.id, &delivered);
        }
    }))
}

/// Reads back an inbox frame (see `protocol`) as a GraphQL value.
fn inbox_change(bytes: &[u8]) -> Option<InboxChange> {
    let frame: Value = serde_json::from_slice(bytes).ok()?;
    let ids = |frame: &Value| -> Vec<ID> {
        frame["ids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_str).map(|id| ID(id.to_owned())).collect())
            .unwrap_or_default()
    };
    match frame["type"].as_str()? {
        "notification" => {
            let n = &frame["data"];
            let text = |key: &str| n[key].as_str().map(str::to_owned);
            let item = NotificationItem {
                id: ID(text("id")?),
                kind: text("type")?,
                title: text("title"),
                message: text("message"),
                data: async_graphql::Json(n["data"].clone()),
                created_at: text("created_at")?,
                delivered: true,
                read: n["read"].as_bool().unwrap_or(false),
                read_at: text("read_at"),
            };
            Some(InboxChange { kind: InboxChangeKind::Created, ids: vec![item.id.clone()], notification: Some(item) })
        }
        "read" => Some(InboxChange { kind: InboxChangeKind::Read, notification: None, ids: ids(&frame) }),
        "read_all" => Some(InboxChange { kind: InboxChangeKind::ReadAll, notification: None, ids: Vec::new() }),
        _ => None,
    }
}
