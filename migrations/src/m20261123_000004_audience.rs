//! The admin dashboard's audience numbers: each stream's distinct viewer IPs
//! and when its peak was (the peak itself is `streams.peak_viewers`), and the
//! in-memory twin's saved state — HyperLogLog sketches of keyed IP hashes (never
//! addresses) and counters (the platform's peak, tune-ins) — so a restart of a
//! control node without Redis keeps them.

use sea_orm_migration::prelude::*;

use crate::m20261122_000001_streams::Streams;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StreamsAudience {
    UniqueViewers,
    PeakAt,
}

#[derive(DeriveIden)]
enum AudienceSketches {
    Table,
    Key,
    Data,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AudienceCounters {
    Table,
    Key,
    Value,
    At,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        let columns = [
            ColumnDef::new(StreamsAudience::UniqueViewers)
                .big_integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(StreamsAudience::PeakAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        ];
        for mut col in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Streams::Table)
                        .add_column(&mut col)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(AudienceSketches::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AudienceSketches::Key)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AudienceSketches::Data).blob().not_null())
                    .col(
                        ColumnDef::new(AudienceSketches::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AudienceCounters::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AudienceCounters::Key)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(AudienceCounters::Value)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AudienceCounters::At)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(AudienceCounters::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AudienceCounters::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AudienceSketches::Table).to_owned())
            .await?;
        for col in [StreamsAudience::PeakAt, StreamsAudience::UniqueViewers] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Streams::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
