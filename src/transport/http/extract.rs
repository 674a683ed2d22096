//! Request extractors that answer bad input with Herald's JSON errors instead of axum's plain-text ones.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

use crate::auth::User;
use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body. Malformed JSON is 400 `invalid_json`; valid JSON of the wrong shape is 422
/// `invalid_request`; a body over the limit is 413 `payload_too_large`. The content type is not required.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.max_body_bytes;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::InvalidJson(format!("the body could not be read: {e}"))
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid_request(e.to_string()),
        _ => ApiError::InvalidJson(e.to_string()),
    })
}

/// Query parameters; anything that does not parse is 400 `invalid_query`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::InvalidQuery(e.body_text()))
    }
}

/// The bearer credential of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// A verified user (JWT). An API key here is 403: publishers cannot read inboxes.
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token =
            bearer(&parts.headers).ok_or(ApiError::Unauthorized("an Authorization: Bearer token is required"))?;
        if state.auth.is_api_key(token) {
            return Err(ApiError::Forbidden("a publisher key cannot read a user's inbox"));
        }
        state
            .auth
            .user(token)
            .await
            .map(AuthUser)
            .map_err(|_| ApiError::Unauthorized("the token is invalid or expired"))
    }
}

/// A verified publisher (API key). A user token here is 403: users cannot publish.
pub struct Publisher;

impl FromRequestParts<AppState> for Publisher {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key =
            bearer(&parts.headers).ok_or(ApiError::Unauthorized("an Authorization: Bearer API key is required"))?;
        if let Some(index) = state.auth.api_key(key) {
            state
                .limits
                .publish(index)
                .map_err(|wait| ApiError::rate_limited("this API key is over limits.publishes_per_second", wait))?;
            return Ok(Publisher);
        }
        if state.auth.user(key).await.is_ok() {
            return Err(ApiError::Forbidden("a user token cannot publish"));
        }
        Err(ApiError::Unauthorized("the API key is not valid"))
    }
}
