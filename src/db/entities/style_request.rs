//! The `style_requests` table: viewers' style requests and their fate.

use sea_orm::entity::prelude::*;

/// A viewer's style request: `pending`, then `approved` or `rejected`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "style_requests")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub stream_id: i64,
    pub user_id: i64,
    pub username: String,
    /// `preset`, `picture` or `prompt`.
    pub kind: String,
    pub label: String,
    /// The preset spec or the prompt.
    pub spec: String,
    /// The uploaded picture (already shrunk), for `picture`.
    pub image: Option<Vec<u8>>,
    pub status: String,
    pub created_at: ChronoDateTimeUtc,
    pub decided_at: Option<ChronoDateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
