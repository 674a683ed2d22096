//! Opening WebSocket connections: TCP from a loopback source address, the upgrade, and the
//! server's `hello` frame, with bounded concurrency and a timeout per attempt.
//!
//! The bound is on connect slots, and [`Opening`] says when a connection gives its slot back: after its
//! hello (paced: at most `concurrency` connections are ever waiting for the server), at the upgrade (burst:
//! every connection can be waiting for its hello at once, as after a deploy), or at the upgrade because
//! there is no hello (nchan). Either way an attempt ends only at its hello, within one timeout from its TCP
//! connect, and its connect time runs from the TCP connect to the hello.

use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant as Deadline;
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
    #[error("{0}")]
    Channel(#[from] crate::peer::ChannelError),
}

/// When a connection counts as open, and when it gives its connect slot back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Open at the hello frame, and the slot is held until then.
    Paced,
    /// Open at the hello frame, but the slot is given back at the upgrade (HTTP 101).
    Burst,
    /// Open at the upgrade: the server sends no hello (nchan).
    Upgrade,
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
    opening: Opening,
    /// Connections upgraded and waiting for their hello, now and at most: how much of a burst the server
    /// actually had in front of it.
    awaiting_hello: AtomicU64,
    awaiting_hello_max: AtomicU64,
}

impl Connector {
    pub fn new(
        server: ServerUrl,
        sources: Vec<Ipv4Addr>,
        concurrency: usize,
        attempt_timeout: Duration,
        opening: Opening,
    ) -> Self {
        Self {
            server,
            sources,
            config: WebSocketConfig::default().read_buffer_size(READ_BUFFER),
            attempt_timeout,
            in_flight: Semaphore::new(concurrency.max(1)),
            opening,
            awaiting_hello: AtomicU64::new(0),
            awaiting_hello_max: AtomicU64::new(0),
        }
    }

    /// The most connections that were between their upgrade and their hello at once, so far.
    pub fn awaiting_hello_max(&self) -> u64 {
        self.awaiting_hello_max.load(Ordering::Relaxed)
    }

    /// Opens connection number `slot` (which picks its source address) to `target` (path and
    /// query), and waits for `hello` unless the server sends none. At most `concurrency` attempts
    /// hold a slot at once; the time spent queueing for one is not part of [`Connected::took`].
    pub async fn connect(&self, slot: u64, target: &str) -> Result<Connected, ConnectError> {
        // The semaphore is never closed, so acquiring can only succeed.
        let permit = self.in_flight.acquire().await;
        let start = Instant::now();
        let deadline = Deadline::from_std(start + self.attempt_timeout);
        let timed_out = |_| ConnectError::Timeout(self.attempt_timeout);
        let mut ws = tokio::time::timeout_at(deadline, self.upgrade(slot, target)).await.map_err(timed_out)??;
        if self.opening != Opening::Paced {
            drop(permit);
        }
        if self.opening != Opening::Upgrade {
            let _waiting = Waiting::new(&self.awaiting_hello, &self.awaiting_hello_max);
            tokio::time::timeout_at(deadline, hello(&mut ws)).await.map_err(timed_out)??;
        }
        Ok(Connected { ws, took: start.elapsed() })
    }

    /// TCP connect and the WebSocket upgrade.
    async fn upgrade(&self, slot: u64, target: &str) -> Result<Ws, ConnectError> {
        let source = (!self.sources.is_empty()).then(|| self.sources[(slot % self.sources.len() as u64) as usize]);
        let stream = socket::connect(source, self.server.addr()).await.map_err(ConnectError::Tcp)?;
        let url = self.server.ws_url(target);
        match tokio_tungstenite::client_async_with_config(url, stream, Some(self.config)).await {
            Ok((ws, _response)) => Ok(ws),
            Err(tungstenite::Error::Http(response)) if response.status() == 503 => Err(ConnectError::Refused),
            Err(tungstenite::Error::Http(response)) => Err(ConnectError::Rejected(response.status().as_u16())),
            Err(e) => Err(ConnectError::WebSocket(e)),
        }
    }
}

/// One connection counted as waiting for its hello until this is dropped, however the wait ends.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(now: &'a AtomicU64, max: &AtomicU64) -> Self {
        let waiting = now.fetch_add(1, Ordering::Relaxed) + 1;
        max.fetch_max(waiting, Ordering::Relaxed);
        Self(now)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads up to the server's first frame, which must be `hello`.
async fn hello(ws: &mut Ws) -> Result<(), ConnectError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return match Frame::parse(text.as_str()) {
                    Ok(Frame::Hello) => Ok(()),
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

#[cfg(test)]
mod tests {
    use futures_util::SinkExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A server that upgrades every connection and sends each its hello only once `hello_after`
    /// connections have been upgraded (never, when 0).
    async fn server(hello_after: usize) -> ServerUrl {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = ServerUrl::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { continue };
                held.push(ws);
                if held.len() == hello_after {
                    for ws in &mut held {
                        let _ = ws.send(Message::text(r#"{"type":"hello"}"#)).await;
                    }
                }
            }
        });
        url
    }

    fn connector(url: ServerUrl, timeout_ms: u64, opening: Opening) -> Connector {
        Connector::new(url, Vec::new(), 1, Duration::from_millis(timeout_ms), opening)
    }

    #[tokio::test]
    async fn burst_gives_the_slot_back_at_the_upgrade() {
        // One slot, and hello only once both are upgraded: in burst mode both get there.
        let burst = connector(server(2).await, 5_000, Opening::Burst);
        let (a, b) = tokio::join!(burst.connect(0, "/ws"), burst.connect(1, "/ws"));
        assert!(a.is_ok() && b.is_ok());

        // Paced, the first holds the only slot until its hello, which needs the second: it times out.
        let paced = connector(server(2).await, 300, Opening::Paced);
        let (a, b) = tokio::join!(paced.connect(0, "/ws"), paced.connect(1, "/ws"));
        assert!(matches!(a, Err(ConnectError::Timeout(_))));
        assert!(b.is_ok());
        assert_eq!(paced.awaiting_hello_max(), 1);
    }

    #[tokio::test]
    async fn a_hello_that_never_comes_fails_the_burst_connection() {
        let burst = connector(server(0).await, 300, Opening::Burst);
        let (a, b) = tokio::join!(burst.connect(0, "/ws"), burst.connect(1, "/ws"));
        assert!(matches!(a, Err(ConnectError::Timeout(_))) && matches!(b, Err(ConnectError::Timeout(_))));
        // Both were waiting at once, with one connect slot.
        assert_eq!(burst.awaiting_hello_max(), 2);
        // Without a hello in the protocol (nchan) the upgrade is the connection.
        let upgrade = connector(server(0).await, 200, Opening::Upgrade);
        assert!(upgrade.connect(0, "/sub/u-1").await.is_ok());
    }
}
