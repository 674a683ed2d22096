//! What nodes say to each other through the cluster broker, and its bytes.
//!
//! A compact binary form: a version byte, a kind byte, then the fields, strings as a 2-byte length and their
//! bytes. An event carries its frame already encoded, so the receiving node pushes the same bytes without
//! parsing the notification. Anything malformed (another version, a peer's bug) decodes to an error, never a
//! panic.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::domain::{NotificationId, Timestamp, UserId};
use crate::topics::{SharedChange, TopicChange, TopicEvent, TopicName, TopicState};

const VERSION: u8 = 1;

const EVENT: u8 = 1;
const HEARTBEAT: u8 = 2;
const PRESENCE_QUERY: u8 = 3;
const PRESENCE_REPLY: u8 = 4;
const AUDIT: u8 = 5;
const TOPIC_EVENT: u8 = 6;

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A committed inbox event of `user`, the `seq`-th of theirs, as the frame their connections get.
    Event {
        origin: String,
        user: UserId,
        seq: u64,
        notification: Option<NotificationId>,
        frame: Bytes,
    },
    /// A node is alive (sent every heartbeat interval on the control channel).
    Heartbeat {
        node: String,
    },
    /// How many connections has `user` on your node? Answer on my node's channel.
    PresenceQuery {
        node: String,
        request: u64,
        user: UserId,
    },
    PresenceReply {
        node: String,
        request: u64,
        connections: u32,
    },
    /// `node` could not publish some events: every node checks its users against the store.
    Audit {
        node: String,
    },
    /// A committed topic event, with the topic's state after it (its `received_at` stays on its node).
    TopicEvent {
        origin: String,
        change: SharedChange,
    },
}

#[derive(Debug, Error, PartialEq)]
pub enum DecodeError {
    #[error("unknown version {0}")]
    Version(u8),
    #[error("unknown kind {0}")]
    Kind(u8),
    #[error("the message ends early")]
    Short,
    #[error("a text field is not UTF-8")]
    Utf8,
    #[error("the user id is invalid")]
    User,
    #[error("the topic name is invalid")]
    Topic,
    #[error("a topic's data is not a JSON object")]
    Data,
}

impl Message {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_u8(VERSION);
        match self {
            Message::Event { origin, user, seq, notification, frame } => {
                out.put_u8(EVENT);
                put_str(&mut out, origin);
                put_str(&mut out, user.as_str());
                out.put_u64(*seq);
                match notification {
                    Some(id) => {
                        out.put_u8(1);
                        out.put_u128(id.as_u128());
                    }
                    None => out.put_u8(0),
                }
                out.put_slice(frame);
            }
            Message::Heartbeat { node } => {
                out.put_u8(HEARTBEAT);
                put_str(&mut out, node);
            }
            Message::PresenceQuery { node, request, user } => {
                out.put_u8(PRESENCE_QUERY);
                put_str(&mut out, node);
                out.put_u64(*request);
                put_str(&mut out, user.as_str());
            }
            Message::PresenceReply { node, request, connections } => {
                out.put_u8(PRESENCE_REPLY);
                put_str(&mut out, node);
                out.put_u64(*request);
                out.put_u32(*connections);
            }
            Message::Audit { node } => {
                out.put_u8(AUDIT);
                put_str(&mut out, node);
            }
            Message::TopicEvent { origin, change } => {
                out.put_u8(TOPIC_EVENT);
                put_str(&mut out, origin);
                put_str(&mut out, change.topic.as_str());
                out.put_u8(u8::from(change.status_changed));
                let event = &change.event;
                out.put_u64(event.seq);
                put_str(&mut out, &event.kind);
                put_opt_str(&mut out, event.status.as_deref());
                put_opt_u8(&mut out, event.progress);
                out.put_i64(event.at.0);
                put_data(&mut out, &event.data);
                let state = &change.state;
                out.put_u64(state.seq);
                put_opt_str(&mut out, state.status.as_deref());
                put_opt_u8(&mut out, state.progress);
                out.put_i64(state.updated_at.0);
                out.put_i64(state.expires_at.0);
                put_data(&mut out, &state.data);
            }
        }
        out.freeze()
    }

    pub fn decode(bytes: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        match r.u8()? {
            EVENT => {
                let origin = r.string()?;
                let user = r.user()?;
                let seq = r.u64()?;
                let notification = match r.u8()? {
                    0 => None,
                    _ => Some(NotificationId::from_u128(r.u128()?)),
                };
                Ok(Message::Event { origin, user, seq, notification, frame: r.rest() })
            }
            HEARTBEAT => Ok(Message::Heartbeat { node: r.string()? }),
            PRESENCE_QUERY => Ok(Message::PresenceQuery { node: r.string()?, request: r.u64()?, user: r.user()? }),
            PRESENCE_REPLY => {
                Ok(Message::PresenceReply { node: r.string()?, request: r.u64()?, connections: r.u32()? })
            }
            AUDIT => Ok(Message::Audit { node: r.string()? }),
            TOPIC_EVENT => {
                let origin = r.string()?;
                let topic = TopicName::parse(&r.string()?).map_err(|_| DecodeError::Topic)?;
                let status_changed = r.u8()? != 0;
                let event = TopicEvent {
                    seq: r.u64()?,
                    kind: r.string()?,
                    status: r.opt_string()?,
                    progress: r.opt_u8()?,
                    at: Timestamp(r.i64()?),
                    data: r.data()?,
                };
                let state = TopicState {
                    topic: topic.clone(),
                    seq: r.u64()?,
                    status: r.opt_string()?,
                    progress: r.opt_u8()?,
                    updated_at: Timestamp(r.i64()?),
                    expires_at: Timestamp(r.i64()?),
                    data: r.data()?,
                };
                let change = TopicChange { topic, event, state, status_changed, received_at: None };
                Ok(Message::TopicEvent { origin, change: Arc::new(change) })
            }
            kind => Err(DecodeError::Kind(kind)),
        }
    }
}

fn put_str(out: &mut BytesMut, s: &str) {
    // Node and user ids are short (at most 128 bytes); a longer string is cut rather than misframed.
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

fn put_opt_str(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => {
            out.put_u8(1);
            put_str(out, s);
        }
        None => out.put_u8(0),
    }
}

fn put_opt_u8(out: &mut BytesMut, n: Option<u8>) {
    match n {
        Some(n) => {
            out.put_u8(1);
            out.put_u8(n);
        }
        None => out.put_u8(0),
    }
}

/// A topic's data as JSON text behind a 4-byte length (it may pass the 64 KiB of a short string).
fn put_data(out: &mut BytesMut, data: &Map<String, Value>) {
    let text = crate::store::topics::json(data);
    out.put_u32(text.len() as u32);
    out.put_slice(text.as_bytes());
}

struct Reader {
    bytes: Bytes,
    at: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len()).ok_or(DecodeError::Short)?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_be_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = u16::from_be_bytes(self.array()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| DecodeError::Utf8)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.string().map(Some),
        }
    }

    fn opt_u8(&mut self) -> Result<Option<u8>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.u8().map(Some),
        }
    }

    fn data(&mut self) -> Result<Map<String, Value>, DecodeError> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        match serde_json::from_slice(self.take(len)?) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(DecodeError::Data),
        }
    }

    fn user(&mut self) -> Result<UserId, DecodeError> {
        UserId::parse(&self.string()?).map_err(|_| DecodeError::User)
    }

    fn rest(self) -> Bytes {
        self.bytes.slice(self.at..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::parse("alice@example.com").unwrap()
    }

    #[test]
    fn every_message_round_trips() {
        let messages = [
            Message::Event {
                origin: "n1".into(),
                user: user(),
                seq: 42,
                notification: Some(NotificationId::from_u128(7 << 80)),
                frame: Bytes::from_static(br#"{"type":"notification"}"#),
            },
            Message::Event {
                origin: "n1".into(),
                user: user(),
                seq: u64::MAX,
                notification: None,
                frame: Bytes::new(),
            },
            Message::Heartbeat { node: "n2".into() },
            Message::PresenceQuery { node: "n3".into(), request: 9, user: user() },
            Message::PresenceReply { node: "n3".into(), request: 9, connections: 3 },
            Message::Audit { node: "n4".into() },
            Message::TopicEvent { origin: "n5".into(), change: topic_change() },
        ];
        for m in messages {
            assert_eq!(Message::decode(m.encode()), Ok(m.clone()));
        }
    }

    fn topic_change() -> SharedChange {
        let topic = TopicName::parse("intent:7").unwrap();
        let mut data = Map::new();
        data.insert("tx".into(), Value::from("0xab"));
        let event = TopicEvent {
            seq: 3,
            kind: "status".into(),
            status: Some("confirming".into()),
            progress: Some(60),
            data: data.clone(),
            at: Timestamp(1_700_000_000_000),
        };
        let state = TopicState {
            topic: topic.clone(),
            seq: 3,
            status: Some("confirming".into()),
            progress: None,
            data,
            updated_at: Timestamp(1_700_000_000_000),
            expires_at: Timestamp(1_700_021_600_000),
        };
        Arc::new(TopicChange { topic, event, state, status_changed: true, received_at: None })
    }

    #[test]
    fn a_topic_event_cut_anywhere_is_an_error() {
        let good = Message::TopicEvent { origin: "n".into(), change: topic_change() }.encode();
        for cut in 0..good.len() {
            assert!(Message::decode(good.slice(..cut)).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = Message::PresenceQuery { node: "n3".into(), request: 9, user: user() }.encode();
        for cut in 0..good.len() {
            assert!(Message::decode(good.slice(..cut)).is_err(), "cut at {cut}");
        }
        assert_eq!(Message::decode(Bytes::from_static(&[2, 1])), Err(DecodeError::Version(2)));
        assert_eq!(Message::decode(Bytes::from_static(&[1, 99])), Err(DecodeError::Kind(99)));
        assert_eq!(Message::decode(Bytes::from_static(&[1, 2, 0, 1, 0xff])), Err(DecodeError::Utf8));
        assert_eq!(Message::decode(Bytes::from_static(&[1, 2, 0xff, 0xff, b'a'])), Err(DecodeError::Short));
        // An empty user id is refused as the rest of Herald refuses it.
        assert_eq!(
            Message::decode(Bytes::from_static(&[1, 3, 0, 1, b'n', 0, 0, 0, 0, 0, 0, 0, 9, 0, 0])),
            Err(DecodeError::User)
        );
    }
}
