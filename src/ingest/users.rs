//! The user directory over HTTP (publishers): `PUT /api/v1/users/{id}` `{"email","display_name"}` sets what
//! Herald knows of a user (the email channel's recipient and the name its templates greet), `GET` reads
//! it, `DELETE` forgets it. The user-sync worker keeps the same entries current from profile events.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::domain::{Timestamp, UserId};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::directory::{DirectoryEntry, DISPLAY_NAME_MAX};
use crate::transport::http::extract::{Json, Publisher};
use crate::workers::email::request::check_address;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryInput {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
}

#[derive(Serialize)]
struct EntryBody<'a> {
    user_id: &'a UserId,
    email: Option<&'a str>,
    display_name: Option<&'a str>,
    updated_at: Timestamp,
}

impl<'a> From<&'a DirectoryEntry> for EntryBody<'a> {
    fn from(e: &'a DirectoryEntry) -> Self {
        Self {
            user_id: &e.user_id,
            email: e.email.as_deref(),
            display_name: e.display_name.as_deref(),
            updated_at: e.updated_at,
        }
    }
}

fn user_id(id: &str) -> Result<UserId, ApiError> {
    UserId::parse(id).map_err(|e| ApiError::invalid_request(e.to_string()))
}

/// Checks a directory entry's fields: an address the email channel can send to, a bounded one-line name.
pub fn entry(user_id: UserId, email: Option<&str>, display_name: Option<&str>) -> Result<DirectoryEntry, String> {
    let email = email.map(check_address).transpose().map_err(|e| format!("email: {e}"))?;
    if let Some(name) = display_name {
        if name.len() > DISPLAY_NAME_MAX {
            return Err(format!("display_name: must be at most {DISPLAY_NAME_MAX} bytes"));
        }
        if name.chars().any(char::is_control) {
            return Err("display_name: must not contain control characters".into());
        }
    }
    Ok(DirectoryEntry { user_id, email, display_name: display_name.map(str::to_owned), updated_at: Timestamp::now() })
}

/// `PUT /api/v1/users/{id}`: replaces the entry (a field left out is cleared) → 200 with it.
pub async fn put(
    State(state): State<AppState>,
    _: Publisher,
    Path(id): Path<String>,
    Json(input): Json<EntryInput>,
) -> Result<Response, ApiError> {
    let entry = entry(user_id(&id)?, input.email.as_deref(), input.display_name.as_deref())
        .map_err(ApiError::invalid_request)?;
    state.directory.put_user(entry.clone()).await?;
    Ok((StatusCode::OK, axum::Json(EntryBody::from(&entry))).into_response())
}

pub async fn get(State(state): State<AppState>, _: Publisher, Path(id): Path<String>) -> Result<Response, ApiError> {
    let Ok(user) = UserId::parse(&id) else { return Err(ApiError::NotFound("no such user")) };
    match state.directory.user(&user).await? {
        Some(entry) => Ok(axum::Json(EntryBody::from(&entry)).into_response()),
        None => Err(ApiError::NotFound("no such user")),
    }
}

pub async fn delete(State(state): State<AppState>, _: Publisher, Path(id): Path<String>) -> Result<Response, ApiError> {
    let Ok(user) = UserId::parse(&id) else { return Err(ApiError::NotFound("no such user")) };
    if state.directory.delete_user(&user).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound("no such user"))
    }
}
