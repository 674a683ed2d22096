//! Correlation keys: how a chain event (a transaction on some chain) is matched to the topic of the intent
//! that caused it. A key is `(chain_id, tx_hash, kind)`, parsed once here, wherever it comes from: a
//! publisher's `POST /api/v1/correlations`, a `correlate` inside a topic event, or a chain event read from
//! RabbitMQ. Parsing normalizes it, so the same transaction always makes the same key.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::InvalidField;

/// The longest transaction hash (or signature) taken: a 0x-hex hash is 66, a Solana signature 88.
pub const TX_HASH_MAX: usize = 130;
/// The longest `kind`.
pub const KIND_MAX: usize = 32;
/// The kind a key has when none is given, as the minting system's lookups use.
pub const DEFAULT_KIND: &str = "mint";

/// A correlation key as a publisher sends it: `{"chain_id": 1 | "1", "tx_hash": "0x…", "kind"?: "mint"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationInput {
    pub chain_id: Value,
    pub tx_hash: Value,
    #[serde(default)]
    pub kind: Option<Value>,
}

/// A checked key. `tx_hash` is normalized: a `0x`-prefixed hex hash is lowercased (hex compares without
/// regard to case); anything else (a base58 signature, say) is kept exactly, since its case matters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CorrelationKey {
    pub chain_id: u64,
    pub tx_hash: String,
    pub kind: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidField {
    InvalidField { field, reason: reason.into() }
}

impl CorrelationKey {
    /// Parses a key from its parts as they arrived in JSON. `chain_id` is a whole number or its decimal text,
    /// at most 2^63 − 1 (a PostgreSQL `bigint`, as the lookup binds it); `kind` defaults to `mint`.
    pub fn parse(chain_id: &Value, tx_hash: &Value, kind: Option<&Value>) -> Result<Self, InvalidField> {
        let chain_id = parse_chain_id(chain_id)?;
        let Value::String(tx_hash) = tx_hash else {
            return Err(invalid("tx_hash", "must be a string"));
        };
        let kind = match kind {
            None | Some(Value::Null) => DEFAULT_KIND.to_owned(),
            Some(Value::String(kind)) => kind.clone(),
            Some(_) => return Err(invalid("kind", "must be a string")),
        };
        Self::new(chain_id, tx_hash, &kind)
    }

    pub fn from_input(input: &CorrelationInput) -> Result<Self, InvalidField> {
        Self::parse(&input.chain_id, &input.tx_hash, input.kind.as_ref())
    }

    /// A key from typed parts, checked and normalized.
    pub fn new(chain_id: u64, tx_hash: &str, kind: &str) -> Result<Self, InvalidField> {
        if chain_id > i64::MAX as u64 {
            return Err(invalid("chain_id", "must be at most 9223372036854775807"));
        }
        if tx_hash.is_empty() || tx_hash.len() > TX_HASH_MAX || !tx_hash.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid("tx_hash", format!("must be 1..={TX_HASH_MAX} letters or digits")));
        }
        check_kind(kind)?;
        Ok(Self { chain_id, tx_hash: normalize_hash(tx_hash), kind: kind.to_owned() })
    }
}

/// A kind is 1–32 letters, digits or `._:-`.
pub fn check_kind(kind: &str) -> Result<(), InvalidField> {
    let ok = !kind.is_empty()
        && kind.len() <= KIND_MAX
        && kind.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid("kind", format!("must be 1..={KIND_MAX} letters, digits or . _ : -")))
    }
}

fn parse_chain_id(value: &Value) -> Result<u64, InvalidField> {
    let parsed = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| invalid("chain_id", "must be a whole number (or its decimal text), 0 or more"))
}

/// `0xAB…` → `0xab…`; anything that is not 0x-hex is returned as it is.
fn normalize_hash(hash: &str) -> String {
    let hex = hash.strip_prefix("0x").or_else(|| hash.strip_prefix("0X"));
    match hex {
        Some(digits) if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_hexdigit()) => {
            format!("0x{}", digits.to_ascii_lowercase())
        }
        _ => hash.to_owned(),
    }
}

impl fmt::Display for CorrelationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chain {} tx {} ({})", self.chain_id, self.tx_hash, self.kind)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(value: Value) -> Result<CorrelationKey, InvalidField> {
        let input: CorrelationInput = serde_json::from_value(value).unwrap();
        CorrelationKey::from_input(&input)
    }

    #[test]
    fn keys_are_normalized_so_one_transaction_makes_one_key() {
        let a = key(json!({"chain_id": 1, "tx_hash": "0xABcd01"})).unwrap();
        let b = key(json!({"chain_id": "1", "tx_hash": "0xabCD01", "kind": "mint"})).unwrap();
        assert_eq!(a, b);
        assert_eq!((a.chain_id, a.tx_hash.as_str(), a.kind.as_str()), (1, "0xabcd01", "mint"));
        // A base58 signature keeps its case; so does a 0x-string that is not hex.
        let sig = key(json!({"chain_id": 101, "tx_hash": "5VfYmGBjvQKe3", "kind": "swap"})).unwrap();
        assert_eq!(sig.tx_hash, "5VfYmGBjvQKe3");
        assert_eq!(key(json!({"chain_id": 1, "tx_hash": "0xZZ"})).unwrap().tx_hash, "0xZZ");
        assert_eq!(serde_json::to_value(&a).unwrap(), json!({"chain_id": 1, "tx_hash": "0xabcd01", "kind": "mint"}));
    }

    #[test]
    fn bad_keys_name_their_field() {
        let long = "a".repeat(TX_HASH_MAX + 1);
        for (bad, field) in [
            (json!({"chain_id": -1, "tx_hash": "0xab"}), "chain_id"),
            (json!({"chain_id": 1.5, "tx_hash": "0xab"}), "chain_id"),
            (json!({"chain_id": "0x1", "tx_hash": "0xab"}), "chain_id"),
            (json!({"chain_id": "", "tx_hash": "0xab"}), "chain_id"),
            (json!({"chain_id": u64::MAX, "tx_hash": "0xab"}), "chain_id"),
            (json!({"chain_id": 1, "tx_hash": ""}), "tx_hash"),
            (json!({"chain_id": 1, "tx_hash": "0xab cd"}), "tx_hash"),
            (json!({"chain_id": 1, "tx_hash": long}), "tx_hash"),
            (json!({"chain_id": 1, "tx_hash": 12}), "tx_hash"),
            (json!({"chain_id": 1, "tx_hash": "0xab", "kind": ""}), "kind"),
            (json!({"chain_id": 1, "tx_hash": "0xab", "kind": "a b"}), "kind"),
        ] {
            assert_eq!(key(bad.clone()).unwrap_err().field, field, "{bad}");
        }
        assert!(serde_json::from_value::<CorrelationInput>(json!({"chain_id": 1, "tx_hash": "0xab", "x": 1})).is_err());
    }
}
