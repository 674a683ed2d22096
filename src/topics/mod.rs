//! Topics: the live status of one thing (an order being executed, a mint intent being confirmed), streamed
//! to whoever may watch it. A topic is `namespace:id` ([`TopicName`]); a namespace may declare a
//! [`Lifecycle`] that its events must follow, and has a [`Policy`](namespace::Policy) for how long topics
//! live and how much history they keep.
//!
//! A [`CorrelationKey`] names a chain transaction, so that the chain event about it finds the topic of the
//! intent that sent it.
//!
//! This is the model (names, grants, lifecycles, events and state, correlation keys); the store keeps topics
//! (`store::topics`), the hub fans their events out (`hub::topics`), and the transports serve them.

pub mod correlation;
pub mod event;
pub mod lifecycle;
pub mod name;
pub mod namespace;

pub use correlation::CorrelationKey;
pub use event::{NewTopicEvent, SharedChange, TopicChange, TopicEvent, TopicState};
pub use lifecycle::{Lifecycle, Refusal};
pub use name::{TopicName, TopicPattern};
pub use namespace::Namespaces;
