//! Keepalive: the server pings every `HERALD_PING_INTERVAL_MS`; a client silent for two intervals (not
//! even a Pong) is closed and cleaned up, while a client that answers stays.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{id, TestApp, WsClient};

/// Reads `client` in the background (so its WebSocket library answers every Ping with a Pong) until told
/// to stop; hands back the client and how many Pings it saw.
fn keep_reading(mut client: WsClient) -> (oneshot::Sender<()>, tokio::task::JoinHandle<(WsClient, usize)>) {
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let mut pings = 0;
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                message = client.socket().next() => match message {
                    Some(Ok(Message::Ping(_))) => pings += 1,
                    Some(Ok(Message::Pong(_))) => {}
                    other => panic!("the answering client got {other:?}"),
                },
            }
        }
        (client, pings)
    });
    (stop_tx, handle)
}

#[tokio::test]
async fn a_silent_client_is_closed_and_an_answering_one_stays() {
    let app = TestApp::spawn_with(|s| {
        s.env("HERALD_PING_INTERVAL_MS", "300");
    })
    .await;
    let mut silent = app.connect_ws("alice").await;
    let answering = app.connect_ws("alice").await;
    let (stop, reader) = keep_reading(answering);

    // The silent client never reads, so it never answers a Ping; the server drops it.
    let health = app.wait_for_connections(1).await;
    assert_eq!(health["connections"]["users"], 1);
    assert!(silent.ended_within(Duration::from_secs(5)).await, "the silent client's socket is still open");

    // The answering client was pinged and is still served.
    stop.send(()).unwrap();
    let (mut answering, pings) = reader.await.unwrap();
    assert!(pings >= 1, "the server never sent a WebSocket Ping");
    answering.assert_alive().await;
    let n = app.notify("alice", "t", "still here").await;
    assert_eq!(id(&answering.next_notification().await), id(&n));
}
