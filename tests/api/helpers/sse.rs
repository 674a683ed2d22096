//! A Server-Sent Events client over a real HTTP response: reads the stream chunk by chunk and parses the
//! events (`id:`, `event:`, `data:`, comment lines), as a browser's EventSource does.

use std::time::Duration;

use serde_json::Value;

use super::WAIT;

/// One event as the browser would dispatch it.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// The `id:` field of this event, if it had one.
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

pub struct SseClient {
    response: reqwest::Response,
    buffer: Vec<u8>,
    /// Comment lines seen (keepalives).
    pub comments: usize,
    /// The last `id:` seen, as the browser's `lastEventId`.
    pub last_event_id: Option<String>,
}

impl SseClient {
    pub fn new(response: reqwest::Response) -> Self {
        Self { response, buffer: Vec::new(), comments: 0, last_event_id: None }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    /// The next event (comments are counted and skipped), or `None` when the stream ends; fails the test
    /// when none comes within `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(event) = self.parse_one() {
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no SSE event within {timeout:?}; buffered {:?}", self.text()));
            match chunk {
                Ok(Some(bytes)) => self.buffer.extend_from_slice(&bytes),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next event; fails the test if the stream ends or nothing comes in time.
    pub async fn next(&mut self) -> SseEvent {
        self.next_within(WAIT).await.expect("the stream ended")
    }

    /// The next event, which must be of type `kind`.
    pub async fn expect(&mut self, kind: &str) -> SseEvent {
        let event = self.next().await;
        assert_eq!(event.event, kind, "expected a {kind} event, got {event:?}");
        event
    }

    /// Waits for the end of the stream, returning the events before it.
    pub async fn until_end(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next_within(WAIT).await {
            events.push(event);
        }
        events
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer).into_owned()
    }

    /// Takes one complete event (up to a blank line) off the buffer.
    fn parse_one(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.buffer.windows(2).position(|w| w == b"\n\n")?;
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let block = String::from_utf8(block).expect("SSE is UTF-8");
            let (mut id, mut event, mut data) = (None, None, Vec::new());
            for line in block.lines().filter(|l| !l.is_empty()) {
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                match field {
                    "id" => id = Some(value.to_owned()),
                    "event" => event = Some(value.to_owned()),
                    "data" => data.push(value.to_owned()),
                    other => panic!("an unknown SSE field {other:?} in {block:?}"),
                }
            }
            if data.is_empty() {
                continue;
            }
            if id.is_some() {
                self.last_event_id = id.clone();
            }
            let data =
                serde_json::from_str(&data.join("\n")).unwrap_or_else(|e| panic!("data is not JSON ({e}): {block:?}"));
            return Some(SseEvent { id, event: event.unwrap_or_else(|| "message".into()), data });
        }
    }
}
