//! The servers the bench speaks to, and the one place that knows how each is addressed.
//!
//! **Herald** (and the floor, which copies its shape): WebSocket `GET /ws?token=JWT[&since=ID]`, a `hello`
//! frame before anything else, JSON frames with a `type` (`notifications`, `notification`, `event`, …), HTTP
//! publishes to `POST /api/v1/notifications[/batch]` and `POST /api/v1/topics/{name}/events`.
//!
//! **nchan** (nginx's push module, as `scripts/bench-peer nchan` configures it): WebSocket `GET /sub/{channel}`
//! with no token and no hello (a connection is open at HTTP 101), `POST /pub/{channel}` to publish (201 or 202,
//! any 2xx counts as acknowledged), and each message the subscriber receives is the published body itself. A
//! user's channel is `u-{user id}`, a topic's is its name with ':' replaced by '-'. nchan has no batch
//! endpoint, and its way of catching up (`Last-Event-ID` / message ids, not Herald's `since`) is not the
//! reconnect mode's, so the planner refuses those runs.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The server under test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    /// Herald, or the floor: `/ws`, `hello`, Herald's frames and publish API.
    #[default]
    Herald,
    /// nchan: `/sub/{channel}`, `POST /pub/{channel}`, raw message bodies.
    Nchan,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Herald => "herald",
            Peer::Nchan => "nchan",
        }
    }

    /// Whether a connection is open only once the server's `hello` frame has arrived.
    pub fn sends_hello(self) -> bool {
        matches!(self, Peer::Herald)
    }

    /// Whether every delivered item carries an id, ascending per user, that the bench can check order by.
    /// nchan's message ids are not in the message a plain WebSocket subscriber receives.
    pub fn has_ids(self) -> bool {
        matches!(self, Peer::Herald)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nchan channel ids here hold only letters, digits, '_' and '-', at most {MAX_CHANNEL} bytes (got {0:?})")]
pub struct ChannelError(pub String);

/// Longest channel id the bench makes. nchan itself allows more; this keeps a URL short.
const MAX_CHANNEL: usize = 255;

/// An nchan channel id, `[A-Za-z0-9_-]{1,255}`: it sits in a URL path without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Channel(String);

impl Channel {
    pub fn parse(id: &str) -> Result<Self, ChannelError> {
        let valid = !id.is_empty()
            && id.len() <= MAX_CHANNEL
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if valid {
            Ok(Self(id.to_owned()))
        } else {
            Err(ChannelError(id.to_owned()))
        }
    }

    /// The channel of one user: `u-{user id}`.
    pub fn for_user(user_id: &str) -> Result<Self, ChannelError> {
        Self::parse(&format!("u-{user_id}"))
    }

    /// The channel of a topic: its name with ':' replaced by '-' (`bench:hb-1` → `bench-hb-1`).
    pub fn for_topic(topic: &str) -> Result<Self, ChannelError> {
        Self::parse(&topic.replace(':', "-"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subscriber's WebSocket path.
    pub fn subscribe_path(&self) -> String {
        format!("/sub/{}", self.0)
    }

    /// The publisher's path.
    pub fn publish_path(&self) -> String {
        format!("/pub/{}", self.0)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// A worker's plan carries channels as text; each is checked again on the way in.
impl<'de> Deserialize<'de> for Channel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_topic_channels() {
        let user = Channel::for_user("hb-0a1b2c-17").expect("valid");
        assert_eq!(user.as_str(), "u-hb-0a1b2c-17");
        assert_eq!(user.subscribe_path(), "/sub/u-hb-0a1b2c-17");
        assert_eq!(user.publish_path(), "/pub/u-hb-0a1b2c-17");
        assert_eq!(Channel::for_topic("bench:hb-0a1b2c").expect("valid").as_str(), "bench-hb-0a1b2c");
        assert_eq!(Channel::for_topic("a:b:c_d").expect("valid").as_str(), "a-b-c_d");
    }

    #[test]
    fn rejects_what_a_url_path_would_need_escaped() {
        assert!(Channel::for_topic("news:eu.1").is_err());
        assert!(Channel::parse("").is_err());
        assert!(Channel::parse("a/b").is_err());
        assert!(Channel::parse("a b").is_err());
        assert!(Channel::parse(&"x".repeat(256)).is_err());
        assert!(serde_json::from_str::<Channel>(r#""a?b""#).is_err());
        assert_eq!(serde_json::from_str::<Channel>(r#""u-1""#).expect("valid"), Channel("u-1".to_owned()));
    }

    #[test]
    fn only_herald_sends_hello_and_ids() {
        assert!(Peer::Herald.sends_hello() && Peer::Herald.has_ids());
        assert!(!Peer::Nchan.sends_hello() && !Peer::Nchan.has_ids());
        assert_eq!(Peer::default(), Peer::Herald);
    }
}
