//! Where user profiles are mirrored: a Cypher graph database behind [`GraphSink`], with plain OpenCypher and
//! parameters. FalkorDB (`falkordb`, over the Redis protocol) is the backend built in; a Bolt backend for
//! Neo4j (`neo4rs`) implements the same trait with the same queries.
//!
//! Every write is one `MERGE` on `user_id` followed by `SET`s, so it is idempotent and safe under redelivery
//! and concurrency (the database applies a query atomically), and a uniqueness constraint on `user_id` is
//! created at start.

use async_trait::async_trait;

use super::user::Profile;

/// A `(:User)` node's properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GraphUser {
    pub user_id: String,
    pub username: Option<String>,
    pub role: Option<String>,
    pub display_name: Option<String>,
    pub avatar_ipfs_hash: Option<String>,
    pub following_number: i64,
    pub followers_number: i64,
}

impl GraphUser {
    /// The profile fields a sync writes (follower counts are the graph's own).
    pub fn same_profile(&self, profile: &Profile) -> bool {
        self.user_id == profile.user_id
            && self.username == profile.username
            && self.role == profile.role
            && self.display_name == profile.display_name
            && self.avatar_ipfs_hash == profile.avatar_ipfs_hash
    }
}

/// How a write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// A create of a new user: created with zero counts.
    Created,
    /// A create of a user the graph has: left as it is.
    AlreadyExists,
    /// An update of a user the graph has: profile fields set, counts untouched.
    Updated,
    /// An update of a user the graph lacks: created (zero counts) with the profile.
    CreatedByUpdate,
}

impl Written {
    pub fn as_str(self) -> &'static str {
        match self {
            Written::Created => "created",
            Written::AlreadyExists => "already_exists",
            Written::Updated => "updated",
            Written::CreatedByUpdate => "created_by_update",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    /// The database cannot be reached, or timed out: worth retrying.
    #[error("the graph database is unavailable: {0}")]
    Unavailable(String),
    /// The database refused the query: retrying the same query will not help.
    #[error("the graph database refused the query: {0}")]
    Refused(String),
}

#[async_trait]
pub trait GraphSink: Send + Sync + 'static {
    /// Creates the index and the uniqueness constraint on `user_id` (done once; harmless again).
    async fn prepare(&self) -> Result<(), GraphError>;

    /// `create_user_request`: creates a missing user with zero counts; leaves an existing one unchanged.
    async fn create_user(&self, profile: &Profile) -> Result<Written, GraphError>;

    /// `update_user_request`: sets the profile fields (never the counts), creating a missing user.
    async fn update_user(&self, profile: &Profile) -> Result<Written, GraphError>;

    /// Users in `user_id` order after `after`, at most `limit`: for a consistency check.
    async fn users_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<GraphUser>, GraphError>;

    /// Removes a user and their relationships; returns whether there was one.
    async fn delete_user(&self, user_id: &str) -> Result<bool, GraphError>;

    /// `Ok` with a description (`falkordb redis://… graph social`), or why it is not reachable.
    async fn ping(&self) -> Result<String, GraphError>;
}
