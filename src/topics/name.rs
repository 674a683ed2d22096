//! Topic names (`namespace:id`) and the patterns a token may grant (`order:*`), parsed once at the edge.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::domain::InvalidField;

/// A topic: `namespace:id`, e.g. `order:550e8400-e29b-41d4-a716-446655440000` or `intent:42`.
///
/// The namespace is 1–32 lowercase letters, digits, `_` or `-`, starting with a letter; the id is 1–128
/// letters, digits or `._:-`. Nothing else, so a name is safe in a URL path, a Redis key and a log line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TopicName(Arc<str>);

pub const NAMESPACE_MAX: usize = 32;
pub const ID_MAX: usize = 128;

fn invalid(reason: impl Into<String>) -> InvalidField {
    InvalidField { field: "topic", reason: reason.into() }
}

fn check_namespace(ns: &str) -> Result<(), InvalidField> {
    let first_ok = ns.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok
        || ns.len() > NAMESPACE_MAX
        || !ns.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
    {
        return Err(invalid(format!(
            "the namespace must be 1..={NAMESPACE_MAX} lowercase letters, digits, _ or -, starting with a letter"
        )));
    }
    Ok(())
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._:-".contains(c)
}

impl TopicName {
    pub fn parse(value: &str) -> Result<Self, InvalidField> {
        let Some((ns, id)) = value.split_once(':') else {
            return Err(invalid("must be namespace:id, e.g. order:42"));
        };
        check_namespace(ns)?;
        if id.is_empty() || id.len() > ID_MAX || !id.chars().all(id_char) {
            return Err(invalid(format!("the id must be 1..={ID_MAX} letters, digits or . _ : -")));
        }
        Ok(Self(Arc::from(value)))
    }

    /// A topic from a namespace and an id given separately (a route alias such as `/api/orders/{id}`).
    pub fn from_parts(namespace: &str, id: &str) -> Result<Self, InvalidField> {
        Self::parse(&format!("{namespace}:{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map_or("", |(ns, _)| ns)
    }

    pub fn id(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, id)| id)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a token's `topics` claim may grant: a topic exactly (`intent:42`), every topic of a namespace
/// (`order:*`), or the topics whose id starts with a prefix (`order:user-7-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPattern {
    Exact(TopicName),
    Prefix { namespace: String, id_prefix: String },
}

impl TopicPattern {
    pub fn parse(value: &str) -> Result<Self, InvalidField> {
        match value.strip_suffix('*') {
            None => TopicName::parse(value).map(TopicPattern::Exact),
            Some(head) => {
                let Some((ns, prefix)) = head.split_once(':') else {
                    return Err(invalid("a pattern must be namespace:* or namespace:prefix*"));
                };
                check_namespace(ns)?;
                if prefix.len() >= ID_MAX || !prefix.chars().all(id_char) {
                    return Err(invalid("a pattern's prefix may hold only letters, digits and . _ : -"));
                }
                Ok(TopicPattern::Prefix { namespace: ns.to_owned(), id_prefix: prefix.to_owned() })
            }
        }
    }

    pub fn matches(&self, topic: &TopicName) -> bool {
        match self {
            TopicPattern::Exact(name) => name == topic,
            TopicPattern::Prefix { namespace, id_prefix } => {
                topic.namespace() == namespace && topic.id().starts_with(id_prefix.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_namespace_and_id() {
        let t = TopicName::parse("order:550e8400-e29b-41d4-a716-446655440000").unwrap();
        assert_eq!((t.namespace(), t.id()), ("order", "550e8400-e29b-41d4-a716-446655440000"));
        assert_eq!(TopicName::parse("intent:42").unwrap().id(), "42");
        assert_eq!(TopicName::parse("a:b:c").unwrap().id(), "b:c");
        for bad in ["", "order", ":42", "order:", "Order:1", "1x:1", "order:a b", "order:a/b", "order:é"] {
            assert!(TopicName::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(TopicName::parse(&format!("order:{}", "x".repeat(ID_MAX + 1))).is_err());
        assert!(TopicName::parse(&format!("{}:1", "n".repeat(NAMESPACE_MAX + 1))).is_err());
    }

    #[test]
    fn patterns_grant_exactly_what_they_say() {
        let all_orders = TopicPattern::parse("order:*").unwrap();
        let mine = TopicPattern::parse("order:u7-*").unwrap();
        let one = TopicPattern::parse("intent:42").unwrap();
        let t = |s: &str| TopicName::parse(s).unwrap();
        assert!(all_orders.matches(&t("order:1")) && !all_orders.matches(&t("intent:1")));
        assert!(mine.matches(&t("order:u7-abc")) && !mine.matches(&t("order:u8-abc")));
        assert!(one.matches(&t("intent:42")) && !one.matches(&t("intent:421")));
        for bad in ["*", "order", "ord*", "*:1", "order:a b*"] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
