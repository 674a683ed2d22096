//! An email request as producers send it, over HTTP or RabbitMQ: `{"type","data","to"?,"idempotency_key"?}`.
//! [`Composer::compose`] checks it and renders it once, when it is accepted, so that a request that can
//! never be sent (an unknown type, a missing variable, no valid recipient) is refused at the door with its
//! reason, and what is stored is exactly what will be sent.

use std::str::FromStr;

use lettre::message::Mailbox;
use lettre::Address;
use serde::Deserialize;
use serde_json::Value;

use super::templates::{Catalog, TemplateError};
use crate::domain::{IdempotencyKey, Timestamp};
use crate::store::emails::NewEmail;

/// The most a request's variables may take, encoded: an email is not a file transfer.
pub const MAX_DATA_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailInput {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: Value,
    /// The recipient; without it, `data.email`.
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("{0}")]
    Recipient(String),
    #[error("{0}")]
    Invalid(String),
}

impl RequestError {
    /// The stable code a client sees.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Template(TemplateError::UnknownType(_)) => "unknown_email_type",
            RequestError::Template(TemplateError::MissingVariable { .. }) => "missing_variable",
            RequestError::Template(_) => "template_failed",
            RequestError::Recipient(_) => "invalid_recipient",
            RequestError::Invalid(_) => "invalid_request",
        }
    }
}

/// Checks and renders requests into what the outbox stores.
pub struct Composer {
    catalog: Catalog,
    /// The domain of Message-IDs: the From address's.
    domain: String,
}

impl Composer {
    pub fn new(catalog: Catalog, from: &Mailbox) -> Self {
        Self { catalog, domain: from.email.domain().to_owned() }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn compose(&self, input: EmailInput, now: Timestamp) -> Result<NewEmail, RequestError> {
        if input.data.is_null() {
            return Err(RequestError::Template(TemplateError::NotAnObject { kind: input.kind }));
        }
        let size = serde_json::to_vec(&input.data).map_or(usize::MAX, |v| v.len());
        if size > MAX_DATA_BYTES {
            return Err(RequestError::Invalid(format!("data is {size} bytes; the most is {MAX_DATA_BYTES}")));
        }
        let idempotency_key = match input.idempotency_key {
            None => None,
            Some(key) => {
                Some(IdempotencyKey::parse(&key).map_err(|e| RequestError::Invalid(e.to_string()))?.as_str().to_owned())
            }
        };
        let to = recipient(input.to.as_deref(), &input.data)?;
        let rendered = self.catalog.render(&input.kind, &input.data)?;
        let id = ulid::Ulid::new().to_string();
        Ok(NewEmail {
            message_id: format!("<{id}@{}>", self.domain),
            id,
            kind: input.kind,
            to,
            subject: rendered.subject,
            html: rendered.html,
            text: rendered.text,
            idempotency_key,
            created_at: now,
            due_at: now,
            link: None,
        })
    }
}

/// The recipient: `to`, else the request's `data.email`; one mailbox, checked.
fn recipient(to: Option<&str>, data: &Value) -> Result<String, RequestError> {
    let text = match to {
        Some(to) => to,
        None => match data.get("email") {
            Some(Value::String(email)) => email.as_str(),
            _ => return Err(RequestError::Recipient("no recipient: set \"to\", or data.email".into())),
        },
    };
    check_address(text)
}

/// One mailbox (`a@b` or `Name <a@b>`), checked and written back in its normal form.
pub fn check_address(text: &str) -> Result<String, RequestError> {
    if text.len() > 320 {
        return Err(RequestError::Recipient("the recipient is longer than 320 bytes".into()));
    }
    // A bare address or `Name <address>`; the name may not smuggle in a second recipient.
    match Mailbox::from_str(text) {
        Ok(mailbox) => Ok(mailbox.to_string()),
        Err(_) => match Address::from_str(text) {
            Ok(address) => Ok(address.to_string()),
            Err(e) => Err(RequestError::Recipient(format!("the recipient is not an email address: {e}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn composer() -> Composer {
        Composer::new(Catalog::load(None).unwrap(), &"Herald <no-reply@example.com>".parse().unwrap())
    }

    fn input(value: Value) -> EmailInput {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_request_is_rendered_once_with_its_recipient_and_message_id() {
        let email = composer()
            .compose(
                input(json!({"type": "create-account", "data": {"email": "ana@example.org", "otpCode": "123456"}})),
                Timestamp(1),
            )
            .unwrap();
        assert_eq!(email.to, "ana@example.org");
        assert!(email.text.contains("123456"), "{}", email.text);
        assert_eq!(email.message_id, format!("<{}@example.com>", email.id));
    }

    #[test]
    fn refusals_have_stable_codes() {
        let c = composer();
        let code = |v: Value| c.compose(input(v), Timestamp(1)).unwrap_err().code();
        assert_eq!(code(json!({"type": "nope", "data": {"email": "a@b.c"}})), "unknown_email_type");
        assert_eq!(code(json!({"type": "create-account", "data": {"email": "a@b.c"}})), "missing_variable");
        assert_eq!(code(json!({"type": "create-account", "data": {"otpCode": "1"}})), "invalid_recipient");
        assert_eq!(
            code(json!({"type": "create-account", "data": {"email": "not an address", "otpCode": "1"}})),
            "invalid_recipient"
        );
        assert_eq!(
            code(json!({"type": "create-account", "to": "a@b.c, c@d.e", "data": {"otpCode": "1"}})),
            "invalid_recipient"
        );
        assert_eq!(code(json!({"type": "create-account", "data": null})), "template_failed");
        let big = "x".repeat(MAX_DATA_BYTES);
        assert_eq!(
            code(json!({"type": "create-account", "data": {"email": "a@b.c", "otpCode": big}})),
            "invalid_request"
        );
    }
}
