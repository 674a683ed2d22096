//! GraphQL at `/graphql`: queries and mutations over HTTP POST, subscriptions over WebSocket with the
//! `graphql-transport-ws` protocol or the legacy `graphql-ws` one (async-graphql speaks both), and a small
//! query page for a browser's plain GET (embedded; nothing is loaded from elsewhere).
//!
//! Auth: over HTTP, `Authorization: Bearer` with a user token or a publisher key (none: public topics only;
//! an invalid one: 401). Over WebSocket, the `connection_init` payload's `token` (or `Authorization`); an
//! invalid one is refused (the socket closes with 1002 and the reason), none means public topics only.

pub mod schema;
mod streams;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, Stream, StreamExt};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub use schema::{sdl, Caller, HeraldSchema};

use crate::error::{ApiError, CloseReason};
use crate::limits::FrameLimit;
use crate::state::AppState;
use crate::transport::http::extract::{bearer, Json};
use crate::transport::ws::socket::CLOSE_TIMEOUT;

/// How long a `graphql-ws` client may take to answer a keepalive ping.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// Who a credential names, or why it names nobody.
async fn caller_for(state: &AppState, credential: Option<&str>) -> Result<Caller, ApiError> {
    match credential {
        None => Ok(Caller::Anonymous),
        Some(key) if state.auth.is_api_key(key) => Ok(Caller::Publisher),
        Some(token) => state
            .auth
            .user(token)
            .await
            .map(Caller::User)
            .map_err(|_| ApiError::Unauthorized("the token is invalid or expired")),
    }
}

/// `POST /graphql`: one query or mutation.
pub async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<async_graphql::Request>,
) -> Result<Response, ApiError> {
    let caller = caller_for(&state, bearer(&headers)).await?;
    if let Some(index) = bearer(&headers).and_then(|key| state.auth.api_key(key)) {
        state
            .limits
            .publish(index)
            .map_err(|wait| ApiError::rate_limited("this API key is over limits.publishes_per_second", wait))?;
    }
    let request = request.data(caller).data(state.clone());
    let response = state.graphql.execute(request).await;
    Ok(axum::Json(response).into_response())
}

/// `GET /graphql`: a WebSocket upgrade for subscriptions, or the query page.
pub async fn get(
    State(state): State<AppState>,
    protocol: Result<GraphQLProtocol, StatusCode>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Ok(upgrade) = upgrade else {
        return Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response());
    };
    let protocol = protocol.map_err(|_| {
        ApiError::invalid_request("a GraphQL WebSocket needs the graphql-transport-ws or graphql-ws subprotocol")
    })?;
    let Some(permit) = state.hub.capacity.try_acquire() else {
        crate::telemetry::metrics().connections_refused.increment(1);
        return Err(ApiError::AtCapacity);
    };
    let tracked = state.connections.token();
    let response = upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(state.ws.max_frame_bytes)
        .max_frame_size(state.ws.max_frame_bytes)
        .on_upgrade(move |socket| async move {
            let _held = (permit, tracked);
            let mut data = Data::default();
            data.insert(state.clone());
            let init_state = state.clone();
            // The halves are lent to the protocol, so that a connection over its frame rate can still be sent
            // its close frame once the protocol has stopped.
            let (mut sink, stream) = futures_util::StreamExt::split(socket);
            let mut input = Limited { inner: stream, frames: FrameLimit::new(state.limits.frames), tripped: false };
            let serve = GraphQLWebSocket::new_with_pair(&mut sink, &mut input, state.graphql.clone(), protocol)
                .with_data(data)
                .keepalive_timeout(KEEPALIVE)
                .on_connection_init(move |payload| async move { connection_init(&init_state, &payload).await })
                .serve();
            tokio::select! {
                () = serve => {}
                () = state.stopping.cancelled() => {}
            }
            if input.tripped {
                let reason = CloseReason::RateLimited;
                let frame = CloseFrame { code: reason.code(), reason: Utf8Bytes::from_static(reason.reason()) };
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
            }
        });
    Ok(response.into_response())
}

/// A GraphQL connection's client frames, ended (and marked tripped) at the first one over the frame limit.
struct Limited<S> {
    inner: S,
    frames: FrameLimit,
    tripped: bool,
}

impl<S: Stream<Item = Result<Message, axum::Error>> + Unpin> Stream for Limited<S> {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.tripped {
            return Poll::Ready(None);
        }
        match std::task::ready!(self.inner.poll_next_unpin(cx)) {
            Some(_) if !self.frames.admit(Instant::now()) => {
                self.tripped = true;
                Poll::Ready(None)
            }
            item => Poll::Ready(item),
        }
    }
}

/// Reads the caller from the `connection_init` payload: `{"token": JWT}` or `{"Authorization": "Bearer
/// …"}` (any case).
async fn connection_init(state: &AppState, payload: &serde_json::Value) -> async_graphql::Result<Data> {
    let object = payload.as_object();
    let field = |name: &str| {
        object.and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))).and_then(|(_, v)| v.as_str())
    };
    let credential =
        field("token").or_else(|| field("authorization").map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim()));
    let caller = caller_for(state, credential).await.map_err(|e| async_graphql::Error::new(e.to_string()))?;
    let mut data = Data::default();
    data.insert(caller);
    Ok(data)
}

/// The query page: a text area, a token field and a Run button, posting to this endpoint. Embedded, with
/// no script or style from anywhere else.
const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Herald GraphQL</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:70em}textarea,input{width:100%;font:13px monospace}
textarea{height:14em}pre{background:#f4f4f4;padding:1em;white-space:pre-wrap}</style></head>
<body><h1>Herald GraphQL</h1>
<p>Queries and mutations run here over POST; subscriptions need a WebSocket client (graphql-transport-ws).
The schema: <code>herald graphql-schema</code>.</p>
<label>Token (user JWT or publisher key)<input id="token" autocomplete="off"></label>
<label>Query<textarea id="query">{ unreadCount notifications(limit: 5) { total items { id type title read } } }</textarea></label>
<label>Variables (JSON)<input id="variables" value="{}"></label>
<p><button id="run">Run</button></p><pre id="out"></pre>
<script>
document.getElementById('run').onclick = async () => {
  const out = document.getElementById('out');
  let variables = {};
  try { variables = JSON.parse(document.getElementById('variables').value || '{}'); }
  catch (e) { out.textContent = 'variables: ' + e; return; }
  const headers = {'content-type': 'application/json'};
  const token = document.getElementById('token').value.trim();
  if (token) headers.authorization = 'Bearer ' + token;
  const response = await fetch(location.pathname, {method: 'POST', headers,
    body: JSON.stringify({query: document.getElementById('query').value, variables})});
  out.textContent = JSON.stringify(await response.json(), null, 2);
};
</script></body></html>
"#;
