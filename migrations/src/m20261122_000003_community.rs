//! Comments, style requests, chat bans, and each channel's switches
//! (comments, style requests, auto-approve) on the users table.

use sea_orm_migration::prelude::*;

use crate::m20261122_000002_accounts::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Comments {
    Table,
    Id,
    StreamId,
    ChannelId,
    UserId,
    Username,
    Body,
    Deleted,
    CreatedAt,
}

#[derive(DeriveIden)]
enum StyleRequests {
    Table,
    Id,
    StreamId,
    UserId,
    Username,
    Kind,
    Label,
    Spec,
    Image,
    Status,
    CreatedAt,
    DecidedAt,
}

#[derive(DeriveIden)]
enum ChatBans {
    Table,
    Id,
    ChannelId,
    UserId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Channel {
    CommentsEnabled,
    RequestsEnabled,
    AutoApprove,
    DwellSecs,
}

fn id(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Comments::Table)
                    .if_not_exists()
                    .col(id(Comments::Id))
                    .col(ColumnDef::new(Comments::StreamId).big_integer().not_null())
                    // The streamer's user id: moderation is per channel.
                    .col(ColumnDef::new(Comments::ChannelId).big_integer().not_null())
                    .col(ColumnDef::new(Comments::UserId).big_integer().not_null())
                    .col(ColumnDef::new(Comments::Username).string_len(24).not_null())
                    .col(ColumnDef::new(Comments::Body).string_len(1000).not_null())
                    .col(
                        ColumnDef::new(Comments::Deleted)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(
                        ColumnDef::new(Comments::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_comments_stream")
                    .table(Comments::Table)
                    .col(Comments::StreamId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(StyleRequests::Table)
                    .if_not_exists()
                    .col(id(StyleRequests::Id))
                    .col(
                        ColumnDef::new(StyleRequests::StreamId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(StyleRequests::UserId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(StyleRequests::Username)
                            .string_len(24)
                            .not_null(),
                    )
                    // preset | picture | prompt
                    .col(
                        ColumnDef::new(StyleRequests::Kind)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(StyleRequests::Label)
                            .string_len(300)
                            .not_null(),
                    )
                    // The preset spec or the prompt text.
                    .col(
                        ColumnDef::new(StyleRequests::Spec)
                            .string_len(300)
                            .not_null(),
                    )
                    .col(ColumnDef::new(StyleRequests::Image).binary().null())
                    // pending | approved | rejected
                    .col(
                        ColumnDef::new(StyleRequests::Status)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(StyleRequests::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(StyleRequests::DecidedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_style_requests_stream")
                    .table(StyleRequests::Table)
                    .col(StyleRequests::StreamId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ChatBans::Table)
                    .if_not_exists()
                    .col(id(ChatBans::Id))
                    .col(ColumnDef::new(ChatBans::ChannelId).big_integer().not_null())
                    .col(ColumnDef::new(ChatBans::UserId).big_integer().not_null())
                    .col(
                        ColumnDef::new(ChatBans::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_chat_bans")
                    .table(ChatBans::Table)
                    .col(ChatBans::ChannelId)
                    .col(ChatBans::UserId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // One ALTER per column: SQLite adds one column per statement.
        for col in [
            ColumnDef::new(Channel::CommentsEnabled)
                .boolean()
                .not_null()
                .default(true)
                .to_owned(),
            ColumnDef::new(Channel::RequestsEnabled)
                .boolean()
                .not_null()
                .default(true)
                .to_owned(),
            ColumnDef::new(Channel::AutoApprove)
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
            ColumnDef::new(Channel::DwellSecs)
                .big_integer()
                .not_null()
                .default(30)
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .add_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            ChatBans::Table.into_iden(),
            StyleRequests::Table.into_iden(),
            Comments::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(t).to_owned())
                .await?;
        }
        Ok(())
    }
}
