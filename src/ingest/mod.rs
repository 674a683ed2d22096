//! Ingestion: the ways producers say that something happened for someone.
//!
//! Today the HTTP publish API; message-queue consumers come beside it and share its validation.

pub mod http;
