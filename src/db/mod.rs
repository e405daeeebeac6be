//! The database: connection (SQLite file by default, PostgreSQL with
//! `DATABASE_URL`), migrations on start, the entities, and the stream log
//! the actors write ([`DbStreamLog`]).

pub mod entities;
mod stream_log;

use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

pub use stream_log::DbStreamLog;

use secrecy::{ExposeSecret, SecretString};

/// Where the database is (`Settings::db`).
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// `DATABASE_URL` (PostgreSQL; it may hold a password); `None` = the
    /// SQLite file in `data_dir`.
    pub url: Option<SecretString>,
    pub data_dir: std::path::PathBuf,
}

impl DbConfig {
    /// The SQLite file when no `DATABASE_URL` is set.
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        self.data_dir.join("dreamstream.db")
    }
}

/// Connects and brings the schema up to date.
pub async fn connect(config: &DbConfig) -> anyhow::Result<DatabaseConnection> {
    let db = match &config.url {
        Some(url) => {
            let mut opt = ConnectOptions::new(url.expose_secret());
            opt.max_connections(16)
                .connect_timeout(Duration::from_secs(10))
                .sqlx_logging(false);
            Database::connect(opt)
                .await
                .context("failed to connect to the database in DATABASE_URL")?
        }
        None => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!(
                    "failed to create the data directory {}",
                    config.data_dir.display()
                )
            })?;
            let path = config.sqlite_path();
            let url = format!("sqlite://{}?mode=rwc", path.display());
            let mut opt = ConnectOptions::new(url);
            // One writer at a time is SQLite's model; WAL lets readers run beside it.
            opt.max_connections(4)
                .min_connections(1)
                .sqlx_logging(false);
            opt.map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
            });
            Database::connect(opt)
                .await
                .with_context(|| format!("failed to open the SQLite database {}", path.display()))?
        }
    };
    Migrator::up(&db, None)
        .await
        .context("failed to migrate the database")?;
    Ok(db)
}

/// A trivial query (readiness).
pub async fn ping(db: &DatabaseConnection) -> bool {
    db.execute_unprepared("SELECT 1").await.is_ok()
}

/// This control node's name in the `streams` table: random, made on the
/// first start and kept in `data_dir/node-id`, so it survives restarts
/// (which then close the rows they left open) and differs between nodes
/// sharing one database.
pub fn node_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("failed to read {}", path.display()));
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create the data directory {}", data_dir.display()))?;
    let id = format!("node-{:016x}", rand::random::<u64>());
    std::fs::write(&path, &id).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_node_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = super::node_id(dir.path()).unwrap();
        assert!(first.starts_with("node-") && first.len() == 21, "{first}");
        assert_eq!(super::node_id(dir.path()).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(super::node_id(other.path()).unwrap(), first);
    }
}
