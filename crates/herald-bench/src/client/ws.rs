//! Opening WebSocket connections: TCP from a loopback source address, the upgrade, and the
//! server's `hello` frame, with bounded concurrency and a timeout per attempt.

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::frame::Frame;
use super::socket;
use crate::server_url::ServerUrl;

pub type Ws = WebSocketStream<TcpStream>;

/// tungstenite allocates its read buffer eagerly, 128 KiB by default: 2.3 GB for a worker's
/// 18,000 connections. It also zero-fills this much before every read, which showed up as 5 %
/// of the client's CPU at 4 KiB. A live frame is ~300 bytes; a large backlog frame still
/// arrives, in more reads.
const READ_BUFFER: usize = 2 * 1024;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// HTTP 503 on the upgrade: the server is at capacity. Counted as refused, not failed.
    #[error("server at capacity (HTTP 503)")]
    Refused,
    #[error("upgrade answered with HTTP {0}")]
    Rejected(u16),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("tcp connect: {0}")]
    Tcp(#[source] io::Error),
    #[error("websocket: {0}")]
    WebSocket(#[source] tungstenite::Error),
    #[error("first frame was not hello")]
    NoHello,
    #[error("closed before hello")]
    Closed,
}

/// An open connection and how long opening it took (TCP connect to `hello` received).
pub struct Connected {
    pub ws: Ws,
    pub took: Duration,
}

/// Opens connections to one server, spreading them over source addresses.
pub struct Connector {
    server: ServerUrl,
    sources: Vec<Ipv4Addr>,
    config: WebSocketConfig,
    attempt_timeout: Duration,
    in_flight: Semaphore,
}

impl Connector {
    pub fn new(server: ServerUrl, sources: Vec<Ipv4Addr>, concurrency: usize, attempt_timeout: Duration) -> Self {
        Self {
            server,
            sources,
            config: WebSocketConfig::default().read_buffer_size(READ_BUFFER),
            attempt_timeout,
            in_flight: Semaphore::new(concurrency.max(1)),
        }
    }

    /// Opens connection number `slot` (which picks its source address) with `query` after
    /// `/ws?`, and waits for `hello`. At most `concurrency` attempts run at once; the time
    /// spent queueing for a turn is not part of [`Connected::took`].
    pub async fn connect(&self, slot: u64, query: &str) -> Result<Connected, ConnectError> {
        // The semaphore is never closed, so acquiring can only succeed; the permit is held
        // until the hello frame has arrived.
        let _permit = self.in_flight.acquire().await;
        let start = Instant::now();
        let ws = tokio::time::timeout(self.attempt_timeout, self.attempt(slot, query))
            .await
            .map_err(|_| ConnectError::Timeout(self.attempt_timeout))??;
        Ok(Connected { ws, took: start.elapsed() })
    }

    async fn attempt(&self, slot: u64, query: &str) -> Result<Ws, ConnectError> {
        let source = (!self.sources.is_empty()).then(|| self.sources[(slot % self.sources.len() as u64) as usize]);
        let stream = socket::connect(source, self.server.addr()).await.map_err(ConnectError::Tcp)?;
        let url = self.server.ws_url(query);
        let mut ws = match tokio_tungstenite::client_async_with_config(url, stream, Some(self.config)).await {
            Ok((ws, _response)) => ws,
            Err(tungstenite::Error::Http(response)) if response.status() == 503 => return Err(ConnectError::Refused),
            Err(tungstenite::Error::Http(response)) => return Err(ConnectError::Rejected(response.status().as_u16())),
            Err(e) => return Err(ConnectError::WebSocket(e)),
        };
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return match Frame::parse(text.as_str()) {
                        Ok(Frame::Hello) => Ok(ws),
                        _ => Err(ConnectError::NoHello),
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(_))) => return Err(ConnectError::NoHello),
                Some(Ok(Message::Close(_))) | None => return Err(ConnectError::Closed),
                Some(Err(e)) => return Err(ConnectError::WebSocket(e)),
            }
        }
    }
}
