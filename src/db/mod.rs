//! The database: connection (SQLite file by default, PostgreSQL with
//! `DATABASE_URL`), migrations on start, and the stores the actors use.

pub mod entities;
mod stream_store;

use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

pub use stream_store::DbStreamStore;

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
