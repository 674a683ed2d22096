//! PostgreSQL for tests: the machine's server (127.0.0.1:5432, trust auth, database `test`), a schema of
//! its own per test (so tests run in parallel), holding the minting system's `tx_intents` table.
//!
//! A server that cannot be reached fails the test, never skips it: the machines CI runs on have it.

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
        // Synchronously, as the vhost's drop does: the test's runtime may be going away.
        let _ = std::process::Command::new("psql")
            .args([POSTGRES, "-q", "-c", &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
