//! The user-sync worker: profile changes from the social platform's `neo4j_sync_queue`
//! (`create_user_request`, `update_user_request`) mirrored into a Cypher graph database (`graph`,
//! FalkorDB built in: `falkordb`), and Herald's own user directory (email, display name; the email
//! channel's recipients) kept current from the same events.
//!
//! A document is read through the configured field mapping (`user`); a malformed one is refused with the
//! reason (the consumer dead-letters it at once). The graph write comes first, then the directory: a
//! failure of either is worth retrying, and both writes are idempotent, so the retry of a half-done event
//! finishes it. `POST /api/v1/sync/users/{id}` re-syncs one user now, and `herald sync verify` compares a
//! source export with the graph.

pub mod falkordb;
pub mod graph;
pub mod user;
pub mod verify;

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::domain::{Timestamp, UserId};
use crate::store::directory::{DirectoryEntry, DirectoryStore};
use crate::store::StoreError;
use graph::{GraphError, GraphSink, Written};
use user::{FieldMap, Profile};

/// Which event a document came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

impl Operation {
    /// The NestJS service's name for it, as its metrics tagged it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "createUser",
            Operation::Update => "updateUser",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The document can never be synced (not an object, no `_id`, a field of the wrong type).
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("the user directory: {0}")]
    Directory(#[from] StoreError),
}

impl SyncError {
    /// Worth retrying: the graph or the directory was away.
    pub fn is_transient(&self) -> bool {
        !matches!(self, SyncError::Malformed(_))
    }
}

pub struct UserSync {
    graph: Arc<dyn GraphSink>,
    directory: Arc<dyn DirectoryStore>,
    fields: FieldMap,
}

impl UserSync {
    pub fn new(graph: Arc<dyn GraphSink>, directory: Arc<dyn DirectoryStore>, fields: FieldMap) -> Self {
        Self { graph, directory, fields }
    }

    pub fn graph(&self) -> &Arc<dyn GraphSink> {
        &self.graph
    }

    pub fn fields(&self) -> &FieldMap {
        &self.fields
    }

    /// Syncs one document: the graph, then the directory.
    pub async fn apply(&self, operation: Operation, doc: &Value) -> Result<Written, SyncError> {
        let started = Instant::now();
        let result = self.apply_inner(operation, doc).await;
        let status = if result.is_ok() { "success" } else { "failed" };
        metrics::histogram!("herald_sync_duration_seconds", "operation" => operation.as_str(), "status" => status)
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(written) => {
                metrics::counter!("herald_sync_users_total", "operation" => operation.as_str(), "result" => written.as_str())
                    .increment(1);
            }
            Err(e) => {
                let reason = if e.is_transient() { "unavailable" } else { "malformed" };
                metrics::counter!("herald_sync_errors_total", "operation" => operation.as_str(), "reason" => reason)
                    .increment(1);
            }
        }
        result
    }

    async fn apply_inner(&self, operation: Operation, doc: &Value) -> Result<Written, SyncError> {
        let profile = Profile::read(doc, &self.fields).map_err(SyncError::Malformed)?;
        let entry = directory_entry(&profile).map_err(SyncError::Malformed)?;
        let written = match operation {
            Operation::Create => self.graph.create_user(&profile).await?,
            Operation::Update => self.graph.update_user(&profile).await?,
        };
        // The directory follows the graph: a create of a user the graph had already changes neither.
        if written != Written::AlreadyExists {
            self.directory.put_user(entry).await?;
        }
        tracing::debug!(
            user = profile.user_id,
            operation = operation.as_str(),
            result = written.as_str(),
            "user synced"
        );
        Ok(written)
    }

    /// `/health`'s `sync` section.
    pub async fn health(&self) -> (bool, Value) {
        match tokio::time::timeout(std::time::Duration::from_secs(1), self.graph.ping()).await {
            Ok(Ok(detail)) => (true, json!({"status": "ok", "graph": detail})),
            Ok(Err(e)) => (false, json!({"status": "down", "error": e.to_string()})),
            Err(_) => (false, json!({"status": "down", "error": "the graph database did not answer within 1 s"})),
        }
    }
}

/// The directory entry a profile gives: its address (checked as the email channel checks recipients; one
/// that is not an address is left out rather than refusing the whole profile) and display name.
fn directory_entry(profile: &Profile) -> Result<DirectoryEntry, String> {
    let user_id = UserId::parse(&profile.user_id).map_err(|e| e.to_string())?;
    let email = profile.email.as_deref().and_then(|e| crate::workers::email::request::check_address(e).ok());
    let display_name = profile
        .display_name
        .as_deref()
        .filter(|n| n.len() <= crate::store::directory::DISPLAY_NAME_MAX && !n.chars().any(char::is_control))
        .map(str::to_owned);
    Ok(DirectoryEntry { user_id, email, display_name, updated_at: Timestamp::now() })
}
