//! The programmatic API (`/v1`): API keys beside stream keys, and the `/v1`
//! stream records.
//!
//! `api_keys` gains `kind` (`stream`: the studio's stream key; `api`: a named
//! key for `/v1/*`; `ingest`: the stream key of one `/v1` stream), `prefix`
//! (the first characters of the key, shown so a person can tell keys apart;
//! the key itself is never stored, only its SHA-256) and `revoked_at` (a
//! revoked key is refused at once and kept for the record). Existing rows are
//! stream keys.
//!
//! `api_streams` holds a `/v1` stream: a named configuration (pipeline and
//! params as the client sent them, normalised) of its owner's one channel,
//! which a publish with its stream key picks up. It is not a broadcast: the
//! `streams` table still gets one row per time the channel is live, and
//! credits are still charged from when video arrives.

use sea_orm_migration::prelude::*;

use crate::m20261122_000002_accounts::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Kind,
    Prefix,
    RevokedAt,
    UserId,
}

#[derive(DeriveIden)]
enum ApiStreams {
    Table,
    Id,
    UserId,
    Name,
    Pipeline,
    Params,
    KeyId,
    KeyPrefix,
    CreatedAt,
    ParamsUpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(
                        ColumnDef::new(ApiKeys::Kind)
                            .string_len(16)
                            .not_null()
                            .default("stream"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(
                        ColumnDef::new(ApiKeys::Prefix)
                            .string_len(16)
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .add_column(
                        ColumnDef::new(ApiKeys::RevokedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_api_keys_user_kind")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::UserId)
                    .col(ApiKeys::Kind)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiStreams::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ApiStreams::Id)
                            .string_len(40)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ApiStreams::UserId).big_integer().not_null())
                    .col(ColumnDef::new(ApiStreams::Name).string_len(128).not_null())
                    .col(
                        ColumnDef::new(ApiStreams::Pipeline)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(ColumnDef::new(ApiStreams::Params).text().not_null())
                    .col(ColumnDef::new(ApiStreams::KeyId).big_integer().not_null())
                    .col(
                        ColumnDef::new(ApiStreams::KeyPrefix)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ApiStreams::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ApiStreams::ParamsUpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_api_streams_user")
                            .from(ApiStreams::Table, ApiStreams::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_api_streams_user")
                    .table(ApiStreams::Table)
                    .col(ApiStreams::UserId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiStreams::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_api_keys_user_kind")
                    .table(ApiKeys::Table)
                    .to_owned(),
            )
            .await?;
        for col in [ApiKeys::RevokedAt, ApiKeys::Prefix, ApiKeys::Kind] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ApiKeys::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
