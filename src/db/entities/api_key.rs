//! The `api_keys` table: stream keys and API keys, stored hashed.

use sea_orm::entity::prelude::*;

/// A key for scripts and devices: only its SHA-256 is stored. `kind` says
/// what it opens (`crate::accounts::keys::KeyKind`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    #[sea_orm(unique)]
    pub key_hash: String,
    pub created_at: ChronoDateTimeUtc,
    pub last_used_at: Option<ChronoDateTimeUtc>,
    /// `stream`, `api` or `ingest`.
    pub kind: String,
    /// The key's first characters (shown to tell keys apart; not a secret).
    pub prefix: String,
    /// When the key was revoked; a revoked key opens nothing.
    pub revoked_at: Option<ChronoDateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
