//! Transports: how clients reach Herald. HTTP (REST and the publish API's routes) and WebSocket.

pub mod graphql;
pub mod http;
pub mod ws;
