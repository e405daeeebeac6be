//! The `api_streams` table: the `/v1/streams` records (a named configuration
//! of the owner's channel; see `crate::web::v1`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_streams")]
pub struct Model {
    /// `str_` and 24 hex digits.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub user_id: i64,
    pub name: String,
    /// `streamdiffusion` or `neural-style`.
    pub pipeline: String,
    /// The params as JSON, normalised (what GET answers).
    pub params: String,
    /// The stream's ingest key (`api_keys.id`, kind `ingest`).
    pub key_id: i64,
    /// That key's first characters.
    pub key_prefix: String,
    pub created_at: ChronoDateTimeUtc,
    pub params_updated_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
