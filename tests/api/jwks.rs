//! User tokens verified against a JWKS URL (`HERALD_JWT_JWKS_URL`), served by a real HTTP server in the test
//! the way an identity provider publishes its keys: RS256, ES256 and EdDSA keys by `kid`, a rotation picked
//! up on the first token that names the new key, made-up `kid`s that cannot make Herald hammer the
//! provider, and a provider that is down at start.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{claims_for, now, unsigned_token, wait_until, TestApp, WAIT};

const RS256_PRIVATE: &str = include_str!("../fixtures/rs256-private.pem");
const RS256_PUBLIC: &str = include_str!("../fixtures/rs256-public.pem");
const ES256_PRIVATE: &str = include_str!("../fixtures/es256-private.pem");
const ES256_OTHER_PRIVATE: &str = include_str!("../fixtures/es256-other-private.pem");
const ED25519_PRIVATE: &str = include_str!("../fixtures/ed25519-private.pem");

/// A signing key of the test's identity provider.
struct Signer {
    kid: &'static str,
    algorithm: Algorithm,
    key: EncodingKey,
}

impl Signer {
    fn rs256(kid: &'static str) -> Signer {
        Signer { kid, algorithm: Algorithm::RS256, key: EncodingKey::from_rsa_pem(RS256_PRIVATE.as_bytes()).unwrap() }
    }
    fn es256(kid: &'static str, pem: &str) -> Signer {
        Signer { kid, algorithm: Algorithm::ES256, key: EncodingKey::from_ec_pem(pem.as_bytes()).unwrap() }
    }
    fn ed25519(kid: &'static str) -> Signer {
        Signer { kid, algorithm: Algorithm::EdDSA, key: EncodingKey::from_ed_pem(ED25519_PRIVATE.as_bytes()).unwrap() }
    }

    /// The public half, as a provider publishes it (with `alg` and `use` when `declared`).
    fn jwk(&self, declared: bool) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.algorithm).unwrap();
        jwk.common.key_id = Some(self.kid.to_owned());
        if declared {
            jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        } else {
            jwk.common.key_algorithm = None;
        }
        jwk
    }

    fn token(&self, user: &str) -> String {
        self.token_with(user, &claims_for(user))
    }

    fn token_with(&self, _user: &str, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

/// The provider's JWKS endpoint: what it serves now (`None`: HTTP 500) and how often it was asked.
#[derive(Clone)]
struct Provider {
    addr: SocketAddr,
    set: Arc<Mutex<Option<Value>>>,
    hits: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(set: Option<Value>) -> Provider {
        let (state, hits) = (Arc::new(Mutex::new(set)), Arc::new(AtomicUsize::new(0)));
        let (served, counted) = (state.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (served, counted) = (served.clone(), counted.clone());
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    match served.lock().unwrap().clone() {
                        Some(set) => axum::Json(set).into_response(),
                        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Provider { addr, set: state, hits }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    fn publish(&self, signers: &[&Signer]) {
        let set = JwkSet { keys: signers.iter().enumerate().map(|(i, s)| s.jwk(i % 2 == 0)).collect() };
        *self.set.lock().unwrap() = Some(serde_json::to_value(set).unwrap());
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn spawn(provider: &Provider) -> TestApp {
    TestApp::spawn_with(|s| {
        s.unset("HERALD_JWT_SECRET").env("HERALD_JWT_JWKS_URL", provider.url());
    })
    .await
}

/// The status of `GET /api/v1/notifications/unread-count` with `token`.
async fn status_with(app: &TestApp, token: &str) -> u16 {
    let response = app.request(Method::GET, "/api/v1/notifications/unread-count", Some(token)).send().await;
    response.expect("GET unread-count").status().as_u16()
}

async fn wait_for_keys(app: &TestApp, keys: u64) {
    wait_until("the JWKS to be fetched", WAIT, || async { (app.health().await["jwks"]["keys"] == keys).then_some(()) })
        .await;
}

#[tokio::test]
async fn rs256_es256_and_eddsa_keys_verify_by_kid_and_forgeries_are_refused() {
    let (rs, es, ed) = (Signer::rs256("rs-1"), Signer::es256("es-1", ES256_PRIVATE), Signer::ed25519("ed-1"));
    let provider = Provider::start(None).await;
    provider.publish(&[&rs, &es, &ed]);
    let app = spawn(&provider).await;
    wait_for_keys(&app, 3).await;
    assert_eq!(app.health().await["jwks"]["status"], "ok");

    for signer in [&rs, &es, &ed] {
        assert_eq!(status_with(&app, &signer.token("alice")).await, 200, "{:?}", signer.algorithm);
    }
    // A live connection too, and the token's user is who it is.
    let mut ws = crate::helpers::WsClient::connect(&app.ws_url(&format!("?token={}", ed.token("alice"))))
        .await
        .expect("upgrade");
    assert_eq!(ws.hello["user_id"], "alice");
    app.notify("alice", "t", "by EdDSA").await;
    assert_eq!(ws.next_notification().await["title"], "by EdDSA");

    // Forgeries: HMAC over the RSA public key (algorithm confusion), alg none, another key under a known
    // kid, an expired token, and a token naming no kid in a set of three.
    let confused = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rs-1".into());
        jsonwebtoken::encode(&header, &claims_for("mallory"), &EncodingKey::from_secret(RS256_PUBLIC.as_bytes()))
            .unwrap()
    };
    let none = unsigned_token(&json!({"alg": "none", "typ": "JWT", "kid": "rs-1"}), &claims_for("mallory"));
    let impostor = Signer::es256("es-1", ES256_OTHER_PRIVATE).token("mallory");
    let expired = es.token_with("alice", &json!({"sub": "alice", "exp": now() - 3600}));
    let no_kid = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims_for("alice"), &es.key).unwrap();
    for (what, token) in [
        ("HS/RS confusion", confused),
        ("alg none", none),
        ("impostor", impostor),
        ("expired", expired),
        ("no kid", no_kid),
    ] {
        assert_eq!(status_with(&app, &token).await, 401, "{what}");
    }
}

#[tokio::test]
async fn a_rotated_key_is_fetched_on_its_first_token_and_made_up_kids_do_not_hammer_the_provider() {
    let (old, new) = (Signer::es256("2026-11", ES256_PRIVATE), Signer::es256("2026-12", ES256_OTHER_PRIVATE));
    let provider = Provider::start(None).await;
    provider.publish(&[&old]);
    let app = spawn(&provider).await;
    wait_for_keys(&app, 1).await;
    assert_eq!(status_with(&app, &old.token("alice")).await, 200);

    // The provider rotates: the new key is published and the old one withdrawn. The first token signed with
    // the new key is accepted at once: its unknown kid fetches the set.
    provider.publish(&[&new]);
    let before = provider.hits();
    assert_eq!(status_with(&app, &new.token("alice")).await, 200);
    assert_eq!(provider.hits(), before + 1);
    assert_eq!(status_with(&app, &old.token("alice")).await, 401, "the withdrawn key no longer verifies");

    // A flood of made-up kids right after: refused, and no more fetches (at most one each 10 s).
    let fetched = provider.hits();
    for i in 0..50 {
        let forged = Signer { kid: Box::leak(format!("made-up-{i}").into_boxed_str()), ..Signer::ed25519("x") };
        assert_eq!(status_with(&app, &forged.token("mallory")).await, 401);
    }
    assert_eq!(provider.hits(), fetched, "made-up kids fetched the set again within the rate limit");
    let metrics = app.metrics().await;
    assert!(metrics.counter("herald_jwks_refetches_total") >= 1.0, "{}", metrics.text());
}

#[tokio::test]
async fn a_provider_down_at_start_is_reported_and_its_keys_are_used_once_it_answers() {
    let signer = Signer::rs256("rs-1");
    let provider = Provider::start(None).await;
    let app = spawn(&provider).await;
    wait_until("a failed fetch", WAIT, || async { (provider.hits() > 0).then_some(()) }).await;
    let health = app.health().await;
    assert_eq!((health["status"].as_str(), health["jwks"]["status"].as_str()), (Some("degraded"), Some("down")));
    assert!(health["jwks"]["last_error"].as_str().is_some_and(|e| e.contains("500")), "{health}");
    assert_eq!(status_with(&app, &signer.token("alice")).await, 401);
    // Publishers are not affected.
    assert_eq!(app.notify("alice", "t", "while the provider is down").await["user_id"], "alice");

    provider.publish(&[&signer]);
    wait_for_keys(&app, 1).await;
    assert_eq!(app.health().await["status"], "ok");
    assert_eq!(status_with(&app, &signer.token("alice")).await, 200);
}

#[tokio::test]
async fn a_jwks_url_must_be_https_or_loopback_and_alone() {
    for (env, expected) in [
        (vec![("HERALD_JWT_JWKS_URL", "http://idp.example.com/jwks.json")], "must be https://"),
        (vec![("HERALD_JWT_JWKS_URL", "ftp://127.0.0.1/jwks.json")], "must be an https:// URL"),
        (
            vec![
                ("HERALD_JWT_JWKS_URL", "https://idp.example.com/jwks.json"),
                ("HERALD_JWT_SECRET", "0123456789abcdef0123"),
            ],
            "set one of",
        ),
    ] {
        let mut settings = crate::helpers::Settings::default();
        settings.unset("HERALD_JWT_SECRET");
        for (key, value) in &env {
            settings.env(key, *value);
        }
        let dir = tempfile::tempdir().unwrap();
        let args = ["token", "--user", "alice", "--data-dir", dir.path().to_str().unwrap()];
        let output = crate::helpers::run_herald(&args, &settings).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(expected), "{env:?}: {stderr}");
    }
}
