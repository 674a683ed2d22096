//! The wire format of live frames, shared by every transport.
//!
//! Architecture invariant: only this module knows how live frames look as JSON. The hub moves the bytes it
//! produces without looking inside; transports put them on their own framing (a WebSocket text frame today).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{InboxEvent, Notification, NotificationId, UserId};
use crate::error::FrameError;
use crate::topics::TopicName;

pub mod topics;

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    Hello { user_id: &'a UserId, connection_id: &'a str, unread_count: u64 },
    Notifications { items: &'a [Notification], more: bool },
    Notification { data: &'a Notification },
    Read { ids: &'a [NotificationId] },
    ReadAll,
    Error { code: &'a str, message: &'a str },
    Close { code: u16, reason: &'a str },
}

fn encode(frame: &ServerFrame<'_>) -> Bytes {
    encode_value(frame)
}

fn encode_value<T: Serialize + ?Sized>(frame: &T) -> Bytes {
    // Serializing these types cannot fail: every map key is a string and no value is a non-finite float.
    Bytes::from(serde_json::to_vec(frame).unwrap_or_default())
}

pub fn hello(user_id: &UserId, connection_id: &str, unread_count: u64) -> Bytes {
    encode(&ServerFrame::Hello { user_id, connection_id, unread_count })
}

pub fn backlog(items: &[Notification], more: bool) -> Bytes {
    encode(&ServerFrame::Notifications { items, more })
}

pub fn error(err: &FrameError) -> Bytes {
    encode(&ServerFrame::Error { code: err.code(), message: &err.to_string() })
}

pub fn pong() -> Bytes {
    Bytes::from_static(br#"{"type":"pong"}"#)
}

/// Sent just before a close with 4009: this node may have missed some of the user's events (the cluster
/// broker was away, or one did not arrive in time), so the client must catch up by reconnecting with `since`.
pub const RESYNC: &str = r#"{"type":"resync"}"#;

/// What a transport without close frames (SSE) sends where a WebSocket would close:
/// `{"type":"close","code","reason"}` with the WebSocket's close code.
pub fn close(reason: crate::error::CloseReason) -> Bytes {
    encode(&ServerFrame::Close { code: reason.code(), reason: reason.reason() })
}

/// The `type` of a frame this module encoded (every frame is an object whose first field is `type`), for
/// transports that name each frame (SSE's `event:`); `message` for anything else.
pub fn frame_type(frame: &[u8]) -> &str {
    const PREFIX: &[u8] = br#"{"type":""#;
    frame
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.iter().position(|b| *b == b'"').map(|end| &rest[..end]))
        .and_then(|kind| std::str::from_utf8(kind).ok())
        .filter(|kind| !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or("message")
}

/// The frame for an inbox event, built once and shared by every connection of the user.
pub fn event(event: &InboxEvent) -> Bytes {
    match event {
        InboxEvent::Created { notification, .. } => encode(&ServerFrame::Notification { data: notification }),
        InboxEvent::Read { ids, .. } => encode(&ServerFrame::Read { ids }),
        InboxEvent::ReadAll { .. } => encode(&ServerFrame::ReadAll),
    }
}

/// The most ids one `mark_read` frame may name.
pub const MAX_MARK_READ_IDS: usize = 1000;

/// What a client may ask over a live connection.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    MarkRead {
        ids: Vec<NotificationId>,
    },
    MarkAllRead,
    Ping,
    /// Watch a topic; with `since`, first the events after that sequence number.
    Subscribe {
        topic: TopicName,
        since: Option<u64>,
    },
    Unsubscribe {
        topic: TopicName,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeBody {
    #[serde(rename = "type")]
    _type: String,
    topic: String,
    #[serde(default)]
    since: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeBody {
    #[serde(rename = "type")]
    _type: String,
    topic: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkReadBody {
    #[serde(rename = "type")]
    _type: String,
    ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BareBody {
    #[serde(rename = "type")]
    _type: String,
}

impl ClientFrame {
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let value: Value = serde_json::from_str(text).map_err(|e| FrameError::InvalidJson(e.to_string()))?;
        let Some(kind) = value.get("type").and_then(Value::as_str).map(str::to_owned) else {
            return Err(FrameError::InvalidRequest("a frame must be an object with a string \"type\"".into()));
        };
        let invalid = |e: serde_json::Error| FrameError::InvalidRequest(format!("{kind}: {e}"));
        match kind.as_str() {
            "ping" => {
                serde_json::from_value::<BareBody>(value).map_err(invalid)?;
                Ok(ClientFrame::Ping)
            }
            "mark_all_read" => {
                serde_json::from_value::<BareBody>(value).map_err(invalid)?;
                Ok(ClientFrame::MarkAllRead)
            }
            "mark_read" => {
                let body = serde_json::from_value::<MarkReadBody>(value).map_err(invalid)?;
                if body.ids.is_empty() || body.ids.len() > MAX_MARK_READ_IDS {
                    return Err(FrameError::InvalidRequest(format!(
                        "mark_read: ids must hold 1 to {MAX_MARK_READ_IDS} ids"
                    )));
                }
                let ids = body
                    .ids
                    .iter()
                    .map(|id| {
                        NotificationId::parse(id).map_err(|_| {
                            FrameError::InvalidRequest(format!("mark_read: {id:?} is not a notification id"))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                Ok(ClientFrame::MarkRead { ids })
            }
            "subscribe" => {
                let body = serde_json::from_value::<SubscribeBody>(value).map_err(invalid)?;
                let topic =
                    TopicName::parse(&body.topic).map_err(|e| FrameError::InvalidRequest(format!("subscribe: {e}")))?;
                Ok(ClientFrame::Subscribe { topic, since: body.since })
            }
            "unsubscribe" => {
                let body = serde_json::from_value::<UnsubscribeBody>(value).map_err(invalid)?;
                let topic = TopicName::parse(&body.topic)
                    .map_err(|e| FrameError::InvalidRequest(format!("unsubscribe: {e}")))?;
                Ok(ClientFrame::Unsubscribe { topic })
            }
            _ => Err(FrameError::UnknownType(kind.chars().take(64).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse() {
        assert_eq!(ClientFrame::parse(r#"{"type":"ping"}"#).unwrap(), ClientFrame::Ping);
        assert_eq!(ClientFrame::parse(r#"{"type":"mark_all_read"}"#).unwrap(), ClientFrame::MarkAllRead);
        let id = ulid::Ulid::new().to_string();
        let frame = ClientFrame::parse(&format!(r#"{{"type":"mark_read","ids":["{id}"]}}"#)).unwrap();
        assert!(matches!(frame, ClientFrame::MarkRead { ids } if ids.len() == 1));
    }

    #[test]
    fn frames_name_their_type() {
        assert_eq!(frame_type(&pong()), "pong");
        assert_eq!(frame_type(RESYNC.as_bytes()), "resync");
        assert_eq!(frame_type(&close(crate::error::CloseReason::SlowConsumer)), "close");
        assert_eq!(
            frame_type(&event(&InboxEvent::ReadAll { user_id: UserId::parse("a").unwrap(), seq: None })),
            "read_all"
        );
        // Anything not shaped like Herald's frames is a plain message, never a line break in an SSE field.
        assert_eq!(frame_type(br#"{"kind":"x"}"#), "message");
        assert_eq!(frame_type(b"{\"type\":\"a\nevent: b\"}"), "message");
        assert_eq!(frame_type(br#"{"type":""}"#), "message");
    }

    #[test]
    fn bad_client_frames_get_codes() {
        assert_eq!(ClientFrame::parse("{").unwrap_err().code(), "invalid_json");
        assert_eq!(ClientFrame::parse(r#"{"type":"dance"}"#).unwrap_err().code(), "unknown_type");
        assert_eq!(ClientFrame::parse(r#"{"type":"mark_read","ids":"x"}"#).unwrap_err().code(), "invalid_request");
        assert_eq!(ClientFrame::parse(r#"{"type":"mark_read","ids":[]}"#).unwrap_err().code(), "invalid_request");
        assert_eq!(ClientFrame::parse(r#"[1]"#).unwrap_err().code(), "invalid_request");
        assert_eq!(ClientFrame::parse(r#"{"type":"subscribe","topic":"x"}"#).unwrap_err().code(), "invalid_request");
        assert_eq!(
            ClientFrame::parse(r#"{"type":"subscribe","topic":"order:1","since":-1}"#).unwrap_err().code(),
            "invalid_request"
        );
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"subscribe","topic":"order:1","since":3}"#),
            Ok(ClientFrame::Subscribe { since: Some(3), .. })
        ));
    }
}
