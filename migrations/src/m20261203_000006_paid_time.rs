//! Metering by the streamer's time, and streams that know their node.
//!
//! `paid_time` holds, per user, the end of the period their last credit paid
//! for: going live again before it costs nothing, whichever stream (or
//! control node) spent the credit. It is a table of its own rather than a
//! column of `users` so that charging never touches the account row's
//! columns. `streams.node` names the control node that ran a stream, so a
//! node that starts again can close the rows it left open (`crashed`) without
//! touching another node's live streams.

use sea_orm_migration::prelude::*;

use crate::m20261122_000001_streams::Streams;
use crate::m20261122_000002_accounts::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PaidTime {
    Table,
    UserId,
    PaidUntil,
}

#[derive(DeriveIden)]
enum StreamsNode {
    Node,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PaidTime::Table)
                    .col(
                        ColumnDef::new(PaidTime::UserId)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(PaidTime::PaidUntil)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(PaidTime::Table, PaidTime::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Streams::Table)
                    .add_column(ColumnDef::new(StreamsNode::Node).string_len(64).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Streams::Table)
                    .drop_column(StreamsNode::Node)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(PaidTime::Table).to_owned())
            .await
    }
}
