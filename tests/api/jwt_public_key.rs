//! User tokens verified with a public key (`HERALD_JWT_PUBLIC_KEY`): RS256 or ES256 by key type, and no
//! algorithm confusion (an HS256 token "signed" with the public key's PEM text is refused).

use jsonwebtoken::{Algorithm, EncodingKey};

use crate::helpers::{alg_none_token, claims_for, sign, status_and_json, token_with_secret, TestApp, JWT_SECRET};

const ES256_PUBLIC: &str = include_str!("../fixtures/es256-public.pem");
const ES256_PRIVATE: &str = include_str!("../fixtures/es256-private.pem");
const ES256_OTHER_PRIVATE: &str = include_str!("../fixtures/es256-other-private.pem");
const RS256_PUBLIC: &str = include_str!("../fixtures/rs256-public.pem");
const RS256_PRIVATE: &str = include_str!("../fixtures/rs256-private.pem");

async fn spawn_with_public_key(pem: &str) -> TestApp {
    TestApp::spawn_with(|s| {
        s.unset("HERALD_JWT_SECRET").env("HERALD_JWT_PUBLIC_KEY", pem);
    })
    .await
}

async fn list_status(app: &TestApp, token: &str) -> u16 {
    let (status, body) = status_and_json(app.list(token, "?page=0&limit=10").await).await;
    if status != 200 {
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    status
}

async fn ws_status(app: &TestApp, token: &str) -> u16 {
    match app.try_connect_ws(&format!("?token={token}")).await {
        Ok(tab) => {
            assert_eq!(tab.hello["user_id"], "alice");
            101
        }
        Err((status, _)) => status,
    }
}

#[tokio::test]
async fn es256_tokens_are_verified_with_the_public_key() {
    let app = spawn_with_public_key(ES256_PUBLIC).await;
    let key = EncodingKey::from_ec_pem(ES256_PRIVATE.as_bytes()).unwrap();
    let token = sign(Algorithm::ES256, &key, &claims_for("alice"));

    assert_eq!(list_status(&app, &token).await, 200);
    assert_eq!(ws_status(&app, &token).await, 101);
}

#[tokio::test]
async fn es256_refuses_other_keys_and_algorithm_confusion() {
    let app = spawn_with_public_key(ES256_PUBLIC).await;
    let other_key = EncodingKey::from_ec_pem(ES256_OTHER_PRIVATE.as_bytes()).unwrap();
    let refused = [
        ("signed with another EC key", sign(Algorithm::ES256, &other_key, &claims_for("alice"))),
        ("HS256 with the public key PEM as secret", token_with_secret(ES256_PUBLIC, "alice")),
        ("HS256 with the trimmed PEM as secret", token_with_secret(ES256_PUBLIC.trim(), "alice")),
        ("HS256 with the test secret, which is not configured", token_with_secret(JWT_SECRET, "alice")),
        ("alg none", alg_none_token("alice")),
    ];
    for (why, token) in refused {
        assert_eq!(list_status(&app, &token).await, 401, "{why}");
        assert_eq!(ws_status(&app, &token).await, 401, "{why}");
    }
}

#[tokio::test]
async fn rs256_tokens_are_verified_with_the_public_key() {
    let app = spawn_with_public_key(RS256_PUBLIC).await;
    let key = EncodingKey::from_rsa_pem(RS256_PRIVATE.as_bytes()).unwrap();
    let token = sign(Algorithm::RS256, &key, &claims_for("alice"));

    assert_eq!(list_status(&app, &token).await, 200);
    assert_eq!(ws_status(&app, &token).await, 101);
}

#[tokio::test]
async fn rs256_refuses_algorithm_confusion() {
    let app = spawn_with_public_key(RS256_PUBLIC).await;
    let es_key = EncodingKey::from_ec_pem(ES256_PRIVATE.as_bytes()).unwrap();
    let refused = [
        ("HS256 with the public key PEM as secret", token_with_secret(RS256_PUBLIC, "alice")),
        ("an ES256 token", sign(Algorithm::ES256, &es_key, &claims_for("alice"))),
        ("alg none", alg_none_token("alice")),
    ];
    for (why, token) in refused {
        assert_eq!(list_status(&app, &token).await, 401, "{why}");
        assert_eq!(ws_status(&app, &token).await, 401, "{why}");
    }
}
