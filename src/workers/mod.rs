//! Workers beside the hub: channels that deliver what producers ask for by other ways than a live
//! connection. Today the email channel (`email`): templates, the outbox, the SMTP sender.

pub mod email;
