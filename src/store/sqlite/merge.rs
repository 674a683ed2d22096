//! Merges: the writer's in-memory tail (see `tail`) written into the `inbox` index and the counts, and the
//! recovery at open that does the same for whatever a stop left unmerged.

use std::time::Instant;

use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use super::schema;
use super::tail;
use super::writer::{sql_error, Writer};
use crate::domain::NotificationId;
use crate::store::StoreError;

#[derive(Debug, Clone, Copy)]
pub enum MergeMode {
    Load,
    Idle,
    All,
}

/// After a commit group, merges take at most this long, unless a partition is overfull (below); the first
/// due partition is merged whatever the time.
const MERGE_BUDGET: std::time::Duration = std::time::Duration::from_millis(2);
/// A partition holding this many times `merge_rows` is merged at once, whatever the budget: bounds memory
/// when groups are large and few.
const OVERFULL: usize = 8;

impl Writer {
    /// Merges partitions of the tail into the `inbox` index, taking turns. A partition is due when it is
    /// full (`merge_rows` waiting) or old (its oldest id has waited `merge_interval`).
    /// - Under load (commands waiting): a full one, more while within [`MERGE_BUDGET`]; an old one at most
    ///   once per `merge_interval / PARTITIONS`; any overfull one.
    /// - Idle (nothing waiting): every due one, for as long as nothing arrives.
    /// - All (at shutdown): every partition holding anything.
    pub fn merge(&mut self, mode: MergeMode) {
        let started = Instant::now();
        let mut merged_any = false;
        for step in 0..tail::PARTITIONS {
            let p = (self.merge_cursor + step) % tail::PARTITIONS;
            let (len, age) = self.tail.load(p);
            if len == 0 {
                continue;
            }
            let full = len >= self.merge_rows;
            let old = age.is_some_and(|a| a >= self.merge_interval);
            let overfull = len >= self.merge_rows.saturating_mul(OVERFULL);
            let in_budget = !merged_any || started.elapsed() < MERGE_BUDGET;
            // Partitions come due by age in bunches (they fill together); merged back to back, they held
            // the writer for a fifth of every second. Spaced out, each partition still merges about once
            // per interval, and a commit waits behind at most one merge.
            let paced = self.last_merge.is_none_or(|at| at.elapsed() >= self.merge_interval / tail::PARTITIONS as u32);
            let go = match mode {
                MergeMode::All => true,
                MergeMode::Idle => (full || old) && self.commands.is_empty(),
                MergeMode::Load => overfull || (in_budget && (full || (old && paced))),
            };
            if go {
                self.merge_partition(p);
                self.merge_cursor = (p + 1) % tail::PARTITIONS;
                self.last_merge = Some(Instant::now());
                merged_any = true;
            }
        }
    }

    /// Merges one partition in its own transaction, then forgets it; on failure it is kept and tried again
    /// after a later group.
    fn merge_partition(&mut self, p: usize) {
        let entries = self.tail.sorted(p);
        // Partitions with nothing waiting (and this one, once merged) hold every id up to the newest
        // committed: their merge positions move there too, so a quiet partition does not hold back the
        // recovery at the next open.
        let settled: Vec<usize> = (0..tail::PARTITIONS).filter(|&q| q == p || self.tail.load(q).0 == 0).collect();
        let started = Instant::now();
        let result = merge(&mut self.conn, &entries, &settled, self.ids.persisted());
        match result {
            Ok(()) => {
                self.tail.clear(p);
                let _ = self.committed.try_send(());
                metrics::histogram!("herald_store_merge_seconds").record(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                tracing::warn!(error = %e, entries = entries.len(), "could not merge the inbox index; will retry")
            }
        }
    }
}

/// Adds a partition's sorted (user, id) entries to the `inbox` index and moves the merge positions of the
/// `settled` partitions (every id of theirs is then indexed) to `newest`.
///
/// The index is derived data, and the write connection runs with `synchronous=NORMAL` (see `syncer`), so a
/// merge commits without an fsync of its own: the next write's fsync covers its frames, and if a crash comes
/// first, the merge is lost whole with its positions, and recovery at open redoes it. A merge with its own
/// fsync cost the writer a fifth of its time under load.
fn merge(
    conn: &mut Connection,
    entries: &[tail::Entry],
    settled: &[usize],
    newest: Option<NotificationId>,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
    {
        let mut add =
            tx.prepare_cached("INSERT OR IGNORE INTO inbox (user_id, id) VALUES (?1, ?2)").map_err(sql_error)?;
        let mut buf = [0u8; ulid::ULID_LEN];
        let mut counts = UserCounts::new(&tx);
        for tail::Entry { user, id, unread } in entries {
            let text = ulid::Ulid(id.as_u128()).array_to_str(&mut buf);
            if add.execute(params![user.as_str(), &*text]).map_err(sql_error)? == 1 {
                counts.add(user.as_str(), *unread)?;
            }
        }
        counts.finish()?;
    }
    if let Some(newest) = newest {
        let newest = newest.to_string();
        for &p in settled {
            set_merge_position(&tx, p, &newest)?;
        }
    }
    tx.commit().map_err(sql_error)
}

fn set_merge_position(tx: &Transaction<'_>, partition: usize, id: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute(params![tail::merged_key(partition), id]))
    .map(drop)
    .map_err(sql_error)
}

/// At open, before anyone reads: indexes whatever was committed after the last merge (the tail lived in
/// memory and is gone), so readers can start with an empty tail.
fn recover_tail(conn: &mut Connection) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_error)?;
    // From the least advanced partition; rows already indexed are skipped.
    let mut from: Option<String> = None;
    for p in 0..tail::PARTITIONS {
        let position = schema::merge_position(&tx, p)?.map(|id| id.to_string()).unwrap_or_default();
        from = Some(from.map_or(position.clone(), |f| f.min(position)));
    }
    let from = from.unwrap_or_default();
    // Rows not indexed yet, each user's together: indexed and added to the user's counts (which cover only
    // indexed rows; see `tail`).
    let mut added = 0;
    {
        let mut rows = tx
            .prepare(
                "SELECT n.user_id, n.id, n.read_at IS NULL FROM notifications n WHERE n.id > ?1 \
                 AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.user_id = n.user_id AND i.id = n.id) \
                 ORDER BY n.user_id, n.id",
            )
            .map_err(sql_error)?;
        let mut index = tx.prepare("INSERT INTO inbox (user_id, id) VALUES (?1, ?2)").map_err(sql_error)?;
        let mut rows = rows.query(params![from]).map_err(sql_error)?;
        let mut counts = UserCounts::new(&tx);
        while let Some(row) = rows.next().map_err(sql_error)? {
            let (user, id, unread): (String, String, bool) =
                (row.get(0).map_err(sql_error)?, row.get(1).map_err(sql_error)?, row.get(2).map_err(sql_error)?);
            index.execute(params![user, id]).map_err(sql_error)?;
            added += 1;
            counts.add(&user, unread)?;
        }
        counts.finish()?;
    }
    let newest: Option<String> =
        tx.query_row("SELECT max(id) FROM notifications", [], |r| r.get(0)).map_err(sql_error)?;
    if let Some(newest) = newest.filter(|n| *n > from) {
        for p in 0..tail::PARTITIONS {
            set_merge_position(&tx, p, &newest)?;
        }
    }
    tx.commit().map_err(sql_error)?;
    Ok(added)
}

/// Adds indexed rows to their users' counts, one statement per user: rows come grouped by user.
struct UserCounts<'t> {
    tx: &'t Transaction<'t>,
    /// The user being counted, and their (total, unread) so far.
    run: Option<(String, i64, i64)>,
}

impl<'t> UserCounts<'t> {
    fn new(tx: &'t Transaction<'t>) -> Self {
        Self { tx, run: None }
    }

    fn add(&mut self, user: &str, unread: bool) -> Result<(), StoreError> {
        match &mut self.run {
            Some((current, total, u)) if current == user => {
                *total += 1;
                *u += i64::from(unread);
                Ok(())
            }
            _ => {
                let done = self.run.replace((user.to_owned(), 1, i64::from(unread)));
                done.map_or(Ok(()), |(user, total, unread)| add_counts(self.tx, &user, total, unread))
            }
        }
    }

    fn finish(mut self) -> Result<(), StoreError> {
        self.run.take().map_or(Ok(()), |(user, total, unread)| add_counts(self.tx, &user, total, unread))
    }
}

/// Adds merged notifications to a user's counts.
fn add_counts(tx: &Transaction<'_>, user: &str, total: i64, unread: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO inbox_counts (part, user_id, total, unread) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (part, user_id) DO UPDATE SET total = total + excluded.total, unread = unread + excluded.unread",
    )
    .and_then(|mut s| s.execute(params![tail::partition_of(user) as i64, user, total, unread]))
    .map(drop)
    .map_err(sql_error)
}

/// Brings the `inbox` index up to date with everything committed; see [`recover_tail`].
pub fn prepare(conn: &mut Connection) -> Result<(), StoreError> {
    let added = recover_tail(conn)?;
    if added > 0 {
        tracing::info!(notifications = added, "indexed notifications committed after the last merge");
    }
    // Only now: the migration and the recovery may sort a whole table, which must be free to spill to disk.
    conn.pragma_update(None, "temp_store", "MEMORY").map_err(sql_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    #[test]
    fn a_merge_indexes_its_partition() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = super::super::writer::open(&dir.path().join("herald.db"), super::super::BUSY_TIMEOUT).unwrap();
        prepare(&mut conn).unwrap();
        let user = UserId::parse("alice").unwrap();
        let id = NotificationId::from_ulid(ulid::Ulid::new());
        conn.execute(
            "INSERT INTO notifications (id, user_id, type, data, created_at) VALUES (?1, 'alice', 't', '{}', 1)",
            params![id.to_string()],
        )
        .unwrap();
        let p = tail::partition(&user);
        assert!(merge(&mut conn, &[tail::Entry { user: user.clone(), id, unread: true }], &[p], Some(id)).is_ok());
        let indexed: i64 = conn
            .query_row(
                "SELECT count(*) FROM inbox WHERE user_id = ?1 AND id = ?2",
                params!["alice", id.to_string()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexed, 1);
        assert_eq!(schema::counts(&conn, &user).unwrap(), (1, 1), "merged rows join the stored counts");
        assert_eq!(schema::merged_upto(&conn, &user).unwrap(), Some(id));
        assert_eq!(schema::merge_position(&conn, (p + 1) % tail::PARTITIONS).unwrap(), None);
    }
}
