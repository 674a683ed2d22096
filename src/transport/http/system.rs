//! Operational endpoints: `/health`, `/metrics`, `/api/v1/openapi.json`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// Reports each part truthfully: 200 when all are up, 503 naming the one that is not. The Redis mirror, the
/// SMTP server and the graph database are auxiliary: they show "down" in their own sections and never make
/// the node unhealthy.
pub async fn health(State(state): State<AppState>) -> Response {
    let store = state.store.health().await;
    let topics = state.topics.health().await;
    let live_topics = state.topics.live_topics().await.ok();
    let broker = state.broker.health();
    let stopping = state.stopping.is_cancelled();
    let amqp_ok = state.amqp.as_ref().is_none_or(|a| a.ok());
    let email = match &state.email {
        Some(channel) => Some(channel.health().await),
        None => None,
    };
    let email_ok = email.as_ref().is_none_or(|(ok, _)| *ok);
    // The graph database is auxiliary, as SMTP is: the sync consumer retries while it is away.
    let sync = match &state.sync {
        Some(sync) => Some(sync.health().await.1),
        None => None,
    };
    // A cluster broker that is away leaves the node serving its own connections and publishes: degraded, but
    // not to be taken out of the load balancer.
    let ok = store.ok && topics.ok && amqp_ok && email_ok && !stopping;
    // No key from the identity provider yet: no user can connect, on any node; publishers still can.
    let jwks = state.auth.jwks().map(|jwks| jwks.health());
    let jwks_ok = jwks.as_ref().is_none_or(|j| j.keys > 0);
    let status = if ok && broker.ok && jwks_ok {
        "ok"
    } else if stopping {
        "stopping"
    } else {
        "degraded"
    };
    let body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "connections": {
            "total": state.hub.registry.connections(),
            "users": state.hub.registry.users(),
            "capacity": state.hub.capacity.max(),
        },
        "store": { "status": if store.ok { "ok" } else { "down" }, "backend": store.backend, "detail": store.detail },
        "topics": {
            "status": if topics.ok { "ok" } else { "down" },
            "backend": topics.backend,
            "detail": topics.detail,
            "live": live_topics,
            "watched": state.hub.topics.topics(),
            "subscribers": state.hub.topics.subscriptions(),
        },
        "node": broker.node,
        "broker": {
            "status": if broker.ok { "ok" } else { "down" },
            "backend": broker.backend,
            "peers": broker.peers,
        },
        "redis": state.mirror.as_ref().map(|m| m.health()),
        // SMTP down is a warning ("degraded" here); the outbox down makes the node unhealthy.
        "email": email.map(|(_, body)| body),
        "sync": sync,
        "jwks": jwks.map(|j| json!({
            "status": if j.keys > 0 { "ok" } else { "down" },
            "keys": j.keys,
            "fetched_secs_ago": j.fetched_secs_ago,
            "last_error": j.last_error,
        })),
        "amqp": state.amqp.as_ref().map(|a| {
            let consumers = a.health();
            let all = consumers.iter().all(|c| c.state == "consuming");
            json!({
                // "ok": every consumer consuming; "degraded": one is not, but none of those is required
                // (so the node is still healthy); "down": a required one is not.
                "status": if all { "ok" } else if amqp_ok { "degraded" } else { "down" },
                "consumers": consumers,
            })
        }),
    });
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(body)).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.prometheus.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

const OPENAPI: &str = include_str!("openapi.json");

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
