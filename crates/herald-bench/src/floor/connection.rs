//! One WebSocket connection to the floor: one task that sends hello and the backlog, then
//! both writes queued frames and reads the client (`ping`, `subscribe`, `unsubscribe`), until
//! either side goes away.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use serde::Deserialize;
use ulid::Ulid;

use super::api::ApiError;
use super::encode;
use super::registry::Outbox;
use super::{Floor, Slot};
use crate::token;

/// Herald's close code for a client that cannot keep up.
const SLOW_CONSUMER: u16 = 4008;

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    since: Option<String>,
}

/// `GET /ws?token=…[&since=ID]`. Any token is accepted; its `sub` claim (or the token itself,
/// when it is not a JWT) names the user, and it may watch any topic.
pub async fn upgrade(State(floor): State<Arc<Floor>>, Query(query): Query<WsQuery>, ws: WebSocketUpgrade) -> Response {
    let Some(token) = query.token.filter(|t| !t.is_empty()) else {
        return ApiError::Unauthorized.into_response();
    };
    let since = match query.since.as_deref().map(Ulid::from_string).transpose() {
        Ok(since) => since,
        Err(_) => {
            return ApiError::Invalid { index: None, message: "since must be a notification id".to_owned() }
                .into_response()
        }
    };
    let Some(slot) = Floor::open_slot(&floor) else {
        return ApiError::AtCapacity.into_response();
    };
    let user = token::unverified_subject(&token).unwrap_or(token);
    ws.read_buffer_size(floor.read_buffer).on_upgrade(move |socket| serve(floor, socket, user, since, slot))
}

async fn serve(floor: Arc<Floor>, mut socket: WebSocket, user: String, since: Option<Ulid>, _slot: Slot) {
    let connection = floor.next_connection_id();
    let outbox = Outbox::new(floor.queue_cap);
    let backlog = floor.registry.attach_user(&user, connection, &outbox, since);
    let mut topics = Vec::new();
    // An error here means the client went away or broke the protocol; either way the
    // connection is over and there is no one to tell.
    let _ = run(&floor, &mut socket, &user, connection, backlog, &outbox, &mut topics).await;
    floor.registry.detach_user(&user, connection);
    for topic in &topics {
        floor.registry.detach_topic(topic, connection);
    }
}

async fn run(
    floor: &Floor,
    socket: &mut WebSocket,
    user: &str,
    connection: u64,
    backlog: Vec<Utf8Bytes>,
    outbox: &Arc<Outbox>,
    topics: &mut Vec<String>,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(encode::hello_frame(user, connection).into())).await?;
    let backlog = encode::backlog_frame(backlog.iter().map(Utf8Bytes::as_str));
    socket.feed(Message::Text(backlog.into())).await?;
    socket.flush().await?;
    loop {
        tokio::select! {
            biased;
            () = outbox.wait() => {
                if outbox.overflowed() {
                    let close = CloseFrame { code: SLOW_CONSUMER, reason: "slow consumer".into() };
                    return socket.send(Message::Close(Some(close))).await;
                }
                // Everything queued goes out in one flush: frames coalesce into few writes.
                for frame in outbox.take() {
                    socket.feed(Message::Text(frame)).await?;
                }
                socket.flush().await?;
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => match client_frame(text.as_str()) {
                    Some(ClientFrame { kind, .. }) if kind == "ping" => {
                        socket.send(Message::Text(Utf8Bytes::from_static(r#"{"type":"pong"}"#))).await?;
                    }
                    Some(ClientFrame { kind, topic: Some(topic) }) if kind == "subscribe" => {
                        if !crate::topic::is_valid(&topic) {
                            socket.send(Message::Text(encode::error_frame("invalid_request", "bad topic").into())).await?;
                        } else {
                            if !topics.iter().any(|t| *t == topic) {
                                floor.registry.attach_topic(&topic, connection, outbox);
                                topics.push(topic.to_string());
                            }
                            socket.send(Message::Text(encode::subscribed_frame(&topic).into())).await?;
                        }
                    }
                    Some(ClientFrame { kind, topic: Some(topic) }) if kind == "unsubscribe" => {
                        floor.registry.detach_topic(&topic, connection);
                        topics.retain(|t| *t != topic);
                    }
                    // Other client frames (`mark_read`, …) mean nothing to a server without
                    // storage and are ignored.
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The parts of a client frame the floor reads.
#[derive(Deserialize)]
struct ClientFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    topic: Option<Cow<'a, str>>,
}

fn client_frame(text: &str) -> Option<ClientFrame<'_>> {
    serde_json::from_str(text).ok()
}
