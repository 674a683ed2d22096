//! HS256 user tokens, minted by hand: a fixed header, claims `sub` and `exp`, and an HMAC-SHA256
//! signature. This is all Herald's user auth needs from the bench, and it keeps the RSA and
//! elliptic-curve code of a full JWT library out of the build.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// `{"alg":"HS256","typ":"JWT"}`, base64url-encoded once.
const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Tokens live this long: far beyond any run, yet not forever.
const LIFETIME_SECS: u64 = 24 * 60 * 60;

/// Signs user tokens with one secret. Cloning the keyed HMAC state per token avoids rehashing
/// the key each time.
#[derive(Clone)]
pub struct TokenMinter {
    mac: Hmac<Sha256>,
}

impl TokenMinter {
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length (long ones are hashed first), so this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self { mac }
    }

    /// A token for `sub`, valid for a day from `now_secs` (Unix time). `sub` is one of the
    /// bench's own user ids (`hb-RUN-N`), which never needs JSON escaping.
    pub fn mint(&self, sub: &str, now_secs: u64) -> String {
        self.sign(&format!(r#"{{"sub":"{sub}","exp":{}}}"#, now_secs + LIFETIME_SECS))
    }

    /// A token for `sub` whose `topics` claim lets it watch `topic` (a valid topic name, which
    /// needs no JSON escaping).
    pub fn mint_for_topic(&self, sub: &str, now_secs: u64, topic: &str) -> String {
        self.sign(&format!(r#"{{"sub":"{sub}","exp":{},"topics":["{topic}"]}}"#, now_secs + LIFETIME_SECS))
    }

    fn sign(&self, claims: &str) -> String {
        let mut token = String::with_capacity(HEADER_B64.len() + claims.len() * 4 / 3 + 48);
        token.push_str(HEADER_B64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.as_bytes(), &mut token);
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        let signature = mac.finalize().into_bytes();
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        token
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// The `sub` claim of a JWT, without checking its signature or expiry. The floor server uses
/// this because it accepts any token but still needs to know whose connection it is.
pub fn unverified_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Claims>(&bytes).ok().map(|c| c.sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_constant_matches_its_json() {
        let header = URL_SAFE_NO_PAD.decode(HEADER_B64).expect("base64");
        assert_eq!(header, br#"{"alg":"HS256","typ":"JWT"}"#);
    }

    #[test]
    fn token_carries_subject_and_verifies() {
        let minter = TokenMinter::new(b"secret");
        let token = minter.mint("hb-abc-7", 1_000);
        assert_eq!(unverified_subject(&token).as_deref(), Some("hb-abc-7"));

        let (signed, signature) = token.rsplit_once('.').expect("three parts");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"secret").expect("key");
        mac.update(signed.as_bytes());
        let expected = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(signature, expected);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(unverified_subject("not-a-jwt"), None);
        assert_eq!(unverified_subject("a.!!!.c"), None);
    }
}
