//! The `users` table: accounts, channel switches, session version.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub username: String,
    pub email: Option<String>,
    /// argon2id PHC string; `None` for accounts that only use OAuth.
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub created_at: ChronoDateTimeUtc,
    /// The channel's switches (the studio's settings, kept between streams).
    pub comments_enabled: bool,
    pub requests_enabled: bool,
    pub auto_approve: bool,
    pub dwell_secs: i64,
    /// Sessions carry the version they were made under; bumping it ends
    /// every older session (logout, log out everywhere, password change).
    pub session_version: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
