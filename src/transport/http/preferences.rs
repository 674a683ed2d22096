//! A user's own preferences: `GET /api/v1/preferences` and `PUT /api/v1/preferences` with
//! `{"email": {"enabled": bool, "opt_out": ["type", …]}}`. Notifications are emailed only when `enabled` and
//! their type is not in `opt_out`; a change cancels the pending emails it now forbids. Transactional emails
//! (sign-up and verification codes) are not notifications and are not affected.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::extract::{AuthUser, Json};
use crate::domain::{NotificationType, Timestamp};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::directory::{Preferences, OPT_OUT_MAX};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EmailInput {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    opt_out: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesInput {
    #[serde(default)]
    email: Option<EmailInput>,
}

#[derive(Serialize)]
struct EmailBody<'a> {
    enabled: bool,
    opt_out: &'a BTreeSet<String>,
}

#[derive(Serialize)]
struct PreferencesBody<'a> {
    email: EmailBody<'a>,
    updated_at: Option<Timestamp>,
    /// Only in a PUT's answer: pending emails this change cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    cancelled_emails: Option<u64>,
}

fn body(preferences: &Preferences, cancelled_emails: Option<u64>) -> PreferencesBody<'_> {
    PreferencesBody {
        email: EmailBody { enabled: preferences.email_enabled, opt_out: &preferences.email_opt_out },
        updated_at: preferences.updated_at,
        cancelled_emails,
    }
}

pub async fn get(State(state): State<AppState>, AuthUser(user): AuthUser) -> Result<Response, ApiError> {
    let preferences = state.directory.preferences(&user.id).await?;
    Ok(axum::Json(body(&preferences, None)).into_response())
}

/// Replaces the preferences: what the body leaves out is the default (email enabled, no type opted out).
pub async fn put(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Json(input): Json<PreferencesInput>,
) -> Result<Response, ApiError> {
    let email = input.email.unwrap_or_default();
    let opt_out = email.opt_out.unwrap_or_default();
    if opt_out.len() > OPT_OUT_MAX {
        return Err(ApiError::invalid_request(format!("email.opt_out: at most {OPT_OUT_MAX} types")));
    }
    let mut types = BTreeSet::new();
    for kind in &opt_out {
        let kind =
            NotificationType::parse(kind).map_err(|e| ApiError::invalid_request(format!("email.opt_out: {e}")))?;
        types.insert(kind.as_str().to_owned());
    }
    let preferences = Preferences {
        email_enabled: email.enabled.unwrap_or(true),
        email_opt_out: types,
        updated_at: Some(Timestamp::now()),
    };
    let cancelled = state.directory.set_preferences(&user.id, &preferences).await?;
    if cancelled > 0 {
        metrics::counter!("herald_emails_cancelled_total", "reason" => "opted_out").increment(cancelled);
    }
    Ok(axum::Json(body(&preferences, Some(cancelled))).into_response())
}
