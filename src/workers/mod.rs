//! Workers beside the hub: channels that deliver what producers ask for by other ways than a live
//! connection. Today the email channel's templates (`email`); its SMTP sender, queue and status come next.

pub mod email;
