//! The user directory and users' preferences: what Herald knows of a user beyond their id.
//!
//! - **The directory** holds a user's email address and display name: the email channel's recipient for a
//!   notification that names none, and the name its templates greet. A publisher sets an entry with
//!   `PUT /api/v1/users/{id}`; the user-sync worker keeps it current from profile events.
//! - **Preferences** are the user's own (`GET/PUT /api/v1/preferences`): whether notifications may reach
//!   them by email at all, and which notification types may not. Transactional emails (`POST
//!   /api/v1/emails`: sign-up and verification codes) are not notifications and do not consult them.
//!
//! Both live beside the email outbox (the same SQLite file, the same PostgreSQL database), so that a change
//! of preferences cancels the pending emails it forbids in the same transaction.

use std::collections::BTreeSet;

use async_trait::async_trait;

use crate::domain::{Timestamp, UserId};
use crate::store::StoreError;

/// The longest display name kept.
pub const DISPLAY_NAME_MAX: usize = 256;
/// The most notification types one user may opt out of by name.
pub const OPT_OUT_MAX: usize = 256;

/// A user's directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub user_id: UserId,
    /// A checked address (`a@b` or `Name <a@b>`).
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub updated_at: Timestamp,
}

/// A user's preferences; a user who never set any has [`Preferences::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preferences {
    /// Notifications may be emailed at all.
    pub email_enabled: bool,
    /// Notification types never emailed.
    pub email_opt_out: BTreeSet<String>,
    /// When they were last set; `None` for the defaults.
    pub updated_at: Option<Timestamp>,
}

impl Default for Preferences {
    fn default() -> Self {
        Self { email_enabled: true, email_opt_out: BTreeSet::new(), updated_at: None }
    }
}

impl Preferences {
    /// Whether a notification of `kind` may be emailed.
    pub fn allows_email(&self, kind: &str) -> bool {
        self.email_enabled && !self.email_opt_out.contains(kind)
    }
}

#[async_trait]
pub trait DirectoryStore: Send + Sync + 'static {
    async fn user(&self, user: &UserId) -> Result<Option<DirectoryEntry>, StoreError>;

    /// Replaces the user's entry (creating it).
    async fn put_user(&self, entry: DirectoryEntry) -> Result<(), StoreError>;

    /// Forgets the user's entry; returns whether there was one.
    async fn delete_user(&self, user: &UserId) -> Result<bool, StoreError>;

    async fn preferences(&self, user: &UserId) -> Result<Preferences, StoreError>;

    /// Replaces the user's preferences and, in the same transaction, cancels their pending notification
    /// emails that the new preferences forbid; returns how many it cancelled.
    async fn set_preferences(&self, user: &UserId, preferences: &Preferences) -> Result<u64, StoreError>;
}
