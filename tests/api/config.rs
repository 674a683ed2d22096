//! Configuration: a TOML file, overridden by environment variables, overridden by flags; an unknown key or
//! a bad value stops the start naming it; with no secrets configured, they are generated (mode 0600).

use std::{os::unix::fs::PermissionsExt, path::Path};

use reqwest::Method;
use serde_json::json;

use crate::helpers::{decode_unverified, now, run_herald, Settings, TestApp};

/// Runs `herald serve` on a fresh data dir with `settings` and `extra` arguments, expecting it to refuse to
/// start; returns its stderr.
async fn serve_refuses(settings: &Settings, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir];
    args.extend_from_slice(extra);
    let output = run_herald(&args, settings).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "herald serve started (or exited 0) with a bad configuration; stderr:\n{stderr}");
    stderr
}

fn write_config(dir: &Path, toml: &str) -> String {
    let path = dir.join("herald.toml");
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_unknown_environment_variable_stops_the_start_naming_it() {
    let mut settings = Settings::default();
    settings.env("HERALD_PING_INTERVAL", "1000");

    let stderr = serve_refuses(&settings, &[]).await;
    assert!(stderr.contains("HERALD_PING_INTERVAL"), "stderr does not name the variable:\n{stderr}");
}

#[tokio::test]
async fn a_bad_environment_value_stops_the_start_naming_it() {
    for (key, value) in [
        ("HERALD_PING_INTERVAL_MS", "soon"),
        ("HERALD_OUTBOX_CAPACITY", "-3"),
        ("HERALD_MAX_BODY_BYTES", "1MB"),
        ("HERALD_LOG_FORMAT", "xml"),
    ] {
        let mut settings = Settings::default();
        settings.env(key, value);

        let stderr = serve_refuses(&settings, &[]).await;
        let named = key.trim_start_matches("HERALD_").to_lowercase();
        assert!(stderr.to_lowercase().contains(&named), "{key}={value}: stderr does not name it:\n{stderr}");
    }
}

#[tokio::test]
async fn an_unknown_or_bad_key_in_the_config_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::default();

    let unknown = write_config(dir.path(), "ping_interval_ms = 1000\nflux_capacitor = true\n");
    let stderr = serve_refuses(&settings, &["--config", &unknown]).await;
    assert!(stderr.contains("flux_capacitor"), "stderr does not name the unknown key:\n{stderr}");

    let bad = write_config(dir.path(), "max_frame_bytes = \"big\"\n");
    let stderr = serve_refuses(&settings, &["--config", &bad]).await;
    assert!(stderr.contains("max_frame_bytes"), "stderr does not name the bad key:\n{stderr}");
}

#[tokio::test]
async fn the_config_file_is_read_and_the_environment_overrides_it() {
    let config_dir = tempfile::tempdir().unwrap();
    let file = write_config(
        config_dir.path(),
        "jwt_secret = \"file-secret-0123456789abcdef0123\"\napi_keys = [\"file-key-0123456789\", \"file-key-2-0123456789\"]\nmax_connections = 7\n",
    );
    let app = TestApp::spawn_with(|s| {
        s.unset("HERALD_JWT_SECRET").env("HERALD_API_KEYS", "env-key-0123456789").arg("--config").arg(&file);
    })
    .await;

    // The JWT secret and the capacity come from the file.
    let token = crate::helpers::token_with_secret("file-secret-0123456789abcdef0123", "alice");
    assert_eq!(app.list(&token, "?page=0&limit=10").await.status(), 200);
    assert_eq!(app.health().await["connections"]["capacity"], 7);

    // The API keys come from the environment, which overrides the file.
    let publish = |key: &'static str| {
        app.request(Method::POST, "/api/v1/notifications", Some(key))
            .json(&json!({ "user_id": "alice", "type": "t" }))
            .send()
    };
    assert_eq!(publish("env-key-0123456789").await.unwrap().status(), 201);
    assert_eq!(publish("file-key-0123456789").await.unwrap().status(), 401);
}

#[tokio::test]
async fn flags_override_the_environment() {
    // The harness passes `--listen 127.0.0.1:0`; the environment asks for another address.
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_LISTEN", "127.0.0.2:0");
    })
    .await;
    assert_eq!(app.addr.ip().to_string(), "127.0.0.1");
    assert_eq!(app.health().await["status"], "ok");
}

#[tokio::test]
async fn with_no_secrets_configured_they_are_generated_private_and_work() {
    let mut app = TestApp::spawn_with(|s| {
        s.unset("HERALD_JWT_SECRET").unset("HERALD_API_KEYS");
    })
    .await;
    let dir = app.data_dir.path().to_owned();
    for file in ["jwt_secret", "api_key"] {
        let meta = std::fs::metadata(dir.join(file)).unwrap_or_else(|e| panic!("{file} was not generated: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file} is readable by others");
        assert!(meta.len() >= 16, "{file} is too short to be a secret");
    }
    let api_key = std::fs::read_to_string(dir.join("api_key")).unwrap().trim().to_owned();
    let jwt_secret_before = std::fs::read(dir.join("jwt_secret")).unwrap();

    // `herald token` mints a user token from the same data dir.
    let mut no_secrets = Settings::default();
    no_secrets.unset("HERALD_JWT_SECRET").unset("HERALD_API_KEYS");
    let output = run_herald(&["token", "--user", "alice", "--data-dir", dir.to_str().unwrap()], &no_secrets).await;
    assert!(output.status.success(), "herald token failed: {}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "not just a JWT on stdout: {token:?}");
    assert_eq!(decode_unverified(&token)["sub"], "alice");

    // The generated key publishes; the token reads.
    app.api_key = api_key.clone();
    let created = app.notify("alice", "t", "with generated secrets").await;
    let (status, inbox) = crate::helpers::status_and_json(app.list(&token, "?page=0&limit=10").await).await;
    assert_eq!(status, 200, "{inbox}");
    assert_eq!(inbox["items"][0]["id"], created["id"]);
    let tab = app.connect_ws_query(&format!("?token={token}")).await;
    assert_eq!(tab.hello["user_id"], "alice");
    drop(tab);

    // A restart keeps the same secrets: the token and key still work.
    app.restart().await;
    assert_eq!(std::fs::read(dir.join("jwt_secret")).unwrap(), jwt_secret_before);
    assert_eq!(app.list(&token, "?page=0&limit=10").await.status(), 200);
    app.notify("alice", "t", "after restart").await;
}

#[tokio::test]
async fn herald_token_honours_the_ttl() {
    let mut settings = Settings::default();
    settings.unset("HERALD_JWT_SECRET").unset("HERALD_API_KEYS");
    // The first start generates the secret the token command signs with.
    let app = TestApp::spawn_with(|s| {
        s.unset("HERALD_JWT_SECRET").unset("HERALD_API_KEYS");
    })
    .await;
    let data_dir = app.data_dir.path().to_str().unwrap();

    let output = run_herald(&["token", "--user", "bob", "--ttl", "120", "--data-dir", data_dir], &settings).await;
    assert!(output.status.success(), "herald token failed: {}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let claims = decode_unverified(&token);
    assert_eq!(claims["sub"], "bob");
    let ttl = claims["exp"].as_i64().expect("a numeric exp") - now();
    assert!((110..=120).contains(&ttl), "exp is {ttl} s away, not 120");
    assert_eq!(app.list(&token, "?page=0&limit=10").await.status(), 200);
}
