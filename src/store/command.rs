//! The write commands both stores' writers take, and how a command's caller is answered.
//!
//! Every write (create, mark read, mark all read) is a [`Command`] on the writer's one channel; the writer
//! groups what is queued into one transaction and answers each command once the group is committed (and, with
//! SQLite's `full`, fsynced).

use tokio::sync::oneshot;

use crate::domain::{NewNotification, NotificationId, UserId};
use crate::store::{InsertOutcome, MarkReadOutcome, StoreError};

pub type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub enum Command {
    Insert {
        items: Vec<NewNotification>,
        reply: Reply<Vec<InsertOutcome>>,
    },
    MarkRead {
        user: UserId,
        ids: Vec<NotificationId>,
        reply: Reply<MarkReadOutcome>,
    },
    MarkAllRead {
        user: UserId,
        reply: Reply<u64>,
    },
    /// Wakes an otherwise idle writer for work no command brings it to (delivered marks, SQLite's merges).
    Tick,
    /// Finish what is queued before this, then stop.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// What a command produced, before the commit decides whether its caller hears it.
pub enum Output {
    Inserted(Vec<InsertOutcome>),
    Read(MarkReadOutcome),
    AllRead(u64),
    Nothing,
}

/// Answers a command's caller. A caller that gave up (its request was cancelled) is not an error: the write
/// stands.
pub fn answer(cmd: Command, result: Result<Output, StoreError>) {
    let mismatch = || StoreError::Internal("a command produced the wrong output".into());
    match cmd {
        Command::Insert { reply, .. } => drop(reply.send(result.and_then(|o| match o {
            Output::Inserted(v) => Ok(v),
            _ => Err(mismatch()),
        }))),
        Command::MarkRead { reply, .. } => drop(reply.send(result.and_then(|o| match o {
            Output::Read(v) => Ok(v),
            _ => Err(mismatch()),
        }))),
        Command::MarkAllRead { reply, .. } => drop(reply.send(result.and_then(|o| match o {
            Output::AllRead(v) => Ok(v),
            _ => Err(mismatch()),
        }))),
        Command::Tick | Command::Shutdown { .. } => {}
    }
}
