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
    // Every file Herald writes under the data dir is its own alone: the databases, their WAL and shared-memory
    // files, the generated secrets.
    let modes = private_modes(dir);
    assert!(modes.iter().any(|(name, _)| name.ends_with("herald.db-wal")), "{modes:?}");
    assert!(modes.iter().all(|(_, mode)| *mode == 0o600), "{modes:?}");

    app.restart().await;
    let stored = app.whole_inbox("alice").await;
    assert_eq!(ids(&stored), ids(&published).into_iter().rev().collect::<Vec<_>>());
}

/// Each file in `dir` and its mode bits.
fn private_modes(dir: &Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| (e.path().display().to_string(), e.metadata().unwrap().permissions().mode() & 0o777))
        .collect()
}

#[tokio::test]
async fn the_database_url_puts_the_database_elsewhere() {
    use std::os::unix::fs::PermissionsExt;
    let elsewhere = tempfile::tempdir().unwrap();
    let database = elsewhere.path().join("custom.db");
    // A database an earlier build made readable to everyone is tightened at the next start.
    std::fs::write(&database, b"").unwrap();
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();
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
    let modes = private_modes(elsewhere.path());
    assert!(modes.len() >= 6 && modes.iter().all(|(_, mode)| *mode == 0o600), "{modes:?}");

    app.restart().await;
    assert_eq!(ids(&app.whole_inbox("alice").await), vec![id(&n)]);
}
