//! Storage: by default a SQLite database in WAL mode under the data dir; `HERALD_DATABASE_URL` puts it
//! elsewhere. Either way a restart finds everything again.

use std::path::{Path, PathBuf};

use crate::helpers::{id, ids, TestApp};

/// The SQLite databases directly in `dir`, recognised by their header rather than by name.
fn sqlite_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| std::fs::read(path).is_ok_and(|bytes| bytes.starts_with(b"SQLite format 3\0")))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Whether the database at `path` is in WAL mode: header bytes 18 and 19 (the file format read and write
/// versions) are 2 for WAL.
fn is_wal(path: &Path) -> bool {
    let header = std::fs::read(path).unwrap();
    header[18] == 2 && header[19] == 2
}

#[tokio::test]
async fn by_default_the_inbox_lives_in_a_wal_sqlite_file_under_the_data_dir() {
    let mut app = TestApp::spawn_with(|s| {
        s.sqlite_only();
    })
    .await;
    let published = app.notify_many("alice", "n", 3).await;

    // The inbox's file, and beside it the topics' (their own file, with their own writer) and the email
    // outbox's (with the user directory and preferences).
    let databases = sqlite_files(app.data_dir.path());
    let dir = app.data_dir.path();
    assert_eq!(
        databases,
        vec![dir.join("herald.db"), dir.join("herald.emails.db"), dir.join("herald.topics.db")],
        "the SQLite files in the data dir"
    );
    for database in &databases {
        assert!(is_wal(database), "{} is not in WAL mode", database.display());
    }

    app.restart().await;
    let stored = app.whole_inbox("alice").await;
    assert_eq!(ids(&stored), ids(&published).into_iter().rev().collect::<Vec<_>>());
}

#[tokio::test]
async fn the_database_url_puts_the_database_elsewhere() {
    let elsewhere = tempfile::tempdir().unwrap();
    let database = elsewhere.path().join("custom.db");
    let url = format!("sqlite://{}", database.display());
    let mut app = TestApp::spawn_with(|s| {
        s.env("HERALD_DATABASE_URL", url);
    })
    .await;
    let n = app.notify("alice", "t", "stored elsewhere").await;

    assert_eq!(
        sqlite_files(elsewhere.path()),
        vec![database.clone(), elsewhere.path().join("custom.emails.db"), elsewhere.path().join("custom.topics.db")]
    );
    assert!(sqlite_files(app.data_dir.path()).is_empty(), "a database was also made in the data dir");

    app.restart().await;
    assert_eq!(ids(&app.whole_inbox("alice").await), vec![id(&n)]);
}
