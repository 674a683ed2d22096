//! The topics one connection watches, and what a subscriber is sent when it starts.
//!
//! A subscription is registered with the hub *before* the recovery is read, so nothing committed in between
//! is missed; live frames up to the recovery's seq are then skipped, so nothing is sent twice. Frames for a
//! topic the connection no longer watches are dropped.

use bytes::Bytes;

use crate::config::topics::RouteAlias;
use crate::error::TopicError;
use crate::hub::outbox::TopicMark;
use crate::hub::topics::alias_encoder;
use crate::hub::TopicSubscription;
use crate::protocol;
use crate::store::topics::Recovery;
use crate::topics::TopicName;

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
