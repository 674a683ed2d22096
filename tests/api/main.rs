//! Herald's integration tests: each test starts the real `herald` binary on an ephemeral port with a real
//! SQLite file in its own temp dir, and talks to it over real HTTP and WebSocket clients.
//!
//! Run them with `cargo test --test api`.

mod helpers;

mod amqp;
mod auth;
mod auth_matrix;
mod bad_input;
mod chain;
mod cluster;
mod config;
mod email;
mod email_channel;
mod fanout;
mod graphql;
mod idempotency;
mod jwks;
mod jwt_public_key;
mod keepalive;
mod lifecycle;
mod limits;
mod notification_email;
mod observability;
mod offline;
mod postgres;
mod read_sync;
mod reconnect;
mod rest;
mod slow_consumer;
mod sse;
mod storage;
mod topics;
mod user_sync;
mod web;
mod websocket_protocol;
