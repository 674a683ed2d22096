//! What every WebSocket session shares: how a batch of frames is written, how a socket is closed, and how
//! read errors are told apart.

use std::collections::VecDeque;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::SinkExt;

use crate::error::CloseReason;
use crate::hub::{Frame, Outbox};
use crate::transport::live::record_written;

/// How long a write may take before the client is considered gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing handshake may take; a slow consumer gets this long to read up to the close frame.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

pub enum Flow {
    Continue,
    Close(CloseReason),
    /// The socket is gone or unusable; end without a closing handshake.
    End,
}

/// Writes frames as one batch (and counts them): fed into the socket's write buffer and flushed once, so a burst becomes a
/// few large writes. A write that does not finish at once is raced against the outbox closing (so a slow
/// consumer is cut off even while its socket is full) and bounded by [`WRITE_TIMEOUT`]; one that does (the
/// usual case) arms no timer, which a profile of a 10,000-subscriber broadcast showed to matter.
pub async fn write_batch(socket: &mut WebSocket, frames: &VecDeque<Frame>, outbox: &Outbox) -> Flow {
    let write = async {
        for frame in frames {
            socket.feed(text(frame.bytes.clone())).await?;
        }
        socket.flush().await
    };
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    let result = match first {
        Poll::Ready(result) => result,
        Poll::Pending => tokio::select! {
            result = tokio::time::timeout(WRITE_TIMEOUT, &mut write) => match result {
                Ok(result) => result,
                Err(_) => return Flow::End,
            },
            () = outbox.closing() => return Flow::Close(outbox.take().1.unwrap_or(CloseReason::SlowConsumer)),
        },
    };
    match result {
        Ok(()) => {
            record_written(frames);
            Flow::Continue
        }
        Err(_) => Flow::End,
    }
}

/// What [`read_early`] found.
pub enum Early {
    Nothing,
    /// A frame the client sent before its backlog: handle it once the backlog is out.
    Frame(Message),
    /// The socket ended or failed already.
    Ended(Flow),
}

/// Reads the socket once, without waiting, before a connection waits for its turn at the backlog. Until its
/// first read an upgraded connection still holds the HTTP connection's read buffer (8 KiB): a burst of
/// thousands of connections waiting for their backlogs pinned that much each. Reading once drops it; a frame
/// that had already arrived is kept for later, so nothing the client sends is lost.
pub fn read_early(socket: &mut WebSocket) -> Early {
    match futures_util::FutureExt::now_or_never(socket.recv()) {
        None => Early::Nothing,
        Some(Some(Ok(message))) => Early::Frame(message),
        Some(Some(Err(e))) => Early::Ended(read_failed(e)),
        Some(None) => Early::Ended(Flow::End),
    }
}

/// The keepalive tick: closes a connection silent for two intervals (4000) or whose token has expired (4001),
/// and otherwise sends a WebSocket Ping.
pub async fn keepalive(
    socket: &mut WebSocket,
    last_seen: std::time::Instant,
    period: Duration,
    expires_at: Option<u64>,
) -> Flow {
    if last_seen.elapsed() >= period * 2 {
        return Flow::Close(CloseReason::IdleTimeout);
    }
    if expires_at.is_some_and(|at| at <= crate::auth::unix_now()) {
        return Flow::Close(CloseReason::TokenExpired);
    }
    match tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Ping(Bytes::new()))).await {
        Ok(Ok(())) => Flow::Continue,
        _ => Flow::End,
    }
}

/// Sends one frame now.
pub async fn send(socket: &mut WebSocket, frame: Bytes) -> Result<(), Flow> {
    match tokio::time::timeout(WRITE_TIMEOUT, socket.send(text(frame))).await {
        Ok(Ok(())) => {
            crate::telemetry::metrics().frames_sent.increment(1);
            Ok(())
        }
        _ => Err(Flow::End),
    }
}

/// Sends a close frame and waits (bounded) for it to be written.
pub async fn close(socket: &mut WebSocket, reason: CloseReason) {
    if reason == CloseReason::Resync {
        let frame = Message::Text(Utf8Bytes::from_static(crate::protocol::RESYNC));
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(frame)).await;
    }
    let frame = CloseFrame { code: reason.code(), reason: Utf8Bytes::from_static(reason.reason()) };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

pub fn text(bytes: Bytes) -> Message {
    // Frames come from `protocol`, which writes JSON: always UTF-8. The check is a cheap scan.
    match Utf8Bytes::try_from(bytes) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Text(Utf8Bytes::from_static(r#"{"type":"error","code":"internal","message":"bad frame"}"#)),
    }
}

pub fn read_failed(error: axum::Error) -> Flow {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Flow::Close(CloseReason::MessageTooBig),
        _ => Flow::End,
    }
}
