//! The hub: the connections open on this node, and the fanout of inbox events (by user) and topic events
//! (by topic, `topics`) to them.
//!
//! Architecture invariant: the hub never sees a transport type. It holds outboxes of encoded frames; the
//! WebSocket (or any later) transport drains them onto its sockets.

pub mod capacity;
pub mod outbox;
pub mod registry;
pub mod stream;
pub mod topics;

use std::sync::Arc;

pub use capacity::{Capacity, Permit};
pub use outbox::{Frame, Outbox, Push};
pub use registry::{Connection, Registration, Registry};
pub use topics::{Encoding, Lagged, Sink, TopicHub, TopicSubscription};

use crate::domain::InboxEvent;

pub struct Hub {
    pub registry: Arc<Registry>,
    pub capacity: Arc<Capacity>,
    pub topics: Arc<TopicHub>,
}

impl Hub {
    /// `ordered`: deliver each user's events in their `seq` order (a cluster; see `Registry::new`).
    pub fn new(max_connections: usize, ordered: bool) -> Self {
        Self {
            registry: Arc::new(Registry::new(ordered)),
            capacity: Capacity::new(max_connections),
            topics: Arc::new(TopicHub::new(ordered)),
        }
    }

    /// Pushes each event to the local connections of its user. Each frame is encoded once, and only when
    /// the user has a connection here.
    pub fn dispatch(&self, events: &[InboxEvent]) {
        for event in events {
            let frame = || {
                let (notification, received_at) = match event {
                    InboxEvent::Created { notification, received_at, .. } => {
                        (Some(notification.id), Some(*received_at))
                    }
                    _ => (None, None),
                };
                Frame { bytes: crate::protocol::event(event), notification, received_at, topic: None }
            };
            match event.seq() {
                Some(seq) => {
                    if self.registry.deliver_in_order(event.user_id(), seq, frame) {
                        self.registry.resync(event.user_id());
                    }
                }
                None => {
                    self.registry.deliver(event.user_id(), frame);
                }
            }
        }
    }
}
