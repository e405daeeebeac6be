//! The database: connection (SQLite file by default, PostgreSQL with
//! `DATABASE_URL`), migrations on start, and the stores the actors use.

pub mod entities;
mod stream_store;

use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

pub use stream_store::{DbStreamStore, paid_left};

use crate::settings::Settings;

/// Connects and brings the schema up to date.
pub async fn connect(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    let db = match &settings.database_url {
        Some(url) => {
            let mut opt = ConnectOptions::new(url.clone());
            opt.max_connections(16)
                .connect_timeout(Duration::from_secs(10))
                .sqlx_logging(false);
            Database::connect(opt)
                .await
                .context("failed to connect to the database in DATABASE_URL")?
        }
        None => {
            std::fs::create_dir_all(&settings.data_dir).with_context(|| {
                format!(
                    "failed to create the data directory {}",
                    settings.data_dir.display()
                )
            })?;
            let path = settings.sqlite_path();
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
