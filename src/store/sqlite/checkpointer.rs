//! Copies committed WAL frames back into the database file, on its own thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the threshold, on the writer's thread; a
//! profile of a loaded writer showed it as almost a fifth of the writer's time. Here a second connection does
//! PASSIVE checkpoints, which never block the writer, at most every [`INTERVAL`]: a page rewritten by many
//! commits in that time is copied back once.

use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::Connection;

const INTERVAL: Duration = Duration::from_millis(250);

pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    Ok(conn)
}

/// Runs until the writer is gone (its sender dropped), then truncates the WAL.
pub fn run(conn: Connection, committed: Receiver<()>) {
    let mut last = Instant::now();
    while committed.recv().is_ok() {
        // Let commits accumulate for a while, then copy them all back at once.
        let due = last + INTERVAL;
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            match committed.recv_timeout(due - now) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        checkpoint(&conn, "PASSIVE");
        last = Instant::now();
    }
    checkpoint(&conn, "TRUNCATE");
}

fn checkpoint(conn: &Connection, mode: &str) {
    let started = Instant::now();
    let result = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match result {
        Ok((busy, wal_frames, copied)) => {
            metrics::histogram!("herald_store_checkpoint_seconds").record(started.elapsed().as_secs_f64());
            tracing::trace!(busy, wal_frames, copied, "checkpoint");
        }
        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
    }
}
