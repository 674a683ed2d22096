//! The web inbox page and its assets, served from the binary with a strict Content-Security-Policy, and the
//! development tokens it may mint: only with a generated secret on loopback, and only for a loopback `Host`.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{status_and_json, TestApp};

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_strict_policy() {
    let app = TestApp::spawn().await;
    for (path, kind) in [("/", "text/html"), ("/inbox/inbox.js", "text/javascript"), ("/inbox/inbox.css", "text/css")] {
        let response = app.request(Method::GET, path, None).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let header =
            |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(header("content-type").starts_with(kind), "{path}: {}", header("content-type"));
        let policy = header("content-security-policy");
        assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{path}: {policy}");
        assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{path}: {policy}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert!(!response.bytes().await.unwrap().is_empty(), "{path} is empty");
    }
    // With a configured secret there are no development tokens: the routes do not exist.
    assert_eq!(app.get_json("/api/v1/dev/token", None).await.0, 404);
    let minted = app.request(Method::POST, "/api/v1/dev/token", None).json(&json!({"user_id": "alice"})).send().await;
    assert_eq!(minted.unwrap().status(), 404);
}

#[tokio::test]
async fn with_a_generated_secret_on_loopback_the_page_can_mint_a_users_token() {
    let app = TestApp::spawn_with(|s| {
        s.unset("HERALD_JWT_SECRET");
    })
    .await;
    let (status, body) = app.get_json("/api/v1/dev/token", None).await;
    assert_eq!((status, body), (200, json!({"enabled": true})));
    let mint = |body: serde_json::Value, host: Option<&'static str>| {
        let mut request = app.request(Method::POST, "/api/v1/dev/token", None).json(&body);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        async move { status_and_json(request.send().await.unwrap()).await }
    };
    let (status, body) = mint(json!({"user_id": "alice"}), None).await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    // The token is alice's: her inbox and her socket open with it.
    app.notify("alice", "t", "hello").await;
    let (status, page) = status_and_json(app.list(&token, "?limit=5").await).await;
    assert_eq!((status, page["total"].clone()), (200, json!(1)));
    let mut ws = app.connect_ws_query(&format!("?token={token}")).await;
    app.notify("alice", "t", "live").await;
    assert_eq!(ws.next_notification().await["title"], "live");

    // A page that rebinds its own name to 127.0.0.1 sends its own Host: refused as if absent.
    assert_eq!(mint(json!({"user_id": "alice"}), Some("evil.example:8004")).await.0, 404);
    assert_eq!(mint(json!({"user_id": "alice"}), Some("localhost:8004")).await.0, 201);
    // Bad input changes nothing and says why.
    let (status, body) = mint(json!({"user_id": ""}), None).await;
    assert_eq!((status, body["error"]["code"].clone()), (422, json!("invalid_request")));
    let (status, body) = mint(json!({"user_id": "alice", "admin": true}), None).await;
    assert_eq!((status, body["error"]["code"].clone()), (422, json!("invalid_request")));
}
