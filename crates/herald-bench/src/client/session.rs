//! Reading an open connection: frames are parsed in place and handed to a mode's [`Handler`]
//! until the run says stop or the connection ends.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::frame::{Frame, Item};
use super::ws::Ws;
use crate::clock;
use crate::peer::Peer;

/// What a handler wants after a backlog frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The backlog was cut short (`more: true`): reconnect with `since` to get the rest.
    Reconnect,
}

/// A mode's view of the frames one connection receives.
pub trait Handler {
    /// One notification or event; `live` is false for backlog items. `now_us` is the Unix
    /// time in microseconds at which the frame was read.
    fn item(&mut self, item: &Item<'_>, live: bool, now_us: u64);

    /// The end of a backlog frame, after its items.
    fn backlog_done(&mut self, _more: bool, _now_us: u64) -> Flow {
        Flow::Continue
    }

    /// A topic subscription was confirmed.
    fn subscribed(&mut self) {}

    /// A frame that is not JSON or not a frame the bench knows the shape of.
    fn bad_frame(&mut self);
}

/// Why [`pump`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The stop token fired; the connection is still open.
    Stopped,
    /// The handler asked to reconnect; the connection is still open.
    Reconnect,
    /// The server closed the connection, or it failed.
    Lost,
}

/// Feeds every frame on `ws`, read in `peer`'s protocol, to `handler` until `stop` fires or the connection
/// ends.
pub async fn pump<H: Handler>(peer: Peer, ws: &mut Ws, stop: &CancellationToken, handler: &mut H) -> End {
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let message = tokio::select! {
            biased;
            _ = &mut stopped => return End::Stopped,
            message = ws.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                let now_us = clock::unix_micros();
                match Frame::parse_for(peer, text.as_str()) {
                    Ok(Frame::Live(item)) => handler.item(&item, true, now_us),
                    Ok(Frame::Backlog { items, more }) => {
                        for item in &items {
                            handler.item(item, false, now_us);
                        }
                        if handler.backlog_done(more, now_us) == Flow::Reconnect {
                            return End::Reconnect;
                        }
                    }
                    Ok(Frame::Subscribed) => handler.subscribed(),
                    Ok(Frame::Hello | Frame::Other) => {}
                    Err(_) => handler.bad_frame(),
                }
            }
            // tungstenite queues the Pong for a Ping itself; flushing sends it now rather
            // than whenever the next frame happens to arrive, so a keepalive never times out.
            Some(Ok(Message::Ping(_))) => {
                if ws.flush().await.is_err() {
                    return End::Lost;
                }
            }
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Binary(_))) => handler.bad_frame(),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return End::Lost,
        }
    }
}
