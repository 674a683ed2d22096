//! User tokens verified against an identity provider's published keys (a JWKS URL, `jwt_jwks_url`).
//!
//! The set is fetched at start (in the background: a provider that is down fails no start, it is reported
//! in `/health` and tokens are refused until it answers), again every `jwt_jwks_refresh_secs`, and at once
//! when a token names a `kid` the set does not hold — at most once every [`MIN_REFETCH`], however many such
//! tokens arrive, so a flood of made-up `kid`s cannot turn into a flood of requests to the provider.
//!
//! Each key's algorithms follow from the key (its `alg` when the set gives one, else its type and curve:
//! RSA → RS256/384/512, EC P-256 → ES256, P-384 → ES384, OKP Ed25519 → EdDSA), never from the token. A
//! symmetric (`oct`) key in a public set is refused, so a token signed with HMAC over a public key cannot
//! pass. Keys marked for encryption (`use: enc`) are skipped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

/// The least time between two fetches caused by unknown `kid`s.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest key set read (identity providers publish a few kilobytes).
const MAX_SET_BYTES: usize = 256 * 1024;
/// Keys kept from one set.
const MAX_KEYS: usize = 64;
/// The first retries after a failed fetch at start, doubling up to the refresh period.
const FIRST_RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum JwksError {
    #[error("fetching the key set: {0}")]
    Fetch(String),
    #[error("the key set answered HTTP {0}")]
    Status(u16),
    #[error("the key set is larger than {MAX_SET_BYTES} bytes")]
    TooLarge,
    #[error("the key set is not a JWKS document: {0}")]
    Invalid(String),
    #[error("the key set holds no usable signing key ({0})")]
    NoUsableKey(String),
}

/// One usable key: how to verify with it, and the validation (its algorithms) that goes with it.
#[derive(Clone)]
pub struct Key {
    pub decoding: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

/// What `/health` tells about the key set.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JwksHealth {
    pub keys: usize,
    /// Seconds since the last successful fetch; `None`: none yet.
    pub fetched_secs_ago: Option<u64>,
    pub last_error: Option<String>,
}

struct Status {
    fetched: Option<Instant>,
    last_error: Option<String>,
    /// When a fetch for an unknown `kid` last ran (or was let through).
    last_refetch: Option<Instant>,
}

pub struct Jwks {
    url: String,
    refresh: Duration,
    client: reqwest::Client,
    keys: RwLock<Arc<HashMap<String, Key>>>,
    status: Mutex<Status>,
    /// One fetch at a time; the others wait for it and use what it got.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    pub fn new(url: &str, refresh: Duration) -> Result<Self, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| JwksError::Fetch(e.to_string()))?;
        Ok(Self {
            url: url.to_owned(),
            refresh,
            client,
            keys: RwLock::new(Arc::new(HashMap::new())),
            status: Mutex::new(Status { fetched: None, last_error: None, last_refetch: None }),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn current(&self) -> Arc<HashMap<String, Key>> {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The key a token's header names: its `kid`, or (with no `kid`) the set's only key. An unknown `kid`
    /// fetches the set again first, if the last such fetch is older than [`MIN_REFETCH`].
    pub async fn key(&self, kid: Option<&str>) -> Option<Key> {
        if let Some(key) = pick(&self.current(), kid) {
            return Some(key);
        }
        let allowed = {
            let mut status = self.status();
            let allowed = status.last_refetch.is_none_or(|at| at.elapsed() >= MIN_REFETCH);
            if allowed {
                status.last_refetch = Some(Instant::now());
            }
            allowed
        };
        if allowed {
            metrics::counter!("herald_jwks_refetches_total").increment(1);
            let _ = self.refresh_now().await;
        } else {
            // Another token's refetch may be under way: use what it brings.
            drop(self.fetching.lock().await);
        }
        pick(&self.current(), kid)
    }

    /// Fetches the set and, if it holds a usable key, replaces the one held; a failure keeps the old set.
    pub async fn refresh_now(&self) -> Result<usize, JwksError> {
        let _one = self.fetching.lock().await;
        let outcome = self.fetch().await;
        let mut status = self.status();
        match outcome {
            Ok(keys) => {
                let count = keys.len();
                *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keys);
                status.fetched = Some(Instant::now());
                status.last_error = None;
                metrics::counter!("herald_jwks_fetches_total", "outcome" => "ok").increment(1);
                tracing::debug!(keys = count, "fetched the JWKS");
                Ok(count)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not fetch the JWKS; keeping the keys held");
                status.last_error = Some(e.to_string());
                metrics::counter!("herald_jwks_fetches_total", "outcome" => "error").increment(1);
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Key>, JwksError> {
        let mut response = self.client.get(&self.url).send().await.map_err(|e| JwksError::Fetch(e.to_string()))?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status().as_u16()));
        }
        if response.content_length().is_some_and(|length| length > MAX_SET_BYTES as u64) {
            return Err(JwksError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| JwksError::Fetch(e.to_string()))? {
            if body.len() + chunk.len() > MAX_SET_BYTES {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        parse_set(&body)
    }

    /// Fetches at once, then every refresh period, until `stopping`; a failed first fetch is retried sooner.
    pub fn start(self: &Arc<Self>, stopping: CancellationToken) {
        let jwks = self.clone();
        tokio::spawn(async move {
            let mut wait = FIRST_RETRY;
            loop {
                let next = match jwks.refresh_now().await {
                    Ok(_) => {
                        wait = FIRST_RETRY;
                        jwks.refresh
                    }
                    Err(_) => {
                        let this = wait;
                        wait = (wait * 2).min(jwks.refresh);
                        this
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(next) => {}
                    () = stopping.cancelled() => return,
                }
            }
        });
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn health(&self) -> JwksHealth {
        let status = self.status();
        JwksHealth {
            keys: self.current().len(),
            fetched_secs_ago: status.fetched.map(|at| at.elapsed().as_secs()),
            last_error: status.last_error.clone(),
        }
    }
}

fn pick(keys: &HashMap<String, Key>, kid: Option<&str>) -> Option<Key> {
    match kid {
        Some(kid) => keys.get(kid).cloned(),
        None if keys.len() == 1 => keys.values().next().cloned(),
        None => None,
    }
}

/// The usable keys of a JWKS document, by `kid` (a key without one is kept under "" when it is the only one).
pub fn parse_set(body: &[u8]) -> Result<HashMap<String, Key>, JwksError> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| JwksError::Invalid(e.to_string()))?;
    let mut keys = HashMap::new();
    let mut skipped = Vec::new();
    let without_kid = set.keys.iter().filter(|k| k.common.key_id.is_none()).count();
    for jwk in set.keys.iter().take(MAX_KEYS) {
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        if kid.is_empty() && (without_kid > 1 || set.keys.len() > 1) {
            skipped.push("a key without a kid in a set of several".to_owned());
            continue;
        }
        match usable(jwk) {
            Ok(key) => {
                keys.insert(kid, key);
            }
            Err(why) => skipped.push(format!("{}: {why}", if kid.is_empty() { "(no kid)" } else { &kid })),
        }
    }
    if !skipped.is_empty() {
        tracing::debug!(?skipped, "JWKS keys skipped");
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey(if skipped.is_empty() {
            "it is empty".to_owned()
        } else {
            skipped.join("; ")
        }));
    }
    Ok(keys)
}

fn usable(jwk: &Jwk) -> Result<Key, String> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))) {
        return Err("not a signing key".to_owned());
    }
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => Some(Algorithm::try_from(alg).map_err(|_| format!("unsupported alg {alg:?}"))?),
    };
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            ref other => return Err(format!("unsupported curve {other:?}")),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            ref other => return Err(format!("unsupported curve {other:?}")),
        },
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric key has no place in a public key set".into()),
        _ => return Err("unknown key type".to_owned()),
    };
    let algorithms = match declared {
        // An RSA key without an `alg` is taken for the PKCS#1 family, as identity providers mean it.
        None if family.contains(&Algorithm::RS256) => family[..3].to_vec(),
        None => family,
        Some(alg) if family.contains(&alg) => vec![alg],
        Some(alg) => return Err(format!("alg {alg:?} does not fit the key type")),
    };
    let decoding = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    Ok(Key { decoding, algorithms })
}

/// The validation for one key: the caller's checks (`exp`, `nbf`, `iss`, `aud`) with the key's algorithms.
pub fn validation_for(base: &Validation, key: &Key) -> Validation {
    let mut validation = base.clone();
    validation.algorithms = key.algorithms.clone();
    validation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types_decide_the_algorithms_and_symmetric_keys_are_refused() {
        let set = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "ec", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "EC", "kid": "enc", "use": "enc", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "OKP", "kid": "mismatch", "alg": "ES256", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]});
        let keys = parse_set(set.to_string().as_bytes()).unwrap();
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort();
        assert_eq!(kids, ["ec", "ed"]);
        assert_eq!(keys["ec"].algorithms, [Algorithm::ES256]);
        assert_eq!(keys["ed"].algorithms, [Algorithm::EdDSA]);
    }

    #[test]
    fn a_set_with_nothing_usable_is_an_error() {
        assert!(matches!(parse_set(br#"{"keys": []}"#), Err(JwksError::NoUsableKey(_))));
        assert!(matches!(parse_set(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#), Err(JwksError::NoUsableKey(_))));
        assert!(matches!(parse_set(b"<html>"), Err(JwksError::Invalid(_))));
    }
}
