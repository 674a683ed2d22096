//! The web inbox: `/` and its two assets, built from `clients/web` (on `clients/js`) and embedded in the
//! binary, so the server needs no files beside it and `cargo build` needs no Node. The bundle is committed;
//! `scripts/test-js` rebuilds it and fails when the committed copy is stale.
//!
//! Every answer carries a strict Content-Security-Policy (scripts, styles and connections to this origin
//! only; no inline code; no framing). The page signs in with a user token kept in the tab's
//! `sessionStorage`.
//!
//! **Development tokens.** When nobody configured a JWT secret (Herald generated one in its data dir) and
//! the server listens on loopback only, `POST /api/v1/dev/token {"user_id"}` mints a one-hour token for any
//! user, so that the page can be tried at once; `GET` says whether it is on. Otherwise both are 404, as if
//! they did not exist. The request's `Host` must name loopback, so that a page elsewhere cannot reach it by
//! rebinding its DNS name to 127.0.0.1; a cross-origin page cannot read the answer (no CORS) nor send JSON
//! without a preflight that is refused.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::domain::UserId;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::StoreError;
use crate::transport::http::extract::Json;

const INDEX: &[u8] = include_bytes!("../../clients/web/dist/index.html");
const SCRIPT: &[u8] = include_bytes!("../../clients/web/dist/inbox.js");
const STYLE: &[u8] = include_bytes!("../../clients/web/dist/inbox.css");

const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// How long a development token lasts.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(3600);

pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

fn asset(body: &'static [u8], content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated each time: a new binary serves a new page at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    user_id: String,
}

/// `GET /api/v1/dev/token`: 200 `{"enabled":true}` when development tokens can be minted, else 404.
pub async fn dev_token_enabled(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    dev_tokens_allowed(&state, &headers)?;
    Ok(axum::Json(serde_json::json!({ "enabled": true })).into_response())
}

/// `POST /api/v1/dev/token` with `{"user_id"}`: 201 `{"token"}`, a user token valid for an hour.
pub async fn dev_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<DevTokenRequest>,
) -> Result<Response, ApiError> {
    dev_tokens_allowed(&state, &headers)?;
    let user = UserId::parse(&request.user_id).map_err(|e| ApiError::invalid_request(format!("user_id: {e}")))?;
    // Development tokens are on only with the generated HS256 secret, which can always sign.
    let token = state
        .auth
        .mint(&user, DEV_TOKEN_TTL)
        .map_err(|e| ApiError::Store(StoreError::Internal(format!("could not mint a development token: {e}"))))?;
    tracing::info!(user = %user, "minted a development token");
    Ok((StatusCode::CREATED, axum::Json(serde_json::json!({ "token": token }))).into_response())
}

fn dev_tokens_allowed(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if state.dev_tokens && names_loopback(host) {
        Ok(())
    } else {
        Err(ApiError::NotFound("no such route"))
    }
}

/// Whether a `Host` header names this machine's loopback: `localhost`, `127.x.x.x` or `[::1]`, with or
/// without a port.
fn names_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host
            .rsplit_once(':')
            .map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::names_loopback;

    #[test]
    fn only_loopback_hosts_may_mint() {
        for host in ["localhost", "localhost:8004", "LOCALHOST:1", "127.0.0.1:8004", "127.1.2.3", "[::1]:8004", "[::1]"]
        {
            assert!(names_loopback(host), "{host}");
        }
        for host in [
            "",
            "example.com",
            "evil.example:8004",
            "10.0.0.1:8004",
            "[::2]:1",
            "localhost.evil.com",
            "127.0.0.1.nip.io",
        ] {
            assert!(!names_loopback(host), "{host}");
        }
    }
}
