//! Workers beside the hub: the email channel (`email`: templates, the outbox, the SMTP sender), and user
//! sync (`sync`: profile changes mirrored into a graph database and Herald's user directory).

pub mod email;
pub mod sync;
