//! The WebSocket client side of the bench: opening connections, parsing frames, and feeding
//! them to a mode.

pub mod frame;
pub mod session;
pub mod socket;
pub mod ws;
