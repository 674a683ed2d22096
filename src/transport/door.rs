//! The door: every TCP connection is accepted here before HTTP sees it, and checked twice.
//!
//! - **The descriptor budget.** Every accepted socket holds a place for as long as it is open: HTTP
//!   keep-alive connections (idle or not) as much as live ones, so a crowd of idle sockets can never take the
//!   descriptors that live users, the database and the logs need. Past the budget: 503 `at_capacity`.
//! - **`limits.connects_per_second`** per client address. Past it: 429 `rate_limited` with `Retry-After`.
//!
//! A refused client is answered with a short HTTP response and a lingering close (its request is read and
//! dropped, so the close is not a reset that would discard the answer), by at most [`REFUSING_AT_ONCE`]
//! tasks; past that the socket is just closed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::hub::{Capacity, Permit};
use crate::limits::Limits;

/// Refused connections being answered at once.
const REFUSING_AT_ONCE: usize = 64;
/// How long a refused connection is given to take its answer.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Door {
    listener: TcpListener,
    sockets: Arc<Capacity>,
    limits: Arc<Limits>,
    refusing: Arc<Semaphore>,
}

impl Door {
    pub fn new(listener: TcpListener, sockets: Arc<Capacity>, limits: Arc<Limits>) -> Self {
        Self { listener, sockets, limits, refusing: Arc::new(Semaphore::new(REFUSING_AT_ONCE)) }
    }

    fn refuse(&self, tcp: TcpStream, error: ApiError) {
        let Ok(turn) = self.refusing.clone().try_acquire_owned() else { return };
        metrics::counter!("herald_errors_total", "code" => error.code()).increment(1);
        let answer = answer(&error);
        tokio::spawn(async move {
            let _turn = turn;
            let mut tcp = tcp;
            let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
                tcp.write_all(&answer).await?;
                tcp.shutdown().await?;
                // Read what the client sent until it closes (bounded), so the close is not a reset.
                let mut sink = [0u8; 1024];
                let mut left = 64 * 1024usize;
                while left > 0 {
                    match tcp.read(&mut sink).await? {
                        0 => break,
                        n => left = left.saturating_sub(n),
                    }
                }
                Ok::<_, io::Error>(())
            })
            .await;
        });
    }
}

/// The whole HTTP response for a refusal at the door, in Herald's error format.
fn answer(error: &ApiError) -> Vec<u8> {
    let body = serde_json::json!({"error": {"code": error.code(), "message": error.to_string()}}).to_string();
    let status = error.status();
    let retry = match error {
        ApiError::RateLimited { retry_after_secs, .. } => format!("retry-after: {retry_after_secs}\r\n"),
        _ => "retry-after: 1\r\n".to_owned(),
    };
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

impl axum::serve::Listener for Door {
    type Io = Admitted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Admitted, SocketAddr) {
        loop {
            let (tcp, address) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) {
                        // Out of descriptors, most likely: wait for some to be closed rather than spin.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            };
            if let Err(wait) = self.limits.connect(address.ip()) {
                self.refuse(tcp, ApiError::rate_limited("too many connection attempts from this address", wait));
                continue;
            }
            let Some(place) = self.sockets.try_acquire() else {
                crate::telemetry::metrics().connections_refused.increment(1);
                self.refuse(tcp, ApiError::AtCapacity);
                continue;
            };
            // Frames and responses are small and written whole: Nagle's algorithm would hold a write back
            // until the previous one is acknowledged, adding a delayed-ACK wait to delivery.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
            return (Admitted { tcp, _place: place }, address);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted socket and its place in the descriptor budget, given back when the socket closes (after
/// an upgrade too: the WebSocket owns this).
pub struct Admitted {
    tcp: TcpStream,
    _place: Permit,
}

impl AsyncRead for Admitted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_whole_http_responses_in_the_error_format() {
        let text =
            String::from_utf8(answer(&ApiError::rate_limited("slow down", Duration::from_millis(1500)))).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{head}");
        assert!(head.contains("retry-after: 2\r\n") && head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "rate_limited");
        let text = String::from_utf8(answer(&ApiError::AtCapacity)).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n") && text.contains("at_capacity"));
    }
}
