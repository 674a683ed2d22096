//! Transports: how clients reach Herald. HTTP (REST and the publish API's routes), WebSocket, Server-Sent
//! Events, GraphQL, and the web inbox page (`web`); `live` is what the live ones share. Every TCP connection
//! comes in through the `door` (the descriptor budget and the per-address connection rate).

pub mod door;
pub mod graphql;
pub mod http;
pub mod live;
pub mod sse;
pub mod web;
pub mod ws;
