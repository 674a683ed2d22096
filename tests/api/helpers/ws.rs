//! `WsClient`: one WebSocket connection to `/ws`, read frame by frame with a timeout on every wait.

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    tungstenite::{protocol::WebSocketConfig, Error as WsError, Message},
    MaybeTlsStream, WebSocketStream,
};

use super::{ids, WAIT};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connected client. `hello` and `backlog` are the first two frames the server sent: the `hello` and the
/// `notifications` batch.
pub struct WsClient {
    pub hello: Value,
    pub backlog: Value,
    socket: Socket,
}

/// The test client accepts frames of any size: the server's `notifications` batches can be large.
fn config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(None).max_frame_size(None)
}

impl WsClient {
    /// Connects to `url` and reads the `hello` and `notifications` frames.
    pub async fn connect(url: &str) -> Result<WsClient, String> {
        match WsClient::try_connect(url).await {
            Ok(client) => Ok(client),
            Err((status, body)) => Err(format!("upgrade refused with HTTP {status}: {body:?}")),
        }
    }

    /// Connects to `url`; `Err((status, body))` when the server refuses the upgrade.
    pub async fn try_connect(url: &str) -> Result<WsClient, (u16, Option<Value>)> {
        let client = WsClient::try_connect_raw(url).await?;
        Ok(WsClient::open(client.socket).await)
    }

    /// Connects to `url` without reading anything (a topic socket sends no `hello`); `Err((status, body))`
    /// when the server refuses the upgrade.
    pub async fn try_connect_raw(url: &str) -> Result<WsClient, (u16, Option<Value>)> {
        let connect = tokio_tungstenite::connect_async_with_config(url, Some(config()), true);
        let outcome = tokio::time::timeout(WAIT, connect).await.expect("WebSocket handshake timed out");
        match outcome {
            Ok((socket, _)) => Ok(WsClient { hello: Value::Null, backlog: Value::Null, socket }),
            Err(WsError::Http(response)) => {
                let status = response.status().as_u16();
                let body = response.body().as_ref().and_then(|b| serde_json::from_slice(b).ok());
                Err((status, body))
            }
            Err(e) => panic!("WebSocket connect to {url} failed: {e}"),
        }
    }

    /// Connects over a TCP socket with a 4 KiB receive buffer, so that a client that stops reading fills
    /// the server's send path quickly.
    pub async fn connect_slow(addr: SocketAddr, url: &str) -> WsClient {
        let socket = TcpSocket::new_v4().expect("TCP socket");
        socket.set_recv_buffer_size(4096).expect("set SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("TCP connect");
        let handshake = tokio_tungstenite::client_async_with_config(url, MaybeTlsStream::Plain(stream), Some(config()));
        let (socket, _) = tokio::time::timeout(WAIT, handshake)
            .await
            .expect("WebSocket handshake timed out")
            .expect("WebSocket handshake");
        WsClient::open(socket).await
    }

    /// Wraps a socket opened some other way (with a subprotocol, say), reading nothing.
    pub fn from_socket(socket: Socket) -> WsClient {
        WsClient { hello: Value::Null, backlog: Value::Null, socket }
    }

    async fn open(socket: Socket) -> WsClient {
        let mut client = WsClient { hello: Value::Null, backlog: Value::Null, socket };
        client.hello = client.next_json().await;
        assert_eq!(client.hello["type"], "hello", "first frame: {}", client.hello);
        client.backlog = client.next_json().await;
        assert_eq!(client.backlog["type"], "notifications", "second frame: {}", client.backlog);
        client
    }

    /// The notifications of the `notifications` frame received on connect, oldest first.
    pub fn backlog_items(&self) -> Vec<Value> {
        self.backlog["items"].as_array().unwrap_or_else(|| panic!("no items in {}", self.backlog)).clone()
    }

    /// The ids of [`WsClient::backlog_items`].
    pub fn backlog_ids(&self) -> Vec<String> {
        ids(&self.backlog_items())
    }

    /// The next message of any kind, `None` when the connection ended; fails the test after `timeout`.
    pub async fn next_message_within(&mut self, timeout: Duration) -> Option<Result<Message, WsError>> {
        match tokio::time::timeout(timeout, self.socket.next()).await {
            Ok(next) => next,
            Err(_) => panic!("no WebSocket message within {timeout:?}"),
        }
    }

    /// The next JSON text frame, skipping WebSocket Ping/Pong; fails the test on a close, an error or after
    /// 10 s.
    pub async fn next_json(&mut self) -> Value {
        loop {
            match self.next_message_within(WAIT).await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("server sent a text frame that is not JSON ({e}): {text:?}"))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a JSON text frame, got {other:?}"),
            }
        }
    }

    /// The next frame of `kind`, skipping frames of other types.
    pub async fn next_of_type(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next_json().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// The next frame, which must be a live `notification`; returns the notification.
    pub async fn next_notification(&mut self) -> Value {
        let frame = self.next_json().await;
        assert_eq!(frame["type"], "notification", "expected a live notification, got {frame}");
        frame["data"].clone()
    }

    /// The next `count` frames, which must all be live notifications.
    pub async fn next_notifications(&mut self, count: usize) -> Vec<Value> {
        let mut received = Vec::with_capacity(count);
        for _ in 0..count {
            received.push(self.next_notification().await);
        }
        received
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        self.socket.send(Message::text(text)).await.expect("send a WebSocket frame");
    }

    pub async fn send_json(&mut self, frame: &Value) {
        self.send_text(frame.to_string()).await;
    }

    /// Sends an application `ping` and asserts the next frame is the `pong`: proof the connection is open
    /// and the server handled everything sent before.
    pub async fn assert_alive(&mut self) {
        self.send_json(&serde_json::json!({ "type": "ping" })).await;
        let frame = self.next_json().await;
        assert_eq!(frame, serde_json::json!({ "type": "pong" }));
    }

    /// Reads until the server's Close frame, skipping any data frames still queued before it, and returns
    /// its code and reason. Fails if the connection ends without one, or after 10 s without a frame.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.next_message_within(WAIT).await {
                Some(Ok(Message::Close(Some(frame)))) => return (frame.code.into(), frame.reason.as_str().to_owned()),
                Some(Ok(Message::Close(None))) => panic!("the server closed without a close code"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("the connection failed before a Close frame: {e}"),
                None => panic!("the connection ended without a Close frame"),
            }
        }
    }

    /// Like [`WsClient::expect_close`], also returning the live notifications received before the close.
    pub async fn drain_until_close(&mut self) -> (Vec<Value>, (u16, String)) {
        let mut notifications = Vec::new();
        loop {
            match self.next_message_within(WAIT).await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (notifications, (frame.code.into(), frame.reason.as_str().to_owned()))
                }
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(text.as_str()).expect("JSON frame");
                    if frame["type"] == "notification" {
                        notifications.push(frame["data"].clone());
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected frames then a Close frame, got {other:?}"),
            }
        }
    }

    /// Reads until the connection is gone (Close frame, error or end of stream), ignoring whatever comes
    /// before, and says whether it ended within `timeout`.
    pub async fn ended_within(&mut self, timeout: Duration) -> bool {
        let ended = async {
            loop {
                match self.socket.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => continue,
                }
            }
        };
        tokio::time::timeout(timeout, ended).await.is_ok()
    }

    /// Closes the connection from the client side and waits for the server's answer.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
        let _ = tokio::time::timeout(WAIT, async { while self.socket.next().await.is_some() {} }).await;
    }

    /// The underlying socket, for tests that must read without the helpers (e.g. counting pings).
    pub fn socket(&mut self) -> &mut Socket {
        &mut self.socket
    }
}
