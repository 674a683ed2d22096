//! PostgreSQL for tests: the machine's server (127.0.0.1:5432, trust auth, database `test`), a schema of
//! its own per test (so tests run in parallel), holding the minting system's `tx_intents` table.
//!
//! A server that cannot be reached fails the test, never skips it: the machines CI runs on have it.
//!
//! [`StoreSchema`] is the other use: with `HERALD_TEST_STORE=postgres`, every test server stores its inbox in
//! PostgreSQL, in an empty schema of its own, so the whole suite runs against that backend too.

use std::process::Stdio;

use sqlx::postgres::{PgPool, PgPoolOptions};

pub const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema `t_<random>` with a `tx_intents` table, dropped when this is dropped.
pub struct Schema {
    pub name: String,
    id_type: String,
    pool: PgPool,
}

impl Schema {
    /// Creates the schema and `tx_intents (intent_id <id_type>, chain_id bigint, tx_hash text, kind text)`.
    pub async fn create(id_type: &str) -> Schema {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(POSTGRES)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {POSTGRES}: {e}"));
        let name = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
        let create = format!(
            "CREATE SCHEMA {name}; CREATE TABLE {name}.tx_intents \
             (intent_id {id_type} NOT NULL, chain_id bigint NOT NULL, tx_hash text NOT NULL, kind text NOT NULL)"
        );
        sqlx::raw_sql(&create).execute(&pool).await.unwrap_or_else(|e| panic!("create schema {name}: {e}"));
        Schema { name, id_type: id_type.to_owned(), pool }
    }

    /// The minting system's lookup, on this schema's table.
    pub fn query(&self) -> String {
        format!("SELECT intent_id FROM {}.tx_intents WHERE chain_id = $1 AND tx_hash = $2 AND kind = $3", self.name)
    }

    /// Adds a row, as the orchestrator does when it broadcasts an intent's transaction.
    pub async fn insert(&self, intent_id: &str, chain_id: i64, tx_hash: &str, kind: &str) {
        let sql = format!(
            "INSERT INTO {}.tx_intents (intent_id, chain_id, tx_hash, kind) VALUES (CAST($1 AS {}), $2, $3, $4)",
            self.name, self.id_type
        );
        sqlx::query(&sql)
            .bind(intent_id)
            .bind(chain_id)
            .bind(tx_hash)
            .bind(kind)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("insert into {}.tx_intents: {e}", self.name));
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        drop_schema(&self.name);
    }
}

/// Drops a schema and everything in it, synchronously (as the vhost's drop does: the test's runtime may be
/// going away), ignoring failures.
fn drop_schema(name: &str) {
    let _ = std::process::Command::new("psql")
        .args([POSTGRES, "-q", "-c", &format!("DROP SCHEMA IF EXISTS {name} CASCADE")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Which inbox backend the suite runs against: `HERALD_TEST_STORE` (`sqlite`, the default, or `postgres`).
pub fn store_backend() -> &'static str {
    match std::env::var("HERALD_TEST_STORE").as_deref() {
        Ok("postgres") => "postgres",
        Ok("sqlite") | Err(_) => "sqlite",
        Ok(other) => panic!("HERALD_TEST_STORE is sqlite or postgres, not {other:?}"),
    }
}

/// An empty schema `h_<random>` for one test server's inbox, dropped when this is dropped.
pub struct StoreSchema {
    name: String,
}

impl StoreSchema {
    pub fn create() -> StoreSchema {
        let name = format!("h_{}", ulid::Ulid::new().to_string().to_lowercase());
        let status = std::process::Command::new("psql")
            .args([POSTGRES, "-q", "-v", "ON_ERROR_STOP=1", "-c", &format!("CREATE SCHEMA {name}")])
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("psql could not run: {e}"));
        assert!(status.success(), "PostgreSQL at {POSTGRES}: could not create schema {name}");
        StoreSchema { name }
    }

    /// The server's `HERALD_DATABASE_URL`.
    pub fn url(&self) -> String {
        format!("{POSTGRES}?options[search_path]={0}&application_name=herald-{0}", self.name)
    }
}

/// Runs `sql` in `schema` with psql, failing the test if it fails.
pub fn psql_in(schema: &StoreSchema, sql: &str) {
    let out = std::process::Command::new("psql")
        .args([POSTGRES, "-q", "-v", "ON_ERROR_STOP=1", "-c", &format!("SET search_path = {}; {sql}", schema.name)])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("psql could not run: {e}"));
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Drop for StoreSchema {
    fn drop(&mut self) {
        drop_schema(&self.name);
    }
}
