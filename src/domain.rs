//! Domain types, parsed once at the edge.
//!
//! Everything that crosses a trust boundary (an HTTP body, a WebSocket frame, a token claim) is parsed into
//! one of these newtypes exactly once; inside the crate nothing re-validates strings.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use ulid::Ulid;

/// Why a value was refused at the edge. The message names the field, so it can be shown to a client as is.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidField {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// Checks a free-form identifier: non-empty, bounded, and free of control characters.
fn check_ident(field: &'static str, value: &str, max: usize) -> Result<(), InvalidField> {
    if value.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(InvalidField::new(field, format!("must be at most {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidField::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// The id of a user: the `sub` of their token, the `user_id` a publisher names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(Arc<str>);

impl UserId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(value: &str) -> Result<Self, InvalidField> {
        check_ident("user_id", value, Self::MAX_LEN)?;
        Ok(Self(Arc::from(value)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind of a notification, e.g. `refund.approved`: letters, digits and `._:-`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct NotificationType(String);

impl NotificationType {
    pub const MAX_LEN: usize = 64;

    pub fn parse(value: &str) -> Result<Self, InvalidField> {
        check_ident("type", value, Self::MAX_LEN)?;
        if !value.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c)) {
            return Err(InvalidField::new("type", "may contain only letters, digits and . _ : -"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A publisher's key that makes creation repeat-safe, scoped to one user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 128;

    pub fn parse(value: &str) -> Result<Self, InvalidField> {
        check_ident("idempotency_key", value, Self::MAX_LEN)?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A notification id: a ULID, so ids sort by creation time as strings and as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NotificationId(Ulid);

impl NotificationId {
    pub fn parse(value: &str) -> Result<Self, InvalidField> {
        Ulid::from_string(value).map(Self).map_err(|_| InvalidField::new("id", "is not a notification id"))
    }

    pub fn from_ulid(ulid: Ulid) -> Self {
        Self(ulid)
    }

    /// The creation time encoded in the id, in milliseconds since the Unix epoch.
    pub fn timestamp_ms(self) -> u64 {
        self.0.timestamp_ms()
    }

    pub fn as_u128(self) -> u128 {
        self.0 .0
    }

    pub fn from_u128(value: u128) -> Self {
        Self(Ulid(value))
    }
}

impl fmt::Display for NotificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for NotificationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; ulid::ULID_LEN];
        let text = self.0.array_to_str(&mut buf);
        serializer.serialize_str(text)
    }
}

/// Milliseconds since the Unix epoch, written as RFC 3339 UTC on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self(i64::try_from(now.as_millis()).unwrap_or(i64::MAX))
    }

    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => t
                .format(&time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
                ))
                .unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

/// Bounds on what a publisher may put in one notification.
pub mod limits {
    pub const TITLE_MAX: usize = 256;
    pub const MESSAGE_MAX: usize = 16 * 1024;
    pub const DATA_MAX: usize = 64 * 1024;
}

/// A notification as a publisher asks for it, already validated.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub user_id: UserId,
    pub kind: NotificationType,
    pub title: Option<String>,
    pub message: Option<String>,
    /// The `data` object, kept as its JSON text: it is stored and sent on as is.
    pub data: Box<serde_json::value::RawValue>,
    pub idempotency_key: Option<IdempotencyKey>,
    /// When the request that carries it arrived, for the publish-to-push latency metric.
    pub received_at: Instant,
    /// It goes by email too (`"channels": ["inbox", "email"]`); the store ignores this.
    pub email: Option<EmailDelivery>,
}

/// How a notification that asks for the email channel is to be emailed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailDelivery {
    /// The email type that renders it: the generic `notification` unless the publisher names one.
    pub template: String,
    /// The recipient; without it, the user's address in the directory.
    pub to: Option<String>,
    /// Send only if the notification is still unread this long after it was created; reading it first
    /// cancels the email.
    pub if_unread_after: Option<std::time::Duration>,
}

impl EmailDelivery {
    /// The generic template every notification can be sent with.
    pub const GENERIC: &'static str = "notification";
    /// The longest an email may wait for its notification to be read.
    pub const MAX_WAIT_SECS: u64 = 30 * 24 * 3600;
}

/// The email options of a notification, as a publisher sends them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailOptions {
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

/// The body of one notification as a publisher sends it; `NewNotification::parse` validates it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationInput {
    pub user_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// Kept raw: it is checked to be an object and then stored and sent on without being rebuilt.
    #[serde(default)]
    pub data: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Where it goes: `["inbox"]` (the default) or `["inbox", "email"]`.
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// With the email channel: the template and the recipient, both optional.
    #[serde(default)]
    pub email: Option<EmailOptions>,
    /// With the email channel: seconds to wait, emailing only if the notification is still unread then.
    #[serde(default)]
    pub email_if_unread_after: Option<u64>,
}

impl NotificationInput {
    /// A notification of `kind` for `user_id` with nothing else set.
    pub fn new(user_id: String, kind: String) -> Self {
        Self {
            user_id,
            kind,
            title: None,
            message: None,
            data: None,
            idempotency_key: None,
            channels: None,
            email: None,
            email_if_unread_after: None,
        }
    }
}

/// Reads the channel fields: `None` for the inbox alone.
fn email_delivery(
    channels: Option<Vec<String>>,
    options: Option<EmailOptions>,
    if_unread_after: Option<u64>,
) -> Result<Option<EmailDelivery>, InvalidField> {
    let channels = channels.unwrap_or_default();
    if channels.len() > 8 {
        return Err(InvalidField::new("channels", "names at most two channels"));
    }
    let mut email = false;
    for channel in &channels {
        match channel.as_str() {
            "inbox" => {}
            "email" => email = true,
            _ => return Err(InvalidField::new("channels", "may hold only \"inbox\" and \"email\"")),
        }
    }
    if !channels.is_empty() && !channels.iter().any(|c| c == "inbox") {
        return Err(InvalidField::new("channels", "must include \"inbox\" (an email alone is POST /api/v1/emails)"));
    }
    if !email {
        if options.is_some() || if_unread_after.is_some() {
            return Err(InvalidField::new(
                "channels",
                "must include \"email\" for email or email_if_unread_after to apply",
            ));
        }
        return Ok(None);
    }
    let options = options.unwrap_or_default();
    let template = match options.template {
        Some(t)
            if t.is_empty() || t.len() > 64 || !t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) =>
        {
            return Err(InvalidField::new("email.template", "must be an email type's name"))
        }
        Some(t) => t,
        None => EmailDelivery::GENERIC.to_owned(),
    };
    if options.to.as_ref().is_some_and(|to| to.len() > 320) {
        return Err(InvalidField::new("email.to", "must be at most 320 bytes"));
    }
    if if_unread_after.is_some_and(|s| s > EmailDelivery::MAX_WAIT_SECS) {
        return Err(InvalidField::new(
            "email_if_unread_after",
            format!("must be at most {} seconds", EmailDelivery::MAX_WAIT_SECS),
        ));
    }
    Ok(Some(EmailDelivery {
        template,
        to: options.to,
        if_unread_after: if_unread_after.map(std::time::Duration::from_secs),
    }))
}

impl NewNotification {
    pub fn parse(input: NotificationInput, received_at: Instant) -> Result<Self, InvalidField> {
        let user_id = UserId::parse(&input.user_id)?;
        let kind = NotificationType::parse(&input.kind)?;
        let title = bounded_text("title", input.title, limits::TITLE_MAX)?;
        let message = bounded_text("message", input.message, limits::MESSAGE_MAX)?;
        let data = match input.data {
            Some(raw) if raw.get().trim_start().starts_with('{') => raw,
            Some(_) => return Err(InvalidField::new("data", "must be a JSON object")),
            None => empty_object(),
        };
        if data.get().len() > limits::DATA_MAX {
            return Err(InvalidField::new("data", format!("must be at most {} bytes as JSON", limits::DATA_MAX)));
        }
        let idempotency_key = input.idempotency_key.as_deref().map(IdempotencyKey::parse).transpose()?;
        let email = email_delivery(input.channels, input.email, input.email_if_unread_after)?;
        Ok(Self { user_id, kind, title, message, data, idempotency_key, received_at, email })
    }
}

fn empty_object() -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("{{}} is JSON"))
}

fn bounded_text(field: &'static str, value: Option<String>, max: usize) -> Result<Option<String>, InvalidField> {
    match value {
        Some(text) if text.len() > max => Err(InvalidField::new(field, format!("must be at most {max} bytes"))),
        other => Ok(other),
    }
}

/// A stored notification, as every reader sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub id: NotificationId,
    pub user_id: UserId,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: Option<String>,
    pub message: Option<String>,
    pub data: Box<serde_json::value::RawValue>,
    pub created_at: Timestamp,
    pub delivered: bool,
    pub delivered_at: Option<Timestamp>,
    pub read: bool,
    pub read_at: Option<Timestamp>,
}

impl Notification {
    /// A notification just created from `item` with `id`: created when the id says, unread, undelivered.
    pub fn created(item: &NewNotification, id: NotificationId) -> Self {
        Notification {
            id,
            user_id: item.user_id.clone(),
            kind: item.kind.as_str().to_owned(),
            title: item.title.clone(),
            message: item.message.clone(),
            data: item.data.clone(),
            created_at: Timestamp(i64::try_from(id.timestamp_ms()).unwrap_or(i64::MAX)),
            delivered: false,
            delivered_at: None,
            read: false,
            read_at: None,
        }
    }
}

/// A change to a user's inbox that every live connection of that user must hear about.
///
/// Events are produced only by the store, after the change they describe is committed, and in commit order.
///
/// `seq` is the event's place among the user's events in commit order (1, 2, 3, … with no gaps), given by a
/// store that several nodes share (PostgreSQL), so that a node receiving events from others can put them back
/// in that order and notice one missing. A store only one node uses (SQLite) gives none: its node hears only
/// its own events, in commit order already.
#[derive(Debug, Clone)]
pub enum InboxEvent {
    Created { notification: Arc<Notification>, received_at: Instant, seq: Option<u64> },
    Read { user_id: UserId, ids: Vec<NotificationId>, seq: Option<u64> },
    ReadAll { user_id: UserId, seq: Option<u64> },
}

impl InboxEvent {
    pub fn user_id(&self) -> &UserId {
        match self {
            InboxEvent::Created { notification, .. } => &notification.user_id,
            InboxEvent::Read { user_id, .. } | InboxEvent::ReadAll { user_id, .. } => user_id,
        }
    }

    pub fn seq(&self) -> Option<u64> {
        match self {
            InboxEvent::Created { seq, .. } | InboxEvent::Read { seq, .. } | InboxEvent::ReadAll { seq, .. } => *seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_refuse_empty_long_and_control() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse(&"a".repeat(129)).is_err());
        assert!(UserId::parse("a\nb").is_err());
    }

    #[test]
    fn types_are_restricted_to_a_safe_alphabet() {
        assert!(NotificationType::parse("refund.approved:v1").is_ok());
        assert!(NotificationType::parse("has space").is_err());
    }

    #[test]
    fn timestamps_format_as_rfc3339_utc() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(1_700_000_000_123).to_rfc3339(), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn notification_ids_round_trip() {
        let id = NotificationId::from_ulid(Ulid::new());
        assert_eq!(NotificationId::parse(&id.to_string()), Ok(id));
        assert!(NotificationId::parse("nope").is_err());
    }
}
