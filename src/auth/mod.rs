//! Who is calling: users by JWT, publishers by API key.
//!
//! The accepted algorithms follow from the configured key alone (HS256 for a secret; the RSA or EC family
//! for a PEM public key; for a JWKS, each key's own), never from the token, so `alg: none` and algorithm
//! confusion are refused.

pub mod jwks;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::topics::{TopicName, TopicPattern};
use thiserror::Error;

use crate::config::{AuthSettings, JwtKey, Secret};
use crate::domain::UserId;

#[derive(Debug, Error)]
pub enum AuthError {
    #[error("no JWT key is configured")]
    NoKey,
    #[error("the public key is neither an RSA nor an EC key in PEM form: {0}")]
    BadPublicKey(String),
    #[error("the token is invalid: {0}")]
    InvalidToken(String),
    #[error("tokens can be minted only with an HS256 secret; with a public key they come from your identity provider")]
    CannotMint,
    #[error("the token's key (kid) is not in the JWKS")]
    UnknownKey,
    #[error("setting up the JWKS client: {0}")]
    Jwks(#[from] jwks::JwksError),
}

/// A verified user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    /// When the token expires, in seconds since the Unix epoch; a live connection is closed then.
    pub expires_at: u64,
    /// The topics the token's `topics` claim lets this user watch (names or patterns such as `order:*`).
    pub topics: Arc<[TopicPattern]>,
}

impl User {
    /// Whether the token grants watching `topic`. (Namespaces configured public are checked by the caller.)
    pub fn may_watch(&self, topic: &TopicName) -> bool {
        self.topics.iter().any(|pattern| pattern.matches(topic))
    }
}

/// The most entries a `topics` claim may hold: it is checked on every subscribe.
pub const MAX_TOPIC_GRANTS: usize = 64;

/// The claims Herald signs.
#[derive(Debug, Serialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    topics: Vec<String>,
}

/// The claims Herald reads from a verified token. `iss` and `aud` are checked by the validation (which
/// accepts an `aud` list, as identity providers send it) and not needed after; `exp` may be fractional.
#[derive(Debug, Deserialize)]
struct Verified {
    sub: String,
    exp: f64,
    #[serde(default)]
    topics: Option<Vec<String>>,
}

/// Where the keys that verify user tokens come from.
enum Keys {
    /// One configured key (an HS256 secret or a PEM public key).
    Static(DecodingKey),
    /// An identity provider's published set, by `kid`.
    Jwks(Arc<jwks::Jwks>),
}

pub struct Authenticator {
    keys: Keys,
    /// Every check but the algorithms, which a JWKS key brings itself.
    validation: Validation,
    encoding: Option<EncodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    api_keys: Vec<Secret>,
}

/// Seconds of clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 5;

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthError> {
        let (keys, encoding, algorithms) = match settings.jwt_key.as_ref().ok_or(AuthError::NoKey)? {
            JwtKey::Hs256(secret) => (
                Keys::Static(DecodingKey::from_secret(secret.expose().as_bytes())),
                Some(EncodingKey::from_secret(secret.expose().as_bytes())),
                vec![Algorithm::HS256],
            ),
            JwtKey::PublicPem(pem) => {
                let pem = pem.as_bytes();
                match DecodingKey::from_rsa_pem(pem) {
                    Ok(key) => (Keys::Static(key), None, vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]),
                    Err(rsa) => match DecodingKey::from_ec_pem(pem) {
                        Ok(key) => (Keys::Static(key), None, vec![Algorithm::ES256, Algorithm::ES384]),
                        Err(ec) => return Err(AuthError::BadPublicKey(format!("as RSA: {rsa}; as EC: {ec}"))),
                    },
                }
            }
            // The algorithms here are replaced by each key's own at verification.
            JwtKey::Jwks { url, refresh } => {
                (Keys::Jwks(Arc::new(jwks::Jwks::new(url, *refresh)?)), None, vec![Algorithm::RS256])
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        // Configured iss/aud are required, not just checked when present: a token without them is refused.
        let mut required = vec!["exp", "sub"];
        required.extend(settings.issuer.as_ref().map(|_| "iss"));
        required.extend(settings.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        match &settings.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &settings.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Self {
            keys,
            validation,
            encoding,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            api_keys: settings.api_keys.clone(),
        })
    }

    /// The JWKS the keys come from, when one is configured (to start its refresh, and for `/health`).
    pub fn jwks(&self) -> Option<&Arc<jwks::Jwks>> {
        match &self.keys {
            Keys::Jwks(jwks) => Some(jwks),
            Keys::Static(_) => None,
        }
    }

    /// Verifies a user token: signature, algorithm, `exp`, and `iss`/`aud` when configured. With a JWKS, a
    /// `kid` not held yet may wait for one fetch of the set (rate-limited; see `jwks`).
    pub async fn user(&self, token: &str) -> Result<User, AuthError> {
        let invalid = |e: jsonwebtoken::errors::Error| AuthError::InvalidToken(e.to_string());
        let data = match &self.keys {
            Keys::Static(decoding) => jsonwebtoken::decode::<Verified>(token, decoding, &self.validation),
            Keys::Jwks(jwks) => {
                let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
                let key = jwks.key(header.kid.as_deref()).await.ok_or(AuthError::UnknownKey)?;
                jsonwebtoken::decode::<Verified>(token, &key.decoding, &jwks::validation_for(&self.validation, &key))
            }
        }
        .map_err(invalid)?;
        let id = UserId::parse(&data.claims.sub).map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        // A malformed grant refuses the token rather than being skipped: the issuer meant something by it.
        let grants = data.claims.topics.unwrap_or_default();
        if grants.len() > MAX_TOPIC_GRANTS {
            return Err(AuthError::InvalidToken(format!(
                "the topics claim holds more than {MAX_TOPIC_GRANTS} entries"
            )));
        }
        let topics = grants
            .iter()
            .map(|g| TopicPattern::parse(g).map_err(|e| AuthError::InvalidToken(format!("topics claim: {e}"))))
            .collect::<Result<Arc<[_]>, _>>()?;
        Ok(User { id, expires_at: data.claims.exp.max(0.0) as u64, topics })
    }

    /// Whether `candidate` is one of the publisher keys, compared in constant time.
    pub fn is_api_key(&self, candidate: &str) -> bool {
        self.api_key(candidate).is_some()
    }

    /// Which publisher key `candidate` is (its place in `api_keys`, what rate limits are kept by), compared
    /// in constant time against every key.
    pub fn api_key(&self, candidate: &str) -> Option<usize> {
        let mut found = None;
        for (index, key) in self.api_keys.iter().enumerate() {
            if bool::from(key.expose().as_bytes().ct_eq(candidate.as_bytes())) {
                found = Some(index);
            }
        }
        found
    }

    /// Signs a token for `user`, valid for `ttl`.
    pub fn mint(&self, user: &UserId, ttl: Duration) -> Result<String, AuthError> {
        self.mint_with_topics(user, ttl, &[])
    }

    /// Signs a token for `user` that may also watch `topics` (names or patterns, checked here).
    pub fn mint_with_topics(&self, user: &UserId, ttl: Duration, topics: &[String]) -> Result<String, AuthError> {
        if topics.len() > MAX_TOPIC_GRANTS {
            return Err(AuthError::InvalidToken(format!("at most {MAX_TOPIC_GRANTS} topics may be granted")));
        }
        for topic in topics {
            TopicPattern::parse(topic).map_err(|e| AuthError::InvalidToken(format!("topics: {e}")))?;
        }
        let key = self.encoding.as_ref().ok_or(AuthError::CannotMint)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let claims = Claims {
            sub: user.as_str().to_owned(),
            exp: (now + ttl).as_secs(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            topics: topics.to_vec(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(&AuthSettings {
            jwt_key: Some(JwtKey::Hs256(Secret::new("0123456789abcdef0123456789abcdef"))),
            issuer: None,
            audience: None,
            api_keys: vec![Secret::new("publisher-key-0123456789")],
            jwt_generated: false,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn minted_tokens_verify() {
        let a = auth();
        let alice = UserId::parse("alice").unwrap();
        let token = a.mint(&alice, Duration::from_secs(60)).unwrap();
        assert_eq!(a.user(&token).await.unwrap().id, alice);
    }

    #[tokio::test]
    async fn alg_none_and_garbage_are_refused() {
        let a = auth();
        // {"alg":"none","typ":"JWT"} . {"sub":"alice","exp":9999999999} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(a.user(none).await.is_err());
        assert!(a.user("not-a-token").await.is_err());
    }

    #[tokio::test]
    async fn expired_tokens_are_refused() {
        let a = auth();
        let claims = Claims { sub: "alice".into(), exp: unix_now() - 3600, iss: None, aud: None, topics: vec![] };
        let key = EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        assert!(a.user(&token).await.is_err());
    }

    /// An HS256 authenticator (with the audience, if any) and a function that signs claims for it.
    fn hs256(audience: Option<&str>) -> (Authenticator, impl Fn(serde_json::Value) -> String) {
        let secret = "0123456789abcdef0123456789abcdef";
        let a = Authenticator::new(&AuthSettings {
            jwt_key: Some(JwtKey::Hs256(Secret::new(secret))),
            issuer: None,
            audience: audience.map(str::to_owned),
            api_keys: vec![],
            jwt_generated: false,
        })
        .unwrap();
        let key = EncodingKey::from_secret(secret.as_bytes());
        let sign = move |claims: serde_json::Value| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        (a, sign)
    }

    #[tokio::test]
    async fn audience_lists_and_not_yet_valid_tokens() {
        let (a, sign) = hs256(Some("herald"));
        let exp = unix_now() + 600;
        assert!(a
            .user(&sign(serde_json::json!({"sub": "alice", "exp": exp, "aud": ["other", "herald"]})))
            .await
            .is_ok());
        assert!(a.user(&sign(serde_json::json!({"sub": "alice", "exp": exp, "aud": ["other"]}))).await.is_err());
        let later = unix_now() + 300;
        assert!(a
            .user(&sign(serde_json::json!({"sub": "alice", "exp": exp, "aud": "herald", "nbf": later})))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn the_topics_claim_grants_what_it_names_and_nothing_else() {
        let (a, sign) = hs256(None);
        let exp = unix_now() + 600;
        let topic = |s: &str| TopicName::parse(s).unwrap();
        let user = a
            .user(&sign(serde_json::json!({"sub": "u", "exp": exp, "topics": ["order:*", "intent:42"]})))
            .await
            .unwrap();
        assert!(user.may_watch(&topic("order:abc")) && user.may_watch(&topic("intent:42")));
        assert!(!user.may_watch(&topic("intent:43")) && !user.may_watch(&topic("refund:1")));
        let plain = a.user(&sign(serde_json::json!({"sub": "u", "exp": exp}))).await.unwrap();
        assert!(!plain.may_watch(&topic("order:abc")), "no claim, no topics");
        let bad = a.user(&sign(serde_json::json!({"sub": "u", "exp": exp, "topics": ["no colon"]}))).await.unwrap_err();
        assert!(bad.to_string().contains("topics claim"), "{bad}");
        let many: Vec<String> = (0..=MAX_TOPIC_GRANTS).map(|i| format!("order:{i}")).collect();
        assert!(a.user(&sign(serde_json::json!({"sub": "u", "exp": exp, "topics": many}))).await.is_err());
        assert!(a.user(&sign(serde_json::json!({"sub": "u", "exp": exp, "topics": "order:*"}))).await.is_err());
    }

    #[test]
    fn api_keys_match_exactly() {
        let a = auth();
        assert!(a.is_api_key("publisher-key-0123456789"));
        assert!(!a.is_api_key("publisher-key-012345678"));
        assert!(!a.is_api_key(""));
    }
}
