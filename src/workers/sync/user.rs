//! A user document as the social platform's services send it — `_id` (an ObjectId as `{"$oid": "…"}` or a
//! plain string), `username`, `email`, `role`, `display_name`, `avatar_ipfs_hash`, and fields that are
//! ignored — read through the configured field mapping into a [`Profile`].
//!
//! A field that is absent or null is absent; a field of the wrong type (a number for `username`, an object
//! for `_id` that is not an ObjectId) makes the document malformed, which is never retried.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::domain::UserId;
use crate::ingest::amqp::message::json_path;
use crate::ingest::amqp::notifications::kind_of;

/// The profile fields, as Herald names them.
pub const FIELDS: [&str; 6] = ["user_id", "username", "email", "role", "display_name", "avatar_ipfs_hash"];

/// The longest value taken for a profile field (ids and names are short; an IPFS hash is under 100).
pub const VALUE_MAX: usize = 1024;

/// Where each profile field is read from in a document: a top-level key or a dotted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMap(BTreeMap<&'static str, String>);

impl Default for FieldMap {
    fn default() -> Self {
        let mut map: BTreeMap<&'static str, String> = FIELDS.iter().map(|f| (*f, (*f).to_owned())).collect();
        map.insert("user_id", "_id".to_owned());
        Self(map)
    }
}

impl FieldMap {
    /// The default mapping with `overrides` (profile field → document path) applied; an unknown profile
    /// field is an error.
    pub fn with(overrides: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut map = Self::default();
        for (field, path) in overrides {
            let Some(known) = FIELDS.iter().find(|f| **f == field.as_str()) else {
                return Err(format!("{field:?} is not a profile field (expected one of {})", FIELDS.join(", ")));
            };
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(format!("{field}: {path:?} is not a field path"));
            }
            map.0.insert(known, path.clone());
        }
        Ok(map)
    }

    pub fn path<'a>(&'a self, field: &'a str) -> &'a str {
        self.0.get(field).map_or(field, String::as_str)
    }
}

/// A user's profile, read from a document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    pub user_id: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub role: Option<String>,
    pub display_name: Option<String>,
    pub avatar_ipfs_hash: Option<String>,
}

fn text(doc: &Value, fields: &FieldMap, field: &'static str) -> Result<Option<String>, String> {
    let path = fields.path(field);
    match json_path(doc, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > VALUE_MAX => Err(format!("{path}: longer than {VALUE_MAX} bytes")),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{path}: expected a string, got {}", kind_of(other))),
    }
}

impl Profile {
    /// Reads a document; the reason when it is malformed.
    pub fn read(doc: &Value, fields: &FieldMap) -> Result<Self, String> {
        if !doc.is_object() {
            return Err(format!("the user is {}, not an object", kind_of(doc)));
        }
        let path = fields.path("user_id");
        let user_id = match json_path(doc, path) {
            None | Some(Value::Null) => return Err(format!("the user has no {path}")),
            Some(Value::String(id)) => id.clone(),
            Some(Value::Object(oid)) => match (oid.get("$oid"), oid.len()) {
                (Some(Value::String(id)), 1) => id.clone(),
                _ => return Err(format!("{path}: an object that is not {{\"$oid\": \"…\"}}")),
            },
            Some(other) => return Err(format!("{path}: expected a string or {{\"$oid\": …}}, got {}", kind_of(other))),
        };
        UserId::parse(&user_id).map_err(|e| format!("{path}: {}", e.reason))?;
        Ok(Self {
            user_id,
            username: text(doc, fields, "username")?,
            email: text(doc, fields, "email")?,
            role: text(doc, fields, "role")?,
            display_name: text(doc, fields, "display_name")?,
            avatar_ipfs_hash: text(doc, fields, "avatar_ipfs_hash")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn both_id_forms_and_the_mapping_are_read() {
        let fields = FieldMap::default();
        let oid = Profile::read(&json!({"_id": {"$oid": "65a1"}, "username": "ana", "extra": 1}), &fields).unwrap();
        assert_eq!((oid.user_id.as_str(), oid.username.as_deref()), ("65a1", Some("ana")));
        let plain = Profile::read(&json!({"_id": "u-2", "role": null}), &fields).unwrap();
        assert_eq!((plain.user_id.as_str(), plain.role), ("u-2", None));
        let custom = FieldMap::with(&[("username".into(), "profile.handle".into())].into()).unwrap();
        let nested = Profile::read(&json!({"_id": "u3", "profile": {"handle": "bo"}}), &custom).unwrap();
        assert_eq!(nested.username.as_deref(), Some("bo"));
        assert!(FieldMap::with(&[("nickname".into(), "x".into())].into()).is_err());
    }

    #[test]
    fn malformed_documents_say_why() {
        let fields = FieldMap::default();
        let err = |doc: Value| Profile::read(&doc, &fields).unwrap_err();
        assert!(err(json!({"username": "a"})).contains("no _id"));
        assert!(err(json!({"_id": 7})).contains("a number"));
        assert!(err(json!({"_id": {"$oid": 7}})).contains("$oid"));
        assert!(err(json!({"_id": "a", "username": 5})).contains("username"));
        assert!(err(json!({"_id": ""})).contains("_id"));
        assert!(err(json!(["x"])).contains("an array"));
    }
}
