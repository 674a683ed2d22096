//! The HTTP transport: routes, the access log, and the JSON error for routes that do not exist.

pub mod extract;
pub mod inbox;
pub mod preferences;
mod presence;
mod system;
pub mod topics;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::ingest;
use crate::state::AppState;

pub fn routes(state: AppState) -> Router {
    let body_limit = state.max_body_bytes;
    let router = Router::new()
        .route("/api/v1/notifications", post(ingest::http::publish).get(inbox::list))
        .route("/api/v1/notifications/batch", post(ingest::http::publish_batch))
        .route("/api/v1/notifications/unread-count", get(inbox::unread_count))
        .route("/api/v1/notifications/read-all", post(inbox::mark_all_read))
        .route("/api/v1/notifications/{id}/read", post(inbox::mark_read))
        .route("/api/v1/openapi.json", get(system::openapi))
        .route("/api/v1/users/{id}/presence", get(presence::presence))
        .route("/api/v1/users/{id}", get(ingest::users::get).put(ingest::users::put).delete(ingest::users::delete))
        .route("/api/v1/preferences", get(preferences::get).put(preferences::put))
        .route("/api/v1/sync/users/{id}", post(ingest::sync::resync))
        .route("/health", get(system::health))
        .route("/metrics", get(system::metrics))
        .route("/api/v1/topics/events/batch", post(ingest::topics::publish_batch))
        .route("/api/v1/topics/{topic}/events", post(ingest::topics::publish).get(topics::history))
        .route("/api/v1/topics/{topic}", get(topics::get_state))
        .route("/api/v1/correlations", post(ingest::correlations::correlate))
        .route("/api/v1/emails", post(ingest::emails::submit))
        .route("/api/v1/emails/{id}", get(ingest::emails::status))
        .route("/graphql", post(super::graphql::post).get(super::graphql::get))
        .route("/api/v1/stream", get(super::sse::stream))
        .route("/api/v1/dev/token", get(super::web::dev_token_enabled).post(super::web::dev_token))
        .route("/", get(super::web::index))
        .route("/inbox/inbox.js", get(super::web::script))
        .route("/inbox/inbox.css", get(super::web::style))
        .route("/ws", get(super::ws::upgrade))
        .route("/ws/topics/{topic}", get(super::ws::topic_socket::upgrade));
    let router = aliases(router, &state);
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this route does not take that method")
}

/// Logs each request by its route pattern, never its query string, so tokens in `?token=` stay out of logs.
async fn access_log(request: Request, next: Next) -> Response {
    // Off by default (it is a debug event), and then it costs one check per request.
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    tracing::debug!(%method, route, status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    response
}

/// The configured route aliases (`/api/orders/status/{id}`, `/api/orders/{id}`); their paths were checked
/// not to overlap Herald's own or each other when the configuration was read.
fn aliases(mut router: Router<AppState>, state: &AppState) -> Router<AppState> {
    use axum::extract::ws::rejection::WebSocketUpgradeRejection;
    use axum::extract::ws::WebSocketUpgrade;
    use axum::extract::{Path, State};
    use axum::http::HeaderMap;

    use crate::transport::http::extract::Query;
    use crate::transport::ws::topic_socket::{self, TopicParams};

    for alias in &state.topic_settings.routes {
        let alias = std::sync::Arc::new(alias.clone());
        let ws = {
            let alias = alias.clone();
            move |State(state): State<AppState>,
                  Path(id): Path<String>,
                  Query(params): Query<TopicParams>,
                  headers: HeaderMap,
                  upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>| {
                topic_socket::alias(alias.clone(), state, id, params, headers, upgrade)
            }
        };
        router = router.route(&alias.ws, get(ws));
        if let Some(path) = &alias.state {
            let alias = alias.clone();
            let rest = move |State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap| {
                topics::alias_state_route(alias.clone(), state, id, headers)
            };
            router = router.route(path, get(rest));
        }
    }
    router
}
