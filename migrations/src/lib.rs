//! The database schema: the only place with DDL. Every migration runs unchanged
//! on SQLite and PostgreSQL (sea-query builds the dialect).

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_streams;
mod m20261122_000002_accounts;
mod m20261122_000003_community;
mod m20261123_000004_audience;
mod m20261202_000005_session_version;
mod m20261203_000006_paid_time;
mod m20261203_000007_api_v1;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_streams::Migration),
            Box::new(m20261122_000002_accounts::Migration),
            Box::new(m20261122_000003_community::Migration),
            Box::new(m20261123_000004_audience::Migration),
            Box::new(m20261202_000005_session_version::Migration),
            Box::new(m20261203_000006_paid_time::Migration),
            Box::new(m20261203_000007_api_v1::Migration),
        ]
    }
}
