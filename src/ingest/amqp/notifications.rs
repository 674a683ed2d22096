//! The notification consumer: a message becomes a notification, exactly as if it had been published
//! through `POST /api/v1/notifications`, in one of three shapes (see the README's AMQP section).
//!
//! Redelivery is harmless because every notification made from a message has an idempotency key, taken
//! in this order: the message's own `idempotency_key`; else its AMQP `message_id` (`amqp-id:<id>`); else
//! the configured field (`field:<value>`); else a hash of the body (`sha256:<hex>`). Long ids and values
//! are hashed to fit the key's 128 bytes.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::consumer::{Handler, Outcome};
use super::message::Message;
use crate::config::amqp::Shape;
use crate::domain::{IdempotencyKey, NewNotification, NotificationInput};
use crate::store::{Store, StoreError};
use crate::workers::email::EmailChannel;

/// How messages of one queue become notifications.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub shape: Shape,
    pub idempotency_field: Option<String>,
}

pub struct NotificationHandler {
    store: Arc<dyn Store>,
    /// For notifications that ask for the email channel.
    email: Option<Arc<EmailChannel>>,
    mapping: Mapping,
}

impl NotificationHandler {
    pub fn new(store: Arc<dyn Store>, email: Option<Arc<EmailChannel>>, mapping: Mapping) -> Self {
        Self { store, email, mapping }
    }

    /// A notification whose email could never be sent is poison, as it is a 4xx over HTTP.
    fn check_email(&self, item: &NewNotification) -> Result<(), String> {
        if item.email.is_none() {
            return Ok(());
        }
        let Some(channel) = &self.email else {
            return Err("it asks for the email channel, which is off (no HERALD_SMTP_HOST)".into());
        };
        channel.check_notification(item).map_err(|e| format!("{}: {e}", e.code()))
    }
}

fn store_outcome(e: StoreError) -> Outcome {
    match e {
        StoreError::Closed => Outcome::Requeue,
        other => Outcome::Transient(other.to_string()),
    }
}

#[async_trait]
impl Handler for NotificationHandler {
    async fn handle(&self, group: &[Message]) -> Vec<Outcome> {
        let mut outcomes = vec![Outcome::Done; group.len()];
        let mut items = Vec::with_capacity(group.len());
        let mut positions = Vec::with_capacity(group.len());
        for (i, message) in group.iter().enumerate() {
            match self.mapping.decode(message).and_then(|item| self.check_email(&item).map(|()| item)) {
                Ok(item) => {
                    items.push(item);
                    positions.push(i);
                }
                Err(reason) => outcomes[i] = Outcome::Poison(reason),
            }
        }
        if items.is_empty() {
            return outcomes;
        }
        let deliveries: Vec<_> = items.iter().map(|i| i.email.clone()).collect();
        // One insert for the whole group: one transaction, shared with whatever else the writer has queued.
        match self.store.insert(items).await {
            Err(e) => {
                let outcome = store_outcome(e);
                for i in positions {
                    outcomes[i] = outcome.clone();
                }
            }
            // Each email is queued before its message is acked; one that fails is retried with its message,
            // whose notification is then found stored (by its key) and its email queued.
            Ok(stored) => {
                for ((delivery, stored), i) in deliveries.into_iter().zip(&stored).zip(positions) {
                    let (Some(delivery), Some(channel)) = (delivery, &self.email) else { continue };
                    if let Err(e) = channel.notification(stored.notification(), &delivery).await {
                        outcomes[i] = store_outcome(e);
                    }
                }
            }
        }
        outcomes
    }
}

/// The NestJS microservice envelope. NestJS may add an `id` (request-response messages); it is accepted
/// and ignored.
#[derive(Deserialize)]
struct NestEnvelope {
    pattern: Value,
    data: Option<Map<String, Value>>,
}

/// The largest message body taken, as for an HTTP publish body (the notification's own parts are
/// bounded further by the domain's limits).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The fields of a NestJS `data` object that are the notification's own; everything else goes to `data`.
const NEST_FIELDS: [&str; 9] =
    ["user_id", "type", "title", "message", "idempotency_key", "data", "channels", "email", "email_if_unread_after"];

impl Mapping {
    /// Turns one message into a notification, or says why it never can.
    pub fn decode(&self, message: &Message) -> Result<NewNotification, String> {
        // Checked before parsing: a huge body is refused without the cost of reading it as JSON.
        if message.body.len() > MAX_MESSAGE_BYTES {
            return Err(format!("the body is {} bytes, over the limit of {MAX_MESSAGE_BYTES}", message.body.len()));
        }
        let text = std::str::from_utf8(&message.body).map_err(|_| "the body is not UTF-8".to_owned())?;
        let (mut input, parsed) = match &self.shape {
            Shape::Plain => {
                let input: NotificationInput =
                    serde_json::from_str(text).map_err(|e| format!("not a notification: {e}"))?;
                let parsed = match &self.idempotency_field {
                    Some(_) if input.idempotency_key.is_none() => Some(parse_object(text)?),
                    _ => None,
                };
                (input, parsed)
            }
            Shape::NestJs { pattern } => {
                let envelope: NestEnvelope =
                    serde_json::from_str(text).map_err(|e| format!("not a NestJS message: {e}"))?;
                if envelope.pattern.as_str() != Some(pattern.as_str()) {
                    return Err(format!("pattern {} is not {pattern:?}", envelope.pattern));
                }
                let data = envelope.data.ok_or("the message has no data object")?;
                (nest_input(&data)?, Some(Value::Object(data)))
            }
            Shape::Typed { type_field, targets, title_field, message_field } => {
                let object = parse_object(text)?;
                let Value::Object(fields) = &object else { return Err("the body is not a JSON object".into()) };
                let kind = match fields.get(type_field) {
                    Some(Value::String(kind)) => kind.clone(),
                    Some(_) => return Err(format!("field {type_field:?} is not a string")),
                    None => return Err(format!("the message has no {type_field:?} field")),
                };
                let user_field =
                    targets.get(&kind).ok_or_else(|| format!("no rule names the user for type {kind:?}"))?;
                let user_id = user_id(fields.get(user_field), user_field)?;
                let input = NotificationInput {
                    user_id,
                    kind,
                    title: optional_text(fields, title_field.as_deref())?,
                    message: optional_text(fields, message_field.as_deref())?,
                    // The whole message is the data, as it arrived.
                    data: Some(RawValue::from_string(text.to_owned()).map_err(|e| e.to_string())?),
                    idempotency_key: own_key(fields)?,
                    channels: None,
                    email: None,
                    email_if_unread_after: None,
                };
                (input, Some(object))
            }
            // Chain consumers have their own handler (`chain.rs`); nothing maps one to a notification.
            Shape::Chain(_) => return Err("a chain event is not a notification".into()),
            Shape::Email { .. } => return Err("an email request is not a notification".into()),
            Shape::UserSync => return Err("a user profile change is not a notification".into()),
        };
        if input.idempotency_key.is_none() {
            input.idempotency_key = Some(self.derived_key(message, parsed.as_ref())?.as_str().to_owned());
        }
        NewNotification::parse(input, message.received_at).map_err(|e| e.to_string())
    }

    /// The idempotency key of a message that carries none of its own.
    fn derived_key(&self, message: &Message, parsed: Option<&Value>) -> Result<IdempotencyKey, String> {
        let configured = self.idempotency_field.as_deref().and_then(|f| field(parsed?, f));
        IdempotencyKey::parse(&message.derived_key(configured.as_deref())).map_err(|e| e.to_string())
    }
}

fn parse_object(text: &str) -> Result<Value, String> {
    match serde_json::from_str(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err("the body is not a JSON object".to_owned()),
        Err(e) => Err(format!("the body is not JSON: {e}")),
    }
}

fn nest_input(data: &Map<String, Value>) -> Result<NotificationInput, String> {
    let kind = match data.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return Err("data.type is not a string".into()),
        None => return Err("data has no type".into()),
    };
    let idempotency_key = own_key(data)?;
    // The notification's data: the message's own `data` object if it has one, with every other field
    // of the message beside it (the message's own `data` keys win).
    let mut extra: Map<String, Value> =
        data.iter().filter(|(k, _)| !NEST_FIELDS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    match data.get("data") {
        None | Some(Value::Null) => {}
        Some(Value::Object(own)) => extra.extend(own.iter().map(|(k, v)| (k.clone(), v.clone()))),
        Some(_) => return Err("data.data is not an object".into()),
    }
    let raw = serde_json::to_string(&extra).map_err(|e| e.to_string())?;
    Ok(NotificationInput {
        user_id: user_id(data.get("user_id"), "user_id")?,
        kind,
        title: optional_text(data, Some("title"))?,
        message: optional_text(data, Some("message"))?,
        data: Some(RawValue::from_string(raw).map_err(|e| e.to_string())?),
        idempotency_key,
        channels: typed_field(data, "channels")?,
        email: typed_field(data, "email")?,
        email_if_unread_after: typed_field(data, "email_if_unread_after")?,
    })
}

/// An optional field of a NestJS `data` object read as `T`; null counts as absent.
fn typed_field<T: serde::de::DeserializeOwned>(data: &Map<String, Value>, name: &str) -> Result<Option<T>, String> {
    match data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => T::deserialize(value).map(Some).map_err(|e| format!("field {name:?}: {e}")),
    }
}

/// The message's own `idempotency_key`, when it has one.
fn own_key(fields: &Map<String, Value>) -> Result<Option<String>, String> {
    match fields.get("idempotency_key") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(key)) => Ok(Some(key.clone())),
        Some(other) => Err(format!("field \"idempotency_key\" is not a string: {}", kind_of(other))),
    }
}

/// A user id: a string, a whole number, or a MongoDB ObjectId as `{"$oid": "…"}`.
fn user_id(value: Option<&Value>, name: &str) -> Result<String, String> {
    match value {
        Some(Value::String(id)) => Ok(id.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Some(Value::Object(o)) if o.len() == 1 && o.get("$oid").is_some_and(Value::is_string) => {
            Ok(o["$oid"].as_str().unwrap_or_default().to_owned())
        }
        Some(other) => Err(format!("field {name:?} is not a user id (a string or a whole number): {}", kind_of(other))),
        None => Err(format!("the message has no {name:?} field naming the user")),
    }
}

fn optional_text(fields: &Map<String, Value>, name: Option<&str>) -> Result<Option<String>, String> {
    let Some(name) = name else { return Ok(None) };
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(format!("field {name:?} is not a string: {}", kind_of(other))),
    }
}

/// What kind of JSON value this is, for an error message ("a number").
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field by dotted path (`order.id`), as text when it is a string or a number.
fn field(value: &Value, path: &str) -> Option<String> {
    let found = super::message::json_path(value, path)?;
    match found {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use lapin::BasicProperties;

    use super::*;

    fn message(body: &str, message_id: Option<&str>) -> Message {
        let mut properties = BasicProperties::default();
        if let Some(id) = message_id {
            properties = properties.with_message_id(id.into());
        }
        Message {
            body: body.as_bytes().to_vec(),
            properties,
            exchange: String::new(),
            routing_key: "q".into(),
            attempt: 0,
            redelivered: false,
            received_at: Instant::now(),
            delivery_tag: 1,
        }
    }

    fn typed() -> Mapping {
        let targets: BTreeMap<String, String> =
            [("RefundStatusChanged", "user_id"), ("NewRefundRequest", "event_owner_id")]
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect();
        Mapping {
            shape: Shape::Typed { type_field: "type".into(), targets, title_field: None, message_field: None },
            idempotency_field: None,
        }
    }

    #[test]
    fn typed_messages_go_to_the_field_their_type_names() {
        let m = typed();
        let body = r#"{"type":"NewRefundRequest","event_owner_id":7,"user_id":"client","request_id":123}"#;
        let n = m.decode(&message(body, None)).unwrap();
        assert_eq!(n.user_id.as_str(), "7");
        assert_eq!(n.kind.as_str(), "NewRefundRequest");
        assert_eq!(n.data.get(), body, "the whole message is the data");
        assert!(n.idempotency_key.unwrap().as_str().starts_with("sha256:"));
        let keyed = r#"{"type":"NewRefundRequest","event_owner_id":7,"idempotency_key":"refund-124"}"#;
        assert_eq!(m.decode(&message(keyed, Some("m"))).unwrap().idempotency_key.unwrap().as_str(), "refund-124");
    }

    #[test]
    fn typed_poison_is_named() {
        let m = typed();
        let reason = |body: &str| m.decode(&message(body, None)).unwrap_err();
        assert!(reason(r#"{"type":"Other","user_id":"u"}"#).contains("no rule"));
        assert!(reason(r#"{"type":"RefundStatusChanged"}"#).contains("user_id"));
        assert!(reason(r#"{"type":"RefundStatusChanged","user_id":[1]}"#).contains("not a user id"));
        assert!(reason(r#"{"user_id":"u"}"#).contains("\"type\""));
        assert!(reason("[1]").contains("not a JSON object"));
        assert!(reason("nope").contains("not JSON"));
        let huge =
            format!(r#"{{"type":"NewRefundRequest","event_owner_id":"o","pad":"{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES));
        assert!(reason(&huge).contains("over the limit"));
        let bad_utf8 = Message { body: vec![0xff, 0xfe], ..message("", None) };
        assert!(m.decode(&bad_utf8).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn nestjs_messages_keep_extra_fields_as_data() {
        let m = Mapping { shape: Shape::NestJs { pattern: "create_notification".into() }, idempotency_field: None };
        let body = r#"{"pattern":"create_notification","id":"abc","data":{"user_id":"u1","type":"follow","title":"New follower","message":"bob follows you","sender_id":"bob"}}"#;
        let n = m.decode(&message(body, Some("m-1"))).unwrap();
        assert_eq!((n.user_id.as_str(), n.kind.as_str()), ("u1", "follow"));
        assert_eq!(n.title.as_deref(), Some("New follower"));
        assert_eq!(n.data.get(), r#"{"sender_id":"bob"}"#);
        assert_eq!(n.idempotency_key.unwrap().as_str(), "amqp-id:m-1");
        let wrong = r#"{"pattern":"delete_notification","data":{"user_id":"u1","type":"x"}}"#;
        assert!(m.decode(&message(wrong, None)).unwrap_err().contains("pattern"));
    }

    #[test]
    fn plain_messages_are_the_publish_body() {
        let m = Mapping { shape: Shape::Plain, idempotency_field: Some("data.order".into()) };
        let own = r#"{"user_id":"u","type":"t","idempotency_key":"k1"}"#;
        assert_eq!(m.decode(&message(own, Some("m"))).unwrap().idempotency_key.unwrap().as_str(), "k1");
        let by_field = r#"{"user_id":"u","type":"t","data":{"order":42}}"#;
        assert_eq!(m.decode(&message(by_field, None)).unwrap().idempotency_key.unwrap().as_str(), "field:42");
        let unknown = r#"{"user_id":"u","type":"t","colour":"red"}"#;
        assert!(m.decode(&message(unknown, None)).unwrap_err().contains("colour"));
        let long_id = "x".repeat(200);
        let key = m.decode(&message(by_field, Some(&long_id))).unwrap().idempotency_key.unwrap();
        assert!(key.as_str().starts_with("amqp-id:sha256:") && key.as_str().len() <= 128);
    }
}
