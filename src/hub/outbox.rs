//! A connection's outbound queue: bounded, never blocking the publisher, holding no memory while empty.
//!
//! Rules that keep Herald from being blocked by a slow client (read these before changing anything here):
//! - A publisher only ever `push`es, which takes a short lock and never waits for the client.
//! - The queue holds at most `capacity` frames. The push that would exceed it marks the connection as a
//!   slow consumer instead, drops what is queued, and wakes the connection's task, which closes the socket
//!   with 4008. Memory per connection is therefore bounded whatever the client does.
//! - The connection's task takes the whole queue at once (`take`), which leaves an empty `VecDeque` with no
//!   allocation behind; an idle connection costs only this struct.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::domain::NotificationId;
use crate::error::CloseReason;
use crate::topics::TopicName;

/// An encoded frame, shared by every connection it goes to (cloning it shares the bytes).
#[derive(Debug, Clone)]
pub struct Frame {
    pub bytes: Bytes,
    /// The notification the frame carries, if any: used to skip what the backlog already sent, and to mark
    /// it delivered once written.
    pub notification: Option<NotificationId>,
    /// When the publish that caused the frame arrived, for the publish-to-push latency metric.
    pub received_at: Option<Instant>,
    /// The topic event the frame carries, if any: used to skip what a subscriber's recovery already sent
    /// and what arrives after it unsubscribed.
    pub topic: Option<TopicMark>,
}

#[derive(Debug, Clone)]
pub struct TopicMark {
    pub topic: TopicName,
    pub seq: u64,
}

impl Frame {
    /// A frame that is not an inbox notification nor a topic event.
    pub fn plain(bytes: Bytes) -> Self {
        Self { bytes, notification: None, received_at: None, topic: None }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// This push overflowed the queue; the connection is now closing as a slow consumer.
    Overflowed,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Frame>,
    closing: Option<CloseReason>,
}

pub struct Outbox {
    capacity: usize,
    state: Mutex<State>,
    wake: Notify,
    overflow: Notify,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, state: Mutex::new(State::default()), wake: Notify::new(), overflow: Notify::new() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock guards plain data and no code panics while holding it; recover rather than propagate.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn push(&self, frame: Frame) -> Push {
        let mut state = self.state();
        if state.closing.is_some() {
            return Push::Closed;
        }
        if state.frames.len() >= self.capacity {
            state.closing = Some(CloseReason::SlowConsumer);
            state.frames = VecDeque::new();
            drop(state);
            self.wake.notify_one();
            self.overflow.notify_one();
            return Push::Overflowed;
        }
        let was_empty = state.frames.is_empty();
        state.frames.push_back(frame);
        drop(state);
        // The task takes the whole queue when woken, so only the push into an empty queue needs to wake it.
        if was_empty {
            self.wake.notify_one();
        }
        Push::Queued
    }

    /// Asks the connection to close for `reason` (if it is not closing already).
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.state();
        if state.closing.is_none() {
            state.closing = Some(reason);
            state.frames = VecDeque::new();
        }
        drop(state);
        self.wake.notify_one();
        self.overflow.notify_one();
    }

    /// Takes everything queued, and the reason to close if there is one.
    pub fn take(&self) -> (VecDeque<Frame>, Option<CloseReason>) {
        let mut state = self.state();
        (std::mem::take(&mut state.frames), state.closing)
    }

    /// Resolves when frames are queued or the connection must close. Cancel-safe.
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    /// Resolves when the connection must close; a write in progress is raced against this.
    pub async fn closing(&self) {
        self.overflow.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        Frame::plain(Bytes::from_static(b"{}"))
    }

    #[test]
    fn overflow_marks_slow_consumer_and_frees_the_queue() {
        let outbox = Outbox::new(2);
        assert_eq!(outbox.push(frame()), Push::Queued);
        assert_eq!(outbox.push(frame()), Push::Queued);
        assert_eq!(outbox.push(frame()), Push::Overflowed);
        assert_eq!(outbox.push(frame()), Push::Closed);
        let (frames, closing) = outbox.take();
        assert!(frames.is_empty());
        assert_eq!(closing, Some(CloseReason::SlowConsumer));
    }

    #[test]
    fn take_leaves_no_allocation_behind() {
        let outbox = Outbox::new(8);
        outbox.push(frame());
        let (frames, closing) = outbox.take();
        assert_eq!(frames.len(), 1);
        assert!(closing.is_none());
        assert_eq!(outbox.state().frames.capacity(), 0);
    }

    #[tokio::test]
    async fn push_wakes_the_task() {
        let outbox = std::sync::Arc::new(Outbox::new(8));
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.ready().await }
        });
        outbox.push(frame());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
