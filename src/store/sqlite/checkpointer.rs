//! Copies committed WAL frames back into the database file, on its own thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the threshold, on the writer's thread; a
//! profile of a loaded writer showed it as almost a fifth of the writer's time. Here a second connection does
//! PASSIVE checkpoints, which never block the writer, at most every [`INTERVAL`]: a page rewritten by many
//! commits in that time is copied back once.
//!
//! Under sustained writes such a checkpoint never quite finishes (frames keep arriving while it copies), and
//! SQLite only starts the WAL over after one that does. So the checkpointer publishes the WAL's length, and
//! when it passes [`RESTART_FRAMES`] the writer runs one PASSIVE checkpoint itself between two commits; with
//! the copying already done here, that one is short, and the next commit starts the WAL from the beginning.

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rusqlite::Connection;

const INTERVAL: Duration = Duration::from_millis(250);
/// The WAL length (in frames, about 4 KiB each) past which the writer finishes a checkpoint itself.
pub const RESTART_FRAMES: i64 = 16_384;

/// The WAL length the checkpointer saw last, shared with the writer.
pub type WalFrames = std::sync::Arc<std::sync::atomic::AtomicI64>;

pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    Ok(conn)
}

/// Runs until the writer is gone (its sender dropped), then truncates the WAL.
pub fn run(conn: Connection, committed: Receiver<()>, wal_frames: WalFrames) {
    let mut last = Instant::now();
    while committed.recv().is_ok() {
        // Let commits accumulate for a while, then copy them all back at once. The thread sleeps meanwhile
        // rather than taking each commit's wake-up: a wake-up per commit was a context switch per commit
        // (thousands a second under single publishes). The channel holds one wake-up, so the writer's
        // `try_send`s while it sleeps cost nothing and the one kept starts the next round.
        if let Some(wait) = (last + INTERVAL).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if let Some((frames, _)) = checkpoint(&conn, "PASSIVE") {
            wal_frames.store(frames, std::sync::atomic::Ordering::Relaxed);
        }
        last = Instant::now();
    }
    checkpoint(&conn, "TRUNCATE");
}

/// Runs a checkpoint and returns the WAL's length and how much of it is now copied back, in frames.
pub fn checkpoint(conn: &Connection, mode: &str) -> Option<(i64, i64)> {
    let started = Instant::now();
    let result = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match result {
        Ok((busy, wal_frames, copied)) => {
            metrics::histogram!("herald_store_checkpoint_seconds").record(started.elapsed().as_secs_f64());
            tracing::trace!(mode, busy, wal_frames, copied, "checkpoint");
            Some((wal_frames, copied))
        }
        Err(e) => {
            tracing::warn!(error = %e, "WAL checkpoint failed");
            None
        }
    }
}
