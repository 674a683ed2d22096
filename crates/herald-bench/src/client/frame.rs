//! The server frames the bench reads, parsed only as far as it needs.
//!
//! Frames are deserialized straight from the received text into borrowed fields: the frame
//! type, and for each notification its `id` and the bench's own `data.t` / `data.seq`. Every
//! other field is skipped without being allocated.
//!
//! nchan sends each published body as it was posted, with no envelope: the message itself is the item
//! (`{"type":"bench","data":{"t":…,"seq":…}}`, or targeted's body with its `user_id`), live, with no id.

use std::borrow::Cow;

use serde::Deserialize;

use crate::peer::Peer;

/// The smallest ULID. A user that has seen nothing yet reconnects with `since` set to it, so
/// that the backlog holds everything the user was sent.
pub const SINCE_START: &str = "00000000000000000000000000";

/// A frame as sent by Herald (or the floor), or a message as nchan sends it.
#[derive(Debug)]
pub enum Frame<'a> {
    /// `{"type":"hello",...}`: the first frame on every connection.
    Hello,
    /// `{"type":"notifications","items":[...],"more":bool}`: the backlog, oldest first.
    Backlog { items: Vec<Item<'a>>, more: bool },
    /// `{"type":"notification","data":{...}}`, or a topic's
    /// `{"type":"event","topic","seq","event":{...,"data":{...}}}`.
    Live(Item<'a>),
    /// `{"type":"subscribed","topic",...}`: a topic subscription is in place.
    Subscribed,
    /// Anything else (`pong`, `read`, `error`, …): not part of what the bench measures.
    Other,
}

/// One notification or topic event.
#[derive(Debug, Deserialize)]
pub struct Item<'a> {
    /// A notification's id; topic events have none (they have a seq), nor have nchan's messages.
    #[serde(default, borrow)]
    pub id: Cow<'a, str>,
    #[serde(default)]
    pub data: Option<Payload>,
}

/// The payload the bench publishes: send time in Unix microseconds, and sequence number.
/// Both are optional so that a notification someone else published is recognised as foreign
/// rather than failing the whole frame.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Payload {
    #[serde(default)]
    pub t: Option<u64>,
    #[serde(default)]
    pub seq: Option<u64>,
}

impl Item<'_> {
    /// `(seq, t)` when this is one of the bench's own notifications.
    pub fn stamp(&self) -> Option<(u64, u64)> {
        let payload = self.data?;
        Some((payload.seq?, payload.t?))
    }
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<Item<'a>>,
    #[serde(default, borrow)]
    event: Option<Item<'a>>,
    #[serde(default, borrow)]
    items: Option<Vec<Item<'a>>>,
    #[serde(default)]
    more: bool,
}

impl<'a> Frame<'a> {
    /// A frame in `peer`'s protocol.
    pub fn parse_for(peer: Peer, text: &'a str) -> Result<Self, serde_json::Error> {
        match peer {
            Peer::Herald => Self::parse(text),
            Peer::Nchan => Self::parse_raw(text),
        }
    }

    /// nchan: a published body, received as it was posted. Any JSON object is an item (one the bench did
    /// not publish has no stamp and counts as foreign); anything else is a bad frame.
    pub fn parse_raw(text: &'a str) -> Result<Self, serde_json::Error> {
        Ok(Frame::Live(serde_json::from_str(text)?))
    }

    /// A Herald (or floor) frame.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        let raw: Raw<'a> = serde_json::from_str(text)?;
        Ok(match raw.kind.as_ref() {
            "hello" => Frame::Hello,
            "notifications" => Frame::Backlog { items: raw.items.unwrap_or_default(), more: raw.more },
            "notification" => match raw.data {
                Some(item) => Frame::Live(item),
                None => Frame::Other,
            },
            "event" => match raw.event {
                Some(item) => Frame::Live(item),
                None => Frame::Other,
            },
            "subscribed" => Frame::Subscribed,
            _ => Frame::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        let hello = r#"{"type":"hello","user_id":"u","connection_id":"c","unread_count":0}"#;
        assert!(matches!(Frame::parse(hello), Ok(Frame::Hello)));

        let live = r#"{"type":"notification","data":{"id":"01J","user_id":"u","type":"bench",
            "title":null,"message":"a \"quoted\" text","data":{"t":5,"seq":7},"read":false}}"#;
        match Frame::parse(live).expect("parse") {
            Frame::Live(item) => {
                assert_eq!(item.id, "01J");
                assert_eq!(item.stamp(), Some((7, 5)));
            }
            other => panic!("unexpected {other:?}"),
        }

        let backlog = r#"{"type":"notifications","items":[{"id":"a","data":{"t":1,"seq":2}},
            {"id":"b","data":{"other":true}}],"more":true}"#;
        match Frame::parse(backlog).expect("parse") {
            Frame::Backlog { items, more } => {
                assert!(more);
                assert_eq!(items.len(), 2);
                assert_eq!(items[0].stamp(), Some((2, 1)));
                assert_eq!(items[1].stamp(), None);
            }
            other => panic!("unexpected {other:?}"),
        }

        let event = r#"{"type":"event","topic":"t:1","seq":3,"event":{"seq":3,"type":"bench",
            "status":null,"progress":null,"data":{"t":1,"seq":0},"at":"2026-12-01T00:00:00.000Z"}}"#;
        match Frame::parse(event).expect("parse") {
            Frame::Live(item) => assert_eq!(item.stamp(), Some((0, 1))),
            other => panic!("unexpected {other:?}"),
        }
        let subscribed = r#"{"type":"subscribed","topic":"t:1","state":null}"#;
        assert!(matches!(Frame::parse(subscribed), Ok(Frame::Subscribed)));
        assert!(matches!(Frame::parse(r#"{"type":"pong"}"#), Ok(Frame::Other)));
        assert!(Frame::parse("not json").is_err());
    }

    #[test]
    fn nchan_messages_are_the_published_bodies() {
        let event = r#"{"type":"bench","data":{"t":1733000000000000,"seq":41}}"#;
        match Frame::parse_for(Peer::Nchan, event).expect("parse") {
            Frame::Live(item) => {
                assert_eq!(item.stamp(), Some((41, 1_733_000_000_000_000)));
                assert!(item.id.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
        // Targeted's body, with its user id, as nchan relays it.
        let notification = r#"{"user_id":"hb-0a1b2c-3","type":"bench","data":{"t":5,"seq":7}}"#;
        match Frame::parse_for(Peer::Nchan, notification).expect("parse") {
            Frame::Live(item) => assert_eq!(item.stamp(), Some((7, 5))),
            other => panic!("unexpected {other:?}"),
        }
        // Someone else's message on the channel: an item, but not one of the bench's.
        match Frame::parse_for(Peer::Nchan, r#"{"hello":"world"}"#).expect("parse") {
            Frame::Live(item) => assert_eq!(item.stamp(), None),
            other => panic!("unexpected {other:?}"),
        }
        // Herald's envelope means nothing to nchan's parser: it is a body like any other.
        match Frame::parse_for(Peer::Nchan, r#"{"type":"hello","user_id":"u"}"#).expect("parse") {
            Frame::Live(item) => assert_eq!(item.stamp(), None),
            other => panic!("unexpected {other:?}"),
        }
        assert!(Frame::parse_for(Peer::Nchan, "plain text").is_err());
        assert!(Frame::parse_for(Peer::Nchan, "[1,2]").is_err());
        assert!(Frame::parse_for(Peer::Nchan, r#"{"data":"not an object"}"#).is_err());
        // And Herald's parser still wants Herald's frames.
        assert!(matches!(Frame::parse_for(Peer::Herald, event), Ok(Frame::Other)));
    }
}
