//! User tokens, made in the test the way an application backend would make them.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The claims of a user token for `user` that expires in an hour.
pub fn claims_for(user: &str) -> Value {
    json!({ "sub": user, "iat": now(), "exp": now() + 3600 })
}

/// Signs `claims` with `algorithm` and `key`.
pub fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("sign a test token")
}

/// An HS256 user token for `user` signed with `secret`.
pub fn token_with_secret(secret: &str, user: &str) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(secret.as_bytes()), &claims_for(user))
}

/// An HS256 token for `user` whose `topics` claim grants `topics`.
pub fn topic_token_with_secret(secret: &str, user: &str, topics: &[&str]) -> String {
    let mut claims = claims_for(user);
    claims["topics"] = json!(topics);
    sign(Algorithm::HS256, &EncodingKey::from_secret(secret.as_bytes()), &claims)
}

/// An unsigned token (`"alg":"none"`, empty signature) for `user`.
pub fn alg_none_token(user: &str) -> String {
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(claims_for(user).to_string().as_bytes());
    format!("{header}.{payload}.")
}

/// A token with any header (`alg: none`, a `kid`, …) and no signature.
pub fn unsigned_token(header: &Value, claims: &Value) -> String {
    format!("{}.{}.", base64url(header.to_string().as_bytes()), base64url(claims.to_string().as_bytes()))
}

/// The claims of a token, without checking its signature.
pub fn decode_unverified(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .unwrap_or_else(|e| panic!("not a JWT ({e}): {token:?}"))
        .claims
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn base64url_has_no_padding() {
    assert_eq!(base64url(b"f"), "Zg");
    assert_eq!(base64url(b"fo"), "Zm8");
    assert_eq!(base64url(b"foo"), "Zm9v");
    assert_eq!(base64url(b"\xfb\xff"), "-_8");
}
