//! Herald: a real-time notification hub.
//!
//! See ARCHITECTURE.md for the map. In one line: producers publish through [`ingest`], the [`store`]
//! commits and emits events, the [`broker`] carries them to the [`hub`] of every node, and the
//! [`transport`]s write them to each live connection of the user. The [`workers`] deliver by other channels
//! (email).

pub mod app;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod config;
pub mod correlation;
pub mod domain;
pub mod error;
pub mod hub;
pub mod ingest;
pub mod limits;
pub mod mirror;
pub mod protocol;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod topics;
pub mod transport;
pub mod workers;
