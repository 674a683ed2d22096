//! What nodes say to each other through the cluster broker, and its bytes.
//!
//! A compact binary form: a version byte, a kind byte, then the fields, strings as a 2-byte length and their
//! bytes. An event carries its frame already encoded, so the receiving node pushes the same bytes without
//! parsing the notification. Anything malformed (another version, a peer's bug) decodes to an error, never a
//! panic.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::domain::{NotificationId, UserId};

const VERSION: u8 = 1;

const EVENT: u8 = 1;
const HEARTBEAT: u8 = 2;
const PRESENCE_QUERY: u8 = 3;
const PRESENCE_REPLY: u8 = 4;
const AUDIT: u8 = 5;

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
        ];
        for m in messages {
            assert_eq!(Message::decode(m.encode()), Ok(m.clone()));
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
