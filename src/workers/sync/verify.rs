//! `herald sync verify --from users.jsonl [--fix] [--delete-extra]`: compares a source export (one user
//! document a line, as the user service's database exports them) with the graph, and lists the differences:
//! users missing from the graph, users only the graph has, and users whose profile fields differ. `--fix`
//! repairs the first and last (a create, an update: the same writes the consumer makes); users only the graph
//! has are removed only with `--delete-extra`, since an export may be partial.
//!
//! The source is held in memory as profiles (a few hundred bytes a user); the graph is read in pages, in
//! `user_id` order.

use std::collections::BTreeMap;
use std::io::BufRead;

use super::graph::{GraphError, GraphSink, GraphUser};
use super::user::{FieldMap, Profile};

/// Users read from the graph per query.
const PAGE: usize = 1000;

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub fix: bool,
    pub delete_extra: bool,
}

/// Where a run stands, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Source lines read so far.
    Reading(u64),
    /// Graph users compared so far, of about this many (the source's count).
    Comparing { done: u64, of: u64 },
}

#[derive(Debug, Default)]
pub struct Drift {
    pub source_users: u64,
    pub graph_users: u64,
    /// In the source, not in the graph.
    pub missing: Vec<String>,
    /// In the graph, not in the source.
    pub extra: Vec<String>,
    /// In both, with these fields different.
    pub different: Vec<(String, Vec<&'static str>)>,
    /// Source lines that are not user documents: (line number, why).
    pub malformed: Vec<(u64, String)>,
    /// Users created or updated (`--fix`), and removed (`--delete-extra`).
    pub repaired: u64,
    pub deleted: u64,
}

impl Drift {
    /// Nothing differs, or everything that did was repaired.
    pub fn clean(&self, options: Options) -> bool {
        let left_missing = if options.fix { 0 } else { self.missing.len() + self.different.len() };
        let left_extra = if options.delete_extra { 0 } else { self.extra.len() };
        left_missing + left_extra == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("reading the source: {0}")]
    Source(#[from] std::io::Error),
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// The profile fields that differ between the source and the graph.
fn differences(source: &Profile, graph: &GraphUser) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if source.username != graph.username {
        fields.push("username");
    }
    if source.role != graph.role {
        fields.push("role");
    }
    if source.display_name != graph.display_name {
        fields.push("display_name");
    }
    if source.avatar_ipfs_hash != graph.avatar_ipfs_hash {
        fields.push("avatar_ipfs_hash");
    }
    fields
}

pub async fn verify(
    graph: &dyn GraphSink,
    fields: &FieldMap,
    source: impl BufRead,
    options: Options,
    progress: &mut dyn FnMut(Progress),
) -> Result<Drift, VerifyError> {
    let mut drift = Drift::default();
    let mut wanted: BTreeMap<String, Profile> = BTreeMap::new();
    for (n, line) in source.lines().enumerate() {
        let line = line?;
        let number = n as u64 + 1;
        if number.is_multiple_of(1000) {
            progress(Progress::Reading(number));
        }
        if line.trim().is_empty() {
            continue;
        }
        let profile = serde_json::from_str(&line)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|doc| Profile::read(&doc, fields));
        match profile {
            Ok(profile) => {
                wanted.insert(profile.user_id.clone(), profile);
            }
            Err(why) => drift.malformed.push((number, why)),
        }
    }
    drift.source_users = wanted.len() as u64;
    let of = drift.source_users;
    let mut after: Option<String> = None;
    let mut to_update = Vec::new();
    loop {
        let page = graph.users_after(after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.user_id.clone());
        for user in &page {
            drift.graph_users += 1;
            match wanted.remove(&user.user_id) {
                None => drift.extra.push(user.user_id.clone()),
                Some(profile) => {
                    let fields = differences(&profile, user);
                    if !fields.is_empty() {
                        drift.different.push((user.user_id.clone(), fields));
                        to_update.push(profile);
                    }
                }
            }
        }
        progress(Progress::Comparing { done: drift.graph_users, of });
        if page.len() < PAGE {
            break;
        }
    }
    drift.missing = wanted.keys().cloned().collect();
    if options.fix {
        for profile in wanted.values() {
            graph.create_user(profile).await?;
            drift.repaired += 1;
        }
        for profile in &to_update {
            graph.update_user(profile).await?;
            drift.repaired += 1;
        }
    }
    if options.delete_extra {
        for id in &drift.extra {
            if graph.delete_user(id).await? {
                drift.deleted += 1;
            }
        }
    }
    Ok(drift)
}
