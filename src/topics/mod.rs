//! Topics: the live status of one thing (an order being executed, a mint intent being confirmed), streamed
//! to whoever may watch it. A topic is `namespace:id` ([`TopicName`]); a namespace may declare a
//! [`Lifecycle`] that its events must follow.
//!
//! This is the model only (names, the patterns a token grants, lifecycles); storage, fanout and the
//! transports for topics build on it.

pub mod lifecycle;
pub mod name;

pub use lifecycle::{Lifecycle, Refusal};
pub use name::{TopicName, TopicPattern};
