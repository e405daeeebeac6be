//! The `comments` table: chat on streams.

use sea_orm::entity::prelude::*;

/// A chat comment on a stream.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "comments")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub stream_id: i64,
    /// The streamer's user id (moderation is per channel).
    pub channel_id: i64,
    pub user_id: i64,
    pub username: String,
    pub body: String,
    pub deleted: bool,
    pub created_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
