//! What an order is: its id and the request it was made from, parsed once at the edge. Past
//! [`OrderRequest::parse`] nothing re-validates a token, an amount or a slippage.

use std::fmt;

use rand::RngCore;
use serde::Deserialize;
use thiserror::Error;

/// A token symbol such as `SOL` or `USDC`: 1–16 characters, none of them whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token(String);

pub const TOKEN_MAX_CHARS: usize = 16;
/// The largest amount accepted, so that every amount out the mock DEXs compute stays a sane number.
pub const AMOUNT_MAX: f64 = 1e12;
pub const SLIPPAGE_MAX: f64 = 50.0;
pub const SLIPPAGE_DEFAULT: f64 = 0.5;

/// Why a request was refused; the message is shown to the caller as it is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid { field, reason: reason.into() }
}

impl Token {
    pub fn parse(field: &'static str, value: String) -> Result<Self, Invalid> {
        let chars = value.chars().count();
        if chars == 0 || chars > TOKEN_MAX_CHARS {
            return Err(invalid(field, format!("must be 1 to {TOKEN_MAX_CHARS} characters")));
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(field, "must not contain whitespace or control characters"));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The request body of `POST /api/orders/execute`, before validation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawOrder {
    pub token_in: String,
    pub token_out: String,
    pub amount: f64,
    pub slippage: Option<f64>,
}

/// A market order: swap `amount` of `token_in` for as much `token_out` as the best DEX gives, and fail
/// rather than accept less than the quote minus `slippage_percent`.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRequest {
    pub token_in: Token,
    pub token_out: Token,
    /// Positive, finite and at most [`AMOUNT_MAX`].
    pub amount: f64,
    /// 0 to [`SLIPPAGE_MAX`] percent.
    pub slippage_percent: f64,
}

impl OrderRequest {
    pub fn parse(raw: RawOrder) -> Result<Self, Invalid> {
        let token_in = Token::parse("tokenIn", raw.token_in)?;
        let token_out = Token::parse("tokenOut", raw.token_out)?;
        if token_in == token_out {
            return Err(invalid("tokenOut", "must differ from tokenIn"));
        }
        // `!(x > 0)` rather than `x <= 0` so that NaN is refused too (serde_json never yields one, but the
        // rule should not depend on that).
        if !(raw.amount > 0.0 && raw.amount <= AMOUNT_MAX) {
            return Err(invalid("amount", format!("must be a number greater than 0 and at most {AMOUNT_MAX:e}")));
        }
        let slippage_percent = raw.slippage.unwrap_or(SLIPPAGE_DEFAULT);
        if !(0.0..=SLIPPAGE_MAX).contains(&slippage_percent) {
            return Err(invalid("slippage", format!("must be a percentage from 0 to {SLIPPAGE_MAX}")));
        }
        Ok(Self { token_in, token_out, amount: raw.amount, slippage_percent })
    }
}

/// An order's id: a random (version 4) UUID in its usual hyphenated lowercase form, which is also a valid
/// Herald topic id (`order:<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub fn new_v4(rng: &mut impl RngCore) -> Self {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        // RFC 9562: the version nibble is 4, the variant bits are 10.
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
        Self(format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Herald topic this order's events go to.
    pub fn topic(&self) -> String {
        format!("order:{}", self.0)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An order's status, named as Herald's `order` lifecycle names them: pending → routing → building →
/// submitted → confirmed | failed, with submitted → execution-failed → retry-pending → building | submitted
/// for a retry, and failed reachable from any status that is not final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    Routing,
    Building,
    Submitted,
    ExecutionFailed,
    RetryPending,
    Confirmed,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Routing => "routing",
            Status::Building => "building",
            Status::Submitted => "submitted",
            Status::ExecutionFailed => "execution-failed",
            Status::RetryPending => "retry-pending",
            Status::Confirmed => "confirmed",
            Status::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Confirmed | Status::Failed)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn raw(token_in: &str, token_out: &str, amount: f64, slippage: Option<f64>) -> RawOrder {
        RawOrder { token_in: token_in.into(), token_out: token_out.into(), amount, slippage }
    }

    #[test]
    fn a_plain_order_parses_with_the_default_slippage() {
        let order = OrderRequest::parse(raw("SOL", "USDC", 10.0, None)).unwrap();
        assert_eq!((order.token_in.as_str(), order.token_out.as_str()), ("SOL", "USDC"));
        assert_eq!((order.amount, order.slippage_percent), (10.0, SLIPPAGE_DEFAULT));
        let edges = OrderRequest::parse(raw("x", &"y".repeat(16), AMOUNT_MAX, Some(50.0))).unwrap();
        assert_eq!(edges.slippage_percent, 50.0);
        assert!(OrderRequest::parse(raw("SOL", "USDC", 1e-9, Some(0.0))).is_ok());
    }

    #[test]
    fn bad_orders_name_the_field_at_fault() {
        let cases = [
            (raw("", "USDC", 1.0, None), "tokenIn"),
            (raw("SOL", &"U".repeat(17), 1.0, None), "tokenOut"),
            (raw("S OL", "USDC", 1.0, None), "tokenIn"),
            (raw("SOL", "SOL", 1.0, None), "tokenOut"),
            (raw("SOL", "USDC", 0.0, None), "amount"),
            (raw("SOL", "USDC", -3.0, None), "amount"),
            (raw("SOL", "USDC", f64::NAN, None), "amount"),
            (raw("SOL", "USDC", 2e12, None), "amount"),
            (raw("SOL", "USDC", 1.0, Some(-0.1)), "slippage"),
            (raw("SOL", "USDC", 1.0, Some(50.5)), "slippage"),
            (raw("SOL", "USDC", 1.0, Some(f64::NAN)), "slippage"),
        ];
        for (order, field) in cases {
            let described = format!("{order:?}");
            assert_eq!(OrderRequest::parse(order).unwrap_err().field, field, "{described}");
        }
    }

    #[test]
    fn a_sixteen_character_token_counts_characters_not_bytes() {
        assert!(Token::parse("tokenIn", "é".repeat(16)).is_ok());
        assert!(Token::parse("tokenIn", "é".repeat(17)).is_err());
    }

    #[test]
    fn order_ids_are_version_4_uuids() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..100 {
            let id = OrderId::new_v4(&mut rng);
            let s = id.as_str();
            let groups: Vec<&str> = s.split('-').collect();
            assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{s}");
            assert!(s.chars().all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)), "{s}");
            assert!(groups[2].starts_with('4'), "{s}");
            assert!(groups[3].starts_with(['8', '9', 'a', 'b']), "{s}");
            assert_eq!(id.topic(), format!("order:{s}"));
        }
    }
}
