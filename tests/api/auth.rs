//! Who may do what: users read their own inbox with a JWT; publishers publish with an API key; every
//! other token is refused, on REST and on the WebSocket upgrade alike.

use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{
    alg_none_token, assert_error, assert_error_response, claims_for, now, sign, status_and_json, token_with_secret,
    TestApp, API_KEY, JWT_SECRET,
};

fn hs256(claims: &serde_json::Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(JWT_SECRET.as_bytes()), claims)
}

/// Asserts `token` is refused with 401 `unauthorized` on the inbox and on the WebSocket upgrade.
async fn assert_refused(app: &TestApp, token: &str, why: &str) {
    let (status, body) = status_and_json(app.list(token, "?page=0&limit=10").await).await;
    assert_eq!(status, 401, "{why}: GET /api/v1/notifications answered {body}");
    assert_error(&body, "unauthorized");

    app.assert_ws_refused(&format!("?token={token}"), 401, "unauthorized").await;
}

#[tokio::test]
async fn a_valid_token_reads_the_inbox_and_connects() {
    let app = TestApp::spawn().await;
    let token = app.token("alice");

    assert_eq!(app.list(&token, "?page=0&limit=10").await.status(), 200);
    let tab = app.connect_ws_query(&format!("?token={token}")).await;
    assert_eq!(tab.hello["user_id"], "alice");
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let app = TestApp::spawn().await;
    let expired = hs256(&json!({ "sub": "alice", "iat": now() - 7200, "exp": now() - 3600 }));
    assert_refused(&app, &expired, "expired").await;
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_refused() {
    let app = TestApp::spawn().await;
    let forged = token_with_secret("some-other-secret-that-is-long-enough", "alice");
    assert_refused(&app, &forged, "wrong secret").await;
}

#[tokio::test]
async fn an_unsigned_token_is_refused() {
    let app = TestApp::spawn().await;
    assert_refused(&app, &alg_none_token("alice"), "alg none").await;
}

#[tokio::test]
async fn a_token_without_exp_or_sub_is_refused() {
    let app = TestApp::spawn().await;
    assert_refused(&app, &hs256(&json!({ "sub": "alice", "iat": now() })), "no exp").await;
    assert_refused(&app, &hs256(&json!({ "iat": now(), "exp": now() + 3600 })), "no sub").await;
}

#[tokio::test]
async fn garbage_is_refused() {
    let app = TestApp::spawn().await;
    assert_refused(&app, "not-a-jwt", "garbage").await;
    let tampered = {
        let token = app.token("alice");
        let forged_payload = app.token("bob");
        let (header, rest) = token.split_once('.').unwrap();
        let signature = rest.split_once('.').unwrap().1;
        let bob_payload = forged_payload.split('.').nth(1).unwrap();
        format!("{header}.{bob_payload}.{signature}")
    };
    assert_refused(&app, &tampered, "alice's signature on bob's claims").await;
}

#[tokio::test]
async fn missing_credentials_are_unauthorized() {
    let app = TestApp::spawn().await;

    let list = app.request(Method::GET, "/api/v1/notifications?page=0&limit=10", None).send().await.unwrap();
    assert_error_response(list, 401, "unauthorized").await;
    let publish = app
        .request(Method::POST, "/api/v1/notifications", None)
        .json(&json!({ "user_id": "alice", "type": "t" }))
        .send()
        .await
        .unwrap();
    assert_error_response(publish, 401, "unauthorized").await;
    app.assert_ws_refused("", 401, "unauthorized").await;
}

#[tokio::test]
async fn a_wrong_api_key_cannot_publish() {
    let app = TestApp::spawn().await;
    let response = app
        .request(Method::POST, "/api/v1/notifications", Some("not-the-key"))
        .json(&json!({ "user_id": "alice", "type": "t" }))
        .send()
        .await
        .unwrap();

    assert_error_response(response, 401, "unauthorized").await;
    assert_eq!(app.inbox("alice", "?page=0&limit=10").await["total"], 0);
}

#[tokio::test]
async fn a_user_token_cannot_publish() {
    let app = TestApp::spawn().await;
    let token = app.token("alice");
    for path in ["/api/v1/notifications", "/api/v1/notifications/batch"] {
        let body = if path.ends_with("batch") {
            json!({ "notifications": [{ "user_id": "alice", "type": "t" }] })
        } else {
            json!({ "user_id": "alice", "type": "t" })
        };
        let response = app.request(Method::POST, path, Some(&token)).json(&body).send().await.unwrap();
        assert_error_response(response, 403, "forbidden").await;
    }
    assert_eq!(app.inbox("alice", "?page=0&limit=10").await["total"], 0);
}

#[tokio::test]
async fn an_api_key_cannot_read_an_inbox() {
    let app = TestApp::spawn().await;
    app.notify("alice", "t", "private").await;

    for (method, path) in [
        (Method::GET, "/api/v1/notifications?page=0&limit=10"),
        (Method::GET, "/api/v1/notifications/unread-count"),
        (Method::POST, "/api/v1/notifications/read-all"),
    ] {
        let response = app.request(method, path, Some(API_KEY)).send().await.unwrap();
        assert_error_response(response, 403, "forbidden").await;
    }
    assert_eq!(app.unread_count("alice").await, 1);
}

#[tokio::test]
async fn an_api_key_is_not_a_user_token_on_the_websocket() {
    let app = TestApp::spawn().await;
    // The README's rule for every user route: a publisher key there is 403, not an unknown credential.
    app.assert_ws_refused(&format!("?token={API_KEY}"), 403, "forbidden").await;
}

#[tokio::test]
async fn the_websocket_accepts_a_bearer_header() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let app = TestApp::spawn().await;
    let mut request = app.ws_url("").into_client_request().unwrap();
    let bearer = format!("Bearer {}", app.token("alice"));
    request.headers_mut().insert("authorization", bearer.parse().unwrap());

    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade with a bearer header");
    use futures_util::StreamExt;
    let hello = tokio::time::timeout(crate::helpers::WAIT, socket.next()).await.unwrap().unwrap().unwrap();
    let hello: serde_json::Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["user_id"], "alice");
}

const ISSUER: &str = "https://auth.example.test";
const AUDIENCE: &str = "herald";

async fn spawn_with_issuer_and_audience() -> TestApp {
    TestApp::spawn_with(|s| {
        s.env("HERALD_JWT_ISSUER", ISSUER).env("HERALD_JWT_AUDIENCE", AUDIENCE);
    })
    .await
}

/// A token for alice with these `iss` and `aud` claims (left out when `None`).
fn token_from(iss: Option<&str>, aud: Option<&str>) -> String {
    let mut claims = claims_for("alice");
    if let Some(iss) = iss {
        claims["iss"] = json!(iss);
    }
    if let Some(aud) = aud {
        claims["aud"] = json!(aud);
    }
    hs256(&claims)
}

#[tokio::test]
async fn the_configured_issuer_and_audience_must_match() {
    let app = spawn_with_issuer_and_audience().await;

    let good = token_from(Some(ISSUER), Some(AUDIENCE));
    assert_eq!(app.list(&good, "?page=0&limit=10").await.status(), 200);
    assert_refused(&app, &token_from(Some("https://evil.example.test"), Some(AUDIENCE)), "wrong issuer").await;
    assert_refused(&app, &token_from(Some(ISSUER), Some("billing")), "wrong audience").await;
}

#[tokio::test]
async fn a_token_without_the_configured_issuer_or_audience_is_refused() {
    let app = spawn_with_issuer_and_audience().await;

    assert_refused(&app, &token_from(Some(ISSUER), None), "no audience").await;
    assert_refused(&app, &token_from(None, Some(AUDIENCE)), "no issuer").await;
}
